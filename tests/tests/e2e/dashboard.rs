//! The dashboard in a real browser: Debian's headless Chromium, driven by the scripts in
//! `tests/browser` (playwright-core), against the dashboard served through Envoy. Each test
//! leaves a screenshot in `tests/artifacts`: `dashboard.png` (usage) and `billing.png`.

use tollgate_e2e::stripe::PAID_TIERS;
use tollgate_e2e::stripe_stand_in::StripeStandIn;
use tollgate_e2e::{Stack, StackOptions, drive_browser, workspace};

#[tokio::test]
async fn the_dashboard_shows_usage_and_keeps_up_in_a_real_browser() {
    // Leases off: the dashboard must read exactly the calls made (a lease's units count as
    // used until handed back; leases.rs covers leases).
    let options = StackOptions::default().filter("lease", serde_json::json!({"enabled": false}));
    let stack = Stack::start(options).await;
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
    // Blocking is fine: everything the browser talks to runs in other processes.
    let output = drive_browser(
        "dashboard.mjs",
        &[
            ("DASHBOARD_URL", stack.url("/dashboard")),
            ("ENVOY_URL", stack.url("")),
            ("API_KEY", tenant.key.clone()),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    );
    assert!(output.contains("dashboard: ok"), "{output}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

// Two threads: the Stripe stand-in runs in this test's runtime while the browser is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_sends_the_tenant_to_stripe() {
    let stand_in = StripeStandIn::start().await;
    let options = StackOptions::default()
        .tiers(PAID_TIERS)
        .control_plane_env("STRIPE_SECRET_KEY", "sk_test_tollgate_browser")
        .control_plane_env("STRIPE_API_BASE", &stand_in.url)
        .control_plane_env(
            "TOLLGATE_BILLING_RETURN_URL",
            "https://platform.example/billing",
        );
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;

    let screenshot = workspace().join("tests/artifacts/billing.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).expect("artifacts dir");
    let env = [
        ("DASHBOARD_URL", stack.url("/dashboard")),
        ("API_KEY", tenant.key.clone()),
        ("SCREENSHOT", screenshot.display().to_string()),
    ];
    let output = tokio::task::spawn_blocking(move || drive_browser("billing.mjs", &env))
        .await
        .unwrap();
    assert!(output.contains("billing: ok"), "{output}");
    let asked = stand_in.requests();
    assert_eq!(
        asked.len(),
        1,
        "one checkout, no portal session without a customer"
    );
    assert_eq!(asked[0].path, "/v1/checkout/sessions");
    assert_eq!(
        asked[0].field("client_reference_id"),
        Some(tenant.id.as_str())
    );
}
