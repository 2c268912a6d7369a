//! Micro-benchmark of the decision path's store operation, per backend, and the Redis facts
//! the design promises: one round trip per decision, and the memory a window costs.
//!
//! `cargo run --release -p tollgate-bench` (or `make bench-decisions`). Starts its own
//! `redis-server` on a free loopback port. Prints figures; asserts nothing about speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_control_plane::clock::SystemClock;
use tollgate_control_plane::storage::redis::{RedisConnection, RedisTarget};
use tollgate_control_plane::window::{Limit, MemoryWindows, RedisWindows, WindowStore};
use tollgate_e2e::redis::RedisServer;

const TENANTS: usize = 1_000;
const CONCURRENCY: usize = 64;
const RUN_FOR: Duration = Duration::from_secs(3);

/// Decisions per second with `CONCURRENCY` tasks over `tenants` tenants, each far below its
/// limit, so every decision admits and writes.
async fn throughput<S: WindowStore + 'static>(store: Arc<S>, tenants: usize) -> f64 {
    let limit = Limit {
        limit: 1_000_000,
        window: Duration::from_secs(60),
        monthly: None,
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut tenant = task;
                while started.elapsed() < RUN_FOR {
                    tenant = (tenant + CONCURRENCY) % tenants;
                    store
                        .decide(&format!("bench-{tenant}"), limit, 1, 0)
                        .await
                        .expect("decision");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "decision path micro-benchmark: {CONCURRENCY} concurrent tasks, {TENANTS} tenants, {RUN_FOR:?} per store, {cores} cores"
    );

    let memory = Arc::new(MemoryWindows::new(Arc::new(SystemClock)));
    let rate = throughput(memory, TENANTS).await;
    println!(
        "memory store:  {rate:>10.0} decisions/s ({:.0} per core)",
        rate / cores as f64
    );

    let redis = RedisServer::start();
    let timeout = Duration::from_secs(1);
    let connection = RedisConnection::connect(&RedisTarget::Standalone(redis.url()), timeout)
        .await
        .expect("connect");
    let store = Arc::new(RedisWindows::new(connection, timeout, None));
    let rate = throughput(store.clone(), TENANTS).await;
    println!(
        "redis store:   {rate:>10.0} decisions/s ({:.0} per core, redis-server on the same machine)",
        rate / cores as f64
    );
    // One hot tenant: its concurrent decisions share round trips.
    let rate = throughput(store.clone(), 1).await;
    println!(
        "redis, 1 tenant: {rate:>8.0} decisions/s ({:.0} per core; concurrent decisions of a tenant share one EVALSHA)",
        rate / cores as f64
    );

    // Round trips. Commands a script runs are counted in commandstats under their own names,
    // and a script cannot call EVALSHA, so EVALSHA calls are exactly the scripts sent; any
    // other round trip would show up as a command the script does not use.
    redis.cli(&["config", "resetstat"]);
    let decisions = 1_000u64;
    let limit = Limit {
        limit: 100,
        window: Duration::from_secs(60),
        monthly: None,
    };
    for i in 0..decisions {
        store
            .decide(&format!("rt-{}", i % 10), limit, 1, 0)
            .await
            .expect("decision");
    }
    let calls: Vec<(String, u64)> = redis
        .command_calls()
        .into_iter()
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect();
    let evalsha = calls
        .iter()
        .find(|(n, _)| n == "evalsha")
        .map_or(0, |(_, c)| *c);
    let breakdown: Vec<String> = calls.iter().map(|(n, c)| format!("{n}={c}")).collect();
    println!(
        "round trips:   {decisions} decisions → {evalsha} EVALSHA = {:.2} per decision (all commands: {})",
        evalsha as f64 / decisions as f64,
        breakdown.join(" ")
    );

    // Memory: a tenant with a full window, at 60 and 1,000 per minute.
    for (name, limit) in [("mem-60", 60u32), ("mem-1000", 1000)] {
        let limit = Limit {
            limit,
            window: Duration::from_secs(60),
            monthly: None,
        };
        for _ in 0..limit.limit {
            store.decide(name, limit, 1, 0).await.expect("decision");
        }
        store.decide(name, limit, 1, 0).await.expect("one denial");
        let usage = |key: &str| -> u64 {
            redis
                .cli(&[
                    "memory",
                    "usage",
                    &format!("tollgate:{{{name}}}:{key}"),
                    "samples",
                    "0",
                ])
                .trim()
                .parse()
                .unwrap_or(0)
        };
        let window = usage("window");
        let all =
            window + usage("window-count") + usage("denied") + usage("usage") + usage("month");
        println!(
            "memory:        {} per minute full: window ZSET {window} B ({:.0} B per admitted request), all keys of the tenant {all} B",
            limit.limit,
            window as f64 / f64::from(limit.limit)
        );
    }
}
