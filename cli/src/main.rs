//! `aigw`: compiles Kubernetes resources into the filter config and an Envoy
//! bootstrap. All I/O lives here: reading files, folders and stdin, writing the
//! outputs. Nothing is written when any error is found.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aigw_cli::quota::{Quota, Scope};
use aigw_cli::{compile_with, diag, manifest, Diagnostic, Manifest, Options};

const USAGE: &str = "\
Compiles Envoy AI Gateway resources into the aigw filter config, an Envoy bootstrap
and Envoy Gateway manifests.

Usage: aigw compile [OPTIONS] <PATH>...

<PATH> is a YAML or JSON file (multi-document YAML and `kind: List` are read), a
folder (its *.yaml, *.yml and *.json files, recursively, in name order), or `-` for
standard input.

Options:
  -o, --out-dir <DIR>         write config.json, bootstrap.yaml, secrets/ and
                              secrets.env (when there are credentials),
                              bootstrap-wasm.yaml (unless credentials come from
                              files), envoy-gateway.yaml (envoy-gateway-wasm.yaml
                              with --wasm-url, and not-enforced.json when a field
                              is not enforced; in fleet mode ratelimit-config.yaml
                              and limitador-limits.yaml) into DIR [default: .]
      --config <FILE>         write the filter config to FILE instead
      --bootstrap <FILE>      write the Envoy bootstrap to FILE instead
      --envoy-gateway <FILE>  write the Envoy Gateway manifests to FILE instead
      --module-path <PATH>    absolute path of libaigw.so in the Envoy Gateway proxy
                              image [default: /usr/local/lib/envoy/libaigw.so]
      --envoy-proxy-namespace <NS>
                              namespace of the generated EnvoyProxy
                              [default: envoy-gateway-system]
      --wasm-url <URL>        also write the wasm variant, loading aigw.wasm from URL
      --wasm-sha256 <HEX>     SHA-256 of aigw.wasm (required with --wasm-url)
      --wasm-path <PATH>      aigw.wasm for bootstrap-wasm.yaml
                              [default: /usr/local/lib/envoy/aigw.wasm]
      --check                 only check the resources; write nothing
      --listen-address <IP>   listener address [default: 0.0.0.0]
      --listen-port <PORT>    listener port [default: 1975]
      --admin-port <PORT>     admin port on 127.0.0.1; 0 leaves it out [default: 9901]
      --access-log <PATH>     access log file [default: /dev/stdout]

Limits and budgets:
      --identity-header <NAME>
                              the request header identities come from (an API
                              key, a user id); limits and budgets may count per
                              identity
      --identity-no-hash      use the header's value as the identity (a user id
                              set by a trusted filter); default: hashed
      --limits-per <SCOPE>    what the generic routes' rateLimit and budget count
                              per: route, tenant or identity [default: route]
      --quota <MODE>          embedded (each Envoy counts) or fleet (a rate-limit
                              service counts, asked by Envoy's rate-limit filter)
                              [default: embedded, fleet when a kgateway
                              TrafficPolicy names a rate-limit service]
      --rate-limit-service <HOST:PORT>
                              fleet mode: the rate-limit service's gRPC address
      --rate-limit-domain <DOMAIN>
                              fleet mode: the rate-limit domain [default: aigw]
      --rate-limit-failure <open|closed>
                              fleet mode: let requests through (open) or answer
                              503 (closed) when the service cannot be asked
                              [default: open]
Guardrails:
      --guardrails <FILE>     guardrail policies (YAML or JSON: a list of the filter
                              config's guardrails[] entries, {name, detectors,
                              action}) that generic routes' guardrails[].policyRef
                              (else name) refer to

  -q, --quiet                 do not print warnings
  -h, --help                  print this help
  -V, --version               print the version

Credentials resolved from Secrets are written apart, never into config.json,
the bootstraps, messages or the Envoy Gateway manifests: one file per credential
in DIR/secrets/ (mode 0600), which config.json and bootstrap.yaml name, and
DIR/secrets.env (mode 0600, `NAME='value'` lines), the environment
bootstrap-wasm.yaml reads them from (set -a; . DIR/secrets.env; set +a).

Exit status: 0 compiled, 1 the resources have errors, 2 usage or I/O error.";

struct Args {
    paths: Vec<String>,
    out_dir: PathBuf,
    config: Option<PathBuf>,
    bootstrap: Option<PathBuf>,
    envoy_gateway: Option<PathBuf>,
    check: bool,
    quiet: bool,
    options: Options,
}

enum Command {
    Compile(Box<Args>),
    Help,
    Version,
}

