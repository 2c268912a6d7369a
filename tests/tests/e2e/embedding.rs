//! The API USAGE panel embedded in other sites exactly as the README shows, each served from
//! an origin of its own that the control-plane lists in `TOLLGATE_CORS_ORIGINS`: the Angular
//! example (`examples/angular`, the production build `make examples` makes) and the plain
//! HTML example (`examples/html`), served by [`ExampleSite`] and driven in Debian's headless
//! Chromium by `tests/browser/embedding-*.mjs`, which leave screenshots in
//! `tests/artifacts/embedding-*.png`. And the npm package (`packages/tollgate-usage`) ships
//! the very file the control-plane serves, with a manifest and types that describe it.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use tollgate_e2e::{Stack, StackOptions, Tenant, workspace};

/// The control-plane's URL as the examples are written (their production deployment);
/// [`ExampleSite`] serves them with the test stack's Envoy URL instead, as a deployment step
/// would.
const PRODUCTION_API: &str = "https://api.example.com";

fn angular_dist() -> PathBuf {
    workspace().join("examples/angular/dist/tollgate-angular-example/browser")
}

fn artifacts() -> PathBuf {
    let dir = workspace().join("tests/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// A static web server for the examples on a loopback port of its own (so another origin than
/// Envoy's): the Angular build at `/` (and at `/late/` without the panel's script tag), the
/// HTML example at `/html/`, and `session.json` (the stand-in for the dashboard backend that
/// knows the signed-in user's key) at either. Stopped when dropped.
struct ExampleSite {
    origin: String,
    server: JoinHandle<()>,
}

struct Site {
    api: String,
    key: String,
}

impl ExampleSite {
    /// The port first: the stack must know the origin before it starts.
    async fn bind() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the example site");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        (listener, origin)
    }

    fn serve(listener: TcpListener, api: String, key: String) -> ExampleSite {
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        let app = Router::new()
            .fallback(serve_file)
            .with_state(Arc::new(Site { api, key }));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("example site");
        });
        ExampleSite { origin, server }
    }
}

impl Drop for ExampleSite {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_file(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    let no_store = (header::CACHE_CONTROL, "no-store");
    let path = uri.path();
    if path.ends_with("/session.json") {
        let session = json!({ "tollgateKey": site.key });
        return ([no_store], axum::Json(session)).into_response();
    }
    if path == "/favicon.ico" {
        return StatusCode::NO_CONTENT.into_response();
    }
    if path == "/late/" {
        // The Angular build without the panel's script tag: the browser test loads the script
        // itself once Angular has bound the key (a document the test fulfilled itself would be
        // of no address space, and Chromium would not let it reach the loopback API).
        let index = std::fs::read_to_string(angular_dist().join("index.html")).expect("index.html");
        let tag = index
            .lines()
            .find(|line| line.contains("tollgate-usage.js"))
            .expect("the script tag in index.html");
        let html = index.replace(tag, "");
        return ([no_store], axum::response::Html(html)).into_response();
    }
    let (root, relative) = match path.strip_prefix("/html/") {
        Some(rest) => (workspace().join("examples/html"), rest),
        None => (angular_dist(), path.trim_start_matches('/')),
    };
    let relative = Path::new(if relative.is_empty() {
        "index.html"
    } else {
        relative
    });
    if !relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = root.join(relative);
    let Ok(bytes) = std::fs::read(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("ico") => "image/x-icon",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let body = if kind.starts_with("text/") {
        String::from_utf8_lossy(&bytes)
            .replace(PRODUCTION_API, &site.api)
            .into_bytes()
    } else {
        bytes
    };
    ([(header::CONTENT_TYPE, kind), no_store], body).into_response()
}

/// A stack that lets the example site's origin load the panel and poll usage, a `standard`
/// tenant that has made `requests` calls through Envoy, and the site serving its key.
async fn stack_with_site(requests: usize) -> (Stack, Tenant, ExampleSite) {
    let (listener, origin) = ExampleSite::bind().await;
    // Leases off: the panel must read exactly the calls made (a lease's units count as used
    // until handed back; leases.rs covers leases).
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_CORS_ORIGINS", &origin)
        .filter("lease", json!({"enabled": false}));
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;
    for _ in 0..requests {
        let status = stack.call("/api/v1/ingest", &tenant.key).await.status();
        assert_eq!(status, 200);
    }
    let site = ExampleSite::serve(listener, stack.url(""), tenant.key.clone());
    (stack, tenant, site)
}

/// Runs a browser script to its end, off the runtime (the example site runs on it); returns
/// its output.
async fn drive_browser(script: &'static str, env: Vec<(&'static str, String)>) -> String {
    tokio::task::spawn_blocking(move || tollgate_e2e::drive_browser(script, &env))
        .await
        .expect("browser driver")
}

/// Removes the screenshots a run is about to take, so that only fresh ones count.
fn fresh_screenshots(names: &[&str]) -> Vec<PathBuf> {
    let dir = artifacts();
    names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            path
        })
        .collect()
}

