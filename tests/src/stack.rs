//! A whole Tollgate stack for one test: control-plane, demo upstream and Envoy (2 workers).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{Process, binaries_dir, envoy_bin, filter_wasm, free_port, workspace};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
const KEY_SECRET: &str = "e2e-key-secret-0123456789-0123456789-0123456789";
const READY_WITHIN: Duration = Duration::from_secs(20);

/// How a test wants its stack to differ from `envoy/envoy.yaml` and the built-in tiers.
#[derive(Default)]
pub struct StackOptions {
    tiers: Option<String>,
    filter: Vec<(&'static str, Value)>,
    callout: Callout,
}

/// Where the filter's callouts go.
#[derive(Default)]
enum Callout {
    #[default]
    ControlPlane,
    Port(u16),
    /// The demo upstream, which answers 200 with JSON and none of the protocol's headers.
    DemoUpstream,
}

impl StackOptions {
    /// A tier table (TOML) for the control-plane.
    pub fn tiers(mut self, toml: &str) -> Self {
        self.tiers = Some(toml.to_owned());
        self
    }

    /// Sets a top-level field of the filter's configuration.
    pub fn filter(mut self, field: &'static str, value: Value) -> Self {
        self.filter.push((field, value));
        self
    }

    /// Sends the filter's callouts to this port instead of the control-plane.
    pub fn callout_port(mut self, port: u16) -> Self {
        self.callout = Callout::Port(port);
        self
    }