fn parse_args(argv: &[String]) -> Result<Command, String> {
    let mut it = argv.iter();
    match it.next().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("compile") => {}
        Some(other) => return Err(format!("unknown command '{other}'")),
    }
    let mut a = Args {
        paths: Vec::new(),
        out_dir: PathBuf::from("."),
        config: None,
        bootstrap: None,
        envoy_gateway: None,
        check: false,
        quiet: false,
        options: Options::default(),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let port = |name: &str, v: String| {
            v.parse::<u16>()
                .map_err(|_| format!("{name}: '{v}' is not a port number"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-o" | "--out-dir" => a.out_dir = value(arg)?.into(),
            "--config" => a.config = Some(value(arg)?.into()),
            "--bootstrap" => a.bootstrap = Some(value(arg)?.into()),
            "--envoy-gateway" => a.envoy_gateway = Some(value(arg)?.into()),
            "--module-path" => a.options.module_path = value(arg)?,
            "--envoy-proxy-namespace" => a.options.envoy_proxy_namespace = value(arg)?,
            "--wasm-url" => a.options.wasm_url = Some(value(arg)?),
            "--wasm-sha256" => a.options.wasm_sha256 = Some(value(arg)?),
            "--wasm-path" => a.options.wasm_path = value(arg)?,
            "--check" => a.check = true,
            "-q" | "--quiet" => a.quiet = true,
            "--listen-address" => a.options.listen_address = value(arg)?,
            "--listen-port" => a.options.listen_port = port(arg, value(arg)?)?,
            "--admin-port" => {
                let p = port(arg, value(arg)?)?;
                a.options.admin_port = (p != 0).then_some(p);
            }
            "--access-log" => a.options.access_log_path = value(arg)?,
            "--identity-header" => a.options.identity_header = Some(value(arg)?),
            "--identity-no-hash" => a.options.identity_hash = false,
            "--limits-per" => {
                let v = value(arg)?;
                a.options.limits_per = Scope::parse(&v)
                    .ok_or_else(|| format!("{arg}: '{v}' is not route, tenant or identity"))?;
            }
            "--quota" => {
                a.options.quota = Some(match value(arg)?.as_str() {
                    "embedded" => Quota::Embedded,
                    "fleet" => Quota::Fleet,
                    v => return Err(format!("{arg}: '{v}' is not embedded or fleet")),
                })
            }
            "--rate-limit-service" => a.options.rate_limit_service = Some(value(arg)?),
            "--rate-limit-domain" => a.options.rate_limit_domain = Some(value(arg)?),
            "--rate-limit-failure" => {
                a.options.rate_limit_fail_closed = Some(match value(arg)?.as_str() {
                    "open" => false,
                    "closed" => true,
                    v => return Err(format!("{arg}: '{v}' is not open or closed")),
                })
            }
            "--guardrails" => a.options.guardrails = read_guardrails(&value(arg)?)?,
            "-" => a.paths.push(arg.clone()),
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            s => a.paths.push(s.to_string()),
        }
    }
    if a.paths.is_empty() {
        return Err("no input: give at least one file or folder".into());
    }
    Ok(Command::Compile(Box::new(a)))
}

/// `--guardrails FILE`: a list of policies (or a document holding one under
/// `guardrails`), checked by the filter with the rest of the config.
fn read_guardrails(path: &str) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--guardrails {path}: {e}"))?;
    let doc: serde_json::Value =
        serde_norway::from_str(&text).map_err(|e| format!("--guardrails {path}: {e}"))?;
    let list = match doc {
        serde_json::Value::Object(mut o) => o.remove("guardrails").unwrap_or_default(),
        other => other,
    };
    match list {
        serde_json::Value::Array(items)
            if items
                .iter()
                .all(|i| i.get("name").is_some_and(|n| n.is_string())) =>
        {
            Ok(items)
        }
        _ => Err(format!(
            "--guardrails {path}: expected a list of policies, each with a name"
        )),
    }
}

fn is_manifest_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Files under `dir`, recursively, sorted by path so output does not depend on
/// the file system's order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_manifest_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads the inputs; files in `skip` (this run's own outputs, when a folder
/// holding them is compiled again) are left out.
fn read_inputs(
    paths: &[String],
    skip: &[PathBuf],
) -> Result<(Vec<Manifest>, Vec<Diagnostic>), String> {
    let mut files = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if p == "-" {
            files.push(PathBuf::from("-"));
        } else if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).map_err(|e| format!("{p}: {e}"))?;
            files.extend(found.into_iter().filter(|f| {
                let canonical = f.canonicalize().ok();
                !skip.iter().any(|s| Some(s) == canonical.as_ref())
            }));
        } else {
            files.push(path.to_path_buf());
        }
    }
    let mut manifests = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = if name == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("<stdin>: {e}"))?
        } else {
            std::fs::read_to_string(&f).map_err(|e| format!("{name}: {e}"))?
        };
        let (ms, ds) = if f.extension().and_then(|e| e.to_str()) == Some("json") {
            manifest::parse_json(&name, &text)
        } else {
            manifest::parse_yaml(&name, &text)
        };
        manifests.extend(ms);
        diags.extend(ds);
    }
    Ok((manifests, diags))
}

