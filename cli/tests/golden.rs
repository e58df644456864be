//! Golden tests: each folder under `tests/golden/` holds an `input.yaml`, an
//! optional `options.txt` (`key=value` lines: `wasm_url`, `wasm_sha256`,
//! `module_path`, `wasm_path`, `envoy_proxy_namespace`, `identity_header`,
//! `identity_no_hash`, `limits_per`, `quota`, `rate_limit_service`,
//! `rate_limit_domain`, `rate_limit_failure`: see [`common::options`]) and the
//! expected outputs: `config.json`,
//! `bootstrap.yaml`, `bootstrap-wasm.yaml` (unless credentials come from files),
//! `envoy-gateway.yaml`, `envoy-gateway-wasm.yaml` (with a wasm URL),
//! `not-enforced.json` (when some field is not enforced), `ratelimit-config.yaml`
//! and `limitador-limits.yaml` (fleet mode) and `warnings.txt`
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
    common::options(dir)
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
                ("secrets.env", out.secrets_env),
                ("bootstrap.yaml", Some(out.bootstrap_yaml)),
                ("bootstrap-wasm.yaml", out.bootstrap_wasm_yaml),
                ("envoy-gateway.yaml", Some(out.envoy_gateway_yaml)),
                ("envoy-gateway-wasm.yaml", out.envoy_gateway_wasm_yaml),
                ("not-enforced.json", not_enforced),
                ("ratelimit-config.yaml", out.ratelimit_config_yaml),
                ("limitador-limits.yaml", out.limitador_yaml),
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
                ("secrets.env", None),
                ("bootstrap.yaml", None),
                ("bootstrap-wasm.yaml", None),
                ("envoy-gateway.yaml", None),
                ("envoy-gateway-wasm.yaml", None),
                ("not-enforced.json", None),
                ("ratelimit-config.yaml", None),
                ("limitador-limits.yaml", None),
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

/// Secret values used by the golden inputs (all placeholders).
const SECRET_VALUES: &[&str] = &[
    "sk-do-not-print-me",
    "OPENAI_API_KEY_PLACEHOLDER",
    "sk-ant-placeholder",
    "AKIDPLACEHOLDER",
    "aws-secret-placeholder",
    "aws-session-placeholder",
    "azure-key-placeholder",
    "kg-placeholder",
    "inline-placeholder",
    "generic-placeholder",
    "sk-placeholder",
    "vllm-a-placeholder",
    "vllm-b-placeholder",
    "azure-client-secret-placeholder",
    "oidc-client-secret-placeholder",
    "gcp-key-placeholder",
    "gcp-idp-secret-placeholder",
];

/// Credentials are kept apart (the secret files and `secrets.env`), and reach
/// nothing else: not the filter config, not the bootstraps embedding it (Envoy
/// prints those in its debug lines and serves them at `/config_dump`), no
/// message, no Envoy Gateway manifest, no not-enforced list.
#[test]
fn secret_values_reach_only_the_secret_files() {
    let mut seen = std::collections::BTreeSet::new();
    for dir in cases() {
        for (name, got) in outputs(&dir) {
            let got = got.unwrap_or_default();
            for secret in SECRET_VALUES {
                if !got.contains(secret) {
                    continue;
                }
                assert!(
                    name == "secrets.env",
                    "{}/{name} holds a secret value",
                    dir.display()
                );
                seen.insert(*secret);
            }
        }
    }
    // Each one is compiled in somewhere (the test would pass vacuously otherwise).
    let missing: Vec<_> = SECRET_VALUES
        .iter()
        .filter(|s| !seen.contains(*s) && **s != "sk-do-not-print-me")
        .collect();
    assert!(missing.is_empty(), "never compiled in: {missing:?}");
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
    let wasm = wasm_module();
    if wasm.is_none() {
        eprintln!("skipped the wasm bootstraps: no aigw.wasm (AIGW_WASM)");
    }
    let tmp = std::env::temp_dir().join(format!("aigw-cli-golden-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for dir in cases() {
        for (file, is_wasm) in [("bootstrap.yaml", false), ("bootstrap-wasm.yaml", true)] {
            let mut path = dir.join(file);
            if !path.is_file() || (is_wasm && wasm.is_none()) {
                continue;
            }
            let env = if is_wasm {
                secrets_env(&dir.join("secrets.env"))
            } else {
                Vec::new()
            };
            if let (true, Some(w)) = (is_wasm, &wasm) {
                // Point the copy at the built module.
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.replace(
                    &aigw_cli::Options::default().wasm_path,
                    &w.display().to_string(),
                );
                let name = dir.file_name().unwrap().to_string_lossy().to_string();
                path = tmp.join(format!("{name}-{file}"));
                std::fs::write(&path, text).unwrap();
            }
            validate(&envoy, &module_dir, &path, &env);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The built `aigw.wasm`: `$AIGW_WASM`, else the repo's release build.
fn wasm_module() -> Option<PathBuf> {
    let p = std::env::var_os("AIGW_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/release/aigw.wasm")
        });
    p.is_file().then_some(p)
}

/// The variables of a `secrets.env` (`NAME='value'` lines, values that may span
/// lines, `'\''` for a quote), as a shell sourcing it would set them.
fn secrets_env(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        if rest.starts_with('#') || rest.starts_with('\n') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        let (name, after) = rest.split_once("='").unwrap();
        let mut value = String::new();
        let mut tail = after;
        loop {
            let (part, r) = tail.split_once('\'').unwrap();
            value.push_str(part);
            match r.strip_prefix("\\''") {
                Some(r2) => {
                    value.push('\'');
                    tail = r2;
                }
                None => {
                    tail = r;
                    break;
                }
            }
        }
        out.push((name.to_string(), value));
        rest = tail.strip_prefix('\n').unwrap_or(tail);
    }
    out
}

fn validate(envoy: &Path, module_dir: &Path, path: &Path, env: &[(String, String)]) {
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(path)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
