//! The edge lease table: admissions the control-plane granted in advance, spent by the filter
//! without callouts.
//!
//! An admission may come with a lease: this request and up to `requests - 1` more of the same
//! key on the same route at the same cost, usable until `ttl_ms` after the callout was sent.
//! The control-plane has already counted every one of them in the tenant's window, stamped so
//! that none leaves the window earlier than a window after its real use, so spending them
//! here keeps the limit exact. The filter ends a lease at the earlier of
//! `dispatch time + ttl_ms` and `dispatch time + max_ttl` (dispatch time read before the
//! callout left, so never later than the control-plane's own deadline), or when its requests
//! are used up. The next request of the key then claims the slot and makes the callout that
//! hands back what the lease left unused ([`Claim::returned`], once: a return the
//! control-plane might not have heard of is never sent twice, since that would free units
//! twice) and asks for a new lease. A lease that is never returned (lost to a slot collision,
//! or to a stream reset before its answer) only keeps its units counted until they leave the
//! window: under-admission, never over.
//!
//! A large lease is renewed before it ends (`LeaseEntry::wants_renewal`): when its deadline
//! is a few claim round trips away, or when at the rate it is spent it would run out within
//! them, one request claims the renewal (marking the lease) and makes the callout, while the
//! others go on spending the lease; without it every request arriving during the
//! claim's round trip would make a plain callout, which for a hot key is most of its
//! callouts. The renewed lease's unused requests are kept with its successor and handed back
//! by the next claim. A callout hands back one lease, so a claim that finds two (an ended
//! lease and the one it renewed) hands back the larger and leaves the other in its
//! placeholder, for the claim after.
//!
//! The table lives in proxy-wasm shared data like [`crate::deny_cache`]: every worker of one
//! Envoy sees it (one Envoy never sees another's leases), nothing expires by itself, so it is
//! a fixed number of slots (`tollgate.lease.<n>`), never the key itself: a key's entry lives
//! in one of two slots chosen by a 64-bit fingerprint of (key, route, cost), the one already
//! holding it, else the first a claim may take. Memory is bounded by the slot count. Every
//! write is a compare-and-swap, so two workers never spend the same request or both claim one
//! slot.
//!
//! A slot holds one of:
//! - a placeholder: a request of this key is asking for a lease, until its callout's timeout.
//!   Requests arriving meanwhile make plain callouts (asking for no lease) rather than wait.
//!   It may keep a return for the next claim (see above);
//! - a lease: its id, when its callout was sent, its deadline, the requests left, and what an
//!   admission needs to look like one from a callout (tenant, tier, limit, window, remaining
//!   and reset at the grant, monthly quota), whether a request is renewing it, and the return
//!   of the lease it renewed. Admissions from it report the remaining of the grant, which
//!   already counted the whole lease as used: never more than the control-plane said.
//!
//! A worker takes a busy lease's requests a few at a time ([`LeaseTable::take_batch`]) and
//! spends them from its own memory ([`WorkerBatches`]): a leased request then reads and writes
//! no shared data at all, which is most of what a leased request cost Envoy beyond the filter
//! itself. A batch is a small share of what the lease has left, taken only while the grant
//! left hundreds of units of room in the window, so near the lease's end and near the limit
//! requests are taken one at a time and the other workers find some left; what a worker
//! still holds when the lease ends is given up (never handed back, so never freed twice):
//! under-admission of at most a batch per worker.
//!
//! Route and cost are part of the fingerprint because a tier may price routes differently
//! (the tier table's per-route costs): a lease granted for one route is spent only on it.
//! A slot holding another key's live lease or placeholder is left alone (its key is using
//! it); a request whose two slots are both so taken makes a plain callout. One holding
//! another key's ended lease or expired placeholder is taken over. A grant is always stored, overwriting whatever the slot holds by
//! then; a lease overwritten with requests left is counted as lost ([`Settled::lost`]).
//!
//! This module is pure: the host hands it a [`SharedData`] and the time.

use std::hash::{DefaultHasher, Hash, Hasher};

use tollgate_protocol::{Lease, MonthlyQuota, Quota};

use crate::shared_data::{CAS_ATTEMPTS, SharedData, slot_key};

/// The table's settings: its slots, the longest the filter uses a lease whatever its TTL, and
/// the most requests it asks for in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTable {
    pub slots: u32,
    pub max_ttl_ms: u64,
    pub max_requests: u32,
}

/// Identifies a (key, route, cost) triple; all the table keeps of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseKey(u64);

impl LeaseKey {
    pub fn of(api_key: &str, route: &str, cost: u32) -> Self {
        // SipHash with fixed keys: the same in every worker's VM.
        let mut hasher = DefaultHasher::new();
        api_key.hash(&mut hasher);
        route.hash(&mut hasher);
        cost.hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// An admission spent from a lease: who it is, and where the tenant stands as far as the
/// edge knows (the grant's remaining, the reset counting down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub tenant: String,
    pub quota: Quota,
}

/// Requests taken from a live lease in one write: the first is the request's own, the rest
/// are held by its worker ([`WorkerBatches`]) and spent by its next requests of the key
/// without touching shared data, until `deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub leased: Leased,
    pub requests: u32,
    pub deadline: u64,
}

/// A lease granted with an admission, as the control-plane answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub tenant: String,
    pub quota: Quota,
    pub lease: Lease,
}

/// Requests of an ended lease that were never used, to hand back in the next callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unused {
    pub id: String,
    pub requests: u32,
}

/// A request's claim on its key's slot: it alone asks for a lease until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTicket {
    pub key: LeaseKey,
    /// The slot claimed (one of the key's two, see [`LeaseTable::slots_of`]).
    pub slot: u32,
    /// When the placeholder ends (the callout's timeout); also identifies it, so the request
    /// clears its own placeholder and never a later claimant's.
    pub until: u64,
}

/// This request claimed its key's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub ticket: LeaseTicket,
    /// What the key's ended lease left unused, handed back in this request's callout.
    pub returned: Option<Unused>,
    /// Requests another key's ended lease (or placeholder) left unused and never returned:
    /// taking its slot over loses them (they stay counted in that tenant's window until they
    /// leave it).
    pub evicted: Option<u32>,
}

/// What the table says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLookup {
    /// One request of a live lease was spent on it (and, for a batch, more taken for its
    /// worker): admit without a callout.
    Taken(Batch),
    /// It claimed the slot: ask for a lease (handing back the old one's unused requests).
    Claimed(Claim),
    /// Another request is asking, another key's lease holds the slot, or the slot was
    /// contended: a plain callout.
    Busy,
}

/// What storing an answer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// A lease of this many requests was granted.
    pub granted: Option<u32>,
    /// The lease was stored: its requests are spent here from now on.
    pub stored: bool,
    /// A lease with this many requests left was lost: overwritten by this grant, or this
    /// grant could not be stored.
    pub lost: Option<u32>,
}

/// Longest tenant id or tier name a lease is stored with. Both are short (a tier is a policy
/// name of at most 64 characters); the bound keeps a slot's size bounded whatever the
/// control-plane says. A lease that does not fit is not stored, and counted as lost.
const MAX_TEXT: usize = 256;

/// Mixed into a key's fingerprint for its second slot, so two keys sharing a first slot
/// rarely share the second.
const SECOND_CHOICE: u64 = 0x9e37_79b9_7f4a_7c15;

/// A lease of at least this many requests is renewed before it runs out (see
/// `LeaseEntry::wants_renewal`). A smaller one belongs to a key too slow for the requests
/// arriving during its claim's round trip to matter.
const RENEW_FROM: u32 = 32;
/// A lease is renewed when its deadline is this near or, at the rate it has been spent, it
/// would run out within this long: several claim round trips (1–3 ms on a healthy
/// control-plane), and a small share of a lease sized for a second, so renewing costs few
/// more callouts than waiting for the end would.
const RENEW_RUNWAY_MS: u64 = 25;

const KIND_ASKING: u64 = 0;
/// A placeholder's numbers (fingerprint, kind, until, pending requests, pending id length),
/// then the pending id.
const ASKING_NUMBERS: usize = 5;
const KIND_LEASE: u64 = 1;
/// A lease starts with this many little-endian numbers, then id, tenant, tier and the id of
/// the lease it renewed (empty when none is pending).
const LEASE_NUMBERS: usize = 20;
/// Where the requests left sit in an encoded lease: spending one rewrites these 8 bytes only.
const LEFT_OFFSET: usize = 16;
/// A worker's batch takes at most this share of the requests a lease has left (so near its
/// end requests are taken one at a time, and the other workers find some left) ...
const BATCH_SHARE: u32 = 32;
/// ... only while the lease's grant left at least this much room in the window: a batch
/// held by a worker that gets no more requests (the last of a burst went to the other) keeps
/// its units counted, and near the limit that would get the other worker's requests denied.
/// With this much room, hundreds of the key's requests come before the limit, and every
/// worker's batch is long spent by then ...
const BATCH_ROOM: u32 = BATCH_SHARE * MAX_BATCH;
/// ... and at most this many requests: a few milliseconds of a hot key's traffic on one
/// worker, and at most this many requests per worker that a lease ending unspent leaves
/// counted in the window (under-admission).
const MAX_BATCH: u32 = 16;

