//! The built `tollgate` binary against a running stack (control-plane, Envoy), and `tollgate
//! check` on the shipped and on broken configuration files.
//!
//! Setup: the stack's control-plane, with the CLI pointed at its listeners through
//! `TOLLGATE_ADMIN_URL`, `TOLLGATE_PUBLIC_URL` and `TOLLGATE_ADMIN_TOKEN`, as an operator
//! would. Expected: `tiers` shows the table in force, also after a ConfigMap-style update;
//! `tenant list` pages through every tenant in JSON and in a table; failures are one line
//! on stderr with exit 1 (refused, problems found) or 2 (unreachable). Over HTTPS (a real
//! Envoy terminating TLS with a certificate from a test CA made by `openssl`), `tiers` works
//! when the CA is trusted (`SSL_CERT_FILE`, which the system trust store honours) and fails
//! in one line when it is not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tollgate_e2e::stack::spawn_envoy;
use tollgate_e2e::{Process, Stack, StackOptions, binaries_dir, free_port, within, workspace};

/// A table with a tier no other test uses, so its row is unmistakably this table's.
const TIERS: &str = r#"
default_tier = "standard"
[tiers.standard]
limit = 60
window_seconds = 60
[tiers.gold]
limit = 500
window_seconds = 60
paid = true
display_price = "$99 / month"
"#;

fn tollgate(stack: &Stack, args: &[&str]) -> Output {
    Command::new(binaries_dir().join("tollgate"))
        .args(args)
        .env("TOLLGATE_ADMIN_URL", stack.internal_url(""))
        .env("TOLLGATE_PUBLIC_URL", stack.control_planes[0].url(""))
        .env("TOLLGATE_ADMIN_TOKEN", tollgate_e2e::stack::ADMIN_TOKEN)
        .env_remove("TOLLGATE_API_KEY_HEADER")
        .output()
        .expect("run the tollgate CLI; `make test` builds it")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A command that succeeded, its stdout as JSON.
fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

/// A failure: its exit code and its one stderr line.
fn failure(output: &Output) -> (i32, String) {
    let text = stderr(output);
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    assert!(text.starts_with("error: "), "{text}");
    (output.status.code().expect("exit code"), text)
}

/// The tier named `name` in a `tollgate tiers` JSON answer.
fn tier<'a>(tiers: &'a Value, name: &str) -> &'a Value {
    tiers
        .as_array()
        .and_then(|tiers| tiers.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no tier {name} in {tiers}"))
}

