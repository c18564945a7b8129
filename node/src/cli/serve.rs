//! `slidemesh serve`: run the node's HTTP API and web UI until SIGINT or SIGTERM.
//!
//! Before binding anything it refuses settings that would let others act as the trust
//! (`NodeConfig::check_edge`: without sign-on, loopback only; the sign-on proxy's addresses
//! and secret; the OpenID provider and this node's client there; a DICOM caller allow-list),
//! loads the proxy's secret, discovers the OpenID provider (refusing to start when it cannot
//! be reached) and, with `[http] tls_cert` and `tls_key`, the certificate (HTTPS only,
//! reloaded when the files change).
//! Then it sweeps leftovers of interrupted ingests, binds, writes `serve.json` (address and
//! pid, so tools can find the server) and prints `slidemesh serving http(s)://ADDR` on
//! stdout. Shutdown stops accepting, lets in-flight requests finish, then removes
//! `serve.json`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tracing::{info, warn};

use crate::audit::AuditLog;
use crate::consent::PolicyHandle;
use crate::federation::{Faults, Federation, Handlers, PeerAddresses, tasks};
use crate::ingest::incoming::Incoming;
use crate::net::{NetConfig, Network};
use crate::store::cache::TileCache;

/// Fault injection for tests and the testnet: when set, tiles served to peers have a byte
/// flipped, so requesters must detect and bypass this node.
pub const CORRUPT_TILES_ENV: &str = "SLIDEMESH_FAULT_CORRUPT_TILES";
/// Fault injection for tests: when set, this node drops every revocation message unread
/// (delivered or announced), standing for a node that was down or cut off whenever one
/// travelled; it learns of revocations only from the owners' consent statements.
pub const DROP_REVOCATIONS_ENV: &str = "SLIDEMESH_FAULT_DROP_REVOCATIONS";

use crate::api::oidc::{Oidc, Settings as OidcSettings};
use crate::api::requester::ProxyTrust;
use crate::api::tls::TlsFiles;
use crate::api::{self, ApiState};
use crate::config::{self, UsersFrom, UsersSection};
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
    let dimse = args
        .dimse
        .clone()
        .unwrap_or_else(|| node.config.dimse.listen.clone());
    let dimse_addrs: Vec<SocketAddr> = if dimse.is_empty() {
        Vec::new()
    } else {
        dimse
            .to_socket_addrs()
            .with_context(|| {
                format!("invalid DICOM address {dimse:?}: expected ADDR:PORT, e.g. 127.0.0.1:11112")
            })?
            .collect()
    };
    node.config.check_edge(addr, &dimse_addrs)?;
    let proxy = proxy_trust(&node.data, &node.config.users)?;
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
    let tls = (!node.config.http.tls_cert.is_empty()).then(|| TlsFiles {
        cert: config::in_data_dir(node.data.root(), &node.config.http.tls_cert),
        key: config::in_data_dir(node.data.root(), &node.config.http.tls_key),
    });
    let oidc = runtime.block_on(oidc_sign_on(&node.data, &node.config.users, tls.is_some()))?;
    let edge = Edge {
        http: addr,
        dimse: (!dimse.is_empty()).then_some(dimse),
        proxy,
        oidc,
        tls,
    };
    runtime.block_on(serve(node, edge, p2p, peer_addresses))
}

/// Where and how users reach the node, checked before anything is bound.
struct Edge {
    http: SocketAddr,
    /// The DICOM receiver's address, if any.
    dimse: Option<String>,
    /// With `[users] from = "proxy"`: how the sign-on proxy is recognised.
    proxy: Option<ProxyTrust>,
    /// With `[users] from = "oidc"`: the discovered OpenID provider and its sessions.
    oidc: Option<Oidc>,
    /// With `[http] tls_cert` and `tls_key`: HTTPS only.
    tls: Option<TlsFiles>,
}

/// The sign-on proxy's addresses and secret, with `[users] from = "proxy"`.
fn proxy_trust(data: &DataDir, users: &UsersSection) -> Result<Option<ProxyTrust>> {
    if users.from != UsersFrom::Proxy {
        return Ok(None);
    }
    let networks = config::proxy_networks(&users.proxy_addresses)?;
    let path = config::in_data_dir(data.root(), &users.proxy_secret_file);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read [users] proxy_secret_file {} (the secret the sign-on proxy sends)",
            path.display()
        )
    })?;
    let secret = text.trim_ascii();
    if secret.len() < MIN_PROXY_SECRET {
        bail!(
            "[users] proxy_secret_file {}: the secret has {} bytes, fewer than {MIN_PROXY_SECRET}; \
             make a longer one, e.g. `head -c 32 /dev/urandom | base64 > {}`",
            path.display(),
            secret.len(),
            path.display()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(
            path = %path.display(),
            "the sign-on proxy's secret is readable by other users (chmod 600 it)"
        );
    }
    ProxyTrust::new(networks, secret, &users.proxy_secret_header)
        .map(Some)
        .map_err(|e| anyhow!("[users] proxy_secret_header: {e}"))
}