/// One slot's content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A request of this key is asking for a lease until `until`. `pending`: unused requests
    /// of an ended lease that this claim's callout could not hand back too (it hands back
    /// one lease); the lease it brings keeps them for the next claim.
    Asking {
        fingerprint: u64,
        until: u64,
        pending: Option<Unused>,
    },
    Lease(LeaseEntry),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaseEntry {
    fingerprint: u64,
    left: u32,
    /// Host time read before the callout was sent. A clock earlier than this went back: the
    /// lease is then over, since its deadline no longer measures real time.
    dispatched_at: u64,
    deadline: u64,
    reset_at: u64,
    limit: u32,
    window_seconds: u32,
    /// The grant's remaining, which counts the whole lease as used.
    remaining: u32,
    /// The monthly quota's limit, remaining at the grant, and when the month starts over.
    month: Option<(u64, u64, u64)>,
    /// Requests left when it was stored: the measure of "running out" for renewal.
    stored_left: u32,
    /// A request is renewing it until then (its callout's timeout); 0: nobody is.
    renewing_until: u64,
    /// What the lease it renewed left unused, handed back by the next claim.
    pending: Option<Unused>,
    id: String,
    tenant: String,
    policy: String,
}

impl LeaseEntry {
    fn live(&self, now_ms: u64) -> bool {
        self.left > 0 && self.dispatched_at <= now_ms && now_ms < self.deadline
    }

    /// Whether a request should renew it now: a large lease that nobody is renewing and that
    /// ends within [`RENEW_RUNWAY_MS`], by its deadline or, at the rate it has been spent, by
    /// running out. The renewing request makes the claim's callout while the others go on
    /// spending it, so a hot key's requests never meet an ended lease and turn into plain
    /// callouts during the round trip: every request in flight when a lease ends would,
    /// which on a store a round trip away (Redis) queues them behind one another.
    fn wants_renewal(&self, now_ms: u64) -> bool {
        if self.stored_left < RENEW_FROM || now_ms < self.renewing_until {
            return false;
        }
        if now_ms.saturating_add(RENEW_RUNWAY_MS) >= self.deadline {
            return true;
        }
        // left / (spent / elapsed) <= runway, without dividing.
        let spent = u64::from(self.stored_left.saturating_sub(self.left));
        let elapsed = now_ms.saturating_sub(self.dispatched_at);
        spent > 0 && u64::from(self.left).saturating_mul(elapsed) <= RENEW_RUNWAY_MS * spent
    }

    fn renewing(&self, now_ms: u64) -> bool {
        now_ms < self.renewing_until
    }

    fn unused(&self) -> Option<Unused> {
        (self.left > 0).then(|| Unused {
            id: self.id.clone(),
            requests: self.left,
        })
    }

    fn leased(&self, now_ms: u64) -> Leased {
        Leased {
            tenant: self.tenant.clone(),
            quota: Quota {
                policy: self.policy.clone(),
                limit: self.limit,
                window_seconds: self.window_seconds,
                remaining: self.remaining,
                reset_ms: self.reset_at.saturating_sub(now_ms),
                monthly: self.month.map(|(limit, remaining, reset_at)| MonthlyQuota {
                    limit,
                    remaining,
                    reset_ms: reset_at.saturating_sub(now_ms),
                }),
            },
        }
    }
}

impl Entry {
    fn fingerprint(&self) -> u64 {
        match self {
            Entry::Asking { fingerprint, .. } => *fingerprint,
            Entry::Lease(lease) => lease.fingerprint,
        }
    }

    /// Fixed little-endian numbers, then the texts: read on every leased admission, so no
    /// text formatting or parsing.
    fn encode(&self) -> Vec<u8> {
        match self {
            Entry::Asking {
                fingerprint,
                until,
                pending,
            } => {
                let (id, requests) = pending
                    .as_ref()
                    .map_or(("", 0), |unused| (unused.id.as_str(), unused.requests));
                let numbers = [
                    *fingerprint,
                    KIND_ASKING,
                    *until,
                    u64::from(requests),
                    id.len() as u64,
                ];
                let mut bytes: Vec<u8> = numbers.iter().flat_map(|n| n.to_le_bytes()).collect();
                bytes.extend_from_slice(id.as_bytes());
                bytes
            }
            Entry::Lease(lease) => {
                let (month_limit, month_remaining, month_reset_at) =
                    lease.month.unwrap_or_default();
                let (pending_id, pending_requests) = lease
                    .pending
                    .as_ref()
                    .map_or(("", 0), |unused| (unused.id.as_str(), unused.requests));
                let numbers: [u64; LEASE_NUMBERS] = [
                    lease.fingerprint,
                    KIND_LEASE,
                    u64::from(lease.left),
                    lease.dispatched_at,
                    lease.deadline,
                    lease.reset_at,
                    u64::from(lease.limit),
                    u64::from(lease.window_seconds),
                    u64::from(lease.remaining),
                    u64::from(lease.month.is_some()),
                    month_limit,
                    month_remaining,
                    month_reset_at,
                    u64::from(lease.stored_left),
                    lease.renewing_until,
                    u64::from(pending_requests),
                    lease.id.len() as u64,
                    lease.tenant.len() as u64,
                    lease.policy.len() as u64,
                    pending_id.len() as u64,
                ];
                let texts: [&str; 4] = [&lease.id, &lease.tenant, &lease.policy, pending_id];
                let mut bytes = Vec::with_capacity(
                    LEASE_NUMBERS * 8 + texts.iter().map(|t| t.len()).sum::<usize>(),
                );
                for number in numbers {
                    bytes.extend_from_slice(&number.to_le_bytes());
                }
                for text in texts {
                    bytes.extend_from_slice(text.as_bytes());
                }
                bytes
            }
        }
    }

    /// A pending return as stored: both an id and requests, or neither (`None` inside);
    /// anything else is garbage (`None` outside).
    fn pending(id: &str, requests: u64) -> Option<Option<Unused>> {
        match (id.is_empty(), u32::try_from(requests).ok()?) {
            (true, 0) => Some(None),
            (false, requests) if requests > 0 => Some(Some(Unused {
                id: id.to_owned(),
                requests,
            })),
            _ => None,
        }
    }

    fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut numbers = bytes
            .chunks_exact(8)
            .map(|chunk| chunk.try_into().ok().map(u64::from_le_bytes));
        let mut number = || numbers.next().flatten();
        let (fingerprint, kind) = (number()?, number()?);
        if kind == KIND_ASKING {
            let (until, requests, id_length) = (number()?, number()?, number()?);
            let id = bytes.get(ASKING_NUMBERS * 8..)?;
            if u64::try_from(id.len()).ok()? != id_length {
                return None;
            }
            let pending = Self::pending(std::str::from_utf8(id).ok()?, requests)?;
            return Some(Entry::Asking {
                fingerprint,
                until,
                pending,
            });
        }
        if kind != KIND_LEASE {
            return None;
        }
        let left = u32::try_from(number()?).ok()?;
        let (dispatched_at, deadline, reset_at) = (number()?, number()?, number()?);
        let limit = u32::try_from(number()?).ok()?;
        let window_seconds = u32::try_from(number()?).ok()?;
        let remaining = u32::try_from(number()?).ok()?;
        let has_month = number()?;
        let month = (number()?, number()?, number()?);
        let stored_left = u32::try_from(number()?).ok()?;
        let renewing_until = number()?;
        let pending_requests = u32::try_from(number()?).ok()?;
        let lengths = [number()?, number()?, number()?, number()?];
        let mut rest = bytes.get(LEASE_NUMBERS * 8..)?;
        let mut texts = Vec::with_capacity(lengths.len());
        for length in lengths {
            let (text, tail) = rest.split_at_checked(usize::try_from(length).ok()?)?;
            texts.push(std::str::from_utf8(text).ok()?.to_owned());
            rest = tail;
        }
        let [id, tenant, policy, pending_id]: [String; 4] = texts.try_into().ok()?;
        let pending = Self::pending(&pending_id, u64::from(pending_requests))?;
        (rest.is_empty() && has_month <= 1).then_some(Entry::Lease(LeaseEntry {
            fingerprint,
            left,
            dispatched_at,
            deadline,
            reset_at,
            limit,
            window_seconds,
            remaining,
            month: (has_month == 1).then_some(month),
            stored_left,
            renewing_until,
            pending,
            id,
            tenant,
            policy,
        }))
    }
}

/// What an entry being replaced leaves behind (see [`LeaseTable::ended`]).
#[derive(Debug, Default)]
struct Left {
    /// To hand back now.
    returned: Option<Unused>,
    /// To hand back with the next claim.
    kept: Option<Unused>,
    /// Requests never to be handed back.
    lost: Option<u32>,
}

/// What a lookup is for.
#[derive(Debug, Clone, Copy)]
enum Intent {
    /// Spend a request before the callout (and take up to `most` in all for the worker),
    /// unless the lease is due for renewal.
    Take { most: u32 },
    /// Spend a request whatever (a denied request answered from the lease).
    Spend,
    /// Renew, spend, or claim the slot until `until`.
    Claim { until: u64 },
}

