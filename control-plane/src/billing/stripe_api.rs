//! Every call Tollgate makes to Stripe's API: create the tenant's customer, Checkout and
//! Billing Portal sessions, and read customers and subscriptions back.
//!
//! async-stripe's typed builders encode the session requests (their parameter names are
//! checked at compile time); this module sends them, and its own few requests, over one
//! hyper + rustls client. Why not async-stripe's client: it sends the Stripe-Version its
//! release was generated for (Tollgate states its own, `STRIPE_API_VERSION`), drops the
//! `Retry-After` of a 429 (the sync honours it), and parses answers into structs of one API
//! version (a localstripe answer, like its webhooks, fails to parse). Answers are read here
//! as plain JSON, as webhook events are, and picked apart tolerantly in
//! [`super::stripe_objects`].

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionAutomaticTax, CreateCheckoutSessionCustomerUpdate,
    CreateCheckoutSessionCustomerUpdateAddress, CreateCheckoutSessionCustomerUpdateName,
    CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    CreateCheckoutSessionTaxIdCollection,
};
use stripe_checkout::{CheckoutSessionBillingAddressCollection, CheckoutSessionMode};
use stripe_client_core::{RequestBuilder, StripeMethod, StripeRequest};

use std::sync::Arc;

use crate::config::{BillingAddress, Secret};
use crate::metrics::Metrics;

/// Longest wait for Stripe on one call; a tenant or Stripe's webhook delivery is waiting.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Stripe's answers are small; a list of 100 subscriptions is well under this.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A retried checkout (double click, client retry) within the same minute gets the same
/// session back: the session's expiry is counted from the end of the minute, so every
/// parameter, and so the idempotency key, is the same.
const CHECKOUT_IDEMPOTENCY_PERIOD_SECS: u64 = 60;

/// A subscription list is read in pages of this many, at most this many pages (a tenant
/// has a handful; anything beyond is logged).
const LIST_PAGE: usize = 100;
const LIST_PAGES: usize = 10;

/// The metadata key that names the tenant on customers, sessions and subscriptions; the
/// webhook reads the same key.
pub const TENANT_METADATA_KEY: &str = "tenant_id";

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Stripe answered with an error: usually configuration (an unknown price, a portal
    /// that is not set up, a customer that was deleted).
    #[error("Stripe refused the request (HTTP {status}, {code:?} on {param:?}): {message}")]
    Refused {
        status: u16,
        /// Stripe's error code, e.g. `resource_missing`.
        code: Option<String>,
        /// The parameter Stripe objects to, e.g. `customer`.
        param: Option<String>,
        message: String,
    },
    /// The object asked for does not exist (HTTP 404).
    #[error("Stripe has no such object: {0}")]
    NotFound(String),
    /// Stripe's rate limit (HTTP 429): a reason to wait, not a refusal.
    #[error("Stripe is rate-limiting (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// Stripe could not be reached, timed out, failed (5xx) or answered something unreadable.
    #[error("Stripe did not answer usably: {0}")]
    Unavailable(String),
    #[error("the Stripe client cannot be configured: {0}")]
    Config(String),
}

impl StripeApiError {
    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StripeApiError::Refused { .. } => "refused",
            StripeApiError::NotFound(_) => "not_found",
            StripeApiError::RateLimited { .. } => "rate_limited",
            StripeApiError::Unavailable(_) | StripeApiError::Config(_) => "unavailable",
        }
    }

    /// Stripe refused because the named customer no longer exists.
    pub fn is_missing_customer(&self) -> bool {
        match self {
            StripeApiError::Refused { code, param, .. } => {
                code.as_deref() == Some("resource_missing") && param.as_deref() == Some("customer")
            }
            _ => false,
        }
    }
}

/// A session the tenant is sent to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HostedSession {
    pub id: String,
    pub url: String,
}

