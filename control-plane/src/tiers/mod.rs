//! The tier table: what each tier may spend per window and what each route costs.
//!
//! Tiers are data, not code. The built-in table is Standard (60 per rolling 60 s, free) and
//! Pro (1,000 per 60 s, paid); operators replace it with a TOML file (see `tiers.example.toml`).
//! Names are restricted to `a-z 0-9 - _` because they travel as header values and as the policy
//! name inside the `RateLimit` structured fields. [`source`] keeps the table in force and
//! reloads it without a restart.
//!
//! A paid tier names the Stripe prices that buy it: `stripe_price` (the one Checkout sells),
//! more in `stripe_prices` (annual, other currencies, grandfathered) and Stripe lookup keys in
//! `stripe_lookup_keys`. A price or lookup key belongs to one tier only; a table that gives
//! one to two tiers is refused, since a subscription to it could not say which tier it buys.

pub mod source;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::window::Limit;
pub use source::{ReloadError, TierSource, spawn_reloader};

/// A tier's name, e.g. `standard`. Cheap to clone onto every decision.
pub type TierName = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: TierName,
    /// Units admitted per window.
    pub limit: u32,
    pub window: Duration,
    /// Units per calendar month (UTC), if the tier caps the month as well.
    pub monthly_limit: Option<u64>,
    /// Whether the tier is sold (Stripe billing decides who is on it).
    pub paid: bool,
    /// Shadow mode: decisions are made and counted but never enforced; a request that would
    /// be refused is let through, marked. For rolling out a new limit safely.
    pub shadow: bool,
    /// Whether admissions on this tier may come with leases (see `window::lease`); a tier
    /// whose every request must be decided on its own says `lease = false`.
    pub lease: bool,
    /// For paid tiers: the Stripe price Checkout sells the tier at (`stripe_price`, or else
    /// the first of `stripe_prices`).
    pub stripe_price: Option<String>,
    /// Every Stripe price a subscription to this tier may be on, `stripe_price` included.
    pub stripe_prices: Vec<String>,
    /// Stripe lookup keys whose prices buy this tier.
    pub stripe_lookup_keys: Vec<String>,
    /// The price as shown to people, e.g. "$49 / month".
    pub display_price: Option<String>,
    /// Per-route costs that override the filter's default cost for the route.
    costs: HashMap<String, u32>,
}

impl Tier {
    /// What one request on `route` costs on this tier; `default` is the filter's cost.
    pub fn cost(&self, route: &str, default: u32) -> u32 {
        self.costs.get(route).copied().unwrap_or(default)
    }

    /// The quotas a decision for this tier checks.
    pub fn quota(&self) -> Limit {
        Limit {
            limit: self.limit,
            window: self.window,
            monthly: self.monthly_limit,
        }
    }

    pub fn window_seconds(&self) -> u32 {
        u32::try_from(self.window.as_secs()).unwrap_or(u32::MAX)
    }

