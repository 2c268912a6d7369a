//! localstripe, a stateful fake Stripe from PyPI, for the billing tests: started on a free
//! loopback port through `tests/stripe/localstripe_launcher.py`, stopped when dropped. It
//! sends signed webhooks (API 2017-08-15 payloads) to the URLs registered with it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::{Process, free_port, workspace};

const API_KEY: &str = "sk_test_tollgate";

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
        let started = Instant::now();
        while stripe
            .client
            .get(stripe.url("/v1/customers"))
            .basic_auth(API_KEY, None::<&str>)
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "localstripe did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stripe
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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

    /// Sends every event, signed with `secret`, to `url`.
    pub async fn register_webhook(&self, url: &str, secret: &str) {
        self.client
            .post(self.url("/_config/webhooks/tollgate"))
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
    /// Tollgate's checkout would leave it. Returns the subscription id.
    pub async fn subscribe(&self, tenant: &str, price: &str) -> String {
        let customer = self
            .post("/v1/customers", &[("email", "billing@example.com")])
            .await;
        let customer = customer["id"].as_str().expect("customer id").to_owned();
        let card = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", "4242424242424242"),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2030"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        let card = card["id"].as_str().expect("payment method id").to_owned();
        self.post(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", &customer)],
        )
        .await;
        self.post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", &card)],
        )
        .await;
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
        subscription["id"]
            .as_str()
            .expect("subscription id")
            .to_owned()
    }

    pub async fn cancel(&self, subscription: &str) {
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
