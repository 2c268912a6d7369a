//! The API USAGE panel as a framework-free web component, and a demo dashboard that uses it,
//! served on the public listener. Both are static files compiled into the binary, so the
//! component's URL is stable: `/ui/tollgate-usage.js`.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use super::AppState;

const COMPONENT: &str = include_str!("../../ui/tollgate-usage.js");
const DASHBOARD: &str = include_str!("../../ui/dashboard.html");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/tollgate-usage.js", get(component))
        .route("/dashboard", get(|| async { Html(DASHBOARD) }))
}

async fn component() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        COMPONENT,
    )
}
