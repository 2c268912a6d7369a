//! The glue between Envoy and the filter's pure modules: the only code that imports proxy-wasm.
//!
//! It reads headers and configuration from the host, hands them to the pure modules, and
//! carries their answer back out. Host calls that can fail are made through
//! `proxy_wasm::hostcalls` and their errors handled (logged, rate-limited per cause), never
//! unwrapped: the SDK's convenience methods panic, and a panic takes the VM down for every
//! request on the worker.

mod http;
mod root;

use std::cell::RefCell;
use std::fmt::Display;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

use crate::held_replies::{HeldReplies, Hold};
use crate::invalid_keys::ClientId;
use crate::leases::WorkerBatches;
use crate::log_limit::LogLimiter;
use crate::outcome::{LocalReply, Stat};
use crate::shared_data::SharedData;

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

/// What one worker VM's contexts share: the ids of the filter's Envoy counters, the rate
/// limit on its failure log lines and the lease batches it holds. `Rc` in the contexts: a
/// wasm VM is single-threaded.
struct Worker {
    stats: Stats,
    /// Borrowed only inside [`Worker::with_batches`], whose callers call nothing that borrows
    /// it again.
    batches: RefCell<WorkerBatches>,
    /// A `RefCell` because every stream of the worker logs through it; borrowed only inside
    /// [`Worker::log`] and [`Worker::flush_logs`], which call nothing that logs, so a borrow
    /// never overlaps another (and if one did, the line is logged unlimited, not a panic).
    logs: RefCell<LogLimiter>,
    /// Borrowed only inside [`Worker::hold`], [`Worker::forget_held`] and
    /// [`Worker::release_held`], around no call that borrows it again.
    held: RefCell<HeldReplies>,
}

impl Worker {
    fn new(stats: Stats) -> Self {
        Self {
            stats,
            batches: RefCell::default(),
            logs: RefCell::new(LogLimiter::default()),
            held: RefCell::default(),
        }
    }

    /// Holds `reply` for stream `context_id` (see [`crate::held_replies`]); gives it back
    /// to be sent at once when the worker holds its most already.
    fn hold(&self, context_id: u32, reply: LocalReply, hold: &Hold) -> Result<(), LocalReply> {
        match self.held.try_borrow_mut() {
            Ok(mut held) => held.hold(context_id, reply, now_ms(), hold),
            Err(_) => Err(reply),
        }
    }

    /// Drops the reply held for stream `context_id`, which has ended.
    fn forget_held(&self, context_id: u32) {
        if let Ok(mut held) = self.held.try_borrow_mut() {
            held.forget(context_id);
        }
    }

    /// Sends the held replies whose hold has passed, each on its own stream. A stream the
    /// client closed meanwhile is gone from the host, which says so; its reply is dropped.
    fn release_held(&self, hold: &Hold) {
        let due = match self.held.try_borrow_mut() {
            Ok(mut held) if !held.is_empty() => held.take_due(now_ms(), hold),
            _ => return,
        };
        for held in due {
            if hostcalls::set_effective_context(held.context_id).is_ok() {
                send_reply(self, held.reply);
            }
        }
    }

    /// Runs `f` on the worker's lease batches, then counts the requests of batches given up
    /// meanwhile (on `route`, the route of the request that found them). Should the batches
    /// ever be borrowed already, `f` gets an empty set instead, whose batch is given up at
    /// once, never a panic.
    fn with_batches<R>(&self, route: Option<usize>, f: impl FnOnce(&mut WorkerBatches) -> R) -> R {
        let (result, lost) = match self.batches.try_borrow_mut() {
            Ok(mut batches) => {
                let result = f(&mut batches);
                (result, batches.take_lost())
            }
            Err(_) => {
                let mut empty = WorkerBatches::default();
                (f(&mut empty), empty.give_up())
            }
        };
        if lost > 0 {
            self.count_by(route, Stat::LeaseRequestsLost, lost);
        }
        result
    }

    /// The index of `route`'s own stats (see [`Stats::route`]).
    fn route(&self, route: &str) -> Option<usize> {
        self.stats.route(route)
    }

    fn count(&self, route: Option<usize>, stats: &[Stat]) {
        for stat in stats {
            self.count_by(route, *stat, 1);
        }
    }

    fn count_all(&self, route: Option<usize>, counts: &[(Stat, u64)]) {
        for (stat, amount) in counts {
            self.count_by(route, *stat, *amount);
        }
    }

