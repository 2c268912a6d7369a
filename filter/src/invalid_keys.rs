//! The invalid-key budget: a client address that presents more than `budget` unknown keys
//! within `window` is refused at the edge (429 `too_many_invalid_keys`) until that window
//! ends, without a callout. The deny cache makes a repeated unknown key cheap; this makes a
//! stream of distinct random keys from one address cheap too: it costs about `budget + 1`
//! callouts per `window` per Envoy, not one per request, and its refusals are held before
//! they are sent ([`crate::held_replies`]), so a client that asks again the moment it is
//! answered cannot make them a flood of its own.
//!
//! The counts live in proxy-wasm shared data like the deny cache (every worker of one Envoy
//! sees them; one Envoy does not see another's): a fixed number of direct-mapped slots
//! (`tollgate.invalid.<n>`), a newer address overwriting an older one in its slot, writes by
//! compare-and-swap (but for a slot's very first write, which has no token to compare: two
//! workers writing it at once lose one count). A slot keeps a 64-bit hash of the address,
//! never the address. The window is fixed: it starts at an address's first unknown key and is
//! not extended by later ones, so an address is refused for at most `window`.
//!
//! What counts is an unknown-key *answer* from the control-plane: malformed keys are refused
//! without a callout anyway, and an unknown key answered from the deny cache costs nothing.
//! Once over budget, the address's requests that would need a callout are refused, whatever
//! key they carry; requests the deny cache answers are answered as usual, and an expired
//! cache entry's one refresh callout still goes out (it is already limited to one per
//! `max_ttl`).
//!
//! The address is Envoy's `source.address`, the peer of the downstream connection (the
//! client, as long as Envoy is the edge and `use_remote_address: true`; behind a load
//! balancer, the address Envoy trusts through `xff_num_trusted_hops`). Clients behind one NAT
//! or proxy share one address and so one budget: a client there that floods random keys gets
//! its neighbours refused for the rest of the window. IPv6 addresses count by their /64
//! prefix, the block one host is usually given, so an attacker cannot take a fresh budget
//! from each of its 2^64 addresses.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::shared_data::{CAS_ATTEMPTS, SharedData, slot_key};

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKeys {
    /// Unknown keys an address may present per window; the next one closes the window to it.
    pub budget: u32,
    pub window_ms: u64,
    pub slots: u32,
}

/// A client address, as the budget knows it: a 64-bit hash of its IP (IPv6: of its /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

impl ClientId {
    /// The client of Envoy's `source.address` property: `"203.0.113.7:51234"`,
    /// `"[2001:db8::1]:51234"`, or an address without a port. The port is dropped (each
    /// connection has its own), an IPv4-mapped IPv6 address counts as its IPv4 address, and
    /// IPv6 counts by its /64. Anything else (a pipe, an internal listener) is hashed as it
    /// is: every client of it shares one budget. `None` for an empty value.
    pub fn from_source_address(address: &[u8]) -> Option<ClientId> {
        Self::hashed(address, 64)
    }

    /// As [`Self::from_source_address`], but one host: IPv6 by its whole address, as the
    /// control-plane counts its per-address budgets.
    pub fn host_of_source_address(address: &[u8]) -> Option<ClientId> {
        Self::hashed(address, 128)
    }

    /// The hash of the address, IPv6 by its first `ipv6_bits` (64 or 128).
    fn hashed(address: &[u8], ipv6_bits: u32) -> Option<ClientId> {
        let text = std::str::from_utf8(address).ok().map(str::trim);
        let ip = text.and_then(|text| {
            text.parse::<SocketAddr>()
                .map(|socket| socket.ip())
                .or_else(|_| text.parse::<IpAddr>())
                .ok()
        });
        let mut hasher = DefaultHasher::new();
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(ip)) => (4u8, ip.to_bits()).hash(&mut hasher),
            Some(IpAddr::V6(ip)) => {
                let prefix = ip
                    .to_bits()
                    .checked_shr(128u32.saturating_sub(ipv6_bits))
                    .unwrap_or(0);
                (6u8, prefix).hash(&mut hasher);
            }
            None if address.trim_ascii().is_empty() => return None,
            None => (0u8, address).hash(&mut hasher),
        }
        Some(ClientId(hasher.finish()))
    }
}

/// What recording an unknown key did to the address's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted; the address is still within its budget, or was already over it.
    Counted,
    /// This unknown key took the address over its budget: its next requests are refused.
    BudgetExceeded,
    /// Another worker kept winning the slot; not counted.
    Lost,
}

/// One slot: whose it is, when its window ends, and how many unknown keys it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    client: u64,
    window_ends_at: u64,
    unknown_keys: u64,
}

