//! Starting the control-plane: build the state, bind both listeners, serve until SIGINT or
//! SIGTERM, then give in-flight requests a bounded time to finish.
//!
//! Threads: decisions are never queued behind public traffic. The internal listener
//! (decisions, admin API, metrics) runs on a runtime of its own, on its own threads
//! (`--decision-threads`, one by default); the public listener (usage, tiers, billing,
//! dashboard) and the background tasks (tier reloads, the tenant change feed, the window
//! sweeper) run on another (`--public-threads`, one by default), whose threads also run at a
//! lower CPU priority. Each runtime drives its own Redis connection for the window store, so
//! a busy public thread cannot delay a decision's round trip either. Billing's syncs with
//! Stripe are background work too: spawned from [`Parts::build`] on the public runtime, and
//! an admin-asked sync is handed over to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::api::admission::{Admission, ClientAddress, PublicBudgets};
use crate::api::budgets::Budget;
use crate::api::listener::{self, ListenerLimits};
use crate::api::usage_tokens::UsageTokens;
use crate::api::{AppState, internal_router, public_router};
use crate::billing::{
    Billing, BillingParts, BillingSettings, CheckoutSettings, StripeApi, StripeApiError,
    StripeConnection,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, RedisClock, StoreConfig};
use crate::decision::{Decider, Policy};
use crate::metrics::Metrics;
use crate::storage::StoreError;
use crate::storage::redis::{RedisConnection, RedisTarget};
use crate::tenants::embedded::RegistryError;
use crate::tenants::{Directory, KeyHasher, RegistrySettings};
use crate::tiers::{TierSource, TierTableError, spawn_reloader};
use crate::window::{MemoryWindows, RedisWindows, Windows};

/// How often idle windows are dropped from memory.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);

/// Connections the internal listener holds: Envoy's callout clusters multiplex many
/// decisions over a few HTTP/2 connections (up to `INTERNAL_STREAMS` each); operators add a
/// handful.
const INTERNAL_CONNECTIONS: usize = 1024;
const INTERNAL_STREAMS: u32 = 1024;

/// Connections the public listener holds: Envoy's pool, or clients of a direct port.
const PUBLIC_CONNECTIONS: usize = 4096;
const PUBLIC_STREAMS: u32 = 100;

/// Request headers are small here (an API key, a few standard headers).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Public requests served at once; past it, 503 before any work.
const PUBLIC_MAX_IN_FLIGHT: usize = 512;

