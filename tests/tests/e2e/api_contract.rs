//! The API contract, checked by tools nobody here wrote: `openapi-spec-validator` validates the
//! committed OpenAPI documents, and `schemathesis` sends property-based requests, generated
//! from the document each listener serves at `/openapi.json`, to a running control-plane's
//! public API (with a tenant's key) and admin API (with the admin token). Every answer must
//! be no 5xx, have a documented status and content type, and match its schema (problem
//! documents included).
//!
//! Setup: one stack with billing configured against the Stripe stand-in (so the billing
//! routes answer as in production instead of 503 `billing_not_configured`), budgets raised
//! so the run is not mostly 429s, a tenant. The run is bounded (examples per operation, a
//! fixed seed, `SCHEMATHESIS_SEED` to try another) and takes well under a minute.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tollgate_e2e::stack::ADMIN_TOKEN;
use tollgate_e2e::stripe::PAID_TIERS;
use tollgate_e2e::stripe_stand_in::StripeStandIn;
use tollgate_e2e::{Stack, StackOptions, workspace};

/// Test cases per operation and phase; enough to reach every documented answer of ours.
const MAX_EXAMPLES: &str = "25";
const DEFAULT_SEED: &str = "18";

/// A Python tool of `make deps-test` (installed into `.venv`).
fn tool(name: &str) -> PathBuf {
    let path = workspace().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make deps-test`",
        path.display()
    );
    path
}

fn report(what: &str, output: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_committed_openapi_documents_are_valid_openapi() {
    let docs = workspace().join("docs");
    let output = Command::new(tool("openapi-spec-validator"))
        .arg(docs.join("openapi.json"))
        .arg(docs.join("openapi-admin.json"))
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        output.status.success(),
        "{}",
        report("openapi-spec-validator", &output)
    );
    // And it is not a validator that accepts anything: a document with a broken reference
    // is refused.
    let dir = tempfile::TempDir::new().expect("tempdir");
    let broken = dir.path().join("broken.json");
    let text = std::fs::read_to_string(docs.join("openapi.json")).expect("read openapi.json");
    std::fs::write(
        &broken,
        text.replace("#/components/schemas/Usage", "#/components/schemas/Nothing"),
    )
    .expect("write the broken copy");
    let output = Command::new(tool("openapi-spec-validator"))
        .arg(&broken)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        !output.status.success(),
        "a broken document passed: {}",
        report("openapi-spec-validator", &output)
    );
}

/// Runs schemathesis against the document served at `base/openapi.json`, with `header` on
/// every request, in `dir` (it writes its Hypothesis database there).
fn schemathesis(dir: &Path, base: &str, header: &str) -> Output {
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    Command::new(tool("schemathesis"))
        .current_dir(dir)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", base])
        .args(["--header", header])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", &seed])
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        .arg("--no-color")
        .output()
        .expect("run schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_documents() {
    let stand_in = StripeStandIn::start().await;
    let options = StackOptions::default()
        .tiers(PAID_TIERS)
        .control_plane_env("STRIPE_WEBHOOK_SECRET", "whsec_tollgate_contract")
        .control_plane_env("STRIPE_SECRET_KEY", "sk_test_tollgate_contract")
        .control_plane_env("STRIPE_API_BASE", &stand_in.url)
        .control_plane_env(
            "TOLLGATE_BILLING_RETURN_URL",
            "https://platform.example/billing",
        )
        // The budgets protect the listener from floods; this run is one well-behaved client
        // that should reach the handlers, not the 429s.
        .control_plane_env("TOLLGATE_PUBLIC_BUDGET", "100000")
        .control_plane_env("TOLLGATE_USAGE_BUDGET", "100000")
        .control_plane_env("TOLLGATE_BILLING_BUDGET", "100000");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    let control_plane = &stack.control_planes[0];
    let public = control_plane.url("");
    let internal = control_plane.internal_url("");
    let dir = tempfile::TempDir::new().expect("tempdir");

    let runs = [
        ("public API", public, format!("x-api-key: {}", tenant.key)),
        (
            "admin API",
            internal,
            format!("Authorization: Bearer {ADMIN_TOKEN}"),
        ),
    ];
    let outputs = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || runs.map(|(what, base, header)| (what, schemathesis(&dir, &base, &header)))
    })
    .await
    .expect("schemathesis runs");
    for (what, output) in &outputs {
        // Shown with --nocapture, and with a failure below.
        println!(
            "{}",
            report(&format!("schemathesis against the {what}"), output)
        );
        assert!(
            output.status.success(),
            "{}",
            report(&format!("schemathesis against the {what}"), output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("passed"),
            "schemathesis against the {what} tested nothing:\n{stdout}"
        );
    }
    // The public run reached the billing handlers with the tenant's key (not only 401s): a
    // checkout of the tier for sale went to Stripe.
    assert!(
        stand_in.requests().iter().any(|r| r.is_session()),
        "no session was asked of Stripe"
    );
}
