//! `kihon4 token issue`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use kihon4_core::auth::{Role, issue_token};
use kihon4_core::config::Config;

/// Prints a signed token; a key that cannot be read or used is bad usage.
pub fn issue(
    config: &Config,
    roles: &[Role],
    ttl: Duration,
    sub: &str,
    private_key: Option<&Path>,
) -> ExitCode {
    let pem = match private_key.map(std::fs::read_to_string).transpose() {
        Ok(pem) => pem,
        Err(e) => {
            eprintln!("kihon4: cannot read the private key: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
    };
    match issue_token(&config.jwt, pem.as_deref(), sub, roles, ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kihon4: {e}");
            ExitCode::from(crate::BAD_USAGE)
        }
    }
}
