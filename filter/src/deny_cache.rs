//! The edge deny cache: once the control-plane denies a key, the filter answers that key's
//! next requests with 429 itself, without a callout, until the earlier of the key's retry time
//! and a short maximum (1 s by default, so a tier upgrade takes effect quickly). An
//! over-quota flood then costs the control-plane about one callout per second per Envoy
//! instead of one per request.
//!
//! The cache lives in proxy-wasm shared data, which every worker's VM with the same `vm_id`
//! sees (so all of one Envoy's workers share it), and which never expires or shrinks by
//! itself. So it is direct-mapped: a fixed number of slots (`tollgate.deny.<n>`), a key's slot
//! chosen by its hash, a newer entry simply overwriting whatever was there. Memory is bounded
//! by the slot count however many keys flood, and expired entries need no sweeping: they are
//! ignored, then overwritten. A slot stores a 64-bit fingerprint of the key, never the key.
//! Writes use compare-and-swap, so two workers never interleave a half-written entry.
//!
//! It also owns what a callout's answer does to the cache ([`DenyCache::settle`]): a denial
//! is remembered, and an admission forgets the denial whose refresh lease the request held.
//! This module is pure: the host hands it a [`SharedData`] to read and write.

use std::hash::{DefaultHasher, Hash, Hasher};

use tollgate_protocol::{MonthlyQuota, Quota};

/// Shared data as the cache needs it; implemented over proxy-wasm host calls in `host`.
pub trait SharedData {
    /// The value and its CAS token, if the key was ever set.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Sets the value if the CAS token still matches (`None`: unconditionally). `false` when
    /// another writer came first.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The cache's settings: how many slots, and the longest a denial is served without asking
/// the control-plane again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyCache {
    pub slots: u32,
    pub max_ttl_ms: u64,
}

/// What the cache says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Denied: answer 429 without a callout.
    Denied(CachedDeny),
    /// This request holds the refresh lease of an expired denial: make the callout and report
    /// `edge_denied` (the cached denials not reported yet) in it; [`DenyCache::settle`] then
    /// forgets the denial if the request is admitted.
    Refresh { edge_denied: u64 },
    /// Nothing cached: make the callout.
    Miss,
}

/// A denial with times relative to now: served from the cache, or just answered by the
/// control-plane and about to be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDeny {
    pub quota: Quota,
    pub retry_after_ms: u64,
}

/// A request's place in the deny cache, kept while its callout is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTicket {
    /// Identifies the key and cost (the key itself is not kept).
    pub fingerprint: Fingerprint,
    /// Whether this request holds the refresh lease of an expired denial
    /// ([`Lookup::Refresh`]).
    pub refreshing: bool,
}

/// What a callout's answer teaches the deny cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// The key is denied at this cost: remember the denial.
    Denied(CachedDeny),
    /// The key is admitted at this cost.
    Admitted,
    /// Nothing the cache keeps: a shadow denial (let through), an unknown key, a suspended
    /// tenant, or no decision at all.
    Nothing,
}

struct Entry {
    fingerprint: u64,
    expires_at: u64,
    retry_at: u64,
    reset_at: u64,
    limit: u32,
    window_seconds: u32,
    remaining: u32,
    /// Requests answered from this entry and not yet reported to the control-plane.
    hits: u64,
    /// The monthly quota (0: none), units left in it, and when the month starts over.
    month_limit: u64,
    month_remaining: u64,
    month_reset_at: u64,
    policy: String,
}

impl Entry {
    fn denial(&self, now_ms: u64) -> CachedDeny {
        CachedDeny {
            quota: Quota {
                policy: self.policy.clone(),
                limit: self.limit,
                window_seconds: self.window_seconds,
                remaining: self.remaining,
                reset_ms: self.reset_at.saturating_sub(now_ms),
                monthly: (self.month_limit > 0).then(|| MonthlyQuota {
                    limit: self.month_limit,
                    remaining: self.month_remaining,
                    reset_ms: self.month_reset_at.saturating_sub(now_ms),
                }),
            },
            retry_after_ms: self.retry_at.saturating_sub(now_ms),
        }
    }

