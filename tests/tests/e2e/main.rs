//! End-to-end tests: one binary, a module per capability. Each test starts its own stack on
//! free ports, so they run in parallel.

mod api_contract;
mod billing;
mod cli;
mod dashboard;
mod deploy_configs;
mod edge_defense;
mod edge_shedding;
mod embedding;
mod envoy_hardening;
mod leases;
mod make_run;
mod monthly;
mod observability;
mod operations;
mod redis_store;
mod request_path;
mod self_defense;
mod shadow;
mod tenant_registry;
mod tier_reload;
mod unnormalised_paths;
mod usage;
mod usage_tokens;
