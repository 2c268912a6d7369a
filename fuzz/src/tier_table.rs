//! The tier table (TOML), as the control-plane loads it at start and on every reload.
//!
//! Input: the file's text. Properties: any text is a table or an error, never a panic; a
//! table that loads has its default tier, and every tier holds the table's rules: a policy
//! name, a limit of at least 1, a window of 1 s to a day, a monthly limit of at least the
//! limit, and route costs of at least 1, as written.

use tollgate_control_plane::tiers::TierTable;
use tollgate_protocol::is_policy_name;

pub fn run(data: &[u8]) {
    // The control-plane reads the file as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let table = match text.parse::<TierTable>() {
        Ok(table) => table,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let default = table.default_tier();
    assert_eq!(table.get(&default.name), Some(default));

    let tiers = table.tiers();
    assert!(
        tiers.windows(2).all(|pair| pair[0].name < pair[1].name),
        "listed by name, each once"
    );
    // The tables as written, to compare what was kept.
    let written: toml::Table = toml::from_str(text).unwrap_or_default();
    let written = written
        .get("tiers")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    assert_eq!(tiers.len(), written.len());
    for tier in tiers {
        assert!(is_policy_name(&tier.name), "{:?}", tier.name);
        assert_eq!(table.get(&tier.name), Some(tier));
        assert!(tier.limit >= 1);
        assert!((1..=86_400).contains(&tier.window_seconds()));
        assert_eq!(u64::from(tier.window_seconds()), tier.window.as_secs());
        assert!(
            tier.monthly_limit
                .is_none_or(|m| m >= u64::from(tier.limit))
        );
        let quota = tier.quota();
        assert_eq!(
            (quota.limit, quota.window, quota.monthly),
            (tier.limit, tier.window, tier.monthly_limit)
        );
        let costs = written
            .get(tier.name.as_ref())
            .and_then(|t| t.get("costs"))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        for (route, cost) in &costs {
            let cost = cost.as_integer().and_then(|c| u32::try_from(c).ok());
            assert_eq!(Some(tier.cost(route, 1)), cost, "{route}");
            assert!(tier.cost(route, 1) >= 1);
        }
    }
}
