//! Golden tests: each folder under `tests/golden/` holds an `input.yaml`, an
//! optional `options.txt` (`key=value` lines: `wasm_url`, `wasm_sha256`,
//! `module_path`) and the expected outputs: `config.json`, `bootstrap.yaml`,
//! `envoy-gateway.yaml`, `envoy-gateway-wasm.yaml` (with a wasm URL),
//! `not-enforced.json` (when some field is not enforced) and `warnings.txt`
//! when it compiles, `errors.txt` (every diagnostic) when it does not.
//! `UPDATE_GOLDEN=1 cargo test -p aigw-cli --test golden` rewrites them.

use std::path::{Path, PathBuf};

use aigw_cli::{compile_with, diag, manifest, Options};

mod common;

fn cases() -> Vec<PathBuf> {
    common::golden_cases()
}

/// The case's compile options (`options.txt`).
pub fn options(dir: &Path) -> Options {
    let mut o = Options::default();
    let Ok(text) = std::fs::read_to_string(dir.join("options.txt")) else {
        return o;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').unwrap();
        match k.trim() {
            "wasm_url" => o.wasm_url = Some(v.trim().into()),
            "wasm_sha256" => o.wasm_sha256 = Some(v.trim().into()),
            "module_path" => o.module_path = v.trim().into(),
            other => panic!("{}: unknown option {other}", dir.display()),
        }
    }
    o
}

/// Expected outputs of one case: (file name, contents); absent files are `None`.
fn outputs(dir: &Path) -> Vec<(&'static str, Option<String>)> {
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (manifests, mut diags) = manifest::parse_yaml("input.yaml", &text);
    match compile_with(&manifests, &options(dir)) {
        Ok(out) if diags.is_empty() => {
            diags.extend(out.warnings);
            let not_enforced = (!out.not_enforced.is_empty())
                .then(|| serde_json::to_string_pretty(&out.not_enforced).unwrap() + "\n");
            vec![
                ("config.json", Some(out.config_json)),
                ("bootstrap.yaml", Some(out.bootstrap_yaml)),
                ("envoy-gateway.yaml", Some(out.envoy_gateway_yaml)),
                ("envoy-gateway-wasm.yaml", out.envoy_gateway_wasm_yaml),
                ("not-enforced.json", not_enforced),
                ("warnings.txt", Some(diag::render(&diags))),
                ("errors.txt", None),
            ]
        }
        result => {
            if let Err(ds) = result {
                diags.extend(ds);
            }
            vec![
                ("config.json", None),
                ("bootstrap.yaml", None),
                ("envoy-gateway.yaml", None),
                ("envoy-gateway-wasm.yaml", None),
                ("not-enforced.json", None),
                ("warnings.txt", None),
                ("errors.txt", Some(diag::render(&diags))),
            ]
        }
    }
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in cases() {
        for (name, got) in outputs(&dir) {
            let path = dir.join(name);
            if update {
                match &got {
                    Some(s) => std::fs::write(&path, s).unwrap(),
                    None if path.exists() => std::fs::remove_file(&path).unwrap(),
                    None => {}
                }
                continue;
            }
            let want = std::fs::read_to_string(&path).ok();
            if got != want {
                failures.push(format!(
                    "{}: differs (expected {}, got {})\n--- got ---\n{}",
                    path.display(),
                    if want.is_some() { "a file" } else { "no file" },
                    if got.is_some() { "output" } else { "none" },
                    got.unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 rewrites):\n{}",
        failures.join("\n")
    );
}

#[test]
fn secret_values_never_reach_diagnostics() {
    for dir in cases() {
        for (_, got) in outputs(&dir) {
            let got = got.unwrap_or_default();
            assert!(!got.contains("sk-do-not-print-me"), "{}", dir.display());
            assert!(
                !got.contains("OPENAI_API_KEY_PLACEHOLDER"),
                "{}",
                dir.display()
            );
        }
    }
}

/// Finds Envoy: `$ENVOY_BIN`, else the repo's `.venv` (which `make` installs).
fn envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    p.is_file().then_some(p)
}

/// Every golden bootstrap loads in a real Envoy (`--mode validate`) with the
/// built module. Skipped, with a note, when Envoy or `libaigw.so` is missing, unless
/// `AIGW_REQUIRE_ENVOY` is set (as `make test` does), where that is a failure.
#[test]
fn golden_bootstraps_pass_envoy_validate() {
    let module_dir = std::env::var_os("ENVOY_DYNAMIC_MODULES_SEARCH_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    let (Some(envoy), true) = (envoy(), module_dir.join("libaigw.so").is_file()) else {
        assert!(
            std::env::var_os("AIGW_REQUIRE_ENVOY").is_none(),
            "Envoy or {}/libaigw.so not found",
            module_dir.display()
        );
        eprintln!(
            "skipped: Envoy or {}/libaigw.so not found",
            module_dir.display()
        );
        return;
    };
    for dir in cases() {
        let path = dir.join("bootstrap.yaml");
        if !path.is_file() {
            continue;
        }
        let out = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "--log-level", "warn", "-c"])
            .arg(&path)
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", &module_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
