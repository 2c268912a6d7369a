//! A stand-in for the two Stripe endpoints no available fake implements (Checkout Sessions
//! and Billing Portal sessions): it records each request (path, headers, form body) and
//! answers the smallest object in Stripe's current shape that a client must accept. It
//! proves what Tollgate asks Stripe for, not how Stripe answers; everything after checkout
//! is tested against localstripe.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::json;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The form field's value, if sent (once).
    pub fn field(&self, name: &str) -> Option<&str> {
        let mut values = self.form.iter().filter(|(k, _)| k == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "{name} sent twice");
        value
    }
}

/// How the stand-in answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Session,
    /// 400 with a Stripe error object, as for an unknown price.
    Refuse,
    /// 500, as Stripe's own outage.
    Fail,
}

#[derive(Default)]
struct Shared {
    requests: Vec<RecordedRequest>,
    answer: Option<Answer>,
}

pub struct StripeStandIn {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    server: JoinHandle<()>,
}

impl StripeStandIn {
    pub async fn start() -> StripeStandIn {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/v1/checkout/sessions", post(record))
            .route("/v1/billing_portal/sessions", post(record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Stripe stand-in");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("Stripe stand-in");
        });
        StripeStandIn {
            url,
            shared,
            server,
        }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().unwrap().requests.clone()
    }

    pub fn answer(&self, answer: Answer) {
        self.shared.lock().unwrap().answer = Some(answer);
    }
}

impl Drop for StripeStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = uri.path().to_owned();
    let (answer, n) = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(RecordedRequest {
            path: path.clone(),
            authorization: header("authorization"),
            idempotency_key: header("idempotency-key"),
            form: form.clone(),
        });
        (
            shared.answer.unwrap_or(Answer::Session),
            shared.requests.len(),
        )
    };
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match answer {
        Answer::Refuse => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"type": "invalid_request_error", "param": "line_items[0][price]",
                "message": "No such price: 'price_secret_internal_name'"}})),
        )
            .into_response(),
        Answer::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"type": "api_error", "message": "An unknown error occurred"}})),
        )
            .into_response(),
        Answer::Session if path == "/v1/checkout/sessions" => Json(json!({
            "id": format!("cs_test_{n}"), "object": "checkout.session", "livemode": false,
            "created": 1_800_000_000, "expires_at": 1_800_086_400,
            "mode": field("mode"), "status": "open", "payment_status": "unpaid",
            "client_reference_id": field("client_reference_id"), "customer": field("customer"),
            "url": format!("https://checkout.stripe.test/c/pay/cs_test_{n}"),
            "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
            "custom_fields": [], "custom_text": {"after_submit": null, "shipping_address": null,
                "submit": null, "terms_of_service_acceptance": null},
            "payment_method_types": ["card"], "shipping_options": []
        }))
        .into_response(),
        Answer::Session => Json(json!({
            "id": format!("bps_test_{n}"), "object": "billing_portal.session", "livemode": false,
            "created": 1_800_000_000, "configuration": "bpc_test_1",
            "customer": field("customer"), "return_url": field("return_url"),
            "url": format!("https://billing.stripe.test/p/session/bps_test_{n}")
        }))
        .into_response(),
    }
}
