//! What operators watch: Prometheus metrics that agree with the traffic, structured JSON logs,
//! no API key, admin token or key secret in any log line, decisions logged with the request's
//! trace, and a Grafana dashboard and alert rules (deploy/) whose every query parses and reads
//! only metrics a running stack exposes.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_e2e::stack::{ADMIN_TOKEN, KEY_SECRET, parse_sample};
use tollgate_e2e::{Stack, StackOptions, workspace};

#[tokio::test]
async fn metrics_match_the_traffic_and_logs_are_json_without_secrets() {
    // Leases off: the decision counts below are one per request (leases.rs covers leases).
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_LOG_FORMAT", "json")
        .filter("lease", json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let other = stack.create_tenant("standard").await;
    let path = format!("/admin/v1/tenants/{}/keys", tenant.id);
    let issued: serde_json::Value = stack
        .admin(Method::POST, &path, None)
        .await
        .json()
        .await
        .unwrap();
    let extra_key = issued["api_key"].as_str().unwrap().to_owned();

    stack.burst("/api/v1/ingest", &tenant.key, 62, 4).await; // 60 allowed, 2 denied (callout or cache)
    stack
        .call("/api/v1/ingest", "tg_unknown_key_for_the_log_check")
        .await;
    stack.call("/api/v1/ingest", &other.key).await;
    stack.usage(&extra_key).await;
    stack
        .patch_tenant(&other.id, json!({"suspended": true}))
        .await;
    stack.call("/api/v1/ingest", &other.key).await;

    let text = stack.metrics_text(0).await;
    let value =
        |sample: &str| parse_sample(&text, sample).unwrap_or_else(|| panic!("{sample} in\n{text}"));
    assert_eq!(
        value("tollgate_decisions_total{tier=\"standard\",outcome=\"allow\"}"),
        61
    );
    assert_eq!(
        value("tollgate_decisions_total{tier=\"\",outcome=\"unknown_key\"}"),
        1
    );
    assert_eq!(
        value("tollgate_decisions_total{tier=\"\",outcome=\"suspended\"}"),
        1
    );
    let denied = value("tollgate_decisions_total{tier=\"standard\",outcome=\"deny\"}");
    let requests = value("tollgate_decision_requests_total");
    assert_eq!(
        requests,
        61 + 1 + 1 + denied,
        "every callout has one outcome"
    );
    assert_eq!(
        value("tollgate_decision_duration_seconds_count"),
        requests,
        "every decision is timed"
    );
    // Units are counted apart from calls: the standard tier's ingest costs 1, so they agree.
    assert_eq!(
        value("tollgate_decision_units_total{tier=\"standard\",outcome=\"allow\"}"),
        61
    );
    assert!(
        text.lines().any(|l| l.starts_with("tollgate_build_info{")
            && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && l.ends_with(" 1")),
        "build info in\n{text}"
    );
    // Every sample line is `name{labels} value`, as the Prometheus text format has it.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, sample) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(sample.parse::<f64>().is_ok(), "not a sample: {line}");
    }

    let secrets = [
        tenant.key.as_str(),
        other.key.as_str(),
        extra_key.as_str(),
        ADMIN_TOKEN,
        KEY_SECRET,
    ];
    let logs = [
        ("control-plane", stack.control_planes[0].process.log()),
        ("envoy", stack.envoy.log()),
        ("upstream", stack.upstream.log()),
    ];
    for (name, log) in &logs {
        for secret in secrets {
            assert!(!log.contains(secret), "{name}'s log contains a secret");
        }
    }
    let control_plane_log = &logs[0].1;
    assert!(
        control_plane_log.lines().count() >= 3,
        "{control_plane_log}"
    );
    for line in control_plane_log.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"].is_object(),
            "{line}"
        );
    }
}

/// One decision's debug line from the control-plane's JSON log, by the route it was for.
fn decision_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "decision")
        .collect()
}

