//! Envoy's instructions per request (`make bench-instructions`): what the filter costs Envoy,
//! counted rather than timed, so the figure is the same on a busy machine as on an idle one
//! and a change of a few percent shows.
//!
//! Each scenario runs one Envoy with one worker under valgrind's callgrind (the control-plane
//! and the demo upstream run natively), warms it up, zeroes callgrind's counters, sends
//! [`REQUESTS`] requests one after another on one connection, and reads the instructions
//! Envoy ran meanwhile (every thread, the wasm VM's compiled code included) from the dump.
//! Scenarios, as in the edge benchmark (`bench/src/bin/edge.rs`):
//! - a0: Envoy answers the route itself (`direct_response`), no filter: the baseline of d.
//! - a:  Envoy forwards to the demo upstream, no filter: the baseline of b and bL.
//! - b:  filter + control-plane (memory store), one tenant under its limit, leases off: one
//!   callout per request.
//! - b1: as b, with HTTP/1.1 callouts.
//! - bL: as b with leases, the shipped default.
//! - d:  one tenant over its quota: the deny cache answers every request (against a0: neither
//!   reaches the upstream).
//!
//! `INSTRUCTION_SCENARIOS=a,bL` limits a run to those scenarios.
//!
//! Under valgrind Envoy serves a few hundred requests a second, so the control-plane sizes
//! bL's leases for that rate: each worker batch holds a few requests rather than the 16 it
//! holds at the edge benchmark's rates, and the lease table's shared data is read and written
//! more often per request than it is at full speed (bench/README.md says by how much).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tollgate_bench::{TIERS, scratch_dir};
use tollgate_e2e::{Stack, StackOptions};

/// Requests counted per scenario, after [`WARM_UP`] not counted (the VM's code compiled,
/// the first lease granted, the deny cache filled).
const REQUESTS: u64 = 2_000;
const WARM_UP: u64 = 600;

struct Scenario {
    name: &'static str,
    /// How the scenario's stack differs from the shipped one.
    options: fn() -> StackOptions,
    tier: &'static str,
    /// The status every counted request must get.
    status: u16,
}

fn per_request() -> StackOptions {
    StackOptions::default()
        .tiers(TIERS)
        .filter("lease", json!({"enabled": false}))
}

fn per_request_http1() -> StackOptions {
    per_request().callout_http1()
}

fn leased() -> StackOptions {
    StackOptions::default().tiers(TIERS)
}

fn without_filter() -> StackOptions {
    StackOptions::default().tiers(TIERS).without_filter()
}

fn answering_itself() -> StackOptions {
    without_filter().direct_response()
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "a0",
        options: answering_itself,
        tier: "unlimited",
        status: 200,
    },
    Scenario {
        name: "a",
        options: without_filter,
        tier: "unlimited",
        status: 200,
    },
    Scenario {
        name: "b",
        options: per_request,
        tier: "unlimited",
        status: 200,
    },
    Scenario {
        name: "b1",
        options: per_request_http1,
        tier: "unlimited",
        status: 200,
    },
    Scenario {
        name: "bL",
        options: leased,
        tier: "unlimited",
        status: 200,
    },
    Scenario {
        name: "d",
        options: leased,
        tier: "standard",
        status: 429,
    },
];

#[tokio::main]
async fn main() {
    let only = std::env::var("INSTRUCTION_SCENARIOS").ok();
    let chosen = SCENARIOS.iter().filter(|scenario| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|name| name == scenario.name))
    });
    println!(
        "Envoy (1 worker) under callgrind: instructions per request, {REQUESTS} requests \
         after {WARM_UP} not counted"
    );
    let (mut a0, mut a) = (None, None);
    for scenario in chosen {
        let per_request = count(scenario).await;
        match scenario.name {
            "a0" => a0 = Some(per_request),
            "a" => a = Some(per_request),
            _ => {}
        }
        let ratio = |baseline: Option<f64>| {
            baseline.map_or(String::from("  -"), |b| format!("{:.2}", per_request / b))
        };
        println!(
            "{:<4} {:>10.0} instructions/request   / a {}   / a0 {}",
            scenario.name,
            per_request,
            ratio(a),
            ratio(a0)
        );
    }
}

/// Starts the scenario's stack with Envoy under callgrind and returns Envoy's instructions
/// per counted request.
async fn count(scenario: &Scenario) -> f64 {
    let dir = scratch_dir("instructions");
    let dumps = dir.join(format!("callgrind.{}.%p.out", scenario.name));
    let out_file = format!("--callgrind-out-file={}", dumps.display());
    let stack = Stack::start(
        (scenario.options)()
            .envoy_under(&[
                "valgrind",
                "--tool=callgrind",
                // Envoy's wasm runtime (V8) writes the code it compiles, and runs it.
                "--smc-check=all-non-file",
                // `.venv/bin/envoy` is a Python script that execs the Envoy binary.
                "--trace-children=yes",
                &out_file,
            ])
            // Some 50 times slower than natively: the shipped 100 ms would time callouts out.
            .filter(
                "control_plane",
                json!({"cluster": "tollgate_control_plane", "timeout": "5s"}),
            ),
    )
    .await;
    let key = stack.create_tenant(scenario.tier).await.key;
    let pid = stack.envoy.pid().expect("Envoy is running");
    send(&stack, &key, WARM_UP, None).await;
    callgrind_control(pid, "-z");
    send(&stack, &key, REQUESTS, Some(scenario.status)).await;
    callgrind_control(pid, "-d");
    let instructions = newest_dump_total(&dir, scenario.name, pid);
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
    instructions as f64 / REQUESTS as f64
}

/// Sends `count` requests one after another; with `expect`, fails unless each gets that
/// status (a counted figure of the wrong path would be meaningless).
async fn send(stack: &Stack, key: &str, count: u64, expect: Option<u16>) {
    for _ in 0..count {
        let status = stack.call("/api/v1/ingest", key).await.status().as_u16();
        if let Some(expected) = expect {
            assert_eq!(status, expected, "every counted request gets {expected}");
        }
    }
}

fn callgrind_control(pid: u32, command: &str) {
    let output = Command::new("callgrind_control")
        .arg(command)
        .arg(pid.to_string())
        .output()
        .expect("callgrind_control (Debian's valgrind) runs");
    assert!(
        output.status.success(),
        "callgrind_control {command} {pid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The instructions in the newest of Envoy's callgrind dumps: its `summary:` line, which
/// callgrind writes in the dump's header. Waits for the dump `callgrind_control -d` asked for
/// to appear with it.
fn newest_dump_total(dir: &Path, scenario: &str, pid: u32) -> u64 {
    let prefix = format!("callgrind.{scenario}.{pid}.out.");
    for _ in 0..600 {
        let newest = std::fs::read_dir(dir)
            .expect("scratch dir")
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let part: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((part, entry.path()))
            })
            .max_by_key(|(part, _)| *part);
        let total = newest
            .and_then(|(_, path)| std::fs::read_to_string(path).ok())
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("summary:"))
                    .and_then(|total| total.trim().parse().ok())
            });
        if let Some(total) = total {
            return total;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no callgrind dump of Envoy {pid} in {}", dir.display());
}
