//! The control-plane's configuration, from flags or the environment.
//!
//! Secrets are wrapped in [`Secret`], whose `Debug` prints nothing, so logging the config (or
//! an error that contains it) cannot leak them; clap is told not to show their values in
//! `--help` either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use clap::{Parser, ValueEnum};

use crate::storage::redis::RedisTarget;

#[derive(Debug, Clone, Parser)]
#[command(name = "tollgate-control-plane", version, about)]
pub struct Config {
    /// Internal listener: decisions, admin API, metrics. Never route public traffic here.
    #[arg(long, env = "TOLLGATE_INTERNAL_ADDR", default_value = "127.0.0.1:8081")]
    pub internal_addr: SocketAddr,

    /// Public listener: health, usage, billing and the dashboard; Envoy's public listener
    /// routes here.
    #[arg(long, env = "TOLLGATE_PUBLIC_ADDR", default_value = "127.0.0.1:8080")]
    pub public_addr: SocketAddr,

    /// Bearer token for the admin API (at least 16 characters).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true, value_parser = secret_of_at_least::<16>)]
    pub admin_token: Secret,

    /// Secret that keys the API-key hashes (at least 32 characters). Changing it invalidates
    /// every issued key.
    #[arg(long, env = "TOLLGATE_KEY_SECRET", hide_env_values = true, value_parser = secret_of_at_least::<32>)]
    pub key_secret: Secret,

    /// Redis for windows and tenants, shared by every replica (`redis://` or `rediss://`).
    /// Without it (and without a cluster), the in-memory store applies.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, conflicts_with = "redis_cluster_urls", value_parser = secret_of_at_least::<1>)]
    pub redis_url: Option<Secret>,

    /// Redis Cluster seed nodes, comma-separated.
    #[arg(long, env = "REDIS_CLUSTER_URLS", hide_env_values = true, value_delimiter = ',', value_parser = secret_of_at_least::<1>)]
    pub redis_cluster_urls: Option<Vec<Secret>>,

    /// Longest wait for Redis on any call; past it a decision answers 503.
    #[arg(long, env = "TOLLGATE_REDIS_TIMEOUT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub redis_timeout_ms: u64,

    /// Whose clock the window scripts use: Redis `TIME` (replicas agree whatever their
    /// clocks), or this process's (for Redis-compatible servers that refuse `TIME` in scripts).
    #[arg(long, env = "TOLLGATE_REDIS_CLOCK", value_enum, default_value_t = RedisClock::Redis)]
    pub redis_clock: RedisClock,

    /// Without Redis: keep tenants in this embedded database (redb; created if absent), one
    /// record per tenant and per key hash, written transactionally, so a restart keeps them.
    /// One control-plane per file. Without it (and without `--state-file`), tenants last as
    /// long as the process.
    #[arg(long, env = "TOLLGATE_REGISTRY", conflicts_with_all = ["redis_url", "redis_cluster_urls"])]
    pub registry: Option<PathBuf>,

    /// The JSON state file of earlier versions: imported into the registry once, then renamed
    /// `<file>.migrated`. Without `--registry`, the registry is kept beside it, as
    /// `<file without extension>.redb`.
    #[arg(long, env = "TOLLGATE_STATE_FILE", conflicts_with_all = ["redis_url", "redis_cluster_urls"])]
    pub state_file: Option<PathBuf>,

    /// Tenants each replica keeps in memory (the active ones, least recently used out first);
    /// a key of any other costs one store read.
    #[arg(long, env = "TOLLGATE_TENANT_CACHE", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(16..=100_000_000))]
    pub tenant_cache: u64,

    /// With Redis: changes the tenant change log keeps. A replica cut off from Redis for more
    /// changes than this re-reads the tenants it has cached when it comes back.
    #[arg(long, env = "TOLLGATE_TENANT_CHANGE_LOG", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    pub tenant_change_log: u64,

    /// The header tenants send their API key in (besides `Authorization: Bearer`) to the
    /// usage and billing endpoints; the same as the filter's `api_key.header`.
    #[arg(long, env = "TOLLGATE_API_KEY_HEADER", default_value = "x-api-key", value_parser = header_name)]
    pub api_key_header: HeaderName,