    /// Fixed little-endian numbers, then the policy name: written and read on every cached
    /// denial, so no text formatting or parsing.
    fn encode(&self) -> Vec<u8> {
        let numbers = [
            self.fingerprint,
            self.expires_at,
            self.retry_at,
            self.reset_at,
            u64::from(self.limit),
            u64::from(self.window_seconds),
            u64::from(self.remaining),
            self.hits,
            self.month_limit,
            self.month_remaining,
            self.month_reset_at,
        ];
        let mut bytes = Vec::with_capacity(ENCODED_NUMBERS * 8 + self.policy.len());
        for number in numbers {
            bytes.extend_from_slice(&number.to_le_bytes());
        }
        bytes.extend_from_slice(self.policy.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Entry> {
        let (numbers, policy) = bytes.split_at_checked(ENCODED_NUMBERS * 8)?;
        let mut numbers = numbers
            .chunks_exact(8)
            .map(|chunk| chunk.try_into().ok().map(u64::from_le_bytes));
        let mut number = || numbers.next().flatten();
        let (fingerprint, expires_at, retry_at, reset_at) =
            (number()?, number()?, number()?, number()?);
        let (limit, window_seconds, remaining, hits) = (number()?, number()?, number()?, number()?);
        let (month_limit, month_remaining, month_reset_at) = (number()?, number()?, number()?);
        Some(Entry {
            fingerprint,
            expires_at,
            retry_at,
            reset_at,
            limit: u32::try_from(limit).ok()?,
            window_seconds: u32::try_from(window_seconds).ok()?,
            remaining: u32::try_from(remaining).ok()?,
            hits,
            month_limit,
            month_remaining,
            month_reset_at,
            policy: std::str::from_utf8(policy).ok()?.to_owned(),
        })
    }
}

/// How many numbers an encoded entry starts with.
const ENCODED_NUMBERS: usize = 11;

/// How many times a slot's read-modify-write is tried when another worker wrote the slot in
/// between; giving up only costs a callout.
const CAS_ATTEMPTS: usize = 4;

/// The slot's entry if it belongs to `fingerprint` and its denial may still hold (`now_ms`
/// zero: whatever its age).
fn read(
    shared: &impl SharedData,
    slot: &str,
    fingerprint: u64,
    now_ms: u64,
) -> Option<(Entry, Option<u32>)> {
    let (value, cas) = shared.get(slot);
    let entry = Entry::decode(&value?)?;
    (entry.fingerprint == fingerprint && (now_ms == 0 || entry.retry_at > now_ms))
        .then_some((entry, cas))
}

/// Identifies a (key, cost) pair; computed once per request, and all the cache keeps of the
/// key. The cost is part of it because a denial is only certain for requests of the same
/// cost: a cheaper request may still fit the room a dearer one did not, and a dearer one may
/// need to wait longer than the cached retry time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn of(api_key: &str, cost: u32) -> Self {
        // SipHash with fixed keys: the same in every worker's VM, unlike a randomly keyed
        // `HashMap` hasher.
        let mut hasher = DefaultHasher::new();
        api_key.hash(&mut hasher);
        cost.hash(&mut hasher);
        Self(hasher.finish())
    }
}

impl DenyCache {
    fn slot_key(&self, fingerprint: u64) -> String {
        format!(
            "tollgate.deny.{}",
            fingerprint % u64::from(self.slots.max(1))
        )
    }

