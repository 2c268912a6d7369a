//! Operators' work through the `tollgate` CLI, checked at the edge: several keys per tenant,
//! rotation with a grace period, revocation, and clear failures.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tollgate_e2e::stack::ADMIN_TOKEN;
use tollgate_e2e::{Stack, StackOptions, binaries_dir, within};

fn tollgate(stack: &Stack, args: &[&str]) -> Output {
    Command::new(binaries_dir().join("tollgate"))
        .args(args)
        .env("TOLLGATE_ADMIN_URL", stack.internal_url(""))
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run the tollgate CLI; `make test` builds it")
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "tollgate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the CLI prints JSON")
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .to_owned()
}

async fn status_within(stack: &Stack, key: &str, expected: u16, limit: Duration) -> Duration {
    let what = format!("status {expected}");
    within(limit, &what, || async {
        stack.call("/api/v1/ingest", key).await.status() == expected
    })
    .await
}

#[tokio::test]
async fn keys_are_issued_rotated_and_revoked_through_the_cli() {
    let stack = Stack::start(StackOptions::default()).await;
    let created = json(&tollgate(
        &stack,
        &["tenant", "create", "--name", "Acme", "--tier", "pro"],
    ));
    let (tenant, first_key, first_id) = (
        text(&created, "id"),
        text(&created, "api_key"),
        text(&created, "key_id"),
    );
    assert_eq!(stack.call("/api/v1/ingest", &first_key).await.status(), 200);

    let second = json(&tollgate(&stack, &["key", "issue", &tenant]));
    let second_key = text(&second, "api_key");
    assert_eq!(
        stack.call("/api/v1/ingest", &second_key).await.status(),
        200,
        "several keys per tenant"
    );

    let rotated = json(&tollgate(
        &stack,
        &["key", "rotate", &tenant, &first_id, "--grace", "600"],
    ));
    let (third_key, third_id) = (text(&rotated, "api_key"), text(&rotated, "id"));
    assert_eq!(
        stack.call("/api/v1/ingest", &third_key).await.status(),
        200,
        "the new key works"
    );
    assert_eq!(
        stack.call("/api/v1/ingest", &first_key).await.status(),
        200,
        "the old key works during its grace"
    );
    let listed = json(&tollgate(&stack, &["key", "list", &tenant]));
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|k| k.get("api_key").is_none()
                && k["prefix"].as_str().is_some_and(|p| p.len() == 8))
    );
    // The old key stops working 600 s after the rotation; that it then does is tested
    // in-process with a clock the test moves (control-plane/tests/api.rs).
    let retiring = listed.iter().find(|k| k["id"] == first_id.as_str());
    assert_eq!(
        retiring.and_then(|k| k["expires_at"].as_u64()),
        rotated["created_at"].as_u64().map(|at| at + 600),
        "{listed:?}"
    );

    let revoked = tollgate(&stack, &["key", "revoke", &tenant, &third_id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let took = status_within(&stack, &third_key, 401, Duration::from_secs(1)).await;
    eprintln!("revoked key refused at the edge after {took:?}");
    assert_eq!(
        stack.call("/api/v1/ingest", &second_key).await.status(),
        200,
        "other keys unaffected"
    );

    // Polling above spent quota too; what matters here is that the CLI reads usage.
    let usage = json(&tollgate(&stack, &["usage", &tenant]));
    assert_eq!(
        (usage["tenant_id"].as_str(), usage["limit"].as_u64()),
        (Some(tenant.as_str()), Some(1000))
    );
    assert!(usage["used"].as_u64().is_some_and(|used| used >= 5));
    let suspended = json(&tollgate(&stack, &["tenant", "suspend", &tenant]));
    assert_eq!(suspended["suspended"], true);
    assert_eq!(
        stack.call("/api/v1/ingest", &second_key).await.status(),
        403
    );
    json(&tollgate(&stack, &["tenant", "resume", &tenant]));
    let standard = json(&tollgate(
        &stack,
        &["tenant", "set-tier", &tenant, "standard"],
    ));
    assert_eq!(standard["tier"], "standard");
    let listed = json(&tollgate(&stack, &["tenant", "list"]));
    assert_eq!(listed[0]["limit"], 60);
}

#[tokio::test]
async fn the_cli_fails_clearly_and_non_zero() {
    let stack = Stack::start(StackOptions::default()).await;
    let unknown = tollgate(&stack, &["tenant", "show", "tn_nobody"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        "error: tenant_not_found: no tenant has this id\n"
    );

    let bad_tier = tollgate(
        &stack,
        &["tenant", "create", "--name", "Acme", "--tier", "gold"],
    );
    assert_eq!(bad_tier.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad_tier.stderr),
        "error: unknown_tier: unknown tier \"gold\"\n"
    );

    let wrong_token = Command::new(binaries_dir().join("tollgate"))
        .args([
            "--url",
            &stack.internal_url(""),
            "--token",
            "not-the-token",
            "tenant",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(wrong_token.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&wrong_token.stderr),
        "error: unauthorized: a valid admin bearer token is required\n"
    );

    let unreachable = Command::new(binaries_dir().join("tollgate"))
        .args([
            "--url",
            "http://127.0.0.1:9",
            "--token",
            ADMIN_TOKEN,
            "tenant",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
    // The rest of the line is the HTTP client's account of the refused connection.
    assert!(
        String::from_utf8_lossy(&unreachable.stderr)
            .starts_with("error: cannot reach http://127.0.0.1:9: "),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
}
