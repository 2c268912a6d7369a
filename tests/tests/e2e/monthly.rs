//! A tier with two windows: a short rolling window and a calendar-month quota. The most
//! restrictive decides; both are charged in the same store round trip; the headers list both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions, count, header};

/// The filter's `lease` setting for this file: off. The tests count every unit of a one-second
/// window, and a lease's units are stamped at its deadline, up to a second late, which such a
/// window cannot absorb (leases.rs covers leases).
fn no_leases() -> serde_json::Value {
    json!({"enabled": false})
}

/// 10 per rolling second, 25 per month: the month runs out within three seconds.
const TIERS: &str = r#"
    default_tier = "metered"
    [tiers.metered]
    limit = 10
    window_seconds = 1
    monthly_limit = 25
"#;

/// When the calendar month after the one `unix_seconds` falls in starts (midnight UTC on the
/// 1st), in Unix seconds. Written out here (Howard Hinnant's `civil_from_days`) so the test
/// does not trust the code it tests.
fn next_month_starts(unix_seconds: u64) -> u64 {
    let days = i64::try_from(unix_seconds / 86_400).unwrap();
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let length = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    u64::try_from(days + length - day + 1).unwrap() * 86_400
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

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
            &stack.burst("/api/v1/ingest", &tenant.key, 9, 3).await,
            StatusCode::OK
        ),
        9
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        count(
            &stack.burst("/api/v1/ingest", &tenant.key, 10, 3).await,
            StatusCode::OK
        ),
        10
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        count(
            &stack.burst("/api/v1/ingest", &tenant.key, 5, 1).await,
            StatusCode::OK
        ),
        5,
        "25 of 25"
    );

    let before = unix_now();
    let refused = stack.call("/api/v1/ingest", &tenant.key).await;
    let after = unix_now();
    assert_eq!(
        refused.status(),
        429,
        "the window has 5 free, the month none"
    );
    // Until the month starts over, rounded up to whole seconds from the moment of the
    // decision, which fell between `before` and `after`.
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    let until_next_month = |now: u64| next_month_starts(now) - now;
    assert!(
        (until_next_month(after)..=until_next_month(before)).contains(&retry_after),
        "Retry-After {retry_after}: not the start of next month (in {} s)",
        until_next_month(before)
    );
    assert_eq!(
        header(&refused, "x-ratelimit-limit"),
        "25",
        "the monthly policy binds"
    );
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&refused, "ratelimit"),
        format!("\"metered-monthly\";r=0;t={retry_after}")
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");

    let usage = stack.usage(&tenant.key).await;
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
        Stack::start(
            StackOptions::default()
                .tiers(TIERS)
                .filter("lease", no_leases()),
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn two_windows_with_the_redis_store() {
    let redis = RedisServer::start();
    let options = StackOptions::default()
        .tiers(TIERS)
        .filter("lease", no_leases())
        .redis(redis.url());
    the_month_refuses_while_the_window_has_room(Stack::start(options).await).await;
}
