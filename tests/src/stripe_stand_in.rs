//! A stand-in for the parts of Stripe no available fake implements in current shapes:
//! customers, subscriptions (read), Checkout Sessions and Billing Portal sessions. It is a
//! small stateful Stripe: it validates what it is asked the way Stripe does (an unknown price
//! or customer is Stripe's 400 `invalid_request_error`, a missing parameter too), replays
//! idempotent requests the way Stripe does (the same key with the same parameters answers the
//! first answer again, marked `Idempotent-Replayed`; with other parameters, Stripe's
//! `idempotency_error`), and holds current-shape (API 2025+) customers and subscriptions that
//! the test changes as Stripe would (a paid checkout, a plan change, a pause, a cancellation).
//! It sends no webhooks: [`StripeStandIn::event`] builds the snapshot event Stripe would send,
//! for the test to deliver (or drop, or reorder). Every request is recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The API version the stand-in's objects and events are shaped for.
pub const API_VERSION: &str = "2026-09-30.endive";

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
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

    /// A Checkout or Billing Portal session request.
    pub fn is_session(&self) -> bool {
        self.path.ends_with("/sessions")
    }
}

/// How the stand-in answers the next requests (every route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// As Stripe would.
    Normally,
    /// 400 with a Stripe error object, as for an unknown price.
    Refuse,
    /// 500, as Stripe's own outage.
    Fail,
    /// 429 with `Retry-After` of this many seconds (none: no header).
    RateLimit(Option<u64>),
}

#[derive(Default)]
struct Shared {
    requests: Vec<RecordedRequest>,
    answer: Option<Answer>,
    /// How many more requests get `answer` before the stand-in answers normally again
    /// (`None`: until told otherwise).
    answer_left: Option<u32>,
    /// Price id → lookup key.
    prices: BTreeMap<String, Option<String>>,
    customers: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    sessions: BTreeMap<String, Value>,
    charges: BTreeMap<String, Value>,
    /// Idempotency key → (the request's method, path and parameters; the answer).
    idempotent: HashMap<String, (String, StatusCode, Value)>,
    /// Ids handed out so far, per prefix.
    counters: HashMap<&'static str, u64>,
    /// Seconds the stand-in's clock is at (Stripe's "now", which `expires_at` is checked
    /// against): the real time at start, moved by the test.
    now: u64,
    /// Objects and events created so far: `created` is `now` plus this, so each is later
    /// than the one before.
    sequence: u64,
}

impl Shared {
    fn next_id(&mut self, prefix: &'static str) -> String {
        let n = self.counters.entry(prefix).or_default();
        *n += 1;
        format!("{prefix}_test_{n}")
    }

    fn tick(&mut self) -> u64 {
        self.sequence += 1;
        self.now + self.sequence
    }
}

pub struct StripeStandIn {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    server: JoinHandle<()>,
}

/// Stripe's error body.
fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> (StatusCode, Value) {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    (status, json!({ "error": error }))
}

fn missing(param: &str) -> (StatusCode, Value) {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}

fn no_such(what: &str, param: Option<&str>, id: &str) -> (StatusCode, Value) {
    let status = if param.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::NOT_FOUND
    };
    stripe_error(
        status,
        "invalid_request_error",
        Some("resource_missing"),
        param,
        &format!("No such {what}: '{id}'"),
    )
}

