//! Budget refusals repeated at the edge. The control-plane's public endpoints (usage, tiers,
//! billing, Stripe's webhook) have budgets per tenant and per client address; past one it
//! answers 429 with `Retry-After` and a `RateLimit-Policy` naming the budget. A client that
//! keeps sending anyway would still cost Envoy an upstream request and the control-plane an
//! answer each time, on the same cores as every tenant's decisions. So on the routes listed in
//! `budget_refusals.routes`, the filter remembers such a refusal and repeats it from Envoy,
//! without going upstream, until its `Retry-After` has passed (at most `max_ttl`).
//!
//! A refusal is remembered for exactly who was refused, never more: the same client host
//! (IPv6 by its whole address, as the control-plane counts), the same credentials (the key
//! header and `Authorization`, whatever the filter's `bearer`), the same `Origin` and the same
//! listed route. Every one of those
//! requests would spend from the budget the control-plane found spent, so the edge refuses
//! nothing the control-plane would have let through, except that `Retry-After` is in whole
//! seconds: a budget that refills within the second (usage, 10 per second) is held shut up to
//! that second, which is what the client was told to wait anyway. Only a 429 carrying
//! `RateLimit-Policy` counts (a budget's refusal; a 429 passed on from Stripe carries none).
//!
//! With a hold (`held_replies.hold`, the default; see [`crate::held_replies`]) every repeated
//! refusal waits a moment before it is sent, uploads included: a held upload stalls once its
//! connection's buffer limit is reached, so its body costs a buffer, and its sender
//! reconnects once per hold. An upload whose refusal cannot be held (holds off, or the worker
//! holding its most) goes on to the control-plane, which reads or drains it before refusing:
//! answered at once, before its body has arrived, an upload makes Envoy close the connection
//! under it, and a client that reconnects and uploads again at once cost Envoy more than the
//! control-plane's refusal did (side by side under a flood of 1 MiB webhook bodies, the
//! legitimate tenant's p99 went from about 2x to 4.5x its no-attack p99).
//!
//! The repeated reply is the control-plane's but for its wording: 429 problem+json
//! `rate_limited` (its `detail` written by the edge, a `retry_after` member added, as in the
//! filter's other 429s), `Retry-After` counting down, the `RateLimit-Policy` it sent, and the
//! CORS headers it sent for that origin (the usage and tier routes grant allowed origins),
//! so a dashboard on another origin sees a 429, not a CORS failure.
//!
//! This spares the control-plane and Envoy's upstream work for a client that keeps asking;
//! it does not stop one that varies what the subject is made of (its `Origin`, random keys):
//! each variation goes upstream once, where the control-plane's budgets, per tenant and per
//! address whatever the key, still refuse it.
//!
//! The refusals live in proxy-wasm shared data like the deny cache: a fixed number of
//! direct-mapped slots (`tollgate.budget.<n>`), written without compare-and-swap (a refusal
//! overwritten by another only costs the next request a trip upstream), each holding a 64-bit
//! hash of who was refused, never the key or the address, and at most about 1.3 KB (the
//! repeated headers are at most five of 256 bytes).

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::invalid_keys::ClientId;
use crate::outcome::{Headers, LocalReply};
use crate::ratelimit_headers::ceil_seconds;
use crate::routes;
use crate::shared_data::{SharedData, slot_key};

/// The settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRefusals {
    /// Path prefixes of the control-plane's public routes (the first that matches a path is
    /// its route, for [`Subject`]).
    pub routes: Vec<String>,
    pub max_ttl_ms: u64,
    pub slots: u32,
}

/// Who a refusal was for: a hash of the route, the key, the origin and the client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject(u64);

/// The response headers repeated with a remembered refusal (an allowlist: nothing else of
/// the upstream's answer is kept).
const REPEATED: [&str; 5] = [
    "ratelimit-policy",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "vary",
];

/// The longest value of a repeated header; a longer one is not remembered (nor the refusal).
const MAX_VALUE_LEN: usize = 256;

/// A remembered refusal: until when, and the headers to repeat (names from [`REPEATED`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    subject: u64,
    until_ms: u64,
    headers: Vec<(&'static str, String)>,
}

