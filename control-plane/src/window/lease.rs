//! Leases: admissions granted ahead, for an Envoy to spend without asking.
//!
//! A lease's units enter the window when it is granted, stamped at its deadline, so no unit
//! can leave the window earlier than a whole window after its real use (which comes before
//! the deadline): a lease only ever makes the window more conservative. What a lease leaves
//! unused is handed back by the filter once the lease is over and leaves the window then.
//! A lease never handed back (an Envoy that died) stays counted until it ages out: fewer
//! admissions for at most a window, never more.
//!
//! Sizing: about what the tenant uses in a lease's lifetime at its recent rate, at most what
//! the filter asks, and at most a quarter of the room left in the window (and the month).
//! Envoys asking in turn each get a quarter of what the others left, so leases together
//! never hold all the room, and near the limit a lease shrinks to nothing: the last units are
//! decided one by one.

use std::fmt;
use std::str::FromStr;

/// A decision's request to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowRequest {
    pub cost: u32,
    /// Denials the filter answered from its cache and reports now.
    pub reported_denials: u64,
    /// The most requests (this one included) the caller would take in a lease; ≤ 1: none.
    pub lease_max: u32,
    /// How long a lease lasts from now: where its units are stamped.
    pub lease_ttl_ms: u64,
    /// A lease handed back: its unused requests leave the window first.
    pub returned: Option<Returned>,
}

impl WindowRequest {
    /// A request of `cost` units, with no lease.
    pub fn plain(cost: u32, reported_denials: u64) -> Self {
        Self {
            cost,
            reported_denials,
            ..Self::default()
        }
    }
}

/// `requests` of lease `lease` were never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Returned {
    pub lease: LeaseId,
    pub requests: u32,
}

impl Returned {
    /// The units to take out of the window: never more than the lease put in.
    pub fn units(&self) -> u64 {
        (u64::from(self.requests) * u64::from(self.lease.cost)).min(self.lease.units)
    }
}

/// Where a lease's units are in a store. Opaque to the filter, which hands it back as
/// `<stamp>.<granted>.<first>.<units>.<cost>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseId {
    /// Where the units are stamped: the lease's deadline (ms since the epoch).
    pub stamp_ms: u64,
    /// When the lease was granted: its minute and month counted the units.
    pub granted_ms: u64,
    /// The lease's number in the store: its first unit's sequence number in Redis (which
    /// names the lease's member), the lease's own number in memory.
    pub first: u64,
    /// Units leased, beside the granting request's own.
    pub units: u64,
    /// Units per request.
    pub cost: u32,
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}.{}",
            self.stamp_ms, self.granted_ms, self.first, self.units, self.cost
        )
    }
}

/// A lease id that is not five numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a lease id")]
pub struct NotALeaseId;

impl FromStr for LeaseId {
    type Err = NotALeaseId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut numbers = text.split('.').map(|part| part.parse::<u64>().ok());
        let mut next = || numbers.next().flatten().ok_or(NotALeaseId);
        let id = LeaseId {
            stamp_ms: next()?,
            granted_ms: next()?,
            first: next()?,
            units: next()?,
            cost: u32::try_from(next()?).map_err(|_| NotALeaseId)?,
        };
        if numbers.next().is_some() || id.cost == 0 {
            return Err(NotALeaseId);
        }
        Ok(id)
    }
}

/// A lease granted with an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantedLease {
    pub id: LeaseId,
    /// Requests in the lease, the granting one included.
    pub requests: u32,
    pub ttl_ms: u64,
}

/// The share of the room one lease may take.
const ROOM_SHARE: u64 = 4;

/// A lease lasts at most this share of the window. Its units stay counted up to a lease
/// longer than their use, so a tenant at its limit rate gets about `window / (window + ttl)`
/// of it: at most a fiftieth of the window keeps that at 98 % or more (a 60 s window: 1.2 s;
/// a 1 s window: 20 ms).
const WINDOW_SHARE: u64 = 50;

/// The rate is measured over the units of at most the last five seconds: a tenant back from a
/// quiet spell is leased for what it sends now, not for its window's average (a minute's
/// window half idle halved its leases, and doubled its callouts).
pub const RATE_HORIZON_MS: u64 = 5_000;

/// ... and over at least a second, so a tenant's first few requests do not look like a
/// stream worth leasing to: a lease is then about what the tenant used in the last second.
const MIN_RATE_SPAN_MS: u64 = 1_000;

/// How long a lease granted in a window of `window_ms` lasts: the configured TTL, at most a
/// fiftieth of the window.
pub fn ttl_for(configured_ms: u64, window_ms: u64) -> u64 {
    configured_ms.min(window_ms / WINDOW_SHARE)
}