// Two threads: the example site answers while the browser is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_angular_example_embeds_the_panel_from_another_origin() {
    let dist = angular_dist();
    assert!(
        dist.join("index.html").exists(),
        "no Angular build in {}: run `make examples` (`make test` does)",
        dist.display()
    );
    let (stack, tenant, site) = stack_with_site(3).await;
    let screenshots = fresh_screenshots(&[
        "embedding-angular.png",
        "embedding-angular-dark.png",
        "embedding-angular-unauthorized.png",
    ]);
    let env = vec![
        ("APP_URL", format!("{}/", site.origin)),
        ("ENVOY_URL", stack.url("")),
        ("API_KEY", tenant.key.clone()),
        ("ARTIFACTS", artifacts().display().to_string()),
    ];
    let output = drive_browser("embedding-angular.mjs", env).await;
    assert!(output.contains("angular: ok"), "{output}");
    for screenshot in screenshots {
        assert!(screenshot.exists(), "no {}", screenshot.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_html_example_embeds_the_panel_from_another_origin() {
    let (stack, tenant, site) = stack_with_site(2).await;
    let screenshots = fresh_screenshots(&["embedding-html.png", "embedding-html-dark.png"]);
    let env = vec![
        ("PAGE_URL", format!("{}/html/", site.origin)),
        ("ENVOY_URL", stack.url("")),
        ("API_KEY", tenant.key.clone()),
        ("ARTIFACTS", artifacts().display().to_string()),
    ];
    let output = drive_browser("embedding-html.mjs", env).await;
    assert!(output.contains("html: ok"), "{output}");
    for screenshot in screenshots {
        assert!(screenshot.exists(), "no {}", screenshot.display());
    }
}

/// The quoted values that follow `marker` in `text` (e.g. every `part: "…"`).
fn quoted_after(text: &str, marker: &str) -> BTreeSet<String> {
    text.split(marker)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .flat_map(|value| value.split_whitespace().map(str::to_owned))
        .collect()
}

/// The names of a manifest list (`cssParts`, `cssProperties`, `events`, `attributes`).
fn manifest_names(declaration: &Value, list: &str) -> BTreeSet<String> {
    declaration[list]
        .as_array()
        .unwrap_or_else(|| panic!("custom-elements.json: no {list}"))
        .iter()
        .map(|item| item["name"].as_str().expect("name").to_owned())
        .collect()
}

/// A file of the repository, as text.
fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn the_package_ships_the_component_the_control_plane_serves() {
    // One file: the control-plane compiles in the package's own.
    let source = read("packages/tollgate-usage/tollgate-usage.js");

    // Served through Envoy: those bytes, loadable as a module script from a listed origin
    // (CORS), revalidated cheaply (ETag).
    let dashboard = "https://dashboard.example.com";
    let options = StackOptions::default().control_plane_env("TOLLGATE_CORS_ORIGINS", dashboard);
    let stack = Stack::start(options).await;
    let get = |origin: &'static str| {
        stack
            .client()
            .get(stack.url("/ui/tollgate-usage.js"))
            .header("origin", origin)
            .send()
    };
    let served = get(dashboard).await.expect("GET /ui/tollgate-usage.js");
    assert_eq!(served.status(), 200);
    let headers = served.headers().clone();
    assert_eq!(headers["access-control-allow-origin"], dashboard);
    let etag = headers.get("etag").expect("an ETag").clone();
    assert!(served.text().await.unwrap() == source, "served != source");
    let revalidated = stack
        .client()
        .get(stack.url("/ui/tollgate-usage.js"))
        .header("origin", dashboard)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    let other = get("https://elsewhere.example.net").await.unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "an unlisted origin may load the script"
    );

    // `npm pack --dry-run` (offline): the package holds exactly its five files.
    let package_dir = workspace().join("packages/tollgate-usage");
    let pack = Command::new("npm")
        .args([
            "pack",
            "--dry-run",
            "--json",
            "--offline",
            "--ignore-scripts",
        ])
        .current_dir(&package_dir)
        .output()
        .expect("run npm pack");
    assert!(
        pack.status.success(),
        "npm pack: {}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let packed: Value = serde_json::from_slice(&pack.stdout).expect("npm pack --json");
    let files: BTreeSet<&str> = packed[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let expected = [
        "README.md",
        "custom-elements.json",
        "package.json",
        "tollgate-usage.d.ts",
        "tollgate-usage.js",
    ];
    assert_eq!(files, expected.into_iter().collect());
    let package: Value =
        serde_json::from_str(&read("packages/tollgate-usage/package.json")).expect("package.json");
    assert_eq!(package["type"], "module");
    assert_eq!(package["exports"]["."]["default"], "./tollgate-usage.js");
    assert_eq!(package["exports"]["."]["types"], "./tollgate-usage.d.ts");
    assert_eq!(package["customElements"], "custom-elements.json");

    // The manifest describes the element as the source builds it.
    let manifest: Value =
        serde_json::from_str(&read("packages/tollgate-usage/custom-elements.json"))
            .expect("custom-elements.json");
    let element = &manifest["modules"][0]["declarations"][0];
    assert_eq!(element["tagName"], "tollgate-usage");
    assert_eq!(
        manifest_names(element, "cssParts"),
        quoted_after(&source, "part: \""),
        "::part names"
    );
    // Custom properties: written out in the styles, or a palette colour (`--tollgate-NAME`).
    let palette = source
        .split("const LIGHT = {")
        .nth(1)
        .and_then(|rest| rest.split("};").next())
        .expect("the LIGHT palette");
    let mut properties: BTreeSet<String> = palette
        .split(',')
        .filter_map(|entry| entry.split(':').next())
        .map(|name| name.trim().trim_matches('"'))
        .filter(|name| !name.is_empty())
        .map(|name| format!("--tollgate-{name}"))
        .collect();
    properties.extend(
        source
            .split("var(--tollgate-")
            .skip(1)
            .filter_map(|rest| rest.split([',', ')']).next())
            .filter(|name| !name.contains('$'))
            .map(|name| format!("--tollgate-{name}")),
    );
    assert_eq!(
        manifest_names(element, "cssProperties"),
        properties,
        "CSS custom properties"
    );
    let types = read("packages/tollgate-usage/tollgate-usage.d.ts");
    for event in manifest_names(element, "events") {
        assert!(
            source.contains(&format!("\"{event}\"")),
            "{event} in the source"
        );
        assert!(
            types.contains(&format!("\"{event}\"")),
            "{event} in the types"
        );
    }
    for attribute in manifest_names(element, "attributes") {
        assert!(
            source.contains(&attribute),
            "attribute {attribute} in the source"
        );
    }
}

/// The README's embedding snippets are the tested examples, whole.
#[test]
fn the_readme_shows_the_tested_examples() {
    let readme = read("README.md");
    for example in [
        "examples/html/index.html",
        "examples/html/app.js",
        "examples/angular/src/index.html",
        "examples/angular/src/app/app.ts",
        "examples/angular/src/app/app.html",
    ] {
        let source = read(example);
        let fenced = format!("\n{}\n```", source.trim_end());
        assert!(
            readme.contains(&fenced),
            "README.md must show {example} as it is"
        );
    }
}