    /// Sends the filter's callouts to the demo upstream, which does not speak the protocol.
    pub fn callout_to_demo_upstream(mut self) -> Self {
        self.callout = Callout::DemoUpstream;
        self
    }
}

pub struct Tenant {
    pub id: String,
    pub key: String,
}

pub struct Stack {
    pub envoy: Process,
    pub control_plane: Process,
    pub upstream: Process,
    pub envoy_port: u16,
    pub envoy_admin_port: u16,
    pub internal_port: u16,
    pub public_port: u16,
    client: reqwest::Client,
    /// Holds the generated configs and logs; removed when the stack is dropped, after the
    /// processes (fields drop in declaration order).
    _dir: TempDir,
}

/// The filter configuration in `envoy/envoy.yaml`.
pub fn shipped_envoy_config() -> Value {
    let path = workspace().join("envoy/envoy.yaml");
    let text = std::fs::read_to_string(&path).expect("read envoy/envoy.yaml");
    serde_yaml_ng::from_str(&text).expect("envoy/envoy.yaml is YAML")
}

/// The `tollgate` filter entry of the public listener.
pub fn tollgate_filter(config: &mut Value) -> &mut Value {
    let listener = config["static_resources"]["listeners"]
        .as_array_mut()
        .and_then(|l| l.iter_mut().find(|l| l["name"] == "public"))
        .expect("listener `public`");
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .and_then(|f| f.iter_mut().find(|f| f["name"] == "tollgate"))
        .expect("http filter `tollgate`")
}

/// The filter's JSON configuration, parsed out of the Envoy config.
pub fn filter_config(config: &mut Value) -> Value {
    let value = tollgate_filter(config)["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("configuration.value");
    serde_json::from_str(value).expect("the filter configuration is JSON")
}

pub fn set_filter_config(config: &mut Value, filter: &Value) {
    let plugin = &mut tollgate_filter(config)["typed_config"]["config"];
    plugin["configuration"]["value"] = json!(filter.to_string());
    plugin["vm_config"]["code"]["local"]["filename"] = json!(filter_wasm());
}

fn set_cluster_port(config: &mut Value, cluster: &str, port: u16) {
    let cluster = config["static_resources"]["clusters"]
        .as_array_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"] == cluster))
        .unwrap_or_else(|| panic!("cluster {cluster}"));
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        ["port_value"] = json!(port);
}

/// Runs `envoy --mode validate` on a config; returns whether Envoy accepted it, and its output.
pub fn validate_envoy_config(config: &Value) -> (bool, String) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy --mode validate; run `make test` to install Envoy");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

impl Stack {
    pub async fn start(options: StackOptions) -> Stack {
        let dir = TempDir::new().expect("tempdir");
        let (envoy_port, envoy_admin_port, internal_port, public_port, upstream_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );

        let mut control_plane = Command::new(binaries_dir().join("tollgate-control-plane"));
        control_plane
            .env(
                "TOLLGATE_INTERNAL_ADDR",
                format!("127.0.0.1:{internal_port}"),
            )
            .env("TOLLGATE_PUBLIC_ADDR", format!("127.0.0.1:{public_port}"))
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TOLLGATE_KEY_SECRET", KEY_SECRET)
            .env("RUST_LOG", "info");
        if let Some(tiers) = &options.tiers {
            let path = dir.path().join("tiers.toml");
            std::fs::write(&path, tiers).expect("write tiers");
            control_plane.env("TOLLGATE_TIERS", path);
        }
        let control_plane = Process::spawn("control-plane", control_plane, dir.path());

        let mut upstream = Command::new(binaries_dir().join("tollgate-demo-upstream"));
        upstream.env("DEMO_UPSTREAM_ADDR", format!("127.0.0.1:{upstream_port}"));
        let upstream = Process::spawn("demo-upstream", upstream, dir.path());

        let mut config = shipped_envoy_config();
        config["admin"]["address"]["socket_address"]["port_value"] = json!(envoy_admin_port);
        let listener = config["static_resources"]["listeners"]
            .as_array_mut()
            .and_then(|l| l.iter_mut().find(|l| l["name"] == "public"))
            .expect("listener `public`");
        listener["address"]["socket_address"]["port_value"] = json!(envoy_port);
        let callout_port = match options.callout {
            Callout::ControlPlane => internal_port,
            Callout::Port(port) => port,
            Callout::DemoUpstream => upstream_port,
        };
        set_cluster_port(&mut config, "tollgate_control_plane", callout_port);
        set_cluster_port(&mut config, "control_plane_public", public_port);
        set_cluster_port(&mut config, "demo_upstream", upstream_port);
        let mut filter = filter_config(&mut config);
        for (field, value) in options.filter {
            filter[field] = value;
        }
        set_filter_config(&mut config, &filter);
        let envoy = start_envoy(&config, dir.path());

        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let stack = Stack {
            envoy,
            control_plane,
            upstream,
            envoy_port,
            envoy_admin_port,
            internal_port,
            public_port,
            client,
            _dir: dir,
        };
        stack
            .wait_ready(&format!("http://127.0.0.1:{public_port}/healthz"))
            .await;
        stack
            .wait_ready(&format!("http://127.0.0.1:{upstream_port}/"))
            .await;
        stack
            .wait_ready(&format!("http://127.0.0.1:{envoy_admin_port}/ready"))
            .await;
        stack
    }

    async fn wait_ready(&self, url: &str) {
        let started = Instant::now();
        loop {
            if let Ok(response) = self.client.get(url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "{url} not ready within {READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A URL on Envoy's public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.envoy_port)
    }

    /// A URL on the control-plane's internal listener.
    pub fn internal_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.internal_port)
    }

    /// Sends `GET path` through Envoy with the key in `x-api-key`.
    pub async fn call(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("request through Envoy")
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.internal_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("admin request")
    }

    pub async fn create_tenant(&self, tier: &str) -> Tenant {
        let response = self
            .admin(
                reqwest::Method::POST,
                "/admin/v1/tenants",
                Some(json!({ "name": format!("{tier} tenant"), "tier": tier })),
            )
            .await;
        assert_eq!(response.status(), 201, "create tenant");
        let body: Value = response.json().await.expect("tenant JSON");
        Tenant {
            id: body["id"].as_str().expect("id").to_owned(),
            key: body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    /// The control-plane's count of callouts received.
    pub async fn decision_requests(&self) -> u64 {
        let text = self
            .client
            .get(self.internal_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix("tollgate_decision_requests_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("tollgate_decision_requests_total in /metrics")
    }
}

fn start_envoy(config: &Value, dir: &Path) -> Process {
    let path = dir.join("envoy.json");
    std::fs::write(&path, config.to_string()).expect("write envoy config");
    let mut envoy = Command::new(envoy_bin());
    envoy
        .arg("-c")
        .arg(&path)
        .args([
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ])
        .args(["--component-log-level", "wasm:info"]);
    Process::spawn("envoy", envoy, dir)
}
