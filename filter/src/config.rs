//! The filter's configuration: the JSON an operator writes in Envoy's `configuration` field,
//! and the immutable [`Settings`] the filter runs with.
//!
//! The wire types mirror the JSON exactly (unknown fields are errors, so a typo is refused
//! rather than silently ignored); [`Settings::from_json`] validates them and builds the runtime
//! form, where safe defaults live in the types. Envoy refuses the whole configuration when this
//! fails, so a bad rollout never reaches traffic.

use serde::Deserialize;
use std::time::Duration;
use tollgate_protocol::{MAX_API_KEY_LEN, MAX_LEASE_REQUESTS};

use crate::budget_refusals::BudgetRefusals;
use crate::deny_cache::DenyCache;
use crate::held_replies::Hold;
use crate::invalid_keys::InvalidKeys;
use crate::leases::LeaseTable;
use crate::routes::{LimitedRoute, RouteTable};

/// The longest callout timeout (and deny-cache `max_ttl`) accepted. A decision that takes
/// longer than this is not a rate limiter any more but an outage; the default is far lower.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Each route name gets its own set of Envoy stats (see `outcome::Stat::route_name`), so the
/// number of routes bounds the filter's stats.
pub const MAX_ROUTES: usize = 100;
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Short, so a tenant who upgrades mid-flood is let through within a second.
const DEFAULT_DENY_TTL: Duration = Duration::from_secs(1);
const MAX_DENY_SLOTS: u32 = 1 << 20;
/// Unknown keys one client address may present per window before the edge refuses it.
const DEFAULT_INVALID_KEY_BUDGET: u32 = 20;
const MAX_INVALID_KEY_BUDGET: u32 = 1_000_000;
const DEFAULT_INVALID_KEY_WINDOW: Duration = Duration::from_secs(10);
/// The longest invalid-key window accepted: an address refused for longer than an hour is a
/// job for a firewall, not for a rate limiter's edge cache.
const MAX_INVALID_KEY_WINDOW: Duration = Duration::from_secs(3600);
/// The longest a control-plane budget's refusal is repeated at the edge by default: its
/// budgets refill within a second.
const DEFAULT_BUDGET_REFUSAL_TTL: Duration = Duration::from_secs(1);
/// Long enough that a client repeating a refused request as fast as it can sends four a
/// second per connection, short against the second a budget's `Retry-After` asks for.
const DEFAULT_HOLD: Duration = Duration::from_millis(250);
/// The longest hold: a refusal is for a client that was told to wait about a second.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// Held replies per worker: a paused stream each, whose memory in Envoy is a few kilobytes,
/// or up to its connection's buffer limit for a held upload (32 KiB in the shipped Envoy).
const MAX_HELD: u32 = 16_384;
/// Short, so a revocation, a suspension or a tier change waits at most this long at the edge.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(1);
/// Enough for a whole lease TTL at about what one Envoy carries (10,000 requests per second
/// on two workers), so a hot tenant's lease ends by its deadline rather than every few tens
/// of milliseconds; each claim's round trip sends the requests arriving meanwhile as plain
/// callouts. The control-plane sizes each lease to the key's rate and a quarter of the
/// remaining quota, never above what is asked, so this only caps a very hot key.
const DEFAULT_LEASE_REQUESTS: u32 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigWire {
    control_plane: ControlPlaneWire,
    #[serde(default)]
    failure_mode: FailureMode,
    #[serde(default)]
    api_key: ApiKeyWire,
    #[serde(default)]
    deny_cache: DenyCacheWire,
    #[serde(default)]
    invalid_keys: InvalidKeysWire,
    #[serde(default)]
    lease: LeaseWire,
    routes: Vec<RouteWire>,
    #[serde(default)]
    usage_routes: Vec<String>,
    #[serde(default)]
    budget_refusals: BudgetRefusalsWire,
    #[serde(default)]
    held_replies: HeldRepliesWire,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetRefusalsWire {
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    max_ttl: Option<String>,
    #[serde(default = "default_slots")]
    slots: u32,
}

impl Default for BudgetRefusalsWire {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            max_ttl: None,
            slots: default_slots(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeldRepliesWire {
    #[serde(default)]
    hold: Option<String>,
    #[serde(default = "default_max_held")]
    max_held: u32,
}

impl Default for HeldRepliesWire {
    fn default() -> Self {
        Self {
            hold: None,
            max_held: default_max_held(),
        }
    }
}

fn default_max_held() -> u32 {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyCacheWire {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    max_ttl: Option<String>,
    #[serde(default = "default_slots")]
    slots: u32,
}

impl Default for DenyCacheWire {
    fn default() -> Self {
        Self {
            enabled: true,
            max_ttl: None,
            slots: default_slots(),
        }
    }
}

fn default_slots() -> u32 {
    4096
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidKeysWire {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_invalid_key_budget")]
    budget: u32,
    #[serde(default)]
    window: Option<String>,
    #[serde(default = "default_slots")]
    slots: u32,
}

impl Default for InvalidKeysWire {
    fn default() -> Self {
        Self {
            enabled: true,
            budget: default_invalid_key_budget(),
            window: None,
            slots: default_slots(),
        }
    }
}

fn default_invalid_key_budget() -> u32 {
    DEFAULT_INVALID_KEY_BUDGET
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseWire {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    max_ttl: Option<String>,
    #[serde(default = "default_lease_requests")]
    max_requests: u32,
    #[serde(default = "default_slots")]
    slots: u32,
}

impl Default for LeaseWire {
    fn default() -> Self {
        Self {
            enabled: true,
            max_ttl: None,
            max_requests: default_lease_requests(),
            slots: default_slots(),
        }
    }
}

fn default_lease_requests() -> u32 {
    DEFAULT_LEASE_REQUESTS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlPlaneWire {
    cluster: String,
    #[serde(default = "default_authority")]
    authority: String,
    #[serde(default)]
    timeout: Option<String>,
}

fn default_authority() -> String {
    "tollgate-control-plane".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyWire {
    #[serde(default = "default_key_header")]
    header: String,
    #[serde(default = "default_true")]
    bearer: bool,
    /// Whether the key goes on to the backend; off by default, so the backend never holds
    /// every tenant's credential.
    #[serde(default)]
    forward: bool,
}

impl Default for ApiKeyWire {
    fn default() -> Self {
        Self {
            header: default_key_header(),
            bearer: true,
            forward: false,
        }
    }
}

fn default_key_header() -> String {
    "x-api-key".to_owned()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteWire {
    prefix: String,
    name: String,
    #[serde(default = "default_cost")]
    cost: u32,
}

fn default_cost() -> u32 {
    1
}

/// What the filter does when it cannot get a decision (control-plane down, slow, or
/// answering nonsense).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Refuse the request with 503: nothing unmetered reaches the backend.
    #[default]
    Closed,
    /// Let the request through, marked as unchecked.
    Open,
}

/// The validated runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The Envoy cluster of the control-plane's internal listener.
    pub cluster: String,
    /// The `:authority` of the callout.
    pub authority: String,
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// Lowercase header carrying the API key.
    pub key_header: String,
    /// Whether `Authorization: Bearer <key>` is also accepted.
    pub bearer: bool,
    /// Whether the API key is left on requests that go upstream (see
    /// [`Settings::key_headers_to_remove`]).
    pub forward_api_key: bool,
    pub routes: RouteTable,
    /// `None` when disabled: every request of a denied or unknown key, or of a suspended
    /// tenant, then makes a callout.
    pub deny_cache: Option<DenyCache>,
    /// `None` when disabled: a client address may then try any number of unknown keys, each
    /// one a callout.
    pub invalid_keys: Option<InvalidKeys>,
    /// `None` when disabled: every admitted request then makes a callout.
    pub leases: Option<LeaseTable>,
    /// Prefixes of the control-plane's usage endpoint: requests there carry the key's
    /// cached denials not yet reported, so usage counts them.
    pub usage_routes: Vec<String>,
    /// `None` when no route is listed: every request to the control-plane's public routes
    /// then goes upstream, refused or not.
    pub budget_refusals: Option<BudgetRefusals>,
    /// `None` when `held_replies.hold` is 0s: refusals to clients that keep asking are then
    /// sent at once (see [`crate::held_replies`]).
    pub held_replies: Option<Hold>,
}

/// Why a configuration was refused. The message is what Envoy's log shows the operator.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("configuration is missing: the filter needs at least control_plane and routes")]
    Missing,
    #[error("configuration is not valid JSON for this filter: {0}")]
    Json(String),
    #[error("control_plane.cluster must not be empty")]
    EmptyCluster,
    #[error(
        "control_plane.timeout {0:?} is not a duration like \"100ms\" or \"1s\" between 1ms and 10s"
    )]
    Timeout(String),
    #[error("api_key.header {0:?} is not a valid lowercase header name")]
    KeyHeader(String),
    #[error(
        "deny_cache.max_ttl {0:?} is not a duration like \"1s\" or \"500ms\" between 1ms and 10s"
    )]
    DenyTtl(String),
    #[error("deny_cache.slots must be between 1 and 1048576")]
    DenySlots,
    #[error("invalid_keys.budget must be between 1 and 1000000")]
    InvalidKeyBudget,
    #[error(
        "invalid_keys.window {0:?} is not a duration like \"10s\" or \"500ms\" between 1ms and 3600s"
    )]
    InvalidKeyWindow(String),
    #[error("invalid_keys.slots must be between 1 and 1048576")]
    InvalidKeySlots,
    #[error("lease.max_ttl {0:?} is not a duration like \"1s\" or \"500ms\" between 1ms and 10s")]
    LeaseTtl(String),
    #[error(
        "lease.max_requests must be between 2 and 1000000 (a lease of one request is no lease; \
         set lease.enabled to false to turn leases off)"
    )]
    LeaseRequests,
    #[error("lease.slots must be between 1 and 1048576")]
    LeaseSlots,
    #[error(
        "budget_refusals.max_ttl {0:?} is not a duration like \"1s\" or \"500ms\" between 1ms and 10s"
    )]
    BudgetRefusalTtl(String),
    #[error("budget_refusals.slots must be between 1 and 1048576")]
    BudgetRefusalSlots,
    #[error("budget_refusals.routes may list at most {MAX_ROUTES} prefixes")]
    TooManyBudgetRoutes,
    #[error("held_replies.hold {0:?} is not a duration like \"250ms\" between 0s (no hold) and 1s")]
    Hold(String),
    #[error("held_replies.max_held must be between 1 and {MAX_HELD}")]
    MaxHeld,
    #[error("routes must list at least one limited route")]
    NoRoutes,
    #[error("routes may list at most {MAX_ROUTES} limited routes")]
    TooManyRoutes,
    #[error("route prefix {0:?} must start with '/' and hold no '?' or '#'")]
    RoutePrefix(String),
    #[error("route name {0:?} must be 1-64 characters of a-z, 0-9, '-', '_'")]
    RouteName(String),
    #[error("route {0:?} has cost 0; a limited route costs at least 1")]
    ZeroCost(String),
    #[error("route prefix {0:?} is listed twice (trailing slashes make no difference)")]
    DuplicatePrefix(String),
}