impl Entry {
    fn encode(&self) -> [u8; 24] {
        let mut bytes = [0; 24];
        for (chunk, number) in
            bytes
                .chunks_exact_mut(8)
                .zip([self.client, self.window_ends_at, self.unknown_keys])
        {
            chunk.copy_from_slice(&number.to_le_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut numbers = bytes
            .chunks_exact(8)
            .map(|chunk| chunk.try_into().ok().map(u64::from_le_bytes));
        let mut number = || numbers.next().flatten();
        let entry = Entry {
            client: number()?,
            window_ends_at: number()?,
            unknown_keys: number()?,
        };
        (bytes.len() == 24).then_some(entry)
    }

    /// Whether this is `client`'s window and it is still open at `now_ms`.
    fn current(&self, client: ClientId, now_ms: u64) -> bool {
        self.client == client.0 && now_ms < self.window_ends_at
    }
}

impl InvalidKeys {
    fn slot_key(&self, client: ClientId) -> String {
        slot_key("invalid", client.0, self.slots)
    }

    /// Milliseconds until `client` may make callouts again, if it is over its budget at
    /// `now_ms`; `None` when its request may go on to the control-plane. Reads one slot and
    /// writes nothing.
    pub fn refused_for(
        &self,
        shared: &impl SharedData,
        client: ClientId,
        now_ms: u64,
    ) -> Option<u64> {
        let (value, _) = shared.get(&self.slot_key(client));
        let entry = Entry::decode(&value?)?;
        (entry.current(client, now_ms) && entry.unknown_keys > u64::from(self.budget))
            .then(|| entry.window_ends_at - now_ms)
    }

    /// Counts an unknown-key answer to a request of `client` at `now_ms`, opening a window
    /// when the address has none open (its old one ended, or another address held the slot).
    pub fn record(&self, shared: &impl SharedData, client: ClientId, now_ms: u64) -> Recorded {
        let slot = self.slot_key(client);
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = shared.get(&slot);
            let entry = match value.as_deref().and_then(Entry::decode) {
                Some(old) if old.current(client, now_ms) => Entry {
                    unknown_keys: old.unknown_keys.saturating_add(1),
                    ..old
                },
                _ => Entry {
                    client: client.0,
                    window_ends_at: now_ms.saturating_add(self.window_ms),
                    unknown_keys: 1,
                },
            };
            if shared.set(&slot, &entry.encode(), cas) {
                return if entry.unknown_keys == u64::from(self.budget) + 1 {
                    Recorded::BudgetExceeded
                } else {
                    Recorded::Counted
                };
            }
        }
        Recorded::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::shared_data::FakeShared;

    const BUDGET: InvalidKeys = InvalidKeys {
        budget: 3,
        window_ms: 10_000,
        slots: 64,
    };

    fn client(address: &str) -> ClientId {
        ClientId::from_source_address(address.as_bytes()).unwrap()
    }

    #[test]
    fn an_address_over_its_budget_is_refused_until_its_window_ends() {
        let shared = FakeShared::default();
        let attacker = client("203.0.113.7:40001");
        for now in [1_000, 1_100, 1_200] {
            assert_eq!(BUDGET.refused_for(&shared, attacker, now), None);
            assert_eq!(BUDGET.record(&shared, attacker, now), Recorded::Counted);
        }
        assert_eq!(
            BUDGET.refused_for(&shared, attacker, 1_300),
            None,
            "three unknown keys are within a budget of three"
        );
        assert_eq!(
            BUDGET.record(&shared, attacker, 1_300),
            Recorded::BudgetExceeded,
            "the fourth is one too many"
        );
        assert_eq!(
            BUDGET.refused_for(&shared, attacker, 1_400),
            Some(9_600),
            "refused until the window that opened at 1 000 ends"
        );
        assert_eq!(BUDGET.record(&shared, attacker, 1_500), Recorded::Counted);
        assert_eq!(
            BUDGET.refused_for(&shared, attacker, 10_999),
            Some(1),
            "more unknown keys do not extend the window"
        );
        assert_eq!(BUDGET.refused_for(&shared, attacker, 11_000), None);
        assert_eq!(
            BUDGET.record(&shared, attacker, 11_000),
            Recorded::Counted,
            "a new window, with a fresh budget"
        );
        assert_eq!(BUDGET.refused_for(&shared, attacker, 11_001), None);
    }

    #[test]
    fn other_addresses_keep_their_own_budget_and_the_port_does_not_matter() {
        let shared = FakeShared::default();
        for port in 40_000..40_010 {
            BUDGET.record(&shared, client(&format!("203.0.113.7:{port}")), 0);
        }
        assert_eq!(
            BUDGET.refused_for(&shared, client("203.0.113.7:55555"), 1),
            Some(9_999),
            "ten connections, one address"
        );
        assert_eq!(
            BUDGET.refused_for(&shared, client("203.0.113.8:40000"), 1),
            None
        );
        assert_eq!(
            BUDGET.refused_for(&shared, client("127.0.0.2:40000"), 1),
            None
        );
    }

    #[test]
    fn addresses_are_read_as_envoy_writes_them() {
        let same = [
            ("203.0.113.7:1234", "203.0.113.7:80"),
            ("203.0.113.7", "203.0.113.7:80"),
            ("[::ffff:203.0.113.7]:1234", "203.0.113.7:80"),
            ("[::1]:1234", "[::1]:80"),
            ("::1", "[::1]:80"),
            ("[2001:db8:1:2:aaaa::1]:1", "[2001:db8:1:2:bbbb::2]:2"),
            (" 198.51.100.1:9 ", "198.51.100.1:10"),
        ];
        for (one, other) in same {
            assert_eq!(client(one), client(other), "{one} and {other}");
        }
        let different = [
            ("203.0.113.7:1234", "203.0.113.8:1234"),
            ("[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1"),
            ("[::1]:1234", "127.0.0.1:1234"),
            ("0.0.0.1:1", "[::1]:1"),
        ];
        for (one, other) in different {
            assert_ne!(client(one), client(other), "{one} and {other}");
        }
        assert_eq!(client("envoy://internal"), client("envoy://internal"));
        assert_ne!(client("envoy://internal"), client("envoy://other"));
        assert_eq!(ClientId::from_source_address(b""), None);
        assert_eq!(ClientId::from_source_address(b"  "), None);
        assert!(ClientId::from_source_address(b"\xff\xfe:1").is_some());

        // One host: IPv6 by its whole address, the port still dropped.
        let host = |address: &str| ClientId::host_of_source_address(address.as_bytes());
        assert_ne!(
            host("[2001:db8:1:2:aaaa::1]:1"),
            host("[2001:db8:1:2:bbbb::2]:1")
        );
        assert_eq!(host("[2001:db8:1:2::1]:1"), host("[2001:db8:1:2::1]:2"));
        assert_eq!(host("203.0.113.7:1"), Some(client("203.0.113.7:2")));
    }

    #[test]
    fn a_slot_keeps_a_hash_never_the_address() {
        let shared = FakeShared::default();
        BUDGET.record(&shared, client("203.0.113.7:1234"), 0);
        let stored: Vec<u8> = shared
            .0
            .borrow()
            .values()
            .flat_map(|(v, _)| v.clone())
            .collect();
        assert_eq!(stored.len(), 24);
        assert!(!String::from_utf8_lossy(&stored).contains("203.0.113"));
        assert!(!stored.windows(4).any(|w| w == [203, 0, 113, 7]));
    }

    #[test]
    fn ten_thousand_addresses_stay_within_the_slots_and_the_newest_wins() {
        let shared = FakeShared::default();
        for i in 0..10_000u32 {
            let address = std::net::Ipv4Addr::from_bits(0x0a00_0000 + i);
            for _ in 0..=BUDGET.budget {
                BUDGET.record(&shared, client(&format!("{address}:1")), 0);
            }
        }
        assert!(shared.0.borrow().len() <= 64, "{}", shared.0.borrow().len());
        let newest = client("10.0.39.15:1"); // 10.0.0.0 + 9 999
        assert_eq!(BUDGET.refused_for(&shared, newest, 1), Some(9_999));
    }

    #[test]
    fn an_entry_of_another_address_in_the_slot_is_replaced_not_added_to() {
        let one_slot = InvalidKeys { slots: 1, ..BUDGET };
        let shared = FakeShared::default();
        let (a, b) = (client("192.0.2.1:1"), client("192.0.2.2:1"));
        for _ in 0..3 {
            one_slot.record(&shared, a, 0);
        }
        assert_eq!(one_slot.record(&shared, b, 10), Recorded::Counted);
        assert_eq!(
            one_slot.record(&shared, a, 20),
            Recorded::Counted,
            "a starts over: b's one key is not a's fourth"
        );
        assert_eq!(one_slot.refused_for(&shared, a, 30), None);
        assert_eq!(one_slot.refused_for(&shared, b, 30), None);
    }

    #[test]
    fn a_lost_compare_and_swap_is_retried_then_given_up() {
        /// Shared data where every write loses.
        struct Contended(FakeShared);
        impl SharedData for Contended {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                self.0.get(key)
            }
            fn set(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> bool {
                false
            }
        }
        let shared = Contended(FakeShared::default());
        assert_eq!(
            BUDGET.record(&shared, client("192.0.2.1:1"), 0),
            Recorded::Lost
        );
    }

    #[test]
    fn garbage_in_a_slot_is_no_entry() {
        let shared = FakeShared::default();
        let attacker = client("192.0.2.1:1");
        let slot = BUDGET.slot_key(attacker);
        for garbage in [&b""[..], b"short", &[0xff; 25]] {
            shared.set(&slot, garbage, None);
            assert_eq!(BUDGET.refused_for(&shared, attacker, 0), None);
            assert_eq!(BUDGET.record(&shared, attacker, 0), Recorded::Counted);
        }
        let entry = Entry {
            client: 1,
            window_ends_at: 2,
            unknown_keys: 3,
        };
        assert_eq!(Entry::decode(&entry.encode()), Some(entry));
    }
}
