//! Credentials from environment variables: read once, when a config loads. A
//! variable the config names that is unset or empty refuses the config (the process
//! environment does not change later, so waiting would not help).

use aigw_filter::Config;

/// Reads every credential variable `config` names into its secret store; the error
/// names the missing ones (`hint` says how the host passes variables in).
pub(crate) fn load(config: &Config, hint: &str) -> Result<(), String> {
    let mut missing = Vec::new();
    for name in config.secret_env() {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => config.secrets().set_env(name, &v),
            _ => missing.push(name),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "credential environment variable(s) {} not set or empty{hint}",
            missing.join(", ")
        ))
    }
}
