//! The VM's entry point and root context: installs the panic hook, reads and validates the
//! plugin configuration, then creates one [`RequestContext`] per HTTP stream. Its timer sends
//! the held replies whose hold has passed (see [`crate::held_replies`]) and logs the counts of
//! failure lines that were left out (see [`crate::log_limit`]).

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use super::http::RequestContext;
use super::{Stats, Worker};
use crate::config::Settings;

/// How often the timer looks for ended log intervals: a left-out count is logged within a
/// second of its interval's end.
const LOG_TICK: Duration = Duration::from_secs(1);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic takes the VM down; this logs why, with where, before it goes. Set right after
    // `set_log_level`, which installs the SDK's own hook (one that unwraps the log call) and
    // would replace ours if it came first. The log's `Result` is ignored: a panic inside a
    // panic hook aborts without a word.
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("tollgate: {info}"));
    }));
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> {
        Box::new(FilterRoot { settings: None, worker: None })
    });
}}

/// The timer's period: [`LOG_TICK`], or a fifth of the hold (at least 10 ms) when replies
/// are held, so a held reply waits at most a fifth longer than its hold.
fn tick_period(settings: &Settings) -> Duration {
    match &settings.held_replies {
        Some(hold) => Duration::from_millis((hold.duration_ms / 5).max(10)).min(LOG_TICK),
        None => LOG_TICK,
    }
}

struct FilterRoot {
    /// Shared with every request context of this worker; `Rc` because a wasm VM is
    /// single-threaded and the settings never change after `on_configure`.
    settings: Option<Rc<Settings>>,
    worker: Option<Rc<Worker>>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(bytes) => bytes,
            Err(status) => {
                log::error!("tollgate: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match Settings::from_json(bytes.as_deref()) {
            Ok(settings) => {
                // Defined once the routes are known: each route name has its own stats.
                let stats = match Stats::define(&settings.routes.names()) {
                    Ok(stats) => stats,
                    Err(status) => {
                        log::error!("tollgate: cannot define the filter's stats: {status:?}");
                        return false;
                    }
                };
                let mut settings = settings;
                // Without the timer, held replies would never be sent: they are sent at once
                // instead. Left-out failure lines are still reported, by the next failure of
                // the same cause after its interval. Neither is a reason to refuse the
                // configuration.
                if let Err(status) = hostcalls::set_tick_period(tick_period(&settings)) {
                    log::warn!("tollgate: cannot set the timer, replies are not held: {status:?}");
                    settings.held_replies = None;
                }
                log::info!(
                    "tollgate: configured: cluster {}, timeout {:?}, failure mode {:?}, \
                     deny cache {:?}, invalid-key budget {:?}, leases {:?}, held replies {:?}, \
                     API key forwarded upstream: {}",
                    settings.cluster,
                    settings.timeout,
                    settings.failure_mode,
                    settings.deny_cache,
                    settings.invalid_keys,
                    settings.leases,
                    settings.held_replies,
                    settings.forward_api_key
                );
                self.settings = Some(Rc::new(settings));
                self.worker = Some(Rc::new(Worker::new(stats)));
                true
            }
            Err(error) => {
                log::error!("tollgate: configuration refused: {error}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(worker) = &self.worker {
            if let Some(hold) = self.settings.as_ref().and_then(|s| s.held_replies.as_ref()) {
                worker.release_held(hold);
            }
            worker.flush_logs();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let settings = self.settings.clone()?;
        let worker = self.worker.clone()?;
        Some(Box::new(RequestContext::new(context_id, settings, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