    /// Browser origins allowed to read the usage endpoint (CORS), comma-separated, e.g.
    /// `https://dashboard.example.com`. Without any, only same-origin pages can.
    #[arg(long, env = "TOLLGATE_CORS_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub cors_origins: Vec<HeaderValue>,

    /// Signing secret of the Stripe webhook endpoint (`whsec_…`). Without it, billing
    /// endpoints answer 503 `billing_not_configured` and everything else works.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret_of_at_least::<8>)]
    pub stripe_webhook_secret: Option<Secret>,

    /// Stripe API secret key (`sk_…`, or a restricted `rk_…` allowed to write Checkout
    /// Sessions and Billing Portal sessions). Without it, checkout and portal answer 503
    /// `billing_not_configured`.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true, requires = "billing_return_url", value_parser = secret_of_at_least::<8>)]
    pub stripe_secret_key: Option<Secret>,

    /// Stripe's API root; point it at a stand-in server for tests. Plain `http://` only to
    /// loopback, so the secret key never crosses a network unencrypted.
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com/", value_parser = stripe_api_base)]
    pub stripe_api_base: String,

    /// Where Checkout and the Billing Portal send the tenant back, e.g. the platform's
    /// billing page. Checkout adds `checkout=success&session_id=…` or `checkout=canceled`.
    #[arg(long, env = "TOLLGATE_BILLING_RETURN_URL", value_parser = http_url)]
    pub billing_return_url: Option<String>,

    /// How long a past-due subscription keeps its paid tier before the default tier applies.
    #[arg(long, env = "TOLLGATE_PAST_DUE_GRACE_SECS", default_value_t = 3 * 86_400)]
    pub past_due_grace_secs: u64,

    /// The Stripe API version every call to Stripe is made with (`Stripe-Version`), and the
    /// one webhook events are expected in (an event of another version is logged, once per
    /// version). Logged at startup. The default is the version async-stripe's request types
    /// were generated for; Tollgate reads answers and events as plain JSON, so others work.
    #[arg(long, env = "STRIPE_API_VERSION", default_value = STRIPE_API_VERSION, value_parser = api_version)]
    pub stripe_api_version: String,

    /// How often every tenant linked to Stripe is checked against Stripe (its subscriptions
    /// fetched and applied), besides once at startup; 0: never (events and on-demand syncs
    /// only). This is what corrects a tier after webhooks were missed.
    #[arg(long, env = "TOLLGATE_BILLING_SYNC_SECS", default_value_t = 3600)]
    pub billing_sync_secs: u64,

    /// Tenants checked against Stripe at once during a sync of all of them.
    #[arg(long, env = "TOLLGATE_BILLING_SYNC_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub billing_sync_concurrency: u16,

    /// How long a Checkout Session stays open (Stripe allows 30 minutes to 24 hours). A
    /// retried checkout within the same minute gets the same session, so a session may last
    /// up to a minute longer.
    #[arg(long, env = "TOLLGATE_CHECKOUT_EXPIRY_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1800..=86_340))]
    pub checkout_expiry_secs: u64,

