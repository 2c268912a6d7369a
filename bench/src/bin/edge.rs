//! The edge benchmark (`make bench`): what Tollgate costs in front of an API, against Envoy
//! on its own, measured in one run with the scenarios interleaved over several rounds, so
//! that every ratio compares figures taken minutes apart on the same machine.
//!
//! Five rounds, then the median of each scenario's ratios. Scenarios, each behind Envoy with
//! 2 workers:
//! - a0: Envoy answers the route itself (`direct_response`): the raw ceiling.
//! - a:  Envoy forwards to the demo upstream, no filter: the baseline for admitted traffic.
//! - b:  filter + control-plane (memory store), one tenant under its limit, HTTP/2 callouts.
//! - b1: as b, with HTTP/1.1 callouts (to choose the protocol).
//! - b2: as b, with the control-plane on two threads (`TOLLGATE_DECISION_THREADS=2`).
//! - c:  as b, with the Redis store.
//! - c100: as c, 100 tenants each under its limit (a tenant's decisions rarely share a call).
//! - d:  a flood from one tenant over its quota (the deny cache answers).
//! - e:  100 tenants, each under its limit.
//!
//! `BENCH_SCENARIOS=a0,a,d` limits a run to those scenarios.
//!
//! Load: `wrk` (Debian), the same Lua request script for every scenario. CPU per request is
//! read from /proc (utime + stime of Envoy, the control-plane and Redis) around each run.

use std::fmt::Write as _;
use std::time::Duration;

use tollgate_bench::{cpu_ticks, median, run_wrk, scratch_dir, ticks_per_second, wrk_script};
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions};

/// Five, so each scenario's median stands on more than one or two lucky rounds: on 2 shared
/// cores one round can be off by a quarter.
const ROUNDS: usize = 5;
const RUN_SECONDS: u64 = 5;
const CONNECTIONS: u32 = 64;
const TIERS: &str = r#"
default_tier = "standard"
[tiers.standard]
limit = 60
window_seconds = 60
[tiers.unlimited]
limit = 1000000000
window_seconds = 60
"#;

struct Scenario {
    name: &'static str,
    stack: usize,
    keys: Vec<String>,
}