    /// How much the tier allows, to choose the better of two: units per day at its window's
    /// rate, then the monthly cap (none is best). A tenant paying for two tiers at once keeps
    /// the better one.
    pub fn rank(&self) -> (u64, u64) {
        let per_day = u64::from(self.limit) * 86_400 / self.window.as_secs().max(1);
        (per_day, self.monthly_limit.unwrap_or(u64::MAX))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierTable {
    tiers: HashMap<TierName, Arc<Tier>>,
    default_tier: TierName,
    /// Stripe price id → the tier it buys.
    by_price: HashMap<String, TierName>,
    /// Stripe lookup key → the tier its price buys.
    by_lookup_key: HashMap<String, TierName>,
}

#[derive(Debug, thiserror::Error)]
pub enum TierTableError {
    #[error("cannot read the tier table {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the tier table is not valid TOML for Tollgate: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("tier name {0:?} must be 1-64 characters of a-z, 0-9, '-', '_'")]
    Name(String),
    #[error("tier {0:?} must have a limit of at least 1")]
    Limit(String),
    #[error("tier {0:?} must have a window of 1 to 86400 seconds")]
    Window(String),
    #[error("tier {0:?} must have a monthly_limit of at least its limit")]
    Monthly(String),
    #[error("tier {tier:?} gives route {route:?} cost 0; a route costs at least 1")]
    Cost { tier: String, route: String },
    #[error("the default tier {0:?} is not in the table")]
    DefaultTier(String),
    /// A subscription to the price could not say which tier it buys.
    #[error("Stripe price or lookup key {key:?} is given to two tiers, {first:?} and {second:?}")]
    SharedPrice {
        key: String,
        first: String,
        second: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierTableWire {
    default_tier: String,
    tiers: HashMap<String, TierWire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierWire {
    limit: u32,
    window_seconds: u64,
    #[serde(default)]
    monthly_limit: Option<u64>,
    #[serde(default)]
    paid: bool,
    #[serde(default)]
    shadow: bool,
    #[serde(default = "leases_by_default")]
    lease: bool,
    #[serde(default)]
    stripe_price: Option<String>,
    #[serde(default)]
    stripe_prices: Vec<String>,
    #[serde(default)]
    stripe_lookup_keys: Vec<String>,
    #[serde(default)]
    display_price: Option<String>,
    #[serde(default)]
    costs: HashMap<String, u32>,
}

fn leases_by_default() -> bool {
    true
}

impl TierTable {
    pub fn load(path: &Path) -> Result<Self, TierTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| TierTableError::Read {
            path: path.display().to_string(),
            source,
        })?;
        text.parse()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tier>> {
        self.tiers.get(name)
    }

    /// Every tier, by name.
    pub fn tiers(&self) -> Vec<&Arc<Tier>> {
        let mut tiers: Vec<&Arc<Tier>> = self.tiers.values().collect();
        tiers.sort_by(|a, b| a.name.cmp(&b.name));
        tiers
    }

    /// The tier new tenants start on, and the one a lapsed subscription falls back to.
    pub fn default_tier(&self) -> &Arc<Tier> {
        // Present by construction: `from_str` and `Default` both check it.
        &self.tiers[&self.default_tier]
    }

    /// The tier a subscription item buys: by its price id, else by its price's lookup key.
    pub fn tier_for_price(
        &self,
        price: Option<&str>,
        lookup_key: Option<&str>,
    ) -> Option<&Arc<Tier>> {
        let by_price = price.and_then(|p| self.by_price.get(p));
        let name = by_price.or_else(|| lookup_key.and_then(|k| self.by_lookup_key.get(k)))?;
        self.tiers.get(name)
    }
}

/// Indexes every tier's prices and lookup keys; refuses one given to two tiers.
#[allow(clippy::type_complexity)]
fn index_prices(
    tiers: &HashMap<TierName, Arc<Tier>>,
) -> Result<(HashMap<String, TierName>, HashMap<String, TierName>), TierTableError> {
    let mut by_price: HashMap<String, TierName> = HashMap::new();
    let mut by_lookup_key: HashMap<String, TierName> = HashMap::new();
    // Sorted, so the error names the same pair whatever the map's order.
    let mut sorted: Vec<&Arc<Tier>> = tiers.values().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for tier in sorted {
        for (keys, index) in [
            (&tier.stripe_prices, &mut by_price),
            (&tier.stripe_lookup_keys, &mut by_lookup_key),
        ] {
            for key in keys {
                match index.get(key) {
                    Some(first) if *first != tier.name => {
                        return Err(TierTableError::SharedPrice {
                            key: key.clone(),
                            first: first.to_string(),
                            second: tier.name.to_string(),
                        });
                    }
                    _ => {
                        index.insert(key.clone(), tier.name.clone());
                    }
                }
            }
        }
    }
    Ok((by_price, by_lookup_key))
}

impl std::str::FromStr for TierTable {
    type Err = TierTableError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wire: TierTableWire = toml::from_str(text)?;
        let mut tiers = HashMap::with_capacity(wire.tiers.len());
        for (name, tier) in wire.tiers {
            if !tollgate_protocol::is_policy_name(&name) {
                return Err(TierTableError::Name(name));
            }
            if tier.limit == 0 {
                return Err(TierTableError::Limit(name));
            }
            if !(1..=86_400).contains(&tier.window_seconds) {
                return Err(TierTableError::Window(name));
            }
            if tier
                .monthly_limit
                .is_some_and(|m| m < u64::from(tier.limit))
            {
                return Err(TierTableError::Monthly(name));
            }
            if let Some((route, _)) = tier.costs.iter().find(|(_, cost)| **cost == 0) {
                return Err(TierTableError::Cost {
                    tier: name,
                    route: route.clone(),
                });
            }
            let name: TierName = name.into();
            let mut stripe_prices: Vec<String> = tier.stripe_price.iter().cloned().collect();
            for price in tier.stripe_prices {
                if !stripe_prices.contains(&price) {
                    stripe_prices.push(price);
                }
            }
            tiers.insert(
                name.clone(),
                Arc::new(Tier {
                    name,
                    limit: tier.limit,
                    window: Duration::from_secs(tier.window_seconds),
                    monthly_limit: tier.monthly_limit,
                    paid: tier.paid,
                    shadow: tier.shadow,
                    lease: tier.lease,
                    stripe_price: stripe_prices.first().cloned(),
                    stripe_prices,
                    stripe_lookup_keys: tier.stripe_lookup_keys,
                    display_price: tier.display_price,
                    costs: tier.costs,
                }),
            );
        }
        let default_tier: TierName = wire.default_tier.into();
        if !tiers.contains_key(&default_tier) {
            return Err(TierTableError::DefaultTier(default_tier.to_string()));
        }
        let (by_price, by_lookup_key) = index_prices(&tiers)?;
        Ok(Self {
            tiers,
            default_tier,
            by_price,
            by_lookup_key,
        })
    }
}

impl Default for TierTable {
    /// Standard: 60 per rolling minute, free. Pro: 1,000 per rolling minute, paid.
    fn default() -> Self {
        let tier = |name: &str, limit, paid| {
            let name: TierName = name.into();
            let tier = Tier {
                name: name.clone(),
                limit,
                window: Duration::from_secs(60),
                monthly_limit: None,
                paid,
                shadow: false,
                lease: true,
                stripe_price: None,
                stripe_prices: Vec::new(),
                stripe_lookup_keys: Vec::new(),
                display_price: None,
                costs: HashMap::new(),
            };
            (name, Arc::new(tier))
        };
        Self {
            tiers: HashMap::from([tier("standard", 60, false), tier("pro", 1000, true)]),
            default_tier: "standard".into(),
            by_price: HashMap::new(),
            by_lookup_key: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_is_standard_and_pro() {
        let table = TierTable::default();
        let standard = table.get("standard").unwrap();
        assert_eq!(
            (standard.limit, standard.window_seconds(), standard.paid),
            (60, 60, false)
        );
        let pro = table.get("pro").unwrap();
        assert_eq!(
            (pro.limit, pro.window_seconds(), pro.paid),
            (1000, 60, true)
        );
        assert_eq!(table.default_tier().name.as_ref(), "standard");
    }

    #[test]
    fn the_example_file_in_the_repo_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tiers.example.toml");
        let table = TierTable::load(&path).unwrap();
        assert_eq!(table.get("pro").unwrap().cost("predict", 5), 2);
        assert_eq!(
            table.get("pro").unwrap().display_price.as_deref(),
            Some("$49 / month")
        );
        assert_eq!(
            table.get("pro").unwrap().stripe_price.as_deref(),
            Some("price_pro_monthly")
        );
        assert_eq!(table.get("standard").unwrap().cost("predict", 5), 5);
    }

    #[test]
    fn a_tier_is_found_by_any_of_its_prices_or_lookup_keys_and_ranked_by_what_it_allows() {
        let table: TierTable = r#"
            default_tier = "free"
            [tiers.free]
            limit = 10
            window_seconds = 60
            [tiers.pro]
            limit = 1000
            window_seconds = 60
            stripe_price = "price_pro_m"
            stripe_prices = ["price_pro_y", "price_pro_m", "price_pro_eur"]
            stripe_lookup_keys = ["pro_monthly"]
            [tiers.team]
            limit = 100
            window_seconds = 1
            stripe_prices = ["price_team"]
        "#
        .parse()
        .unwrap();
        let pro = table.get("pro").unwrap();
        assert_eq!(
            pro.stripe_price.as_deref(),
            Some("price_pro_m"),
            "checkout sells stripe_price"
        );
        assert_eq!(
            pro.stripe_prices,
            ["price_pro_m", "price_pro_y", "price_pro_eur"]
        );
        let team = table.get("team").unwrap();
        assert_eq!(
            team.stripe_price.as_deref(),
            Some("price_team"),
            "else the first of stripe_prices"
        );
        let found = |price, key| table.tier_for_price(price, key).map(|t| t.name.to_string());
        assert_eq!(found(Some("price_pro_eur"), None).as_deref(), Some("pro"));
        assert_eq!(
            found(Some("price_other"), Some("pro_monthly")).as_deref(),
            Some("pro")
        );
        assert_eq!(
            found(Some("price_team"), Some("pro_monthly")).as_deref(),
            Some("team"),
            "the price id first"
        );
        assert_eq!(found(Some("price_other"), None), None);
        assert!(team.rank() > pro.rank(), "100/s beats 1000/min");
        assert!(pro.rank() > table.get("free").unwrap().rank());
    }

    #[test]
    fn route_costs_override_the_filter_default() {
        let table: TierTable = r#"
            default_tier = "free"
            [tiers.free]
            limit = 10
            window_seconds = 2
            shadow = true
            lease = false
            costs = { predict = 3 }
        "#
        .parse()
        .unwrap();
        let free = table.get("free").unwrap();
        assert_eq!(free.cost("predict", 1), 3);
        assert_eq!(free.cost("ingest", 2), 2);
        assert_eq!(free.window, Duration::from_secs(2));
        assert!(free.shadow);
        assert!(!free.lease, "this tier opts out of leases");
        let built_in = TierTable::default();
        assert!(!built_in.default_tier().shadow);
        assert!(
            built_in.default_tier().lease,
            "leases unless a tier says no"
        );
    }

    #[test]
    fn invalid_tables_are_refused() {
        let refused = |text: &str| text.parse::<TierTable>().unwrap_err();
        assert!(matches!(
            refused("default_tier = \"x\"\n[tiers.Pro]\nlimit = 1\nwindow_seconds = 1"),
            TierTableError::Name(name) if name == "Pro"
        ));
        assert!(matches!(
            refused("default_tier = \"x\"\n[tiers.x]\nlimit = 0\nwindow_seconds = 1"),
            TierTableError::Limit(tier) if tier == "x"
        ));
        assert!(matches!(
            refused("default_tier = \"x\"\n[tiers.x]\nlimit = 1\nwindow_seconds = 0"),
            TierTableError::Window(tier) if tier == "x"
        ));
        assert!(matches!(
            refused("default_tier = \"x\"\n[tiers.x]\nlimit = 5\nwindow_seconds = 1\nmonthly_limit = 4"),
            TierTableError::Monthly(tier) if tier == "x"
        ));
        assert!(matches!(
            refused("default_tier = \"x\"\n[tiers.x]\nlimit = 1\nwindow_seconds = 1\ncosts = { a = 0 }"),
            TierTableError::Cost { tier, route } if tier == "x" && route == "a"
        ));
        assert!(matches!(
            refused("default_tier = \"y\"\n[tiers.x]\nlimit = 1\nwindow_seconds = 1"),
            TierTableError::DefaultTier(tier) if tier == "y"
        ));
        let shared = refused(
            "default_tier = \"x\"\n[tiers.x]\nlimit = 1\nwindow_seconds = 1\nstripe_prices = [\"p_1\"]\n\
             [tiers.y]\nlimit = 2\nwindow_seconds = 1\nstripe_price = \"p_1\"",
        );
        assert!(
            matches!(&shared, TierTableError::SharedPrice { key, first, second } if key == "p_1" && first == "x" && second == "y"),
            "{shared}"
        );
        let shared_key = refused(
            "default_tier = \"x\"\n[tiers.x]\nlimit = 1\nwindow_seconds = 1\nstripe_lookup_keys = [\"k\"]\n\
             [tiers.y]\nlimit = 2\nwindow_seconds = 1\nstripe_lookup_keys = [\"k\"]",
        );
        assert!(matches!(shared_key, TierTableError::SharedPrice { .. }));
        let unknown_field =
            refused("default_tier = \"x\"\n[tiers.x]\nlimit = 1\nwindow_seconds = 1\nburst = 2");
        assert!(
            matches!(&unknown_field, TierTableError::Parse(error) if error.to_string().contains("burst")),
            "{unknown_field}"
        );
    }
}
