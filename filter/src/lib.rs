//! Tollgate's Envoy filter.
//!
//! Everything that decides lives in plain modules with no proxy-wasm import, tested natively and
//! under Node (wasm32-unknown-unknown): configuration ([`config`]), key extraction
//! (`tollgate_protocol::api_key_extraction`), route matching ([`routes`]), the edge deny cache
//! and what each answer does to it ([`deny_cache`]), the admissions leased by the control-plane
//! and spent without callouts ([`leases`]), the invalid-key budget per client address
//! ([`invalid_keys`]), the control-plane's budget refusals repeated at the edge
//! ([`budget_refusals`]), all over [`shared_data`], the refusals held back before they are sent
//! ([`held_replies`]), the order a limited request goes through them
//! ([`request_path`]), the mapping of a decision to an action and its stats ([`outcome`],
//! [`ratelimit_headers`]), the rate limit on repeated failure log lines ([`log_limit`]), and
//! the tracing headers a callout carries ([`tollgate_protocol::trace_context`]). The `host`
//! module is the only one that talks to Envoy; it moves bytes between the host and those
//! modules, and is built only for Envoy's wasm32-wasip1.

pub mod budget_refusals;
pub mod config;
pub mod deny_cache;
pub mod held_replies;
pub mod invalid_keys;
pub mod leases;
pub mod log_limit;
pub mod outcome;
pub mod ratelimit_headers;
pub mod request_path;
pub mod routes;
pub mod shared_data;

#[cfg(all(target_arch = "wasm32", not(target_os = "unknown")))]
mod host;