impl Settings {
    pub fn timeout_ms(&self) -> u64 {
        millis(self.timeout)
    }

    /// The request headers that carry the API key and are removed before a request of a
    /// limited route goes upstream: none when `api_key.forward` is set; otherwise the
    /// configured key header and, when the key was read from it, `Authorization`. An
    /// `Authorization` header the key did not come from (the key header won, or bearer keys
    /// are off) is the backend's business and stays.
    pub fn key_headers_to_remove(&self, key_from_authorization: bool) -> Vec<&str> {
        if self.forward_api_key {
            return Vec::new();
        }
        let mut headers = vec![self.key_header.as_str()];
        if key_from_authorization {
            headers.push("authorization");
        }
        headers
    }

    pub fn from_json(bytes: Option<&[u8]>) -> Result<Self, ConfigError> {
        let bytes = bytes
            .filter(|b| !b.is_empty())
            .ok_or(ConfigError::Missing)?;
        let wire: ConfigWire =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;

        if wire.control_plane.cluster.trim().is_empty() {
            return Err(ConfigError::EmptyCluster);
        }
        let timeout = match wire.control_plane.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => parse_timeout(&text).ok_or(ConfigError::Timeout(text))?,
        };
        if !is_header_name(&wire.api_key.header) {
            return Err(ConfigError::KeyHeader(wire.api_key.header));
        }
        if wire.routes.is_empty() {
            return Err(ConfigError::NoRoutes);
        }
        if wire.routes.len() > MAX_ROUTES {
            return Err(ConfigError::TooManyRoutes);
        }
        let mut routes = Vec::with_capacity(wire.routes.len());
        for route in wire.routes {
            if !is_path_prefix(&route.prefix) {
                return Err(ConfigError::RoutePrefix(route.prefix));
            }
            if !tollgate_protocol::is_policy_name(&route.name) {
                return Err(ConfigError::RouteName(route.name));
            }
            if route.cost == 0 {
                return Err(ConfigError::ZeroCost(route.name));
            }
            if routes
                .iter()
                .any(|r: &LimitedRoute| same_prefix(&r.prefix, &route.prefix))
            {
                return Err(ConfigError::DuplicatePrefix(route.prefix));
            }
            routes.push(LimitedRoute {
                prefix: route.prefix,
                name: route.name,
                cost: route.cost,
            });
        }

