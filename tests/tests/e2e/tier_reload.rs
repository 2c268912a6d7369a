//! The tier table changes without a restart: on file change or SIGHUP the next decision uses
//! the new table; a broken file is refused and the old table stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tollgate_e2e::{Stack, StackOptions, within};

fn table(standard_limit: u32) -> String {
    format!(
        "default_tier = \"standard\"\n[tiers.standard]\nlimit = {standard_limit}\nwindow_seconds = 60\n\
         [tiers.pro]\nlimit = 1000\nwindow_seconds = 60\npaid = true\n"
    )
}

async fn limit_now(stack: &Stack, key: &str) -> Option<u32> {
    let response = stack.call("/api/v1/ingest", key).await;
    response
        .headers()
        .get("x-ratelimit-limit")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// How soon a changed file is in force: the control-plane checks it every second (the default
/// `TOLLGATE_TIERS_POLL_MS`), and a busy machine may be late.
const NEXT_POLL: Duration = Duration::from_millis(2500);

async fn reloads(stack: &Stack, outcome: &str) -> u64 {
    let sample = format!("tollgate_tier_reloads_total{{outcome=\"{outcome}\"}}");
    stack.metric(0, &sample).await.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_applies_at_the_next_poll_under_traffic_and_a_broken_one_is_refused() {
    let stack = Arc::new(Stack::start(StackOptions::default().tiers(&table(60))).await);
    let busy = stack.create_tenant("pro").await;
    let tenant = stack.create_tenant("standard").await;
    assert_eq!(limit_now(&stack, &tenant.key).await, Some(60));

    // Traffic from another tenant all along: no request may fail while the table changes.
    let running = Arc::new(AtomicBool::new(true));
    let mut traffic = JoinSet::new();
    for _ in 0..4 {
        let (stack, key, running) = (stack.clone(), busy.key.clone(), running.clone());
        traffic.spawn(async move {
            let mut statuses = Vec::new();
            while running.load(Ordering::Relaxed) {
                statuses.push(stack.call("/api/v1/predict", &key).await.status().as_u16());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        });
    }

    std::fs::write(stack.tiers_file(), table(10)).unwrap();
    let took = within(NEXT_POLL, "the new limit applies", || async {
        limit_now(&stack, &tenant.key).await == Some(10)
    })
    .await;
    eprintln!("new limit in force {took:?} after the file changed");
    assert_eq!(reloads(&stack, "ok").await, 1);

    std::fs::write(
        stack.tiers_file(),
        "default_tier = \"standard\"\n[tiers.standard]\nlimit = 0\n",
    )
    .unwrap();
    within(NEXT_POLL, "the broken file refused", || async {
        reloads(&stack, "refused").await > 0
    })
    .await;
    assert_eq!(
        reloads(&stack, "refused").await,
        1,
        "one change, one refusal"
    );
    assert_eq!(
        limit_now(&stack, &tenant.key).await,
        Some(10),
        "the old table stays"
    );

    running.store(false, Ordering::Relaxed);
    let mut sent = 0;
    while let Some(statuses) = traffic.join_next().await {
        let statuses = statuses.unwrap();
        sent += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "a request failed: {statuses:?}"
        );
    }
    assert!(sent > 20, "only {sent} requests flowed");
}

#[tokio::test]
async fn sighup_reloads_at_once_and_a_table_missing_a_tier_in_use_is_refused() {
    let options = StackOptions::default()
        .tiers(&table(60))
        .control_plane_env("TOLLGATE_TIERS_POLL_MS", "3600000");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("pro").await;
    let pid = stack.control_planes[0].process.pid().unwrap();
    let hangup = || {
        // SAFETY: kill(2) on the control-plane this test started and has not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    };

    std::fs::write(
        stack.tiers_file(),
        table(60).replace("limit = 1000", "limit = 500"),
    )
    .unwrap();
    assert_eq!(
        limit_now(&stack, &tenant.key).await,
        Some(1000),
        "no poll for an hour: not yet"
    );
    hangup();
    within(Duration::from_secs(1), "SIGHUP reloads", || async {
        limit_now(&stack, &tenant.key).await == Some(500)
    })
    .await;

    // A table without `pro` would strand this tenant: refused.
    std::fs::write(
        stack.tiers_file(),
        "default_tier = \"standard\"\n[tiers.standard]\nlimit = 60\nwindow_seconds = 60\n",
    )
    .unwrap();
    hangup();
    within(
        Duration::from_secs(1),
        "the stranding table refused",
        || async { reloads(&stack, "refused").await > 0 },
    )
    .await;
    assert_eq!(
        reloads(&stack, "refused").await,
        1,
        "one SIGHUP, one refusal"
    );
    assert_eq!(limit_now(&stack, &tenant.key).await, Some(500));
}
