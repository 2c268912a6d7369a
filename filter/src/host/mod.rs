//! The glue between Envoy and the filter's pure modules: the only code that imports proxy-wasm.
//!
//! It reads headers and configuration from the host, hands them to the pure modules, and
//! carries their answer back out. Host calls that can fail are made through
//! `proxy_wasm::hostcalls` and their errors handled (logged), never unwrapped: the SDK's
//! convenience methods panic, and a panic takes the VM down for every request on the worker.

mod http;
mod root;

use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

use crate::deny_cache::SharedData;
use crate::outcome::Stat;

/// Proxy-wasm shared data, seen by every worker's VM with the same `vm_id`.
struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

/// Milliseconds since the Unix epoch, by the host's clock.
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The filter's Envoy counters, one per [`Stat`]. Envoy sums same-named counters across the
/// workers' VMs, so `/stats` shows the listener-wide totals.
struct Stats {
    ids: [u32; Stat::ALL.len()],
}

impl Stats {
    fn define() -> Result<Self, Status> {
        let mut ids = [0; Stat::ALL.len()];
        for (id, stat) in ids.iter_mut().zip(Stat::ALL) {
            *id = hostcalls::define_metric(MetricType::Counter, stat.name())?;
        }
        Ok(Self { ids })
    }

    fn count(&self, stats: &[Stat]) {
        for stat in stats {
            let index = Stat::ALL.iter().position(|s| s == stat).unwrap_or(0);
            if let Err(status) = hostcalls::increment_metric(self.ids[index], 1) {
                log::warn!("tollgate: cannot count {}: {status:?}", stat.name());
            }
        }
    }
}