#[tokio::test]
async fn decisions_are_logged_with_the_requests_trace_context() {
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_LOG_FORMAT", "json")
        .control_plane_env(
            "RUST_LOG",
            "info,tollgate_control_plane::api::decision=debug",
        )
        .filter("lease", json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let client = reqwest::Client::new();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let send = |traceparent: &'static str| {
        client
            .get(stack.url("/api/v1/ingest"))
            .header("x-api-key", &tenant.key)
            .header("traceparent", traceparent)
            .send()
    };
    assert_eq!(send(traceparent).await.unwrap().status(), 200);
    // Upper-case hex is not W3C Trace Context: the filter does not forward it.
    let malformed = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    assert_eq!(send(malformed).await.unwrap().status(), 200);

    let log = stack.control_planes[0].process.log();
    let lines = decision_lines(&log);
    assert_eq!(lines.len(), 2, "one debug line per decision:\n{log}");
    let (first, second) = (&lines[0]["fields"], &lines[1]["fields"]);
    assert_eq!(first["traceparent"], traceparent, "{first}");
    assert_eq!(
        (&first["route"], &first["outcome"]),
        (&json!("ingest"), &json!("allow"))
    );
    assert_eq!(first["tier"], "standard");
    assert!(second.get("traceparent").is_none(), "dropped: {second}");
    // Envoy gives every external request its own id; the callout carries it.
    for fields in [first, second] {
        let id = fields["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{fields}"));
        assert_eq!(id.len(), 36, "a UUID: {id}");
    }
    assert_ne!(first["request_id"], second["request_id"]);
    assert!(!log.contains(&tenant.key), "the key is never logged");
}

/// Grafana's own variables, replaced by what they stand for before the PromQL is parsed.
const GRAFANA_VARIABLES: [(&str, &str); 2] = [("$__rate_interval", "5m"), ("$__interval", "1m")];

/// Every PromQL expression of the dashboard (checking its structure on the way): each panel
/// but rows has targets, each target an expression and the dashboard's datasource input.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the datasource is an input, so the dashboard imports anywhere"
    );
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "unique ids"
        );
        assert!(panel["gridPos"]["w"].is_u64(), "{panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} has no targets",
            panel["title"]
        );
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{target}");
            let expr = target["expr"].as_str().expect("expr");
            assert!(!expr.trim().is_empty(), "{target}");
            queries.push(expr.to_owned());
        }
    }
    queries
}

/// Every alert rule's expression, after checking the Prometheus rule file's structure.
fn alert_queries(rules: &Value) -> Vec<String> {
    let groups = rules["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    let mut names = BTreeSet::new();
    let mut queries = Vec::new();
    for group in groups {
        assert!(group["name"].is_string(), "{group:?}");
        let group_rules = group["rules"].as_array().expect("rules");
        assert!(!group_rules.is_empty(), "{group:?}");
        for rule in group_rules {
            let rule = rule.as_object().expect("a rule is a mapping");
            let allowed = ["alert", "expr", "for", "labels", "annotations"];
            assert!(
                rule.keys().all(|k| allowed.contains(&k.as_str())),
                "{rule:?}"
            );
            let name = rule["alert"].as_str().expect("alert");
            assert!(names.insert(name.to_owned()), "alert {name} twice");
            if let Some(duration) = rule.get("for") {
                let duration = duration.as_str().expect("for is a duration");
                let (number, unit) = duration.split_at(duration.len() - 1);
                assert!(
                    number.parse::<u32>().is_ok() && ["s", "m", "h"].contains(&unit),
                    "{name}: for {duration}"
                );
            }
            let severity = rule["labels"]["severity"].as_str().expect("severity");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}"
            );
            assert!(rule["annotations"]["summary"].is_string(), "{name}");
            queries.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    queries
}

/// The metric names each expression reads, by promql-parser (PyPI), or why it does not parse.
fn metrics_read(queries: &[String]) -> Vec<Result<Vec<String>, String>> {
    let substituted: Vec<String> = queries
        .iter()
        .map(|query| {
            GRAFANA_VARIABLES
                .iter()
                .fold(query.clone(), |q, (variable, value)| {
                    q.replace(variable, value)
                })
        })
        .collect();
    let mut child = Command::new(workspace().join(".venv/bin/python"))
        .arg(workspace().join("tests/observability/promql_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run .venv/bin/python (make deps-test installs promql-parser)");
    let input = serde_json::to_vec(&substituted).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), queries.len());
    results
        .into_iter()
        .map(|result| match result["metrics"].as_array() {
            Some(names) => Ok(names
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()),
            None => Err(result["error"].as_str().unwrap_or("no answer").to_owned()),
        })
        .collect()
}