/// How much the public threads yield to the decision threads (and to Envoy) for the CPU.
#[cfg(target_os = "linux")]
const PUBLIC_NICE: libc::c_int = 10;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Tiers(#[from] TierTableError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot set up Redis: {0}")]
    Redis(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    #[error("cannot start the {0} threads: {1}")]
    Threads(&'static str, std::io::Error),
    #[error("cannot bind the {listener} listener on {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Where each listener's window store comes from.
enum WindowSource {
    /// The embedded store, one for both listeners.
    Memory(MemoryWindows),
    /// Redis, with a connection per listener.
    Redis {
        target: RedisTarget,
        timeout: Duration,
        /// `None`: Redis `TIME`.
        clock: Option<Arc<dyn Clock>>,
    },
}

/// What both listeners share; each gets its own window store on top (see [`Parts::state`]).
struct Parts {
    tiers: Arc<TierSource>,
    tenants: Arc<Directory>,
    windows: WindowSource,
    keys: KeyHasher,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    billing: Billing,
    admission: Admission,
}

impl Parts {
    /// Opens tiers and tenants; background tasks go to the current runtime.
    async fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let tiers = Arc::new(TierSource::load(config.tiers.clone())?);
        let metrics = Arc::new(Metrics::default());
        let settings = RegistrySettings {
            cache_capacity: usize::try_from(config.tenant_cache).unwrap_or(usize::MAX),
            change_log: usize::try_from(config.tenant_change_log).unwrap_or(usize::MAX),
            ..RegistrySettings::default()
        };
        let registry_metrics = metrics.tenant_registry.clone();
        let (tenants, windows) = match config.store() {
            StoreConfig::Memory { registry } => {
                let windows = MemoryWindows::new(clock.clone());
                windows.spawn_sweeper(SWEEP_PERIOD);
                let tenants = match registry {
                    Some(files) => {
                        let started = std::time::Instant::now();
                        let directory = Directory::open_embedded(
                            &files.database,
                            files.import_from.as_deref(),
                            settings,
                            registry_metrics,
                        )?;
                        tracing::info!(path = %files.database.display(), open_ms = started.elapsed().as_millis() as u64, "tenant registry open");
                        directory
                    }
                    None => Directory::in_process().map_err(|source| RegistryError::Store {
                        path: "(in memory)".into(),
                        source,
                    })?,
                };
                (tenants, WindowSource::Memory(windows))
            }
            StoreConfig::Redis {
                target,
                timeout,
                clock: script_clock,
            } => {
                tracing::info!(redis = %target.redacted(), "using Redis");
                let connection = RedisConnection::connect(&target, timeout).await?;
                let tenants = Directory::redis(connection, timeout, settings, registry_metrics);
                tenants.spawn_feed(target.clone());
                let script_clock = match script_clock {
                    RedisClock::Redis => None,
                    RedisClock::Local => Some(clock.clone()),
                };
                let windows = WindowSource::Redis {
                    target,
                    timeout,
                    clock: script_clock,
                };
                (tenants, windows)
            }
        };
        let tenants = Arc::new(tenants);
        let billing = Billing::new(BillingParts {
            webhook_secret: config.stripe_webhook_secret.clone(),
            stripe: stripe_api(config, metrics.clone())?,
            tenants: tenants.clone(),
            tiers: tiers.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            settings: BillingSettings {
                api_version: config.stripe_api_version.clone(),
                sync_concurrency: usize::from(config.billing_sync_concurrency),
            },
        });
        if billing.stripe.is_some() || billing.webhook_secret.is_some() {
            tracing::info!(
                stripe_api_version = %config.stripe_api_version,
                sync_secs = config.billing_sync_secs,
                calls = billing.stripe.is_some(),
                webhook = billing.webhook_secret.is_some(),
                "Stripe billing configured"
            );
        }
        // This runs on the public runtime, so the syncs do too: never on the decision threads.
        if billing.stripe.is_some() && config.billing_sync_secs > 0 {
            billing.spawn_sync(Duration::from_secs(config.billing_sync_secs));
        }
        let defaults = PublicBudgets::default();
        let budgets = PublicBudgets {
            usage: defaults.usage.at(config.usage_budget),
            per_address: defaults.per_address.at(config.public_budget),
            billing: Budget {
                per_second: config.billing_budget,
                burst: config.billing_budget.saturating_mul(5),
                ..defaults.billing
            },
            ..defaults
        };
        // Every refusal reason exported from the start, so a dashboard reads zeros, not
        // missing series, until the first refusal.
        for reason in budgets.refusal_reasons() {
            metrics.declare_budget_refusal(reason);
        }
        let client = ClientAddress {
            trusted_hops: usize::from(config.trusted_hops),
        };
        Ok(Self {
            admission: Admission::new(
                budgets,
                client,
                PUBLIC_MAX_IN_FLIGHT,
                clock.clone(),
                &config.cors_origins,
            ),
            tiers,
            tenants,
            windows,
            keys: KeyHasher::new(&config.key_secret),
            clock,
            metrics,
            billing,
        })
    }

    /// A window store for one listener: the shared embedded one, or a Redis connection of
    /// its own, driven by the runtime this runs on.
    async fn windows(&self) -> Result<Windows, StartupError> {
        match &self.windows {
            WindowSource::Memory(memory) => Ok(Windows::Memory(memory.clone())),
            WindowSource::Redis {
                target,
                timeout,
                clock,
            } => {
                // The tenant registry's reads on this runtime (a decision's cache miss) get a
                // connection of their own too.
                let reads = RedisConnection::connect(target, *timeout).await?;
                self.tenants.serve_reads_on_this_runtime(reads);
                let connection = RedisConnection::connect(target, *timeout).await?;
                Ok(Windows::Redis(RedisWindows::new(
                    connection,
                    *timeout,
                    clock.clone(),
                )))
            }
        }
    }

    /// A listener's state over `windows`.
    fn state(&self, windows: Windows, config: &Config) -> AppState {
        let decider = Decider {
            tenants: self.tenants.clone(),
            tiers: self.tiers.clone(),
            windows: Arc::new(windows),
            keys: self.keys.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            policy: Policy {
                past_due_grace: Duration::from_secs(config.past_due_grace_secs),
                shadow_all: config.shadow,
                lease_ttl: Duration::from_millis(config.lease_ttl_ms),
            },
        };
        AppState {
            decider,
            billing: self.billing.clone(),
            tenants: self.tenants.clone(),
            tiers: self.tiers.clone(),
            keys: self.keys.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            api_key_header: config.api_key_header.clone(),
            admin_token: config.admin_token.clone(),
            admission: self.admission.clone(),
            usage_tokens: UsageTokens::new(&config.key_secret, config.usage_token_ttl_secs),
        }
    }
}

/// One state for both routers, every part reading time from `clock`; for tests, which call
/// the routers directly. Must run inside a tokio runtime (background tasks are spawned).
pub async fn build_state(config: &Config, clock: Arc<dyn Clock>) -> Result<AppState, StartupError> {
    let parts = Parts::build(config, clock).await?;
    let windows = parts.windows().await?;
    Ok(parts.state(windows, config))
}

fn stripe_api(config: &Config, metrics: Arc<Metrics>) -> Result<Option<StripeApi>, StripeApiError> {
    let (Some(key), Some(return_url)) = (&config.stripe_secret_key, &config.billing_return_url)
    else {
        return Ok(None);
    };
    let connection = StripeConnection {
        secret_key: key,
        api_base: &config.stripe_api_base,
        api_version: &config.stripe_api_version,
    };
    let checkout = CheckoutSettings {
        expiry_secs: config.checkout_expiry_secs,
        promotion_codes: config.checkout_promotion_codes,
        automatic_tax: config.checkout_automatic_tax,
        tax_id_collection: config.checkout_tax_id_collection,
        billing_address: config.checkout_billing_address,
    };
    StripeApi::new(&connection, return_url.clone(), checkout, metrics).map(Some)
}

/// A runtime of `threads` threads: with one, a current-thread runtime run by whoever calls
/// `block_on`, so no task ever wakes another across threads (the cheapest per decision); with
/// more, a multi-thread runtime of that many workers.
fn runtime(name: &'static str, threads: u16, niced: bool) -> Result<Runtime, StartupError> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(threads));
        if niced {
            builder.on_thread_start(lower_priority);
        }
        builder
    };
    builder
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|error| StartupError::Threads(name, error))
}

