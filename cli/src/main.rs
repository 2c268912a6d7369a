//! `tollgate`: operators' commands over the control-plane's admin API (internal listener).
//!
//! Every command prints the API's JSON answer (pretty) on success and exits 0; on failure it
//! prints one line, `error: <code>: <detail>`, to stderr and exits 1 (the API refused) or 2
//! (the control-plane could not be reached or answered nonsense). `tenant list` follows the
//! list's cursor page by page and prints every tenant as one JSON array, written as the pages
//! come (memory stays one page, however many tenants there are).

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
    /// Lists every tenant with its current use, page by page.
    List {
        /// Tenants per request (1 to 1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
        page_size: u16,
    },
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
        Command::Tenant(TenantCommand::List { page_size }) => (
            Method::GET,
            format!("/admin/v1/tenants?limit={page_size}"),
            None,
        ),
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

/// What a command prints on success.
enum Output {
    /// The answer, pretty.
    Answer(Value),
    /// Already printed (the tenant list).
    Printed,
    Nothing,
}

async fn run(cli: Cli) -> Result<Output, CliError> {
    let following = matches!(cli.command, Command::Tenant(TenantCommand::List { .. }));
    let (method, path, body) = request(cli.command);
    let client = reqwest::Client::new();
    if following {
        return list_all(&client, &cli.url, &cli.token, &path).await;
    }
    Ok(
        match call(&client, &cli.url, &cli.token, method, &path, body).await? {
            Some(answer) => Output::Answer(answer),
            None => Output::Nothing,
        },
    )
}

/// Follows the tenant list's `next_cursor` from `path` on, printing the tenants of each page
/// as it comes: together, one JSON array, as pretty as any other answer.
async fn list_all(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
) -> Result<Output, CliError> {
    let mut out = std::io::stdout().lock();
    let mut cursor: Option<String> = None;
    let mut first = true;
    loop {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}&cursor={}", percent_encode(cursor)),
            None => path.to_owned(),
        };
        let page = call(client, url, token, Method::GET, &page_path, None)
            .await?
            .ok_or(CliError::Garbled(StatusCode::NO_CONTENT))?;
        let Some(tenants) = page["tenants"].as_array() else {
            return Err(CliError::Garbled(StatusCode::OK));
        };
        for tenant in tenants {
            let text = serde_json::to_string_pretty(tenant).unwrap_or_default();
            let indented = text.replace('\n', "\n  ");
            // `let _ =`: a closed pipe (`tollgate tenant list | head`) is not a failure.
            let _ = write!(out, "{}\n  {indented}", if first { "[" } else { "," });
            first = false;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let _ = writeln!(out, "{}", if first { "[]" } else { "\n]" });
    Ok(Output::Printed)
}

/// A cursor as a query value (tenant ids are `tn_` and hex; anything else is escaped).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One admin API call: the answer (`None`: 204), or why not.
async fn call(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Option<Value>, CliError> {
    let full = format!("{}{path}", url.trim_end_matches('/'));
    let mut call = client.request(method, &full).bearer_auth(token);
    if let Some(body) = body {
        call = call.json(&body);
    }
    let response = call.send().await.map_err(|source| CliError::Unreachable {
        url: url.to_owned(),
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
        Ok(output) => {
            // `writeln!`, not `println!`: a closed pipe (`tollgate … | head`) is not a panic.
            if let Output::Answer(answer) = output {
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
    fn the_tenant_list_asks_for_pages() {
        assert_eq!(
            call(&["tenant", "list"]),
            (Method::GET, "/admin/v1/tenants?limit=500".into())
        );
        assert_eq!(
            call(&["tenant", "list", "--page-size", "2"]),
            (Method::GET, "/admin/v1/tenants?limit=2".into())
        );
        assert!(
            Cli::try_parse_from([
                "tollgate",
                "--token",
                "t",
                "tenant",
                "list",
                "--page-size",
                "0"
            ])
            .is_err()
        );
        assert_eq!(percent_encode("tn_0a1b"), "tn_0a1b");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
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
