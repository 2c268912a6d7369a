//! The Redis window store: the same exact sliding-window log, shared by every control-plane
//! replica. A decision is one EVALSHA of [`scripts::DECIDE`] on the tenant's keys, shared with
//! the tenant's other decisions that arrive while one is in flight (see [`super::batches`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Script;

use super::batches::Batches;
use super::{
    GrantedLease, HISTORY_MINUTES, LeaseId, Limit, MinuteUsage, MonthStanding, WindowDecision,
    WindowRequest, WindowStore, WindowUsage,
};
use crate::clock::Clock;
use crate::storage::StoreError;
use crate::storage::redis::key_layout::tenant_window;
use crate::storage::redis::{RedisConnection, bounded, ping, scripts};

/// Most decisions in one EVALSHA: Redis serves nothing else while a script runs, so a call's
/// size is capped however long the queue behind it grows.
const MAX_BATCH: usize = 256;

/// Decisions share a call only with the same tenant, the same limits (a tier change
/// mid-burst starts a new batch) and the same lease TTL.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BatchKey {
    tenant: String,
    limit: Limit,
    lease_ttl_ms: u64,
}

type DecisionBatches = Batches<BatchKey, WindowRequest, Result<WindowDecision, StoreError>>;

/// Figures per request in the decision script's reply.
const REPLY_FIGURES: usize = 8;

pub struct RedisWindows {
    client: Arc<Client>,
    batches: Arc<DecisionBatches>,
}

struct Client {
    connection: RedisConnection,
    timeout: Duration,
    /// `None`: Redis `TIME` inside the script. `Some`: this clock, for servers that refuse
    /// `TIME` in scripts, and for tests.
    clock: Option<Arc<dyn Clock>>,
    decide: Script,
    usage: Script,
}

impl RedisWindows {
    pub fn new(
        connection: RedisConnection,
        timeout: Duration,
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        let client = Arc::new(Client {
            connection,
            timeout,
            clock,
            decide: Script::new(&format!("{}{}", scripts::PRELUDE, scripts::DECIDE)),
            usage: Script::new(&format!("{}{}", scripts::PRELUDE, scripts::USAGE)),
        });
        let caller = Arc::clone(&client);
        let batches = Batches::new(
            MAX_BATCH,
            Box::new(move |key, requests, deadline| {
                let client = Arc::clone(&caller);
                Box::pin(async move { client.decide(&key, &requests, deadline).await })
            }),
        );
        Self {
            client,
            batches: Arc::new(batches),
        }
    }

    /// Whether Redis answers a PING within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.client.connection, self.client.timeout).await
    }
}

