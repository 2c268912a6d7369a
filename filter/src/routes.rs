//! Which request paths are limited, and what each costs.
//!
//! A prefix matches on whole path segments: `/api/v1/ingest` limits `/api/v1/ingest`,
//! `/api/v1/ingest/batch` and `/api/v1/ingest?x=1`, but not `/api/v1/ingestion`. The longest
//! matching prefix wins, so a specific route can cost more than its parent.
//!
//! Both sides are compared in their [`match_form`], not as sent. The shipped Envoy config
//! normalises paths before the filter sees them (`normalize_path`, `merge_slashes`), but an
//! Istio gateway only does what its mesh's `pathNormalization` says, and an upstream may
//! read a path more loosely than Envoy routes it (`//api/v1/ingest`, `/api/v1/./ingest`,
//! `/api/v1/%69ngest`, `/API/V1/INGEST` and `/api/v1%2Fingest` all reach "ingest" on some
//! servers). Limiting errs the safe way: a path that any common reading maps into a limited
//! prefix is limited, at worst a request that the upstream would have answered 404 spends
//! quota.

use std::borrow::Cow;

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
    /// Each route with its prefix in [`match_form`], longest first, so the first match is the
    /// most specific (and trailing or doubled slashes cannot make a prefix look longer).
    routes: Vec<(String, LimitedRoute)>,
}

impl RouteTable {
    pub fn new(routes: Vec<LimitedRoute>) -> Self {
        let mut routes: Vec<(String, LimitedRoute)> = routes
            .into_iter()
            .map(|route| (match_form(&route.prefix).into_owned(), route))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { routes }
    }

    /// The limited route for a request's `:path`, if any: the most specific one any reading
    /// of the path falls under.
    pub fn find(&self, path: &str) -> Option<&LimitedRoute> {
        let readings = Readings::of(path);
        self.routes
            .iter()
            .find(|(prefix, _)| readings.any_covered_by(prefix))
            .map(|(_, route)| route)
    }

    /// The distinct route names, in a stable order: each has its own Envoy stats.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.routes.iter().map(|(_, r)| r.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every route, the most specific first.
    pub fn routes(&self) -> impl Iterator<Item = &LimitedRoute> {
        self.routes.iter().map(|(_, route)| route)
    }

    /// The distinct costs of the routes: a key's cached denials are kept per cost.
    pub fn costs(&self) -> Vec<u32> {
        let mut costs: Vec<u32> = self.routes.iter().map(|(_, r)| r.cost).collect();
        costs.sort_unstable();
        costs.dedup();
        costs
    }
}

/// Whether `prefix` covers `path` on whole path segments under any reading of `path` (query
/// and fragment ignored).
pub fn matches(prefix: &str, path: &str) -> bool {
    Readings::of(path).any_covered_by(&match_form(prefix))
}

/// How a server may read a path, each giving a different path to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// [`match_form`]: the loosest (escaped separators decoded, `\` a separator, `;`
    /// parameters dropped, dot segments resolved).
    Loosest,
    /// As loose, but `%2F` and `%5C` kept as text (Envoy's and many servers' default), under
    /// which `/api/v1/ingest/..%2F..%2Fx` is still in "ingest".
    SeparatorsKept,
    /// Dot segments, `;` and `\` kept as written (a server that resolves none of them, or an
    /// Envoy whose RFC 3986 normalisation leaves `..;` alone), under which
    /// `/api/v1/ingest/..;/x` is still in "ingest".
    Literal,
}

/// The readings of one path that differ from its match form.
struct Readings<'p> {
    loosest: Cow<'p, str>,
    separators_kept: Option<String>,
    literal: Option<String>,
}

impl<'p> Readings<'p> {
    fn of(path: &'p str) -> Self {
        let loosest = match_form(path);
        // The others are computed only for paths that can read differently, scanned in
        // place: `find` runs on every request, and most paths are already in match form.
        let (separators_kept, literal) = match loosest {
            Cow::Borrowed(_) => (None, None),
            Cow::Owned(_) => {
                let without_query = path.split(['?', '#']).next().unwrap_or(path);
                let escapes_separator = without_query.as_bytes().windows(3).any(|w| {
                    w[0] == b'%'
                        && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                            || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
                });
                let separators_kept = escapes_separator
                    .then(|| normalise(path, Reading::SeparatorsKept))
                    .filter(|kept| *kept != loosest);
                let literal =
                    Some(normalise(path, Reading::Literal)).filter(|literal| *literal != loosest);
                (separators_kept, literal)
            }
        };
        Self {
            loosest,
            separators_kept,
            literal,
        }
    }

    /// Whether `prefix` (in match form) covers any of the readings.
    fn any_covered_by(&self, prefix: &str) -> bool {
        covers(prefix, &self.loosest)
            || self
                .separators_kept
                .as_deref()
                .is_some_and(|path| covers(prefix, path))
            || self
                .literal
                .as_deref()
                .is_some_and(|path| covers(prefix, path))
    }
}

/// `prefix` and `path` both in match form.
fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The path a limit is matched on: the loosest reading of `path` common servers apply, so
/// that no spelling of a limited path escapes its limit. Query and fragment cut off; escapes
/// of unreserved characters, `/` and `\` decoded (once: `%252F` stays `%252f`, as one
/// decoding leaves it); `\` read as `/`; `;` parameters dropped from each segment (Tomcat
/// and Spring do, and `..;` is `..` to them); empty and `.` segments dropped, `..` removes
/// the segment before it (never above the root); ASCII lowercased. Always starts with `/`,
/// and ends with one only when it is `/`.
///
/// Allocates only for a path that is not already in that form; the common one is.
pub fn match_form(path: &str) -> Cow<'_, str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if is_match_form(path) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalise(path, Reading::Loosest))
}

