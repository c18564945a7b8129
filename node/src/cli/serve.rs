//! `slidemesh serve`: run the node's HTTP API and web UI until SIGINT or SIGTERM.
//!
//! On start it sweeps leftovers of interrupted ingests, binds, writes `serve.json` (address
//! and pid, so tools can find the server) and prints `slidemesh serving http://ADDR` on
//! stdout. Shutdown stops accepting, lets in-flight requests finish, then removes
//! `serve.json`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tracing::info;

use crate::api::{self, ApiState};
use crate::context::NodeContext;
use crate::datadir::{DataDir, write_atomic};
use crate::store::reader::TileReader;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the HTTP API listens, overriding config.toml (port 0 picks a free port)
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<String>,
}

pub fn run(data: DataDir, args: ServeArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let listen = args
        .http
        .clone()
        .unwrap_or_else(|| node.config.http.listen.clone());
    let addr: SocketAddr = listen.parse().with_context(|| {
        format!("invalid HTTP address {listen:?}: expected ADDR:PORT, e.g. 127.0.0.1:8080")
    })?;
    node.sweep()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(node, addr))
}

async fn serve(node: NodeContext, addr: SocketAddr) -> Result<()> {
    let NodeContext {
        data,
        config,
        key,
        store,
        objects,
    } = node;
    let state = Arc::new(ApiState::new(
        Arc::new(store),
        TileReader::new(objects),
        config.node.trust.clone(),
        config.node.trust_name.clone(),
        key.public(),
    ));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another node using it?)"))?;
    let bound = listener.local_addr()?;
    let info_path = data.serve_info_path();
    let info = serde_json::json!({ "http": format!("http://{bound}"), "pid": std::process::id() });
    write_atomic(&info_path, info.to_string().as_bytes())?;
    println!("slidemesh serving http://{bound}");
    info!(trust = %config.node.trust, %bound, "serving");
    let result = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed");
    let _ = std::fs::remove_file(&info_path);
    info!("stopped");
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
