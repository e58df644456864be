//! Fixtures the per-direction tests share.

use crate::translate::testing;
use crate::translate::ResponseMeta;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/bedrock/");

pub(super) fn fixture(name: &str) -> Vec<u8> {
    testing::fixture(DIR, name)
}

pub(super) fn golden(name: &str, actual: &[u8]) {
    testing::golden(DIR, name, actual)
}

pub(super) fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "chatcmpl-test".into(),
        model: "claude-sonnet".into(),
        created: 1_700_000_000,
    }
}