/// Requests beside the granting one a lease should hold: the whole requests `rate` (units per
/// ms, recent) spends in `ttl_ms`, at most `max − 1`, at most a quarter of `room` (units left
/// after the granting request). Zero: no lease (a tenant sending less than two requests per
/// lease gains nothing from one and would only see its usage run ahead).
pub fn extra_requests(rate: f64, ttl_ms: u64, cost: u32, max: u32, room: u64) -> u32 {
    if max <= 1 || ttl_ms == 0 || cost == 0 {
        return 0;
    }
    let wanted = (rate * ttl_ms as f64 / f64::from(cost)).floor();
    let wanted = if wanted.is_finite() && wanted > 0.0 {
        wanted.min(f64::from(u32::MAX)) as u32
    } else {
        0
    };
    let by_room = room / ROOM_SHARE / u64::from(cost);
    wanted
        .min(max - 1)
        .min(u32::try_from(by_room).unwrap_or(u32::MAX))
}

/// The recent rate in units per ms: `recent_units`, the units stamped in the last
/// [`RATE_HORIZON_MS`] (leases still running included), over the time since the oldest of them
/// (`since_ms`), at least [`MIN_RATE_SPAN_MS`] and at most the horizon.
pub fn recent_rate(recent_units: u64, since_ms: Option<u64>, now_ms: u64) -> f64 {
    let span = since_ms
        .map_or(0, |since| now_ms.saturating_sub(since))
        .clamp(MIN_RATE_SPAN_MS, RATE_HORIZON_MS);
    recent_units as f64 / span as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_id_survives_its_text_form_and_garbage_is_no_id() {
        let id = LeaseId {
            stamp_ms: 1_800_000_001_000,
            granted_ms: 1_800_000_000_000,
            first: 17,
            units: 40,
            cost: 5,
        };
        assert_eq!(id.to_string().parse(), Ok(id));
        for garbage in [
            "",
            "1.2.3.4",
            "1.2.3.4.5.6",
            "1.2.3.4.0",
            "a.2.3.4.5",
            "1.2.3.4.99999999999",
        ] {
            assert_eq!(garbage.parse::<LeaseId>(), Err(NotALeaseId), "{garbage:?}");
        }
    }

    #[test]
    fn a_return_never_takes_out_more_than_the_lease_put_in() {
        let lease = LeaseId {
            stamp_ms: 0,
            granted_ms: 0,
            first: 0,
            units: 10,
            cost: 5,
        };
        assert_eq!(Returned { lease, requests: 1 }.units(), 5);
        assert_eq!(
            Returned {
                lease,
                requests: 1_000
            }
            .units(),
            10
        );
    }

    #[test]
    fn leases_follow_the_rate_the_ask_and_the_room() {
        // 10 units a second, a 1 s lease: 10 requests of cost 1.
        assert_eq!(extra_requests(0.01, 1000, 1, 1000, 1_000_000), 10);
        assert_eq!(extra_requests(0.01, 1000, 5, 1000, 1_000_000), 2, "cost 5");
        assert_eq!(
            extra_requests(0.0015, 1000, 1, 1000, 1_000_000),
            1,
            "whole requests only"
        );
        assert_eq!(
            extra_requests(0.0009, 1000, 1, 1000, 1_000_000),
            0,
            "a trickle"
        );
        assert_eq!(
            extra_requests(10.0, 1000, 1, 500, 1_000_000),
            499,
            "the ask caps it"
        );
        assert_eq!(
            extra_requests(10.0, 1000, 1, 1000, 400),
            100,
            "a quarter of the room"
        );
        assert_eq!(
            extra_requests(10.0, 1000, 1, 1000, 3),
            0,
            "none near the limit"
        );
        assert_eq!(
            extra_requests(0.0, 1000, 1, 1000, 1000),
            0,
            "no rate, no lease"
        );
        assert_eq!(extra_requests(10.0, 1000, 1, 1, 1000), 0, "not asked");
    }

    #[test]
    fn the_rate_spans_the_recent_units_at_least_a_second_at_most_the_horizon() {
        assert_eq!(recent_rate(50, Some(55_000), 60_000), 0.01);
        assert_eq!(
            recent_rate(20, Some(58_000), 60_000),
            0.01,
            "a tenant just started"
        );
        assert_eq!(
            recent_rate(10, Some(59_900), 60_000),
            0.01,
            "a burst spans a second"
        );
        assert_eq!(
            recent_rate(5, Some(60_500), 60_000),
            0.005,
            "only a running lease's units, stamped ahead"
        );
        assert_eq!(recent_rate(0, None, 60_000), 0.0);
    }

    #[test]
    fn a_lease_lasts_at_most_a_fiftieth_of_its_window() {
        assert_eq!(ttl_for(1_000, 60_000), 1_000);
        assert_eq!(ttl_for(1_000, 1_000), 20);
        assert_eq!(ttl_for(0, 60_000), 0);
    }
}