/// What a lookup does with the slot it read.
enum Step {
    /// Done, nothing to write.
    Done(LeaseLookup),
    /// Write these bytes (compare-and-swap), then answer this.
    Write(Vec<u8>, LeaseLookup),
}

/// Whether a slot's bytes hold the entry of `key`: both kinds of entry start with the key's
/// fingerprint (garbage that happened to would be taken for nothing by [`Entry::decode`]).
fn holds(bytes: Option<&[u8]>, key: LeaseKey) -> bool {
    bytes
        .and_then(|b| b.get(..8))
        .is_some_and(|start| start == key.0.to_le_bytes())
}

impl LeaseTable {
    /// The two slots a key's entry may live in (one slot twice when they coincide). With one,
    /// a key whose slot held another busy key's lease made a plain callout for every request
    /// while that lease lived: a hundred busy keys in 4,096 slots spent about a quarter of
    /// their callouts so. With two, that needs both taken.
    fn slots_of(&self, key: LeaseKey) -> [u32; 2] {
        let slots = u64::from(self.slots.max(1));
        let index = |hash: u64| u32::try_from(hash % slots).unwrap_or(0);
        [index(key.0), index(key.0.rotate_left(32) ^ SECOND_CHOICE)]
    }

    fn slot_name(&self, slot: u32) -> String {
        slot_key("lease", u64::from(slot), self.slots)
    }

    /// [`Self::take_batch`] of one request.
    #[cfg(test)]
    fn take(&self, shared: &impl SharedData, key: LeaseKey, now_ms: u64) -> Option<Leased> {
        Self::taken(self.lookup(shared, key, now_ms, Intent::Take { most: 1 }))
    }

    /// For a request before its callout: spends one request of the key's live lease, if it
    /// has one and nobody needs to renew it, and takes up to `most` − 1 more for its worker
    /// (at most a [`BATCH_SHARE`]th of what the lease has left; see
    /// [`WorkerBatches::room`]); writes nothing otherwise. `None`: the request needs a
    /// callout (or renews the lease with it, see [`Self::take_or_claim`]).
    pub fn take_batch(
        &self,
        shared: &impl SharedData,
        key: LeaseKey,
        now_ms: u64,
        most: u32,
    ) -> Option<Batch> {
        match self.lookup(shared, key, now_ms, Intent::Take { most }) {
            LeaseLookup::Taken(batch) => Some(batch),
            LeaseLookup::Claimed(_) | LeaseLookup::Busy => None,
        }
    }

    /// Spends one request of the key's live lease, if it has one, due for renewal or not: for
    /// a request whose callout was denied while the lease still holds requests.
    pub fn spend(&self, shared: &impl SharedData, key: LeaseKey, now_ms: u64) -> Option<Leased> {
        Self::taken(self.lookup(shared, key, now_ms, Intent::Spend))
    }

    fn taken(lookup: LeaseLookup) -> Option<Leased> {
        match lookup {
            LeaseLookup::Taken(batch) => Some(batch.leased),
            LeaseLookup::Claimed(_) | LeaseLookup::Busy => None,
        }
    }

    /// For a request about to make a callout: renews the key's live lease if it is due (see
    /// `LeaseEntry::wants_renewal`), else spends a request of it; else claims the slot (a
    /// placeholder until `until`, the callout's timeout), taking the ended lease's unused
    /// requests to hand back; else [`LeaseLookup::Busy`].
    pub fn take_or_claim(
        &self,
        shared: &impl SharedData,
        key: LeaseKey,
        now_ms: u64,
        until: u64,
    ) -> LeaseLookup {
        self.lookup(shared, key, now_ms, Intent::Claim { until })
    }

    fn lookup(
        &self,
        shared: &impl SharedData,
        key: LeaseKey,
        now_ms: u64,
        intent: Intent,
    ) -> LeaseLookup {
        let [first, second] = self.slots_of(key);
        let first_read = shared.get(&self.slot_name(first));
        if first == second || holds(first_read.0.as_deref(), key) {
            return self.lookup_in(shared, key, first, first_read, now_ms, intent);
        }
        let second_read = shared.get(&self.slot_name(second));
        if holds(second_read.0.as_deref(), key) {
            return self.lookup_in(shared, key, second, second_read, now_ms, intent);
        }
        // Neither holds the key's entry: only a claim has anything to do, in the first slot
        // it may take.
        if !matches!(intent, Intent::Claim { .. }) {
            return LeaseLookup::Busy;
        }
        match self.lookup_in(shared, key, first, first_read, now_ms, intent) {
            // Busy with another key's entry, not with this key's (another request's claim
            // came first): two claims of one key in its two slots would leave one of their
            // leases unspent.
            LeaseLookup::Busy if !holds(shared.get(&self.slot_name(first)).0.as_deref(), key) => {
                self.lookup_in(shared, key, second, second_read, now_ms, intent)
            }
            found => found,
        }
    }

