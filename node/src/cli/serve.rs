//! `slidemesh serve`: run the node's HTTP API and web UI until SIGINT or SIGTERM.
//!
//! On start it sweeps leftovers of interrupted ingests, binds, writes `serve.json` (address
//! and pid, so tools can find the server) and prints `slidemesh serving http://ADDR` on
//! stdout. Shutdown stops accepting, lets in-flight requests finish, then removes
//! `serve.json`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tracing::{info, warn};

use crate::audit::AuditLog;
use crate::consent::PolicyHandle;
use crate::federation::{Federation, Handlers, PeerAddresses, tasks};
use crate::ingest::incoming::Incoming;
use crate::net::{NetConfig, Network};
use crate::store::cache::TileCache;

/// Fault injection for tests and the testnet: when set, tiles served to peers have a byte
/// flipped, so requesters must detect and bypass this node.
pub const CORRUPT_TILES_ENV: &str = "SLIDEMESH_FAULT_CORRUPT_TILES";

use crate::api::{self, ApiState};
use crate::context::NodeContext;
use crate::datadir::{DataDir, write_atomic};
use crate::store::reader::TileReader;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the HTTP API listens, overriding config.toml (port 0 picks a free port)
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<String>,
    /// libp2p listen address for peers, overriding config.toml (repeat for several)
    #[arg(long, value_name = "MULTIADDR")]
    p2p: Vec<String>,
    /// Where the DICOM C-STORE/C-ECHO receiver listens, overriding config.toml's
    /// dimse.listen (port 0 picks a free port)
    #[arg(long, value_name = "ADDR:PORT")]
    dimse: Option<String>,
    /// Dial a member trust at this address instead of its roster entry's, for this run,
    /// replacing config.toml's network.peer_addresses for that trust (repeat for several)
    #[arg(long, value_name = "TRUST=MULTIADDR")]
    peer_address: Vec<String>,
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
    let p2p = if args.p2p.is_empty() {
        node.config.network.listen.clone()
    } else {
        args.p2p.clone()
    };
    let p2p = p2p
        .iter()
        .map(|a| {
            a.parse::<libp2p::Multiaddr>()
                .with_context(|| format!("invalid p2p listen address {a:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let peer_addresses = peer_addresses(&node.config.network.peer_addresses, &args.peer_address)?;
    let dimse = args.dimse.clone();
    runtime.block_on(serve(node, addr, p2p, peer_addresses, dimse))
}

/// Where to dial member trusts instead of their roster addresses: config.toml's table, with
/// `--peer-address` flags replacing a trust's entry for this run.
fn peer_addresses(
    configured: &std::collections::BTreeMap<String, Vec<String>>,
    flags: &[String],
) -> Result<PeerAddresses> {
    let mut flagged: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for flag in flags {
        let (trust, addr) = flag.split_once('=').with_context(|| {
            format!(
                "--peer-address {flag:?}: expected TRUST=MULTIADDR, e.g. RAE=/ip4/10.0.0.2/tcp/7400"
            )
        })?;
        flagged
            .entry(trust.to_string())
            .or_default()
            .push(addr.to_string());
    }
    // A trust named by flags gets exactly the flagged addresses.
    let mut table = configured.clone();
    table.extend(flagged);
    table
        .into_iter()
        .map(|(trust, addrs)| {
            let code: slidemesh_protocol::TrustCode = trust
                .parse()
                .map_err(|e| anyhow::anyhow!("peer address for {trust:?}: {e}"))?;
            let addrs = addrs
                .iter()
                .map(|a| {
                    a.parse::<libp2p::Multiaddr>().with_context(|| {
                        format!("peer address for {trust}: invalid multiaddr {a:?}")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((code, addrs))
        })
        .collect()
}

async fn serve(
    node: NodeContext,
    addr: SocketAddr,
    p2p: Vec<libp2p::Multiaddr>,
    peer_addresses: PeerAddresses,
    dimse: Option<String>,
) -> Result<()> {
    let NodeContext {
        data,
        config,
        key,
        store,
        objects,
    } = node;
    let store = Arc::new(store);
    let cache = TileCache::open(&data.cache_dir(), config.network.cache_bytes)
        .with_context(|| format!("cannot open tile cache in {}", data.cache_dir().display()))?;
    let corrupt = std::env::var_os(CORRUPT_TILES_ENV).is_some();
    if corrupt {
        warn!(
            "{CORRUPT_TILES_ENV} is set: this node serves corrupted tiles to peers (fault injection)"
        );
    }
    let policy = PolicyHandle::load(data.policy_path()).with_context(|| {
        format!(
            "cannot start with the consent policy in {} (check it with `slidemesh policy check`)",
            data.policy_path().display()
        )
    })?;
    info!(hash = policy.current().hash(), "consent policy loaded");
    let audit = AuditLog::start(store.clone()).context("cannot start the audit log writer")?;
    let federation = Federation::new(
        store.clone(),
        config.node.trust.clone(),
        TileReader::new(objects.clone()),
        cache,
        Arc::new(policy),
        audit,
        Arc::new(data.load_key()?),
        corrupt,
    )?;
    let (network, network_task) = Network::start(
        &key,
        NetConfig {
            listen: p2p,
            warm_up_bytes: config.network.warm_up_bytes,
        },
        Arc::new(Handlers(federation.clone())),
    )
    .await?;
    for (trust, addrs) in &peer_addresses {
        info!(%trust, ?addrs, "dialling this member at configured addresses, not the roster's");
    }
    federation.attach_network(network.clone(), peer_addresses);
    let timings = tasks::Timings {
        consent_refresh: Duration::from_secs(config.network.consent_refresh_secs.max(1)),
        audit_checkpoint: Duration::from_secs(config.network.audit_checkpoint_secs.max(1)),
    };
    let background = tokio::spawn(tasks::run(federation.clone(), timings));

    let node_key = key.public();
    let incoming = Arc::new(Incoming::new(
        config.node.trust.clone(),
        key,
        store.clone(),
        objects.clone(),
        config.ingest.keep_originals,
        data.tmp_dir(),
    ));
    let mut state = ApiState::new(
        store,
        TileReader::new(objects),
        config.node.trust.clone(),
        config.node.trust_name.clone(),
        node_key,
        federation.clone(),
    );
    state.incoming = Some(incoming.clone());
    state.users = config.users.clone();
    let dimse_listen = dimse.unwrap_or_else(|| config.dimse.listen.clone());
    let dimse_bound = if dimse_listen.is_empty() {
        None
    } else {
        Some(crate::dimse::start(
            &config.dimse,
            &dimse_listen,
            incoming.clone(),
        )?)
    };
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another node using it?)"))?;
    let bound = listener.local_addr()?;
    let info_path = data.serve_info_path();
    let info = serde_json::json!({
        "http": format!("http://{bound}"),
        "pid": std::process::id(),
        "peer_id": network.local_peer_id().to_string(),
        "dimse": dimse_bound.map(|a| a.to_string()),
        "ae_title": config.dimse.ae_title,
    });
    write_atomic(&info_path, info.to_string().as_bytes())?;
    println!("slidemesh serving http://{bound}");
    info!(trust = %config.node.trust, %bound, peer_id = %network.local_peer_id(), "serving");
    let result = axum::serve(listener, api::router(state, &config.http.cors_origins))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed");
    background.abort();
    network.shutdown().await;
    let _ = network_task.await;
    // Batches cached since the last durable commit survive the restart.
    if let Err(e) = federation.cache.flush() {
        tracing::warn!(error = %e, "tile cache not flushed");
    }
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
