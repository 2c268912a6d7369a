//! localstripe, a stateful fake Stripe from PyPI, for the billing tests: started on a free
//! loopback port through `tests/stripe/localstripe_launcher.py`, stopped when dropped. It
//! sends signed webhooks (API 2017-08-15 payloads) to the URLs registered with it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::{Process, free_port, within, workspace};

/// The secret key the tests give the control-plane for localstripe (it takes any `sk_`).
pub const API_KEY: &str = "sk_test_tollgate";

/// The Stripe price [`PAID_TIERS`] sells Pro at.
pub const PRO_PRICE: &str = "price_pro_monthly";

/// The tier table the billing tests sell from: Standard free, Pro at [`PRO_PRICE`].
pub const PAID_TIERS: &str = r#"
    default_tier = "standard"
    [tiers.standard]
    limit = 60
    window_seconds = 60
    [tiers.pro]
    limit = 1000
    window_seconds = 60
    paid = true
    stripe_price = "price_pro_monthly"
    display_price = "$49/month"
"#;

/// A subscription localstripe holds, and its customer.
pub struct Subscribed {
    pub id: String,
    pub customer: String,
}

pub struct LocalStripe {
    pub port: u16,
    client: reqwest::Client,
    _process: Process,
    _dir: TempDir,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        let dir = TempDir::new().expect("tempdir");
        let port = free_port();
        let mut command = Command::new(workspace().join(".venv/bin/python"));
        command
            .arg(workspace().join("tests/stripe/localstripe_launcher.py"))
            .arg(port.to_string());
        let process = Process::spawn("localstripe", command, dir.path());
        let stripe = LocalStripe {
            port,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            _process: process,
            _dir: dir,
        };
        within(Duration::from_secs(20), "localstripe started", || async {
            let customers = stripe.client.get(stripe.url("/v1/customers"));
            customers
                .basic_auth(API_KEY, None::<&str>)
                .send()
                .await
                .is_ok()
        })
        .await;
        stripe
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The API root to give the control-plane (`STRIPE_API_BASE`).
    pub fn api_base(&self) -> String {
        self.url("/")
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .post(self.url(path))
            .basic_auth(API_KEY, None::<&str>)
            .form(form)
            .send()
            .await
            .expect("localstripe");
        let body: Value = response.json().await.expect("localstripe JSON");
        assert!(body.get("error").is_none(), "localstripe {path}: {body}");
        body
    }

    /// Sends every event, signed with `secret`, to `url`; `name` tells endpoints apart.
    pub async fn register_webhook(&self, name: &str, url: &str, secret: &str) {
        self.client
            .post(self.url(&format!("/_config/webhooks/{name}")))
            .form(&[("url", url), ("secret", secret)])
            .send()
            .await
            .expect("register webhook");
    }

    /// A plan (localstripe's prices) with this id.
    pub async fn create_price(&self, id: &str) {
        self.post(
            "/v1/plans",
            &[
                ("id", id),
                ("amount", "4900"),
                ("currency", "usd"),
                ("interval", "month"),
                ("product[name]", id),
            ],
        )
        .await;
    }

    /// A customer with a card, subscribed to `price` with the tenant id in the metadata, as
    /// Tollgate's checkout would leave it.
    pub async fn subscribe(&self, tenant: &str, price: &str) -> Subscribed {
        let customer = self
            .post("/v1/customers", &[("email", "billing@example.com")])
            .await;
        let customer = customer["id"].as_str().expect("customer id").to_owned();
        self.pay_with_card(&customer, "4242424242424242").await;
        let subscription = self
            .post(
                "/v1/subscriptions",
                &[
                    ("customer", &customer),
                    ("items[0][plan]", price),
                    ("metadata[tenant_id]", tenant),
                ],
            )
            .await;
        Subscribed {
            id: subscription["id"]
                .as_str()
                .expect("subscription id")
                .to_owned(),
            customer,
        }
    }

    /// Makes `number` the customer's default card.
    async fn pay_with_card(&self, customer: &str, number: &str) {
        let card = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2030"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        let card = card["id"].as_str().expect("payment method id").to_owned();
        self.post(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", customer)],
        )
        .await;
        self.post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", &card)],
        )
        .await;
    }

    /// A renewal that fails: the customer's card becomes the 3-D Secure test card
    /// `4000002500003155`, an invoice of the subscription is paid with it, and the
    /// cardholder fails the authentication. localstripe then sends `invoice.payment_failed`
    /// and marks the subscription past due.
    pub async fn fail_a_payment(&self, subscribed: &Subscribed) {
        let customer = subscribed.customer.as_str();
        let subscription = subscribed.id.as_str();
        self.pay_with_card(customer, "4000002500003155").await;
        self.post(
            "/v1/invoiceitems",
            &[
                ("customer", customer),
                ("subscription", subscription),
                ("amount", "4900"),
                ("currency", "usd"),
            ],
        )
        .await;
        let invoice = self
            .post(
                "/v1/invoices",
                &[("customer", customer), ("subscription", subscription)],
            )
            .await;
        let invoice = invoice["id"].as_str().expect("invoice id");
        let paid = self.post(&format!("/v1/invoices/{invoice}/pay"), &[]).await;
        assert_eq!(paid["status"], "open", "the payment waits for 3-D Secure");
        let intent = self.get(&format!("/v1/invoices/{invoice}")).await;
        let intent = intent["payment_intent"].as_str().expect("payment intent");
        let secret = self.get(&format!("/v1/payment_intents/{intent}")).await;
        let secret = secret["client_secret"].as_str().expect("client secret");
        self.post(
            &format!(
                "/v1/payment_intents/{intent}/_authenticate?success=false&client_secret={secret}"
            ),
            &[],
        )
        .await;
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .basic_auth(API_KEY, None::<&str>)
            .send()
            .await
            .expect("localstripe");
        response.json().await.expect("localstripe JSON")
    }

    pub async fn cancel(&self, subscription: &Subscribed) {
        let subscription = &subscription.id;
        let response = self
            .client
            .delete(self.url(&format!("/v1/subscriptions/{subscription}")))
            .basic_auth(API_KEY, None::<&str>)
            .send()
            .await
            .expect("cancel");
        assert!(
            response.status().is_success(),
            "cancel: {}",
            response.status()
        );
    }
}