/// Lowers the calling thread's CPU priority (Linux sets it per thread); elsewhere a no-op.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on this thread's own id, no memory passed.
        let failed = unsafe {
            let thread = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, PUBLIC_NICE) != 0
        };
        if failed {
            tracing::warn!(
                "cannot lower the public threads' priority; decisions still have their own threads"
            );
        }
    }
}

/// Runs until a shutdown signal, then waits at most the configured grace for in-flight
/// requests.
pub fn run(config: Config) -> Result<(), StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let decisions = runtime("tollgate-decisions", config.decision_threads, false)?;
    let public = runtime("tollgate-public", config.public_threads, true)?;

    let parts = public.block_on(Parts::build(&config, clock))?;
    let internal_state = parts.state(decisions.block_on(parts.windows())?, &config);
    let public_state = parts.state(public.block_on(parts.windows())?, &config);
    {
        let _context = public.enter();
        let (tenants, tiers) = (parts.tenants.clone(), parts.tiers.clone());
        // Tiers in use, from the counts the registry keeps: no tenant is read. When the counts
        // cannot be had, every tier counts as in use, so a reload can drop none.
        let in_use = move || {
            tenants.tiers_in_use().unwrap_or_else(|error| {
                tracing::warn!(%error, "tiers in use unknown; no tier may be dropped now");
                tiers
                    .current()
                    .tiers()
                    .iter()
                    .map(|t| t.name.clone())
                    .collect()
            })
        };
        spawn_reloader(
            parts.tiers.clone(),
            config.tiers_poll(),
            in_use,
            parts.metrics.clone(),
        );
        tokio::spawn(crate::memory::return_freed_memory());
    }
    let internal = decisions.block_on(bind("internal", config.internal_addr))?;
    let public_listener = public.block_on(bind("public", config.public_addr))?;
    tracing::info!(internal = %config.internal_addr, public = %config.public_addr, "listening");

    let shutdown = CancellationToken::new();
    let internal_limits = ListenerLimits {
        max_connections: INTERNAL_CONNECTIONS,
        header_timeout: config.header_timeout(),
        idle_timeout: config.idle_timeout(),
        max_header_bytes: MAX_HEADER_BYTES,
        max_streams: INTERNAL_STREAMS,
    };
    let (decisions_done, decisions_stopped) = std::sync::mpsc::channel();
    let serve_decisions = {
        let shutdown = shutdown.clone();
        let router = internal_router(internal_state);
        move || {
            decisions.block_on(listener::serve(
                "internal",
                internal,
                router,
                internal_limits,
                shutdown,
            ));
            let _ = decisions_done.send(());
        }
    };
    std::thread::Builder::new()
        .name("tollgate-decisions".into())
        .spawn(serve_decisions)
        .map_err(|error| StartupError::Threads("decision", error))?;
    // This thread runs the public runtime (when it has one thread); the decision thread is
    // started already, so it does not inherit the lower priority.
    if config.public_threads == 1 {
        lower_priority();
    }

    let grace = config.shutdown_grace();
    let router = public_router(public_state, &config.cors_origins);
    let public_limits = ListenerLimits {
        max_connections: PUBLIC_CONNECTIONS,
        max_streams: PUBLIC_STREAMS,
        ..internal_limits
    };
    let stopping = public.block_on(async {
        let serving = listener::serve(
            "public",
            public_listener,
            router,
            public_limits,
            shutdown.clone(),
        );
        tokio::pin!(serving);
        // Serving ends only after a shutdown, so this waits for the signal.
        let ended = tokio::select! {
            () = &mut serving => true,
            () = shutdown_signal() => false,
        };
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        let stopping = std::time::Instant::now();
        shutdown.cancel();
        if !ended && tokio::time::timeout(grace, serving).await.is_err() {
            tracing::warn!("public requests did not finish within the grace period");
        }
        stopping
    });
    let left = grace.saturating_sub(stopping.elapsed());
    if decisions_stopped.recv_timeout(left).is_err() {
        tracing::warn!("decisions did not finish within the grace period");
    }
    Ok(())
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