    /// [`Self::lookup`] in one slot, first read as `read`.
    fn lookup_in(
        &self,
        shared: &impl SharedData,
        key: LeaseKey,
        slot: u32,
        read: (Option<Vec<u8>>, Option<u32>),
        now_ms: u64,
        intent: Intent,
    ) -> LeaseLookup {
        let name = self.slot_name(slot);
        let mut read = Some(read);
        // Compare-and-swap can lose to another worker writing the slot; a few rounds settle
        // it, and giving up only costs a plain callout.
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = read.take().unwrap_or_else(|| shared.get(&name));
            match Self::step(key, slot, value.unwrap_or_default(), now_ms, intent) {
                Step::Done(lookup) => return lookup,
                Step::Write(bytes, lookup) => {
                    if shared.set(&name, &bytes, cas) {
                        return lookup;
                    }
                }
            }
        }
        LeaseLookup::Busy
    }

    /// What to do with the slot's current bytes.
    fn step(key: LeaseKey, slot: u32, mut bytes: Vec<u8>, now_ms: u64, intent: Intent) -> Step {
        let LeaseKey(fingerprint) = key;
        let entry = Entry::decode(&bytes);
        let ours = entry
            .as_ref()
            .is_some_and(|e| e.fingerprint() == fingerprint);
        let left = match entry {
            Some(Entry::Lease(lease)) if lease.live(now_ms) => {
                if !ours {
                    return Step::Done(LeaseLookup::Busy);
                }
                if lease.wants_renewal(now_ms) {
                    match intent {
                        Intent::Claim { until } => return Self::renew(key, slot, lease, until),
                        // Left for the request's callout to renew.
                        Intent::Take { .. } => return Step::Done(LeaseLookup::Busy),
                        Intent::Spend => {}
                    }
                }
                let requests = match intent {
                    Intent::Take { most } if lease.remaining >= BATCH_ROOM => {
                        (lease.left / BATCH_SHARE).clamp(1, most.max(1))
                    }
                    Intent::Take { .. } | Intent::Spend | Intent::Claim { .. } => 1,
                };
                // Only the count changes: rewrite its 8 bytes in the slot's own copy.
                let left = u64::from(lease.left.saturating_sub(requests)).to_le_bytes();
                let Some(field) = bytes.get_mut(LEFT_OFFSET..LEFT_OFFSET + 8) else {
                    return Step::Done(LeaseLookup::Busy);
                };
                field.copy_from_slice(&left);
                let batch = Batch {
                    leased: lease.leased(now_ms),
                    requests,
                    deadline: lease.deadline,
                };
                return Step::Write(bytes, LeaseLookup::Taken(batch));
            }
            Some(Entry::Asking { until, .. }) if now_ms < until => {
                return Step::Done(LeaseLookup::Busy);
            }
            // Ended while its renewal is in flight: that answer stores the next lease.
            Some(Entry::Lease(lease)) if ours && lease.renewing(now_ms) => {
                return Step::Done(LeaseLookup::Busy);
            }
            Some(Entry::Lease(lease)) => {
                let own = lease.unused();
                Self::ended(own, lease.pending, ours)
            }
            // An expired placeholder may still keep a return.
            Some(Entry::Asking { pending, .. }) => Self::ended(None, pending, ours),
            // Nothing, or garbage.
            None => Left::default(),
        };
        let Intent::Claim { until } = intent else {
            return Step::Done(LeaseLookup::Busy);
        };
        let placeholder = Entry::Asking {
            fingerprint,
            until,
            pending: left.kept,
        }
        .encode();
        let claim = Claim {
            ticket: LeaseTicket { key, slot, until },
            returned: left.returned,
            evicted: left.lost,
        };
        Step::Write(placeholder, LeaseLookup::Claimed(claim))
    }

    /// Marks the key's live lease as renewed by this request until `until` (its callout's
    /// timeout); the claim hands back what the lease before it left unused.
    fn renew(key: LeaseKey, slot: u32, mut lease: LeaseEntry, until: u64) -> Step {
        lease.renewing_until = until;
        let claim = Claim {
            ticket: LeaseTicket { key, slot, until },
            returned: lease.pending.take(),
            evicted: None,
        };
        Step::Write(Entry::Lease(lease).encode(), LeaseLookup::Claimed(claim))
    }

    /// What an entry being replaced leaves behind, from a lease's own unused requests and
    /// the return it keeps: for its own key, the larger to hand back now and the other kept
    /// for the next claim (a callout hands back one lease); for another key, all lost.
    fn ended(own: Option<Unused>, pending: Option<Unused>, ours: bool) -> Left {
        let requests = |unused: &Option<Unused>| unused.as_ref().map_or(0, |u| u.requests);
        if !ours {
            let lost = requests(&own).saturating_add(requests(&pending));
            return Left {
                lost: (lost > 0).then_some(lost),
                ..Left::default()
            };
        }
        let (returned, kept) = if requests(&own) >= requests(&pending) {
            (own, pending)
        } else {
            (pending, own)
        };
        Left {
            returned,
            kept,
            lost: None,
        }
    }

    /// Stores what a callout's answer granted, or clears this request's placeholder.
    ///
    /// `ticket` is the request's claim, if it made one; `dispatched_at` the host time read
    /// before its callout was sent, which the lease's deadline counts from. The clock (a host
    /// call in Envoy) is read only to store a lease, for its reset time.
    pub fn settle(
        &self,
        shared: &impl SharedData,
        key: LeaseKey,
        ticket: Option<LeaseTicket>,
        grant: Option<&Grant>,
        dispatched_at: u64,
        now_ms: impl FnOnce() -> u64,
    ) -> Settled {
        let Some(grant) = grant else {
            if let Some(ticket) = ticket {
                self.clear(shared, ticket);
            }
            return Settled::default();
        };
        let requests = grant.lease.requests;
        let mut settled = Settled {
            granted: Some(requests),
            ..Settled::default()
        };
        let left = requests.saturating_sub(1);
        if left == 0 {
            // This request was the whole lease: nothing to keep.
            if let Some(ticket) = ticket {
                self.clear(shared, ticket);
            }
            return settled;
        }
        if grant.tenant.len() > MAX_TEXT || grant.quota.policy.len() > MAX_TEXT {
            if let Some(ticket) = ticket {
                self.clear(shared, ticket);
            }
            settled.lost = Some(left);
            return settled;
        }
        let now_ms = now_ms();
        let quota = &grant.quota;
        let ttl_ms = u64::from(grant.lease.ttl_ms).min(self.max_ttl_ms);
        let lease = LeaseEntry {
            fingerprint: key.0,
            left,
            dispatched_at,
            deadline: dispatched_at.saturating_add(ttl_ms),
            reset_at: now_ms.saturating_add(quota.reset_ms),
            limit: quota.limit,
            window_seconds: quota.window_seconds,
            remaining: quota.remaining,
            month: quota
                .monthly
                .map(|m| (m.limit, m.remaining, now_ms.saturating_add(m.reset_ms))),
            stored_left: left,
            renewing_until: 0,
            pending: None,
            id: grant.lease.id.clone(),
            tenant: grant.tenant.clone(),
            policy: quota.policy.clone(),
        };
        // A grant comes to a claim; one that came unasked goes to the key's first slot.
        let slot = self.slot_name(ticket.map_or(self.slots_of(key)[0], |ticket| ticket.slot));
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = shared.get(&slot);
            // The key's lease this one renews (or one stored meanwhile) leaves its unused
            // requests to be handed back by the next claim; another key's are lost.
            let (pending, overwritten) = match value.as_deref().and_then(Entry::decode) {
                Some(Entry::Lease(old)) => {
                    let left = Self::ended(old.unused(), old.pending, old.fingerprint == key.0);
                    // A lease keeps one return: a second (only when two claims of the key
                    // overlapped) is lost.
                    let lost = [left.kept.map(|kept| kept.requests), left.lost]
                        .into_iter()
                        .flatten()
                        .reduce(u32::saturating_add);
                    (left.returned, lost)
                }
                // The key's placeholder hands over the return its claim could not send.
                Some(Entry::Asking {
                    fingerprint,
                    pending,
                    ..
                }) if fingerprint == key.0 => (pending, None),
                Some(Entry::Asking { pending, .. }) => {
                    (None, pending.map(|unused| unused.requests))
                }
                None => (None, None),
            };
            let entry = Entry::Lease(LeaseEntry {
                pending,
                ..lease.clone()
            })
            .encode();
            if shared.set(&slot, &entry, cas) {
                settled.lost = overwritten;
                settled.stored = true;
                return settled;
            }
        }
        settled.lost = Some(left);
        settled
    }

    /// Clears this request's own claim when its answer brought no lease: its placeholder, or
    /// the renewal mark on the lease it was renewing (which goes on, renewable again). A slot
    /// that holds anything else by now (a later claimant's, another key, a newer lease) is
    /// left alone.
    fn clear(&self, shared: &impl SharedData, ticket: LeaseTicket) {
        let slot = self.slot_name(ticket.slot);
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = shared.get(&slot);
            let cleared = match value.as_deref().and_then(Entry::decode) {
                // Ended now, but keeping the return it holds for the next claim.
                Some(Entry::Asking {
                    fingerprint,
                    until,
                    pending: Some(pending),
                }) if fingerprint == ticket.key.0 && until == ticket.until => Entry::Asking {
                    fingerprint,
                    until: 0,
                    pending: Some(pending),
                }
                .encode(),
                Some(Entry::Asking {
                    fingerprint,
                    until,
                    pending: None,
                }) if fingerprint == ticket.key.0 && until == ticket.until => Vec::new(),
                Some(Entry::Lease(mut lease))
                    if lease.fingerprint == ticket.key.0
                        && lease.renewing_until == ticket.until =>
                {
                    lease.renewing_until = 0;
                    Entry::Lease(lease).encode()
                }
                _ => return,
            };
            // Lost only to a write of the same slot (another worker spending the lease): read
            // it again.
            if shared.set(&slot, &cleared, cas) {
                return;
            }
        }
    }
}

/// Batches a worker holds: per key, where the requests it took from a lease with
/// [`LeaseTable::take_batch`] are spent, in the worker's own VM memory, with no host call.
/// Direct-mapped like the table, with [`WORKER_BATCHES`] slots, so bounded; a batch displaced
/// or ended with requests left loses them (they stay counted in the tenant's window until
/// they leave it: under-admission, at most [`MAX_BATCH`] − 1 per batch).
#[derive(Debug, Default)]
pub struct WorkerBatches {
    slots: Vec<Option<Held>>,
    /// Requests given up since [`Self::take_lost`] last asked.
    lost: u64,
}

/// Slots of a worker's [`WorkerBatches`]: about the keys hot enough for batches at once.
const WORKER_BATCHES: usize = 64;

#[derive(Debug)]
struct Held {
    key: LeaseKey,
    left: u32,
    deadline: u64,
    /// When the batch was taken; the quota's reset counts down from it.
    taken_at: u64,
    leased: Leased,
}

impl Held {
    fn live(&self, now_ms: u64) -> bool {
        self.left > 0 && self.taken_at <= now_ms && now_ms < self.deadline
    }
}

impl WorkerBatches {
    fn index(key: LeaseKey) -> usize {
        // The remainder of a division by 64 fits any usize.
        (key.0 % WORKER_BATCHES as u64) as usize
    }

    /// How many requests a batch of `key` may take: [`MAX_BATCH`], or 1 while another key's
    /// live batch holds its slot (two busy keys sharing a slot would otherwise keep
    /// displacing each other's batches and give up a batch each time).
    pub fn room(&self, key: LeaseKey, now_ms: u64) -> u32 {
        match self.slots.get(Self::index(key)) {
            Some(Some(held)) if held.key != key && held.live(now_ms) => 1,
            _ => MAX_BATCH,
        }
    }

    /// The requests all its batches hold, given up (for a set about to be dropped).
    pub fn give_up(&mut self) -> u64 {
        let held: u64 = self
            .slots
            .drain(..)
            .flatten()
            .map(|h| u64::from(h.left))
            .sum();
        held.saturating_add(self.take_lost())
    }

    /// Spends one held request of `key`, if the worker holds a live batch of it: the
    /// admission, with the quota's resets counted down since the batch was taken.
    pub fn spend(&mut self, key: LeaseKey, now_ms: u64) -> Option<Leased> {
        let slot = self.slots.get_mut(Self::index(key))?;
        let held = slot.as_mut().filter(|held| held.key == key)?;
        if !held.live(now_ms) {
            self.lost = self.lost.saturating_add(u64::from(held.left));
            *slot = None;
            return None;
        }
        held.left = held.left.saturating_sub(1);
        let elapsed = now_ms.saturating_sub(held.taken_at);
        let mut leased = held.leased.clone();
        leased.quota.reset_ms = leased.quota.reset_ms.saturating_sub(elapsed);
        if let Some(month) = &mut leased.quota.monthly {
            month.reset_ms = month.reset_ms.saturating_sub(elapsed);
        }
        Some(leased)
    }

