//! `tollgate`: operators' commands over the control-plane's admin API (internal listener),
//! plus `tiers` (the public tier list) and `check` (configuration files, offline).
//!
//! Every command prints its answer as a table when stdout is a terminal and as pretty JSON
//! otherwise (`--output` chooses), and exits 0. On failure it prints one line to stderr,
//! `error: <what>`, and exits 1 (the API refused, or `check` found problems: one line each)
//! or 2 (the control-plane could not be reached in time, answered nonsense, or the command
//! line lacks something). URLs may be `https://`: TLS is rustls, servers are verified against
//! the system's trust store. `tenant list` follows the list's cursor page by page and prints
//! the tenants as the pages come (memory stays one page, however many tenants there are).

mod check;
mod output;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use output::Format;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Manage Tollgate tenants, keys and billing; check its configuration"
)]
struct Cli {
    /// The control-plane's internal listener (admin API).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    url: String,
    /// The control-plane's public listener (`tiers`).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    public_url: String,
    /// The admin bearer token (admin commands).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// `table` or `json`; by default a table on a terminal, JSON otherwise.
    #[arg(long, global = true, value_enum)]
    output: Option<Format>,
    /// How long to wait for a connection (TCP and TLS), e.g. `5s` or `500ms`.
    #[arg(long, global = true, default_value = "5s", value_parser = duration)]
    connect_timeout: Duration,
    /// How long to wait for a whole answer, connection included.
    #[arg(long, global = true, default_value = "30s", value_parser = duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

/// `500ms`, `5s`, `2m`, or plain seconds; from 1 ms to 1 hour.
fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    let value = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        _ => return Err(format!("{text:?}: the unit is ms, s or m")),
    };
    if value.is_zero() || value > Duration::from_secs(3600) {
        return Err(format!("{text:?} is not between 1ms and 1 hour"));
    }
    Ok(value)
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
    /// The tier table in force: what each tier offers (public listener).
    Tiers,
    /// Validates a tier table and the filter's configuration offline, and checks them
    /// against each other: route names in tier `costs`, and the API key header.
    Check {
        /// The tier table (TOML), as TOLLGATE_TIERS would load it.
        #[arg(long)]
        tiers: PathBuf,
        /// The filter's configuration: its JSON, or an Envoy config (YAML or JSON) or Istio
        /// WasmPlugin that carries it.
        #[arg(long)]
        filter_config: PathBuf,
        /// The header the control-plane reads API keys from (its TOLLGATE_API_KEY_HEADER).
        #[arg(long, env = "TOLLGATE_API_KEY_HEADER", default_value = "x-api-key")]
        api_key_header: String,
    },
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
    /// The API answered with a problem: exit 1.
    #[error("{code}: {detail}")]
    Refused { code: String, detail: String },
    /// No answer: exit 2.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not the API's: exit 2.
    #[error("unexpected answer from {url} (status {status})")]
    Garbled { url: String, status: StatusCode },
    /// Exit 2, like clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    /// What `check` found, one line each: exit 1.
    #[error("{}", .0.join("\nerror: "))]
    Check(Vec<String>),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Refused { .. } | CliError::Check(_) => ExitCode::from(1),
            CliError::Unreachable { .. } | CliError::Garbled { .. } | CliError::Usage(_) => {
                ExitCode::from(2)
            }
        }
    }

    /// One line for a failed request: what went wrong, in the operator's terms, with the
    /// innermost cause (`Connection refused`, `invalid peer certificate: UnknownIssuer`)
    /// rather than reqwest's chain of wrappers.
    fn unreachable(url: &str, error: &reqwest::Error, timeouts: Timeouts) -> CliError {
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let cause = cause.to_string();
        let reason = if error.is_builder() {
            format!("not a usable URL ({cause})")
        } else if error.is_connect() && error.is_timeout() {
            format!(
                "no connection within {:?} (--connect-timeout)",
                timeouts.connect
            )
        } else if error.is_timeout() {
            format!("no answer within {:?} (--timeout)", timeouts.whole)
        } else if error.is_connect() {
            format!("cannot connect: {cause}")
        } else {
            cause
        };
        CliError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    whole: Duration,
}

/// The HTTP client: rustls with the `ring` provider, both timeouts.
fn http_client(timeouts: Timeouts) -> Result<reqwest::Client, CliError> {
    // Err when a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.whole)
        .build()
        .map_err(|e| CliError::Usage(format!("cannot set up HTTPS: {e}")))
}