    /// What the cache says about a request of this key at this cost at `now_ms`:
    /// [`Lookup::Denied`] while a denial is in force (counted as not yet reported), else
    /// [`Lookup::Miss`].
    ///
    /// When an entry has expired but the denial may still hold (before its retry time), the
    /// first request to notice claims the refresh: it extends the entry by `lease_ms` with a
    /// compare-and-swap and gets [`Lookup::Refresh`], so it alone makes the callout, while
    /// every other request, in any worker, is still answered from the cache. Without this,
    /// every request arriving while the refresh callout is in flight would make a callout of
    /// its own.
    pub fn lookup(
        &self,
        shared: &impl SharedData,
        fingerprint: Fingerprint,
        now_ms: u64,
        lease_ms: u64,
    ) -> Lookup {
        let Fingerprint(fingerprint) = fingerprint;
        let slot = self.slot_key(fingerprint);
        // Compare-and-swap can lose to another worker writing the same slot; a few rounds
        // settle it, and giving up only costs a callout.
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut entry, cas)) = read(shared, &slot, fingerprint, now_ms) else {
                return Lookup::Miss;
            };
            let lookup = if entry.expires_at <= now_ms {
                entry.expires_at = now_ms + lease_ms;
                Lookup::Refresh {
                    edge_denied: std::mem::take(&mut entry.hits),
                }
            } else {
                entry.hits += 1;
                Lookup::Denied(entry.denial(now_ms))
            };
            if shared.set(&slot, &entry.encode(), cas) {
                return lookup;
            }
        }
        Lookup::Miss
    }

    /// Takes the count of cached denials of this key at this cost that the control-plane has
    /// not heard of, leaving zero (for a usage request, which reports them).
    pub fn take_unreported(&self, shared: &impl SharedData, fingerprint: Fingerprint) -> u64 {
        let Fingerprint(fingerprint) = fingerprint;
        let slot = self.slot_key(fingerprint);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut entry, cas)) = read(shared, &slot, fingerprint, 0) else {
                return 0;
            };
            let hits = std::mem::take(&mut entry.hits);
            if hits == 0 || shared.set(&slot, &entry.encode(), cas) {
                return hits;
            }
        }
        0
    }

    /// Carries out what a request's answer taught the cache. The clock (a host call in Envoy)
    /// is read only when a denial is stored.
    ///
    /// An admission forgets the key's denial only when this request held its refresh lease:
    /// the lease would otherwise keep answering 429 to everyone else although the denial no
    /// longer holds. A request that missed found no denial of its key; one cached since came
    /// from another callout, and stays.
    pub fn settle(
        &self,
        shared: &impl SharedData,
        ticket: CacheTicket,
        learned: &Learned,
        now_ms: impl FnOnce() -> u64,
    ) {
        match learned {
            Learned::Denied(denial) => {
                self.remember(
                    shared,
                    ticket.fingerprint,
                    now_ms(),
                    &denial.quota,
                    denial.retry_after_ms,
                );
            }
            Learned::Admitted if ticket.refreshing => self.forget(shared, ticket.fingerprint),
            Learned::Admitted | Learned::Nothing => {}
        }
    }

    /// Drops the cached denial of this key at this cost (the control-plane admitted it).
    fn forget(&self, shared: &impl SharedData, fingerprint: Fingerprint) {
        let Fingerprint(fingerprint) = fingerprint;
        let slot = self.slot_key(fingerprint);
        let (value, cas) = shared.get(&slot);
        if value
            .and_then(|v| Entry::decode(&v))
            .is_some_and(|e| e.fingerprint == fingerprint)
        {
            shared.set(&slot, b"", cas);
        }
    }

    /// Remembers a denial decided at `now_ms`, keeping the count of cached denials of the
    /// same key not yet reported (another callout's denial may land after the cache already
    /// answered some requests). Returns whether it was stored.
    fn remember(
        &self,
        shared: &impl SharedData,
        fingerprint: Fingerprint,
        now_ms: u64,
        quota: &Quota,
        retry_after_ms: u64,
    ) -> bool {
        let Fingerprint(fingerprint) = fingerprint;
        let key = self.slot_key(fingerprint);
        let mut entry = Entry {
            fingerprint,
            expires_at: now_ms + retry_after_ms.min(self.max_ttl_ms),
            retry_at: now_ms + retry_after_ms,
            reset_at: now_ms + quota.reset_ms,
            limit: quota.limit,
            window_seconds: quota.window_seconds,
            remaining: quota.remaining,
            hits: 0,
            month_limit: quota.monthly.map_or(0, |m| m.limit),
            month_remaining: quota.monthly.map_or(0, |m| m.remaining),
            month_reset_at: quota.monthly.map_or(0, |m| now_ms + m.reset_ms),
            policy: quota.policy.clone(),
        };
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = shared.get(&key);
            entry.hits = value
                .and_then(|v| Entry::decode(&v))
                .filter(|old| old.fingerprint == fingerprint)
                .map_or(0, |old| old.hits);
            if shared.set(&key, &entry.encode(), cas) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::RefCell;
    use std::collections::HashMap;

    use tollgate_protocol::Answer;

    use crate::config::FailureMode;
    use crate::outcome::{CalloutFailure, on_answer};

    /// Shared data as Envoy keeps it: values with a CAS counter bumped on every write.
    #[derive(Default)]
    struct FakeShared(RefCell<HashMap<String, (Vec<u8>, u32)>>);

    impl SharedData for FakeShared {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.0.borrow().get(key) {
                Some((value, cas)) => (Some(value.clone()), Some(*cas)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut map = self.0.borrow_mut();
            let current = map.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != current {
                return false;
            }
            map.insert(key.to_owned(), (value.to_vec(), current.unwrap_or(0) + 1));
            true
        }
    }

    fn quota() -> Quota {
        Quota {
            policy: "standard".into(),
            limit: 60,
            window_seconds: 60,
            remaining: 0,
            reset_ms: 5_000,
            monthly: None,
        }
    }

    const CACHE: DenyCache = DenyCache {
        slots: 64,
        max_ttl_ms: 1_000,
    };

    fn fingerprint(key: &str) -> Fingerprint {
        Fingerprint::of(key, 1)
    }

    /// The ticket of a request of `key` at cost 1; `refreshing` when it holds the lease.
    fn ticket(key: &str, refreshing: bool) -> CacheTicket {
        CacheTicket {
            fingerprint: fingerprint(key),
            refreshing,
        }
    }

    /// What the cache learns from `answer`, as the filter decides it.
    fn learned(answer: Result<Answer, CalloutFailure>) -> Learned {
        on_answer(FailureMode::Closed, answer).learned
    }

    fn deny(retry_after_ms: u64) -> Result<Answer, CalloutFailure> {
        Ok(Answer::Deny {
            tenant: "tn_1".into(),
            quota: quota(),
            retry_after_ms,
        })
    }

    fn allow() -> Result<Answer, CalloutFailure> {
        Ok(Answer::Allow {
            tenant: "tn_1".into(),
            quota: Quota {
                remaining: 59,
                ..quota()
            },
        })
    }

    #[test]
    fn a_denial_answered_is_remembered_served_and_renewed_by_its_refresh() {
        let shared = FakeShared::default();
        CACHE.settle(
            &shared,
            ticket("tg_a", false),
            &learned(deny(5_000)),
            || 10_000,
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 10_400, 100),
            Lookup::Denied(CachedDeny {
                quota: Quota {
                    reset_ms: 4_600,
                    ..quota()
                },
                retry_after_ms: 4_600,
            }),
            "served without a callout, times counting down"
        );

        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 11_000, 100),
            Lookup::Refresh { edge_denied: 1 }
        );
        CACHE.settle(&shared, ticket("tg_a", true), &learned(deny(3_900)), || {
            11_100
        });
        let Lookup::Denied(renewed) = CACHE.lookup(&shared, fingerprint("tg_a"), 11_200, 100)
        else {
            panic!("the refresh's denial is served once the lease is over");
        };
        assert_eq!(renewed.retry_after_ms, 3_800);
    }

    #[test]
    fn an_admission_on_the_refresh_lease_forgets_the_denial() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 }
        );
        CACHE.settle(&shared, ticket("tg_a", true), &learned(allow()), || 1_050);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_060, 100),
            Lookup::Miss,
            "within the lease, yet no longer answered with 429"
        );
    }

    #[test]
    fn an_admission_without_the_lease_leaves_a_denial_alone() {
        let shared = FakeShared::default();
        // Another callout for the same key, sent at the same time, came back denied first.
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        let before = shared.0.borrow().clone();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(allow()), || 10);
        assert_eq!(*shared.0.borrow(), before, "nothing written");
        assert!(matches!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 20, 100),
            Lookup::Denied(_)
        ));
    }

    #[test]
    fn an_admission_never_forgets_another_keys_denial_in_its_slot() {
        let one_slot = DenyCache {
            slots: 1,
            max_ttl_ms: 1_000,
        };
        let shared = FakeShared::default();
        one_slot.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        assert_eq!(
            one_slot.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 }
        );
        // While tg_a's refresh is in flight, tg_b's denial takes the slot.
        one_slot.settle(
            &shared,
            ticket("tg_b", false),
            &learned(deny(5_000)),
            || 1_010,
        );
        one_slot.settle(&shared, ticket("tg_a", true), &learned(allow()), || 1_050);
        assert!(matches!(
            one_slot.lookup(&shared, fingerprint("tg_b"), 1_060, 100),
            Lookup::Denied(_)
        ));
    }

    #[test]
    fn failures_and_other_answers_cache_nothing() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 }
        );
        let before = shared.0.borrow().clone();
        let answers = [
            Err(CalloutFailure::Timeout),
            Err(CalloutFailure::Host("BadArgument".into())),
            Ok(Answer::ShadowDeny {
                tenant: "tn_1".into(),
                quota: quota(),
                retry_after_ms: 5_000,
            }),
            Ok(Answer::UnknownKey),
            Ok(Answer::Suspended {
                tenant: "tn_1".into(),
            }),
        ];
        for answer in answers {
            for mode in [FailureMode::Closed, FailureMode::Open] {
                let learned = on_answer(mode, answer.clone()).learned;
                for ticket in [ticket("tg_a", true), ticket("tg_new", false)] {
                    CACHE.settle(&shared, ticket, &learned, || {
                        panic!("the clock is read only to store a denial")
                    });
                }
            }
        }
        assert_eq!(
            *shared.0.borrow(),
            before,
            "neither forgotten, renewed nor added"
        );
    }

    #[test]
    fn a_denial_is_served_until_the_maximum_ttl_with_times_counting_down() {
        let shared = FakeShared::default();
        assert!(CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 10_000, &quota(), 5_000));
        let Lookup::Denied(hit) = CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_400, 100)
        else {
            panic!("cached");
        };
        assert_eq!(hit.retry_after_ms, 4_600);
        assert_eq!(hit.quota.reset_ms, 4_600);
        assert_eq!(hit.quota.policy, "standard");
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_999, 100),
            Lookup::Denied(_)
        ));
        assert!(
            !matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 11_000, 100),
                Lookup::Denied(_)
            ),
            "expired after 1 s: this request refreshes"
        );
    }

    #[test]
    fn only_one_request_refreshes_an_expired_entry() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &quota(), 5_000);
        assert_eq!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 },
            "the first one refreshes"
        );
        for now in [1_000, 1_050, 1_099] {
            assert!(
                matches!(
                    CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                    Lookup::Denied(_)
                ),
                "covered by the lease at {now}"
            );
        }
        assert_eq!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 1_100, 100),
            Lookup::Refresh { edge_denied: 3 },
            "the lease ran out: refresh again, reporting the three it answered meanwhile"
        );
    }

    #[test]
    fn cached_denials_are_counted_until_reported() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &quota(), 5_000);
        for now in 1..=7 {
            assert!(matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                Lookup::Denied(_)
            ));
        }
        assert_eq!(
            CACHE.take_unreported(&shared, Fingerprint::of("tg_a", 1)),
            7,
            "a usage request takes them"
        );
        assert_eq!(
            CACHE.take_unreported(&shared, Fingerprint::of("tg_a", 1)),
            0,
            "once"
        );
        for now in 10..13 {
            assert!(matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                Lookup::Denied(_)
            ));
        }
        assert_eq!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 1_000, 100),
            Lookup::Refresh { edge_denied: 3 },
            "the refresh callout reports the rest"
        );
        assert_eq!(
            CACHE.take_unreported(&shared, Fingerprint::of("tg_a", 1)),
            0
        );
        assert_eq!(
            CACHE.take_unreported(&shared, Fingerprint::of("tg_other", 1)),
            0
        );
    }

    #[test]
    fn a_later_denial_keeps_the_unreported_count() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &quota(), 5_000);
        for now in 1..=3 {
            assert!(matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                Lookup::Denied(_)
            ));
        }
        // A callout that left before the first denial was cached comes back denied too.
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 4, &quota(), 5_000);
        assert_eq!(
            CACHE.take_unreported(&shared, Fingerprint::of("tg_a", 1)),
            3
        );
    }

    #[test]
    fn a_denial_expires_at_its_retry_time_when_that_is_sooner() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 10_000, &quota(), 300);
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_299, 100),
            Lookup::Denied(_)
        ));
        assert!(!matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_300, 100),
            Lookup::Denied(_)
        ));
    }

    #[test]
    fn other_keys_miss_and_the_key_itself_is_never_stored() {
        let shared = FakeShared::default();
        CACHE.remember(
            &shared,
            Fingerprint::of("tg_secret_key", 5),
            0,
            &quota(),
            5_000,
        );
        assert!(!matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_other", 5), 1, 100),
            Lookup::Denied(_)
        ));
        assert!(
            !matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_secret_key", 1), 1, 100),
                Lookup::Denied(_)
            ),
            "a cheaper request may fit"
        );
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_secret_key", 5), 1, 100),
            Lookup::Denied(_)
        ));
        let stored: Vec<u8> = shared
            .0
            .borrow()
            .values()
            .flat_map(|(v, _)| v.clone())
            .collect();
        assert!(!String::from_utf8_lossy(&stored).contains("tg_secret_key"));
    }

    #[test]
    fn ten_thousand_denied_keys_stay_within_the_slots() {
        let shared = FakeShared::default();
        for i in 0..10_000 {
            CACHE.remember(
                &shared,
                Fingerprint::of(&format!("tg_{i}"), 1),
                0,
                &quota(),
                5_000,
            );
        }
        assert!(
            shared.0.borrow().len() <= 64,
            "{} entries",
            shared.0.borrow().len()
        );
        // The newest entry of each slot is served.
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_9999", 1), 1, 100),
            Lookup::Denied(_)
        ));
    }

    #[test]
    fn a_lost_compare_and_swap_is_reported() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &quota(), 5_000);
        let key = CACHE.slot_key(Fingerprint::of("tg_a", 1).0);
        let (_, cas) = shared.get(&key);
        assert!(shared.set(&key, b"other writer", cas));
        assert!(
            !shared.set(&key, b"stale writer", cas),
            "a stale token loses"
        );
        assert!(
            !matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 1, 100),
                Lookup::Denied(_)
            ),
            "garbage decodes to a miss"
        );
    }

    #[test]
    fn entries_survive_encoding_and_garbage_is_no_entry() {
        let entry = Entry {
            fingerprint: u64::MAX,
            expires_at: 1,
            retry_at: 2,
            reset_at: 3,
            limit: u32::MAX,
            window_seconds: 60,
            remaining: 0,
            hits: 7,
            month_limit: 100_000,
            month_remaining: 5,
            month_reset_at: 9,
            policy: "prö".to_owned(),
        };
        let bytes = entry.encode();
        let decoded = Entry::decode(&bytes).expect("round trip");
        assert_eq!(decoded.encode(), bytes);
        assert_eq!((decoded.policy.as_str(), decoded.hits), ("prö", 7));
        assert!(
            Entry::decode(&bytes[..ENCODED_NUMBERS * 8 - 1]).is_none(),
            "too short"
        );
        assert!(Entry::decode(b"").is_none());
        let mut bad_policy = bytes[..ENCODED_NUMBERS * 8].to_vec();
        bad_policy.push(0xff);
        assert!(
            Entry::decode(&bad_policy).is_none(),
            "a policy that is not UTF-8"
        );
    }
}
