//! The VM's entry point and root context: installs the panic hook, reads and validates the
//! plugin configuration, then creates one [`RequestContext`] per HTTP stream.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use super::Stats;
use super::http::RequestContext;
use crate::config::Settings;

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
        Box::new(FilterRoot { settings: None, stats: None })
    });
}}

struct FilterRoot {
    /// Shared with every request context of this worker; `Rc` because a wasm VM is
    /// single-threaded and the settings never change after `on_configure`.
    settings: Option<Rc<Settings>>,
    stats: Option<Rc<Stats>>,
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
        let stats = match Stats::define() {
            Ok(stats) => stats,
            Err(status) => {
                log::error!("tollgate: cannot define the filter's stats: {status:?}");
                return false;
            }
        };
        match Settings::from_json(bytes.as_deref()) {
            Ok(settings) => {
                log::info!(
                    "tollgate: configured: cluster {}, timeout {:?}, failure mode {:?}",
                    settings.cluster,
                    settings.timeout,
                    settings.failure_mode
                );
                self.settings = Some(Rc::new(settings));
                self.stats = Some(Rc::new(stats));
                true
            }
            Err(error) => {
                log::error!("tollgate: configuration refused: {error}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let settings = self.settings.clone()?;
        let stats = self.stats.clone()?;
        Some(Box::new(RequestContext::new(settings, stats)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