/// How Checkout Sessions are set up, from the configuration.
#[derive(Debug, Clone)]
pub struct CheckoutSettings {
    /// Seconds a session stays open (30 min to 24 h).
    pub expiry_secs: u64,
    pub promotion_codes: bool,
    pub automatic_tax: bool,
    pub tax_id_collection: bool,
    pub billing_address: BillingAddress,
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        Self {
            expiry_secs: 1800,
            promotion_codes: false,
            automatic_tax: false,
            tax_id_collection: false,
            billing_address: BillingAddress::Auto,
        }
    }
}

/// What a Checkout Session is created for.
#[derive(Debug)]
pub struct CheckoutOrder<'a> {
    pub tenant: &'a str,
    pub price: &'a str,
    /// The tenant's Stripe customer (created before its first checkout).
    pub customer: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
}

/// How to reach Stripe: the API root, the key and the API version every call states.
#[derive(Debug, Clone)]
pub struct StripeConnection<'a> {
    pub secret_key: &'a Secret,
    /// Stripe's API root (`https://api.stripe.com/`); tests point it elsewhere.
    pub api_base: &'a str,
    pub api_version: &'a str,
}

#[derive(Clone)]
pub struct StripeApi {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The API root, ending in `/`.
    base: String,
    /// `Bearer <key>`, marked sensitive so it is never printed.
    authorization: HeaderValue,
    version: HeaderValue,
    user_agent: HeaderValue,
    /// Where Checkout and the portal send the tenant back.
    return_url: String,
    checkout: CheckoutSettings,
    /// Counts every call by outcome.
    metrics: Arc<Metrics>,
}

