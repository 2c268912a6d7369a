//! `tollgate check`: the tier table and the filter's configuration, validated offline by the
//! parsers the control-plane and the filter run, then checked against each other.
//!
//! Each file on its own is only half the story: a tier that prices route `predcit` parses,
//! and so does a filter that names its route `predict`, yet the price never applies; a
//! filter that reads keys from `x-key` while the control-plane's usage endpoint reads
//! `x-api-key` parses too, yet tenants' usage calls fail. [`check`] finds both, and returns
//! every problem it finds, each one line naming the file and the thing.
//!
//! Each file is accepted as its parser reads it, or inside what carries it in a deployment:
//! the tier table as TOML or in a Kubernetes ConfigMap (`envoy/istio/tiers.yaml`); the
//! filter's configuration as JSON, in an Envoy bootstrap (the `tollgate` wasm filter's
//! `configuration.value`, as in `envoy/envoy.yaml`) or in an Istio `WasmPlugin`
//! (`spec.pluginConfig`), YAML or JSON. Parser messages are folded onto one line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;
use tollgate_control_plane::tiers::TierTable;
use tollgate_filter::config::Settings;

/// The files `check` reads are an operator's: a bigger one is not a configuration.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What a successful check found, for its summary.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub tiers: Vec<String>,
    pub routes: Vec<String>,
    /// Filter routes no tier prices: they cost the filter's default, which may be meant.
    pub unpriced_routes: Vec<String>,
}

