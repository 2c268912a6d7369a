//! The attack benchmark (`make bench`, after the edge benchmark): a legitimate Pro tenant's
//! load through Envoy while an attacker does its worst, against the same load with no attack
//! in the same round.
//!
//! The legitimate tenant sends at a steady rate ([`LEGIT_RATE`] requests per second, open loop,
//! from its own process: `steady`), so its figures say whether the attack takes service away
//! from it, not merely whether the attacker shares the CPU. Scenarios, three rounds:
//! - none: no attack (the reference of its round).
//! - f1: one tenant polling `/api/v1/usage` as fast as 32 connections allow.
//! - f2: a flood of distinct random well-formed keys, from another client address.
//! - f3: 1,000 uploads announcing 1 MiB on public routes, 64 KiB sent, then stalled. The
//!   legitimate load starts once Envoy and the control-plane have taken them in (their CPU
//!   quiet, printed as the ramp): f3 measures what held uploads cost, and opening a thousand
//!   connections at once is a flood like f2's (its cost is in bench/README.md).
//! - f4: 1 MiB webhook bodies with bad signatures, 8 at a time.
//!
//! The attacker runs on its own runtime whose threads are scheduled `SCHED_IDLE`: a real
//! attacker's client runs on its own machines, and on this one's two cores its CPU would
//! otherwise come out of Envoy's and the legitimate client's share, which measures the
//! scheduler, not Tollgate. It still sends as fast as the CPU Envoy leaves idle allows (how
//! many it sent is printed); every request it sends costs Envoy, the filter and the
//! control-plane what it would from outside. `ATTACKER_PRIORITY=normal` runs it at normal priority, for the
//! figures of a shared machine.
//!
//! `ATTACK_SCENARIOS=none,f3` runs only those (`none` is every round's reference).
//!
//! Printed: the legitimate tenant's req/s and p99 against its no-attack round, its failures
//! (anything but 200 or 429), the control-plane's and Envoy's peak RSS (and for f3 the
//! control-plane's after the uploads closed), the attacker's requests, and control-plane
//! callouts per attacking request.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tollgate_bench::{cpu_ticks, median, rss_bytes, ticks_per_second};
use tollgate_e2e::{Stack, StackOptions};

const ROUNDS: usize = 3;
const RUN_SECONDS: u64 = 5;
/// A busy Pro tenant: 60,000 requests a minute.
const LEGIT_RATE: u32 = 1000;
const TIERS: &str = r#"
default_tier = "standard"
[tiers.standard]
limit = 60
window_seconds = 60
[tiers.pro]
limit = 1000000000
window_seconds = 60
paid = true
"#;
const SCENARIOS: [&str; 5] = ["none", "f1", "f2", "f3", "f4"];
const UNKNOWN_KEY_DECISIONS: &str = "tollgate_decisions_total{tier=\"\",outcome=\"unknown_key\"}";

struct Row {
    scenario: &'static str,
    legit_rps: f64,
    legit_p99_ms: f64,
    legit_failures: u64,
    failure_kinds: String,
    /// The control-plane's own decision latency (all decisions of the round, p99 bucket).
    decision_p99_ms: f64,
    control_plane_peak: u64,
    envoy_peak: u64,
    control_plane_after: Option<u64>,
    /// f3: how long Envoy and the control-plane took to take the uploads in.
    ramp: Option<Duration>,
    attack_requests: u64,
    callouts: u64,
}

/// Raises the open-file limit to its maximum: f3 holds a thousand connections, and Envoy
/// (started from here) inherits the limit.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The attacker's runtime: two threads, each scheduled `SCHED_IDLE` (only CPU nobody else
/// wants) when `idle`.
fn attacker_runtime(idle: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if idle {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: sets the calling thread's policy (pid 0); `param` outlives the call.
                if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                    eprintln!("cannot schedule an attacker thread SCHED_IDLE");
                }
            }
        })
        .build()
        .expect("the attacker's runtime")
}

