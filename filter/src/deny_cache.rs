//! The edge deny cache: once the control-plane refuses a key, the filter answers that key's
//! next requests itself, without a callout, for a short while. It keeps three refusals:
//! over quota (429, until the earlier of the key's retry time and `max_ttl`), unknown key
//! (401) and suspended tenant (403), the last two for `max_ttl` (1 s by default, so a tier
//! upgrade, a resumed tenant or a revoked key takes effect quickly). A flood of one refused
//! key then costs the control-plane about one callout per `max_ttl` per Envoy instead of one
//! per request.
//!
//! The cache lives in proxy-wasm shared data, which every worker's VM with the same `vm_id`
//! sees (so all of one Envoy's workers share it), and which never expires or shrinks by
//! itself. So it is direct-mapped: a fixed number of slots (`tollgate.deny.<n>`), a key's slot
//! chosen by its hash, a newer entry simply overwriting whatever was there. Memory is bounded
//! by the slot count however many keys flood, and expired entries need no sweeping: they are
//! ignored, then overwritten. A slot stores a 64-bit fingerprint of the key, never the key.
//! Writes use compare-and-swap, so two workers never interleave a half-written entry.
//!
//! It also owns what a callout's answer does to the cache ([`DenyCache::settle`]): a refusal
//! is remembered, and an admission forgets the refusal whose refresh lease the request held.
//! This module is pure: the host hands it a [`SharedData`] to read and write.

use std::hash::{DefaultHasher, Hash, Hasher};

use tollgate_protocol::{MonthlyQuota, Quota};

use crate::shared_data::{CAS_ATTEMPTS, SharedData, slot_key};

/// The cache's settings: how many slots, and the longest a refusal is served without asking
/// the control-plane again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyCache {
    pub slots: u32,
    pub max_ttl_ms: u64,
}

/// A refusal the cache keeps, and serves with the same reply as the callout's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over quota: 429.
    Denied(CachedDeny),
    /// The key belongs to no tenant (never did, or was revoked): 401.
    UnknownKey,
    /// The key's tenant is suspended: 403.
    Suspended,
}

/// What the cache says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Refused: answer without a callout.
    Hit(Refusal),
    /// This request holds the refresh lease of an expired entry: make the callout and report
    /// `edge_denied` (the cached denials not reported yet) in it; [`DenyCache::settle`] then
    /// forgets the entry if the request is admitted.
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
    /// Whether this request holds the refresh lease of an expired entry
    /// ([`Lookup::Refresh`]).
    pub refreshing: bool,
}

/// What a callout's answer teaches the deny cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// The key is refused at this cost: remember it.
    Refused(Refusal),
    /// The key's request goes through at this cost (admitted, or let through by a shadow-mode
    /// tier): nothing cached may refuse it any more.
    Admitted,
    /// Nothing the cache keeps: no decision at all.
    Nothing,
}

/// What kind of refusal an entry holds; stored as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Denied = 0,
    UnknownKey = 1,
    Suspended = 2,
}

impl Kind {
    fn from_number(number: u64) -> Option<Kind> {
        match number {
            0 => Some(Kind::Denied),
            1 => Some(Kind::UnknownKey),
            2 => Some(Kind::Suspended),
            _ => None,
        }
    }
}

struct Entry {
    fingerprint: u64,
    kind: Kind,
    expires_at: u64,
    /// When the refusal may stop holding (a denial's retry time); `u64::MAX` for unknown keys
    /// and suspended tenants, which have no known end.
    retry_at: u64,
    reset_at: u64,
    limit: u32,
    window_seconds: u32,
    remaining: u32,
    /// Denials answered from the cache for this key and cost and not yet reported to the
    /// control-plane. Only denials count: an unknown key or a suspended tenant has no quota to
    /// charge them to.
    hits: u64,
    /// The monthly quota (0: none), units left in it, and when the month starts over.
    month_limit: u64,
    month_remaining: u64,
    month_reset_at: u64,
    policy: String,
}

