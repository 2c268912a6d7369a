//! The filter's configuration: the JSON an operator writes in Envoy's `configuration` field,
//! and the immutable [`Settings`] the filter runs with.
//!
//! The wire types mirror the JSON exactly (unknown fields are errors, so a typo is refused
//! rather than silently ignored); [`Settings::from_json`] validates them and builds the runtime
//! form, where safe defaults live in the types. Envoy refuses the whole configuration when this
//! fails, so a bad rollout never reaches traffic.

use serde::Deserialize;
use std::time::Duration;
use tollgate_protocol::MAX_API_KEY_LEN;

use crate::deny_cache::DenyCache;
use crate::routes::{LimitedRoute, RouteTable};

/// The longest callout timeout (and deny-cache `max_ttl`) accepted. A decision that takes
/// longer than this is not a rate limiter any more but an outage; the default is far lower.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Short, so a tenant who upgrades mid-flood is let through within a second.
const DEFAULT_DENY_TTL: Duration = Duration::from_secs(1);
const MAX_DENY_SLOTS: u32 = 1 << 20;

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
    routes: Vec<RouteWire>,
    #[serde(default)]
    usage_routes: Vec<String>,
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
}

impl Default for ApiKeyWire {
    fn default() -> Self {
        Self {
            header: default_key_header(),
            bearer: true,
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
    pub routes: RouteTable,
    /// `None` when disabled: every request of a denied key then makes a callout.
    pub deny_cache: Option<DenyCache>,
    /// Prefixes of the control-plane's usage endpoint: requests there carry the key's
    /// cached denials not yet reported, so usage counts them.
    pub usage_routes: Vec<String>,
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
    #[error("routes must list at least one limited route")]
    NoRoutes,
    #[error("route prefix {0:?} must start with '/'")]
    RoutePrefix(String),
    #[error("route name {0:?} must be 1-64 characters of a-z, 0-9, '-', '_'")]
    RouteName(String),
    #[error("route {0:?} has cost 0; a limited route costs at least 1")]
    ZeroCost(String),
    #[error("route prefix {0:?} is listed twice")]
    DuplicatePrefix(String),
}

impl Settings {
    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
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
        let mut routes = Vec::with_capacity(wire.routes.len());
        for route in wire.routes {
            if !route.prefix.starts_with('/') {
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
                .any(|r: &LimitedRoute| r.prefix == route.prefix)
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
                max_ttl_ms: u64::try_from(max_ttl.as_millis()).unwrap_or(u64::MAX),
            })
        } else {
            None
        };

        if let Some(prefix) = wire.usage_routes.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::RoutePrefix(prefix.clone()));
        }

        Ok(Settings {
            deny_cache,
            usage_routes: wire.usage_routes,
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
    let duration = if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().ok()?)
    } else {
        Duration::from_secs(text.strip_suffix('s')?.parse().ok()?)
    };
    (!duration.is_zero() && duration <= MAX_TIMEOUT).then_some(duration)
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
                "failure_mode":"open","api_key":{"header":"x-key","bearer":false},
                "routes":[{"prefix":"/p","name":"predict","cost":5}],"usage_routes":["/u"]}"#,
        )
        .unwrap();
        assert_eq!(settings.timeout, Duration::from_secs(2));
        assert_eq!(settings.failure_mode, FailureMode::Open);
        assert_eq!(settings.usage_routes, vec!["/u".to_owned()]);
        assert_eq!(settings.authority, "cp.internal");
        assert_eq!(settings.key_header, "x-key");
        assert!(!settings.bearer);
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
}
