//! Usage counters kept beside each window, in every store: admitted units and denied
//! requests per minute for the last hour, and admitted units in the current calendar month
//! (UTC). Both stores count the same way; the Redis script mirrors [`month_of`] in Lua.

/// Minutes of per-minute history kept and reported.
pub const HISTORY_MINUTES: u64 = 60;
const MINUTE_MS: u64 = 60_000;

/// One minute of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteUsage {
    /// Start of the minute, ms since the Unix epoch.
    pub minute_start_ms: u64,
    pub admitted: u64,
    pub denied: u64,
}

pub fn minute_of(ms: u64) -> u64 {
    ms / MINUTE_MS
}

/// The UTC month of `ms` as `yyyymm` (e.g. 202611), from days since the epoch (Howard
/// Hinnant's `civil_from_days`).
pub fn month_of(ms: u64) -> u32 {
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    u32::try_from(year * 100 + month).unwrap_or(0)
}

/// Milliseconds from `ms` to the start of the next UTC month (Howard Hinnant's
/// `days_from_civil`), when a monthly quota starts over.
pub fn ms_until_next_month(ms: u64) -> u64 {
    let month = month_of(ms);
    let (year, month) = (i64::from(month / 100), i64::from(month % 100));
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400_000)
        .unwrap_or(0)
        .saturating_sub(ms)
}

/// A ring of per-minute counters, one slot per minute of the last hour, each stamped with
/// the minute it counts so a stale slot reads as zero.
#[derive(Debug, Clone, Default)]
pub struct MinuteRing {
    slots: Vec<(u64, u64, u64)>,
}

impl MinuteRing {
    pub fn record(&mut self, now_ms: u64, admitted: u64, denied: u64) {
        if self.slots.is_empty() {
            self.slots = vec![(u64::MAX, 0, 0); HISTORY_MINUTES as usize];
        }
        let minute = minute_of(now_ms);
        let slot = &mut self.slots[(minute % HISTORY_MINUTES) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        // Saturating: a count reported by a client (usage requests carry the filter's) must
        // not be able to overflow a counter.
        slot.1 = slot.1.saturating_add(admitted);
        slot.2 = slot.2.saturating_add(denied);
    }

    /// Takes `admitted` back from the minute of `at_ms`, if it is still in the ring (a lease's
    /// units returned unused).
    pub fn uncount(&mut self, at_ms: u64, admitted: u64) {
        let minute = minute_of(at_ms);
        if let Some(slot) = self
            .slots
            .get_mut((minute % HISTORY_MINUTES) as usize)
            .filter(|slot| slot.0 == minute)
        {
            slot.1 = slot.1.saturating_sub(admitted);
        }
    }

    /// The last hour, oldest minute first, ending with the current one.
    pub fn history(&self, now_ms: u64) -> Vec<MinuteUsage> {
        let current = minute_of(now_ms);
        (current + 1 - HISTORY_MINUTES..=current)
            .map(|minute| {
                let (admitted, denied) = self
                    .slots
                    .get((minute % HISTORY_MINUTES) as usize)
                    .filter(|slot| slot.0 == minute)
                    .map_or((0, 0), |slot| (slot.1, slot.2));
                MinuteUsage {
                    minute_start_ms: minute * MINUTE_MS,
                    admitted,
                    denied,
                }
            })
            .collect()
    }

    /// Whether nothing in the last hour was counted.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let oldest = minute_of(now_ms).saturating_sub(HISTORY_MINUTES - 1);
        self.slots
            .iter()
            .all(|slot| slot.0 == u64::MAX || slot.0 < oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), 197001);
        assert_eq!(month_of(951_782_400_000), 200002); // 2000-02-29
        assert_eq!(month_of(951_868_799_999), 200002); // 2000-02-29T23:59:59.999
        assert_eq!(month_of(951_868_800_000), 200003); // 2000-03-01
        assert_eq!(month_of(1_795_651_200_000), 202611); // 2026-11-25
        assert_eq!(month_of(1_798_761_599_999), 202612); // 2026-12-31T23:59:59.999
        assert_eq!(month_of(1_798_761_600_000), 202701); // 2027-01-01
    }

    #[test]
    fn the_next_month_starts_at_midnight_utc_on_the_first() {
        assert_eq!(
            ms_until_next_month(1_798_761_599_999),
            1,
            "2026-12-31T23:59:59.999"
        );
        assert_eq!(
            ms_until_next_month(1_798_761_600_000),
            2_678_400_000,
            "January has 31 days"
        );
        assert_eq!(
            ms_until_next_month(951_782_400_000),
            86_400_000,
            "2000-02-29: one day left"
        );
    }

    #[test]
    fn the_ring_reports_the_last_hour_and_forgets_older_minutes() {
        let mut ring = MinuteRing::default();
        let t = 1_795_651_200_000;
        ring.record(t, 3, 0);
        ring.record(t + 1_000, 1, 2);
        ring.record(t + 60_000, 5, 0);
        let history = ring.history(t + 60_000);
        assert_eq!(history.len(), 60);
        assert_eq!(
            history[58],
            MinuteUsage {
                minute_start_ms: t,
                admitted: 4,
                denied: 2
            }
        );
        assert_eq!(history[59].admitted, 5);
        // An hour later the first minute has left the history.
        let later = ring.history(t + 60 * 60_000);
        assert_eq!(later.iter().map(|m| m.admitted).sum::<u64>(), 5);
        assert!(!ring.is_idle(t + 60 * 60_000));
        assert!(ring.is_idle(t + 61 * 60_000));
        // Writing into a reused slot starts it from zero.
        ring.record(t + 60 * 60_000, 1, 0);
        assert_eq!(ring.history(t + 60 * 60_000)[59].admitted, 1);
    }
}