/// Peak RSS of the control-plane and Envoy while `running` holds.
async fn sample_peaks(
    stack_pids: (Option<u32>, Option<u32>),
    running: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut control_plane, mut envoy) = (0, 0);
    while running.load(Ordering::Relaxed) {
        control_plane = control_plane.max(rss_bytes(stack_pids.0));
        envoy = envoy.max(rss_bytes(stack_pids.1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (control_plane, envoy)
}

/// Waits until the processes use under a tenth of a core together over 200 ms (at most
/// 10 s); how long that took.
async fn quiet(pids: [Option<u32>; 2]) -> Duration {
    const WINDOW: Duration = Duration::from_millis(200);
    let most = ticks_per_second() * WINDOW.as_secs_f64() / 10.0;
    let started = std::time::Instant::now();
    let ticks = || pids.iter().map(|&pid| cpu_ticks(pid)).sum::<u64>();
    let mut before = ticks();
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(WINDOW).await;
        let now = ticks();
        if now.saturating_sub(before) as f64 <= most {
            break;
        }
        before = now;
    }
    started.elapsed()
}

/// `workers` loops sending `request()` until `running` ends; the number of requests sent.
async fn flood<F, Fut>(workers: usize, running: Arc<AtomicBool>, request: F) -> u64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let sent = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (running, sent, request) = (running.clone(), sent.clone(), request.clone());
        tasks.spawn(async move {
            while running.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                request(n).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    sent.load(Ordering::Relaxed)
}

/// An upload announcing 1 MiB with 64 KiB sent, then stalled (the stream is held open).
async fn stalled_upload(port: u16, path: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         stripe-signature: t=1,v1=00\r\ncontent-length: 1048576\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let _ =
        tokio::time::timeout(Duration::from_millis(200), stream.write_all(&[b' '; 65536])).await;
    Some(stream)
}

/// The legitimate tenant's run, from `steady`'s line of figures: (req/s, p99 ms, failures,
/// what they were).
fn steady(url: &str, key: &str) -> (f64, f64, u64, String) {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("steady")))
        .expect("the steady binary beside this one");
    let output = std::process::Command::new(binary)
        .args([url, key, &LEGIT_RATE.to_string(), &RUN_SECONDS.to_string()])
        .output()
        .expect("run steady");
    let text = String::from_utf8_lossy(&output.stdout);
    let figure = |name: &str| -> f64 {
        text.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let failures = text
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("failures="))
        .unwrap_or_default()
        .to_owned();
    (
        figure("rps"),
        figure("p99_ms"),
        figure("failed") as u64,
        failures,
    )
}

