//! Starting the control-plane: build the state, bind both listeners, serve until SIGINT or
//! SIGTERM, then give in-flight requests a bounded time to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api_keys::KeyHasher;
use crate::app::{AppState, internal_router, public_router};
use crate::billing::{Billing, StripeApi, StripeApiError};
use crate::config::{Config, RedisClock, StoreConfig};
use crate::directory::{Directory, DirectoryError};
use crate::metrics::Metrics;
use crate::redis_conn::RedisConnection;
use crate::tier_source::{TierSource, spawn_reloader};
use crate::tiers::TierTableError;
use crate::window::{Clock, MemoryWindows, RedisWindows, StoreError, SystemClock, Windows};

/// How often idle windows are dropped from memory.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Tiers(#[from] TierTableError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
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

/// Builds the state; in Redis mode also starts the tenant change listener. Must run inside
/// a tokio runtime (background tasks are spawned).
pub async fn build_state(config: &Config) -> Result<AppState, StartupError> {
    let tiers = TierSource::load(config.tiers.clone())?;
    let (windows, directory) = match config.store() {
        StoreConfig::Memory { state_file } => {
            let windows = MemoryWindows::new(Arc::new(SystemClock));
            windows.spawn_sweeper(SWEEP_PERIOD);
            let directory = match state_file {
                Some(path) => Directory::file(path)?,
                None => Directory::in_process(),
            };
            (Windows::Memory(windows), directory)
        }
        StoreConfig::Redis {
            target,
            timeout,
            clock,
        } => {
            tracing::info!(redis = %target.redacted(), "using Redis");
            let connection = RedisConnection::connect(&target, timeout).await?;
            let clock = match clock {
                RedisClock::Redis => None,
                RedisClock::Local => Some(Arc::new(SystemClock) as Arc<dyn Clock>),
            };
            let windows = RedisWindows::new(connection.clone(), timeout, clock);
            let directory = Directory::redis(connection, timeout);
            directory.spawn_listener(target);
            (Windows::Redis(windows), directory)
        }
    };
    Ok(AppState {
        tiers: Arc::new(tiers),
        directory: Arc::new(directory),
        windows: Arc::new(windows),
        keys: KeyHasher::new(&config.key_secret),
        api_key_header: config.api_key_header.clone(),
        admin_token: config.admin_token.clone(),
        shadow_all: config.shadow,
        billing: billing(config)?,
        past_due_grace: Duration::from_secs(config.past_due_grace_secs),
        metrics: Arc::new(Metrics::default()),
    })
}

fn billing(config: &Config) -> Result<Billing, StripeApiError> {
    let stripe = match (&config.stripe_secret_key, &config.billing_return_url) {
        (Some(key), Some(return_url)) => Some(StripeApi::new(
            key,
            &config.stripe_api_base,
            return_url.clone(),
        )?),
        _ => None,
    };
    Ok(Billing {
        webhook_secret: config.stripe_webhook_secret.clone(),
        stripe,
    })
}

/// Runs until a shutdown signal, then waits at most the configured grace for in-flight
/// requests.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let state = build_state(&config).await?;
    spawn_reloader(state.clone(), config.tiers_poll());
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
