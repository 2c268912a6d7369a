//! The demo upstream: stands in for the platform's API (`/api/v1/ingest`, `/api/v1/predict`)
//! in `make run` and the end-to-end tests. It answers every request with JSON saying what
//! identity reached it, which is what the tests check (a spoofed `x-tenant-id` must never
//! arrive) and what a new user sees in the quickstart.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::Request;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "tollgate-demo-upstream", about)]
struct Args {
    #[arg(long, env = "DEMO_UPSTREAM_ADDR", default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
}

async fn echo(request: Request) -> Json<Value> {
    let header = |name: &str| {
        let values: Vec<&str> = request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        match values.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        }
    };
    Json(json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "tenant_id": header("x-tenant-id"),
        "tier": header("x-tollgate-tier"),
        "unchecked": header("x-tollgate-unchecked"),
    }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("demo upstream listening on {}", args.addr);
    let app = axum::Router::new().fallback(echo);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
