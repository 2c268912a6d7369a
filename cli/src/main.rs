//! `tollgate`: operators' commands over the control-plane's admin API (internal listener).
//!
//! Every command prints the API's JSON answer (pretty) on success and exits 0; on failure it
//! prints one line, `error: <code>: <detail>`, to stderr and exits 1 (the API refused) or 2
//! (the control-plane could not be reached or answered nonsense).

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Manage Tollgate tenants, keys and billing"
)]
struct Cli {
    /// The control-plane's internal listener.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    url: String,
    /// The admin bearer token.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API keys of a tenant.
    #[command(subcommand)]
    Key(KeyCommand),
    /// A tenant's usage: the current window, the last hour, the month.
    Usage { tenant: String },
    /// Tenants' Stripe billing.
    #[command(subcommand)]
    Billing(BillingCommand),
}

#[derive(Subcommand)]
enum BillingCommand {
    /// Checks a tenant (or every linked tenant) against Stripe now and applies what Stripe
    /// holds; prints what changed.
    Sync {
        /// The tenant to sync.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every tenant linked to Stripe.
        #[arg(long)]
        all: bool,
    },
    /// Unlinks the tenant from its Stripe customer (nothing changes at Stripe); its next
    /// checkout creates a new customer.
    Unlink { tenant: String },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Creates a tenant and prints its first API key (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tier: Option<String>,
    },
    /// Lists tenants with their current use.
    List,
    Show {
        tenant: String,
    },
    SetTier {
        tenant: String,
        tier: String,
    },
    /// Refuses the tenant's requests (403) until resumed.
    Suspend {
        tenant: String,
    },
    Resume {
        tenant: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issues one more key (shown once).
    Issue { tenant: String },
    /// Issues a new key; the old one keeps working for the grace period.
    Rotate {
        tenant: String,
        key: String,
        /// Seconds the old key keeps working (default: one day).
        #[arg(long)]
        grace: Option<u64>,
    },
    /// The key stops working now.
    Revoke { tenant: String, key: String },
    /// The tenant's working keys (ids, prefixes, dates; never the keys).
    List { tenant: String },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{code}: {detail}")]
    Refused { code: String, detail: String },
    #[error("cannot reach the control-plane at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("unexpected answer (status {0})")]
    Garbled(StatusCode),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Refused { .. } => ExitCode::from(1),
            CliError::Unreachable { .. } | CliError::Garbled(_) => ExitCode::from(2),
        }
    }
}

/// The admin API call a command makes.
fn request(command: Command) -> (Method, String, Option<Value>) {
    let tenant_path = |id: &str| format!("/admin/v1/tenants/{id}");
    match command {
        Command::Tenant(TenantCommand::Create { name, tier }) => (
            Method::POST,
            "/admin/v1/tenants".into(),
            Some(json!({"name": name, "tier": tier})),
        ),
        Command::Tenant(TenantCommand::List) => (Method::GET, "/admin/v1/tenants".into(), None),
        Command::Tenant(TenantCommand::Show { tenant }) => {
            (Method::GET, tenant_path(&tenant), None)
        }
        Command::Tenant(TenantCommand::SetTier { tenant, tier }) => (
            Method::PATCH,
            tenant_path(&tenant),
            Some(json!({"tier": tier})),
        ),
        Command::Tenant(TenantCommand::Suspend { tenant }) => (
            Method::PATCH,
            tenant_path(&tenant),
            Some(json!({"suspended": true})),
        ),
        Command::Tenant(TenantCommand::Resume { tenant }) => (
            Method::PATCH,
            tenant_path(&tenant),
            Some(json!({"suspended": false})),
        ),
        Command::Key(KeyCommand::Issue { tenant }) => {
            (Method::POST, format!("{}/keys", tenant_path(&tenant)), None)
        }
        Command::Key(KeyCommand::Rotate { tenant, key, grace }) => (
            Method::POST,
            format!("{}/keys/{key}/rotate", tenant_path(&tenant)),
            grace.map(|grace| json!({"grace_seconds": grace})),
        ),
        Command::Key(KeyCommand::Revoke { tenant, key }) => (
            Method::DELETE,
            format!("{}/keys/{key}", tenant_path(&tenant)),
            None,
        ),
        Command::Key(KeyCommand::List { tenant }) => {
            (Method::GET, format!("{}/keys", tenant_path(&tenant)), None)
        }
        Command::Usage { tenant } => (Method::GET, format!("{}/usage", tenant_path(&tenant)), None),
        Command::Billing(BillingCommand::Sync {
            tenant: Some(tenant),
            ..
        }) => (
            Method::POST,
            format!("{}/billing/sync", tenant_path(&tenant)),
            None,
        ),
        Command::Billing(BillingCommand::Sync { tenant: None, .. }) => {
            (Method::POST, "/admin/v1/billing/sync".into(), None)
        }
        Command::Billing(BillingCommand::Unlink { tenant }) => (
            Method::DELETE,
            format!("{}/billing", tenant_path(&tenant)),
            None,
        ),
    }
}

async fn run(cli: Cli) -> Result<Option<Value>, CliError> {
    let (method, path, body) = request(cli.command);
    let url = format!("{}{path}", cli.url.trim_end_matches('/'));
    let mut call = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&cli.token);
    if let Some(body) = body {
        call = call.json(&body);
    }
    let response = call.send().await.map_err(|source| CliError::Unreachable {
        url: cli.url.clone(),
        source,
    })?;
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(None);
    }
    let answer: Value = response
        .json()
        .await
        .map_err(|_| CliError::Garbled(status))?;
    if status.is_success() {
        return Ok(Some(answer));
    }
    let text = |field: &str| answer[field].as_str().map(str::to_owned);
    match (text("code"), text("detail")) {
        (Some(code), Some(detail)) => Err(CliError::Refused { code, detail }),
        _ => Err(CliError::Garbled(status)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(answer) => {
            // `writeln!`, not `println!`: a closed pipe (`tollgate … | head`) is not a panic.
            if let Some(answer) = answer {
                let text = serde_json::to_string_pretty(&answer).unwrap_or_default();
                let _ = writeln!(std::io::stdout(), "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> (Method, String) {
        let cli = Cli::try_parse_from(["tollgate", "--token", "t"].iter().chain(args)).unwrap();
        let (method, path, _) = request(cli.command);
        (method, path)
    }

    #[test]
    fn billing_commands_call_the_billing_routes() {
        assert_eq!(
            call(&["billing", "sync", "tn_1"]),
            (Method::POST, "/admin/v1/tenants/tn_1/billing/sync".into())
        );
        assert_eq!(
            call(&["billing", "sync", "--all"]),
            (Method::POST, "/admin/v1/billing/sync".into())
        );
        assert_eq!(
            call(&["billing", "unlink", "tn_1"]),
            (Method::DELETE, "/admin/v1/tenants/tn_1/billing".into())
        );
        for wrong in [
            &["billing", "sync"][..],
            &["billing", "sync", "tn_1", "--all"],
        ] {
            let args = ["tollgate", "--token", "t"].iter().chain(wrong);
            assert!(Cli::try_parse_from(args).is_err(), "{wrong:?}");
        }
    }
}
