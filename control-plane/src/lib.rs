//! Tollgate's control-plane: tenants and their hashed API keys, the tier table, exact
//! sliding windows, the decision endpoint the Envoy filter calls, usage and Stripe billing.
//!
//! Layers, top to bottom (docs/architecture.md has the map): [`server`] wires everything and
//! runs the listeners; [`api`] is the HTTP layer; [`decision`], [`billing`], [`tenants`],
//! [`tiers`] and [`window`] are the domain and never import `api`; [`storage`] (Redis, the
//! state file and their one error type) and [`clock`] sit at the bottom. The module graph
//! has no cycles (`make lint` checks it).

pub mod api;
pub mod billing;
pub mod clock;
pub mod config;
pub mod decision;
pub mod log_limit;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod tenants;
pub mod tiers;
pub mod window;