    /// Counts `stat` in the listener-wide total and, for a limited route, in the route's own.
    fn count_by(&self, route: Option<usize>, stat: Stat, amount: u64) {
        if let Err(status) = self.stats.increment(route, stat, amount) {
            self.log(
                log::Level::Warn,
                "cannot count a stat",
                format_args!("{}: {status:?}", stat.name()),
            );
        }
    }

    /// Logs one occurrence of a failure `cause` (a fixed phrase) with its `detail`, unless
    /// the cause has used up its lines for this interval (see [`crate::log_limit`]).
    fn log(&self, level: log::Level, cause: &'static str, detail: impl Display) {
        let now = now_ms();
        let admission = match self.logs.try_borrow_mut() {
            Ok(mut limiter) => limiter.admit(cause, level, now),
            Err(_) => crate::log_limit::Admission {
                left_out: None,
                log: true,
            },
        };
        if let Some(left_out) = admission.left_out {
            log::log!(left_out.level, "{left_out}");
        }
        if admission.log {
            log::log!(level, "tollgate: {cause}: {detail}");
        }
    }

    /// Logs the left-out counts of the intervals that have ended (from the root's timer).
    fn flush_logs(&self) {
        let now = now_ms();
        let left_out = match self.logs.try_borrow_mut() {
            Ok(mut limiter) => limiter.flush(now),
            Err(_) => Vec::new(),
        };
        for line in left_out {
            log::log!(line.level, "{line}");
        }
    }

    /// The client of this stream, from Envoy's `source.address` (the downstream peer); only a
    /// hash of it is kept. IPv6 by its /64 (see [`ClientId::from_source_address`]).
    fn client(&self) -> Option<ClientId> {
        ClientId::from_source_address(&self.source_address()?)
    }

    /// The client host of this stream, IPv6 by its whole address (see
    /// [`ClientId::host_of_source_address`]).
    fn client_host(&self) -> Option<ClientId> {
        ClientId::host_of_source_address(&self.source_address()?)
    }

    fn source_address(&self) -> Option<Vec<u8>> {
        match hostcalls::get_property(vec!["source", "address"]) {
            Ok(address) => address,
            Err(status) => {
                self.log(
                    log::Level::Error,
                    "cannot read the client address",
                    format_args!("{status:?}"),
                );
                None
            }
        }
    }
}

/// Sends a local reply on the stream of the current (or effective) context.
fn send_reply(worker: &Worker, reply: LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()))
    {
        worker.log(
            log::Level::Error,
            "cannot send a local reply",
            format_args!("{}: {status:?}", reply.status),
        );
    }
}

/// The filter's Envoy counters: one per [`Stat`] for the whole listener
/// (`tollgate.<stat>`), and one per [`Stat`] and route name (`tollgate.route.<name>.<stat>`,
/// which Envoy's `stats_tags` turn into a `tollgate_route` tag). Envoy sums same-named
/// counters across the workers' VMs, so `/stats` shows the listener-wide totals. Most go up
/// by one per request; the lease stats by the requests they count. Route names come from the
/// configuration (at most `config::MAX_ROUTES`), never from a request.
struct Stats {
    totals: [u32; Stat::ALL.len()],
    /// Sorted by name (from `RouteTable::names`), so a route is found by binary search.
    by_route: Vec<(String, [u32; Stat::ALL.len()])>,
}

impl Stats {
    fn define(route_names: &[&str]) -> Result<Self, Status> {
        let mut totals = [0; Stat::ALL.len()];
        for (id, stat) in totals.iter_mut().zip(Stat::ALL) {
            *id = hostcalls::define_metric(MetricType::Counter, stat.name())?;
        }
        let mut by_route = Vec::with_capacity(route_names.len());
        for route in route_names {
            let mut ids = [0; Stat::ALL.len()];
            for (id, stat) in ids.iter_mut().zip(Stat::ALL) {
                *id = hostcalls::define_metric(MetricType::Counter, &stat.route_name(route))?;
            }
            by_route.push(((*route).to_owned(), ids));
        }
        Ok(Self { totals, by_route })
    }

    fn route(&self, route: &str) -> Option<usize> {
        self.by_route
            .binary_search_by(|(name, _)| name.as_str().cmp(route))
            .ok()
    }

    fn increment(&self, route: Option<usize>, stat: Stat, amount: u64) -> Result<(), Status> {
        let index = Stat::ALL.iter().position(|s| *s == stat).unwrap_or(0);
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        let total = self.totals.get(index).copied().unwrap_or(0);
        hostcalls::increment_metric(total, amount)?;
        if let Some(ids) = route.and_then(|route| self.by_route.get(route)) {
            hostcalls::increment_metric(ids.1.get(index).copied().unwrap_or(0), amount)?;
        }
        Ok(())
    }
}
