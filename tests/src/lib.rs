//! Test harness: starts real processes (Envoy, the control-plane, the demo upstream) on free
//! loopback ports, and stops them by PID when the [`Stack`] is dropped, also when a test
//! fails. Envoy runs from `envoy/envoy.yaml` with only ports, the wasm path and what the
//! test's [`StackOptions`] ask for changed, so the tests exercise the configuration users run.
//! What several test files do through a stack lives here too: [`Stack::burst`] and [`count`]
//! for traffic, [`header`] for reading answers, [`Stack::usage`] for the usage endpoint and
//! [`Stack::patch_tenant`] for an operator's change to a tenant.
//!
//! The binaries must be built first (`make test` does): the workspace's debug binaries, the
//! release wasm filter, and Envoy in `.venv` (or `ENVOY_BIN`).

mod process;
pub mod redis;
pub mod stack;
pub mod stripe;
pub mod stripe_stand_in;

pub use process::{Process, free_port};
pub use stack::{Stack, StackOptions, Tenant};

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// Polls `condition` until it holds and returns how long that took; fails the test, naming
/// `what`, once `limit` has passed. For effects that are asynchronous by design (webhook
/// deliveries, change notifications, reloads): the tests wait on the effect, never on a fixed
/// sleep. The pause between polls doubles from 10 ms to 100 ms, so a quick effect is timed
/// closely and a slow one is not hammered (a poll through the edge spends the tenant's quota).
pub async fn within<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    while !condition().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    started.elapsed()
}

/// How many of `statuses` (say, a [`Stack::burst`]'s) are `status`.
pub fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// The value of the response's header `name`, as text; fails the test if the response has no
/// such header (or one that is not visible ASCII).
pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("response has no {name} header"))
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `target/debug` (or whichever profile built the running test or benchmark).
pub fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or_default()
    } else {
        dir
    }
}

pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/envoy"))
}

pub fn filter_wasm() -> PathBuf {
    binaries_dir()
        .parent()
        .map(|target| target.join("wasm32-wasip1/release/tollgate_filter.wasm"))
        .unwrap_or_default()
}

/// Runs a browser script of `tests/browser` (Node, playwright-core, Debian's Chromium) to its
/// end with `env`, and returns its output; fails the test if it fails or runs over 90 s.
/// Blocking: call it from a blocking thread when the test also serves something on its
/// runtime.
pub fn drive_browser(script: &str, env: &[(&str, String)]) -> String {
    let logs = tempfile::TempDir::new().expect("tempdir");
    let mut node = std::process::Command::new("node");
    node.arg(workspace().join("tests/browser").join(script))
        .current_dir(workspace().join("tests/browser"))
        .envs(env.iter().map(|(k, v)| (*k, v)));
    let mut driver = Process::spawn("browser", node, logs.path());
    let status = driver.wait_for_exit(Duration::from_secs(90));
    let output = driver.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "{script} failed ({status:?}):\n{output}"
    );
    output
}
