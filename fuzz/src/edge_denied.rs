//! The `x-tollgate-edge-denied` count a request reports, from the header to the counters it
//! is added to: decisions (`/v1/decision`) and usage (`/api/v1/usage`, where a client may
//! set it itself), on the in-memory window store.
//!
//! Input: one operation per line. The line's first byte: bit 0, usage (else a decision);
//! bits 1-2, the decision's cost - 1; bits 3-6, how far the clock moves first, in half
//! seconds; bit 7, sixteen days more. The rest of the line is the header's raw value
//! (nothing: no header). Properties: the count read is the header's number, capped at
//! [`MAX_EDGE_DENIED`], or the header is refused (a decision: 400; usage: counted as none);
//! no count, however large or often repeated, makes a counter panic or wrap; the window and
//! the month never admit more than their limits, and usage counts at least the denials just
//! reported.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::HeaderValue;
use tollgate_control_plane::clock::ManualClock;
use tollgate_control_plane::window::{HISTORY_MINUTES, Limit, MemoryWindows, WindowStore};
use tollgate_protocol::{MAX_EDGE_DENIED, ProtocolError, edge_denied, header};

const TENANT: &str = "tn_fuzz";
/// 2026-01-31T23:59:00Z: a month ends within the first minute.
const START_MS: u64 = 1_769_903_940_000;
const LIMIT: Limit = Limit {
    limit: 5,
    window: Duration::from_secs(2),
    monthly: Some(40),
};

pub fn run(data: &[u8]) {
    let clock = ManualClock::new(START_MS);
    let windows = MemoryWindows::new(Arc::new(clock.clone()));
    for line in crate::input::lines(data) {
        let Some((&op, value)) = line.split_first() else {
            continue;
        };
        let advance =
            u64::from((op >> 3) & 0x0f) * 500 + if op & 0x80 != 0 { 16 * 86_400_000 } else { 0 };
        clock.advance(Duration::from_millis(advance));

        // As the control-plane's handlers read it: `HeaderValue::to_str`, then the protocol.
        let value = (!value.is_empty()).then(|| HeaderValue::from_bytes(value));
        let Some(value) = value.map(|v| v.ok()) else {
            // No header.
            step(&windows, op, Ok(0));
            continue;
        };
        // A value HTTP cannot carry never reaches a handler.
        let Some(value) = value else { continue };
        let text = value.to_str().ok();
        let lookup = |name: &'static str| (name == header::EDGE_DENIED).then_some(text).flatten();
        let reported = edge_denied(&lookup);
        if let Some(text) = text {
            let expected = text
                .parse::<u64>()
                .map(|n| n.min(MAX_EDGE_DENIED))
                .map_err(|_| ProtocolError::InvalidHeader(header::EDGE_DENIED));
            assert_eq!(reported, expected, "{text:?}");
        } else {
            assert_eq!(reported, Ok(0), "an unreadable header counts as absent");
        }
        step(&windows, op, reported);
    }
}

fn step(windows: &MemoryWindows, op: u8, reported: Result<u64, ProtocolError>) {
    if op & 1 == 1 {
        // `/api/v1/usage`: a garbled count is no count.
        let reported = reported.unwrap_or(0);
        let usage = ready(windows.usage(TENANT, LIMIT, reported));
        assert!(usage.used <= LIMIT.limit, "{usage:?}");
        assert!(usage.denied >= reported, "{usage:?} after {reported}");
        assert!(LIMIT.monthly.is_none_or(|m| usage.month_to_date <= m));
        assert_eq!(usage.history.len() as u64, HISTORY_MINUTES);
        let this_minute = usage.history.last().map_or(0, |m| m.denied);
        assert!(this_minute >= reported, "{usage:?} after {reported}");
    } else {
        // `/v1/decision`: a garbled count is a 400, nothing is counted.
        let Ok(reported) = reported else { return };
        let cost = u32::from((op >> 1) & 3) + 1;
        let decision = ready(windows.decide(TENANT, LIMIT, cost, reported));
        assert!(decision.remaining <= LIMIT.limit, "{decision:?}");
        if let (Some(month), Some(limit)) = (decision.month, LIMIT.monthly) {
            assert!(month.remaining <= limit, "{decision:?}");
        }
        if !decision.admitted {
            assert!(decision.retry_after_ms > 0, "{decision:?}");
        }
    }
}

/// The in-memory store answers without waiting: one poll gives the answer.
fn ready<T, E: std::fmt::Debug>(future: impl Future<Output = Result<T, E>>) -> T {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(result) => result.unwrap_or_else(|e| panic!("store error: {e:?}")),
        Poll::Pending => panic!("the in-memory store waited"),
    }
}