    /// Checkout accepts promotion codes.
    #[arg(
        long,
        env = "TOLLGATE_CHECKOUT_PROMOTION_CODES",
        default_value_t = false
    )]
    pub checkout_promotion_codes: bool,

    /// Checkout calculates tax with Stripe Tax (the account must have it set up); the
    /// address collected is saved on the tenant's customer.
    #[arg(long, env = "TOLLGATE_CHECKOUT_AUTOMATIC_TAX", default_value_t = false)]
    pub checkout_automatic_tax: bool,

    /// Checkout lets the buyer enter a tax id (VAT number, …), saved on the customer.
    #[arg(
        long,
        env = "TOLLGATE_CHECKOUT_TAX_ID_COLLECTION",
        default_value_t = false
    )]
    pub checkout_tax_id_collection: bool,

    /// Whether Checkout always asks for a billing address or only when it needs one.
    #[arg(long, env = "TOLLGATE_CHECKOUT_BILLING_ADDRESS", value_enum, default_value_t = BillingAddress::Auto)]
    pub checkout_billing_address: BillingAddress,

    /// Tier table (TOML). Without it, the built-in Standard/Pro table applies.
    #[arg(long, env = "TOLLGATE_TIERS")]
    pub tiers: Option<PathBuf>,

    /// Shadow mode for every tier: decide and count, never refuse (see `shadow` in the tier
    /// table for one tier).
    #[arg(long, env = "TOLLGATE_SHADOW", default_value_t = false)]
    pub shadow: bool,

    /// How often to check the tier table file for changes (SIGHUP reloads at once).
    #[arg(long, env = "TOLLGATE_TIERS_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub tiers_poll_ms: u64,

    /// Log line format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Threads deciding callouts (the internal listener: decisions, admin API, metrics). 1: a
    /// current-thread runtime, as an Envoy worker runs, which costs the least per decision (no
    /// cross-thread wake-ups; measured in bench/); more for a replica with cores of its own.
    #[arg(long, env = "TOLLGATE_DECISION_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub decision_threads: u16,

    /// Threads serving the public listener (usage, tiers, billing, dashboard) and background
    /// work. Apart from the decision threads and at a lower CPU priority, so nothing a client
    /// does there delays a decision.
    #[arg(long, env = "TOLLGATE_PUBLIC_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub public_threads: u16,

    /// Proxies in front of the public listener that append the client's address to
    /// `X-Forwarded-For` (Envoy with `use_remote_address: true` counts as one); the address
    /// the outermost of them saw keys the per-address budgets. 0: the connection's peer.
    #[arg(long, env = "TOLLGATE_TRUSTED_HOPS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=16))]
    pub trusted_hops: u8,

    /// `GET /api/v1/usage` requests per second per tenant (twice as many at once); past
    /// it, 429. A dashboard polling every few seconds uses a fraction.
    #[arg(long, env = "TOLLGATE_USAGE_BUDGET", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub usage_budget: u32,

    /// Checkout and portal sessions per second per tenant (five at once); each is a call to
    /// Stripe. Past it, 429.
    #[arg(long, env = "TOLLGATE_BILLING_BUDGET", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub billing_budget: u32,

    /// Requests per second per client address on the public listener's other endpoints
    /// (tiers, dashboard, health) and for requests without a usable key (twice as many at
    /// once); past it, 429.
    #[arg(long, env = "TOLLGATE_PUBLIC_BUDGET", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub public_budget: u32,

    /// How long a usage token (`POST /api/v1/usage/tokens`: read-only access to
    /// `GET /api/v1/usage`, for a dashboard that should not hold the API key) stays valid,
    /// in seconds: 1 second to 1 hour.
    #[arg(long, env = "TOLLGATE_USAGE_TOKEN_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub usage_token_ttl_secs: u64,

    /// How long a lease lasts (admissions granted ahead to an Envoy that asks; see
    /// `window::lease`): revocations, suspensions and tier changes reach leased traffic
    /// within it. 0: no leases.
    #[arg(long, env = "TOLLGATE_LEASE_TTL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub lease_ttl_ms: u64,

    /// How long a client may take to send a request's headers on either listener; also how
    /// long an idle HTTP/1 keep-alive connection stays open.
    #[arg(long, env = "TOLLGATE_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_timeout_ms: u64,

    /// A connection that sends nothing for this long is closed (a stalled upload or handshake,
    /// a silent peer); HTTP/2 peers are pinged every third of it and stay while they answer.
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(300..=3_600_000))]
    pub idle_timeout_ms: u64,

    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,
}

