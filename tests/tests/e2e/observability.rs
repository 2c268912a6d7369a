//! What operators watch: Prometheus metrics that agree with the traffic, structured JSON logs,
//! and no API key, admin token or key secret in any log line.

use reqwest::Method;
use serde_json::json;
use tollgate_e2e::stack::{ADMIN_TOKEN, KEY_SECRET, parse_sample};
use tollgate_e2e::{Stack, StackOptions};

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
        value("tollgate_decision_seconds_count"),
        requests,
        "every decision is timed"
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
