//! Which request paths are limited, and what each costs.
//!
//! A prefix matches on whole path segments: `/api/v1/ingest` limits `/api/v1/ingest`,
//! `/api/v1/ingest/batch` and `/api/v1/ingest?x=1`, but not `/api/v1/ingestion`. Paths reach
//! the filter after Envoy's normalisation (`normalize_path`, `merge_slashes`, see
//! `envoy/envoy.yaml`), so `//api/v1/./ingest` cannot slip past. The longest matching prefix
//! wins, so a specific route can cost more than its parent.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedRoute {
    pub prefix: String,
    /// Sent to the control-plane, which may price the route per tier.
    pub name: String,
    /// Units of quota one request spends, unless the tier table says otherwise.
    pub cost: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    /// Longest prefix first (trailing slashes aside, as in matching), so the first match is
    /// the most specific.
    routes: Vec<LimitedRoute>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<LimitedRoute>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.trim_end_matches('/').len()));
        Self { routes }
    }

    /// The limited route for a request's `:path`, if any.
    pub fn find(&self, path: &str) -> Option<&LimitedRoute> {
        self.routes
            .iter()
            .find(|route| matches(&route.prefix, path))
    }

    /// The distinct costs of the routes: a key's cached denials are kept per cost.
    pub fn costs(&self) -> Vec<u32> {
        let mut costs: Vec<u32> = self.routes.iter().map(|r| r.cost).collect();
        costs.sort_unstable();
        costs.dedup();
        costs
    }
}

/// Whether `prefix` covers `path` on whole path segments (query and fragment ignored).
pub fn matches(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn table() -> RouteTable {
        let route = |prefix: &str, name: &str, cost| LimitedRoute {
            prefix: prefix.into(),
            name: name.into(),
            cost,
        };
        RouteTable::new(vec![
            route("/api/v1/ingest", "ingest", 1),
            route("/api/v1/predict", "predict", 5),
            route("/api/v1/predict/batch/", "predict-batch", 20),
        ])
    }

    /// The name and cost of the route that limits `path`.
    fn found<'a>(table: &'a RouteTable, path: &str) -> Option<(&'a str, u32)> {
        table.find(path).map(|r| (r.name.as_str(), r.cost))
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let table = table();
        assert_eq!(found(&table, "/api/v1/ingest"), Some(("ingest", 1)));
        assert_eq!(found(&table, "/api/v1/ingest/"), Some(("ingest", 1)));
        assert_eq!(found(&table, "/api/v1/ingest/events"), Some(("ingest", 1)));
        assert_eq!(found(&table, "/api/v1/ingest?async=1"), Some(("ingest", 1)));
        assert_eq!(found(&table, "/api/v1/ingestion"), None);
        assert_eq!(found(&table, "/api/v1/other"), None);
        assert_eq!(found(&table, "/healthz"), None);
    }

    #[test]
    fn the_longest_prefix_wins() {
        let table = table();
        let batch = Some(("predict-batch", 20));
        assert_eq!(found(&table, "/api/v1/predict/batch"), batch);
        assert_eq!(found(&table, "/api/v1/predict/batch/7"), batch);
        assert_eq!(found(&table, "/api/v1/predict/one"), Some(("predict", 5)));
    }

    #[test]
    fn each_cost_is_listed_once() {
        assert_eq!(table().costs(), vec![1, 5, 20]);
    }

    #[test]
    fn trailing_slashes_do_not_make_a_prefix_longer() {
        // A property of the filter_config fuzz target (fuzz/seeds/filter_config/): ordered
        // by raw length, "/api/v1//////////" came first and limited "/api/v1/predict" itself.
        let route = |prefix: &str, name: &str| LimitedRoute {
            prefix: prefix.into(),
            name: name.into(),
            cost: 1,
        };
        let table = RouteTable::new(vec![
            route("/api/v1//////////", "v1"),
            route("/api/v1/predict", "predict"),
        ]);
        assert_eq!(found(&table, "/api/v1/predict"), Some(("predict", 1)));
        assert_eq!(found(&table, "/api/v1/other"), Some(("v1", 1)));
    }

    #[test]
    fn a_root_prefix_limits_everything() {
        let table = RouteTable::new(vec![LimitedRoute {
            prefix: "/".into(),
            name: "all".into(),
            cost: 1,
        }]);
        assert_eq!(found(&table, "/anything/at/all"), Some(("all", 1)));
        assert_eq!(found(&table, "/"), Some(("all", 1)));
    }
}