impl StripeStandIn {
    /// A stand-in that knows the price the shared test tier table sells Pro at.
    pub async fn start() -> StripeStandIn {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let shared = Arc::new(Mutex::new(Shared {
            now,
            ..Shared::default()
        }));
        shared
            .lock()
            .unwrap()
            .prices
            .insert(crate::stripe::PRO_PRICE.to_owned(), None);
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_checkout))
            .route("/v1/billing_portal/sessions", post(create_portal))
            .route("/v1/customers", post(create_customer))
            .route(
                "/v1/customers/{id}",
                get(get_customer).delete(delete_customer),
            )
            .route("/v1/subscriptions", get(list_subscriptions))
            .route("/v1/subscriptions/{id}", get(get_subscription))
            .route("/v1/charges/{id}", get(get_charge))
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

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    /// The Checkout and Billing Portal session requests so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.all_requests()
            .into_iter()
            .filter(RecordedRequest::is_session)
            .collect()
    }

    /// Every request so far (customers and subscriptions too), oldest first.
    pub fn all_requests(&self) -> Vec<RecordedRequest> {
        self.shared().requests.clone()
    }

    /// Answers every following request so, until told otherwise.
    pub fn answer(&self, answer: Answer) {
        let mut shared = self.shared();
        shared.answer = Some(answer);
        shared.answer_left = None;
    }

    /// Answers the next `times` requests so, then normally again.
    pub fn answer_next(&self, answer: Answer, times: u32) {
        let mut shared = self.shared();
        shared.answer = Some(answer);
        shared.answer_left = Some(times);
    }

    /// A price Stripe knows, optionally with a lookup key.
    pub fn add_price(&self, id: &str, lookup_key: Option<&str>) {
        self.shared()
            .prices
            .insert(id.to_owned(), lookup_key.map(str::to_owned));
    }

    pub fn customers(&self) -> Vec<Value> {
        self.shared().customers.values().cloned().collect()
    }

    pub fn subscription(&self, id: &str) -> Value {
        self.shared()
            .subscriptions
            .get(id)
            .cloned()
            .expect("a subscription of the stand-in")
    }

    /// The customer pays the open session: Stripe creates an active subscription for its
    /// customer, on its price, with the session's subscription metadata. Returns its id.
    pub fn complete_checkout(&self, session: &str) -> String {
        let shared = self.shared();
        let session = shared
            .sessions
            .get(session)
            .cloned()
            .expect("a session of the stand-in");
        let customer = session["customer"]
            .as_str()
            .expect("the session's customer")
            .to_owned();
        let price = session["line_items_price"]
            .as_str()
            .expect("the session's price")
            .to_owned();
        let metadata = session["subscription_metadata"].clone();
        drop(shared);
        let id = self.create_subscription(&customer, &[&price], metadata, "active");
        let mut shared = self.shared();
        if let Some(stored) = shared
            .sessions
            .get_mut(session["id"].as_str().unwrap_or_default())
        {
            stored["status"] = json!("complete");
            stored["subscription"] = json!(id);
        }
        id
    }

    /// A subscription of `customer` to `prices`, in `status`, as Stripe would hold it.
    pub fn create_subscription(
        &self,
        customer: &str,
        prices: &[&str],
        metadata: Value,
        status: &str,
    ) -> String {
        let mut shared = self.shared();
        let id = shared.next_id("sub");
        let created = shared.tick();
        let items = items(&mut shared, &id, prices, created);
        let subscription = json!({
            "id": id, "object": "subscription", "livemode": false, "created": created,
            "customer": customer, "status": status, "cancel_at_period_end": false,
            "canceled_at": null, "ended_at": null, "pause_collection": null,
            "metadata": if metadata.is_object() { metadata } else { json!({}) },
            "items": items,
        });
        shared.subscriptions.insert(id.clone(), subscription);
        id
    }

    /// A paid charge of the customer (what a dispute or refund is about). Returns its id.
    pub fn create_charge(&self, customer: &str, amount: u64) -> String {
        let mut shared = self.shared();
        let id = shared.next_id("ch");
        let created = shared.tick();
        let charge = json!({"id": id, "object": "charge", "created": created, "customer": customer,
            "amount": amount, "amount_refunded": 0, "currency": "usd", "paid": true,
            "refunded": false, "status": "succeeded", "disputed": false});
        shared.charges.insert(id.clone(), charge);
        id
    }

    /// The subscription's status changes (paused, past_due, canceled, …), as Stripe's own
    /// machinery would change it.
    pub fn set_status(&self, subscription: &str, status: &str) {
        let mut shared = self.shared();
        shared.tick();
        let stored = shared
            .subscriptions
            .get_mut(subscription)
            .expect("a subscription of the stand-in");
        stored["status"] = json!(status);
    }

    /// The subscription moves to other prices (a plan change in the portal).
    pub fn set_prices(&self, subscription: &str, prices: &[&str]) {
        let mut shared = self.shared();
        let created = shared.tick();
        let items = items(&mut shared, subscription, prices, created);
        let stored = shared
            .subscriptions
            .get_mut(subscription)
            .expect("a subscription of the stand-in");
        stored["items"] = items;
    }

    /// The customer is deleted (in the dashboard, say): its subscriptions end with it.
    pub fn delete_customer(&self, customer: &str) {
        delete(&mut self.shared(), customer);
    }

    /// The snapshot event Stripe would send now about the subscription: `type`
    /// (`customer.subscription.updated`, …) with its current state.
    pub fn event(&self, kind: &str, subscription: &str) -> Value {
        let mut shared = self.shared();
        let object = shared
            .subscriptions
            .get(subscription)
            .cloned()
            .expect("a subscription of the stand-in");
        let created = shared.tick();
        let id = shared.next_id("evt");
        json!({"id": id, "object": "event", "api_version": API_VERSION, "created": created,
            "livemode": false, "pending_webhooks": 1, "type": kind, "data": {"object": object}})
    }

    /// Sets the stand-in's clock (what `expires_at` is checked against, and where objects'
    /// and events' `created` continue from) to `seconds`.
    pub fn set_now(&self, seconds: u64) {
        let mut shared = self.shared();
        shared.now = seconds;
        shared.sequence = 0;
    }
}