    /// Holds what `batch` left after its first request (taken at `now_ms`), in place of
    /// whatever batch held the slot.
    pub fn hold(&mut self, key: LeaseKey, batch: &Batch, now_ms: u64) {
        let left = batch.requests.saturating_sub(1);
        if left == 0 {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(WORKER_BATCHES, || None);
        }
        let Some(slot) = self.slots.get_mut(Self::index(key)) else {
            return;
        };
        if let Some(displaced) = slot.take() {
            self.lost = self.lost.saturating_add(u64::from(displaced.left));
        }
        *slot = Some(Held {
            key,
            left,
            deadline: batch.deadline,
            taken_at: now_ms,
            leased: batch.leased.clone(),
        });
    }

    /// Requests of batches that ended or were displaced with requests left, since the last
    /// call: counted as lost lease requests.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::shared_data::FakeShared;

    const TABLE: LeaseTable = LeaseTable {
        slots: 64,
        max_ttl_ms: 1_000,
        max_requests: 1_000,
    };

    /// The callout's timeout, and so how long a placeholder lasts.
    const TIMEOUT: u64 = 100;

    fn key(api_key: &str) -> LeaseKey {
        LeaseKey::of(api_key, "ingest", 1)
    }

    /// The name of the first of a key's two slots in [`TABLE`].
    fn first_slot(key: LeaseKey) -> String {
        TABLE.slot_name(TABLE.slots_of(key)[0])
    }

    fn quota(remaining: u32) -> Quota {
        Quota {
            policy: "pro".into(),
            limit: 1_000,
            window_seconds: 60,
            remaining,
            reset_ms: 30_000,
            monthly: None,
        }
    }

    fn grant(id: &str, requests: u32, ttl_ms: u32) -> Grant {
        Grant {
            tenant: "tn_1".into(),
            quota: quota(500),
            lease: Lease {
                id: id.into(),
                requests,
                ttl_ms,
            },
        }
    }

    /// Claims `api_key`'s slot at `now_ms`, failing the test otherwise.
    fn claim(table: &LeaseTable, shared: &FakeShared, api_key: &str, now_ms: u64) -> Claim {
        match table.take_or_claim(shared, key(api_key), now_ms, now_ms + TIMEOUT) {
            LeaseLookup::Claimed(claim) => claim,
            other => panic!("{api_key} at {now_ms}: expected a claim, got {other:?}"),
        }
    }

    /// Claims the slot at `dispatched_at` and stores `grant` answered at `answered_at`.
    fn granted(
        table: &LeaseTable,
        shared: &FakeShared,
        api_key: &str,
        grant: &Grant,
        dispatched_at: u64,
        answered_at: u64,
    ) -> Settled {
        let claim = claim(table, shared, api_key, dispatched_at);
        table.settle(
            shared,
            key(api_key),
            Some(claim.ticket),
            Some(grant),
            dispatched_at,
            || answered_at,
        )
    }

    /// How many requests in a row are admitted from the lease at `now_ms`.
    fn spend_all(table: &LeaseTable, shared: &FakeShared, api_key: &str, now_ms: u64) -> u32 {
        let mut spent = 0;
        while table.take(shared, key(api_key), now_ms).is_some() {
            spent += 1;
            assert!(spent <= 1_000_000, "a lease never ends");
        }
        spent
    }

    #[test]
    fn a_lease_admits_its_other_requests_then_the_next_one_asks_again() {
        let shared = FakeShared::default();
        let first = claim(&TABLE, &shared, "tg_a", 10_000);
        assert_eq!(
            (first.returned.clone(), first.evicted),
            (None, None),
            "nothing to hand back"
        );
        let settled = TABLE.settle(
            &shared,
            key("tg_a"),
            Some(first.ticket),
            Some(&grant("L1", 5, 1_000)),
            10_000,
            || 10_020,
        );
        assert_eq!(
            settled,
            Settled {
                granted: Some(5),
                stored: true,
                lost: None
            }
        );
        for now in [10_100, 10_200, 10_300, 10_400] {
            let leased = TABLE.take(&shared, key("tg_a"), now).expect("leased");
            assert_eq!(leased.tenant, "tn_1");
            assert_eq!(
                leased.quota,
                Quota {
                    reset_ms: 30_000 - (now - 10_020),
                    ..quota(500)
                },
                "the grant's remaining, never more; the reset counting down from the answer"
            );
        }
        assert_eq!(
            TABLE.take(&shared, key("tg_a"), 10_500),
            None,
            "the first request and four more: five"
        );
        let next = claim(&TABLE, &shared, "tg_a", 10_500);
        assert_eq!(next.returned, None, "used up: nothing to return");
    }