        let deny_cache = if wire.deny_cache.enabled {
            let max_ttl = match wire.deny_cache.max_ttl {
                None => DEFAULT_DENY_TTL,
                Some(text) => parse_timeout(&text).ok_or(ConfigError::DenyTtl(text))?,
            };
            if !(1..=MAX_DENY_SLOTS).contains(&wire.deny_cache.slots) {
                return Err(ConfigError::DenySlots);
            }
            Some(DenyCache {
                slots: wire.deny_cache.slots,
                max_ttl_ms: millis(max_ttl),
            })
        } else {
            None
        };

        let invalid_keys = if wire.invalid_keys.enabled {
            let wire = wire.invalid_keys;
            if !(1..=MAX_INVALID_KEY_BUDGET).contains(&wire.budget) {
                return Err(ConfigError::InvalidKeyBudget);
            }
            let window = match wire.window {
                None => DEFAULT_INVALID_KEY_WINDOW,
                Some(text) => parse_duration(&text, MAX_INVALID_KEY_WINDOW)
                    .ok_or(ConfigError::InvalidKeyWindow(text))?,
            };
            if !(1..=MAX_DENY_SLOTS).contains(&wire.slots) {
                return Err(ConfigError::InvalidKeySlots);
            }
            Some(InvalidKeys {
                budget: wire.budget,
                window_ms: millis(window),
                slots: wire.slots,
            })
        } else {
            None
        };

