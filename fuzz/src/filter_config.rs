//! The filter's configuration (the JSON in Envoy's `configuration` field) and the route table
//! it builds.
//!
//! Input: the JSON, then, after each NUL byte, a request path to match. Properties: any bytes
//! are settings or a refusal, never a panic; settings that load hold every bound the filter
//! relies on (a cluster, a timeout of 1 ms to 10 s, a lowercase key header, at least one
//! route, each named by a policy name, costing at least 1, with a prefix that limits its own
//! path, no two prefixes limiting the same paths, a bounded deny cache); and a path is
//! limited by the route with the longest matching prefix, or by none when no prefix matches.

use std::time::Duration;

use serde_json::Value;
use tollgate_filter::config::Settings;
use tollgate_filter::routes::matches;
use tollgate_protocol::{MAX_API_KEY_LEN, is_policy_name};

pub fn run(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0);
    let json = parts.next().unwrap_or_default();
    let Ok(settings) = Settings::from_json(Some(json)) else {
        return;
    };
    assert!(!settings.cluster.trim().is_empty());
    assert!(
        (Duration::from_millis(1)..=Duration::from_secs(10)).contains(&settings.timeout),
        "{:?}",
        settings.timeout
    );
    assert!(settings.timeout_ms() >= 1 && settings.timeout_ms() <= 10_000);
    assert!(
        !settings.key_header.is_empty()
            && settings.key_header.len() <= MAX_API_KEY_LEN
            && settings
                .key_header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
        "{:?}",
        settings.key_header
    );
    if let Some(cache) = &settings.deny_cache {
        assert!((1..=1 << 20).contains(&cache.slots));
        assert!((1..=10_000).contains(&cache.max_ttl_ms));
    }
    if let Some(refusals) = &settings.budget_refusals {
        assert!((1..=1 << 20).contains(&refusals.slots));
        assert!((1..=10_000).contains(&refusals.max_ttl_ms));
        assert!(!refusals.routes.is_empty() && refusals.routes.len() <= 100);
        assert!(
            refusals.routes.iter().all(|p| matches(p, p)),
            "a budget-refusal prefix that never matches: {:?}",
            refusals.routes
        );
    }
    assert!(
        settings.usage_routes.iter().all(|p| matches(p, p)),
        "a usage prefix that never matches: {:?}",
        settings.usage_routes
    );

    // The routes as written (the table keeps them private), to check what it does with them.
    let written: Value = serde_json::from_slice(json).unwrap_or_default();
    let routes: Vec<(&str, &str, u64)> = written["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    let text = |field: &str| r[field].as_str().unwrap_or_default();
                    (
                        text("prefix"),
                        text("name"),
                        r["cost"].as_u64().unwrap_or(1),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(!routes.is_empty());
    let costs = settings.routes.costs();
    for (prefix, name, cost) in &routes {
        assert!(is_policy_name(name), "{name:?}");
        assert!(*cost >= 1);
        assert!(costs.iter().any(|c| u64::from(*c) == *cost));
        assert!(
            matches(prefix, prefix),
            "route {prefix:?} does not limit its own prefix"
        );
    }
    for (i, (a, ..)) in routes.iter().enumerate() {
        for (b, ..) in &routes[i + 1..] {
            assert_ne!(
                effective(a),
                effective(b),
                "prefixes {a:?} and {b:?} limit the same paths"
            );
        }
    }
    for path in parts {
        let path = String::from_utf8_lossy(path);
        let longest = routes
            .iter()
            .filter(|(prefix, ..)| matches(prefix, &path))
            .map(|(prefix, ..)| effective(prefix).len())
            .max();
        let found = settings.routes.find(&path);
        assert_eq!(
            found.map(|route| effective(&route.prefix).len()),
            longest,
            "{path:?} limited by {found:?}"
        );
        if let Some(route) = found {
            assert!(matches(&route.prefix, &path));
        }
    }
}

/// The part of a prefix that matching looks at: its match form, trailing slashes left out.
fn effective(prefix: &str) -> String {
    tollgate_filter::routes::match_form(prefix)
        .trim_end_matches('/')
        .to_owned()
}
