//! A whole Tollgate stack for one test: control-plane (one or more replicas), demo upstream
//! and Envoy (2 workers).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::{Process, binaries_dir, envoy_bin, filter_wasm, free_port, within, workspace};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
pub const KEY_SECRET: &str = "e2e-key-secret-0123456789-0123456789-0123456789";
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long an Envoy under a tool such as valgrind, some 50 times slower, may take to start.
const READY_UNDER_A_TOOL: Duration = Duration::from_secs(300);

/// How a test wants its stack to differ from `envoy/envoy.yaml` and the built-in tiers.
#[derive(Default)]
pub struct StackOptions {
    tiers: Option<String>,
    filter: Vec<(&'static str, Value)>,
    callout: Callout,
    redis_url: Option<String>,
    replicas: Option<usize>,
    state_file: bool,
    /// A state file of an earlier version to start from (see [`StackOptions::old_state_file`]).
    old_state: Option<Value>,
    without_filter: bool,
    direct_response: bool,
    callout_http1: bool,
    control_plane_env: Vec<(&'static str, String)>,
    /// Envoys beside the first, with the same configuration on ports of their own.
    more_envoys: usize,
    /// A command Envoy runs under (see [`StackOptions::envoy_under`]).
    envoy_under: Vec<String>,
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

    /// Runs the control-plane(s) on this Redis instead of the in-memory store.
    pub fn redis(mut self, url: String) -> Self {
        self.redis_url = Some(url);
        self
    }

    /// Runs this many control-plane replicas behind Envoy's callout cluster.
    pub fn replicas(mut self, count: usize) -> Self {
        self.replicas = Some(count);
        self
    }

    /// Keeps tenants in the embedded registry (`TOLLGATE_STATE_FILE=<dir>/state.json`, so the
    /// registry is `<dir>/state.redb`), so a restart keeps them.
    pub fn state_file(mut self) -> Self {
        self.state_file = true;
        self
    }

    /// As [`StackOptions::state_file`], with `<dir>/state.json` written first with `records`:
    /// the state file an earlier version left, which the control-plane imports.
    pub fn old_state_file(mut self, records: Value) -> Self {
        self.state_file = true;
        self.old_state = Some(records);
        self
    }

    /// Envoy without the Tollgate filter: the baseline the filter's cost is measured against.
    pub fn without_filter(mut self) -> Self {
        self.without_filter = true;
        self
    }

    /// Envoy answers the limited routes itself (`direct_response` 200), reaching no upstream:
    /// the raw ceiling of this Envoy on this machine.
    pub fn direct_response(mut self) -> Self {
        self.direct_response = true;
        self
    }

    /// Runs Envoy with one worker under `command` (its program and arguments, Envoy's own
    /// command line after them), and waits [`READY_UNDER_A_TOOL`] for it to be ready: for
    /// counting Envoy's instructions under valgrind (`bench/src/bin/instructions.rs`).
    pub fn envoy_under(mut self, command: &[&str]) -> Self {
        self.envoy_under = command.iter().map(|arg| (*arg).to_owned()).collect();
        self
    }

    /// Sets an environment variable of every control-plane replica.
    pub fn control_plane_env(mut self, name: &'static str, value: &str) -> Self {
        self.control_plane_env.push((name, value.to_owned()));
        self
    }

    /// Runs `count` Envoys (at least one), each with the filter, its own shared data (deny
    /// cache, leases) and its own callouts to the same control-plane(s): several edges of one
    /// platform.
    pub fn envoys(mut self, count: usize) -> Self {
        self.more_envoys = count.saturating_sub(1);
        self
    }

    /// Calls the control-plane over HTTP/1.1 instead of HTTP/2.
    pub fn callout_http1(mut self) -> Self {
        self.callout_http1 = true;
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

/// An Envoy beside the stack's first one (see [`StackOptions::envoys`]).
pub struct Edge {
    pub process: Process,
    pub port: u16,
    pub admin_port: u16,
}

pub struct Stack {
    pub envoy: Process,
    /// The Envoys beside `envoy`, if the test asked for several.
    pub more_envoys: Vec<Edge>,
    pub control_planes: Vec<ControlPlane>,
    pub upstream: Process,
    pub envoy_port: u16,
    pub envoy_admin_port: u16,
    client: reqwest::Client,
    /// Holds the generated configs and logs; removed when the stack is dropped, after the
    /// processes (fields drop in declaration order).
    _dir: TempDir,
}

/// `envoy/envoy.yaml`, parsed.
pub fn shipped_envoy_config() -> Value {
    let path = workspace().join("envoy/envoy.yaml");
    let text = std::fs::read_to_string(&path).expect("read envoy/envoy.yaml");
    serde_yaml_ng::from_str(&text).expect("envoy/envoy.yaml is YAML")
}

fn public_listener(config: &mut Value) -> &mut Value {
    config["static_resources"]["listeners"]
        .as_array_mut()
        .and_then(|l| l.iter_mut().find(|l| l["name"] == "public"))
        .expect("listener `public`")
}

fn public_http_filters(config: &mut Value) -> &mut Vec<Value> {
    public_listener(config)["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .expect("http_filters")
}

fn public_routes(config: &mut Value) -> &mut Vec<Value> {
    public_listener(config)["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .expect("routes")
}

fn cluster<'a>(config: &'a mut Value, name: &str) -> &'a mut Value {
    config["static_resources"]["clusters"]
        .as_array_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("cluster {name}"))
}

/// The `tollgate` filter entry of the public listener.
pub fn tollgate_filter(config: &mut Value) -> &mut Value {
    public_http_filters(config)
        .iter_mut()
        .find(|f| f["name"] == "tollgate")
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
    set_cluster_ports(config, cluster, &[port]);
}

/// Points a cluster at these loopback ports, one endpoint each.
fn set_cluster_ports(config: &mut Value, name: &str, ports: &[u16]) {
    let cluster = cluster(config, name);
    let endpoints = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"];
    let template = endpoints[0].clone();
    *endpoints = ports
        .iter()
        .map(|port| {
            let mut endpoint = template.clone();
            endpoint["endpoint"]["address"]["socket_address"]["port_value"] = json!(port);
            endpoint
        })
        .collect();
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
        let (envoy_port, envoy_admin_port, upstream_port) = (free_port(), free_port(), free_port());

        if let Some(records) = &options.old_state {
            let text = serde_json::to_vec_pretty(records).expect("state file JSON");
            std::fs::write(dir.path().join("state.json"), text).expect("write state file");
        }
        let tiers = options.tiers.as_ref().map(|tiers| {
            let path = dir.path().join("tiers.toml");
            std::fs::write(&path, tiers).expect("write tiers");
            path
        });
        let control_planes: Vec<ControlPlane> = (0..options.replicas.unwrap_or(1))
            .map(|replica| {
                let mut env = vec![
                    (
                        "TOLLGATE_INTERNAL_ADDR",
                        format!("127.0.0.1:{}", free_port()),
                    ),
                    ("TOLLGATE_PUBLIC_ADDR", format!("127.0.0.1:{}", free_port())),
                    ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
                    ("TOLLGATE_KEY_SECRET", KEY_SECRET.to_owned()),
                    ("RUST_LOG", "info".to_owned()),
                    // Tests poll usage and the other public endpoints as fast as they need;
                    // the budgets' own tests (self_defense.rs) put the defaults back.
                    ("TOLLGATE_USAGE_BUDGET", "100000".to_owned()),
                    ("TOLLGATE_PUBLIC_BUDGET", "100000".to_owned()),
                    ("TOLLGATE_BILLING_BUDGET", "100000".to_owned()),
                ];
                if let Some(path) = &tiers {
                    env.push(("TOLLGATE_TIERS", path.display().to_string()));
                }
                if let Some(url) = &options.redis_url {
                    env.push(("REDIS_URL", url.clone()));
                }
                env.extend(options.control_plane_env.iter().cloned());
                if options.state_file {
                    env.push((
                        "TOLLGATE_STATE_FILE",
                        dir.path().join("state.json").display().to_string(),
                    ));
                }
                ControlPlane::spawn(&format!("control-plane-{replica}"), env, dir.path())
            })
            .collect();
        let public_port = control_planes[0].public_port;

        let mut upstream = Command::new(binaries_dir().join("tollgate-demo-upstream"));
        upstream.env("DEMO_UPSTREAM_ADDR", format!("127.0.0.1:{upstream_port}"));
        let upstream = Process::spawn("demo-upstream", upstream, dir.path());

        let mut config = shipped_envoy_config();
        config["admin"]["address"]["socket_address"]["port_value"] = json!(envoy_admin_port);
        public_listener(&mut config)["address"]["socket_address"]["port_value"] = json!(envoy_port);
        let callout_ports: Vec<u16> = match options.callout {
            Callout::ControlPlane => control_planes.iter().map(|c| c.internal_port).collect(),
            Callout::Port(port) => vec![port],
            Callout::DemoUpstream => vec![upstream_port],
        };
        set_cluster_ports(&mut config, "tollgate_control_plane", &callout_ports);
        set_cluster_port(&mut config, "control_plane_public", public_port);
        set_cluster_port(&mut config, "demo_upstream", upstream_port);
        let mut filter = filter_config(&mut config);
        if cfg!(debug_assertions) {
            // Tests run debug builds of everything on two shared cores, where a 100 ms callout
            // timeout turns a scheduling stall into a 503 and an exact count into a flake.
            // Tests of the timeout set their own; benchmarks (release) keep the shipped one.
            filter["control_plane"]["timeout"] = json!("2s");
        }
        for (field, value) in options.filter {
            filter[field] = value;
        }
        set_filter_config(&mut config, &filter);
        if options.without_filter {
            public_http_filters(&mut config).retain(|f| f["name"] != "tollgate");
        }
        if options.direct_response {
            for route in public_routes(&mut config) {
                if route["route"]["cluster"] == "demo_upstream" {
                    route.as_object_mut().map(|r| r.remove("route"));
                    route["direct_response"] =
                        json!({"status": 200, "body": {"inline_string": "{}"}});
                }
            }
        }
        if options.callout_http1 {
            cluster(&mut config, "tollgate_control_plane")
                .as_object_mut()
                .map(|c| c.remove("typed_extension_protocol_options"));
        }
        let envoy = start_envoy("envoy", &config, dir.path(), &options.envoy_under);
        let more_envoys: Vec<Edge> = (0..options.more_envoys)
            .map(|n| {
                let (port, admin_port) = (free_port(), free_port());
                config["admin"]["address"]["socket_address"]["port_value"] = json!(admin_port);
                public_listener(&mut config)["address"]["socket_address"]["port_value"] =
                    json!(port);
                let process = start_envoy(
                    &format!("envoy-{}", n + 1),
                    &config,
                    dir.path(),
                    &options.envoy_under,
                );
                Edge {
                    process,
                    port,
                    admin_port,
                }
            })
            .collect();

        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let stack = Stack {
            envoy,
            more_envoys,
            control_planes,
            upstream,
            envoy_port,
            envoy_admin_port,
            client,
            _dir: dir,
        };
        for control_plane in &stack.control_planes {
            stack.wait_ready(&control_plane.url("/readyz")).await;
        }
        stack
            .wait_ready(&format!("http://127.0.0.1:{upstream_port}/"))
            .await;
        let envoy_ready_within = if options.envoy_under.is_empty() {
            READY_WITHIN
        } else {
            READY_UNDER_A_TOOL
        };
        let envoy_admin_ports = std::iter::once(envoy_admin_port)
            .chain(stack.more_envoys.iter().map(|edge| edge.admin_port));
        for admin_port in envoy_admin_ports {
            let url = format!("http://127.0.0.1:{admin_port}/ready");
            stack.wait_ready_within(&url, envoy_ready_within).await;
        }
        stack
    }

    /// Kills control-plane `replica` and starts it again with the same settings.
    pub async fn restart_control_plane(&mut self, replica: usize) {
        self.control_planes[replica].restart();
        let url = self.control_planes[replica].url("/readyz");
        self.wait_ready(&url).await;
    }

    /// Kills control-plane `replica` with SIGKILL (and waits for it to be gone): a crash.
    pub fn kill_control_plane(&mut self, replica: usize) {
        self.control_planes[replica].process.kill();
    }

    /// Starts control-plane `replica` again (after [`Stack::kill_control_plane`]) and waits
    /// until it is ready.
    pub async fn start_control_plane(&mut self, replica: usize) {
        self.restart_control_plane(replica).await;
    }

    /// Stops control-plane `replica` in its tracks (SIGSTOP): it holds its connections but
    /// reads nothing, as if cut off. [`Stack::resume_control_plane`] lets it go on.
    pub fn pause_control_plane(&self, replica: usize) {
        self.signal_control_plane(replica, libc::SIGSTOP);
    }

    pub fn resume_control_plane(&self, replica: usize) {
        self.signal_control_plane(replica, libc::SIGCONT);
    }

    fn signal_control_plane(&self, replica: usize, signal: libc::c_int) {
        let pid = self.control_planes[replica].process.pid().expect("running");
        // SAFETY: kill(2) on the PID of a child the harness has not reaped.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} to control-plane {replica}");
    }

    /// The folder of the stack's files (configs, logs, the embedded registry).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub async fn wait_ready(&self, url: &str) {
        self.wait_ready_within(url, READY_WITHIN).await;
    }

    async fn wait_ready_within(&self, url: &str, limit: Duration) {
        within(limit, &format!("{url} ready"), || async {
            self.client
                .get(url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The tier table file the control-plane was started with (see [`StackOptions::tiers`]).
    pub fn tiers_file(&self) -> std::path::PathBuf {
        self._dir.path().join("tiers.toml")
    }

    /// A URL on Envoy's public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.envoy_port)
    }

    /// `path` on every Envoy's public listener, the first Envoy's first.
    pub fn urls(&self, path: &str) -> Vec<String> {
        std::iter::once(self.envoy_port)
            .chain(self.more_envoys.iter().map(|edge| edge.port))
            .map(|port| format!("http://127.0.0.1:{port}{path}"))
            .collect()
    }

    /// A URL on the first control-plane's internal listener.
    pub fn internal_url(&self, path: &str) -> String {
        self.control_planes[0].internal_url(path)
    }

    /// Asks control-plane `replica` for a decision directly, as the filter would.
    pub async fn decide_via(&self, replica: usize, key: &str) -> reqwest::StatusCode {
        self.decision_via(replica, key).await.status()
    }

    /// The whole answer of control-plane `replica` to a decision request.
    pub async fn decision_via(&self, replica: usize, key: &str) -> reqwest::Response {
        self.client
            .post(self.control_planes[replica].internal_url("/v1/decision"))
            .header("x-tollgate-api-key", key)
            .header("x-tollgate-route", "ingest")
            .header("x-tollgate-cost", "1")
            .send()
            .await
            .expect("decision request")
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

    /// Sends `GET path` through Envoy with no key at all.
    pub async fn call_without_key(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request through Envoy")
    }

    /// Sends `count` requests `GET path` through Envoy with the key in `x-api-key`, `parallel`
    /// at a time; returns the status of each, in the order the answers came. Count them with
    /// [`crate::count`].
    pub async fn burst(
        &self,
        path: &str,
        key: &str,
        count: usize,
        parallel: usize,
    ) -> Vec<StatusCode> {
        let mut statuses = Vec::with_capacity(count);
        let mut in_flight = JoinSet::new();
        for _ in 0..count {
            if in_flight.len() == parallel {
                statuses.push(in_flight.join_next().await.unwrap().unwrap());
            }
            let request = self.client.get(self.url(path)).header("x-api-key", key);
            in_flight.spawn(async move { request.send().await.expect("request").status() });
        }
        while let Some(status) = in_flight.join_next().await {
            statuses.push(status.unwrap());
        }
        statuses
    }

    /// The tenant's usage: `GET /api/v1/usage` through Envoy with its key, parsed. Reading it
    /// costs no quota. Fails the test unless the answer is 200.
    pub async fn usage(&self, key: &str) -> Value {
        let response = self.call("/api/v1/usage", key).await;
        let status = response.status();
        let body = response.text().await.expect("usage body");
        assert_eq!(status, StatusCode::OK, "usage: {body}");
        serde_json::from_str(&body).expect("usage JSON")
    }

    /// Changes a tenant through the admin API (`PATCH /admin/v1/tenants/{id}` with `changes`,
    /// e.g. `{"suspended": true}` or `{"tier": "pro"}`); fails the test unless the change is
    /// accepted. Returns the changed record.
    pub async fn patch_tenant(&self, id: &str, changes: Value) -> Value {
        let path = format!("/admin/v1/tenants/{id}");
        let response = self
            .admin(reqwest::Method::PATCH, &path, Some(changes))
            .await;
        let status = response.status();
        let body = response.text().await.expect("tenant body");
        assert_eq!(status, StatusCode::OK, "PATCH {path}: {body}");
        serde_json::from_str(&body).expect("tenant JSON")
    }

    /// Revokes the tenant's first API key (the one it was created with) through the admin
    /// API; fails the test unless it is revoked.
    pub async fn revoke_first_key(&self, tenant: &Tenant) {
        let path = format!("/admin/v1/tenants/{}/keys", tenant.id);
        let keys: Value = self
            .admin(reqwest::Method::GET, &path, None)
            .await
            .json()
            .await
            .expect("keys JSON");
        let key_id = keys[0]["id"].as_str().expect("a key id");
        let path = format!("{path}/{key_id}");
        let response = self.admin(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "DELETE {path}");
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

    /// Waits until control-plane `replica` has the tenant in its cache (read through its own
    /// admin API, which costs no quota).
    pub async fn wait_until_known(&self, replica: usize, tenant_id: &str) {
        let url =
            self.control_planes[replica].internal_url(&format!("/admin/v1/tenants/{tenant_id}"));
        let what = format!("replica {replica} knows {tenant_id}");
        within(Duration::from_secs(1), &what, || async {
            let response = self.client.get(&url).bearer_auth(ADMIN_TOKEN).send().await;
            response.expect("admin").status() == 200
        })
        .await;
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

    /// Envoy's counters whose names contain `tollgate`, by name (as `/stats` shows them),
    /// summed over the stack's Envoys.
    pub async fn envoy_stats(&self) -> HashMap<String, u64> {
        let mut stats = self.envoy_stats_at(self.envoy_admin_port).await;
        for edge in &self.more_envoys {
            for (name, value) in self.envoy_stats_at(edge.admin_port).await {
                *stats.entry(name).or_default() += value;
            }
        }
        stats
    }

    /// The counters of the one Envoy whose admin listener is on `admin_port`.
    pub async fn envoy_stats_at(&self, admin_port: u16) -> HashMap<String, u64> {
        let url = format!("http://127.0.0.1:{admin_port}/stats?filter=tollgate");
        let text = self
            .client
            .get(url)
            .send()
            .await
            .expect("envoy /stats")
            .text()
            .await
            .expect("stats text");
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The control-planes' count of callouts received, all replicas together.
    pub async fn decision_requests(&self) -> u64 {
        let mut total = 0;
        for replica in 0..self.control_planes.len() {
            total += self
                .metric(replica, "tollgate_decision_requests_total")
                .await
                .unwrap_or_else(|| panic!("tollgate_decision_requests_total of replica {replica}"));
        }
        total
    }

    /// The `/metrics` text of control-plane `replica`.
    pub async fn metrics_text(&self, replica: usize) -> String {
        let url = self.control_planes[replica].internal_url("/metrics");
        let response = self.client.get(url).send().await.expect("metrics");
        response.text().await.expect("metrics text")
    }

    /// One sample of control-plane `replica`'s metrics, by its full name with labels, e.g.
    /// `tollgate_decisions_total{outcome="allow"}`.
    pub async fn metric(&self, replica: usize, sample: &str) -> Option<u64> {
        parse_sample(&self.metrics_text(replica).await, sample)
    }
}

/// The value of `sample` (name with labels) in Prometheus text.
pub fn parse_sample(text: &str, sample: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One control-plane process and how to start it again.
pub struct ControlPlane {
    pub process: Process,
    pub internal_port: u16,
    pub public_port: u16,
    name: String,
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
}

impl ControlPlane {
    fn spawn(name: &str, env: Vec<(&'static str, String)>, dir: &Path) -> ControlPlane {
        let port = |var: &str| {
            env.iter()
                .find(|(k, _)| *k == var)
                .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
                .expect("port")
        };
        ControlPlane {
            process: start_control_plane(name, &env, dir),
            internal_port: port("TOLLGATE_INTERNAL_ADDR"),
            public_port: port("TOLLGATE_PUBLIC_ADDR"),
            name: name.to_owned(),
            env,
            dir: dir.to_owned(),
        }
    }

    fn restart(&mut self) {
        self.process.kill();
        self.process = start_control_plane(&self.name, &self.env, &self.dir);
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.public_port)
    }

    /// A URL on the internal listener.
    pub fn internal_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.internal_port)
    }
}

fn start_control_plane(name: &str, env: &[(&'static str, String)], dir: &Path) -> Process {
    let mut command = Command::new(binaries_dir().join("tollgate-control-plane"));
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Process::spawn(name, command, dir)
}

/// Starts a one-worker Envoy `name` on `config` (its config and log files in `dir`, named
/// after it), logging at `log_level`: for tests of a config of their own, beside no stack.
pub fn spawn_envoy(name: &str, config: &Value, dir: &Path, log_level: &str) -> Process {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).expect("write envoy config");
    let mut envoy = Command::new(envoy_bin());
    envoy.arg("-c").arg(&path).args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        log_level,
    ]);
    Process::spawn(name, envoy, dir)
}

/// Starts Envoy `name` (its log and config files are named after it) on `config`: with two
/// workers, or with one under `under` (see [`StackOptions::envoy_under`]).
fn start_envoy(name: &str, config: &Value, dir: &Path, under: &[String]) -> Process {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).expect("write envoy config");
    let mut envoy = match under.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(envoy_bin());
            command
        }
        None => Command::new(envoy_bin()),
    };
    let workers = if under.is_empty() { "2" } else { "1" };
    envoy
        .arg("-c")
        .arg(&path)
        .args([
            "--concurrency",
            workers,
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ])
        .args(["--component-log-level", "wasm:info"]);
    Process::spawn(name, envoy, dir)
}
