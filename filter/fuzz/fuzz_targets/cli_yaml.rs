//! The compiler's input: arbitrary text read as Kubernetes YAML manifests
//! (`aigw_cli::manifest::parse_yaml`) and compiled (`aigw_cli::compile`). No
//! panic, no hang, bounded memory; and a compilation that succeeds produces a
//! configuration document the filter loads.
//!
//! Input: the YAML text.
#![no_main]

use aigw_cli::manifest::parse_yaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (manifests, _diags) = parse_yaml("fuzz.yaml", text);
    if manifests.is_empty() {
        return;
    }
    if let Ok(out) = aigw_cli::compile(&manifests) {
        if let Err(e) = aigw_filter::Config::from_json(out.config_json.as_bytes()) {
            panic!("the compiler wrote a configuration the filter refuses: {e:?}");
        }
    }
});