impl Drop for StripeStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn items(shared: &mut Shared, subscription: &str, prices: &[&str], created: u64) -> Value {
    let data: Vec<Value> = prices
        .iter()
        .map(|price| {
            let lookup_key = shared.prices.get(*price).cloned().flatten();
            json!({"id": shared.next_id("si"), "object": "subscription_item", "created": created,
                "current_period_start": created, "current_period_end": created + 30 * 86_400,
                "quantity": 1, "subscription": subscription, "metadata": {},
                "price": {"id": price, "object": "price", "active": true, "currency": "usd",
                    "lookup_key": lookup_key, "type": "recurring", "unit_amount": 4900,
                    "recurring": {"interval": "month", "interval_count": 1}}})
        })
        .collect();
    json!({"object": "list", "data": data, "has_more": false,
        "url": format!("/v1/subscription_items?subscription={subscription}")})
}

fn delete(shared: &mut Shared, customer: &str) -> bool {
    let Some(stored) = shared.customers.get_mut(customer) else {
        return false;
    };
    stored["deleted"] = json!(true);
    let now = shared.tick();
    for subscription in shared.subscriptions.values_mut() {
        if subscription["customer"] == customer && subscription["status"] != "canceled" {
            subscription["status"] = json!("canceled");
            subscription["ended_at"] = json!(now);
        }
    }
    true
}

/// What every request goes through: recording, the answer the test asked for, and Stripe's
/// idempotency. `handle` computes the real answer.
fn respond(
    shared: &Arc<Mutex<Shared>>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    form: Vec<(String, String)>,
    handle: impl FnOnce(&mut Shared, &[(String, String)]) -> (StatusCode, Value),
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut shared = shared.lock().unwrap();
    let key = header("idempotency-key");
    shared.requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.to_owned(),
        authorization: header("authorization"),
        idempotency_key: key.clone(),
        stripe_version: header("stripe-version"),
        form: form.clone(),
    });
    let answer = shared.answer.unwrap_or(Answer::Normally);
    if let Some(left) = shared.answer_left.as_mut() {
        *left = left.saturating_sub(1);
        if *left == 0 {
            shared.answer = None;
            shared.answer_left = None;
        }
    }
    match answer {
        Answer::Normally => {}
        Answer::Refuse => {
            let (status, body) = stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("resource_missing"),
                Some("line_items[0][price]"),
                "No such price: 'price_secret_internal_name'",
            );
            return (status, Json(body)).into_response();
        }
        Answer::Fail => {
            let (status, body) = stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                None,
                "An unknown error occurred",
            );
            return (status, Json(body)).into_response();
        }
        Answer::RateLimit(retry_after) => {
            let (status, body) = stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                None,
                "Too many requests hit the API too quickly.",
            );
            let mut response = (status, Json(body)).into_response();
            if let Some(seconds) = retry_after {
                response.headers_mut().insert("retry-after", seconds.into());
            }
            return response;
        }
    }
    // Stripe compares the parameters of a reused key, in any order.
    let mut sorted = form.clone();
    sorted.sort();
    let fingerprint = format!("{method} {path} {sorted:?}");
    if let Some(key) = &key
        && let Some((first, status, body)) = shared.idempotent.get(key)
    {
        if *first == fingerprint {
            let mut response = (*status, Json(body.clone())).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().unwrap());
            return response;
        }
        let (status, body) = stripe_error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            None,
            None,
            &format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
            ),
        );
        return (status, Json(body)).into_response();
    }
    let (status, body) = handle(&mut shared, &form);
    // Stripe keeps the answer of a key that reached its handler, errors included.
    if let Some(key) = key
        && method == Method::POST
    {
        shared
            .idempotent
            .insert(key, (fingerprint, status, body.clone()));
    }
    (status, Json(body)).into_response()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Form fields `prefix[key]` as a JSON object.