struct Figures {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    share_429: f64,
    cpu_us_per_request: Vec<(&'static str, f64)>,
    callouts: Option<u64>,
}

async fn unlimited_key(stack: &Stack) -> String {
    stack.create_tenant("unlimited").await.key
}

#[tokio::main]
async fn main() {
    let redis = RedisServer::start();
    let dir = scratch_dir("bench");
    println!("Starting stacks (release binaries, Envoy --concurrency 2)...");
    let tollgate = || StackOptions::default().tiers(TIERS);
    let stacks = [
        Stack::start(StackOptions::default().without_filter().direct_response()).await, // 0: a0
        Stack::start(StackOptions::default().without_filter()).await,                   // 1: a
        Stack::start(tollgate()).await,                 // 2: b, d, e
        Stack::start(tollgate().callout_http1()).await, // 3: b1
        Stack::start(tollgate().redis(redis.url())).await, // 4: c
        Stack::start(tollgate().control_plane_env("TOLLGATE_DECISION_THREADS", "2")).await, // 5: b2
    ];

    let b_key = unlimited_key(&stacks[2]).await;
    let b1_key = unlimited_key(&stacks[3]).await;
    let c_key = unlimited_key(&stacks[4]).await;
    let b2_key = unlimited_key(&stacks[5]).await;
    let flooder = stacks[2].create_tenant("standard").await.key;
    let mut many = Vec::new();
    let mut many_on_redis = Vec::new();
    for _ in 0..100 {
        many.push(unlimited_key(&stacks[2]).await);
        many_on_redis.push(unlimited_key(&stacks[4]).await);
    }
    // Exhaust the flooder's quota before any round.
    for _ in 0..61 {
        stacks[2].call("/api/v1/ingest", &flooder).await;
    }

    let scenarios = [
        Scenario {
            name: "a0",
            stack: 0,
            keys: vec!["tg_none".into()],
        },
        Scenario {
            name: "a",
            stack: 1,
            keys: vec!["tg_none".into()],
        },
        Scenario {
            name: "b",
            stack: 2,
            keys: vec![b_key],
        },
        Scenario {
            name: "b1",
            stack: 3,
            keys: vec![b1_key],
        },
        Scenario {
            name: "b2",
            stack: 5,
            keys: vec![b2_key],
        },
        Scenario {
            name: "c",
            stack: 4,
            keys: vec![c_key],
        },
        Scenario {
            name: "c100",
            stack: 4,
            keys: many_on_redis,
        },
        Scenario {
            name: "d",
            stack: 2,
            keys: vec![flooder],
        },
        Scenario {
            name: "e",
            stack: 2,
            keys: many,
        },
    ];
    // `BENCH_SCENARIOS=a0,d` runs only those (for iterating on one figure); ratios need a0
    // and a in the list.
    let only = std::env::var("BENCH_SCENARIOS").ok();
    let chosen = |name: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|n| n == name))
    };
    let hz = ticks_per_second();
    let mut report = String::new();
    // Per scenario, its ratios to a and a0 in every round.
    let mut ratios: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for round in 1..=ROUNDS {
        let mut results: Vec<(&str, Figures)> = Vec::new();
        for scenario in scenarios.iter().filter(|s| chosen(s.name)) {
            let stack = &stacks[scenario.stack];
            let script = wrk_script(&dir, "/api/v1/ingest", &scenario.keys);
            let pids = [
                ("envoy", stack.envoy.pid()),
                ("control-plane", stack.control_planes[0].process.pid()),
                (
                    "redis",
                    if scenario.stack == 4 {
                        redis.pid()
                    } else {
                        None
                    },
                ),
            ];
            let before: Vec<u64> = pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
            let callouts_before = stack.decision_requests().await;
            let run = run_wrk(
                &stack.url("/api/v1/ingest"),
                &script,
                2,
                CONNECTIONS,
                RUN_SECONDS,
            );
            let (rps, p50, p99, requests, non_2xx) = (
                run.requests_per_second,
                run.p50_ms,
                run.p99_ms,
                run.requests,
                run.non_2xx,
            );
            let callouts = stack.decision_requests().await - callouts_before;
            let cpu = pids
                .iter()
                .zip(before)
                .filter(|((_, pid), _)| pid.is_some())
                .map(|((name, pid), before)| {
                    let used = (cpu_ticks(*pid) - before) as f64 / hz;
                    (*name, used * 1e6 / requests.max(1) as f64)
                })
                .collect();
            results.push((
                scenario.name,
                Figures {
                    requests_per_second: rps,
                    p50_ms: p50,
                    p99_ms: p99,
                    share_429: 100.0 * non_2xx as f64 / requests.max(1) as f64,
                    cpu_us_per_request: cpu,
                    callouts: (scenario.name == "d").then_some(callouts),
                },
            ));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rps = |name: &str| {
            results
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(f64::NAN, |(_, f)| f.requests_per_second)
        };
        let (a0, a) = (rps("a0"), rps("a"));
        let _ = writeln!(
            report,
            "\nround {round} of {ROUNDS} ({RUN_SECONDS} s each, wrk -t2 -c{CONNECTIONS})"
        );
        let _ = writeln!(
            report,
            "{:<4} {:>9} {:>8} {:>8} {:>6} {:>7} {:>7}  cpu µs/request",
            "", "req/s", "p50 ms", "p99 ms", "% 429", "/ a", "/ a0"
        );
        for (name, f) in &results {
            let cpu: Vec<String> = f
                .cpu_us_per_request
                .iter()
                .map(|(n, us)| format!("{n} {us:.1}"))
                .collect();
            let callouts = f
                .callouts
                .map(|c| format!("; control-plane callouts {c} in {RUN_SECONDS} s"))
                .unwrap_or_default();
            let (to_a, to_a0) = (f.requests_per_second / a, f.requests_per_second / a0);
            match ratios.iter_mut().find(|(n, _, _)| n == name) {
                Some((_, by_a, by_a0)) => {
                    by_a.push(to_a);
                    by_a0.push(to_a0);
                }
                None => ratios.push((name, vec![to_a], vec![to_a0])),
            }
            let _ = writeln!(
                report,
                "{name:<4} {:>9.0} {:>8.2} {:>8.2} {:>6.1} {:>7.2} {:>7.2}  {}{callouts}",
                f.requests_per_second,
                f.p50_ms,
                f.p99_ms,
                f.share_429,
                f.requests_per_second / a,
                f.requests_per_second / a0,
                cpu.join(", "),
            );
        }
        print!("{report}");
        report.clear();
    }
    println!("\nmedian of {ROUNDS} rounds (the figure targets are checked against)");
    println!("{:<4} {:>7} {:>7}", "", "/ a", "/ a0");
    for (name, by_a, by_a0) in &mut ratios {
        println!("{name:<4} {:>7.2} {:>7.2}", median(by_a), median(by_a0));
    }
}
