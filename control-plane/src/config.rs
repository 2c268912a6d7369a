//! The control-plane's configuration, from flags or the environment.
//!
//! Secrets are wrapped in [`Secret`], whose `Debug` prints nothing, so logging the config (or
//! an error that contains it) cannot leak them; clap is told not to show their values in
//! `--help` either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(name = "tollgate-control-plane", version, about)]
pub struct Config {
    /// Internal listener: decisions, admin API, metrics. Never route public traffic here.
    #[arg(long, env = "TOLLGATE_INTERNAL_ADDR", default_value = "127.0.0.1:8081")]
    pub internal_addr: SocketAddr,

    /// Public listener: health now; usage, billing and the dashboard later.
    #[arg(long, env = "TOLLGATE_PUBLIC_ADDR", default_value = "127.0.0.1:8080")]
    pub public_addr: SocketAddr,

    /// Bearer token for the admin API (at least 16 characters).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true, value_parser = secret_of_at_least::<16>)]
    pub admin_token: Secret,

    /// Secret that keys the API-key hashes (at least 32 characters). Changing it invalidates
    /// every issued key.
    #[arg(long, env = "TOLLGATE_KEY_SECRET", hide_env_values = true, value_parser = secret_of_at_least::<32>)]
    pub key_secret: Secret,

    /// Tier table (TOML). Without it, the built-in Standard/Pro table applies.
    #[arg(long, env = "TOLLGATE_TIERS")]
    pub tiers: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,
}

impl Config {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret string whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn secret_of_at_least<const N: usize>(value: &str) -> Result<Secret, String> {
    if value.chars().count() < N {
        return Err(format!("must be at least {N} characters"));
    }
    Ok(Secret(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "admin-token-0123456789";
    const KEY_SECRET: &str = "key-secret-0123456789-0123456789-0123456789";

    #[test]
    fn defaults_bind_loopback_and_secrets_do_not_print() {
        let config =
            Config::try_parse_from(["cp", "--admin-token", TOKEN, "--key-secret", KEY_SECRET])
                .unwrap();
        assert_eq!(config.internal_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(config.public_addr.to_string(), "127.0.0.1:8080");
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(TOKEN) && !printed.contains(KEY_SECRET),
            "{printed}"
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        let error =
            Config::try_parse_from(["cp", "--admin-token", "short", "--key-secret", KEY_SECRET])
                .unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
    }
}
