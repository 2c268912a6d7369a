//! The embedded window store: exact sliding-window logs in this process's memory.
//!
//! Each tenant's window is a log of admitted units and one of denied requests, both coalesced
//! per millisecond, so a window never holds more entries than there are milliseconds in it,
//! however hard a tenant floods. Windows live in a [`DashMap`]: a decision locks only its
//! tenant's shard, for the few microseconds of trimming and counting, and never across an
//! `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;

use super::history::MinuteRing;
use super::history::month_of;
use super::{Clock, Limit, StoreError, WindowDecision, WindowStore, WindowUsage};

pub struct MemoryWindows {
    inner: Arc<Inner>,
}

struct Inner {
    windows: DashMap<String, TenantWindow>,
    /// Month-to-date per tenant, kept apart from the windows so that sweeping an idle
    /// tenant's window does not forget its month. One small entry per tenant ever seen.
    months: DashMap<String, MonthCount>,
    clock: Arc<dyn Clock>,
}

#[derive(Default, Clone, Copy)]
struct MonthCount {
    month: u32,
    admitted: u64,
}

impl MemoryWindows {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                windows: DashMap::new(),
                months: DashMap::new(),
                clock,
            }),
        }
    }

    /// Drops the windows of tenants with nothing left in them every `period`. The task holds
    /// only a weak reference and ends when the store is dropped.
    pub fn spawn_sweeper(&self, period: Duration) {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                sweep(&inner);
            }
        });
    }

    /// Drops idle windows now; returns how many tenants still hold one.
    pub fn sweep(&self) -> usize {
        sweep(&self.inner);
        self.inner.windows.len()
    }
}

fn sweep(inner: &Inner) {
    let now = inner.clock.now_ms();
    inner.windows.retain(|_, window| {
        window.expire(now);
        !window.is_empty() || !window.minutes.is_idle(now)
    });
}

impl MemoryWindows {
    /// Runs `f` on the tenant's window, creating it if needed, under its shard's lock.
    fn with_window<T>(
        &self,
        tenant: &str,
        limit: Limit,
        f: impl FnOnce(&mut TenantWindow) -> T,
    ) -> T {
        // `get_mut` first: the common case finds the tenant without allocating its key.
        if let Some(mut window) = self.inner.windows.get_mut(tenant) {
            return f(&mut window);
        }
        let mut window = self
            .inner
            .windows
            .entry(tenant.to_owned())
            .or_insert_with(|| TenantWindow::new(limit.window_ms()));
        f(&mut window)
    }
}

impl WindowStore for MemoryWindows {
    async fn decide(
        &self,
        tenant: &str,
        limit: Limit,
        cost: u32,
        reported_denials: u64,
    ) -> Result<WindowDecision, StoreError> {
        let now = self.inner.clock.now_ms();
        let decision = self.with_window(tenant, limit, |window| {
            window.count_denials(now, reported_denials);
            window.decide(now, limit, cost)
        });
        if decision.admitted {
            let month = month_of(now);
            let mut count = match self.inner.months.get_mut(tenant) {
                Some(count) => count,
                None => self.inner.months.entry(tenant.to_owned()).or_default(),
            };
            if count.month != month {
                *count = MonthCount { month, admitted: 0 };
            }
            count.admitted += u64::from(cost);
        }
        Ok(decision)
    }

    async fn usage(
        &self,
        tenant: &str,
        limit: Limit,
        reported_denials: u64,
    ) -> Result<WindowUsage, StoreError> {
        let now = self.inner.clock.now_ms();
        let month_to_date = self
            .inner
            .months
            .get(tenant)
            .filter(|count| count.month == month_of(now))
            .map_or(0, |count| count.admitted);
        Ok(self.with_window(tenant, limit, |window| {
            window.window_ms = limit.window_ms();
            window.expire(now);
            window.count_denials(now, reported_denials);
            WindowUsage {
                used: window.used(),
                denied: window.denied.total,
                reset_ms: window.reset_ms(now),
                month_to_date,
                history: window.minutes.history(now),
            }
        }))
    }
}

struct TenantWindow {
    admitted: EventLog,
    denied: EventLog,
    /// Per-minute counts of the last hour; keeps an idle tenant's entry alive for that hour.
    minutes: MinuteRing,
    /// The window length of the tenant's tier at its last decision; a tier change applies
    /// from the next one.
    window_ms: u64,
}

impl TenantWindow {
    fn new(window_ms: u64) -> Self {
        Self {
            admitted: EventLog::default(),
            denied: EventLog::default(),
            minutes: MinuteRing::default(),
            window_ms,
        }
    }

    fn is_empty(&self) -> bool {
        self.admitted.events.is_empty() && self.denied.events.is_empty()
    }

    fn used(&self) -> u32 {
        u32::try_from(self.admitted.total).unwrap_or(u32::MAX)
    }

    fn expire(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.window_ms);
        self.admitted.expire(cutoff);
        self.denied.expire(cutoff);
    }

    /// Milliseconds until the oldest admitted unit leaves the window.
    fn reset_ms(&self, now: u64) -> u64 {
        self.admitted
            .events
            .front()
            .map_or(0, |&(at, _)| (at + self.window_ms).saturating_sub(now))
    }

    fn count_denials(&mut self, now: u64, count: u64) {
        if count > 0 {
            self.denied
                .record(now, u32::try_from(count).unwrap_or(u32::MAX));
            self.minutes.record(now, 0, count);
        }
    }

    fn decide(&mut self, now: u64, limit: Limit, cost: u32) -> WindowDecision {
        self.window_ms = limit.window_ms();
        self.expire(now);
        let used = self.used();
        if u64::from(used) + u64::from(cost) <= u64::from(limit.limit) {
            self.admitted.record(now, cost);
            self.minutes.record(now, u64::from(cost), 0);
            return WindowDecision {
                admitted: true,
                remaining: limit.limit - used - cost,
                reset_ms: self.reset_ms(now),
                retry_after_ms: 0,
            };
        }
        self.denied.record(now, 1);
        self.minutes.record(now, 0, 1);
        let retry_after_ms = if cost > limit.limit {
            // Never admissible on this tier; the window length is the honest upper bound.
            self.window_ms
        } else {
            let must_free = u64::from(used) + u64::from(cost) - u64::from(limit.limit);
            self.admitted
                .time_freeing(must_free)
                .map_or(self.window_ms, |at| {
                    (at + self.window_ms).saturating_sub(now)
                })
        };
        WindowDecision {
            admitted: false,
            remaining: limit.limit.saturating_sub(used),
            reset_ms: self.reset_ms(now),
            retry_after_ms,
        }
    }
}

/// Events in time order as (millisecond, count), coalesced per millisecond.
#[derive(Default)]
struct EventLog {
    events: VecDeque<(u64, u32)>,
    total: u64,
}

impl EventLog {
    fn record(&mut self, at: u64, count: u32) {
        self.total += u64::from(count);
        match self.events.back_mut() {
            Some((last, n)) if *last == at => *n += count,
            _ => self.events.push_back((at, count)),
        }
    }

    /// Drops events at or before `cutoff`: they have left the window.
    fn expire(&mut self, cutoff: u64) {
        while let Some(&(at, count)) = self.events.front() {
            if at > cutoff {
                break;
            }
            self.total -= u64::from(count);
            self.events.pop_front();
        }
    }

    /// The time of the event whose expiry brings the freed count to at least `units`.
    fn time_freeing(&self, units: u64) -> Option<u64> {
        let mut freed = 0;
        self.events.iter().find_map(|&(at, count)| {
            freed += u64::from(count);
            (freed >= units).then_some(at)
        })
    }
}