    #[test]
    fn an_expired_lease_hands_back_its_unused_requests_exactly_once() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 10, 1_000), 0, 5);
        for now in [1, 2, 3] {
            assert!(TABLE.take(&shared, key("tg_a"), now).is_some());
        }
        assert_eq!(
            TABLE.take(&shared, key("tg_a"), 1_000),
            None,
            "over at its deadline"
        );
        let returning = claim(&TABLE, &shared, "tg_a", 1_000);
        assert_eq!(
            returning.returned,
            Some(Unused {
                id: "L1".into(),
                requests: 6
            }),
            "10 granted, the first request and 3 more used"
        );
        for now in [1_000, 1_050, 1_099] {
            assert_eq!(
                TABLE.take_or_claim(&shared, key("tg_a"), now, now + TIMEOUT),
                LeaseLookup::Busy,
                "one request is asking: the others make plain callouts at {now}"
            );
        }
        // Its callout failed: the return is not sent again.
        TABLE.settle(
            &shared,
            key("tg_a"),
            Some(returning.ticket),
            None,
            1_000,
            || panic!("nothing is stored"),
        );
        let after = claim(&TABLE, &shared, "tg_a", 1_060);
        assert_eq!(
            after.returned, None,
            "handed back once, whatever became of it"
        );
    }

    #[test]
    fn the_deadline_counts_from_the_dispatch_and_is_capped_by_max_ttl() {
        let shared = FakeShared::default();
        // Sent at 1,000, answered 300 ms later: usable until 1,500, not 1,800.
        granted(
            &TABLE,
            &shared,
            "tg_a",
            &grant("L1", 100, 500),
            1_000,
            1_300,
        );
        assert!(TABLE.spend(&shared, key("tg_a"), 1_499).is_some());
        assert_eq!(TABLE.take(&shared, key("tg_a"), 1_500), None);

        // A TTL above max_ttl is cut to it.
        granted(
            &TABLE,
            &shared,
            "tg_b",
            &grant("L2", 100, 60_000),
            1_000,
            1_010,
        );
        assert!(TABLE.spend(&shared, key("tg_b"), 1_999).is_some());
        assert_eq!(TABLE.take(&shared, key("tg_b"), 2_000), None);
        assert_eq!(
            claim(&TABLE, &shared, "tg_b", 2_000).returned,
            Some(Unused {
                id: "L2".into(),
                requests: 98
            })
        );

        // An answer that arrives after the deadline leaves a lease that is already over.
        granted(&TABLE, &shared, "tg_c", &grant("L3", 7, 50), 3_000, 3_080);
        assert_eq!(TABLE.take(&shared, key("tg_c"), 3_080), None);
        assert_eq!(
            claim(&TABLE, &shared, "tg_c", 3_080).returned,
            Some(Unused {
                id: "L3".into(),
                requests: 6
            })
        );
    }

    #[test]
    fn a_clock_that_goes_back_ends_the_lease() {
        let shared = FakeShared::default();
        granted(
            &TABLE,
            &shared,
            "tg_a",
            &grant("L1", 10, 1_000),
            5_000,
            5_010,
        );
        assert_eq!(TABLE.take(&shared, key("tg_a"), 4_999), None);
        assert_eq!(
            claim(&TABLE, &shared, "tg_a", 4_999).returned,
            Some(Unused {
                id: "L1".into(),
                requests: 9
            })
        );
    }

    #[test]
    fn concurrent_requests_claim_once_and_never_spend_a_request_twice() {
        let shared = FakeShared::default();
        let claims: Vec<LeaseLookup> = (0..5)
            .map(|_| TABLE.take_or_claim(&shared, key("tg_a"), 100, 200))
            .collect();
        assert!(matches!(claims[0], LeaseLookup::Claimed(_)));
        assert!(
            claims[1..].iter().all(|c| *c == LeaseLookup::Busy),
            "{claims:?}"
        );
        let LeaseLookup::Claimed(first) = &claims[0] else {
            unreachable!()
        };
        TABLE.settle(
            &shared,
            key("tg_a"),
            Some(first.ticket),
            Some(&grant("L1", 20, 1_000)),
            100,
            || 110,
        );
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 120), 19);
    }

    /// Spends `n` requests of `api_key`'s lease at `now_ms`, failing the test otherwise.
    fn spend(table: &LeaseTable, shared: &FakeShared, api_key: &str, now_ms: u64, n: u32) {
        for spent in 0..n {
            assert!(
                table.take(shared, key(api_key), now_ms).is_some(),
                "{api_key}: only {spent} of {n} spent at {now_ms}"
            );
        }
    }

    #[test]
    fn a_large_lease_is_renewed_before_it_runs_out_and_its_rest_handed_back_once() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 101, 1_000), 0, 5);
        // 100 left, all spent by 250 ms: at that rate the last 9 would last under the 25 ms
        // runway, so 91 are spent, then the next request renews.
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 250), 91);
        let renewal = claim(&TABLE, &shared, "tg_a", 250);
        assert_eq!(
            (renewal.returned.clone(), renewal.evicted),
            (None, None),
            "nothing pending yet"
        );
        // During the renewal's round trip the others go on spending, no callout.
        spend(&TABLE, &shared, "tg_a", 251, 5);
        let leased = TABLE.take(&shared, key("tg_a"), 252).expect("leased");
        assert!(
            matches!(
                TABLE.take_or_claim(&shared, key("tg_a"), 252, 352),
                LeaseLookup::Taken(Batch { leased: l, requests: 1, .. }) if l == leased
            ),
            "spent, not claimed again"
        );
        let settled = TABLE.settle(
            &shared,
            key("tg_a"),
            Some(renewal.ticket),
            Some(&grant("L2", 101, 1_000)),
            250,
            || 255,
        );
        assert_eq!(
            settled,
            Settled {
                granted: Some(101),
                stored: true,
                lost: None
            },
            "the renewed lease's rest is handed back, not lost"
        );
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 500), 91, "the new lease");
        let next = claim(&TABLE, &shared, "tg_a", 500);
        assert_eq!(
            next.returned,
            Some(Unused {
                id: "L1".into(),
                requests: 2
            }),
            "9 left at the renewal, 7 spent during it"
        );
        // The renewal's callout carries it; a renewal that brings no lease starts no second
        // return of it.
        TABLE.settle(&shared, key("tg_a"), Some(next.ticket), None, 500, || 501);
        assert_eq!(claim(&TABLE, &shared, "tg_a", 502).returned, None);
    }

    #[test]
    fn a_large_lease_is_renewed_before_its_deadline_however_much_it_has_left() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 1_001, 1_000), 0, 5);
        // Barely spent, so it would not run out for a long time; but it ends at 1,000.
        spend(&TABLE, &shared, "tg_a", 500, 10);
        spend(&TABLE, &shared, "tg_a", 974, 1);
        assert_eq!(
            TABLE.take(&shared, key("tg_a"), 975),
            None,
            "within the runway of its deadline, a request renews"
        );
        let renewal = claim(&TABLE, &shared, "tg_a", 975);
        assert_eq!(renewal.returned, None);
        // The others go on spending it until the deadline, with no callout.
        spend(&TABLE, &shared, "tg_a", 990, 5);
        TABLE.settle(
            &shared,
            key("tg_a"),
            Some(renewal.ticket),
            Some(&grant("L2", 1_001, 1_000)),
            975,
            || 980,
        );
        spend(&TABLE, &shared, "tg_a", 1_500, 10);
        // The renewed lease's rest (1,000 − 16 spent) is handed back by the next claim, the
        // renewal of the new lease before its own deadline.
        let next = claim(&TABLE, &shared, "tg_a", 1_960);
        assert_eq!(
            next.returned,
            Some(Unused {
                id: "L1".into(),
                requests: 984
            })
        );
    }

    #[test]
    fn a_lease_used_up_while_renewed_waits_for_the_renewal() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 41, 1_000), 0, 5);
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 250), 37);
        let renewal = claim(&TABLE, &shared, "tg_a", 250);
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 251), 3, "the rest");
        assert_eq!(
            TABLE.take_or_claim(&shared, key("tg_a"), 252, 352),
            LeaseLookup::Busy,
            "a plain callout; a claim now would replace the renewal's answer"
        );
        // After the renewal's timeout the slot can be claimed again.
        let later = claim(&TABLE, &shared, "tg_a", renewal.ticket.until);
        assert_eq!((later.returned, later.evicted), (None, None), "used up");
    }

    #[test]
    fn a_renewal_without_a_lease_leaves_the_old_one_spending_and_renewable() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 41, 1_000), 0, 5);
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 250), 37);
        let renewal = claim(&TABLE, &shared, "tg_a", 250);
        TABLE.settle(
            &shared,
            key("tg_a"),
            Some(renewal.ticket),
            None,
            250,
            || 251,
        );
        let again = claim(&TABLE, &shared, "tg_a", 252);
        assert_eq!(again.returned, None);
        assert_eq!(
            spend_all(&TABLE, &shared, "tg_a", 253),
            3,
            "still the old lease"
        );
    }

    /// Lease L1 (40 requests after the granting one) spent down to its renewal by 250 ms,
    /// renewed then by L2 (40 more, until 1,250 ms): L1's last 3 are kept for the next claim.
    fn renewed(shared: &FakeShared) {
        granted(&TABLE, shared, "tg_a", &grant("L1", 41, 1_000), 0, 5);
        assert_eq!(spend_all(&TABLE, shared, "tg_a", 250), 37);
        let renewal = claim(&TABLE, shared, "tg_a", 250);
        TABLE.settle(
            shared,
            key("tg_a"),
            Some(renewal.ticket),
            Some(&grant("L2", 41, 1_000)),
            250,
            || 255,
        );
    }

    #[test]
    fn an_ended_lease_and_the_one_it_renewed_hand_back_one_each_claim_and_lose_none() {
        let shared = FakeShared::default();
        renewed(&shared);
        // L1 left 3 to hand back; L2 ends by its deadline with 40 unused.
        let next = claim(&TABLE, &shared, "tg_a", 1_250);
        let l2 = Unused {
            id: "L2".into(),
            requests: 40,
        };
        assert_eq!(
            (next.returned, next.evicted),
            (Some(l2), None),
            "one callout hands back one lease: the larger"
        );
        // The other waits in the slot for the next claim, through an answer with no lease...
        TABLE.settle(&shared, key("tg_a"), Some(next.ticket), None, 1_250, || {
            1_251
        });
        let l1 = Unused {
            id: "L1".into(),
            requests: 3,
        };
        let again = claim(&TABLE, &shared, "tg_a", 1_252);
        assert_eq!(again.returned, Some(l1.clone()));
        // ...or with one, which keeps it until its own claim.
        let shared = FakeShared::default();
        renewed(&shared);
        let next = claim(&TABLE, &shared, "tg_a", 1_250);
        let settled = TABLE.settle(
            &shared,
            key("tg_a"),
            Some(next.ticket),
            Some(&grant("L3", 5, 1_000)),
            1_250,
            || 1_255,
        );
        assert_eq!(settled.lost, None);
        assert_eq!(spend_all(&TABLE, &shared, "tg_a", 1_260), 4);
        assert_eq!(claim(&TABLE, &shared, "tg_a", 1_260).returned, Some(l1));
    }

    /// Shared data where another worker writes the slot between every read and write of the
    /// first `races` rounds: it spends a request of the same lease.
    struct Racing<'a> {
        inner: &'a FakeShared,
        races: std::cell::Cell<u32>,
        now_ms: u64,
    }

    impl SharedData for Racing<'_> {
        fn get(&self, slot: &str) -> (Option<Vec<u8>>, Option<u32>) {
            let read = self.inner.get(slot);
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                assert!(TABLE.take(self.inner, key("tg_a"), self.now_ms).is_some());
            }
            read
        }

        fn set(&self, slot: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.inner.set(slot, value, cas)
        }
    }

    #[test]
    fn a_lost_compare_and_swap_is_retried_and_each_request_spent_once() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 10, 1_000), 0, 1);
        let racing = Racing {
            inner: &shared,
            races: std::cell::Cell::new(2),
            now_ms: 10,
        };
        assert!(TABLE.take(&racing, key("tg_a"), 10).is_some(), "third try");
        assert_eq!(
            spend_all(&TABLE, &shared, "tg_a", 10),
            6,
            "9 left, 2 by the other worker, 1 by this one"
        );
        let always = Racing {
            inner: &shared,
            races: std::cell::Cell::new(u32::MAX),
            now_ms: 30,
        };
        granted(&TABLE, &shared, "tg_a", &grant("L2", 100, 1_000), 20, 21);
        assert_eq!(
            TABLE.take_or_claim(&always, key("tg_a"), 30, 130),
            LeaseLookup::Busy,
            "giving up costs a plain callout"
        );
    }

    #[test]
    fn a_placeholder_lasts_until_the_callouts_timeout() {
        let shared = FakeShared::default();
        let first = claim(&TABLE, &shared, "tg_a", 1_000);
        assert_eq!(first.ticket.until, 1_100);
        assert_eq!(
            TABLE.take_or_claim(&shared, key("tg_a"), 1_099, 1_199),
            LeaseLookup::Busy
        );
        let second = claim(&TABLE, &shared, "tg_a", 1_100);
        // The first request's answer arrives late: it clears nothing of the second's.
        TABLE.settle(
            &shared,
            key("tg_a"),
            Some(first.ticket),
            None,
            1_000,
            || panic!("nothing is stored"),
        );
        assert_eq!(
            TABLE.take_or_claim(&shared, key("tg_a"), 1_150, 1_250),
            LeaseLookup::Busy,
            "the second claim stands"
        );
        TABLE.settle(
            &shared,
            key("tg_a"),
            Some(second.ticket),
            None,
            1_100,
            || panic!("nothing is stored"),
        );
        claim(&TABLE, &shared, "tg_a", 1_150);
    }

    #[test]
    fn taking_never_claims_and_writes_nothing_without_a_live_lease() {
        let shared = FakeShared::default();
        assert_eq!(TABLE.take(&shared, key("tg_a"), 0), None);
        assert!(shared.0.borrow().is_empty());
        granted(&TABLE, &shared, "tg_a", &grant("L1", 3, 1_000), 0, 1);
        let before = shared.0.borrow().clone();
        assert_eq!(TABLE.take(&shared, key("tg_a"), 1_000), None);
        assert_eq!(*shared.0.borrow(), before);
    }

    #[test]
    fn another_keys_live_lease_keeps_its_slot_until_it_ends() {
        let one_slot = LeaseTable { slots: 1, ..TABLE };
        let shared = FakeShared::default();
        granted(&one_slot, &shared, "tg_a", &grant("LA", 10, 1_000), 0, 1);
        assert_eq!(
            one_slot.take_or_claim(&shared, key("tg_b"), 10, 110),
            LeaseLookup::Busy,
            "tg_b makes plain callouts while tg_a's lease lives"
        );
        assert!(one_slot.take(&shared, key("tg_a"), 20).is_some());
        let taken_over = claim(&one_slot, &shared, "tg_b", 1_000);
        assert_eq!(
            taken_over.returned, None,
            "tg_a's lease is not tg_b's to return"
        );
        assert_eq!(
            taken_over.evicted,
            Some(8),
            "tg_a's 8 unused requests are lost"
        );
    }

    #[test]
    fn a_key_whose_first_slot_holds_another_live_lease_takes_its_second() {
        let eight = LeaseTable { slots: 8, ..TABLE };
        // Two keys with the same first slot and different second ones.
        let names: Vec<String> = (0..200).map(|i| format!("tg_{i}")).collect();
        let (a, b) = names
            .iter()
            .flat_map(|a| names.iter().map(move |b| (a, b)))
            .find(|(a, b)| {
                let ([a1, a2], [b1, b2]) = (eight.slots_of(key(a)), eight.slots_of(key(b)));
                a != b && a1 == b1 && a2 != b2 && a1 != a2 && b1 != b2
            })
            .expect("such a pair among 200 keys");
        let shared = FakeShared::default();
        granted(&eight, &shared, a, &grant("LA", 10, 1_000), 0, 1);
        // With one slot b would make plain callouts while a's lease lives; it claims its
        // second and gets a lease there, and both keys spend their own.
        granted(&eight, &shared, b, &grant("LB", 10, 1_000), 10, 11);
        for now in [20, 21, 22] {
            assert!(eight.take(&shared, key(a), now).is_some());
            assert!(eight.take(&shared, key(b), now).is_some());
        }
        // b's next claim finds its ended lease in the second slot and hands it back, even
        // once a's has ended and freed the first.
        let again = claim(&eight, &shared, b, 1_100);
        assert_eq!(
            again.returned,
            Some(Unused {
                id: "LB".into(),
                requests: 6
            })
        );
        assert_eq!(again.ticket.slot, eight.slots_of(key(b))[1]);
    }

    /// Shared data where another request's claim of the same key lands just before this
    /// one's first write.
    struct ClaimedMeanwhile<'a> {
        inner: &'a FakeShared,
        key: LeaseKey,
        done: std::cell::Cell<bool>,
    }

    impl SharedData for ClaimedMeanwhile<'_> {
        fn get(&self, slot: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(slot)
        }

        fn set(&self, slot: &str, value: &[u8], cas: Option<u32>) -> bool {
            if !self.done.replace(true) {
                let theirs = Entry::Asking {
                    fingerprint: self.key.0,
                    until: 1_000,
                    pending: None,
                };
                self.inner.set(slot, &theirs.encode(), None);
            }
            self.inner.set(slot, value, cas)
        }
    }

    #[test]
    fn a_claim_beaten_to_its_first_slot_by_its_own_key_leaves_the_second_alone() {
        let shared = FakeShared::default();
        let [first, second] = TABLE.slots_of(key("tg_a"));
        assert_ne!(first, second);
        shared.set(&first_slot(key("tg_a")), b"garbage", None);
        let racing = ClaimedMeanwhile {
            inner: &shared,
            key: key("tg_a"),
            done: std::cell::Cell::new(false),
        };
        assert_eq!(
            TABLE.take_or_claim(&racing, key("tg_a"), 0, 100),
            LeaseLookup::Busy,
            "the other request asks; this one makes a plain callout"
        );
        assert!(holds(
            shared.get(&TABLE.slot_name(first)).0.as_deref(),
            key("tg_a")
        ));
        assert_eq!(shared.get(&TABLE.slot_name(second)).0, None);
    }

    #[test]
    fn a_grant_overwrites_whatever_took_the_slot_meanwhile_and_counts_the_loss() {
        let one_slot = LeaseTable { slots: 1, ..TABLE };
        let shared = FakeShared::default();
        let slow = claim(&one_slot, &shared, "tg_a", 0);
        // tg_a's placeholder ran out before its answer; tg_b claimed the slot and got a lease.
        granted(
            &one_slot,
            &shared,
            "tg_b",
            &grant("LB", 20, 1_000),
            100,
            110,
        );
        assert!(one_slot.take(&shared, key("tg_b"), 120).is_some());
        let settled = one_slot.settle(
            &shared,
            key("tg_a"),
            Some(slow.ticket),
            Some(&grant("LA", 5, 1_000)),
            0,
            || 130,
        );
        assert_eq!(
            settled,
            Settled {
                granted: Some(5),
                stored: true,
                lost: Some(18)
            },
            "tg_b's lease had 18 left"
        );
        assert_eq!(one_slot.take(&shared, key("tg_b"), 140), None);
        assert_eq!(spend_all(&one_slot, &shared, "tg_a", 140), 4);
    }

    #[test]
    fn a_lease_of_one_request_keeps_nothing_and_frees_the_slot() {
        let shared = FakeShared::default();
        let settled = granted(&TABLE, &shared, "tg_a", &grant("L1", 1, 1_000), 0, 1);
        assert_eq!(settled.granted, Some(1));
        assert!(!settled.stored);
        assert_eq!(TABLE.take(&shared, key("tg_a"), 2), None);
        assert_eq!(claim(&TABLE, &shared, "tg_a", 2).returned, None);
    }

    #[test]
    fn a_lease_too_large_to_store_is_counted_as_lost() {
        let shared = FakeShared::default();
        let mut huge = grant("L1", 10, 1_000);
        huge.tenant = "t".repeat(MAX_TEXT + 1);
        let settled = granted(&TABLE, &shared, "tg_a", &huge, 0, 1);
        assert_eq!(
            settled,
            Settled {
                granted: Some(10),
                stored: false,
                lost: Some(9)
            }
        );
        assert_eq!(TABLE.take(&shared, key("tg_a"), 2), None);
        claim(&TABLE, &shared, "tg_a", 2);
    }

    #[test]
    fn routes_and_costs_have_leases_of_their_own() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &grant("L1", 10, 1_000), 0, 1);
        for other in [
            LeaseKey::of("tg_a", "predict", 1),
            LeaseKey::of("tg_a", "ingest", 5),
            LeaseKey::of("tg_b", "ingest", 1),
        ] {
            assert_eq!(TABLE.take(&shared, other, 2), None, "{other:?}");
        }
    }

    #[test]
    fn ten_thousand_keys_stay_within_the_slots_and_no_key_is_stored() {
        let shared = FakeShared::default();
        for i in 0..10_000u64 {
            let api_key = format!("tg_secret_{i}");
            if let LeaseLookup::Claimed(claim) =
                TABLE.take_or_claim(&shared, key(&api_key), i * 2_000, i * 2_000 + TIMEOUT)
            {
                TABLE.settle(
                    &shared,
                    key(&api_key),
                    Some(claim.ticket),
                    Some(&grant("L", 10, 1_000)),
                    i * 2_000,
                    || i * 2_000,
                );
            }
        }
        let stored = shared.0.borrow();
        assert!(stored.len() <= 64, "{} slots", stored.len());
        let bytes: Vec<u8> = stored.values().flat_map(|(v, _)| v.clone()).collect();
        assert!(!String::from_utf8_lossy(&bytes).contains("tg_secret"));
    }

    #[test]
    fn a_monthly_quota_is_kept_with_its_reset_counting_down() {
        let shared = FakeShared::default();
        let mut monthly = grant("L1", 3, 1_000);
        monthly.quota.monthly = Some(MonthlyQuota {
            limit: 100_000,
            remaining: 4_000,
            reset_ms: 86_400_000,
        });
        granted(&TABLE, &shared, "tg_a", &monthly, 0, 100);
        let leased = TABLE.take(&shared, key("tg_a"), 600).expect("leased");
        assert_eq!(
            leased.quota.monthly,
            Some(MonthlyQuota {
                limit: 100_000,
                remaining: 4_000,
                reset_ms: 86_400_000 - 500
            })
        );
    }

    #[test]
    fn entries_survive_encoding_and_garbage_is_no_entry() {
        let lease = Entry::Lease(LeaseEntry {
            fingerprint: u64::MAX,
            left: u32::MAX,
            dispatched_at: 1,
            deadline: 2,
            reset_at: 3,
            limit: 4,
            window_seconds: 5,
            remaining: 6,
            month: Some((7, 8, 9)),
            stored_left: 10,
            renewing_until: 11,
            pending: Some(Unused {
                id: "1700000000500.16.30".into(),
                requests: 12,
            }),
            id: "1700000001000.17.40".into(),
            tenant: "tn_ü".into(),
            policy: "pro".into(),
        });
        let bytes = lease.encode();
        assert_eq!(Entry::decode(&bytes), Some(lease.clone()));
        assert_eq!(
            bytes[LEFT_OFFSET..LEFT_OFFSET + 8],
            u64::from(u32::MAX).to_le_bytes(),
            "the requests left sit where spending one rewrites them"
        );
        let asking = Entry::Asking {
            fingerprint: 3,
            until: 4,
            pending: None,
        };
        assert_eq!(Entry::decode(&asking.encode()), Some(asking));
        let keeping = Entry::Asking {
            fingerprint: 3,
            until: 4,
            pending: Some(Unused {
                id: "1700000000500.16.30".into(),
                requests: 5,
            }),
        };
        let keeping_bytes = keeping.encode();
        assert_eq!(Entry::decode(&keeping_bytes), Some(keeping));
        assert_eq!(
            Entry::decode(&keeping_bytes[..keeping_bytes.len() - 1]),
            None,
            "cut short"
        );
        assert_eq!(Entry::decode(b""), None);
        assert_eq!(Entry::decode(&bytes[..bytes.len() - 1]), None, "cut short");
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert_eq!(Entry::decode(&longer), None, "trailing bytes");
        let mut kind = bytes.clone();
        kind[8..16].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(Entry::decode(&kind), None, "a kind from nowhere");
        let mut huge_length = bytes.clone();
        huge_length[16 * 8..17 * 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Entry::decode(&huge_length), None);
        let mut pending_without_requests = bytes.clone();
        pending_without_requests[15 * 8..16 * 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            Entry::decode(&pending_without_requests),
            None,
            "a pending id with no requests"
        );
        let mut not_utf8 = bytes;
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert_eq!(Entry::decode(&not_utf8), None);
    }

    #[test]
    fn garbage_in_a_slot_is_claimed_over() {
        let shared = FakeShared::default();
        shared.set(&first_slot(key("tg_a")), b"garbage", None);
        assert_eq!(TABLE.take(&shared, key("tg_a"), 0), None);
        claim(&TABLE, &shared, "tg_a", 0);
    }

    /// A grant of `requests` for a tenant far from its limit.
    fn roomy(requests: u32) -> Grant {
        let mut grant = grant("L1", requests, 1_000);
        grant.quota.remaining = 100_000;
        grant
    }

    /// The slot's bytes, to see that a worker's spends leave it alone.
    fn slot_bytes(shared: &FakeShared, api_key: &str) -> Option<Vec<u8>> {
        shared.get(&first_slot(key(api_key))).0
    }

    #[test]
    fn a_batch_takes_a_share_of_what_is_left_and_its_worker_spends_it_alone() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &roomy(1_001), 0, 5);
        let mut worker = WorkerBatches::default();
        assert_eq!(worker.spend(key("tg_a"), 10), None, "nothing held yet");

        let batch = TABLE
            .take_batch(&shared, key("tg_a"), 10, MAX_BATCH)
            .expect("leased");
        assert_eq!((batch.requests, batch.deadline), (MAX_BATCH, 1_000));
        assert_eq!(batch.leased.quota.reset_ms, 30_000 - 5);
        worker.hold(key("tg_a"), &batch, 10);
        let table_after_batch = slot_bytes(&shared, "tg_a");
        for now in 11..11 + u64::from(MAX_BATCH) - 1 {
            let leased = worker.spend(key("tg_a"), now).expect("held");
            assert_eq!(leased.tenant, "tn_1");
            assert_eq!(
                leased.quota.reset_ms,
                batch.leased.quota.reset_ms - (now - 10),
                "the reset counts down"
            );
        }
        assert_eq!(worker.spend(key("tg_a"), 30), None, "the batch is spent");
        assert_eq!(slot_bytes(&shared, "tg_a"), table_after_batch, "no write");
        assert_eq!(worker.take_lost(), 0);
        // The table gave out the batch only: the rest is still there.
        let rest = std::iter::from_fn(|| TABLE.spend(&shared, key("tg_a"), 30)).count();
        assert_eq!(rest, (1_000 - MAX_BATCH) as usize);
    }

    #[test]
    fn near_its_end_a_lease_is_taken_one_request_at_a_time() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &roomy(2 * BATCH_SHARE), 0, 5);
        let batch = TABLE
            .take_batch(&shared, key("tg_a"), 10, MAX_BATCH)
            .expect("leased");
        assert_eq!(batch.requests, 1, "under a share of one left");
        let mut worker = WorkerBatches::default();
        worker.hold(key("tg_a"), &batch, 10);
        assert_eq!(worker.spend(key("tg_a"), 11), None, "nothing held");

        // Near the limit too: a large lease whose grant left under BATCH_ROOM in the window.
        let mut tight = roomy(1_001);
        tight.quota.remaining = BATCH_ROOM - 1;
        granted(&TABLE, &shared, "tg_b", &tight, 0, 5);
        let batch = TABLE
            .take_batch(&shared, key("tg_b"), 10, MAX_BATCH)
            .expect("leased");
        assert_eq!(batch.requests, 1, "too little room for batches");
        tight.quota.remaining = BATCH_ROOM;
        granted(&TABLE, &shared, "tg_c", &tight, 0, 5);
        let batch = TABLE
            .take_batch(&shared, key("tg_c"), 10, MAX_BATCH)
            .expect("leased");
        assert_eq!(batch.requests, MAX_BATCH, "room enough");
    }

    #[test]
    fn two_workers_never_spend_more_than_the_lease() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &roomy(1_001), 0, 5);
        let mut workers = [WorkerBatches::default(), WorkerBatches::default()];
        let mut admitted = 0;
        for n in 0u64.. {
            let worker = &mut workers[(n % 2) as usize];
            let now = 10 + n / 100;
            if worker.spend(key("tg_a"), now).is_some() {
                admitted += 1;
            } else if let Some(batch) = TABLE.take_batch(&shared, key("tg_a"), now, MAX_BATCH) {
                worker.hold(key("tg_a"), &batch, now);
                admitted += 1;
            } else if TABLE.spend(&shared, key("tg_a"), now).is_some() {
                // Due for renewal: taken one by one, as the renewing request's would be.
                admitted += 1;
            } else if n > 2_000 {
                break;
            }
        }
        assert_eq!(admitted, 1_000, "every request of the lease, once");
        assert_eq!(
            workers
                .iter_mut()
                .map(WorkerBatches::take_lost)
                .sum::<u64>(),
            0
        );
    }

    #[test]
    fn a_batch_ends_with_its_lease_and_what_it_held_is_given_up() {
        let shared = FakeShared::default();
        granted(&TABLE, &shared, "tg_a", &roomy(1_001), 0, 5);
        let batch = TABLE
            .take_batch(&shared, key("tg_a"), 100, MAX_BATCH)
            .expect("leased");
        let mut worker = WorkerBatches::default();
        worker.hold(key("tg_a"), &batch, 100);
        assert_eq!(worker.spend(key("tg_a"), 99), None, "the clock went back");
        assert_eq!(worker.take_lost(), u64::from(MAX_BATCH - 1));

        worker.hold(key("tg_a"), &batch, 100);
        assert!(worker.spend(key("tg_a"), 999).is_some());
        assert_eq!(
            worker.spend(key("tg_a"), 1_000),
            None,
            "the lease's deadline"
        );
        assert_eq!(worker.take_lost(), u64::from(MAX_BATCH - 2));
        assert_eq!(worker.take_lost(), 0, "counted once");

        // Another key sharing the worker's slot takes one request at a time while this
        // key's batch is live, rather than displace it; a batch once ended, it may take one.
        let other = (0..)
            .map(|n| format!("tg_{n}"))
            .find(|k| {
                k != "tg_a" && WorkerBatches::index(key(k)) == WorkerBatches::index(key("tg_a"))
            })
            .unwrap();
        worker.hold(key("tg_a"), &batch, 100);
        assert_eq!(worker.room(key("tg_a"), 101), MAX_BATCH, "its own");
        assert_eq!(worker.room(key(&other), 101), 1);
        assert_eq!(worker.room(key(&other), 1_000), MAX_BATCH, "ended");
        worker.hold(key(&other), &batch, 1_000);
        assert_eq!(
            worker.take_lost(),
            u64::from(MAX_BATCH - 1),
            "displaced once ended"
        );
        assert!(
            worker.spend(key(&other), 1_000).is_none(),
            "past the batch's deadline"
        );
        assert_eq!(
            worker.give_up(),
            u64::from(MAX_BATCH - 1),
            "the other's batch, ended unspent"
        );
        assert_eq!(worker.give_up(), 0, "counted once");
    }
}
