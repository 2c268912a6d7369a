//! Tollgate's control-plane: tenants and their hashed API keys, the tier table, exact
//! sliding windows, and the decision endpoint the Envoy filter calls.

pub mod admin;
pub mod api_keys;
pub mod app;
pub mod billing;
pub mod body_limit;
pub mod caller;
pub mod config;
pub mod dashboard;
pub mod decision;
pub mod directory;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod redis_conn;
pub mod redis_keys;
pub mod server;
pub mod tenants;
pub mod tier_source;
pub mod tiers;
pub mod usage;
pub mod window;
