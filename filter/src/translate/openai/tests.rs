//! Fixtures the per-direction tests share.

use crate::translate::testing;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");

pub(super) fn fixture(name: &str) -> Vec<u8> {
    testing::fixture(DIR, name)
}

pub(super) fn golden(name: &str, actual: &[u8]) {
    testing::golden(DIR, name, actual)
}
