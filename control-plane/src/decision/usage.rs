//! What a tenant has spent, read from the same window the decisions use, so it is exact, and
//! under the same tier the decisions would use now.

use serde::Serialize;

use super::{Decider, DecisionError};
use crate::tenants::{KeyOwner, Tenant};
use crate::window::WindowStore;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub tenant_id: String,
    pub tier: String,
    pub suspended: bool,
    /// The tier is in shadow mode: `denied` counts requests that would have been refused
    /// and were let through.
    pub shadow: bool,
    pub limit: u32,
    pub window_seconds: u32,
    /// Units admitted in the current rolling window, leased ones included.
    pub used: u32,
    /// Of `used`, units granted ahead to Envoys in leases still running (spent or not yet).
    pub leased: u32,
    pub remaining: u32,
    /// Seconds until the oldest admitted unit leaves the window (rounded up).
    pub reset_seconds: u64,
    /// Requests the control-plane denied in the current window.
    pub denied: u64,
    pub month_to_date: u64,
    /// The tier's monthly quota, if it has one.
    pub monthly_limit: Option<u64>,
    pub history: Vec<Minute>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Minute {
    /// Start of the minute, Unix seconds.
    pub start: u64,
    pub admitted: u64,
    pub denied: u64,
}

impl Decider {
    /// The tenant's usage, after counting `reported_denials` the filter reported.
    pub async fn usage(
        &self,
        tenant: &Tenant,
        reported_denials: u64,
    ) -> Result<Usage, DecisionError> {
        let tier = self.tier_in_force(&KeyOwner::from(tenant))?;
        let window = self
            .windows
            .usage(&tenant.id, tier.quota(), reported_denials)
            .await?;
        Ok(Usage {
            tenant_id: tenant.id.to_string(),
            tier: tier.name.to_string(),
            suspended: tenant.suspended,
            shadow: self.is_shadowed(&tier),
            limit: tier.limit,
            window_seconds: tier.window_seconds(),
            used: window.used,
            leased: window.leased,
            remaining: tier.limit.saturating_sub(window.used),
            reset_seconds: window.reset_ms.div_ceil(1000),
            denied: window.denied,
            month_to_date: window.month_to_date,
            monthly_limit: tier.monthly_limit,
            history: window
                .history
                .iter()
                .map(|m| Minute {
                    start: m.minute_start_ms / 1000,
                    admitted: m.admitted,
                    denied: m.denied,
                })
                .collect(),
        })
    }
}