fn map_of(form: &[(String, String)], prefix: &str) -> Value {
    let start = format!("{prefix}[");
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(&start)?.strip_suffix(']')?;
            (!key.contains('[')).then(|| (key.to_owned(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

fn live_customer<'a>(shared: &'a Shared, id: &str) -> Option<&'a Value> {
    shared.customers.get(id).filter(|c| c["deleted"] != true)
}

async fn create_customer(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    form: axum::Form<Vec<(String, String)>>,
) -> Response {
    respond(
        &shared,
        &method,
        "/v1/customers",
        &headers,
        form.0,
        |shared, form| {
            let id = shared.next_id("cus");
            let created = shared.tick();
            let customer = json!({"id": id, "object": "customer", "livemode": false, "created": created,
            "name": field(form, "name"), "description": field(form, "description"),
            "email": field(form, "email"), "metadata": map_of(form, "metadata"),
            "invoice_settings": {"default_payment_method": null}});
            shared.customers.insert(id, customer.clone());
            (StatusCode::OK, customer)
        },
    )
}

async fn get_customer(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/customers/{id}");
    respond(
        &shared,
        &method,
        &path,
        &headers,
        Vec::new(),
        |shared, _| match shared.customers.get(&id) {
            Some(customer) if customer["deleted"] == true => (
                StatusCode::OK,
                json!({"id": id, "object": "customer", "deleted": true}),
            ),
            Some(customer) => (StatusCode::OK, customer.clone()),
            None => no_such("customer", None, &id),
        },
    )
}

async fn delete_customer(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/customers/{id}");
    respond(
        &shared,
        &method,
        &path,
        &headers,
        Vec::new(),
        |shared, _| {
            if delete(shared, &id) {
                (
                    StatusCode::OK,
                    json!({"id": id, "object": "customer", "deleted": true}),
                )
            } else {
                no_such("customer", None, &id)
            }
        },
    )
}

async fn get_subscription(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/subscriptions/{id}");
    respond(
        &shared,
        &method,
        &path,
        &headers,
        Vec::new(),
        |shared, _| match shared.subscriptions.get(&id) {
            Some(subscription) => (StatusCode::OK, subscription.clone()),
            None => no_such("subscription", None, &id),
        },
    )
}

async fn get_charge(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/charges/{id}");
    respond(
        &shared,
        &method,
        &path,
        &headers,
        Vec::new(),
        |shared, _| match shared.charges.get(&id) {
            Some(charge) => (StatusCode::OK, charge.clone()),
            None => no_such("charge", None, &id),
        },
    )
}

async fn list_subscriptions(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    respond(
        &shared,
        &method,
        "/v1/subscriptions",
        &headers,
        query,
        |shared, query| {
            let status = field(query, "status");
            let limit: usize = field(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10);
            if !(1..=100).contains(&limit) {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("parameter_invalid_integer"),
                    Some("limit"),
                    "Invalid integer: limit must be between 1 and 100.",
                );
            }
            if let Some(customer) = field(query, "customer")
                && !shared.customers.contains_key(customer)
            {
                return no_such("customer", Some("customer"), customer);
            }
            let mut matching: Vec<&Value> = shared
                .subscriptions
                .values()
                .filter(|s| field(query, "customer").is_none_or(|c| s["customer"] == c))
                .filter(|s| match status {
                    Some("all") => true,
                    Some(status) => s["status"] == status,
                    // Stripe's default leaves out ended subscriptions.
                    None => s["status"] != "canceled" && s["status"] != "incomplete_expired",
                })
                .collect();
            if let Some(after) = field(query, "starting_after") {
                let position = matching
                    .iter()
                    .position(|s| s["id"] == after)
                    .map_or(0, |p| p + 1);
                matching.drain(..position);
            }
            let has_more = matching.len() > limit;
            let data: Vec<Value> = matching.into_iter().take(limit).cloned().collect();
            (
                StatusCode::OK,
                json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/subscriptions"}),
            )
        },
    )
}

async fn create_checkout(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    form: axum::Form<Vec<(String, String)>>,
) -> Response {
    respond(
        &shared,
        &method,
        "/v1/checkout/sessions",
        &headers,
        form.0,
        |shared, form| {
            let Some(mode) = field(form, "mode") else {
                return missing("mode");
            };
            if !["payment", "setup", "subscription"].contains(&mode) {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("parameter_invalid_enum"),
                    Some("mode"),
                    "Invalid mode: must be one of payment, setup, or subscription",
                );
            }
            if field(form, "success_url").is_none() {
                return missing("success_url");
            }
            let Some(price) = field(form, "line_items[0][price]") else {
                return missing("line_items[0][price]");
            };
            if !shared.prices.contains_key(price) {
                return no_such("price", Some("line_items[0][price]"), price);
            }
            let customer = field(form, "customer");
            if let Some(customer) = customer
                && live_customer(shared, customer).is_none()
            {
                return no_such("customer", Some("customer"), customer);
            }
            let now = shared.now;
            if let Some(expires_at) = field(form, "expires_at") {
                let valid = expires_at
                    .parse::<u64>()
                    .is_ok_and(|at| at >= now + 1800 && at <= now + 86_400);
                if !valid {
                    return stripe_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        Some("parameter_invalid_integer"),
                        Some("expires_at"),
                        "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                    );
                }
            }
            let id = shared.next_id("cs");
            let session = json!({
                "id": id, "object": "checkout.session", "livemode": false, "created": now,
                "expires_at": field(form, "expires_at").and_then(|a| a.parse::<u64>().ok()).unwrap_or(now + 86_400),
                "mode": mode, "status": "open", "payment_status": "unpaid",
                "client_reference_id": field(form, "client_reference_id"), "customer": customer,
                "metadata": map_of(form, "metadata"),
                "allow_promotion_codes": field(form, "allow_promotion_codes").map(|v| v == "true"),
                "billing_address_collection": field(form, "billing_address_collection"),
                "url": format!("https://checkout.stripe.test/c/pay/{id}"),
                "automatic_tax": {"enabled": field(form, "automatic_tax[enabled]") == Some("true"), "liability": null, "provider": null, "status": null},
                "tax_id_collection": {"enabled": field(form, "tax_id_collection[enabled]") == Some("true")},
                "custom_fields": [], "payment_method_types": ["card"], "shipping_options": []
            });
            let mut stored = session.clone();
            stored["line_items_price"] = json!(price);
            stored["subscription_metadata"] = map_of(form, "subscription_data[metadata]");
            shared.sessions.insert(id, stored);
            (StatusCode::OK, session)
        },
    )
}

async fn create_portal(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    headers: HeaderMap,
    form: axum::Form<Vec<(String, String)>>,
) -> Response {
    respond(
        &shared,
        &method,
        "/v1/billing_portal/sessions",
        &headers,
        form.0,
        |shared, form| {
            let Some(customer) = field(form, "customer") else {
                return missing("customer");
            };
            if live_customer(shared, customer).is_none() {
                return no_such("customer", Some("customer"), customer);
            }
            let id = shared.next_id("bps");
            (
                StatusCode::OK,
                json!({
                    "id": id, "object": "billing_portal.session", "livemode": false,
                    "created": shared.now, "configuration": "bpc_test_1",
                    "customer": customer, "return_url": field(form, "return_url"),
                    "url": format!("https://billing.stripe.test/p/session/{id}")
                }),
            )
        },
    )
}
