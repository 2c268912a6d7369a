//! The VM's entry point and root context: installs the panic hook, reads and validates the
//! plugin configuration, then creates one [`RequestContext`] per HTTP stream. Its timer logs
//! the counts of failure lines that were left out (see [`crate::log_limit`]).

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
                log::info!(
                    "tollgate: configured: cluster {}, timeout {:?}, failure mode {:?}, \
                     deny cache {:?}, invalid-key budget {:?}, leases {:?}, API key forwarded \
                     upstream: {}",
                    settings.cluster,
                    settings.timeout,
                    settings.failure_mode,
                    settings.deny_cache,
                    settings.invalid_keys,
                    settings.leases,
                    settings.forward_api_key
                );
                self.settings = Some(Rc::new(settings));
                self.worker = Some(Rc::new(Worker::new(stats)));
                // Without the timer, left-out failure lines are still reported, by the next
                // failure of the same cause after its interval: a log detail, not a reason
                // to refuse the configuration.
                if let Err(status) = hostcalls::set_tick_period(LOG_TICK) {
                    log::warn!("tollgate: cannot set the log timer: {status:?}");
                }
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
            worker.flush_logs();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let settings = self.settings.clone()?;
        let worker = self.worker.clone()?;
        Some(Box::new(RequestContext::new(settings, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
