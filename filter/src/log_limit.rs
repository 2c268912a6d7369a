//! Quiet failures: the filter's log lines for failures that repeat (no decision, a host call
//! that failed) are rate-limited per cause. The first [`BURST`] of a cause in an interval
//! are logged as they happen; the rest are only counted, and one line says how many were
//! left out: `tollgate: no decision (timeout) ×1234 more in the last 10 s`. An outage of the
//! control-plane then costs the log a few lines per cause every [`INTERVAL_MS`], not one per
//! request.
//!
//! One [`LogLimiter`] per worker VM (a wasm VM is single-threaded), so each worker logs its
//! own first few. Time is passed in; the host flushes the counts of ended intervals from a
//! timer too, so the last interval of a burst of failures is reported even when no failure
//! follows it.

use std::fmt;

/// Lines logged per cause and interval before the rest are only counted.
pub const BURST: u32 = 5;
/// The interval, in milliseconds.
pub const INTERVAL_MS: u64 = 10_000;

/// Counts per cause. Causes are `&'static str` names from the code, so there are few, and a
/// linear search beats hashing.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    interval_ms: u64,
    causes: Vec<CauseCount>,
}

#[derive(Debug)]
struct CauseCount {
    cause: &'static str,
    level: log::Level,
    started_ms: u64,
    logged: u32,
    left_out: u64,
}

impl CauseCount {
    /// The line for what this interval left out, if anything, and a fresh interval.
    fn turn_over(&mut self, now_ms: u64) -> Option<LeftOut> {
        let left_out = (self.left_out > 0).then(|| LeftOut {
            cause: self.cause,
            level: self.level,
            count: self.left_out,
            seconds: now_ms.saturating_sub(self.started_ms).div_ceil(1000),
        });
        self.started_ms = now_ms;
        self.logged = 0;
        self.left_out = 0;
        left_out
    }
}

/// Occurrences of a cause that were not logged one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftOut {
    pub cause: &'static str,
    pub level: log::Level,
    pub count: u64,
    /// How long the interval they fell in lasted, in whole seconds (rounded up).
    pub seconds: u64,
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tollgate: {} ×{} more in the last {} s",
            self.cause, self.count, self.seconds
        )
    }
}

/// What to log for one occurrence of a cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The previous interval's count of left-out occurrences, when this one started a new
    /// interval; log it first.
    pub left_out: Option<LeftOut>,
    /// Whether to log this occurrence itself.
    pub log: bool,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(BURST, INTERVAL_MS)
    }
}

impl LogLimiter {
    pub fn new(burst: u32, interval_ms: u64) -> Self {
        Self {
            burst,
            interval_ms: interval_ms.max(1),
            causes: Vec::new(),
        }
    }

    /// One occurrence of `cause` at `now_ms`, to be logged at `level`.
    pub fn admit(&mut self, cause: &'static str, level: log::Level, now_ms: u64) -> Admission {
        let interval_ms = self.interval_ms;
        let index = match self.causes.iter().position(|c| c.cause == cause) {
            Some(index) => index,
            None => {
                self.causes.push(CauseCount {
                    cause,
                    level,
                    started_ms: now_ms,
                    logged: 0,
                    left_out: 0,
                });
                self.causes.len() - 1
            }
        };
        let Some(count) = self.causes.get_mut(index) else {
            return Admission {
                left_out: None,
                log: true,
            };
        };
        let left_out = if now_ms.saturating_sub(count.started_ms) >= interval_ms {
            count.turn_over(now_ms)
        } else {
            None
        };
        let log = count.logged < self.burst;
        if log {
            count.logged += 1;
        } else {
            count.left_out = count.left_out.saturating_add(1);
        }
        Admission { left_out, log }
    }