/// The metric names a Prometheus exposition offers: every sample's name and every declared
/// family's (a family not yet incremented has its `# TYPE` line and no samples). In
/// OpenMetrics (the control-plane) a counter family `x` has samples `x_total`; in Envoy's
/// Prometheus text the family is the sample name. Histograms have `_bucket`, `_sum`, `_count`.
fn exposed_names(text: &str, open_metrics: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut words = declaration.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            match kind {
                "counter" if open_metrics => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" | "summary" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// What is wrong with `queries`: each that does not parse, and each metric name no exposition
/// offers.
fn problems(queries: &[String], exposed: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (query, read) in queries.iter().zip(metrics_read(queries)) {
        match read {
            Err(error) => problems.push(format!("{query}: {error}")),
            Ok(names) => problems.extend(
                names
                    .into_iter()
                    .filter(|name| !exposed.contains(name))
                    .map(|name| format!("{query}: unknown metric {name}")),
            ),
        }
    }
    problems
}

#[tokio::test]
async fn the_dashboard_and_alerts_read_only_metrics_a_running_stack_exposes() {
    let dashboard_path = workspace().join("deploy/grafana/tollgate-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard_path).unwrap())
        .expect("the dashboard is JSON");
    let alerts_text = std::fs::read_to_string(workspace().join("deploy/prometheus/alerts.yaml"))
        .expect("deploy/prometheus/alerts.yaml");
    let alerts: Value = serde_yaml_ng::from_str(&alerts_text).expect("alerts.yaml is YAML");
    let mut queries = dashboard_queries(&dashboard);
    let dashboard_count = queries.len();
    queries.extend(alert_queries(&alerts));

    // Traffic that makes the interesting series exist: an admission, leases, a denial from
    // the control-plane, denials from the edge's deny cache, a 401.
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    let statuses = stack.burst("/api/v1/ingest", &tenant.key, 70, 1).await;
    assert!(statuses.contains(&reqwest::StatusCode::OK));
    assert!(statuses.contains(&reqwest::StatusCode::TOO_MANY_REQUESTS));
    stack.call_without_key("/api/v1/ingest").await;
    let stats = stack.envoy_stats().await;
    for stat in [
        "wasmcustom.tollgate.route.ingest.requests_denied_cached",
        "wasmcustom.tollgate.route.ingest.callouts",
        "wasmcustom.tollgate.leases_granted",
        "wasmcustom.tollgate.requests_unauthorized",
    ] {
        assert!(
            stats.get(stat).copied().unwrap_or(0) > 0,
            "{stat}: {stats:?}"
        );
    }

    let control_plane = stack.metrics_text(0).await;
    let envoy = reqwest::get(format!(
        "http://127.0.0.1:{}/stats/prometheus",
        stack.envoy_admin_port
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    // The route is a tag in Envoy's Prometheus output, beside the untagged totals.
    let denied_cached = envoy
        .lines()
        .find_map(|l| {
            l.strip_prefix("tollgate_route_requests_denied_cached{tollgate_route=\"ingest\"} ")
        })
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(denied_cached.is_some_and(|n| n > 0), "{envoy}");
    let mut exposed = exposed_names(&control_plane, true);
    exposed.extend(exposed_names(&envoy, false));

    let found = problems(&queries, &exposed);
    assert!(found.is_empty(), "{found:#?}");
    assert!(dashboard_count >= 12 && queries.len() > dashboard_count);

    // The check catches what it is for: a misspelt metric, and PromQL that does not parse.
    let broken = alerts_text.replace("tollgate_store_errors_total", "tollgate_store_error_total");
    let broken: Value = serde_yaml_ng::from_str(&broken).unwrap();
    let found = problems(&alert_queries(&broken), &exposed);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("unknown metric tollgate_store_error_total"));
    let unparsable = vec!["sum(rate(tollgate_store_errors_total[5m])".to_owned()];
    let found = problems(&unparsable, &exposed);
    assert!(
        found.len() == 1 && found[0].contains("does not parse"),
        "{found:?}"
    );
}