        let leases = if wire.lease.enabled {
            let wire = wire.lease;
            let max_ttl = match wire.max_ttl {
                None => DEFAULT_LEASE_TTL,
                Some(text) => parse_timeout(&text).ok_or(ConfigError::LeaseTtl(text))?,
            };
            if !(2..=MAX_LEASE_REQUESTS).contains(&wire.max_requests) {
                return Err(ConfigError::LeaseRequests);
            }
            if !(1..=MAX_DENY_SLOTS).contains(&wire.slots) {
                return Err(ConfigError::LeaseSlots);
            }
            Some(LeaseTable {
                slots: wire.slots,
                max_ttl_ms: millis(max_ttl),
                max_requests: wire.max_requests,
            })
        } else {
            None
        };

        if let Some(prefix) = wire.usage_routes.iter().find(|p| !is_path_prefix(p)) {
            return Err(ConfigError::RoutePrefix(prefix.clone()));
        }

        let budget_refusals = {
            let wire = wire.budget_refusals;
            if let Some(prefix) = wire.routes.iter().find(|p| !is_path_prefix(p)) {
                return Err(ConfigError::RoutePrefix(prefix.clone()));
            }
            if wire.routes.len() > MAX_ROUTES {
                return Err(ConfigError::TooManyBudgetRoutes);
            }
            let max_ttl = match wire.max_ttl {
                None => DEFAULT_BUDGET_REFUSAL_TTL,
                Some(text) => parse_timeout(&text).ok_or(ConfigError::BudgetRefusalTtl(text))?,
            };
            if !(1..=MAX_DENY_SLOTS).contains(&wire.slots) {
                return Err(ConfigError::BudgetRefusalSlots);
            }
            (!wire.routes.is_empty()).then(|| BudgetRefusals {
                routes: wire.routes,
                max_ttl_ms: millis(max_ttl),
                slots: wire.slots,
            })
        };

        let held_replies = {
            let wire = wire.held_replies;
            let hold = match wire.hold {
                None => DEFAULT_HOLD,
                Some(text) if matches!(text.as_str(), "0s" | "0ms") => Duration::ZERO,
                Some(text) => parse_duration(&text, MAX_HOLD).ok_or(ConfigError::Hold(text))?,
            };
            if !(1..=MAX_HELD).contains(&wire.max_held) {
                return Err(ConfigError::MaxHeld);
            }
            (!hold.is_zero()).then(|| Hold {
                duration_ms: millis(hold),
                max_held: wire.max_held,
            })
        };

        Ok(Settings {
            deny_cache,
            invalid_keys,
            leases,
            forward_api_key: wire.api_key.forward,
            usage_routes: wire.usage_routes,
            budget_refusals,
            held_replies,
            cluster: wire.control_plane.cluster,
            authority: wire.control_plane.authority,
            timeout,
            failure_mode: wire.failure_mode,
            key_header: wire.api_key.header,
            bearer: wire.api_key.bearer,
            routes: RouteTable::new(routes),
        })
    }
}