#[tokio::test]
async fn tiers_and_the_tenant_list_come_as_json_or_as_a_table() {
    let stack = Stack::start(StackOptions::default().tiers(TIERS)).await;

    let tiers = json(&tollgate(&stack, &["tiers", "--output", "json"]));
    assert_eq!(tier(&tiers, "gold")["limit"], 500);
    assert_eq!(tier(&tiers, "standard")["limit"], 60);
    assert_eq!(
        json(&tollgate(&stack, &["tiers"])),
        tiers,
        "JSON by default when stdout is not a terminal"
    );
    let table = stdout(&tollgate(&stack, &["tiers", "--output", "table"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{table}");
    assert!(lines[0].contains("LIMIT"), "{table}");
    let gold = lines
        .iter()
        .find(|l| l.starts_with("gold "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        gold.contains(" 500 ") && gold.contains("$99 / month"),
        "{gold}"
    );
    assert_eq!(lines.len(), 3, "a header and two tiers: {table}");

    // Five tenants, listed two a page: every one, once, in both formats.
    let mut created = Vec::new();
    for index in 0..5 {
        let name = format!("cli-{index}");
        let tenant = json(&tollgate(
            &stack,
            &["tenant", "create", "--name", &name, "--tier", "gold"],
        ));
        assert!(
            tenant["api_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("tg_")),
            "{tenant}"
        );
        created.push(tenant["id"].as_str().expect("id").to_owned());
    }
    let listed = json(&tollgate(
        &stack,
        &["tenant", "list", "--page-size", "2", "--output", "json"],
    ));
    let mut ids: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = created.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    let output = tollgate(
        &stack,
        &["tenant", "list", "--page-size", "2", "--output", "table"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID "), "{table}");
    assert!(lines[0].contains("NAME"), "{table}");
    assert_eq!(lines.len(), 1 + created.len(), "{table}");
    for id in &created {
        let row = lines
            .iter()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not in\n{table}"));
        assert!(row.contains("gold"), "{row}");
    }

    // Failures: the API's refusal (exit 1), and nobody listening (exit 2).
    let (code, line) = failure(&tollgate(&stack, &["tenant", "show", "tn_nobody"]));
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("not_found"), "{line}");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, line) = failure(&tollgate(
        &stack,
        &["tenant", "list", "--url", &nowhere, "--timeout", "5s"],
    ));
    assert_eq!(code, 2, "{line}");
    assert_eq!(
        line,
        format!(
            "error: cannot reach {nowhere}: cannot connect: Connection refused (os error 111)\n"
        )
    );
}

/// Writes `text` as a new `..<version>` directory's `tiers.toml` under `dir` and points the
/// `..data` symlink at it, replacing the old link in one rename: what the kubelet does to
/// a ConfigMap volume.
fn publish_config_map(dir: &Path, version: &str, text: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).expect("version dir");
    std::fs::write(data.join("tiers.toml"), text).expect("tiers.toml");
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &staged).expect("symlink");
    std::fs::rename(&staged, dir.join("..data")).expect("swap ..data");
}

#[tokio::test]
async fn a_tier_config_map_updated_by_symlink_swap_is_reloaded() {
    let volume = TempDir::new().expect("tempdir");
    publish_config_map(volume.path(), "2026_12_01_00_00_00.1", TIERS);
    // The file the pod reads is a link through `..data`, as in a ConfigMap volume.
    let tiers_file: PathBuf = volume.path().join("tiers.toml");
    std::os::unix::fs::symlink("..data/tiers.toml", &tiers_file).expect("symlink");
    let stack = Stack::start(
        StackOptions::default()
            .control_plane_env("TOLLGATE_TIERS", &tiers_file.display().to_string())
            .control_plane_env("TOLLGATE_TIERS_POLL_MS", "100"),
    )
    .await;
    let limit = || {
        let tiers = json(&tollgate(&stack, &["tiers", "--output", "json"]));
        tier(&tiers, "gold")["limit"].clone()
    };
    assert_eq!(limit(), 500);

    publish_config_map(
        volume.path(),
        "2026_12_01_00_01_00.2",
        &TIERS.replace("limit = 500", "limit = 750"),
    );
    // The kubelet removes the old version once the link has moved.
    std::fs::remove_dir_all(volume.path().join("..2026_12_01_00_00_00.1")).expect("rm old");
    within(
        Duration::from_secs(20),
        "the new table in force",
        || async { limit() == 750 },
    )
    .await;
}

#[test]
fn check_passes_the_shipped_files_and_names_what_is_broken() {
    let check = |tiers: &Path, filter: &Path, extra: &[&str]| {
        Command::new(binaries_dir().join("tollgate"))
            .arg("check")
            .arg("--tiers")
            .arg(tiers)
            .arg("--filter-config")
            .arg(filter)
            .args(extra)
            .env_remove("TOLLGATE_API_KEY_HEADER")
            .output()
            .expect("run the tollgate CLI; `make test` builds it")
    };
    let root = workspace();
    let example = root.join("control-plane/tiers.example.toml");
    let envoy = root.join("envoy/envoy.yaml");
    let istio = root.join("envoy/istio");

    let output = check(&example, &envoy, &["--output", "table"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("ok: 2 tier(s) (pro, standard), 2 route(s) (ingest, predict)")
    );
    // The Istio ConfigMap against the WasmPlugin that ships beside it.
    let summary = json(&check(
        &istio.join("tiers.yaml"),
        &istio.join("wasmplugin.yaml"),
        &["--output", "json"],
    ));
    assert_eq!(summary["routes"], serde_json::json!(["ingest", "predict"]));

    let dir = TempDir::new().expect("tempdir");
    let broken = dir.path().join("tiers.toml");
    let text = std::fs::read_to_string(&example).expect("example");
    std::fs::write(&broken, text.replace("predict = 2", "predikt = 2")).expect("write");
    let (code, line) = failure(&check(&broken, &envoy, &[]));
    assert_eq!(code, 1);
    assert!(
        line.contains("tier \"pro\" prices route \"predikt\", which")
            && line.contains("(its routes: ingest, predict)"),
        "{line}"
    );

    let (code, line) = failure(&check(&example, &envoy, &["--api-key-header", "x-key"]));
    assert_eq!(code, 1);
    assert!(
        line.contains(
            "the filter reads API keys from header \"x-api-key\", the control-plane from \"x-key\""
        ),
        "{line}"
    );

    // Both files invalid: one line each.
    std::fs::write(
        &broken,
        "default_tier = \"gold\"\n[tiers.standard]\nlimit = 1\n",
    )
    .expect("write");
    let bad_filter = dir.path().join("filter.json");
    std::fs::write(
        &bad_filter,
        r#"{"control_plane":{"cluster":"cp"},"routes":"all"}"#,
    )
    .expect("write");
    let output = check(&broken, &bad_filter, &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("error: {}: ", broken.display())),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "error: {}: the filter refuses it: ",
            bad_filter.display()
        )),
        "{text}"
    );
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        stderr(&output)
    );
}