/// `path` as `reading` reads it, in match form's spelling (one `/` between segments, none at
/// the end, ASCII lowercased).
fn normalise(path: &str, reading: Reading) -> String {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let decoded = percent_decode_path(path, reading == Reading::Loosest);
    let separators: &[char] = match reading {
        Reading::Literal => &['/'],
        Reading::Loosest | Reading::SeparatorsKept => &['/', '\\'],
    };
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(separators) {
        if reading == Reading::Literal {
            if !segment.is_empty() {
                segments.push(segment);
            }
            continue;
        }
        let segment = segment.split(';').next().unwrap_or(segment);
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut form = String::with_capacity(decoded.len() + 1);
    for segment in &segments {
        form.push('/');
        form.push_str(segment);
    }
    if form.is_empty() {
        form.push('/');
    }
    form.make_ascii_lowercase();
    form
}

/// Whether [`match_form`] would return `path` unchanged.
fn is_match_form(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.starts_with('/')
        && !path.ends_with('/')
        && !path
            .bytes()
            .any(|b| matches!(b, b'%' | b'\\' | b';') || b.is_ascii_uppercase())
        && path
            .split('/')
            .skip(1)
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// `path` with `%XX` decoded where `XX` is an unreserved character (RFC 3986), or `/` or `\`
/// when `decode_separators`; every other escape, and every malformed one, is kept as
/// written. Decoding only ASCII keeps the text valid UTF-8.
fn percent_decode_path(path: &str, decode_separators: bool) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let offset = path.len() - rest.len() + at;
        let escaped = bytes
            .get(offset + 1..offset + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|byte| {
                byte.is_ascii_alphanumeric()
                    || matches!(byte, b'-' | b'.' | b'_' | b'~')
                    || (decode_separators && matches!(byte, b'/' | b'\\'))
            });
        match escaped {
            Some(byte) => {
                decoded.push(char::from(byte));
                rest = &rest[at + 3..];
            }
            None => {
                decoded.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    decoded.push_str(rest);
    decoded
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

    #[test]
    fn unnormalised_spellings_of_a_limited_path_are_limited() {
        let table = table();
        for path in [
            "//api/v1/ingest",
            "/api//v1/ingest",
            "/api/v1//ingest",
            "/api/v1/ingest//",
            "/api/v1/./ingest",
            "/./api/v1/ingest",
            "/api/v1/x/../ingest",
            "/api/v2/../v1/ingest",
            "/../api/v1/ingest",
            "/api/v1%2Fingest",
            "/api/v1%2fingest",
            "/api%2Fv1%2Fingest",
            "/api/v1/%69ngest",
            "/api/v1/%2E/ingest",
            "/api/v1/x/%2e%2e/ingest",
            "/api/v1\\ingest",
            "/api/v1%5Cingest",
            "/API/V1/INGEST",
            "/Api/v1/Ingest/events",
            "/api/v1/ingest;jsessionid=1",
            "/api;x/v1/ingest",
            "/api/v1/x/..;/ingest",
            "api/v1/ingest",
            // Limited under the reading that keeps `%2F` as text, though not under the other.
            "/api/v1/ingest/..%2F..%2Fx",
            "/api/v1/ingest/..%5c..%5cx",
            // Limited under the literal reading (dot segments, `;` and `\` as written), which
            // Envoy's own normalisation leaves `..;` in and servers that resolve nothing use.
            "/api/v1/ingest/..;/x",
            "/api/v1/ingest/../x",
            "/api/v1/ingest/a\\..\\..\\x",
            "/api/v1/ingest/./../x",
        ] {
            assert_eq!(found(&table, path), Some(("ingest", 1)), "{path}");
        }
        assert_eq!(
            found(&table, "//api/v1/predict//batch/7"),
            Some(("predict-batch", 20)),
            "the longest prefix still wins"
        );
        assert_eq!(
            found(&table, "/api/v1/predict/batch/..;/x"),
            Some(("predict-batch", 20)),
            "a dearer route cannot be dodged for a cheaper one"
        );
    }

    #[test]
    fn normalising_does_not_widen_a_prefix_past_its_segments() {
        let table = table();
        for path in [
            "/api/v1/ingestion",
            "//api/v1/ingestion",
            "/api/v1/ingestion/../x",
            "/api/v1/ingest%2F..%2Fother",
            "/api/v1/in%67est%252Fx/../../other",
            "/api/v1/%252e%252e/ingest",
            "/api/v1/ingest%",
            "/api/v1/%zzingest",
            "/",
            "",
        ] {
            assert_eq!(found(&table, path), None, "{path}");
        }
    }

    #[test]
    fn the_match_form_of_a_normal_path_is_the_path_itself() {
        for path in ["/", "/api/v1/ingest", "/api/v1/ingest/batch.json"] {
            assert!(
                matches!(match_form(path), Cow::Borrowed(p) if p == path),
                "{path}"
            );
        }
        assert_eq!(match_form("/api/v1/ingest?a=//b"), "/api/v1/ingest");
        assert_eq!(match_form("//"), "/");
        assert_eq!(match_form("/a/%252F/%41%7e%20"), "/a/%252f/a~%20");
        assert_eq!(match_form("/a/b/../../../.."), "/");
    }

    #[test]
    fn usage_routes_match_unnormalised_paths_too() {
        assert!(matches("/api/v1/usage", "//api/v1/./usage?x"));
        assert!(matches("/API/v1/usage/", "/api/v1/usage"));
        assert!(!matches("/api/v1/usage", "/api/v1/usages"));
    }
}