impl Entry {
    fn refusal(&self, now_ms: u64) -> Refusal {
        match self.kind {
            Kind::Denied => Refusal::Denied(self.denial(now_ms)),
            Kind::UnknownKey => Refusal::UnknownKey,
            Kind::Suspended => Refusal::Suspended,
        }
    }

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
    /// refusal, so no text formatting or parsing.
    fn encode(&self) -> Vec<u8> {
        let numbers = [
            self.fingerprint,
            self.kind as u64,
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
        let (fingerprint, kind) = (number()?, Kind::from_number(number()?)?);
        let (expires_at, retry_at, reset_at) = (number()?, number()?, number()?);
        let (limit, window_seconds, remaining, hits) = (number()?, number()?, number()?, number()?);
        let (month_limit, month_remaining, month_reset_at) = (number()?, number()?, number()?);
        Some(Entry {
            fingerprint,
            kind,
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
const ENCODED_NUMBERS: usize = 12;

/// The slot's entry if it belongs to `fingerprint` and its refusal may still hold (`now_ms`
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
/// need to wait longer than the cached retry time. An unknown key or a suspended tenant is
/// refused whatever the cost, but is cached per (key, cost) too, so that one lookup serves
/// every kind of refusal: a key flooding routes of two costs makes two callouts per `max_ttl`
/// instead of one.
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
        slot_key("deny", fingerprint, self.slots)
    }

    /// What the cache says about a request of this key at this cost at `now_ms`:
    /// [`Lookup::Hit`] while a refusal is in force (a denial counted as not yet reported),
    /// else [`Lookup::Miss`].
    ///
    /// When an entry has expired but its refusal may still hold (a denial before its retry
    /// time; an unknown key or a suspended tenant always), the first request to notice claims
    /// the refresh: it extends the entry by `lease_ms` with a compare-and-swap and gets
    /// [`Lookup::Refresh`], so it alone makes the callout, while every other request, in any
    /// worker, is still answered from the cache. Without this, every request arriving while
    /// the refresh callout is in flight would make a callout of its own.
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
                entry.expires_at = now_ms.saturating_add(lease_ms);
                Lookup::Refresh {
                    edge_denied: std::mem::take(&mut entry.hits),
                }
            } else if entry.kind == Kind::Denied {
                entry.hits = entry.hits.saturating_add(1);
                Lookup::Hit(entry.refusal(now_ms))
            } else {
                // Nothing to count: served without a write.
                return Lookup::Hit(entry.refusal(now_ms));
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
    /// is read only when a refusal is stored.
    ///
    /// An admission forgets the key's entry only when this request held its refresh lease:
    /// the lease would otherwise keep refusing everyone else although the refusal no longer
    /// holds (the tenant upgraded or was resumed). A request that missed found no entry of
    /// its key; one cached since came from another callout, and stays.
    pub fn settle(
        &self,
        shared: &impl SharedData,
        ticket: CacheTicket,
        learned: &Learned,
        now_ms: impl FnOnce() -> u64,
    ) {
        match learned {
            Learned::Refused(refusal) => {
                self.remember(shared, ticket.fingerprint, now_ms(), refusal);
            }
            Learned::Admitted if ticket.refreshing => self.forget(shared, ticket.fingerprint),
            Learned::Admitted | Learned::Nothing => {}
        }
    }

    /// Drops the cached refusal of this key at this cost (the control-plane admitted it).
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

    /// Drops the cached over-quota denial of this key at this cost, if that is what its slot
    /// holds (an unknown key or a suspended tenant stays refused): the filter has just stored
    /// a lease of the key, whose requests have room reserved in the window. The denials the
    /// entry answered and had not reported yet go uncounted; a lease is stored moments after
    /// a concurrent callout's denial, so they are few.
    pub fn forget_denial(&self, shared: &impl SharedData, fingerprint: Fingerprint) {
        let Fingerprint(fingerprint) = fingerprint;
        let slot = self.slot_key(fingerprint);
        let (value, cas) = shared.get(&slot);
        if value
            .and_then(|v| Entry::decode(&v))
            .is_some_and(|e| e.fingerprint == fingerprint && e.kind == Kind::Denied)
        {
            shared.set(&slot, b"", cas);
        }
    }

    /// Remembers a refusal decided at `now_ms`, keeping the count of cached denials of the
    /// same key not yet reported (another callout's answer may land after the cache already
    /// answered some requests, and a suspension may follow a denial). Returns whether it was
    /// stored.
    fn remember(
        &self,
        shared: &impl SharedData,
        fingerprint: Fingerprint,
        now_ms: u64,
        refusal: &Refusal,
    ) -> bool {
        let Fingerprint(fingerprint) = fingerprint;
        let key = self.slot_key(fingerprint);
        let mut entry = match refusal {
            Refusal::Denied(denial) => {
                let quota = &denial.quota;
                Entry {
                    fingerprint,
                    kind: Kind::Denied,
                    expires_at: now_ms.saturating_add(denial.retry_after_ms.min(self.max_ttl_ms)),
                    retry_at: now_ms.saturating_add(denial.retry_after_ms),
                    reset_at: now_ms.saturating_add(quota.reset_ms),
                    limit: quota.limit,
                    window_seconds: quota.window_seconds,
                    remaining: quota.remaining,
                    hits: 0,
                    month_limit: quota.monthly.map_or(0, |m| m.limit),
                    month_remaining: quota.monthly.map_or(0, |m| m.remaining),
                    month_reset_at: quota
                        .monthly
                        .map_or(0, |m| now_ms.saturating_add(m.reset_ms)),
                    policy: quota.policy.clone(),
                }
            }
            Refusal::UnknownKey | Refusal::Suspended => Entry {
                fingerprint,
                kind: if *refusal == Refusal::UnknownKey {
                    Kind::UnknownKey
                } else {
                    Kind::Suspended
                },
                expires_at: now_ms.saturating_add(self.max_ttl_ms),
                retry_at: u64::MAX,
                reset_at: 0,
                limit: 0,
                window_seconds: 0,
                remaining: 0,
                hits: 0,
                month_limit: 0,
                month_remaining: 0,
                month_reset_at: 0,
                policy: String::new(),
            },
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

    use tollgate_protocol::{Answer, ProtocolError};

    use crate::config::FailureMode;
    use crate::outcome::{CalloutFailure, on_answer};
    use crate::shared_data::FakeShared;

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

    /// A denial of a request at cost 1, as the control-plane answers it.
    fn denial(retry_after_ms: u64) -> Refusal {
        Refusal::Denied(CachedDeny {
            quota: quota(),
            retry_after_ms,
        })
    }

    fn suspended() -> Result<Answer, CalloutFailure> {
        Ok(Answer::Suspended {
            tenant: "tn_1".into(),
        })
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
            lease: None,
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
            Lookup::Hit(Refusal::Denied(CachedDeny {
                quota: Quota {
                    reset_ms: 4_600,
                    ..quota()
                },
                retry_after_ms: 4_600,
            })),
            "served without a callout, times counting down"
        );

        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 11_000, 100),
            Lookup::Refresh { edge_denied: 1 }
        );
        CACHE.settle(&shared, ticket("tg_a", true), &learned(deny(3_900)), || {
            11_100
        });
        let Lookup::Hit(Refusal::Denied(renewed)) =
            CACHE.lookup(&shared, fingerprint("tg_a"), 11_200, 100)
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
            Lookup::Hit(Refusal::Denied(_))
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
            Lookup::Hit(Refusal::Denied(_))
        ));
    }