impl Client {
    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|clock| clock.now_ms().to_string())
            .unwrap_or_default()
    }

    /// One EVALSHA for a batch of one tenant's decisions, given up at `deadline`: one result
    /// per request, in order.
    async fn decide(
        &self,
        key: &BatchKey,
        requests: &[WindowRequest],
        deadline: Instant,
    ) -> Vec<Result<WindowDecision, StoreError>> {
        let keys = tenant_window(&key.tenant);
        let limit = key.limit;
        let mut invocation = self.decide.prepare_invoke();
        invocation
            .key(&keys[..])
            .arg(limit.limit)
            .arg(limit.window_ms())
            .arg(self.now_arg())
            .arg(limit.monthly.map(|m| m.to_string()).unwrap_or_default())
            .arg(key.lease_ttl_ms);
        for request in requests {
            let (granted, first, units, back) = request.returned.map_or((0, 0, 0, 0), |r| {
                (r.lease.granted_ms, r.lease.first, r.lease.units, r.units())
            });
            invocation
                .arg(request.cost)
                .arg(request.reported_denials)
                .arg(request.lease_max)
                .arg(granted)
                .arg(first)
                .arg(units)
                .arg(back);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let reply: Result<Vec<i64>, StoreError> =
            bounded(&self.connection, left, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await;
        match reply {
            Ok(reply) if reply.len() == REPLY_FIGURES * requests.len() + 1 => {
                let now = u64::try_from(reply[reply.len() - 1]).unwrap_or(0);
                reply
                    .chunks_exact(REPLY_FIGURES)
                    .zip(requests)
                    .map(|(figures, request)| Ok(decision(figures, request, key.lease_ttl_ms, now)))
                    .collect()
            }
            Ok(reply) => vec![
                Err(StoreError::malformed(
                    "decision reply",
                    format!("{} figures for {} requests", reply.len(), requests.len())
                ));
                requests.len()
            ],
            Err(error) => vec![Err(error); requests.len()],
        }
    }
}

/// One request's figures of the script's reply; `now` is the script's clock.
fn decision(figures: &[i64], request: &WindowRequest, ttl_ms: u64, now: u64) -> WindowDecision {
    let unsigned = |i: usize| u64::try_from(figures[i]).unwrap_or(0);
    let extra = u32::try_from(figures[6]).unwrap_or(0);
    let lease = (extra > 0).then(|| GrantedLease {
        id: LeaseId {
            stamp_ms: now + ttl_ms,
            granted_ms: now,
            first: unsigned(7),
            units: u64::from(extra) * u64::from(request.cost),
            cost: request.cost,
        },
        requests: extra + 1,
        ttl_ms,
    });
    WindowDecision {
        admitted: figures[0] == 1,
        remaining: u32::try_from(figures[1]).unwrap_or(0),
        reset_ms: unsigned(2),
        retry_after_ms: unsigned(3),
        month: u64::try_from(figures[4])
            .ok()
            .map(|remaining| MonthStanding {
                remaining,
                reset_ms: unsigned(5),
            }),
        lease,
    }
}

impl WindowStore for RedisWindows {
    async fn decide_request(
        &self,
        tenant: &str,
        limit: Limit,
        request: WindowRequest,
    ) -> Result<WindowDecision, StoreError> {
        let key = BatchKey {
            tenant: tenant.to_owned(),
            limit,
            lease_ttl_ms: super::lease::ttl_for(request.lease_ttl_ms, limit.window_ms()),
        };
        // The timeout bounds each decision, also one queued behind a call in flight.
        let timeout = self.client.timeout;
        self.batches
            .submit(key, request, Instant::now() + timeout)
            .await
            .unwrap_or(Err(StoreError::TimedOut(timeout)))
    }

    async fn usage(
        &self,
        tenant: &str,
        limit: Limit,
        reported_denials: u64,
    ) -> Result<WindowUsage, StoreError> {
        let client = &self.client;
        let keys = tenant_window(tenant);
        let mut invocation = client.usage.prepare_invoke();
        invocation
            .key(&keys[..])
            .arg(limit.window_ms())
            .arg(client.now_arg())
            .arg(reported_denials);
        let reply: Vec<u64> = bounded(&client.connection, client.timeout, |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await?;
        let malformed = || StoreError::malformed("usage reply", format!("{} figures", reply.len()));
        let (head, ring) = reply.split_at_checked(6).ok_or_else(malformed)?;
        let &[used, denied, reset_ms, month_to_date, minute, leased] = head else {
            return Err(malformed());
        };
        if ring.len() != 2 * HISTORY_MINUTES as usize {
            return Err(malformed());
        }
        let history = ring
            .chunks_exact(2)
            .zip(minute + 1 - HISTORY_MINUTES..=minute)
            .map(|(pair, minute)| MinuteUsage {
                minute_start_ms: minute * 60_000,
                admitted: pair[0],
                denied: pair[1],
            })
            .collect();
        Ok(WindowUsage {
            used: u32::try_from(used).unwrap_or(u32::MAX),
            leased: u32::try_from(leased).unwrap_or(u32::MAX),
            denied,
            reset_ms,
            month_to_date,
            history,
        })
    }
}
