//! Token buckets for the public listener's budgets, in a table whose size is fixed.
//!
//! The table is direct-mapped by a keyed hash of (budget, subject), so memory stays bounded
//! however many keys or addresses arrive. Two subjects sharing a slot share (or reset) a
//! bucket; with thousands of slots and the hash keyed at random per process, an attacker can
//! neither aim at a tenant's slot nor gain more than one bucket's worth from a collision (a
//! debt [`Budgets::charge`] left included).

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::Clock;

/// How many requests one subject may make: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The policy name in the `RateLimit` headers.
    pub name: &'static str,
    pub per_second: u32,
    pub burst: u32,
}

impl Budget {
    /// This budget at `per_second`, with bursts of twice that.
    pub fn at(self, per_second: u32) -> Self {
        Self {
            per_second,
            burst: per_second.saturating_mul(2),
            ..self
        }
    }
}

/// The token buckets.
pub struct Budgets {
    slots: Box<[Mutex<Bucket>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

#[derive(Default, Clone, Copy)]
struct Bucket {
    /// Hash of (budget, subject) owning the slot; 0 is free.
    owner: u64,
    /// Tokens left, in thousandths, as of `at_ms`; below zero after a charge (a debt the
    /// rate repays before the next request is admitted).
    milli_tokens: i64,
    at_ms: u64,
}

/// Past the budget: retry in this many milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub budget: Budget,
    pub retry_after_ms: u64,
}

impl Budgets {
    pub fn new(slots: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            clock,
        }
    }

    /// Spends one token of `budget` for `subject`.
    pub fn spend(&self, budget: Budget, subject: impl std::hash::Hash) -> Result<(), Exhausted> {
        self.take(budget, subject, true)
    }

    /// Whether `subject` has a token of `budget` left, spending none.
    pub fn check(&self, budget: Budget, subject: impl std::hash::Hash) -> Result<(), Exhausted> {
        self.take(budget, subject, false)
    }

    /// The owner hash of (budget, subject) and the slot it maps to.
    fn slot(&self, budget: Budget, subject: impl std::hash::Hash) -> (u64, usize) {
        let owner = self.hasher.hash_one((budget.name, subject)) | 1;
        (
            owner,
            usize::try_from(owner % self.slots.len() as u64).unwrap_or(0),
        )
    }

    /// Spends `tokens` more of `budget` for `subject`, into debt if fewer are left: for a
    /// request that turned out to cost more than the token it spent when admitted. The debt
    /// is bounded by what the requests admitted at once are charged.
    pub fn charge(&self, budget: Budget, subject: impl std::hash::Hash, tokens: u32) {
        self.with_bucket(budget, subject, |bucket| {
            bucket.milli_tokens = bucket.milli_tokens.saturating_sub(i64::from(tokens) * 1000);
        });
    }

    fn take(
        &self,
        budget: Budget,
        subject: impl std::hash::Hash,
        spend: bool,
    ) -> Result<(), Exhausted> {
        self.with_bucket(budget, subject, |bucket| {
            if bucket.milli_tokens >= 1000 {
                if spend {
                    bucket.milli_tokens -= 1000;
                }
                Ok(())
            } else {
                let missing = (1000 - bucket.milli_tokens).unsigned_abs();
                Err(Exhausted {
                    budget,
                    retry_after_ms: missing.div_ceil(u64::from(budget.per_second.max(1))),
                })
            }
        })
    }

    /// Runs `f` on the bucket of (budget, subject), refilled to now.
    fn with_bucket<R>(
        &self,
        budget: Budget,
        subject: impl std::hash::Hash,
        f: impl FnOnce(&mut Bucket) -> R,
    ) -> R {
        let (owner, index) = self.slot(budget, subject);
        let now = self.clock.now_ms();
        let capacity = i64::from(budget.burst.max(1)) * 1000;
        let mut bucket = self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if bucket.owner != owner {
            *bucket = Bucket {
                owner,
                milli_tokens: capacity,
                at_ms: now,
            };
        }
        // per_second tokens a second is per_second thousandths a millisecond.
        let refill = i64::try_from(now.saturating_sub(bucket.at_ms) * u64::from(budget.per_second))
            .unwrap_or(i64::MAX);
        bucket.milli_tokens = bucket.milli_tokens.saturating_add(refill).min(capacity);
        bucket.at_ms = now;
        f(&mut bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    const TEN: Budget = Budget {
        name: "t",
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn a_subject_spends_its_burst_then_its_rate() {
        let clock = ManualClock::new(1_000_000);
        let budgets = Budgets::new(64, Arc::new(clock.clone()));
        for n in 0..3 {
            assert_eq!(budgets.spend(TEN, "a"), Ok(()), "burst token {n}");
        }
        assert_eq!(
            budgets.spend(TEN, "a"),
            Err(Exhausted {
                budget: TEN,
                retry_after_ms: 100
            })
        );
        // A subject in another slot (one sharing "a"'s would share its bucket, by design).
        let other = (0..)
            .map(|n| format!("b{n}"))
            .find(|b| budgets.slot(TEN, b).1 != budgets.slot(TEN, "a").1)
            .unwrap();
        assert_eq!(
            budgets.spend(TEN, &other),
            Ok(()),
            "another subject is apart"
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(
            budgets.spend(TEN, "a"),
            Ok(()),
            "one token a tenth of a second"
        );
        assert!(budgets.spend(TEN, "a").is_err());
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(budgets.spend(TEN, "a"), Ok(()));
        }
        assert!(
            budgets.spend(TEN, "a").is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn checking_spends_nothing() {
        let clock = ManualClock::new(0);
        let budgets = Budgets::new(64, Arc::new(clock));
        for _ in 0..10 {
            assert_eq!(budgets.check(TEN, "a"), Ok(()));
        }
        for _ in 0..3 {
            assert_eq!(budgets.spend(TEN, "a"), Ok(()));
        }
        assert!(budgets.check(TEN, "a").is_err());
    }

    #[test]
    fn a_charge_is_a_debt_the_rate_repays() {
        let clock = ManualClock::new(0);
        let budgets = Budgets::new(64, Arc::new(clock.clone()));
        assert_eq!(budgets.spend(TEN, "a"), Ok(()));
        budgets.charge(TEN, "a", 1);
        assert_eq!(budgets.spend(TEN, "a"), Ok(()), "one of three left");
        assert!(budgets.spend(TEN, "a").is_err());
        // Five tokens into debt: six tenths of a second before the next request.
        budgets.charge(TEN, "a", 5);
        assert_eq!(
            budgets.spend(TEN, "a"),
            Err(Exhausted {
                budget: TEN,
                retry_after_ms: 600
            })
        );
        clock.advance(Duration::from_millis(599));
        assert!(budgets.spend(TEN, "a").is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(budgets.spend(TEN, "a"), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_however_many_subjects_come() {
        let clock = ManualClock::new(0);
        let budgets = Budgets::new(16, Arc::new(clock));
        for subject in 0..100_000u32 {
            let _ = budgets.spend(TEN, subject);
        }
        assert_eq!(budgets.slots.len(), 16);
    }
}
