//! The glue between Envoy and the filter's pure modules: the only code that imports proxy-wasm.
//!
//! It reads headers and configuration from the host, hands them to the pure modules, and
//! carries their answer back out. Host calls that can fail are made through
//! `proxy_wasm::hostcalls` and their errors handled (logged), never unwrapped: the SDK's
//! convenience methods panic, and a panic takes the VM down for every request on the worker.

mod http;
mod root;