impl Entry {
    /// `subject`, `until_ms` (little-endian u64 each), then per header its index in
    /// [`REPEATED`] (one byte), its length (two bytes) and its value.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16 + self.headers.len() * 32);
        bytes.extend_from_slice(&self.subject.to_le_bytes());
        bytes.extend_from_slice(&self.until_ms.to_le_bytes());
        for (name, value) in &self.headers {
            let Some(index) = REPEATED.iter().position(|n| n == name) else {
                continue;
            };
            let (Ok(index), Ok(len)) = (u8::try_from(index), u16::try_from(value.len())) else {
                continue;
            };
            bytes.push(index);
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(value.as_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Entry> {
        let number = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let (subject, until_ms) = (number(0)?, number(8)?);
        let mut headers = Vec::new();
        let mut rest = bytes.get(16..)?;
        while let [index, len_low, len_high, tail @ ..] = rest {
            let name = *REPEATED.get(usize::from(*index))?;
            let len = usize::from(u16::from_le_bytes([*len_low, *len_high]));
            let value = std::str::from_utf8(tail.get(..len)?).ok()?;
            headers.push((name, value.to_owned()));
            rest = tail.get(len..)?;
        }
        rest.is_empty().then_some(Entry {
            subject,
            until_ms,
            headers,
        })
    }
}

impl BudgetRefusals {
    /// The index of the listed route `path` is on, if any.
    pub fn route(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|prefix| routes::matches(prefix, path))
    }

    /// Who a request on route `route` is, by its raw key headers, `Origin` and address.
    pub fn subject(
        route: usize,
        key_headers: (Option<&[u8]>, Option<&[u8]>),
        origin: Option<&[u8]>,
        client: Option<ClientId>,
    ) -> Subject {
        let mut hasher = DefaultHasher::new();
        (route, key_headers, origin, client).hash(&mut hasher);
        Subject(hasher.finish())
    }

    fn slot_key(&self, subject: Subject) -> String {
        slot_key("budget", subject.0, self.slots)
    }

    /// The refusal to repeat to `subject` at `now_ms`, if one is remembered and not over.
    /// Reads one slot.
    pub fn lookup(
        &self,
        shared: &impl SharedData,
        subject: Subject,
        now_ms: u64,
    ) -> Option<LocalReply> {
        let (value, _) = shared.get(&self.slot_key(subject));
        let entry = Entry::decode(&value?)?;
        (entry.subject == subject.0 && now_ms < entry.until_ms)
            .then(|| repeated(entry.headers, entry.until_ms - now_ms))
    }

    /// Remembers the upstream's answer to `subject` if it is a budget's refusal (429 with
    /// `RateLimit-Policy` and a `Retry-After` in seconds, every repeated header short and
    /// printable). `headers` are the response's, names lower-case as Envoy gives them.
    /// Returns whether it was remembered.
    pub fn remember(
        &self,
        shared: &impl SharedData,
        subject: Subject,
        headers: &[(String, Vec<u8>)],
        now_ms: u64,
    ) -> bool {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        };
        if get(":status") != Some(b"429".as_slice()) || get("ratelimit-policy").is_none() {
            return false;
        }
        let Some(retry_after_ms) = get("retry-after")
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|seconds| seconds.saturating_mul(1000).min(self.max_ttl_ms))
            .filter(|ms| *ms > 0)
        else {
            return false;
        };
        let mut repeated = Vec::new();
        for name in REPEATED {
            let Some(value) = get(name) else { continue };
            let printable =
                value.len() <= MAX_VALUE_LEN && value.iter().all(|b| (0x20..0x7f).contains(b));
            let Some(value) = std::str::from_utf8(value).ok().filter(|_| printable) else {
                return false;
            };
            repeated.push((name, value.to_owned()));
        }
        let entry = Entry {
            subject: subject.0,
            until_ms: now_ms.saturating_add(retry_after_ms),
            headers: repeated,
        };
        shared.set(&self.slot_key(subject), &entry.encode(), None)
    }
}