/// Writes through a temporary file and a rename, so a reader never sees half a file;
/// `private` files (holding credentials) are readable by their owner only.
fn write_atomic(path: &Path, contents: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = open
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the credentials into `dir` (mode 0700), each file 0600, and removes
/// files an earlier run left there that this one does not name.
fn write_secrets(dir: &Path, secrets: &[aigw_cli::SecretFile]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for s in secrets {
        write_atomic(&dir.join(&s.name), s.value.expose(), true)?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_file() && !secrets.iter().any(|s| s.name == name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

fn run(mut a: Box<Args>) -> Result<ExitCode, String> {
    // The native config names the credential files by absolute path: Envoy may
    // run from any folder.
    let secrets_dir = {
        let dir = if a.out_dir.is_absolute() {
            a.out_dir.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("current folder: {e}"))?
                .join(&a.out_dir)
        };
        dir.join("secrets")
    };
    a.options.secrets_dir = secrets_dir.display().to_string();
    let config = a
        .config
        .clone()
        .unwrap_or_else(|| a.out_dir.join("config.json"));
    let bootstrap = a
        .bootstrap
        .clone()
        .unwrap_or_else(|| a.out_dir.join("bootstrap.yaml"));
    let envoy_gateway = a
        .envoy_gateway
        .clone()
        .unwrap_or_else(|| a.out_dir.join("envoy-gateway.yaml"));
    let eg_wasm = a.out_dir.join("envoy-gateway-wasm.yaml");
    let not_enforced = a.out_dir.join("not-enforced.json");
    let ratelimit_config = a.out_dir.join("ratelimit-config.yaml");
    let limitador = a.out_dir.join("limitador-limits.yaml");
    let bootstrap_wasm = bootstrap.with_file_name(match bootstrap.file_stem() {
        Some(stem) => format!("{}-wasm.yaml", stem.to_string_lossy()),
        None => "bootstrap-wasm.yaml".into(),
    });
    let outputs: Vec<PathBuf> = [
        &config,
        &bootstrap,
        &bootstrap_wasm,
        &envoy_gateway,
        &eg_wasm,
        &not_enforced,
        &ratelimit_config,
        &limitador,
    ]
    .iter()
    .filter_map(|p| p.canonicalize().ok())
    .collect();
    let (manifests, read_diags) = read_inputs(&a.paths, &outputs)?;
    let result = compile_with(&manifests, &a.options);
    let mut diags = read_diags;
    let output = match result {
        Ok(out) => {
            diags.extend(out.warnings.iter().cloned());
            Some(out)
        }
        Err(ds) => {
            diags.extend(ds);
            None
        }
    };
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let shown: Vec<Diagnostic> = diags
        .into_iter()
        .filter(|d| d.is_error() || !a.quiet)
        .collect();
    eprint!("{}", diag::render(&shown));
    let Some(out) = output.filter(|_| errors == 0) else {
        eprintln!("aigw: {errors} error(s); nothing written");
        return Ok(ExitCode::from(1));
    };
    if a.check {
        eprintln!("aigw: ok ({} resources)", manifests.len());
        return Ok(ExitCode::SUCCESS);
    }
    // The credentials apart, readable by their owner only; the config and the
    // bootstraps name them and hold none.
    let secrets_env = a.out_dir.join("secrets.env");
    let mut written = Vec::new();
    if out.holds_credentials || secrets_dir.is_dir() {
        write_secrets(&secrets_dir, &out.secrets)?;
        if !out.secrets.is_empty() {
            written.push(secrets_dir.clone());
        }
    }
    match &out.secrets_env {
        Some(text) => {
            write_atomic(&secrets_env, text, true)?;
            written.push(secrets_env);
        }
        None => {
            let _ = std::fs::remove_file(&secrets_env);
        }
    }
    write_atomic(&config, &out.config_json, false)?;
    write_atomic(&bootstrap, &out.bootstrap_yaml, false)?;
    written.extend([config, bootstrap]);
    match &out.bootstrap_wasm_yaml {
        Some(w) => {
            write_atomic(&bootstrap_wasm, w, false)?;
            written.push(bootstrap_wasm);
        }
        // Not left behind from an earlier run: it would hold an older config.
        None => {
            if std::fs::remove_file(&bootstrap_wasm).is_ok() {
                eprintln!("aigw: removed {}", bootstrap_wasm.display());
            }
        }
    }
    write_atomic(&envoy_gateway, &out.envoy_gateway_yaml, false)?;
    written.push(envoy_gateway);
    if let Some(w) = &out.envoy_gateway_wasm_yaml {
        write_atomic(&eg_wasm, w, false)?;
        written.push(eg_wasm);
    }
    for (path, text) in [
        (ratelimit_config, &out.ratelimit_config_yaml),
        (limitador, &out.limitador_yaml),
    ] {
        match text {
            Some(t) => {
                write_atomic(&path, t, false)?;
                written.push(path);
            }
            // Not left behind from a fleet-mode run: it would hold older limits.
            None => {
                if std::fs::remove_file(&path).is_ok() {
                    eprintln!("aigw: removed {}", path.display());
                }
            }
        }
    }
    if !out.not_enforced.is_empty() {
        let text = serde_json::to_string_pretty(&out.not_enforced)
            .map_err(|e| format!("cannot serialise the not-enforced list: {e}"))?;
        write_atomic(&not_enforced, &(text + "\n"), false)?;
        written.push(not_enforced);
    }
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    eprintln!("aigw: wrote {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&argv) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("aigw {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Compile(a)) => match run(a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("aigw: {e}");
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("aigw: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
