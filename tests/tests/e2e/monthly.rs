//! A tier with two windows: a short rolling window and a calendar-month quota. The most
//! restrictive decides; both are charged in the same store round trip; the headers list both.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions};

use crate::request_path::{burst, count};

/// 10 per rolling second, 25 per month: the month runs out within three seconds.
const TIERS: &str = r#"
    default_tier = "metered"
    [tiers.metered]
    limit = 10
    window_seconds = 1
    monthly_limit = 25
"#;

async fn the_month_refuses_while_the_window_has_room(stack: Stack) {
    let tenant = stack.create_tenant("metered").await;
    let first = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(
        first.headers()["ratelimit-policy"],
        "\"metered\";q=10;w=1, \"metered-monthly\";q=25;w=2592000",
        "both policies are listed"
    );
    assert_eq!(
        count(
            &burst(&stack, "/api/v1/ingest", &tenant.key, 9, 3).await,
            StatusCode::OK
        ),
        9
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        count(
            &burst(&stack, "/api/v1/ingest", &tenant.key, 10, 3).await,
            StatusCode::OK
        ),
        10
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        count(
            &burst(&stack, "/api/v1/ingest", &tenant.key, 5, 1).await,
            StatusCode::OK
        ),
        5,
        "25 of 25"
    );

    let refused = stack.call("/api/v1/ingest", &tenant.key).await;
    assert_eq!(
        refused.status(),
        429,
        "the window has 5 free, the month none"
    );
    let header = |name: &str| refused.headers()[name].to_str().unwrap().to_owned();
    let retry_after: u64 = header("retry-after").parse().unwrap();
    assert!(retry_after >= 1, "until the month starts over");
    assert_eq!(
        header("x-ratelimit-limit"),
        "25",
        "the monthly policy binds"
    );
    assert_eq!(header("x-ratelimit-remaining"), "0");
    assert_eq!(
        header("ratelimit"),
        format!("\"metered-monthly\";r=0;t={retry_after}")
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");

    let usage: Value = stack
        .call("/api/v1/usage", &tenant.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            usage["month_to_date"].as_u64(),
            usage["monthly_limit"].as_u64()
        ),
        (Some(25), Some(25))
    );
}

#[tokio::test]
async fn two_windows_with_the_memory_store() {
    the_month_refuses_while_the_window_has_room(
        Stack::start(StackOptions::default().tiers(TIERS)).await,
    )
    .await;
}

#[tokio::test]
async fn two_windows_with_the_redis_store() {
    let redis = RedisServer::start();
    let options = StackOptions::default().tiers(TIERS).redis(redis.url());
    the_month_refuses_while_the_window_has_room(Stack::start(options).await).await;
}
