//! Starting the control-plane: build the state, bind both listeners, serve until SIGINT or
//! SIGTERM, then give in-flight requests a bounded time to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, internal_router, public_router};
use crate::billing::{Billing, StripeApi, StripeApiError};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, RedisClock, StoreConfig};
use crate::decision::{Decider, Policy};
use crate::metrics::Metrics;
use crate::storage::StoreError;
use crate::storage::redis::RedisConnection;
use crate::storage::state_file::StateFileError;
use crate::tenants::{Directory, KeyHasher};
use crate::tiers::{TierSource, TierTableError, spawn_reloader};
use crate::window::{MemoryWindows, RedisWindows, Windows};

/// How often idle windows are dropped from memory.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Tiers(#[from] TierTableError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("cannot set up Redis: {0}")]
    Redis(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    #[error("cannot bind the {listener} listener on {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the {listener} listener failed: {source}")]
    Serve {
        listener: &'static str,
        source: std::io::Error,
    },
}

/// Builds the state, with every part reading time from `clock`; in Redis mode also starts
/// the tenant change listener. Must run inside a tokio runtime (background tasks are
/// spawned).
pub async fn build_state(config: &Config, clock: Arc<dyn Clock>) -> Result<AppState, StartupError> {
    let tiers = Arc::new(TierSource::load(config.tiers.clone())?);
    let (windows, tenants) = match config.store() {
        StoreConfig::Memory { state_file } => {
            let windows = MemoryWindows::new(clock.clone());
            windows.spawn_sweeper(SWEEP_PERIOD);
            let tenants = match state_file {
                Some(path) => Directory::file(path)?,
                None => Directory::in_process(),
            };
            (Windows::Memory(windows), tenants)
        }
        StoreConfig::Redis {
            target,
            timeout,
            clock: redis_clock,
        } => {
            tracing::info!(redis = %target.redacted(), "using Redis");
            let connection = RedisConnection::connect(&target, timeout).await?;
            let script_clock = match redis_clock {
                RedisClock::Redis => None,
                RedisClock::Local => Some(clock.clone()),
            };
            let windows = RedisWindows::new(connection.clone(), timeout, script_clock);
            let tenants = Directory::redis(connection, timeout);
            tenants.spawn_listener(target);
            (Windows::Redis(windows), tenants)
        }
    };
    let tenants = Arc::new(tenants);
    let keys = KeyHasher::new(&config.key_secret);
    let metrics = Arc::new(Metrics::default());
    let decider = Decider {
        tenants: tenants.clone(),
        tiers: tiers.clone(),
        windows: Arc::new(windows),
        keys: keys.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        policy: Policy {
            past_due_grace: Duration::from_secs(config.past_due_grace_secs),
            shadow_all: config.shadow,
        },
    };
    let billing = Billing {
        webhook_secret: config.stripe_webhook_secret.clone(),
        stripe: stripe_api(config)?,
        tenants: tenants.clone(),
        tiers: tiers.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    };
    Ok(AppState {
        decider,
        billing,
        tenants,
        tiers,
        keys,
        clock,
        metrics,
        api_key_header: config.api_key_header.clone(),
        admin_token: config.admin_token.clone(),
    })
}

fn stripe_api(config: &Config) -> Result<Option<StripeApi>, StripeApiError> {
    match (&config.stripe_secret_key, &config.billing_return_url) {
        (Some(key), Some(return_url)) => Ok(Some(StripeApi::new(
            key,
            &config.stripe_api_base,
            return_url.clone(),
        )?)),
        _ => Ok(None),
    }
}

/// Runs until a shutdown signal, then waits at most the configured grace for in-flight
/// requests.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let state = build_state(&config, Arc::new(SystemClock)).await?;
    let tenants = state.tenants.clone();
    spawn_reloader(
        state.tiers.clone(),
        config.tiers_poll(),
        move || tenants.list().into_iter().map(|tenant| tenant.tier),
        state.metrics.clone(),
    );
    let internal = bind("internal", config.internal_addr).await?;
    let public = bind("public", config.public_addr).await?;
    tracing::info!(internal = %config.internal_addr, public = %config.public_addr, "listening");

    let shutdown = CancellationToken::new();
    let serve = |listener: TcpListener, router: axum::Router, name: &'static str| {
        let shutdown = shutdown.clone();
        // Answers go out at once: with Nagle's algorithm a small answer waits for the
        // acknowledgement of the previous one.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
        });
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(|source| StartupError::Serve {
                    listener: name,
                    source,
                })
        }
    };
    let servers = async {
        tokio::try_join!(
            serve(internal, internal_router(state.clone()), "internal"),
            serve(public, public_router(state, &config.cors_origins), "public"),
        )
    };
    let grace = config.shutdown_grace();
    let deadline = async {
        shutdown_signal().await;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        shutdown.cancel();
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = servers => result.map(|_| ()),
        () = deadline => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind {
            listener,
            addr,
            source,
        })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