impl Config {
    pub fn tiers_poll(&self) -> Duration {
        Duration::from_millis(self.tiers_poll_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The store, as one value that cannot be half-configured.
    pub fn store(&self) -> StoreConfig {
        let target = match (&self.redis_url, &self.redis_cluster_urls) {
            (Some(url), _) => RedisTarget::Standalone(url.expose().to_owned()),
            (None, Some(urls)) => {
                RedisTarget::Cluster(urls.iter().map(|u| u.expose().to_owned()).collect())
            }
            (None, None) => {
                return StoreConfig::Memory {
                    registry: self.registry_files(),
                };
            }
        };
        StoreConfig::Redis {
            target,
            timeout: Duration::from_millis(self.redis_timeout_ms),
            clock: self.redis_clock,
        }
    }

    /// The embedded registry's file, and the state file to import into it, if any.
    fn registry_files(&self) -> Option<RegistryFiles> {
        let database = match (&self.registry, &self.state_file) {
            (Some(database), _) => database.clone(),
            (None, Some(state_file)) if state_file.extension().is_some_and(|e| e == "redb") => {
                // Pointed at a registry already: nothing to import.
                return Some(RegistryFiles {
                    database: state_file.clone(),
                    import_from: None,
                });
            }
            (None, Some(state_file)) => state_file.with_extension("redb"),
            (None, None) => return None,
        };
        Some(RegistryFiles {
            database,
            import_from: self.state_file.clone(),
        })
    }
}

/// Where the embedded registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryFiles {
    pub database: PathBuf,
    /// A state file of earlier versions to import once.
    pub import_from: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Windows in memory; tenants in the embedded registry (`None`: in memory too).
    Memory { registry: Option<RegistryFiles> },
    Redis {
        target: RedisTarget,
        timeout: Duration,
        clock: RedisClock,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisClock {
    Redis,
    Local,
}

/// Checkout's `billing_address_collection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BillingAddress {
    /// Only when payment or tax needs it.
    Auto,
    /// Always.
    Required,
}

/// The Stripe API version Tollgate's calls are made with unless configured otherwise: the one
/// the pinned async-stripe's request types were generated for (a unit test keeps them equal).
pub const STRIPE_API_VERSION: &str = "2026-09-30.endive";

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

fn origin(value: &str) -> Result<HeaderValue, String> {
    let valid = (value.starts_with("https://") || value.starts_with("http://"))
        && !value.ends_with('/')
        && !value.contains(char::is_whitespace);
    if !valid {
        return Err("an origin is scheme://host[:port], without a path".to_owned());
    }
    HeaderValue::from_str(value).map_err(|e| e.to_string())
}

/// A Stripe API version: `YYYY-MM-DD`, optionally `.name` (e.g. `2026-09-30.endive`).
fn api_version(value: &str) -> Result<String, String> {
    let (date, name) = value.split_once('.').unwrap_or((value, "a"));
    let date_ok = date.len() == 10
        && date.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase());
    if date_ok && name_ok {
        Ok(value.to_owned())
    } else {
        Err("a Stripe API version is YYYY-MM-DD or YYYY-MM-DD.name".to_owned())
    }
}

fn header_name(value: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(value.to_ascii_lowercase().as_bytes()).map_err(|e| e.to_string())
}

fn stripe_api_base(value: &str) -> Result<String, String> {
    let url = http_url(value)?;
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| {
            url.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if url.starts_with("http://") && !loopback {
        return Err("must be https:// (plain http:// only to loopback)".to_owned());
    }
    Ok(url)
}

fn http_url(value: &str) -> Result<String, String> {
    let valid = (value.starts_with("https://") || value.starts_with("http://"))
        && value.parse::<axum::http::Uri>().is_ok();
    if !valid {
        return Err("must be an absolute http(s) URL".to_owned());
    }
    Ok(value.to_owned())
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
    fn the_store_is_memory_unless_redis_is_named() {
        let base = ["cp", "--admin-token", TOKEN, "--key-secret", KEY_SECRET];
        let memory = Config::try_parse_from(base).unwrap();
        assert_eq!(memory.store(), StoreConfig::Memory { registry: None });
        let legacy = Config::try_parse_from(
            base.iter()
                .copied()
                .chain(["--state-file", "/var/lib/tollgate/state.json"]),
        )
        .unwrap();
        assert_eq!(
            legacy.store(),
            StoreConfig::Memory {
                registry: Some(RegistryFiles {
                    database: "/var/lib/tollgate/state.redb".into(),
                    import_from: Some("/var/lib/tollgate/state.json".into()),
                })
            },
            "an old state file is imported into a registry beside it"
        );
        let both = Config::try_parse_from(base.iter().copied().chain([
            "--state-file",
            "old.json",
            "--registry",
            "tenants.redb",
        ]))
        .unwrap();
        assert_eq!(
            both.store(),
            StoreConfig::Memory {
                registry: Some(RegistryFiles {
                    database: "tenants.redb".into(),
                    import_from: Some("old.json".into()),
                })
            }
        );

        let redis = Config::try_parse_from(
            base.iter()
                .copied()
                .chain(["--redis-url", "redis://:pw@h:1"]),
        )
        .unwrap();
        assert!(matches!(
            redis.store(),
            StoreConfig::Redis {
                target: RedisTarget::Standalone(_),
                ..
            }
        ));
        assert!(!format!("{redis:?}").contains("pw"), "{redis:?}");
        assert!(!format!("{:?}", redis.store()).contains("pw"));

        let cluster = Config::try_parse_from(
            base.iter()
                .copied()
                .chain(["--redis-cluster-urls", "redis://a:1,redis://b:2"]),
        )
        .unwrap();
        let StoreConfig::Redis {
            target: RedisTarget::Cluster(urls),
            ..
        } = cluster.store()
        else {
            panic!()
        };
        assert_eq!(urls.len(), 2);

        let both = Config::try_parse_from(base.iter().copied().chain([
            "--redis-url",
            "redis://h:1",
            "--state-file",
            "x.json",
        ]));
        assert!(both.is_err(), "a state file with Redis is a contradiction");
    }

    #[test]
    fn the_stripe_api_is_reached_over_tls_unless_on_loopback() {
        assert!(stripe_api_base("https://api.stripe.com/").is_ok());
        assert!(stripe_api_base("http://127.0.0.1:12111").is_ok());
        assert!(stripe_api_base("http://localhost/").is_ok());
        assert!(stripe_api_base("http://stripe-mock:12111").is_err());
        assert!(stripe_api_base("http://127.0.0.1.example.com").is_err());
    }

    #[test]
    fn billing_settings_have_safe_defaults_and_bounds() {
        let base = ["cp", "--admin-token", TOKEN, "--key-secret", KEY_SECRET];
        let config = Config::try_parse_from(base).unwrap();
        assert_eq!(config.stripe_api_version, STRIPE_API_VERSION);
        assert_eq!(
            STRIPE_API_VERSION,
            stripe_client_core::VERSION.as_str(),
            "the default is what async-stripe's request types were made for"
        );
        assert_eq!(
            (config.billing_sync_secs, config.checkout_expiry_secs),
            (3600, 1800)
        );
        assert_eq!(config.checkout_billing_address, BillingAddress::Auto);
        assert!(!config.checkout_automatic_tax && !config.checkout_promotion_codes);
        let with = |extra: &[&str]| Config::try_parse_from(base.iter().chain(extra));
        assert!(
            with(&["--checkout-expiry-secs", "600"]).is_err(),
            "Stripe's minimum is 30 min"
        );
        assert!(with(&["--stripe-api-version", "latest"]).is_err());
        assert!(with(&["--stripe-api-version", "2017-08-15"]).is_ok());
        assert!(with(&["--billing-sync-concurrency", "0"]).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        let error =
            Config::try_parse_from(["cp", "--admin-token", "short", "--key-secret", KEY_SECRET])
                .unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
    }

    #[test]
    fn one_thread_decides_and_another_serves_the_public_unless_told_otherwise() {
        let base = ["cp", "--admin-token", TOKEN, "--key-secret", KEY_SECRET];
        let default = Config::try_parse_from(base).unwrap();
        assert_eq!((default.decision_threads, default.public_threads), (1, 1));
        let four = Config::try_parse_from(base.iter().chain(&["--decision-threads", "4"])).unwrap();
        assert_eq!(four.decision_threads, 4);
        let error =
            Config::try_parse_from(base.iter().chain(&["--public-threads", "0"])).unwrap_err();
        assert!(error.to_string().contains("public-threads"), "{error}");
    }
}
