//! A legitimate client at a steady rate (open loop): `steady URL KEY RATE SECONDS` sends
//! `GET URL` with the key in `x-api-key` at RATE requests per second for SECONDS, whatever
//! the answers, and prints one line of figures:
//!
//! `sent=N ok=N limited=N failed=N rps=F p50_ms=F p99_ms=F failures=STATUS:N,...`
//!
//! Latency counts from when each request was due, not from when it could be sent, so a
//! stalled server shows up in the tail (no coordinated omission). A run in its own process,
//! so an attacker in another cannot steal its scheduling, only CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Requests in flight at most; past it a due request counts as failed (the server is not
/// keeping up).
const MAX_IN_FLIGHT: usize = 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, rate, seconds] = args.as_slice() else {
        eprintln!("usage: steady URL KEY RATE SECONDS");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("RATE");
    let seconds: f64 = seconds.parse().expect("SECONDS");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .expect("client");
    let total = (rate * seconds) as usize;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut requests = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut skipped = 0usize;
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let request = client.get(url.as_str()).header("x-api-key", key.as_str());
        requests.spawn(async move {
            let status = request.send().await.map(|r| r.status().as_u16()).ok();
            drop(slot);
            (status, due.elapsed())
        });
    }
    let (mut ok, mut limited, mut failed) = (0usize, 0usize, skipped);
    // What the failures were: a status, "error" (no answer), or "skipped" (too many in flight).
    let mut failures: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    if skipped > 0 {
        failures.insert("skipped".into(), skipped);
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = requests.join_next().await {
        let Ok((status, latency)) = done else {
            failed += 1;
            continue;
        };
        match status {
            Some(200) => ok += 1,
            Some(429) => limited += 1,
            other => {
                failed += 1;
                let what = other.map_or("error".to_owned(), |status| status.to_string());
                *failures.entry(what).or_default() += 1;
            }
        }
        latencies.push(latency);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let failures: Vec<String> = failures
        .iter()
        .map(|(what, n)| format!("{what}:{n}"))
        .collect();
    println!(
        "sent={total} ok={ok} limited={limited} failed={failed} rps={:.1} p50_ms={:.2} p99_ms={:.2} failures={}",
        (ok + limited) as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        failures.join(","),
    );
}
