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

use super::history::{MinuteRing, month_of, ms_until_next_month};
use super::{Limit, MonthStanding, WindowDecision, WindowStore, WindowUsage};
use crate::clock::Clock;
use crate::storage::StoreError;

/// Cloning shares the windows (both listeners use one store).
#[derive(Clone)]
pub struct MemoryWindows {
    inner: Arc<Inner>,
}

struct Inner {
    windows: DashMap<String, TenantWindow>,
    clock: Arc<dyn Clock>,
}

/// Units admitted in one calendar month (yyyymm).
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
        if window.minutes.is_idle(now) {
            window.minutes = MinuteRing::default();
        }
        // Kept while anything in it still counts: the window, the last hour, or this month
        // (an idle tenant then costs a few dozen bytes).
        !window.is_empty() || !window.minutes.is_idle(now) || window.month.month == month_of(now)
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
        Ok(self.with_window(tenant, limit, |window| {
            window.count_denials(now, reported_denials);
            window.decide(now, limit, cost)
        }))
    }

    async fn usage(
        &self,
        tenant: &str,
        limit: Limit,
        reported_denials: u64,
    ) -> Result<WindowUsage, StoreError> {
        let now = self.inner.clock.now_ms();
        Ok(self.with_window(tenant, limit, |window| {
            window.window_ms = limit.window_ms();
            window.expire(now);
            window.count_denials(now, reported_denials);
            WindowUsage {
                used: window.used(),
                denied: window.denied.total,
                reset_ms: window.reset_ms(now),
                month_to_date: window.month_to_date(now),
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
    /// Admitted this calendar month, for the monthly quota and usage; decided under the same
    /// lock as the window, so the two quotas are checked and charged together.
    month: MonthCount,
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
            month: MonthCount::default(),
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

    fn month_to_date(&self, now: u64) -> u64 {
        if self.month.month == month_of(now) {
            self.month.admitted
        } else {
            0
        }
    }

    fn decide(&mut self, now: u64, limit: Limit, cost: u32) -> WindowDecision {
        self.window_ms = limit.window_ms();
        self.expire(now);
        let used = self.used();
        let month_used = self.month_to_date(now);
        let fits_window = u64::from(used) + u64::from(cost) <= u64::from(limit.limit);
        let fits_month = limit
            .monthly
            .is_none_or(|m| month_used + u64::from(cost) <= m);
        let admitted = fits_window && fits_month;
        let mut retry_after_ms = 0;
        if admitted {
            self.admitted.record(now, cost);
            self.minutes.record(now, u64::from(cost), 0);
            self.month = MonthCount {
                month: month_of(now),
                admitted: month_used + u64::from(cost),
            };
        } else {
            self.denied.record(now, 1);
            self.minutes.record(now, 0, 1);
            if !fits_window {
                retry_after_ms = self.window_retry(now, used, limit, cost);
            }
            if !fits_month {
                retry_after_ms = retry_after_ms.max(ms_until_next_month(now));
            }
        }
        WindowDecision {
            admitted,
            remaining: limit.limit.saturating_sub(self.used()),
            reset_ms: self.reset_ms(now),
            retry_after_ms,
            month: limit.monthly.map(|monthly| MonthStanding {
                remaining: monthly.saturating_sub(self.month_to_date(now)),
                reset_ms: ms_until_next_month(now),
            }),
        }
    }

    /// Milliseconds until enough admitted units leave the window for `cost` to fit.
    fn window_retry(&self, now: u64, used: u32, limit: Limit, cost: u32) -> u64 {
        if cost > limit.limit {
            // Never admissible on this tier; the window length is the honest upper bound.
            return self.window_ms;
        }
        let must_free = u64::from(used) + u64::from(cost) - u64::from(limit.limit);
        self.admitted
            .time_freeing(must_free)
            .map_or(self.window_ms, |at| {
                (at + self.window_ms).saturating_sub(now)
            })
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
        self.total = self.total.saturating_add(u64::from(count));
        match self.events.back_mut() {
            // A count that would overflow the millisecond's entry starts another, so the
            // entries always add up to the total.
            Some((last, n)) if *last == at && n.checked_add(count).is_some() => *n += count,
            _ => self.events.push_back((at, count)),
        }
    }

    /// Drops events at or before `cutoff`: they have left the window.
    fn expire(&mut self, cutoff: u64) {
        while let Some(&(at, count)) = self.events.front() {
            if at > cutoff {
                break;
            }
            self.total = self.total.saturating_sub(u64::from(count));
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
