//! The API USAGE panel in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/dashboard.mjs` (playwright-core), against the dashboard served through
//! Envoy. Leaves a screenshot in `tests/artifacts/dashboard.png`.

use std::process::Command;
use std::time::Duration;

use tollgate_e2e::{Process, Stack, StackOptions, workspace};

#[tokio::test]
async fn the_dashboard_shows_usage_and_keeps_up_in_a_real_browser() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    for _ in 0..3 {
        assert_eq!(
            stack.call("/api/v1/ingest", &tenant.key).await.status(),
            200
        );
    }

    let artifacts = workspace().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let logs = tempfile::TempDir::new().expect("tempdir");

    let mut node = Command::new("node");
    node.arg(workspace().join("tests/browser/dashboard.mjs"))
        .current_dir(workspace().join("tests/browser"))
        .env("DASHBOARD_URL", stack.url("/dashboard"))
        .env("ENVOY_URL", stack.url(""))
        .env("API_KEY", &tenant.key)
        .env("SCREENSHOT", &screenshot);
    let mut driver = Process::spawn("browser", node, logs.path());
    // Blocking is fine: everything the browser talks to runs in other processes.
    let status = driver.wait_for_exit(Duration::from_secs(90));
    let output = driver.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed ({status:?}):\n{output}"
    );
    assert!(output.contains("dashboard: ok"), "{output}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}