/// Reads `path` as text, bounded.
fn read(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{}: {size} bytes; a configuration is at most {MAX_FILE_BYTES}",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks the tier table at `tiers` and the filter configuration at `filter`, and that the
/// filter reads the API key from `api_key_header` (the control-plane's
/// `TOLLGATE_API_KEY_HEADER`). Every problem found, or what was checked.
pub fn check(tiers: &Path, filter: &Path, api_key_header: &str) -> Result<Checked, Vec<String>> {
    let tier_text = read(tiers).map_err(|e| vec![e])?;
    let filter_text = read(filter).map_err(|e| vec![e])?;
    check_texts(
        (&tiers.display().to_string(), &tier_text),
        (&filter.display().to_string(), &filter_text),
        api_key_header,
    )
}

/// [`check`] on the files' contents, each with its name for the messages.
pub fn check_texts(
    (tiers_name, tiers): (&str, &str),
    (filter_name, filter): (&str, &str),
    api_key_header: &str,
) -> Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    let tiers = match tiers_toml(tiers) {
        Ok(tiers) => tiers,
        Err(e) => return Err(vec![format!("{tiers_name}: {e}")]),
    };
    let tiers = tiers.as_str();
    let table = TierTable::from_str(tiers)
        .map_err(|e| problems.push(format!("{tiers_name}: {}", one_line(&e.to_string()))))
        .ok();
    let priced = priced_routes(tiers);
    let settings = filter_json(filter)
        .map_err(|e| format!("{filter_name}: {}", one_line(&e)))
        .and_then(|json| {
            Settings::from_json(Some(json.as_bytes())).map_err(|e| {
                format!(
                    "{filter_name}: the filter refuses it: {}",
                    one_line(&e.to_string())
                )
            })
        })
        .map_err(|e| problems.push(e))
        .ok();

    let (Some(table), Some(settings)) = (table, settings) else {
        return Err(problems);
    };
    let routes: BTreeSet<String> = settings.routes.routes().map(|r| r.name.clone()).collect();
    for (tier, tier_routes) in &priced {
        for route in tier_routes.iter().filter(|r| !routes.contains(*r)) {
            problems.push(format!(
                "{tiers_name}: tier {tier:?} prices route {route:?}, which {filter_name} does \
                 not define (its routes: {}); the price would never apply",
                list(&routes)
            ));
        }
    }
    let wanted = api_key_header.to_ascii_lowercase();
    if settings.key_header != wanted {
        problems.push(format!(
            "{filter_name}: the filter reads API keys from header {:?}, the control-plane \
             from {wanted:?} (--api-key-header, TOLLGATE_API_KEY_HEADER): usage calls with \
             the filter's header would fail",
            settings.key_header
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let priced_anywhere: BTreeSet<&String> = priced.values().flatten().collect();
    Ok(Checked {
        tiers: table.tiers().iter().map(|t| t.name.to_string()).collect(),
        unpriced_routes: routes
            .iter()
            .filter(|r| !priced_anywhere.contains(r))
            .cloned()
            .collect(),
        routes: routes.into_iter().collect(),
    })
}

/// A parser's message on one line: its source snippets (`9 | apiVersion: v1`, the `^`
/// marker) dropped, the rest joined.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| {
            let after_number = line.trim_start_matches(|c: char| c.is_ascii_digit());
            !after_number.trim_start().starts_with('|')
                && !line.chars().all(|c| c == '^' || c == ' ')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// The tier table's TOML: `text` itself, or the `tiers.toml` entry of a ConfigMap.
fn tiers_toml(text: &str) -> Result<String, String> {
    let config_map = serde_yaml_ng::from_str::<Value>(text)
        .ok()
        .filter(|document| document["kind"] == "ConfigMap");
    let Some(config_map) = config_map else {
        return Ok(text.to_owned());
    };
    config_map["data"]["tiers.toml"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "a ConfigMap without data.\"tiers.toml\"".to_owned())
}

fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The route names each tier's `costs` prices (read apart from the table's parser, which
/// keeps them private; only called on a table that parses anyway).
fn priced_routes(tiers: &str) -> BTreeMap<String, BTreeSet<String>> {
    let Ok(table) = toml::from_str::<toml::Table>(tiers) else {
        return BTreeMap::new();
    };
    let Some(toml::Value::Table(tiers)) = table.get("tiers") else {
        return BTreeMap::new();
    };
    tiers
        .iter()
        .map(|(name, tier)| {
            let routes = tier
                .get("costs")
                .and_then(toml::Value::as_table)
                .map(|costs| costs.keys().cloned().collect())
                .unwrap_or_default();
            (name.clone(), routes)
        })
        .collect()
}

/// The filter's JSON configuration out of `text`: the configuration itself, an Envoy
/// bootstrap carrying it, or a WasmPlugin (YAML or JSON).
fn filter_json(text: &str) -> Result<String, String> {
    let document: Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("neither JSON nor YAML: {e}"))?;
    if document.get("static_resources").is_some() {
        let configuration = tollgate_configuration(&document).ok_or(
            "an Envoy config without a wasm http filter named `tollgate` carrying its \
             configuration (typed_config.config.configuration.value)",
        )?;
        return Ok(configuration.to_owned());
    }
    if document["kind"] == "WasmPlugin" {
        let config = document["spec"]
            .get("pluginConfig")
            .ok_or("a WasmPlugin without spec.pluginConfig")?;
        return Ok(config.to_string());
    }
    Ok(document.to_string())
}

/// The `configuration.value` of the first http filter named `tollgate` in any listener.
fn tollgate_configuration(envoy: &Value) -> Option<&str> {
    envoy["static_resources"]["listeners"]
        .as_array()?
        .iter()
        .flat_map(|listener| listener["filter_chains"].as_array().into_iter().flatten())
        .flat_map(|chain| chain["filters"].as_array().into_iter().flatten())
        .flat_map(|filter| {
            filter["typed_config"]["http_filters"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .find(|filter| filter["name"] == "tollgate")
        .and_then(|filter| filter["typed_config"]["config"]["configuration"]["value"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: &str = r#"
default_tier = "standard"
[tiers.standard]
limit = 60
window_seconds = 60
[tiers.pro]
limit = 1000
window_seconds = 60
costs = { predict = 2 }
"#;

    const FILTER: &str = r#"{"control_plane":{"cluster":"cp"},
        "routes":[{"prefix":"/api/v1/ingest","name":"ingest"},
                  {"prefix":"/api/v1/predict","name":"predict","cost":5}]}"#;

    fn checked(tiers: &str, filter: &str, header: &str) -> Result<Checked, Vec<String>> {
        check_texts(("tiers.toml", tiers), ("filter.json", filter), header)
    }

    #[test]
    fn matching_files_pass_and_say_what_they_hold() {
        assert_eq!(
            checked(TIERS, FILTER, "x-api-key"),
            Ok(Checked {
                tiers: vec!["pro".into(), "standard".into()],
                routes: vec!["ingest".into(), "predict".into()],
                unpriced_routes: vec!["ingest".into()],
            })
        );
        assert!(
            checked(TIERS, FILTER, "X-API-Key").is_ok(),
            "header names ignore case"
        );
    }

    #[test]
    fn a_price_for_a_route_the_filter_lacks_is_named() {
        let tiers = TIERS.replace("predict = 2", "predcit = 2");
        let problems = checked(&tiers, FILTER, "x-api-key").unwrap_err();
        assert_eq!(
            problems,
            [
                "tiers.toml: tier \"pro\" prices route \"predcit\", which filter.json does not \
              define (its routes: ingest, predict); the price would never apply"
            ]
        );
    }

    #[test]
    fn different_key_headers_are_named() {
        let filter = FILTER.replace(r#""routes""#, r#""api_key":{"header":"x-key"},"routes""#);
        let problems = checked(TIERS, &filter, "x-api-key").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "filter.json: the filter reads API keys from header \"x-key\", the \
                 control-plane from \"x-api-key\""
            ),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn each_invalid_file_is_reported_with_the_parsers_reason() {
        let tiers = TIERS.replace("limit = 60", "limit = 0");
        let filter = FILTER.replace(r#""cluster":"cp""#, r#""cluster":" ""#);
        let problems = checked(&tiers, &filter, "x-api-key").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[0],
            "tiers.toml: tier \"standard\" must have a limit of at least 1"
        );
        assert!(
            problems[1].starts_with("filter.json: the filter refuses it: "),
            "{}",
            problems[1]
        );
        let problems = checked("default_tier = 1", "{]", "x-api-key").unwrap_err();
        assert!(problems[0].starts_with("tiers.toml: "), "{problems:?}");
        assert!(
            problems[1].starts_with("filter.json: neither JSON nor YAML"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_configuration_is_found_inside_an_envoy_config_or_a_wasm_plugin() {
        let envoy = format!(
            r#"
static_resources:
  listeners:
    - name: public
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                http_filters:
                  - name: other
                  - name: tollgate
                    typed_config:
                      config:
                        configuration:
                          value: '{}'
"#,
            FILTER.replace('\n', " ")
        );
        assert!(checked(TIERS, &envoy, "x-api-key").is_ok());
        let plugin = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
spec:
  pluginConfig:
    control_plane: {cluster: cp}
    routes:
      - {prefix: /api/v1/predict, name: predict}
"#;
        assert!(checked(TIERS, plugin, "x-api-key").is_ok());
        let without = "static_resources: {listeners: []}";
        let problems = checked(TIERS, without, "x-api-key").unwrap_err();
        assert!(
            problems[0].contains("without a wasm http filter named `tollgate`"),
            "{problems:?}"
        );
    }

    #[test]
    fn parser_messages_are_folded_onto_one_line() {
        let problems =
            checked("default_tier = \"a\"\nlimit: 1\n", FILTER, "x-api-key").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].contains('\n'), "{}", problems[0]);
        assert!(
            problems[0].starts_with("tiers.toml: the tier table is not valid TOML for Tollgate: TOML parse error at line 2"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn the_tier_table_is_found_in_a_config_map() {
        let config_map = format!(
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  tiers.toml: |\n{}",
            TIERS
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        assert!(checked(&config_map, FILTER, "x-api-key").is_ok());
        let other = "kind: ConfigMap\ndata:\n  other: x\n";
        assert_eq!(
            checked(other, FILTER, "x-api-key").unwrap_err(),
            ["tiers.toml: a ConfigMap without data.\"tiers.toml\""]
        );
    }

    #[test]
    fn the_shipped_configurations_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let tiers = root.join("control-plane/tiers.example.toml");
        for filter in ["envoy/envoy.yaml", "envoy/istio/wasmplugin.yaml"] {
            let result = check(&tiers, &root.join(filter), "x-api-key");
            assert!(result.is_ok(), "{filter}: {result:?}");
        }
        let istio = root.join("envoy/istio");
        let result = check(
            &istio.join("tiers.yaml"),
            &istio.join("wasmplugin.yaml"),
            "x-api-key",
        );
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn an_oversized_or_missing_file_is_refused_before_parsing() {
        let dir = tempfile::TempDir::new().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b' '; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let problems = check(&big, &big, "x-api-key").unwrap_err();
        assert!(
            problems[0].contains("a configuration is at most"),
            "{problems:?}"
        );
        let problems = check(&dir.path().join("none"), &big, "x-api-key").unwrap_err();
        assert!(problems[0].contains("none: "), "{problems:?}");
    }
}