/// The decision-latency histogram's cumulative bucket counts: (upper bound in s, count).
async fn decision_buckets(stack: &Stack) -> Vec<(f64, u64)> {
    let text = stack.metrics_text(0).await;
    text.lines()
        .filter_map(|line| line.strip_prefix("tollgate_decision_duration_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

/// The p99 of the decisions made between two readings: the upper bound of the bucket holding
/// it (NaN when there were none).
fn p99_between(before: &[(f64, u64)], after: &[(f64, u64)]) -> f64 {
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .zip(before.iter().map(|b| b.1).chain(std::iter::repeat(0)))
        .map(|(&(bound, count), before)| (bound, count.saturating_sub(before)))
        .collect();
    let total = deltas.last().map_or(0, |d| d.1);
    if total == 0 {
        return f64::NAN;
    }
    let wanted = (total as f64 * 0.99).ceil() as u64;
    deltas
        .iter()
        .find(|(_, count)| *count >= wanted)
        .map_or(f64::NAN, |(bound, _)| bound * 1000.0)
}

async fn round(
    attacker: &tokio::runtime::Handle,
    stack: &Stack,
    scenario: &'static str,
    legit: &str,
    flooder: &str,
) -> Row {
    let pids = (stack.control_planes[0].process.pid(), stack.envoy.pid());
    // The legitimate tenant's decisions are all admissions; the attacks' are unknown keys.
    let callouts_before = stack.metric(0, UNKNOWN_KEY_DECISIONS).await.unwrap_or(0);
    let running = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_peaks(pids, running.clone()));
    let mut stalled = Vec::new();
    let mut ramp = None;
    if scenario == "f3" {
        let port = stack.envoy_port;
        stalled = attacker
            .spawn(async move {
                let paths = [
                    "/api/v1/billing/webhook",
                    "/api/v1/billing/checkout",
                    "/healthz",
                    "/api/v1/tiers",
                ];
                let mut stalled = Vec::new();
                for n in 0..1000 {
                    stalled.extend(stalled_upload(port, paths[n % paths.len()]).await);
                }
                stalled
            })
            .await
            .unwrap_or_default();
        ramp = Some(quiet([pids.0, pids.1]).await);
    }
    let attack = {
        let running = running.clone();
        let envoy = stack.url("");
        let flooder = flooder.to_owned();
        attacker.spawn(async move {
            match scenario {
                "f1" => {
                    let client = reqwest::Client::new();
                    flood(32, running, move |_| {
                        let request = client
                            .get(format!("{envoy}/api/v1/usage"))
                            .header("x-api-key", flooder.clone());
                        async move {
                            let _ = request.send().await;
                        }
                    })
                    .await
                }
                "f2" => {
                    let client = reqwest::Client::builder()
                        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
                        .build()
                        .expect("client on 127.0.0.2");
                    flood(32, running, move |n| {
                        let request = client
                            .get(format!("{envoy}/api/v1/ingest"))
                            .header("x-api-key", format!("tg_attack{n:040x}"));
                        async move {
                            let _ = request.send().await;
                        }
                    })
                    .await
                }
                "f4" => {
                    let client = reqwest::Client::new();
                    let body = bytes_of(1024 * 1024);
                    flood(8, running, move |_| {
                        let request = client
                            .post(format!("{envoy}/api/v1/billing/webhook"))
                            .header("stripe-signature", "t=1,v1=00")
                            .header("content-type", "application/json")
                            .body(body.clone());
                        async move {
                            let _ = request.send().await;
                        }
                    })
                    .await
                }
                _ => 0,
            }
        })
    };
    let url = stack.url("/api/v1/ingest");
    let key = legit.to_owned();
    let buckets_before = decision_buckets(stack).await;
    let (legit_rps, legit_p99_ms, legit_failures, failure_kinds) =
        tokio::task::spawn_blocking(move || steady(&url, &key))
            .await
            .expect("steady");
    let decision_p99_ms = p99_between(&buckets_before, &decision_buckets(stack).await);
    running.store(false, Ordering::Relaxed);
    let attack_requests = attack.await.unwrap_or(0) + stalled.len() as u64;
    let (control_plane_peak, envoy_peak) = sampler.await.unwrap_or((0, 0));
    let control_plane_after = if stalled.is_empty() {
        None
    } else {
        drop(stalled);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(rss_bytes(pids.0))
    };
    let callouts = stack.metric(0, UNKNOWN_KEY_DECISIONS).await.unwrap_or(0) - callouts_before;
    Row {
        scenario,
        legit_rps,
        legit_p99_ms,
        legit_failures,
        failure_kinds,
        decision_p99_ms,
        control_plane_peak,
        envoy_peak,
        control_plane_after,
        ramp,
        attack_requests,
        callouts,
    }
}

fn bytes_of(size: usize) -> Vec<u8> {
    let mut body = vec![b' '; size];
    body[0] = b'{';
    body[size - 1] = b'}';
    body
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    raise_file_limit();
    let idle = std::env::var("ATTACKER_PRIORITY").as_deref() != Ok("normal");
    let attacker = attacker_runtime(idle);
    println!("Starting the stack (release binaries, Envoy --concurrency 2, default budgets)...");
    let stack = Stack::start(
        StackOptions::default()
            .tiers(TIERS)
            .control_plane_env("TOLLGATE_USAGE_BUDGET", "10")
            .control_plane_env("TOLLGATE_PUBLIC_BUDGET", "20")
            .control_plane_env("STRIPE_WEBHOOK_SECRET", "whsec_attack_benchmark"),
    )
    .await;
    let legit = stack.create_tenant("pro").await.key;
    let flooder = stack.create_tenant("pro").await.key;
    let baseline = rss_bytes(stack.control_planes[0].process.pid());
    println!(
        "control-plane RSS at rest: {:.1} MiB; legitimate load: {LEGIT_RATE} requests/s for {RUN_SECONDS} s, open loop; attacker {}",
        mib(baseline),
        if idle {
            "SCHED_IDLE"
        } else {
            "at normal priority"
        }
    );

    let only = std::env::var("ATTACK_SCENARIOS").ok();
    let chosen = |name: &str| {
        only.as_deref()
            .is_none_or(|list| name == "none" || list.split(',').any(|n| n == name))
    };
    let mut by_scenario: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for round_number in 1..=ROUNDS {
        println!("\nround {round_number} of {ROUNDS}");
        println!(
            "{:<5} {:>9} {:>6} {:>8} {:>6} {:>8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "",
            "req/s",
            "x none",
            "p99 ms",
            "x none",
            "failures",
            "decide p99",
            "cp MiB",
            "envoy MiB",
            "cp after",
            "attack req",
            "callouts/a"
        );
        let mut reference: Option<(f64, f64)> = None;
        for scenario in SCENARIOS.into_iter().filter(|s| chosen(s)) {
            let row = round(attacker.handle(), &stack, scenario, &legit, &flooder).await;
            let (rps0, p99_0) = *reference.get_or_insert((row.legit_rps, row.legit_p99_ms));
            let per_attack = if row.attack_requests > 0 {
                format!("{:.3}", row.callouts as f64 / row.attack_requests as f64)
            } else {
                "-".into()
            };
            println!(
                "{:<5} {:>9.0} {:>6.2} {:>8.2} {:>6.2} {:>8} {:>10.2} {:>9.1} {:>9.1} {:>9} {:>10} {:>10}{}{}",
                row.scenario,
                row.legit_rps,
                row.legit_rps / rps0,
                row.legit_p99_ms,
                row.legit_p99_ms / p99_0,
                row.legit_failures,
                row.decision_p99_ms,
                mib(row.control_plane_peak),
                mib(row.envoy_peak),
                row.control_plane_after
                    .map_or("-".into(), |after| format!("{:.1}", mib(after))),
                row.attack_requests,
                per_attack,
                if row.failure_kinds.is_empty() {
                    String::new()
                } else {
                    format!("  (failures: {})", row.failure_kinds)
                },
                row.ramp.map_or(String::new(), |ramp| format!(
                    "  (uploads taken in {} ms after the last was opened)",
                    ramp.as_millis()
                )),
            );
            match by_scenario
                .iter_mut()
                .find(|(name, _, _)| *name == scenario)
            {
                Some((_, rps, p99)) => {
                    rps.push(row.legit_rps / rps0);
                    p99.push(row.legit_p99_ms / p99_0);
                }
                None => by_scenario.push((
                    scenario,
                    vec![row.legit_rps / rps0],
                    vec![row.legit_p99_ms / p99_0],
                )),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!("\nmedian of {ROUNDS} rounds, legitimate tenant against its no-attack run");
    println!("{:<5} {:>8} {:>8}", "", "req/s x", "p99 x");
    for (name, rps, p99) in &mut by_scenario {
        println!("{name:<5} {:>8.2} {:>8.2}", median(rps), median(p99));
    }
    // A runtime may not be dropped inside another's context; its threads are idle by now.
    attacker.shutdown_background();
}