/// A test CA (`ca.pem`) and a certificate for localhost and 127.0.0.1 it signed (`leaf.pem`,
/// `leaf.key`), in `dir`.
fn test_certificates(dir: &Path) {
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &p256,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tollgate test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat();
    openssl(dir, &ca);
    let request = [
        &["req"][..],
        &p256,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat();
    openssl(dir, &request);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("leaf.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// An Envoy terminating TLS on `port` in front of `upstream_port` (plain HTTP).
fn tls_envoy(dir: &Path, port: u16, upstream_port: u16) -> Process {
    let file = |name: &str| dir.join(name).display().to_string();
    let config = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
        "static_resources": {
            "listeners": [{
                "name": "tls",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {"tls_certificates": [{
                                "certificate_chain": {"filename": file("leaf.pem")},
                                "private_key": {"filename": file("leaf.key")}
                            }]}
                        }
                    },
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "tls",
                            "route_config": {"virtual_hosts": [{
                                "name": "all",
                                "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "control_plane"}}]
                            }]},
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                            }]
                        }
                    }]
                }]
            }],
            "clusters": [{
                "name": "control_plane",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "control_plane", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
                }]}]}
            }]
        }
    });
    spawn_envoy("envoy-tls", &config, dir, "warn")
}

#[tokio::test]
async fn tiers_over_https_needs_a_trusted_certificate_and_says_so_when_not() {
    let stack = Stack::start(StackOptions::default().tiers(TIERS)).await;
    let dir = TempDir::new().expect("tempdir");
    test_certificates(dir.path());
    let port = free_port();
    let _envoy = tls_envoy(dir.path(), port, stack.control_planes[0].public_port);
    let url = format!("https://localhost:{port}");
    let tiers_over_tls = |trusted: &Path| {
        Command::new(binaries_dir().join("tollgate"))
            .args(["tiers", "--output", "json", "--public-url", &url])
            .env("SSL_CERT_FILE", trusted)
            .env_remove("SSL_CERT_DIR")
            .output()
            .expect("run the tollgate CLI")
    };
    let trusted = dir.path().join("ca.pem");
    within(Duration::from_secs(20), "Envoy serving TLS", || async {
        tiers_over_tls(&trusted).status.success()
    })
    .await;
    let tiers = json(&tiers_over_tls(&trusted));
    assert_eq!(tier(&tiers, "gold")["limit"], 500);

    // Trusting only another CA: the certificate is refused, in one line, exit 2.
    let other = TempDir::new().expect("tempdir");
    test_certificates(other.path());
    let (code, line) = failure(&tiers_over_tls(&other.path().join("ca.pem")));
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(&format!("error: cannot reach {url}: cannot connect: ")),
        "{line}"
    );
    assert!(line.contains("certificate"), "{line}");
}
