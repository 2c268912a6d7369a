//! The embedded window store: exact sliding-window logs in this process's memory.
//!
//! Each tenant's window is a log of admitted units and one of denied requests, both coalesced
//! per millisecond, so a window never holds more entries than there are milliseconds in it,
//! however hard a tenant floods. Windows live in a [`DashMap`]: a decision locks only its
//! tenant's shard, for the few microseconds of trimming and counting, and never across an
//! `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;

use super::history::{MinuteRing, month_of, ms_until_next_month};
use super::lease::{self, GrantedLease, LeaseId, Returned};
use super::{Limit, MonthStanding, WindowDecision, WindowRequest, WindowStore, WindowUsage};
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
    async fn decide_request(
        &self,
        tenant: &str,
        limit: Limit,
        mut request: WindowRequest,
    ) -> Result<WindowDecision, StoreError> {
        request.lease_ttl_ms = lease::ttl_for(request.lease_ttl_ms, limit.window_ms());
        let now = self.inner.clock.now_ms();
        Ok(self.with_window(tenant, limit, |window| {
            if let Some(returned) = request.returned {
                window.take_back(now, returned);
            }
            window.count_denials(now, request.reported_denials);
            window.decide(now, limit, &request)
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
                leased: u32::try_from(window.admitted.after(now)).unwrap_or(u32::MAX),
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
    /// Leases granted and not handed back, by number: where their units are stamped and how
    /// many. A lease is taken back once; one that aged out of the window is forgotten.
    leases: HashMap<u64, (u64, u64)>,
    /// The next lease's number (its id's `first`).
    next_lease: u64,
}

impl TenantWindow {
    fn new(window_ms: u64) -> Self {
        Self {
            admitted: EventLog::default(),
            denied: EventLog::default(),
            minutes: MinuteRing::default(),
            month: MonthCount::default(),
            window_ms,
            leases: HashMap::new(),
            next_lease: 0,
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
        self.leases.retain(|_, (stamp, _)| *stamp > cutoff);
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

    /// Takes out what a returned lease left unused, and its count in the minute and the
    /// month it was granted in.
    fn take_back(&mut self, now: u64, returned: Returned) {
        let lease = returned.lease;
        // Only a lease granted here, once; its units are stamped where it says.
        let Some((stamp, units)) = self.leases.remove(&lease.first) else {
            return;
        };
        if stamp != lease.stamp_ms {
            self.leases.insert(lease.first, (stamp, units));
            return;
        }
        let removed = self.admitted.remove_at(stamp, returned.units().min(units));
        if removed > 0 {
            self.minutes.uncount(lease.granted_ms, removed);
            if self.month.month == month_of(lease.granted_ms) && self.month.month == month_of(now) {
                self.month.admitted = self.month.admitted.saturating_sub(removed);
            }
        }
    }

    fn decide(&mut self, now: u64, limit: Limit, request: &WindowRequest) -> WindowDecision {
        let cost = request.cost;
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
        let mut lease = None;
        if admitted {
            // Read before this request is counted, and only when a lease may be granted.
            let rate = (request.lease_max > 1 && request.lease_ttl_ms > 0).then(|| {
                let (units, since) = self
                    .admitted
                    .recent(now.saturating_sub(lease::RATE_HORIZON_MS));
                lease::recent_rate(units, since, now)
            });
            self.admitted.record(now, cost);
            self.minutes.record(now, u64::from(cost), 0);
            self.month = MonthCount {
                month: month_of(now),
                admitted: month_used + u64::from(cost),
            };
            let room = u64::from(limit.limit.saturating_sub(self.used())).min(
                limit
                    .monthly
                    .map_or(u64::MAX, |m| m.saturating_sub(self.month.admitted)),
            );
            let extra = rate.map_or(0, |rate| {
                lease::extra_requests(rate, request.lease_ttl_ms, cost, request.lease_max, room)
            });
            if extra > 0 {
                lease = Some(self.grant(now, request.lease_ttl_ms, cost, extra));
            }
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
            lease,
        }
    }

    /// Counts `extra` more requests of `cost` now, stamped `ttl_ms` ahead.
    fn grant(&mut self, now: u64, ttl_ms: u64, cost: u32, extra: u32) -> GrantedLease {
        let units = u64::from(extra) * u64::from(cost);
        let stamp = now.saturating_add(ttl_ms);
        self.admitted
            .record(stamp, u32::try_from(units).unwrap_or(u32::MAX));
        self.minutes.record(now, units, 0);
        self.month.admitted = self.month.admitted.saturating_add(units);
        let number = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(number, (stamp, units));
        GrantedLease {
            id: LeaseId {
                stamp_ms: stamp,
                granted_ms: now,
                first: number,
                units,
                cost,
            },
            requests: extra + 1,
            ttl_ms,
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

/// The most entries a lease's rate is read from: a tenant deciding every millisecond is
/// measured over its last second or so (a shorter span than the horizon, so its rate reads a
/// little low, and near its limit no lease is granted anyway).
const RATE_ENTRIES: usize = 1024;

/// Events in time order as (millisecond, count), coalesced per millisecond. Admissions come
/// at the back; a lease's units are stamped ahead, so later admissions go in just before
/// them (a few entries from the back at most).
#[derive(Default)]
struct EventLog {
    events: VecDeque<(u64, u32)>,
    total: u64,
}

impl EventLog {
    fn record(&mut self, at: u64, count: u32) {
        self.total = self.total.saturating_add(u64::from(count));
        let after = self
            .events
            .iter()
            .rev()
            .take_while(|&&(t, _)| t > at)
            .count();
        let index = self.events.len() - after;
        match index.checked_sub(1).and_then(|i| self.events.get_mut(i)) {
            // A count that would overflow the millisecond's entry starts another, so the
            // entries always add up to the total.
            Some((last, n)) if *last == at && n.checked_add(count).is_some() => *n += count,
            _ => self.events.insert(index, (at, count)),
        }
    }

    /// Takes up to `units` out of the entry at `at`; how many it took.
    fn remove_at(&mut self, at: u64, units: u64) -> u64 {
        let Some(index) = self.events.iter().rposition(|&(t, _)| t == at) else {
            return 0;
        };
        let entry = &mut self.events[index];
        let taken = units.min(u64::from(entry.1));
        entry.1 -= u32::try_from(taken).unwrap_or(entry.1);
        if entry.1 == 0 {
            self.events.remove(index);
        }
        self.total = self.total.saturating_sub(taken);
        taken
    }

    /// Units stamped after `at` (leases still running).
    fn after(&self, at: u64) -> u64 {
        self.events
            .iter()
            .rev()
            .take_while(|&&(t, _)| t > at)
            .map(|&(_, count)| u64::from(count))
            .sum()
    }

    /// The units stamped after `from` and the oldest of their stamps, from at most
    /// [`RATE_ENTRIES`] entries back: bounded work per lease, however busy the tenant.
    fn recent(&self, from: u64) -> (u64, Option<u64>) {
        let mut units = 0;
        let mut since = None;
        for &(at, count) in self.events.iter().rev().take(RATE_ENTRIES) {
            if at <= from {
                break;
            }
            units += u64::from(count);
            since = Some(at);
        }
        (units, since)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_units_are_read_from_a_bounded_number_of_entries() {
        let mut log = EventLog::default();
        for at in 0..3_000 {
            log.record(at, 2);
        }
        assert_eq!(log.recent(2_989), (20, Some(2_990)), "the last ten ms");
        let (units, since) = log.recent(0);
        assert_eq!(
            units,
            2 * RATE_ENTRIES as u64,
            "no more entries than the bound"
        );
        assert_eq!(since, Some(3_000 - RATE_ENTRIES as u64));
        assert_eq!(log.recent(5_000), (0, None));
    }
}