/// The 429 repeated from the edge, `retry_after_ms` before the refusal ends.
fn repeated(headers: Headers, retry_after_ms: u64) -> LocalReply {
    let retry_after = ceil_seconds(retry_after_ms);
    // The budget's name is the policy's first item: `"usage";q=10;w=1`.
    let policy = headers
        .iter()
        .find(|(name, _)| *name == "ratelimit-policy")
        .and_then(|(_, value)| value.split(';').next())
        .unwrap_or("\"public\"")
        .to_owned();
    crate::outcome::over_budget(&policy, retry_after, headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::shared_data::FakeShared;

    fn refusals() -> BudgetRefusals {
        BudgetRefusals {
            routes: vec!["/api/v1/usage".to_owned(), "/api/v1/billing".to_owned()],
            max_ttl_ms: 2_000,
            slots: 64,
        }
    }

    fn client(address: &str) -> Option<ClientId> {
        ClientId::from_source_address(address.as_bytes())
    }

    fn answer(status: &str, extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        [(":status", status)]
            .iter()
            .chain(extra)
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn budget_refusal() -> Vec<(String, Vec<u8>)> {
        answer(
            "429",
            &[
                ("retry-after", "1"),
                ("ratelimit-policy", "\"usage\";q=10;w=1"),
                ("ratelimit", "\"usage\";r=0;t=1"),
                ("access-control-allow-origin", "https://dash.example"),
                ("vary", "origin"),
                ("content-type", "application/problem+json"),
                ("set-cookie", "never=repeated"),
            ],
        )
    }

    fn header<'r>(reply: &'r LocalReply, name: &str) -> Option<&'r str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_budget_refusal_is_repeated_to_the_same_subject_until_retry_after() {
        let (shared, refusals) = (FakeShared::default(), refusals());
        let key = (Some(b"tg_live_a".as_slice()), None);
        let origin = Some(b"https://dash.example".as_slice());
        let who = BudgetRefusals::subject(0, key, origin, client("203.0.113.7:4000"));
        assert_eq!(refusals.lookup(&shared, who, 10_000), None);
        assert!(refusals.remember(&shared, who, &budget_refusal(), 10_000));

        let reply = refusals.lookup(&shared, who, 10_400).expect("repeated");
        assert_eq!(reply.status, 429);
        assert_eq!(header(&reply, "retry-after"), Some("1"));
        assert_eq!(
            header(&reply, "ratelimit-policy"),
            Some("\"usage\";q=10;w=1")
        );
        assert_eq!(header(&reply, "ratelimit"), Some("\"usage\";r=0;t=1"));
        assert_eq!(
            header(&reply, "access-control-allow-origin"),
            Some("https://dash.example")
        );
        assert_eq!(header(&reply, "vary"), Some("origin"));
        assert_eq!(header(&reply, "set-cookie"), None, "only the allowlist");
        assert_eq!(
            header(&reply, "content-type"),
            Some("application/problem+json")
        );
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(body["status"], 429);

        assert_eq!(
            refusals.lookup(&shared, who, 11_000),
            None,
            "over once Retry-After has passed"
        );
    }

    #[test]
    fn a_refusal_covers_only_who_was_refused() {
        let (shared, refusals) = (FakeShared::default(), refusals());
        let key = (Some(b"tg_live_a".as_slice()), None);
        let address = client("203.0.113.7:4000");
        let who = BudgetRefusals::subject(0, key, None, address);
        assert!(refusals.remember(&shared, who, &budget_refusal(), 10_000));

        let same_address_other_port =
            BudgetRefusals::subject(0, key, None, client("203.0.113.7:5"));
        assert!(
            refusals
                .lookup(&shared, same_address_other_port, 10_001)
                .is_some()
        );
        for other in [
            BudgetRefusals::subject(1, key, None, address),
            BudgetRefusals::subject(0, (Some(b"tg_live_b"), None), None, address),
            BudgetRefusals::subject(0, (None, Some(b"Bearer tg_live_a")), None, address),
            BudgetRefusals::subject(0, key, Some(b"https://other.example"), address),
            BudgetRefusals::subject(0, key, None, client("203.0.113.8:4000")),
        ] {
            assert_eq!(refusals.lookup(&shared, other, 10_001), None);
        }
    }

    #[test]
    fn only_a_budgets_429_with_a_retry_after_is_remembered() {
        let (shared, refusals) = (FakeShared::default(), refusals());
        let who = BudgetRefusals::subject(0, (None, None), None, client("203.0.113.7:1"));
        let policy = ("ratelimit-policy", "\"public\";q=20;w=1");
        for not_a_budget_refusal in [
            answer("200", &[("retry-after", "1"), policy]),
            answer("503", &[("retry-after", "1"), policy]),
            // Stripe's own 429, passed on: no policy.
            answer("429", &[("retry-after", "1")]),
            answer("429", &[policy]),
            answer("429", &[("retry-after", "soon"), policy]),
            answer("429", &[("retry-after", "0"), policy]),
            answer(
                "429",
                &[("retry-after", "1"), ("ratelimit-policy", "\u{7f}")],
            ),
            answer(
                "429",
                &[("retry-after", "1"), ("ratelimit-policy", &"x".repeat(257))],
            ),
        ] {
            assert!(!refusals.remember(&shared, who, &not_a_budget_refusal, 0));
            assert_eq!(refusals.lookup(&shared, who, 1), None);
        }
    }

    #[test]
    fn a_long_retry_after_is_held_for_max_ttl_only() {
        let (shared, refusals) = (FakeShared::default(), refusals());
        let who = BudgetRefusals::subject(0, (None, None), None, client("203.0.113.7:1"));
        let refusal = answer(
            "429",
            &[
                ("retry-after", "3600"),
                ("ratelimit-policy", "\"public\";q=20;w=1"),
            ],
        );
        assert!(refusals.remember(&shared, who, &refusal, 0));
        let reply = refusals.lookup(&shared, who, 500).expect("repeated");
        assert_eq!(header(&reply, "retry-after"), Some("2"));
        assert_eq!(header(&reply, "ratelimit"), Some("\"public\";r=0;t=2"));
        assert_eq!(refusals.lookup(&shared, who, 2_000), None);
    }

    #[test]
    fn a_slot_taken_by_another_subject_or_garbled_repeats_nothing() {
        let refusals = BudgetRefusals {
            slots: 1,
            ..refusals()
        };
        let shared = FakeShared::default();
        let first = BudgetRefusals::subject(0, (None, None), None, client("203.0.113.7:1"));
        let second = BudgetRefusals::subject(0, (None, None), None, client("203.0.113.9:1"));
        assert!(refusals.remember(&shared, first, &budget_refusal(), 0));
        assert!(refusals.remember(&shared, second, &budget_refusal(), 0));
        assert_eq!(refusals.lookup(&shared, first, 1), None);
        assert!(refusals.lookup(&shared, second, 1).is_some());

        // The right subject and a live refusal, then a header that does not decode.
        let live = |tail: &[u8]| {
            let mut bytes = second.0.to_le_bytes().to_vec();
            bytes.extend_from_slice(&u64::MAX.to_le_bytes());
            bytes.extend_from_slice(tail);
            bytes
        };
        assert!(refusals.lookup(&shared, second, 1).is_some());
        shared.set("tollgate.budget.0", &live(&[]), None);
        assert!(refusals.lookup(&shared, second, 1).is_some(), "decodes");
        for garbled in [
            live(&[0]),
            live(&[9, 0, 0]),
            live(&[0, 5, 0, b'a']),
            live(&[0, 1, 0, 0xff]),
            live(&[0, 0, 0, 7]),
            vec![0; 15],
        ] {
            shared.set("tollgate.budget.0", &garbled, None);
            assert_eq!(refusals.lookup(&shared, second, 1), None, "{garbled:?}");
        }
    }

    #[test]
    fn routes_are_found_by_prefix_on_whole_segments() {
        let refusals = refusals();
        assert_eq!(refusals.route("/api/v1/usage?window=1"), Some(0));
        assert_eq!(refusals.route("/api/v1/billing/webhook"), Some(1));
        assert_eq!(refusals.route("/api/v1/usage2"), None);
        assert_eq!(refusals.route("/api/v1/ingest"), None);
    }
}
