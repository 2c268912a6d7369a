//! Per-tenant sliding windows: the exact log of what each tenant was admitted in the last
//! window, and the one operation the decision path needs, [`WindowStore::decide`].
//!
//! Semantics every backend shares (checked by one conformance suite, `tests/window_store.rs`):
//! - A request of cost `c` is admitted iff the units admitted in the last `window` plus `c`
//!   stay within `limit`; admission is all or nothing, and atomic per tenant.
//! - An admitted unit leaves the window exactly `window` after it was admitted (a log, not
//!   fixed buckets), so capacity returns as old requests age out.
//! - Denied requests are not added to the window (a flooding tenant recovers as its old
//!   requests age out) but are counted, for usage. Denials the filter answered from its deny
//!   cache arrive later as a count (`reported_denials`) and are counted the same way, in the
//!   same store call.
//! - Windows of idle tenants are dropped, so memory follows active tenants only.
//! - An admission may come with a lease (see [`lease`]): more units counted at once, stamped
//!   at the lease's deadline; what the lease leaves unused is taken back when returned.

mod batches;
mod history;
mod lease;
mod memory;
mod redis;

use std::time::Duration;

use crate::storage::StoreError;
pub use history::{HISTORY_MINUTES, MinuteUsage, month_of, ms_until_next_month};
pub use lease::{GrantedLease, LeaseId, NotALeaseId, Returned, WindowRequest};
pub use memory::MemoryWindows;
pub use redis::RedisWindows;

/// What a tenant may spend: `limit` units per rolling `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub limit: u32,
    pub window: Duration,
    /// Units per calendar month (UTC), when the tier caps the month too. Both quotas must
    /// have room for a request to be admitted.
    pub monthly: Option<u64>,
}

impl Limit {
    pub fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The outcome of one decision, and where the tenant stands after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDecision {
    pub admitted: bool,
    /// Units still available after this decision.
    pub remaining: u32,
    /// Milliseconds until the oldest admitted unit leaves the window (0 if the window is empty).
    pub reset_ms: u64,
    /// When denied: milliseconds until both quotas have room for this request.
    pub retry_after_ms: u64,
    /// Where the tenant stands in its monthly quota, when it has one.
    pub month: Option<MonthStanding>,
    /// Admissions granted ahead with this one (see [`lease`]); `remaining` counts them.
    pub lease: Option<GrantedLease>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthStanding {
    /// Units left this month after this decision.
    pub remaining: u64,
    /// Milliseconds until the month starts over.
    pub reset_ms: u64,
}

/// A tenant's window and counters as the usage endpoint sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUsage {
    /// Units admitted in the current window, leased ones included.
    pub used: u32,
    /// Of `used`, units of leases still running (granted ahead, maybe not spent yet).
    pub leased: u32,
    /// Requests denied in the current window.
    pub denied: u64,
    pub reset_ms: u64,
    /// Units admitted in the current calendar month (UTC).
    pub month_to_date: u64,
    /// The last [`HISTORY_MINUTES`] minutes, oldest first, ending with the current one.
    pub history: Vec<MinuteUsage>,
}

/// A backend holding the windows. Implementations must make `decide` atomic per tenant, and
/// cost at most one round trip to shared storage (concurrent decisions may share one).
pub trait WindowStore: Send + Sync {
    /// Takes back what `request.returned` left unused, counts its reported denials, then
    /// decides it; an admission asking for a lease may come with one.
    fn decide_request(
        &self,
        tenant: &str,
        limit: Limit,
        request: WindowRequest,
    ) -> impl Future<Output = Result<WindowDecision, StoreError>> + Send;

    /// Counts `reported_denials` earlier denials, then decides a request of `cost` units,
    /// with no lease.
    fn decide(
        &self,
        tenant: &str,
        limit: Limit,
        cost: u32,
        reported_denials: u64,
    ) -> impl Future<Output = Result<WindowDecision, StoreError>> + Send {
        self.decide_request(tenant, limit, WindowRequest::plain(cost, reported_denials))
    }

    /// Counts `reported_denials` earlier denials, then reads the window and counters.
    fn usage(
        &self,
        tenant: &str,
        limit: Limit,
        reported_denials: u64,
    ) -> impl Future<Output = Result<WindowUsage, StoreError>> + Send;
}

/// The store the control-plane runs with, chosen once at start.
pub enum Windows {
    /// The embedded default: exact, in this process, lost on restart.
    Memory(MemoryWindows),
    /// Shared by every replica.
    Redis(RedisWindows),
}

impl Windows {
    /// Whether the store answers now.
    pub async fn health(&self) -> Result<(), StoreError> {
        match self {
            Windows::Memory(_) => Ok(()),
            Windows::Redis(store) => store.ping().await,
        }
    }
}

impl WindowStore for Windows {
    async fn decide_request(
        &self,
        tenant: &str,
        limit: Limit,
        request: WindowRequest,
    ) -> Result<WindowDecision, StoreError> {
        match self {
            Windows::Memory(store) => store.decide_request(tenant, limit, request).await,
            Windows::Redis(store) => store.decide_request(tenant, limit, request).await,
        }
    }

    async fn usage(
        &self,
        tenant: &str,
        limit: Limit,
        reported_denials: u64,
    ) -> Result<WindowUsage, StoreError> {
        match self {
            Windows::Memory(store) => store.usage(tenant, limit, reported_denials).await,
            Windows::Redis(store) => store.usage(tenant, limit, reported_denials).await,
        }
    }
}
