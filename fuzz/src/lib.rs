//! Tollgate's parsers under fuzzing, one module per target.
//!
//! Each target is a plain function of the fuzzer's bytes that panics when a property fails
//! (not only when the parser itself panics). libFuzzer calls them from `fuzz_targets/`
//! (`make fuzz`, nightly); `tests/regressions.rs` calls the same functions on stable, in
//! `make test`, with the hand-made inputs in `seeds/<target>/` and every input a fuzzer
//! found to fail in `regressions/<target>/`.
//!
//! Inputs are mostly text, so seeds can be written by hand and read in a diff: each module
//! says how it reads its bytes.

pub mod api_key;
pub mod decision_answer;
pub mod decision_request;
pub mod edge_denied;
pub mod filter_config;
mod input;
pub mod stripe_signature;
pub mod tier_table;
pub mod webhook_event;

/// A fuzz target: the fuzzer's bytes in, a panic out when a property fails.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary in `fuzz_targets/` and its folders in `seeds/`
/// and `regressions/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("api_key", api_key::run),
    ("decision_answer", decision_answer::run),
    ("decision_request", decision_request::run),
    ("edge_denied", edge_denied::run),
    ("filter_config", filter_config::run),
    ("stripe_signature", stripe_signature::run),
    ("tier_table", tier_table::run),
    ("webhook_event", webhook_event::run),
];