/// The admin API call a command makes (`tiers` and `check` make none).
fn request(command: Command) -> (Method, String, Option<Value>) {
    let tenant_path = |id: &str| format!("/admin/v1/tenants/{id}");
    match command {
        Command::Tiers | Command::Check { .. } => (Method::GET, "/api/v1/tiers".into(), None),
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
    /// The answer, in the chosen format.
    Answer(Value),
    /// Already printed (the tenant list, `check`).
    Printed,
    Nothing,
}

async fn run(cli: Cli, format: Format) -> Result<Output, CliError> {
    let timeouts = Timeouts {
        connect: cli.connect_timeout,
        whole: cli.timeout,
    };
    match &cli.command {
        Command::Check {
            tiers,
            filter_config,
            api_key_header,
        } => return run_check(tiers, filter_config, api_key_header, format),
        Command::Tiers => {
            let client = http_client(timeouts)?;
            let answer = call(
                &client,
                timeouts,
                &cli.public_url,
                None,
                Method::GET,
                "/api/v1/tiers",
                None,
            )
            .await?
            .ok_or_else(|| CliError::Garbled {
                url: cli.public_url.clone(),
                status: StatusCode::NO_CONTENT,
            })?;
            return Ok(Output::Answer(answer));
        }
        _ => {}
    }
    let token = cli.token.clone().ok_or_else(|| {
        CliError::Usage("the admin token is required: --token or TOLLGATE_ADMIN_TOKEN".into())
    })?;
    let following = matches!(cli.command, Command::Tenant(TenantCommand::List { .. }));
    let (method, path, body) = request(cli.command);
    let client = http_client(timeouts)?;
    let admin = Admin {
        client: &client,
        timeouts,
        url: &cli.url,
        token: &token,
    };
    if following {
        return list_all(&admin, &path, format).await;
    }
    Ok(
        match call(
            &client,
            timeouts,
            &cli.url,
            Some(&token),
            method,
            &path,
            body,
        )
        .await?
        {
            Some(answer) => Output::Answer(answer),
            None => Output::Nothing,
        },
    )
}

/// `tollgate check`: the problems as errors, or a summary of what agrees.
fn run_check(
    tiers: &std::path::Path,
    filter: &std::path::Path,
    api_key_header: &str,
    format: Format,
) -> Result<Output, CliError> {
    let checked = check::check(tiers, filter, api_key_header).map_err(CliError::Check)?;
    let summary = json!({
        "tiers": checked.tiers,
        "routes": checked.routes,
        "routes_at_default_cost": checked.unpriced_routes,
        "api_key_header": api_key_header.to_ascii_lowercase(),
    });
    match format {
        Format::Json => Ok(Output::Answer(summary)),
        Format::Table => {
            let _ = writeln!(
                std::io::stdout(),
                "ok: {} tier(s) ({}), {} route(s) ({}); API key header {}",
                checked.tiers.len(),
                checked.tiers.join(", "),
                checked.routes.len(),
                checked.routes.join(", "),
                summary["api_key_header"].as_str().unwrap_or_default(),
            );
            Ok(Output::Printed)
        }
    }
}

/// The admin API, as one command calls it.
struct Admin<'a> {
    client: &'a reqwest::Client,
    timeouts: Timeouts,
    url: &'a str,
    token: &'a str,
}