impl StripeApi {
    pub fn new(
        connection: &StripeConnection<'_>,
        return_url: String,
        checkout: CheckoutSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StripeApiError> {
        let base = if connection.api_base.ends_with('/') {
            connection.api_base.to_owned()
        } else {
            format!("{}/", connection.api_base)
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| StripeApiError::Config(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {}", connection.secret_key.expose())).map_err(
                |_| StripeApiError::Config("the secret key is not a header value".into()),
            )?;
        authorization.set_sensitive(true);
        let version = HeaderValue::try_from(connection.api_version)
            .map_err(|_| StripeApiError::Config("the API version is not a header value".into()))?;
        let user_agent = HeaderValue::try_from(format!("tollgate/{}", env!("CARGO_PKG_VERSION")))
            .map_err(|e| StripeApiError::Config(e.to_string()))?;
        Ok(Self {
            client,
            base,
            authorization,
            version,
            user_agent,
            return_url,
            checkout,
            metrics,
        })
    }

    /// The tenant's one customer, named by `metadata.tenant_id`. `generation` tells apart the
    /// customers of a tenant whose earlier one was unlinked: a retry of the same creation gets
    /// the same customer back (idempotency key), a new generation a new one.
    pub async fn create_customer(
        &self,
        tenant: &str,
        name: &str,
        generation: &str,
    ) -> Result<String, StripeApiError> {
        let form = form_encode(&[
            ("name", name),
            ("description", &format!("Tollgate tenant {tenant}")),
            (&format!("metadata[{TENANT_METADATA_KEY}]"), tenant),
        ]);
        let key = idempotency_key("customer", &[tenant, generation]);
        let customer = self
            .send(Method::POST, "/customers", None, Some(form), Some(&key))
            .await?;
        text(&customer["id"])
            .ok_or_else(|| StripeApiError::Unavailable("a customer without an id".into()))
    }

    /// The customer as Stripe has it; `Ok(None)` once it was deleted.
    pub async fn customer(&self, id: &str) -> Result<Option<Value>, StripeApiError> {
        Ok(self
            .object("customers", id)
            .await?
            .filter(|customer| customer["deleted"] != true))
    }

    /// One subscription; `Ok(None)` if Stripe has none with this id.
    pub async fn subscription(&self, id: &str) -> Result<Option<Value>, StripeApiError> {
        self.object("subscriptions", id).await
    }

    /// One charge (a dispute names only its charge); `Ok(None)` if there is none.
    pub async fn charge(&self, id: &str) -> Result<Option<Value>, StripeApiError> {
        self.object("charges", id).await
    }

    /// `GET /v1/<collection>/<id>`; `Ok(None)` when Stripe answers 404.
    async fn object(&self, collection: &str, id: &str) -> Result<Option<Value>, StripeApiError> {
        match self
            .get(&format!("/{collection}/{}", path_segment(id)), None)
            .await
        {
            Ok(object) => Ok(Some(object)),
            Err(StripeApiError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Every subscription of the customer, whatever its status (ended ones included, so a
    /// cancellation is seen).
    pub async fn subscriptions_of(&self, customer: &str) -> Result<Vec<Value>, StripeApiError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..LIST_PAGES {
            let limit = LIST_PAGE.to_string();
            let mut query = vec![("customer", customer), ("status", "all"), ("limit", &limit)];
            if let Some(after) = &after {
                query.push(("starting_after", after));
            }
            let page = self
                .get("/subscriptions", Some(form_encode(&query)))
                .await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data.last().and_then(|last| text(&last["id"]));
            all.extend(data);
            if page["has_more"] != true || after.is_none() {
                return Ok(all);
            }
        }
        tracing::warn!(
            customer,
            read = all.len(),
            "a customer has more subscriptions than one sync reads"
        );
        Ok(all)
    }

    /// A subscription-mode Checkout Session for one unit of `order.price`, for the tenant's
    /// customer, naming the tenant in `client_reference_id` and in the session's and the
    /// subscription's metadata (so every later subscription event names it too).
    pub async fn checkout(
        &self,
        order: &CheckoutOrder<'_>,
    ) -> Result<HostedSession, StripeApiError> {
        let request = self.checkout_request(order).build();
        // Same parameters, same key: a retry gets Stripe's first answer back; anything that
        // differs (customer, price, expiry minute, options) is another session.
        let key = idempotency_key(
            "checkout",
            &[order.tenant, request.body.as_deref().unwrap_or("")],
        );
        let session = self.send_built(request, Some(&key)).await?;
        hosted(&session)
    }

    fn checkout_request(&self, order: &CheckoutOrder<'_>) -> CreateCheckoutSession {
        let tenant = std::collections::HashMap::from([(
            TENANT_METADATA_KEY.to_owned(),
            order.tenant.to_owned(),
        )]);
        let mut line = CreateCheckoutSessionLineItems::new();
        line.price = Some(order.price.to_owned());
        line.quantity = Some(1);
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(tenant.clone());
        let settings = &self.checkout;
        let minute_ends =
            (order.now / CHECKOUT_IDEMPOTENCY_PERIOD_SECS + 1) * CHECKOUT_IDEMPOTENCY_PERIOD_SECS;
        let expires_at = i64::try_from(minute_ends + settings.expiry_secs).unwrap_or(i64::MAX);
        let mut request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(order.customer)
            .line_items(vec![line])
            .client_reference_id(order.tenant)
            .metadata(tenant)
            .subscription_data(subscription)
            .expires_at(expires_at)
            .billing_address_collection(match settings.billing_address {
                BillingAddress::Auto => CheckoutSessionBillingAddressCollection::Auto,
                BillingAddress::Required => CheckoutSessionBillingAddressCollection::Required,
            })
            .success_url(self.return_to("checkout=success&session_id={CHECKOUT_SESSION_ID}"))
            .cancel_url(self.return_to("checkout=canceled"));
        if settings.promotion_codes {
            request = request.allow_promotion_codes(true);
        }
        if settings.automatic_tax {
            request = request.automatic_tax(CreateCheckoutSessionAutomaticTax::new(true));
        }
        if settings.tax_id_collection {
            request = request.tax_id_collection(CreateCheckoutSessionTaxIdCollection::new(true));
        }
        // With an existing customer, Stripe needs leave to save what Checkout collects for
        // tax (the address) and tax ids (the name) on it.
        if settings.automatic_tax || settings.tax_id_collection {
            let mut update = CreateCheckoutSessionCustomerUpdate::new();
            update.address = Some(CreateCheckoutSessionCustomerUpdateAddress::Auto);
            update.name = Some(CreateCheckoutSessionCustomerUpdateName::Auto);
            request = request.customer_update(update);
        }
        request
    }

    /// A Billing Portal session for the customer, returning to the configured URL.
    pub async fn portal(&self, customer: &str) -> Result<HostedSession, StripeApiError> {
        let request = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(&self.return_url)
            .build();
        let session = self.send_built(request, None).await?;
        hosted(&session)
    }

    fn return_to(&self, query: &str) -> String {
        let separator = if self.return_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}{query}", self.return_url)
    }

    async fn get(&self, path: &str, query: Option<String>) -> Result<Value, StripeApiError> {
        self.send(Method::GET, path, query, None, None).await
    }

    /// Sends a request async-stripe built.
    async fn send_built(
        &self,
        request: RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<Value, StripeApiError> {
        let method = match request.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        self.send(
            method,
            &request.path,
            request.query,
            request.body,
            idempotency_key,
        )
        .await
    }

    /// One call, counted by outcome.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: Option<String>,
        form: Option<String>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, StripeApiError> {
        let answer = self
            .exchange(method, path, query, form, idempotency_key)
            .await;
        let outcome = answer.as_ref().map_or_else(StripeApiError::label, |_| "ok");
        self.metrics.count_stripe_call(outcome);
        answer
    }

    /// One call, once (retries are the caller's: a sync waits out a 429, a webhook falls back
    /// to the event), bounded by [`TIMEOUT`]; the answer as JSON.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: Option<String>,
        form: Option<String>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, StripeApiError> {
        let mut uri = format!("{}v1{path}", self.base);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(&query);
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header("stripe-version", self.version.clone())
            .header(USER_AGENT, self.user_agent.clone());
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if form.is_some() {
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| StripeApiError::Config(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| StripeApiError::Unavailable(e.to_string()))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| StripeApiError::Unavailable(e.to_string()))?
                .to_bytes();
            Ok::<_, StripeApiError>((status, retry_after, body))
        };
        let (status, retry_after, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| StripeApiError::Unavailable(format!("no answer within {TIMEOUT:?}")))??;
        let answer: Option<Value> = serde_json::from_slice(&body).ok();
        match status {
            200..=299 => answer
                .ok_or_else(|| StripeApiError::Unavailable("an answer that is not JSON".into())),
            429 => Err(StripeApiError::RateLimited { retry_after }),
            404 => Err(StripeApiError::NotFound(error_message(answer.as_ref()))),
            400..=499 => {
                let error = answer.as_ref().map(|a| &a["error"]);
                Err(StripeApiError::Refused {
                    status,
                    code: error.and_then(|e| text(&e["code"])),
                    param: error.and_then(|e| text(&e["param"])),
                    message: error_message(answer.as_ref()),
                })
            }
            _ => Err(StripeApiError::Unavailable(format!(
                "HTTP {status}: {}",
                error_message(answer.as_ref())
            ))),
        }
    }
}

fn hosted(session: &Value) -> Result<HostedSession, StripeApiError> {
    match (text(&session["id"]), text(&session["url"])) {
        (Some(id), Some(url)) => Ok(HostedSession { id, url }),
        _ => Err(StripeApiError::Unavailable(
            "a session without an id or url".into(),
        )),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn error_message(answer: Option<&Value>) -> String {
    answer
        .and_then(|a| a["error"]["message"].as_str())
        .unwrap_or("(no message)")
        .to_owned()
}

/// `tollgate-<what>-<sha256 of the parts>`: deterministic, so a retry repeats it.
fn idempotency_key(what: &str, parts: &[&str]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    format!("tollgate-{what}-{}", hex::encode(digest.finalize()))
}

/// `application/x-www-form-urlencoded`, as Stripe takes parameters (also in queries).
fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// An id as one path segment: Stripe ids are `[A-Za-z0-9_]`, anything else is encoded so a
/// stored id can never reach another path.
fn path_segment(id: &str) -> String {
    percent_encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(return_url: &str, checkout: CheckoutSettings) -> StripeApi {
        let key = Secret::new("sk_test_x".into());
        let connection = StripeConnection {
            secret_key: &key,
            api_base: "http://127.0.0.1:1",
            api_version: crate::config::STRIPE_API_VERSION,
        };
        StripeApi::new(&connection, return_url.to_owned(), checkout, Arc::default()).unwrap()
    }

    fn order(customer: &'static str, now: u64) -> CheckoutOrder<'static> {
        CheckoutOrder {
            tenant: "tn_1",
            price: "price_pro",
            customer,
            now,
        }
    }

    fn form(api: &StripeApi, order: &CheckoutOrder<'_>) -> String {
        api.checkout_request(order).build().body.unwrap()
    }

    #[test]
    fn a_retry_within_the_minute_sends_the_same_parameters_and_a_later_one_does_not() {
        let api = api("https://p.example/billing", CheckoutSettings::default());
        let first = form(&api, &order("cus_1", 7200));
        assert_eq!(first, form(&api, &order("cus_1", 7259)));
        assert_ne!(first, form(&api, &order("cus_1", 7260)));
        assert_ne!(first, form(&api, &order("cus_2", 7200)));
        // 30 minutes from the end of the minute: never less than Stripe's minimum.
        assert!(first.contains("expires_at=9060"), "{first}");
        assert!(first.contains("customer=cus_1"), "{first}");
        assert!(!first.contains("automatic_tax"), "{first}");
    }

    #[test]
    fn checkout_options_reach_the_request() {
        let settings = CheckoutSettings {
            expiry_secs: 3600,
            promotion_codes: true,
            automatic_tax: true,
            tax_id_collection: true,
            billing_address: BillingAddress::Required,
        };
        let body = form(&api("https://p.example/b", settings), &order("cus_1", 0));
        for expected in [
            "allow_promotion_codes=true",
            "automatic_tax[enabled]=true",
            "tax_id_collection[enabled]=true",
            "billing_address_collection=required",
            "customer_update[address]=auto",
            "customer_update[name]=auto",
            "expires_at=3660",
        ] {
            let encoded = expected.replace('[', "%5B").replace(']', "%5D");
            assert!(
                body.contains(expected) || body.contains(&encoded),
                "{expected} in {body}"
            );
        }
    }

    #[test]
    fn return_urls_keep_their_own_query() {
        assert_eq!(
            api("https://p.example/billing", CheckoutSettings::default())
                .return_to("checkout=canceled"),
            "https://p.example/billing?checkout=canceled"
        );
        assert_eq!(
            api(
                "https://p.example/app?tab=billing",
                CheckoutSettings::default()
            )
            .return_to("checkout=canceled"),
            "https://p.example/app?tab=billing&checkout=canceled"
        );
    }

    #[test]
    fn forms_and_paths_are_encoded() {
        assert_eq!(
            form_encode(&[("metadata[tenant_id]", "tn_1"), ("name", "A & B")]),
            "metadata%5Btenant_id%5D=tn_1&name=A%20%26%20B"
        );
        assert_eq!(path_segment("sub_1/../x"), "sub_1%2F..%2Fx");
        assert!(idempotency_key("customer", &["tn_1", ""]).len() <= 255);
        assert_ne!(
            idempotency_key("customer", &["tn_1", ""]),
            idempotency_key("customer", &["tn_1", "cus_old"])
        );
    }
}
