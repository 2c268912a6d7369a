//! The Redis window store: the same exact sliding-window log, shared by every control-plane
//! replica. One decision is one EVALSHA of [`scripts::DECIDE`] on the tenant's keys.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::{
    Clock, HISTORY_MINUTES, Limit, MinuteUsage, MonthStanding, StoreError, WindowDecision,
    WindowStore, WindowUsage, scripts,
};
use crate::redis_conn::{RedisConnection, bounded};
use crate::redis_keys::tenant_window;

pub struct RedisWindows {
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
        Self {
            connection,
            timeout,
            clock,
            decide: Script::new(&format!("{}{}", scripts::PRELUDE, scripts::DECIDE)),
            usage: Script::new(&format!("{}{}", scripts::PRELUDE, scripts::USAGE)),
        }
    }

    fn now_arg(&self) -> String {
        self.clock
            .as_ref()
            .map(|clock| clock.now_ms().to_string())
            .unwrap_or_default()
    }

    /// Whether Redis answers a PING within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        bounded(&self.connection, self.timeout, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .map(|_| ())
    }
}

impl WindowStore for RedisWindows {
    async fn decide(
        &self,
        tenant: &str,
        limit: Limit,
        cost: u32,
        reported_denials: u64,
    ) -> Result<WindowDecision, StoreError> {
        let keys = tenant_window(tenant);
        let mut invocation = self.decide.prepare_invoke();
        invocation
            .key(&keys[..])
            .arg(limit.limit)
            .arg(limit.window_ms())
            .arg(cost)
            .arg(self.now_arg())
            .arg(reported_denials)
            .arg(limit.monthly.map(|m| m.to_string()).unwrap_or_default());
        let (admitted, remaining, reset_ms, retry_after_ms, month_remaining, month_reset_ms): (
            u8,
            u32,
            u64,
            u64,
            i64,
            u64,
        ) = bounded(&self.connection, self.timeout, |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await?;
        Ok(WindowDecision {
            admitted: admitted == 1,
            remaining,
            reset_ms,
            retry_after_ms,
            month: u64::try_from(month_remaining)
                .ok()
                .map(|remaining| MonthStanding {
                    remaining,
                    reset_ms: month_reset_ms,
                }),
        })
    }

    async fn usage(
        &self,
        tenant: &str,
        limit: Limit,
        reported_denials: u64,
    ) -> Result<WindowUsage, StoreError> {
        let keys = tenant_window(tenant);
        let mut invocation = self.usage.prepare_invoke();
        invocation
            .key(&keys[..])
            .arg(limit.window_ms())
            .arg(self.now_arg())
            .arg(reported_denials);
        let reply: Vec<u64> = bounded(&self.connection, self.timeout, |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await?;
        let malformed = || StoreError::Unavailable("malformed usage reply from Redis".into());
        let (head, ring) = reply.split_at_checked(5).ok_or_else(malformed)?;
        let &[used, denied, reset_ms, month_to_date, minute] = head else {
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
            denied,
            reset_ms,
            month_to_date,
            history,
        })
    }
}