/// Parses `"250ms"` or `"2s"`, between 1 ms and [`MAX_TIMEOUT`].
fn parse_timeout(text: &str) -> Option<Duration> {
    parse_duration(text, MAX_TIMEOUT)
}

/// Parses `"250ms"` or `"2s"`, between 1 ms and `max`.
fn parse_duration(text: &str, max: Duration) -> Option<Duration> {
    let duration = if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().ok()?)
    } else {
        Duration::from_secs(text.strip_suffix('s')?.parse().ok()?)
    };
    (!duration.is_zero() && duration <= max).then_some(duration)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `prefix` can match a path: it starts with '/' and holds no '?' or '#', which end
/// the path a prefix is matched against (`routes::matches`): such a prefix would limit nothing.
fn is_path_prefix(prefix: &str) -> bool {
    prefix.starts_with('/') && !prefix.contains(['?', '#'])
}

/// Whether two prefixes limit the same paths: trailing slashes do not count in matching.
/// Whether two prefixes limit the same paths: compared as the route table matches them
/// (`/a//b` is `/a/b`, `/A` is `/a`), so the second of two such routes, which could never
/// match, is refused rather than silently dead.
fn same_prefix(a: &str, b: &str) -> bool {
    crate::routes::match_form(a).trim_end_matches('/')
        == crate::routes::match_form(b).trim_end_matches('/')
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_API_KEY_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A minimal configuration with `section` set to the JSON `value`.
    fn with_section(section: &str, value: &str) -> Result<Settings, ConfigError> {
        parse(&format!(
            r#"{{"control_plane":{{"cluster":"cp"}},"{section}":{value},
                "routes":[{{"prefix":"/a","name":"a"}}]}}"#
        ))
    }

    fn parse(json: &str) -> Result<Settings, ConfigError> {
        Settings::from_json(Some(json.as_bytes()))
    }

    const MINIMAL: &str = r#"{"control_plane":{"cluster":"cp"},"routes":[{"prefix":"/api/v1/ingest","name":"ingest"}]}"#;

    #[test]
    fn a_minimal_config_gets_safe_defaults() {
        let settings = parse(MINIMAL).unwrap();
        assert_eq!(settings.failure_mode, FailureMode::Closed);
        assert_eq!(settings.timeout, Duration::from_millis(100));
        assert_eq!(settings.key_header, "x-api-key");
        assert!(settings.bearer);
        assert_eq!(settings.authority, "tollgate-control-plane");
        assert_eq!(
            settings.routes.find("/api/v1/ingest").map(|r| r.cost),
            Some(1)
        );
        assert_eq!(
            settings.deny_cache,
            Some(DenyCache {
                slots: 4096,
                max_ttl_ms: 1000
            })
        );
        assert_eq!(
            settings.invalid_keys,
            Some(InvalidKeys {
                budget: 20,
                window_ms: 10_000,
                slots: 4096
            }),
            "on by default"
        );
        assert!(!settings.forward_api_key, "the key stays at the edge");
        assert_eq!(
            settings.leases,
            Some(LeaseTable {
                slots: 4096,
                max_ttl_ms: 1_000,
                max_requests: 10_000
            }),
            "on by default"
        );
    }

    #[test]
    fn leases_can_be_tuned_or_disabled_and_bad_values_are_refused() {
        let with = |lease: &str| with_section("lease", lease).map(|s| s.leases);
        assert_eq!(
            with(r#"{"max_ttl":"250ms","max_requests":2,"slots":1}"#),
            Ok(Some(LeaseTable {
                slots: 1,
                max_ttl_ms: 250,
                max_requests: 2
            }))
        );
        assert_eq!(
            with(r#"{"max_ttl":"10s","max_requests":1000000,"slots":1048576}"#),
            Ok(Some(LeaseTable {
                slots: 1 << 20,
                max_ttl_ms: 10_000,
                max_requests: 1_000_000
            }))
        );
        assert_eq!(with(r#"{"enabled":false,"max_requests":0}"#), Ok(None));
        for ttl in ["0s", "0ms", "11s", "1", "one second", "-1s", ""] {
            assert_eq!(
                with(&format!(r#"{{"max_ttl":"{ttl}"}}"#)),
                Err(ConfigError::LeaseTtl(ttl.to_owned())),
                "{ttl:?}"
            );
        }
        for requests in ["0", "1", "1000001"] {
            assert_eq!(
                with(&format!(r#"{{"max_requests":{requests}}}"#)),
                Err(ConfigError::LeaseRequests),
                "{requests}"
            );
        }
        for slots in ["0", "1048577"] {
            assert_eq!(
                with(&format!(r#"{{"slots":{slots}}}"#)),
                Err(ConfigError::LeaseSlots),
                "{slots}"
            );
        }
        assert!(
            matches!(with(r#"{"max_requests":-5}"#), Err(ConfigError::Json(_))),
            "not a number of requests"
        );
        assert!(
            matches!(with(r#"{"ttl":"1s"}"#), Err(ConfigError::Json(m)) if m.contains("ttl")),
            "a typo is refused"
        );
        let message = with(r#"{"max_requests":1}"#).unwrap_err().to_string();
        assert!(message.contains("lease.max_requests"), "{message}");
    }

    #[test]
    fn the_invalid_key_budget_can_be_tuned_or_disabled_and_bad_values_are_refused() {
        let with = |invalid_keys: &str| with_section("invalid_keys", invalid_keys);
        assert_eq!(
            with(r#"{"budget":5,"window":"1500ms","slots":64}"#).map(|s| s.invalid_keys),
            Ok(Some(InvalidKeys {
                budget: 5,
                window_ms: 1_500,
                slots: 64
            }))
        );
        assert_eq!(
            with(r#"{"window":"3600s"}"#).map(|s| s.invalid_keys.map(|i| i.window_ms)),
            Ok(Some(3_600_000))
        );
        assert_eq!(
            with(r#"{"enabled":false,"budget":5}"#).map(|s| s.invalid_keys),
            Ok(None)
        );
        assert_eq!(
            with(r#"{"budget":0}"#).map(|s| s.invalid_keys),
            Err(ConfigError::InvalidKeyBudget)
        );
        assert_eq!(
            with(r#"{"budget":1000001}"#).map(|s| s.invalid_keys),
            Err(ConfigError::InvalidKeyBudget)
        );
        for window in ["0s", "3601s", "10", "ten seconds", "-1s", ""] {
            assert_eq!(
                with(&format!(r#"{{"window":"{window}"}}"#)).map(|s| s.invalid_keys),
                Err(ConfigError::InvalidKeyWindow(window.to_owned())),
                "{window:?}"
            );
        }
        for slots in ["0", "1048577"] {
            assert_eq!(
                with(&format!(r#"{{"slots":{slots}}}"#)).map(|s| s.invalid_keys),
                Err(ConfigError::InvalidKeySlots),
                "{slots}"
            );
        }
        assert!(
            matches!(with(r#"{"budget":-1}"#), Err(ConfigError::Json(_))),
            "a negative budget is not a number of keys"
        );
        assert!(
            matches!(with(r#"{"bugdet":5}"#), Err(ConfigError::Json(m)) if m.contains("bugdet")),
            "a typo is refused"
        );
    }

    #[test]
    fn the_key_is_removed_upstream_unless_forwarded() {
        let removed = parse(MINIMAL).unwrap();
        assert_eq!(removed.key_headers_to_remove(false), vec!["x-api-key"]);
        assert_eq!(
            removed.key_headers_to_remove(true),
            vec!["x-api-key", "authorization"],
            "Authorization only when the key came from it"
        );
        let custom = parse(
            r#"{"control_plane":{"cluster":"cp"},"api_key":{"header":"x-key"},
                "routes":[{"prefix":"/a","name":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(custom.key_headers_to_remove(false), vec!["x-key"]);
        let forwarded = parse(
            r#"{"control_plane":{"cluster":"cp"},"api_key":{"forward":true},
                "routes":[{"prefix":"/a","name":"a"}]}"#,
        )
        .unwrap();
        assert!(forwarded.forward_api_key);
        assert!(forwarded.key_headers_to_remove(true).is_empty());
    }

    #[test]
    fn budget_refusals_are_off_until_routes_are_listed_and_bounded() {
        let with = |budget_refusals: &str| {
            with_section("budget_refusals", budget_refusals).map(|s| s.budget_refusals)
        };
        assert_eq!(parse(MINIMAL).unwrap().budget_refusals, None);
        assert_eq!(with("{}"), Ok(None));
        assert_eq!(
            with(r#"{"routes":["/api/v1/usage","/api/v1/billing"]}"#),
            Ok(Some(BudgetRefusals {
                routes: vec!["/api/v1/usage".to_owned(), "/api/v1/billing".to_owned()],
                max_ttl_ms: 1_000,
                slots: 4096,
            }))
        );
        assert_eq!(
            with(r#"{"routes":["/u"],"max_ttl":"250ms","slots":8}"#)
                .map(|b| b.map(|b| (b.max_ttl_ms, b.slots))),
            Ok(Some((250, 8)))
        );
        assert_eq!(
            with(r#"{"routes":["u"]}"#),
            Err(ConfigError::RoutePrefix("u".to_owned()))
        );
        assert_eq!(
            with(r#"{"routes":["/u"],"max_ttl":"11s"}"#),
            Err(ConfigError::BudgetRefusalTtl("11s".to_owned()))
        );
        assert_eq!(
            with(r#"{"routes":["/u"],"slots":0}"#),
            Err(ConfigError::BudgetRefusalSlots)
        );
        let many = format!(r#"{{"routes":[{}]}}"#, vec!["\"/u\""; 101].join(","));
        assert_eq!(with(&many), Err(ConfigError::TooManyBudgetRoutes));
    }

    #[test]
    fn refusals_are_held_a_quarter_second_unless_told_otherwise() {
        let with =
            |held_replies: &str| with_section("held_replies", held_replies).map(|s| s.held_replies);
        let default = Some(Hold {
            duration_ms: 250,
            max_held: 1024,
        });
        assert_eq!(parse(MINIMAL).unwrap().held_replies, default);
        assert_eq!(with("{}"), Ok(default));
        assert_eq!(
            with(r#"{"hold":"1s","max_held":4}"#),
            Ok(Some(Hold {
                duration_ms: 1000,
                max_held: 4
            }))
        );
        assert_eq!(with(r#"{"hold":"0s"}"#), Ok(None));
        assert_eq!(
            with(r#"{"hold":"2s"}"#),
            Err(ConfigError::Hold("2s".to_owned()))
        );
        assert_eq!(with(r#"{"max_held":0}"#), Err(ConfigError::MaxHeld));
        assert_eq!(with(r#"{"max_held":16385}"#), Err(ConfigError::MaxHeld));
    }

    #[test]
    fn the_deny_cache_can_be_tuned_or_disabled() {
        let tuned = parse(
            r#"{"control_plane":{"cluster":"cp"},"deny_cache":{"max_ttl":"250ms","slots":16},
                "routes":[{"prefix":"/a","name":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(
            tuned.deny_cache,
            Some(DenyCache {
                slots: 16,
                max_ttl_ms: 250
            })
        );
        let off = parse(
            r#"{"control_plane":{"cluster":"cp"},"deny_cache":{"enabled":false},
                "routes":[{"prefix":"/a","name":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(off.deny_cache, None);
        let zero = parse(
            r#"{"control_plane":{"cluster":"cp"},"deny_cache":{"slots":0},"routes":[{"prefix":"/a","name":"a"}]}"#,
        );
        assert_eq!(zero, Err(ConfigError::DenySlots));
    }

    #[test]
    fn every_field_is_read() {
        let settings = parse(
            r#"{"control_plane":{"cluster":"cp","authority":"cp.internal","timeout":"2s"},
                "failure_mode":"open","api_key":{"header":"x-key","bearer":false,"forward":true},
                "routes":[{"prefix":"/p","name":"predict","cost":5}],"usage_routes":["/u"]}"#,
        )
        .unwrap();
        assert_eq!(settings.timeout, Duration::from_secs(2));
        assert_eq!(settings.failure_mode, FailureMode::Open);
        assert_eq!(settings.usage_routes, vec!["/u".to_owned()]);
        assert_eq!(settings.authority, "cp.internal");
        assert_eq!(settings.key_header, "x-key");
        assert!(!settings.bearer);
        assert!(settings.forward_api_key);
        assert_eq!(
            settings
                .routes
                .find("/p")
                .map(|r| (r.name.as_str(), r.cost)),
            Some(("predict", 5))
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        type Expectation = fn(&ConfigError) -> bool;
        let cases: [(&str, Expectation); 11] = [
            ("", |e| *e == ConfigError::Missing),
            ("{", |e| matches!(e, ConfigError::Json(_))),
            (
                r#"{"control_plane":{"cluster":"cp"},"routes":[],"typo":1}"#,
                |e| matches!(e, ConfigError::Json(m) if m.contains("typo")),
            ),
            (r#"{"control_plane":{"cluster":" "},"routes":[]}"#, |e| {
                *e == ConfigError::EmptyCluster
            }),
            (
                r#"{"control_plane":{"cluster":"cp","timeout":"0ms"},"routes":[]}"#,
                |e| matches!(e, ConfigError::Timeout(_)),
            ),
            (
                r#"{"control_plane":{"cluster":"cp","timeout":"1 minute"},"routes":[]}"#,
                |e| matches!(e, ConfigError::Timeout(_)),
            ),
            (r#"{"control_plane":{"cluster":"cp"},"routes":[]}"#, |e| {
                *e == ConfigError::NoRoutes
            }),
            (
                r#"{"control_plane":{"cluster":"cp"},"api_key":{"header":"X-Key"},"routes":[]}"#,
                |e| matches!(e, ConfigError::KeyHeader(_)),
            ),
            (
                r#"{"control_plane":{"cluster":"cp"},"routes":[{"prefix":"api","name":"a"}]}"#,
                |e| matches!(e, ConfigError::RoutePrefix(_)),
            ),
            (
                r#"{"control_plane":{"cluster":"cp"},"routes":[{"prefix":"/a","name":"a","cost":0}]}"#,
                |e| matches!(e, ConfigError::ZeroCost(_)),
            ),
            (
                r#"{"control_plane":{"cluster":"cp"},"routes":[{"prefix":"/a","name":"a"},{"prefix":"/a","name":"b"}]}"#,
                |e| matches!(e, ConfigError::DuplicatePrefix(_)),
            ),
        ];
        for (json, expected) in cases {
            let error = parse(json).expect_err(json);
            assert!(expected(&error), "{json} gave {error:?}");
        }
        assert_eq!(Settings::from_json(None), Err(ConfigError::Missing));
    }

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(parse_timeout("1ms"), Some(Duration::from_millis(1)));
        assert_eq!(parse_timeout("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout("11s"), None);
        assert_eq!(parse_timeout("-5ms"), None);
        assert_eq!(parse_timeout("5"), None);
    }

    #[test]
    fn a_prefix_that_could_never_match_is_refused() {
        // Found by fuzzing (fuzz/regressions/filter_config/): the query or fragment is cut
        // off a path before matching, so this route limited nothing.
        for prefix in ["/api/v1/?redict", "/a#b"] {
            let route = format!(
                r#"{{"control_plane":{{"cluster":"cp"}},"routes":[{{"prefix":"{prefix}","name":"a"}}]}}"#
            );
            assert_eq!(parse(&route), Err(ConfigError::RoutePrefix(prefix.into())));
            let usage = format!(
                r#"{{"control_plane":{{"cluster":"cp"}},"routes":[{{"prefix":"/a","name":"a"}}],"usage_routes":["{prefix}"]}}"#
            );
            assert_eq!(parse(&usage), Err(ConfigError::RoutePrefix(prefix.into())));
        }
    }

    #[test]
    fn the_number_of_routes_is_bounded() {
        // Each route name has its own Envoy stats: the table bounds them.
        let routes = |count: usize| {
            let routes: Vec<String> = (0..count)
                .map(|i| format!(r#"{{"prefix":"/r{i}","name":"r{i}"}}"#))
                .collect();
            format!(
                r#"{{"control_plane":{{"cluster":"cp"}},"routes":[{}]}}"#,
                routes.join(",")
            )
        };
        assert!(parse(&routes(MAX_ROUTES)).is_ok());
        assert_eq!(
            parse(&routes(MAX_ROUTES + 1)),
            Err(ConfigError::TooManyRoutes)
        );
    }

    #[test]
    fn prefixes_differing_only_in_trailing_slashes_are_duplicates() {
        // Found by fuzzing (fuzz/regressions/filter_config/): both limit the same paths, so
        // one of the two routes (its name and cost) silently never applied.
        let json = r#"{"control_plane":{"cluster":"cp"},"routes":[{"prefix":"/p","name":"a"},{"prefix":"/p/","name":"b","cost":5}]}"#;
        assert_eq!(parse(json), Err(ConfigError::DuplicatePrefix("/p/".into())));
    }

    #[test]
    fn prefixes_the_route_table_matches_alike_are_duplicates() {
        for second in ["/a//b", "/A/B", "/a/./b"] {
            let json = format!(
                r#"{{"control_plane":{{"cluster":"cp"}},"routes":[{{"prefix":"/a/b","name":"a"}},{{"prefix":"{second}","name":"b"}}]}}"#
            );
            assert_eq!(
                parse(&json),
                Err(ConfigError::DuplicatePrefix(second.into())),
                "{second}"
            );
        }
    }
}