/// Fewer bytes than this could be guessed.
const MIN_PROXY_SECRET: usize = 16;

/// With `[users] from = "oidc"`: the client secret read, the provider discovered (an
/// unreachable provider refuses to start, saying which). `tls`: the node serves HTTPS.
async fn oidc_sign_on(data: &DataDir, users: &UsersSection, tls: bool) -> Result<Option<Oidc>> {
    if users.from != UsersFrom::Oidc {
        return Ok(None);
    }
    let secret = if users.oidc_client_secret_file.trim().is_empty() {
        None
    } else {
        let path = config::in_data_dir(data.root(), users.oidc_client_secret_file.trim());
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read [users] oidc_client_secret_file {} (this node's client secret at \
                 the OpenID provider)",
                path.display()
            )
        })?;
        let secret = text.trim();
        if secret.is_empty() {
            bail!(
                "[users] oidc_client_secret_file {} is empty; put the client secret the provider \
                 issued in it, or leave oidc_client_secret_file empty for a public client",
                path.display()
            );
        }
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn!(
                path = %path.display(),
                "the OpenID client secret is readable by other users (chmod 600 it)"
            );
        }
        Some(secret.to_string())
    };
    let ca_file = (!users.oidc_ca_file.trim().is_empty())
        .then(|| config::in_data_dir(data.root(), users.oidc_ca_file.trim()));
    let settings = OidcSettings::new(users, secret, tls);
    Oidc::discover(settings, ca_file.as_deref()).await.map(Some)
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
    edge: Edge,
    p2p: Vec<libp2p::Multiaddr>,
    peer_addresses: PeerAddresses,
) -> Result<()> {
    let Edge {
        http: addr,
        dimse,
        proxy,
        oidc,
        tls,
    } = edge;
    // A certificate that does not load refuses to start, before anything else runs.
    let tls = match tls {
        None => None,
        Some(files) => {
            let config = files.load().await?;
            Some((files, config))
        }
    };
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
    let faults = Faults {
        corrupt_tiles: std::env::var_os(CORRUPT_TILES_ENV).is_some(),
        drop_revocations: std::env::var_os(DROP_REVOCATIONS_ENV).is_some(),
    };
    if faults.corrupt_tiles {
        warn!(
            "{CORRUPT_TILES_ENV} is set: this node serves corrupted tiles to peers (fault injection)"
        );
    }
    if faults.drop_revocations {
        warn!(
            "{DROP_REVOCATIONS_ENV} is set: this node drops every revocation message unread (fault injection)"
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
        faults,
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
    state.proxy = proxy;
    state.oidc = oidc.map(Arc::new);
    let dimse_bound = match &dimse {
        None => None,
        Some(listen) => Some(crate::dimse::start(
            &config.dimse,
            listen,
            incoming.clone(),
        )?),
    };
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another node using it?)"))?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let info_path = data.serve_info_path();
    let info = serde_json::json!({
        "http": format!("{scheme}://{bound}"),
        "pid": std::process::id(),
        "peer_id": network.local_peer_id().to_string(),
        "dimse": dimse_bound.map(|a| a.to_string()),
        "ae_title": config.dimse.ae_title,
    });
    write_atomic(&info_path, info.to_string().as_bytes())?;
    println!("slidemesh serving {scheme}://{bound}");
    info!(trust = %config.node.trust, %bound, scheme, peer_id = %network.local_peer_id(), "serving");
    let app = api::router(state, &config.http.cors_origins, tls.is_some())
        .into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTP server failed"),
        Some((files, tls_config)) => {
            let watcher = files.watch(tls_config.clone());
            let handle = axum_server::Handle::new();
            let stopping = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                stopping.graceful_shutdown(Some(SHUTDOWN_GRACE));
            });
            let served = async {
                axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, tls_config)?
                    .handle(handle)
                    .serve(app)
                    .await
            }
            .await
            .context("HTTPS server failed");
            watcher.abort();
            served
        }
    };
    // Drain: background loops stopped, the network shut, then every audit entry the node
    // queued is on disk before it exits (received accesses are recorded without waiting).
    background.abort();
    let _ = background.await;
    network.shutdown().await;
    let _ = network_task.await;
    let audit = federation.audit.clone();
    let drained = tokio::task::spawn_blocking(move || audit.flush(AUDIT_DRAIN))
        .await
        .unwrap_or(false);
    if !drained {
        warn!("audit entries queued at shutdown were not all written within {AUDIT_DRAIN:?}");
    }
    // Batches cached since the last durable commit survive the restart.
    if let Err(e) = federation.cache.flush() {
        tracing::warn!(error = %e, "tile cache not flushed");
    }
    let _ = std::fs::remove_file(&info_path);
    info!("stopped");
    result
}

/// How long shutdown waits for queued audit entries to reach the disk.
const AUDIT_DRAIN: Duration = Duration::from_secs(10);

/// How long HTTPS connections may take to finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
