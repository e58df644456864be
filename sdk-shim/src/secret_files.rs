//! Reads the credential files a configuration names into its secret store, and
//! reads them again when they change (rotated Azure and GCP tokens, remounted
//! Kubernetes Secrets), from one background thread per configuration. Request
//! hooks never touch the file system.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use aigw_filter::Config;

use crate::abi::{self, LogLevel};

/// How often files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// What was last seen of one file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// Not looked at yet.
    Unknown,
    /// Missing or unreadable.
    Missing,
    /// Read, with this modification time and length.
    Read(SystemTime, u64),
}

/// Loads every credential file now (so the first request has them) and starts the
/// watcher; it stops when the configuration is dropped.
pub fn watch(config: &Arc<Config>) {
    let files: Vec<String> = config
        .secret_files()
        .into_iter()
        .map(String::from)
        .collect();
    if files.is_empty() {
        return;
    }
    let mut stamps: Vec<Stamp> = files
        .iter()
        .map(|f| load(config, f, Stamp::Unknown))
        .collect();
    let weak: Weak<Config> = Arc::downgrade(config);
    let spawned = std::thread::Builder::new()
        .name("aigw-secrets".into())
        .spawn(move || loop {
            std::thread::sleep(POLL);
            let Some(config) = weak.upgrade() else { return };
            for (file, stamp) in files.iter().zip(stamps.iter_mut()) {
                *stamp = load(&config, file, *stamp);
            }
        });
    if let Err(e) = spawned {
        abi::log(
            LogLevel::Error,
            &format!("aigw: cannot start the credential file watcher ({e}); files are read once"),
        );
    }
}

/// Reads `file` into the store if it changed since `seen`; returns what it saw.
fn load(config: &Config, file: &str, seen: Stamp) -> Stamp {
    let meta = std::fs::metadata(Path::new(file)).ok();
    let stamp = meta.map(|m| Stamp::Read(m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
    if stamp.is_some_and(|s| s == seen) {
        return seen;
    }
    match std::fs::read(file) {
        Ok(bytes) => {
            if config.secrets().set(file, &bytes) {
                abi::log(
                    LogLevel::Info,
                    &format!("aigw: loaded credential file {file}"),
                );
            }
            stamp.unwrap_or(Stamp::Missing)
        }
        Err(e) => {
            if seen != Stamp::Missing {
                abi::log(
                    LogLevel::Warn,
                    &format!("aigw: credential file {file} unreadable: {}", e.kind()),
                );
            }
            config.secrets().remove(file);
            Stamp::Missing
        }
    }
}