/// Follows the tenant list's `next_cursor` from `path` on, printing the tenants of each page
/// as it comes: as one JSON array, as pretty as any other answer, or as one table whose
/// columns and widths the first page sets.
async fn list_all(admin: &Admin<'_>, path: &str, format: Format) -> Result<Output, CliError> {
    let mut out = std::io::stdout().lock();
    let mut cursor: Option<String> = None;
    let mut first = true;
    let mut layout: Option<(Vec<String>, Vec<usize>)> = None;
    loop {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}&cursor={}", percent_encode(cursor)),
            None => path.to_owned(),
        };
        let garbled = |status| CliError::Garbled {
            url: admin.url.to_owned(),
            status,
        };
        let page = call(
            admin.client,
            admin.timeouts,
            admin.url,
            Some(admin.token),
            Method::GET,
            &page_path,
            None,
        )
        .await?
        .ok_or_else(|| garbled(StatusCode::NO_CONTENT))?;
        let Some(tenants) = page["tenants"].as_array() else {
            return Err(garbled(StatusCode::OK));
        };
        // `let _ =`: a closed pipe (`tollgate tenant list | head`) is not a failure.
        match format {
            Format::Json => {
                for tenant in tenants {
                    let text = serde_json::to_string_pretty(tenant).unwrap_or_default();
                    let indented = text.replace('\n', "\n  ");
                    let _ = write!(out, "{}\n  {indented}", if first { "[" } else { "," });
                    first = false;
                }
            }
            Format::Table => {
                let (columns, widths) = layout.get_or_insert_with(|| {
                    let columns = output::columns(tenants);
                    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
                    let rows: Vec<Vec<String>> =
                        tenants.iter().map(|t| output::row(t, &columns)).collect();
                    let widths = output::widths(&header, &rows);
                    if !tenants.is_empty() {
                        let _ = out.write_all(output::line(&header, &widths).as_bytes());
                    }
                    (columns, widths)
                });
                for tenant in tenants {
                    let line = output::line(&output::row(tenant, columns), widths);
                    let _ = out.write_all(line.as_bytes());
                    first = false;
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    match format {
        Format::Json => {
            let _ = writeln!(out, "{}", if first { "[]" } else { "\n]" });
        }
        Format::Table if first => {
            let _ = writeln!(out, "(none)");
        }
        Format::Table => {}
    }
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

/// One API call: the answer (`None`: 204), or why not.
async fn call(
    client: &reqwest::Client,
    timeouts: Timeouts,
    url: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Option<Value>, CliError> {
    let full = format!("{}{path}", url.trim_end_matches('/'));
    let mut call = client.request(method, &full);
    if let Some(token) = token {
        call = call.bearer_auth(token);
    }
    if let Some(body) = body {
        call = call.json(&body);
    }
    let response = call
        .send()
        .await
        .map_err(|e| CliError::unreachable(url, &e, timeouts))?;
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(None);
    }
    let garbled = || CliError::Garbled {
        url: url.to_owned(),
        status,
    };
    let answer: Value = response.json().await.map_err(|e| {
        if e.is_timeout() {
            CliError::unreachable(url, &e, timeouts)
        } else {
            garbled()
        }
    })?;
    if status.is_success() {
        return Ok(Some(answer));
    }
    let text = |field: &str| answer[field].as_str().map(str::to_owned);
    match (text("code"), text("detail")) {
        (Some(code), Some(detail)) => Err(CliError::Refused { code, detail }),
        _ => Err(garbled()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = Format::chosen(cli.output, std::io::stdout().is_terminal());
    match run(cli, format).await {
        Ok(output) => {
            if let Output::Answer(answer) = output {
                output::print(&mut std::io::stdout(), format, &answer);
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

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        for wrong in ["0s", "2h", "61m", "fast", "5 s", "-1s", ""] {
            assert!(duration(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn tiers_and_check_need_no_token_and_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "tollgate",
            "check",
            "--tiers",
            "t.toml",
            "--filter-config",
            "envoy.yaml",
            "--output",
            "json",
        ])
        .unwrap();
        assert!(cli.token.is_none());
        assert_eq!(cli.output, Some(Format::Json));
        let Command::Check { api_key_header, .. } = cli.command else {
            panic!("check");
        };
        assert_eq!(api_key_header, "x-api-key");
        let cli = Cli::try_parse_from(["tollgate", "tiers", "--timeout", "2s"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert_eq!(cli.connect_timeout, Duration::from_secs(5), "the default");
        assert!(Cli::try_parse_from(["tollgate", "tiers", "--output", "yaml"]).is_err());
    }

    /// The one line `tollgate` prints for `url`, with these timeouts.
    async fn failure(url: &str, timeouts: Timeouts) -> String {
        let client = http_client(timeouts).unwrap();
        let error = super::call(&client, timeouts, url, None, Method::GET, "/x", None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), ExitCode::from(2));
        let line = format!("error: {error}");
        assert!(!line.contains('\n'), "one line: {line}");
        line
    }

    const QUICK: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        whole: Duration::from_millis(300),
    };

    #[tokio::test]
    async fn unreachable_servers_get_one_clear_line() {
        // A port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let line = failure(&url, QUICK).await;
        assert!(
            line.starts_with(&format!("error: cannot reach {url}: cannot connect: ")),
            "{line}"
        );
        assert!(line.contains("refused"), "{line}");

        // A server that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let line = failure(&url, QUICK).await;
        assert_eq!(
            line,
            format!("error: cannot reach {url}: no answer within 300ms (--timeout)")
        );

        // https to a server that speaks plain HTTP: the TLS handshake fails, said once.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = plain.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut stream, _)) = plain.accept().await {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = format!("https://{address}");
        let line = failure(&url, QUICK).await;
        assert!(
            line.starts_with(&format!("error: cannot reach {url}: cannot connect: ")),
            "{line}"
        );
        let line = failure("http://[::1", QUICK).await;
        assert!(line.contains("not a usable URL"), "{line}");
    }
}
