//! Redis, as every part of the control-plane that uses it sees it: one handle for a
//! standalone Redis or a Redis Cluster, with bounded waits; the layout of every key
//! ([`key_layout`]); every Lua script ([`scripts`]).
//!
//! Both sides multiplex every request over shared connections and reconnect by themselves
//! (the redis crate's `ConnectionManager` and cluster connection): no connection per request.
//! Every call is cut off after the configured timeout, so a dead or frozen Redis turns into a
//! prompt [`StoreError::TimedOut`] (and a 503 to the filter), never a hung decision.

pub mod key_layout;
pub mod scripts;

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::storage::StoreError;

#[derive(Clone)]
pub enum RedisConnection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where Redis is, as configured. The URLs may hold a password: never log them, log
/// [`RedisTarget::redacted`].
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The URLs with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        self.urls()
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every configured URL: the server's, or each cluster seed's.
    pub fn urls(&self) -> &[String] {
        match self {
            RedisTarget::Standalone(url) => std::slice::from_ref(url),
            RedisTarget::Cluster(urls) => urls,
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// Commands go out at once: with Nagle's algorithm (the crate's default) a small command
/// waits for the acknowledgement of the previous one.
fn no_delay() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

impl RedisConnection {
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_with(target, timeout, timeout).await
    }

    /// A connection of its own for blocking reads (the tenant change log's `XREAD BLOCK`): a
    /// blocked call on a shared connection would hold up every call queued behind it. Calls
    /// on it may take `block` longer than `timeout`.
    pub async fn connect_for_blocking(
        target: &RedisTarget,
        timeout: Duration,
        block: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect_with(target, timeout, timeout + block).await
    }

    /// `response_timeout` bounds each attempt of a cluster call (see below).
    async fn connect_with(
        target: &RedisTarget,
        timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, StoreError> {
        match target {
            RedisTarget::Standalone(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()?
                    .set_tcp_settings(no_delay());
                let client = redis::Client::open(info)?;
                // Retry quickly and forever: after an outage decisions must resume within
                // seconds, and the per-call timeout keeps callers from waiting on it. That
                // timeout (`bounded`) is the only one per call: the crate's own response
                // timeout (500 ms unless set) would arm a second timer on every call. (The
                // cluster client below keeps its own: it bounds each attempt of the retries
                // and redirections it makes within one call.)
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(None)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500))
                    .set_number_of_retries(usize::MAX);
                let manager = ConnectionManager::new_lazy_with_config(client, config)?;
                Ok(RedisConnection::Standalone(manager))
            }
            RedisTarget::Cluster(urls) => {
                let client = ClusterClientBuilder::new(urls.clone())
                    .tcp_settings(no_delay())
                    .connection_timeout(timeout)
                    .response_timeout(response_timeout)
                    .build()?;
                let connection = tokio::time::timeout(timeout * 10, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::TimedOut(timeout * 10))??;
                Ok(RedisConnection::Cluster(connection))
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Standalone(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Standalone(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Runs `call` on a clone of the connection, giving up after `timeout`.
pub async fn bounded<T, F, Fut>(
    connection: &RedisConnection,
    timeout: Duration,
    call: F,
) -> Result<T, StoreError>
where
    F: FnOnce(RedisConnection) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
    T: FromRedisValue,
{
    match tokio::time::timeout(timeout, call(connection.clone())).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::TimedOut(timeout)),
    }
}

/// Whether Redis answers a PING within `timeout`.
pub async fn ping(connection: &RedisConnection, timeout: Duration) -> Result<(), StoreError> {
    bounded(connection, timeout, |mut c| async move {
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://app:hunter2@cache:6380"),
            "rediss://app:***@cache:6380"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        let target = RedisTarget::Cluster(vec!["redis://:pw@a:1".into(), "redis://:pw@b:2".into()]);
        assert!(!format!("{target:?}").contains("pw"));
    }
}
