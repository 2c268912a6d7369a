//! The edge benchmark (`make bench`): what Tollgate costs in front of an API, against Envoy
//! on its own, measured in one run with the scenarios interleaved over several rounds, so
//! that every ratio compares figures taken minutes apart on the same machine.
//!
//! Five rounds, then the median of each scenario's ratios. Scenarios, each behind Envoy with
//! 2 workers; b to e decide every request with a callout (leases off), and the ones ending in
//! L run the shipped default, leases on:
//! - a0: Envoy answers the route itself (`direct_response`): the raw ceiling.
//! - a:  Envoy forwards to the demo upstream, no filter: the baseline for admitted traffic.
//! - b:  filter + control-plane (memory store), one tenant under its limit, HTTP/2 callouts.
//! - bL, cL, c100L, dL, eL: as b, c, c100, d, e, with leases.
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
//! read from /proc (utime + stime of Envoy, the control-plane and Redis) around each run, and
//! callouts per request from the control-plane's `tollgate_decision_requests_total`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;
use tollgate_bench::{
    TIERS, cpu_ticks, median, run_wrk, scratch_dir, ticks_per_second, wrk_script,
};
use tollgate_e2e::redis::RedisServer;
use tollgate_e2e::{Stack, StackOptions};

/// Five, so each scenario's median stands on more than one or two lucky rounds: on 2 shared
/// cores one round can be off by a quarter.
const ROUNDS: usize = 5;
const RUN_SECONDS: u64 = 5;
const CONNECTIONS: u32 = 64;

/// One figure's ratio in every round.
type Ratios = Vec<f64>;

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
    requests: u64,
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
    // Per request: every admission is one callout (leases off). Leased: the shipped default.
    let per_request = || {
        StackOptions::default()
            .tiers(TIERS)
            .filter("lease", json!({"enabled": false}))
    };
    let leased = || StackOptions::default().tiers(TIERS);
    let stacks = [
        Stack::start(StackOptions::default().without_filter().direct_response()).await, // 0: a0
        Stack::start(StackOptions::default().without_filter()).await,                   // 1: a
        Stack::start(per_request()).await, // 2: b, d, e
        Stack::start(per_request().callout_http1()).await, // 3: b1
        Stack::start(per_request().redis(redis.url())).await, // 4: c, c100
        Stack::start(per_request().control_plane_env("TOLLGATE_DECISION_THREADS", "2")).await, // 5: b2
        Stack::start(leased()).await,                    // 6: bL, dL, eL
        Stack::start(leased().redis(redis.url())).await, // 7: cL, c100L
    ];

    let key = |stack: usize| unlimited_key(&stacks[stack]);
    let (b, b1, c, b2, b_leased, c_leased) = (
        key(2).await,
        key(3).await,
        key(4).await,
        key(5).await,
        key(6).await,
        key(7).await,
    );
    let (flooder, flooder_leased) = (
        stacks[2].create_tenant("standard").await.key,
        stacks[6].create_tenant("standard").await.key,
    );
    let mut many: [Vec<String>; 4] = Default::default();
    for (list, stack) in many.iter_mut().zip([2, 4, 6, 7]) {
        for _ in 0..100 {
            list.push(unlimited_key(&stacks[stack]).await);
        }
    }
    let [many, many_on_redis, many_leased, many_on_redis_leased] = many;
    // Exhaust the flooders' quota before any round.
    for (stack, flooder) in [(2, &flooder), (6, &flooder_leased)] {
        for _ in 0..61 {
            stacks[stack].call("/api/v1/ingest", flooder).await;
        }
    }

    let scenario =
        |name: &'static str, stack: usize, keys: Vec<String>| Scenario { name, stack, keys };
    let scenarios = [
        scenario("a0", 0, vec!["tg_none".into()]),
        scenario("a", 1, vec!["tg_none".into()]),
        scenario("b", 2, vec![b]),
        scenario("bL", 6, vec![b_leased]),
        scenario("b1", 3, vec![b1]),
        scenario("b2", 5, vec![b2]),
        scenario("c", 4, vec![c]),
        scenario("cL", 7, vec![c_leased]),
        scenario("c100", 4, many_on_redis),
        scenario("c100L", 7, many_on_redis_leased),
        scenario("d", 2, vec![flooder]),
        scenario("dL", 6, vec![flooder_leased]),
        scenario("e", 2, many),
        scenario("eL", 6, many_leased),
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
    // Per scenario, in every round: its throughput to a's and a0's, its p99 to a's.
    let mut ratios: Vec<(&str, Ratios, Ratios, Ratios)> = Vec::new();
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
                    if matches!(scenario.stack, 4 | 7) {
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
                    requests,
                    cpu_us_per_request: cpu,
                    callouts: (scenario.stack >= 2).then_some(callouts),
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
        let a_p99 = results
            .iter()
            .find(|(n, _)| *n == "a")
            .map_or(f64::NAN, |(_, f)| f.p99_ms);
        let _ = writeln!(
            report,
            "\nround {round} of {ROUNDS} ({RUN_SECONDS} s each, wrk -t2 -c{CONNECTIONS})"
        );
        let _ = writeln!(
            report,
            "{:<5} {:>9} {:>8} {:>8} {:>6} {:>7} {:>7}  cpu µs/request",
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
                .map(|c| {
                    format!(
                        "; callouts {c} ({:.3} per request)",
                        c as f64 / f.requests.max(1) as f64
                    )
                })
                .unwrap_or_default();
            let (to_a, to_a0) = (f.requests_per_second / a, f.requests_per_second / a0);
            let p99_to_a = f.p99_ms / a_p99;
            match ratios.iter_mut().find(|(n, _, _, _)| n == name) {
                Some((_, by_a, by_a0, p99)) => {
                    by_a.push(to_a);
                    by_a0.push(to_a0);
                    p99.push(p99_to_a);
                }
                None => ratios.push((name, vec![to_a], vec![to_a0], vec![p99_to_a])),
            }
            let _ = writeln!(
                report,
                "{name:<5} {:>9.0} {:>8.2} {:>8.2} {:>6.1} {:>7.2} {:>7.2}  {}{callouts}",
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
    println!("{:<5} {:>7} {:>7} {:>9}", "", "/ a", "/ a0", "p99 / a's");
    for (name, by_a, by_a0, p99) in &mut ratios {
        println!(
            "{name:<5} {:>7.2} {:>7.2} {:>9.2}",
            median(by_a),
            median(by_a0),
            median(p99)
        );
    }
}