    #[test]
    fn a_stored_lease_drops_only_an_over_quota_denial_of_its_key() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        CACHE.settle(&shared, ticket("tg_b", false), &learned(suspended()), || 0);
        CACHE.settle(
            &shared,
            ticket("tg_c", false),
            &learned(Ok(Answer::UnknownKey)),
            || 0,
        );
        for key in ["tg_a", "tg_b", "tg_c", "tg_nobody"] {
            CACHE.forget_denial(&shared, fingerprint(key));
        }
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 10, 100),
            Lookup::Miss
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_b"), 10, 100),
            Lookup::Hit(Refusal::Suspended)
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_c"), 10, 100),
            Lookup::Hit(Refusal::UnknownKey)
        );
    }

    #[test]
    fn failures_cache_nothing() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 }
        );
        let before = shared.0.borrow().clone();
        let failures = [
            CalloutFailure::Timeout,
            CalloutFailure::Host("BadArgument".into()),
            CalloutFailure::Unavailable(503),
            CalloutFailure::Garbled(ProtocolError::MissingStatus),
        ];
        for failure in failures {
            for mode in [FailureMode::Closed, FailureMode::Open] {
                let learned = on_answer(mode, Err(failure.clone())).learned;
                for ticket in [ticket("tg_a", true), ticket("tg_new", false)] {
                    CACHE.settle(&shared, ticket, &learned, || {
                        panic!("the clock is read only to store a refusal")
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
    fn a_shadow_deny_on_the_refresh_lease_forgets_the_denial() {
        // The tenant's tier went into shadow mode while its denial was cached: its requests
        // go through now, so the cache must stop refusing them.
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(5_000)), || 0);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 }
        );
        let shadow = Ok(Answer::ShadowDeny {
            tenant: "tn_1".into(),
            quota: quota(),
            retry_after_ms: 4_000,
        });
        CACHE.settle(
            &shared,
            ticket("tg_a", true),
            &learned(shadow.clone()),
            || panic!("nothing is stored"),
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_010, 100),
            Lookup::Miss
        );
        CACHE.settle(&shared, ticket("tg_b", false), &learned(shadow), || {
            panic!("nothing is stored")
        });
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_b"), 1_010, 100),
            Lookup::Miss,
            "a shadow deny is never cached"
        );
    }

    #[test]
    fn an_unknown_key_is_served_from_the_cache_for_max_ttl_then_refreshed_by_one_request() {
        let shared = FakeShared::default();
        CACHE.settle(
            &shared,
            ticket("tg_nobody", false),
            &learned(Ok(Answer::UnknownKey)),
            || 10_000,
        );
        let written = shared.0.borrow().clone();
        for now in [10_000, 10_500, 10_999] {
            assert_eq!(
                CACHE.lookup(&shared, fingerprint("tg_nobody"), now, 100),
                Lookup::Hit(Refusal::UnknownKey),
                "at {now}"
            );
        }
        assert_eq!(
            *shared.0.borrow(),
            written,
            "served without a write: there is nothing to count"
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_nobody"), 11_000, 100),
            Lookup::Refresh { edge_denied: 0 },
            "after max_ttl one request asks again"
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_nobody"), 11_050, 100),
            Lookup::Hit(Refusal::UnknownKey),
            "the others are still answered while it does"
        );
        CACHE.settle(
            &shared,
            ticket("tg_nobody", true),
            &learned(Ok(Answer::UnknownKey)),
            || 11_080,
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_nobody"), 12_079, 100),
            Lookup::Hit(Refusal::UnknownKey),
            "renewed for another max_ttl"
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_other"), 11_100, 100),
            Lookup::Miss
        );
    }

    #[test]
    fn a_suspended_tenant_is_refused_from_the_cache_until_a_refresh_admits_it() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(suspended()), || 0);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 999, 100),
            Lookup::Hit(Refusal::Suspended)
        );
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 }
        );
        // The tenant was resumed meanwhile.
        CACHE.settle(&shared, ticket("tg_a", true), &learned(allow()), || {
            panic!("nothing is stored")
        });
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_001, 100),
            Lookup::Miss,
            "forgotten at once, lease or not"
        );
    }

    #[test]
    fn a_revoked_key_goes_from_denied_to_unknown_and_reports_its_denials_once() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(30_000)), || 0);
        for now in 1..=3 {
            assert!(matches!(
                CACHE.lookup(&shared, fingerprint("tg_a"), now, 100),
                Lookup::Hit(Refusal::Denied(_))
            ));
        }
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 1_000, 100),
            Lookup::Refresh { edge_denied: 3 }
        );
        CACHE.settle(
            &shared,
            ticket("tg_a", true),
            &learned(Ok(Answer::UnknownKey)),
            || 1_020,
        );
        for now in [1_030, 2_019] {
            assert_eq!(
                CACHE.lookup(&shared, fingerprint("tg_a"), now, 100),
                Lookup::Hit(Refusal::UnknownKey),
                "at {now}"
            );
        }
        assert_eq!(
            CACHE.take_unreported(&shared, fingerprint("tg_a")),
            0,
            "401s are not denials: nothing to report"
        );
    }

    #[test]
    fn a_suspension_keeps_the_denials_not_yet_reported() {
        let shared = FakeShared::default();
        CACHE.settle(&shared, ticket("tg_a", false), &learned(deny(30_000)), || 0);
        for now in 1..=2 {
            CACHE.lookup(&shared, fingerprint("tg_a"), now, 100);
        }
        // Another worker's callout, sent before the suspension landed, learns of it.
        CACHE.settle(&shared, ticket("tg_a", false), &learned(suspended()), || 5);
        assert_eq!(
            CACHE.lookup(&shared, fingerprint("tg_a"), 6, 100),
            Lookup::Hit(Refusal::Suspended)
        );
        assert_eq!(CACHE.take_unreported(&shared, fingerprint("tg_a")), 2);
    }

    #[test]
    fn a_denial_is_served_until_the_maximum_ttl_with_times_counting_down() {
        let shared = FakeShared::default();
        assert!(CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 10_000, &denial(5_000)));
        let Lookup::Hit(Refusal::Denied(hit)) =
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_400, 100)
        else {
            panic!("cached");
        };
        assert_eq!(hit.retry_after_ms, 4_600);
        assert_eq!(hit.quota.reset_ms, 4_600);
        assert_eq!(hit.quota.policy, "standard");
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_999, 100),
            Lookup::Hit(Refusal::Denied(_))
        ));
        assert!(
            !matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 11_000, 100),
                Lookup::Hit(Refusal::Denied(_))
            ),
            "expired after 1 s: this request refreshes"
        );
    }

    #[test]
    fn only_one_request_refreshes_an_expired_entry() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &denial(5_000));
        assert_eq!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 1_000, 100),
            Lookup::Refresh { edge_denied: 0 },
            "the first one refreshes"
        );
        for now in [1_000, 1_050, 1_099] {
            assert!(
                matches!(
                    CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                    Lookup::Hit(Refusal::Denied(_))
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
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &denial(5_000));
        for now in 1..=7 {
            assert!(matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                Lookup::Hit(Refusal::Denied(_))
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
                Lookup::Hit(Refusal::Denied(_))
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
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &denial(5_000));
        for now in 1..=3 {
            assert!(matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), now, 100),
                Lookup::Hit(Refusal::Denied(_))
            ));
        }
        // A callout that left before the first denial was cached comes back denied too.
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 4, &denial(5_000));
        assert_eq!(
            CACHE.take_unreported(&shared, Fingerprint::of("tg_a", 1)),
            3
        );
    }

    #[test]
    fn a_denial_expires_at_its_retry_time_when_that_is_sooner() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 10_000, &denial(300));
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_299, 100),
            Lookup::Hit(Refusal::Denied(_))
        ));
        assert!(!matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_a", 1), 10_300, 100),
            Lookup::Hit(Refusal::Denied(_))
        ));
    }

    #[test]
    fn other_keys_miss_and_the_key_itself_is_never_stored() {
        let shared = FakeShared::default();
        CACHE.remember(
            &shared,
            Fingerprint::of("tg_secret_key", 5),
            0,
            &denial(5_000),
        );
        assert!(!matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_other", 5), 1, 100),
            Lookup::Hit(Refusal::Denied(_))
        ));
        assert!(
            !matches!(
                CACHE.lookup(&shared, Fingerprint::of("tg_secret_key", 1), 1, 100),
                Lookup::Hit(Refusal::Denied(_))
            ),
            "a cheaper request may fit"
        );
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_secret_key", 5), 1, 100),
            Lookup::Hit(Refusal::Denied(_))
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
    fn ten_thousand_refused_keys_stay_within_the_slots() {
        let shared = FakeShared::default();
        for i in 0..10_000 {
            let refusal = match i % 3 {
                0 => denial(5_000),
                1 => Refusal::UnknownKey,
                _ => Refusal::Suspended,
            };
            CACHE.remember(&shared, Fingerprint::of(&format!("tg_{i}"), 1), 0, &refusal);
        }
        assert!(
            shared.0.borrow().len() <= 64,
            "{} entries",
            shared.0.borrow().len()
        );
        // The newest entry of each slot is served.
        assert!(matches!(
            CACHE.lookup(&shared, Fingerprint::of("tg_9999", 1), 1, 100),
            Lookup::Hit(Refusal::Denied(_))
        ));
    }

    #[test]
    fn a_lost_compare_and_swap_is_reported() {
        let shared = FakeShared::default();
        CACHE.remember(&shared, Fingerprint::of("tg_a", 1), 0, &denial(5_000));
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
                Lookup::Hit(Refusal::Denied(_))
            ),
            "garbage decodes to a miss"
        );
    }

    #[test]
    fn entries_survive_encoding_and_garbage_is_no_entry() {
        let entry = Entry {
            fingerprint: u64::MAX,
            kind: Kind::Suspended,
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
        assert_eq!(decoded.kind, Kind::Suspended);
        let mut unknown_kind = bytes.clone();
        unknown_kind[8..16].copy_from_slice(&3u64.to_le_bytes());
        assert!(
            Entry::decode(&unknown_kind).is_none(),
            "a kind from nowhere"
        );
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