    /// The left-out counts of every interval that has ended by `now_ms`, for a timer to log;
    /// those causes start a fresh interval.
    pub fn flush(&mut self, now_ms: u64) -> Vec<LeftOut> {
        let interval_ms = self.interval_ms;
        self.causes
            .iter_mut()
            .filter(|c| now_ms.saturating_sub(c.started_ms) >= interval_ms)
            .filter_map(|c| c.turn_over(now_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use log::Level::{Error, Warn};

    const TIMEOUT: &str = "no decision (timeout)";
    const HOST: &str = "cannot send a local reply";

    /// Feeds `count` occurrences of `cause` at `now_ms`; returns how many were to be logged
    /// and the left-out lines they brought.
    fn feed(
        limiter: &mut LogLimiter,
        cause: &'static str,
        count: u32,
        now_ms: u64,
    ) -> (u32, Vec<LeftOut>) {
        let mut logged = 0;
        let mut left_out = Vec::new();
        for _ in 0..count {
            let admission = limiter.admit(cause, Warn, now_ms);
            logged += u32::from(admission.log);
            left_out.extend(admission.left_out);
        }
        (logged, left_out)
    }

    #[test]
    fn the_first_few_are_logged_then_the_rest_are_counted_in_one_line() {
        let mut limiter = LogLimiter::new(5, 10_000);
        assert_eq!(feed(&mut limiter, TIMEOUT, 1234 + 5, 0), (5, vec![]));
        assert_eq!(feed(&mut limiter, TIMEOUT, 1, 9_999), (0, vec![]));
        let (logged, left_out) = feed(&mut limiter, TIMEOUT, 1, 10_000);
        assert_eq!(logged, 1, "a new interval logs again");
        assert_eq!(
            left_out,
            vec![LeftOut {
                cause: TIMEOUT,
                level: Warn,
                count: 1235,
                seconds: 10
            }]
        );
        assert_eq!(
            left_out[0].to_string(),
            "tollgate: no decision (timeout) ×1235 more in the last 10 s"
        );
    }

    #[test]
    fn each_cause_has_its_own_budget() {
        let mut limiter = LogLimiter::new(2, 10_000);
        assert_eq!(feed(&mut limiter, TIMEOUT, 10, 0).0, 2);
        assert_eq!(
            limiter.admit(HOST, Error, 1),
            Admission {
                left_out: None,
                log: true
            },
            "a flood of timeouts does not silence another failure"
        );
        assert_eq!(
            limiter.flush(10_000),
            vec![LeftOut {
                cause: TIMEOUT,
                level: Warn,
                count: 8,
                seconds: 10
            }],
            "only what was left out is reported"
        );
    }

    #[test]
    fn a_timer_reports_an_interval_no_failure_followed() {
        let mut limiter = LogLimiter::new(1, 10_000);
        feed(&mut limiter, TIMEOUT, 4, 1_000);
        assert_eq!(limiter.flush(10_999), vec![], "the interval is still open");
        let flushed = limiter.flush(12_500);
        assert_eq!(flushed.len(), 1);
        assert_eq!(
            flushed[0].to_string(),
            "tollgate: no decision (timeout) ×3 more in the last 12 s"
        );
        assert_eq!(limiter.flush(30_000), vec![], "reported once");
        assert_eq!(
            feed(&mut limiter, TIMEOUT, 2, 30_001),
            (1, vec![]),
            "nothing left over to report"
        );
    }

    #[test]
    fn a_quiet_cause_is_never_summarised() {
        let mut limiter = LogLimiter::default();
        assert_eq!(feed(&mut limiter, TIMEOUT, BURST, 0), (BURST, vec![]));
        assert_eq!(limiter.flush(INTERVAL_MS * 3), vec![]);
    }

    #[test]
    fn counts_saturate_and_a_clock_going_back_does_not_panic() {
        let mut limiter = LogLimiter::new(0, 10_000);
        limiter.admit(TIMEOUT, Warn, 5_000);
        if let Some(count) = limiter.causes.first_mut() {
            count.left_out = u64::MAX;
        }
        assert!(
            !limiter.admit(TIMEOUT, Warn, 1_000).log,
            "earlier than the start"
        );
        let flushed = limiter.flush(u64::MAX);
        assert_eq!(flushed.first().map(|l| l.count), Some(u64::MAX));
    }
}
