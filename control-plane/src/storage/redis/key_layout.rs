//! The layout of every Redis key (and channel) Tollgate uses, built in one place.
//!
//! Keys of one tenant share the hash tag `{<tenant id>}`: Redis Cluster hashes only the part in
//! braces, so all of a tenant's keys live in one slot and a single Lua script may touch them
//! all (a script's keys must share a slot). Different tenants spread across the cluster.
//! The registry of tenants (each record holds its key hashes) has the tag `{registry}`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tollgate:{t}:window` | ZSET | one member per admitted unit of the last window, scored by ms |
//! | `tollgate:{t}:denied` | ZSET | one member `<ms>-<minute's total>-<count>` per denial record (a decision's or a batch's denials, or the filter's report) of the last window |
//! | `tollgate:{t}:usage` | HASH | admitted (`a<minute>`) and denied (`d<minute>`) units per minute of the last hour |
//! | `tollgate:{t}:month` | HASH | month-to-date admitted units, field `<yyyymm>` |
//! | `tollgate:{registry}:tenants` | HASH | tenant id → tenant record with key hashes (JSON) |
//!
//! Tenant changes are announced on the channel [`TENANT_CHANGES`] (payload: tenant id).

pub const TENANT_CHANGES: &str = "tollgate:tenant-changes";
pub const TENANTS: &str = "tollgate:{registry}:tenants";

/// The keys of one tenant's window, in the order the scripts take them.
pub fn tenant_window(tenant: &str) -> [String; 4] {
    [
        format!("tollgate:{{{tenant}}}:window"),
        format!("tollgate:{{{tenant}}}:denied"),
        format!("tollgate:{{{tenant}}}:usage"),
        format!("tollgate:{{{tenant}}}:month"),
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
        assert!(TENANTS.contains("{registry}"));
    }
}
