//! The layout of every Redis key Tollgate uses, built in one place.
//!
//! Keys of one tenant share the hash tag `{<tenant id>}`: Redis Cluster hashes only the part in
//! braces, so all of a tenant's keys live in one slot and a single Lua script may touch them
//! all (a script's keys must share a slot). Different tenants spread across the cluster.
//!
//! The registry of tenants has the tag `{registry}`: a record and its indexes, the version and
//! the change log are written by one script, atomically, so they share one slot. (On a
//! cluster, the registry lives on one shard: a million tenants is about 0.5 GB there; the
//! windows, which take the traffic, spread.)
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tollgate:{t}:window` | ZSET | the admitted units of the last window in blocks: one member `<ms>-<seq>:<units>` per decision's admissions (`<ms>-<seq>` for one unit), scored by ms, and one `L<ms>-<seq>:<units>` per lease, scored at its deadline |
//! | `tollgate:{t}:window-count` | HASH | the window's units (`u`) and members (`m`), trusted while the window has that many members |
//! | `tollgate:{t}:denied` | ZSET | one member `<ms>-<minute's total>-<count>` per denial record (a decision's or a batch's denials, or the filter's report) of the last window |
//! | `tollgate:{t}:usage` | HASH | admitted (`a<minute>`, only ever growing: it names the window's members), leased units of that minute handed back (`r<minute>`) and denied (`d<minute>`) units per minute of the last hour |
//! | `tollgate:{t}:month` | HASH | month-to-date admitted units, field `<yyyymm>` |
//! | `tollgate:{registry}:tenants` | HASH | tenant id → tenant record with key hashes (JSON) |
//! | `tollgate:{registry}:keys` | HASH | key hash (32 raw bytes) → tenant id |
//! | `tollgate:{registry}:stripe-ids` | HASH | Stripe customer or subscription id → tenant id |
//! | `tollgate:{registry}:ids` | ZSET | every tenant id, score 0: the admin list's order and cursor (`ZRANGEBYLEX`) |
//! | `tollgate:{registry}:tier-counts` | HASH | tier → tenants on it (the tier reloader's "in use") |
//! | `tollgate:{registry}:linked` | SET | tenants linked to a Stripe customer or subscription |
//! | `tollgate:{registry}:needs-sync` | SET | tenants whose last billing event was applied without asking Stripe |
//! | `tollgate:{registry}:version` | STRING | the registry's version: +1 per change |
//! | `tollgate:{registry}:changes` | STREAM | one entry per change (`v` version, `id`, `r` record, `tb` tier before), trimmed to the configured length |
//! | `tollgate:{registry}:key-filter` | STRING | a Bloom filter of every key hash ever stored (4 MiB bitmap) |
//! | `tollgate:{registry}:key-filter:import` | STRING | an import's filter bits, for a moment, before they are ORed in |
//! | `tollgate:{registry}:meta` | HASH | `schema`: the layout version of these keys |
//! | `tollgate:{registry}:migrating` | STRING | held (with an expiry) by the replica building the indexes of an older layout |

pub const TENANTS: &str = "tollgate:{registry}:tenants";
pub const TENANT_KEYS: &str = "tollgate:{registry}:keys";
pub const TENANT_STRIPE_IDS: &str = "tollgate:{registry}:stripe-ids";
pub const TENANT_IDS: &str = "tollgate:{registry}:ids";
pub const TENANT_TIER_COUNTS: &str = "tollgate:{registry}:tier-counts";
pub const TENANTS_LINKED: &str = "tollgate:{registry}:linked";
pub const TENANTS_NEEDING_SYNC: &str = "tollgate:{registry}:needs-sync";
pub const REGISTRY_VERSION: &str = "tollgate:{registry}:version";
pub const TENANT_CHANGES: &str = "tollgate:{registry}:changes";
pub const KEY_FILTER: &str = "tollgate:{registry}:key-filter";
pub const KEY_FILTER_IMPORT: &str = "tollgate:{registry}:key-filter:import";
pub const REGISTRY_META: &str = "tollgate:{registry}:meta";
pub const REGISTRY_MIGRATING: &str = "tollgate:{registry}:migrating";

/// The keys the registry's write script takes, in its order (see `scripts::REGISTRY_WRITE`).
pub const REGISTRY_WRITE_KEYS: [&str; 10] = [
    TENANTS,
    TENANT_KEYS,
    TENANT_STRIPE_IDS,
    TENANT_IDS,
    TENANT_TIER_COUNTS,
    TENANTS_LINKED,
    TENANTS_NEEDING_SYNC,
    REGISTRY_VERSION,
    TENANT_CHANGES,
    KEY_FILTER,
];

/// The keys of one tenant's window, in the order the scripts take them.
pub fn tenant_window(tenant: &str) -> [String; 5] {
    [
        format!("tollgate:{{{tenant}}}:window"),
        format!("tollgate:{{{tenant}}}:denied"),
        format!("tollgate:{{{tenant}}}:usage"),
        format!("tollgate:{{{tenant}}}:month"),
        format!("tollgate:{{{tenant}}}:window-count"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_keys_share_its_hash_tag() {
        for key in tenant_window("tn_1") {
            assert!(key.contains("{tn_1}"), "{key}");
        }
        for key in REGISTRY_WRITE_KEYS.iter().chain(&[
            REGISTRY_META,
            REGISTRY_MIGRATING,
            KEY_FILTER_IMPORT,
        ]) {
            assert!(key.contains("{registry}"), "{key}");
        }
    }
}
