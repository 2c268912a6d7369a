//! The API USAGE panel as a framework-free web component, and a demo dashboard that uses it,
//! served on the public listener. All are static files compiled into the binary, so the
//! component's URL is stable: `/ui/tollgate-usage.js`.
//!
//! The dashboard page handles an API key, so it may run only its own scripts, talk only to
//! this origin, and never be framed (clickjacking): its Content-Security-Policy says so.
//! Styles may be inline (the page's and the component's shadow DOM); scripts may not.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use super::AppState;

const COMPONENT: &str = include_str!("../../ui/tollgate-usage.js");
const DASHBOARD: &str = include_str!("../../ui/dashboard.html");
const DASHBOARD_SCRIPT: &str = include_str!("../../ui/dashboard.js");

/// The dashboard's policy; Stripe's pages are reached by navigation, which it does not limit.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/tollgate-usage.js", get(|| script(COMPONENT)))
        .route("/ui/dashboard.js", get(|| script(DASHBOARD_SCRIPT)))
        .route("/dashboard", get(dashboard))
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(DASHBOARD),
    )
}

async fn script(source: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        source,
    )
}
