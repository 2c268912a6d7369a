//! The API USAGE panel as a framework-free web component, and a demo dashboard that uses it,
//! served on the public listener. All are static files compiled into the binary, so the
//! component's URL is stable: `/ui/tollgate-usage.js`.
//!
//! Dashboards on other origins load the component as a module script, which browsers always
//! fetch with CORS: it is served with `Access-Control-Allow-Origin` for the configured origins
//! (`TOLLGATE_CORS_ORIGINS`, as for the usage endpoint) and may be embedded cross-origin. It
//! changes only with the control-plane, so it carries an `ETag` (a hash of its content) and
//! `Cache-Control: no-cache`: a dashboard revalidates it on load and gets a 304 until an
//! upgrade changes it.
//!
//! The dashboard page handles an API key, so it may run only its own scripts, talk only to
//! this origin, and never be framed (clickjacking): its Content-Security-Policy says so.
//! Styles may be inline (the page's and the component's shadow DOM); scripts may not.

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;

/// One file, two ways to ship it: served from here, and installed as the npm package.
const COMPONENT: &str = include_str!("../../../packages/tollgate-usage/tollgate-usage.js");
const DASHBOARD: &str = include_str!("../../ui/dashboard.html");
const DASHBOARD_SCRIPT: &str = include_str!("../../ui/dashboard.js");

/// The dashboard's policy; Stripe's pages are reached by navigation, which it does not limit.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The usage panel's script, the one dashboard route other origins may load.
pub const COMPONENT_PATH: &str = "/ui/tollgate-usage.js";

/// The dashboard and its scripts; `origins` may load the component cross-origin.
pub fn routes(origins: &[HeaderValue]) -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET]);
    let (component, dashboard_script) = (Script::new(COMPONENT), Script::new(DASHBOARD_SCRIPT));
    Router::new()
        .route(
            COMPONENT_PATH,
            get(move |headers: HeaderMap| std::future::ready(component.serve(&headers)))
                .layer(cors),
        )
        .route(
            "/ui/dashboard.js",
            get(move |headers: HeaderMap| std::future::ready(dashboard_script.serve(&headers))),
        )
        .route("/dashboard", get(dashboard))
}

/// A script compiled into the binary, with the `ETag` of its content.
#[derive(Clone)]
struct Script {
    source: &'static str,
    /// A strong validator: the first 16 bytes of the content's SHA-256, quoted.
    etag: String,
}

impl Script {
    fn new(source: &'static str) -> Self {
        let digest = Sha256::digest(source.as_bytes());
        Self {
            source,
            etag: format!("\"{}\"", hex::encode(&digest[..16])),
        }
    }

    fn serve(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == self.etag || tag.trim() == "*")
            });
        let headers = [
            (
                header::CONTENT_TYPE,
                "text/javascript; charset=utf-8".to_owned(),
            ),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::ETAG, self.etag.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                "cross-origin".to_owned(),
            ),
        ];
        if fresh {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (headers, self.source).into_response()
        }
    }
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
