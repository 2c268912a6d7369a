//! Rate-limited logging for failures that repeat: during an outage or an attack the same line
//! would be written per request, flooding the logs and costing the CPU the service needs.
//!
//! Each cause (a short static name, one per call site) may write [`LINES_PER_PERIOD`] lines
//! per [`PERIOD`]; the rest are counted, and the next line written for that cause says how
//! many were left out. Causes are static strings named in the code, so the table is bounded by
//! the code, not by input. It is process-wide, like the log it guards.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const LINES_PER_PERIOD: u32 = 5;
pub const PERIOD: Duration = Duration::from_secs(10);

static CAUSES: Mutex<Option<HashMap<&'static str, Period>>> = Mutex::new(None);

struct Period {
    started: Instant,
    written: u32,
    /// Lines left out since the last one written.
    suppressed: u64,
}

/// Whether a line for `cause` may be written now; `Some(n)`: yes, and `n` lines of this cause
/// were left out before it (say so in the line).
pub fn admit(cause: &'static str) -> Option<u64> {
    let mut causes = CAUSES.lock().unwrap_or_else(PoisonError::into_inner);
    admit_at(
        causes.get_or_insert_with(HashMap::new),
        cause,
        Instant::now(),
    )
}

fn admit_at(
    causes: &mut HashMap<&'static str, Period>,
    cause: &'static str,
    now: Instant,
) -> Option<u64> {
    let period = causes.entry(cause).or_insert(Period {
        started: now,
        written: 0,
        suppressed: 0,
    });
    if now.duration_since(period.started) >= PERIOD {
        period.started = now;
        period.written = 0;
    }
    if period.written < LINES_PER_PERIOD {
        period.written += 1;
        Some(std::mem::take(&mut period.suppressed))
    } else {
        period.suppressed += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_writes_a_few_lines_a_period_and_then_says_how_many_it_left_out() {
        let mut causes = HashMap::new();
        let start = Instant::now();
        for _ in 0..LINES_PER_PERIOD {
            assert_eq!(admit_at(&mut causes, "store", start), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(admit_at(&mut causes, "store", start), None);
        }
        assert_eq!(
            admit_at(&mut causes, "other", start),
            Some(0),
            "causes are apart"
        );
        assert_eq!(
            admit_at(&mut causes, "store", start + PERIOD),
            Some(1000),
            "the next period's first line counts what was left out"
        );
        assert_eq!(admit_at(&mut causes, "store", start + PERIOD), Some(0));
    }
}
