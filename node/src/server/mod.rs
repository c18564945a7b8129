//! The running node: every service `slidemesh serve` runs (HTTP API and web UI, the DICOM
//! receiver, the libp2p network and what answers peers, the background loops, the audit
//! writer), started in-process by [`start`] and stopped by [`RunningNode::stop`] with a
//! graceful drain. [`run`] does both around a shutdown future. `slidemesh serve` builds
//! the [`Settings`] from config and flags and waits for SIGINT/SIGTERM; tests start
//! nodes the same way, in their own process.
//!
//! Before binding anything, [`start`] refuses settings that would let others act as the
//! trust (`NodeConfig::check_edge`: without sign-on, loopback only; the sign-on proxy's
//! addresses and secret; the OpenID provider and this node's client there; a DICOM caller
//! allow-list), loads the proxy's secret, discovers the OpenID provider (refusing to start
//! when it cannot be reached) and, with `[http] tls_cert` and `tls_key`, the certificate
//! (HTTPS only, reloaded when the files change). Then it sweeps leftovers of interrupted
//! ingests, binds, and writes `serve.json` (address and pid, so tools find the server).
//!
//! The drain, in order: stop accepting HTTP and DICOM connections together, let HTTP
//! requests in flight finish and end DICOM associations at their next message (what they
//! acknowledged is ingested); stop the background loops; shut the network; wait for the
//! work the federation spawned; write every queued audit entry and join the writer; flush
//! the tile cache; remove `serve.json`. After [`RunningNode::stop`] returns, the ports and
//! the tile cache are free. (The network's own tasks end with it but are not awaited.)

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper_util::rt::TokioTimer;
use libp2p::{Multiaddr, PeerId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::oidc::{Oidc, Settings as OidcSettings};
use crate::api::requester::ProxyTrust;
use crate::api::tls::TlsFiles;
use crate::api::{self, ApiState};
use crate::audit::AuditLog;
use crate::config::{self, NodeConfig, UsersFrom, UsersSection};
use crate::consent::PolicyHandle;
use crate::context::NodeContext;
use crate::datadir::{DataDir, write_atomic};
use crate::federation::{
    Faults, Federation, Handlers, Holdings, Membership, PeerAddresses, PeerAnswers, tasks,
};
use crate::ingest::incoming::Incoming;
use crate::net::{NetConfig, Network};
use crate::store::cache::TileCache;
use crate::store::reader::TileReader;

mod limits;

/// Where the node listens and whom it dials; what config.toml says unless the operator
/// (flags) or a test says otherwise.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The HTTP API and web UI (port 0: any free port).
    pub http: SocketAddr,
    /// The DICOM C-STORE/C-ECHO receiver, as ADDR:PORT (port 0: any free port); none: off.
    pub dimse: Option<String>,
    /// libp2p listen addresses for peers.
    pub p2p: Vec<Multiaddr>,
    /// Addresses to dial member trusts at instead of their roster entries'.
    pub peer_addresses: PeerAddresses,
    /// Test and testnet fault switches (none in production).
    pub faults: Faults,
}

impl Settings {
    /// The addresses config.toml gives.
    pub fn from_config(config: &NodeConfig) -> Result<Self> {
        let listen = &config.http.listen;
        let http = listen.parse().with_context(|| {
            format!("invalid HTTP address {listen:?}: expected ADDR:PORT, e.g. 127.0.0.1:8080")
        })?;
        let p2p = config
            .network
            .listen
            .iter()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .with_context(|| format!("invalid p2p listen address {a:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            http,
            dimse: (!config.dimse.listen.is_empty()).then(|| config.dimse.listen.clone()),
            p2p,
            peer_addresses: peer_addresses(&config.network.peer_addresses, &[])?,
            faults: Faults::default(),
        })
    }
}

/// Where to dial member trusts instead of their roster addresses: config.toml's table,
/// with `overrides` (`TRUST=MULTIADDR`, from `--peer-address`) replacing a trust's entry.
pub fn peer_addresses(
    configured: &std::collections::BTreeMap<String, Vec<String>>,
    overrides: &[String],
) -> Result<PeerAddresses> {
    let mut flagged: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for flag in overrides {
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
                .map_err(|e| anyhow!("peer address for {trust:?}: {e}"))?;
            let addrs = addrs
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>().with_context(|| {
                        format!("peer address for {trust}: invalid multiaddr {a:?}")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((code, addrs))
        })
        .collect()
}

/// Where a started node is reached.
#[derive(Debug, Clone)]
pub struct Started {
    /// `http://ADDR` or `https://ADDR`.
    pub url: String,
    pub http: SocketAddr,
    pub peer_id: PeerId,
    pub dimse: Option<SocketAddr>,
}

/// A node started by [`start`]; [`Self::stop`] drains it.
pub struct RunningNode {
    pub started: Started,
    stopping: CancellationToken,
    http: JoinHandle<Result<()>>,
    dimse: Option<crate::dimse::Receiver>,
    background: JoinHandle<()>,
    scrubbing: JoinHandle<()>,
    network: Network,
    network_task: JoinHandle<()>,
    federation: Arc<Federation>,
    info_path: PathBuf,
}

/// Requests one HTTP/2 connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// How long shutdown waits for requests in flight, spawned work and queued audit entries.
const DRAIN: Duration = Duration::from_secs(10);

/// Starts every service of the node; returns once the HTTP API, the DICOM receiver and the
/// network listen, and `serve.json` is written.
pub async fn start(node: NodeContext, settings: Settings) -> Result<RunningNode> {
    let dimse_addrs: Vec<SocketAddr> = match &settings.dimse {
        None => Vec::new(),
        Some(dimse) => dimse
            .to_socket_addrs()
            .with_context(|| {
                format!("invalid DICOM address {dimse:?}: expected ADDR:PORT, e.g. 127.0.0.1:11112")
            })?
            .collect(),
    };
    node.config.check_edge(settings.http, &dimse_addrs)?;
    let proxy = proxy_trust(&node.data, &node.config.users)?;
    node.sweep()?;
    let tls = (!node.config.http.tls_cert.is_empty()).then(|| TlsFiles {
        cert: config::in_data_dir(node.data.root(), &node.config.http.tls_cert),
        key: config::in_data_dir(node.data.root(), &node.config.http.tls_key),
    });
    let oidc = oidc_sign_on(&node.data, &node.config.users, tls.is_some()).await?;
    // A certificate that does not load refuses to start, before anything else runs.
    let tls = match tls {
        None => None,
        Some(files) => {
            let config = files.load().await?;
            Some((files, config))
        }
    };
    let faults = settings.faults;
    if faults.corrupt_tiles {
        warn!("this node serves corrupted tiles to peers (fault injection)");
    }
    if faults.drop_revocations {
        warn!("this node drops every revocation message unread (fault injection)");
    }
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
    let reader = TileReader::new(objects.clone());
    // Originals an earlier scrub found corrupt stay suspect (each tile hashed before it is
    // served) until a pass finds them whole.
    let scrub_state = crate::scrub::ScrubState::path(data.root());
    for object in crate::scrub::ScrubState::load(&scrub_state).suspects {
        reader.set_suspect(object, true);
    }
    let policy = PolicyHandle::load(data.policy_path()).with_context(|| {
        format!(
            "cannot start with the consent policy in {} (check it with `slidemesh policy check`)",
            data.policy_path().display()
        )
    })?;
    info!(hash = policy.current().hash(), "consent policy loaded");
    for (trust, addrs) in &settings.peer_addresses {
        info!(%trust, ?addrs, "dialling this member at configured addresses, not the roster's");
    }
    // This trust's referral directory as config says it now, signed and kept beside the
    // members' (the background loops announce it).
    let directory = config
        .referrals
        .directory(&config.node.trust, crate::store::now_unix())?;
    store.put_directory(
        &slidemesh_protocol::SignedDirectory::sign(&directory, &key),
        &directory,
    )?;
    let roster = store.current_roster()?.map(|(roster, _)| roster);
    let membership = Arc::new(Membership::new(roster, settings.peer_addresses));
    // The swarm listens first; what answers peers is built with its handle, then answers.
    let (network, unanswered) = Network::bind(
        &key,
        NetConfig {
            listen: settings.p2p,
            warm_up_bytes: config.network.warm_up_bytes,
            peer_requests_per_sec: config.network.peer_requests_per_sec,
        },
    )?;
    let audit = AuditLog::start(store.clone()).context("cannot start the audit log writer")?;
    let hierarchy = crate::research::snomed::Hierarchy::configured(&config.research, data.root())?;
    if hierarchy.concepts() > 0 {
        info!(
            concepts = hierarchy.concepts(),
            "SNOMED CT hierarchy read for research queries"
        );
    }
    let research =
        crate::research::ResearchSettings::from_config(&config.research, &key, hierarchy);
    let holdings = Arc::new(Holdings::new(
        store.clone(),
        config.node.trust.clone(),
        Arc::new(data.load_key()?),
        reader.clone(),
        cache,
        Arc::new(policy),
        audit,
        membership,
        research,
    ));
    // Everything that can fail is done before anything runs (the swarm is built but not
    // yet answering), so a refusal to start leaves nothing behind but the DICOM receiver,
    // which is stopped then.
    let node_key = key.public();
    let incoming = Arc::new(Incoming::new(
        config.node.trust.clone(),
        key,
        store.clone(),
        objects.clone(),
        config.ingest.keep_originals,
        data.tmp_dir(),
    ));
    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another node using it?)",
                settings.http
            )
        })?;
    let bound = listener.local_addr()?;
    let limits = config.http.limits.clone();
    let header_timeout = Duration::from_secs(limits.header_timeout_secs.max(1));
    let mut server = axum_server::from_tcp(listener.into_std()?)?;
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    server
        .http_builder()
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let dimse = match &settings.dimse {
        None => None,
        Some(listen) => Some(crate::dimse::start(
            &config.dimse,
            listen,
            incoming.clone(),
        )?),
    };

    // What answers peers needs no network; the network answers with it, and what fetches
    // from peers is built with the network's handle. Work the answers leave for the
    // fetching side (manifests to fetch, rosters to adopt) goes by channel.
    let spawned = tokio_util::task::TaskTracker::new();
    let (followups, followed_up) = tokio::sync::mpsc::unbounded_channel();
    let answers = PeerAnswers::new(holdings.clone(), faults, followups, spawned.clone());
    let network_task = unanswered.answer_with(Arc::new(Handlers(Arc::new(answers))));
    let federation = Federation::new(holdings, network.clone(), spawned);
    let timings = tasks::Timings {
        consent_refresh: Duration::from_secs(config.network.consent_refresh_secs.max(1)),
        audit_checkpoint: Duration::from_secs(config.network.audit_checkpoint_secs.max(1)),
        replicas: crate::federation::replicas::ReplicaSettings {
            tiles_per_second: config.network.replica_tiles_per_sec.max(1),
            check_every: Duration::from_secs(config.network.replica_check_secs.max(1)),
        },
    };
    let background = tokio::spawn(tasks::run(federation.clone(), timings, followed_up));
    let scrubbing = tokio::spawn(crate::federation::repair::run(
        federation.clone(),
        crate::scrub::ScrubSettings {
            bytes_per_second: config.scrub.bytes_per_sec,
            every: Duration::from_secs(config.scrub.every_hours.max(1) * 3600),
        },
        scrub_state,
    ));

    let mut state = ApiState::new(
        store,
        reader,
        config.node.trust.clone(),
        config.node.trust_name.clone(),
        node_key,
        federation.clone(),
    );
    state.incoming = Some(incoming);
    state.users = config.users.clone();
    state.metrics_token = config.http.metrics_token.clone();
    state.proxy = proxy;
    state.oidc = oidc.map(Arc::new);
    state.limits = limits.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let started = Started {
        url: format!("{scheme}://{bound}"),
        http: bound,
        peer_id: network.local_peer_id(),
        dimse: dimse.as_ref().map(|d| d.addr),
    };
    let in_flight = limits::InFlight::new(limits.max_requests_in_flight.max(1));
    let app = api::router(Arc::new(state), &config.http.cors_origins, tls.is_some())
        .layer(axum::middleware::from_fn_with_state(
            in_flight,
            limits::shed_when_busy,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let server = server
        .first_request_timeout(header_timeout)
        .handle(handle.clone());
    let cap = limits::ConnectionCap::new(
        axum_server::accept::DefaultAcceptor::new(),
        limits.max_connections.max(1),
        Duration::from_secs(limits.idle_timeout_secs.max(1)),
    );
    let stopping = CancellationToken::new();
    let closing = stopping.clone();
    tokio::spawn(async move {
        closing.cancelled().await;
        handle.graceful_shutdown(Some(DRAIN));
    });
    let http = tokio::spawn(async move {
        match tls {
            None => server
                .acceptor(cap)
                .serve(app)
                .await
                .context("HTTP server failed"),
            Some((files, tls_config)) => {
                let watcher = files.watch(tls_config.clone());
                // The cap counts connections before their TLS handshake, which has the
                // header timeout too.
                let tls = axum_server::tls_rustls::RustlsAcceptor::new(tls_config)
                    .handshake_timeout(header_timeout)
                    .acceptor(cap);
                let served = server
                    .acceptor(tls)
                    .serve(app)
                    .await
                    .context("HTTPS server failed");
                watcher.abort();
                served
            }
        }
    });
    let running = RunningNode {
        started,
        stopping,
        http,
        dimse,
        background,
        scrubbing,
        network,
        network_task,
        federation,
        info_path: data.serve_info_path(),
    };
    let info = serde_json::json!({
        "http": running.started.url,
        "pid": std::process::id(),
        "peer_id": running.started.peer_id.to_string(),
        "dimse": running.started.dimse.map(|a| a.to_string()),
        "ae_title": config.dimse.ae_title,
    });
    if let Err(e) = write_atomic(&running.info_path, info.to_string().as_bytes()) {
        let _ = running.stop().await;
        return Err(e);
    }
    info!(trust = %config.node.trust, %bound, scheme, peer_id = %running.started.peer_id, "serving");
    Ok(running)
}

/// Runs the node until `shutdown` resolves (or its HTTP server fails), then drains it.
pub async fn run(
    node: NodeContext,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    start(node, settings).await?.serve_until(shutdown).await
}

impl RunningNode {
    /// Serves until `shutdown` resolves or the HTTP server fails, then drains ([`Self::stop`]).
    pub async fn serve_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let ended = tokio::select! {
            () = shutdown => None,
            // The HTTP server ended on its own (an error): the drain reports it.
            joined = &mut self.http => Some(joined),
        };
        self.drain(ended).await
    }

    /// The graceful drain (see the module docs). The HTTP server's error, if it failed.
    pub async fn stop(self) -> Result<()> {
        self.drain(None).await
    }

    /// [`Self::stop`], with the HTTP server's outcome when it already ended.
    async fn drain(
        mut self,
        http_ended: Option<Result<Result<()>, tokio::task::JoinError>>,
    ) -> Result<()> {
        self.stopping.cancel();
        // The DICOM receiver stops accepting at once too, and its associations end with
        // what they had acknowledged ingested.
        let dimse = self
            .dimse
            .take()
            .map(|receiver| tokio::task::spawn_blocking(move || receiver.stop(DRAIN)));
        let served = match http_ended {
            Some(joined) => joined,
            None => {
                let mut http = self.http;
                match tokio::time::timeout(DRAIN + Duration::from_secs(1), &mut http).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        warn!("HTTP requests still running after {DRAIN:?}; ending them");
                        http.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        let served = served.unwrap_or_else(|e| Err(anyhow!("HTTP server task: {e}")));
        if let Some(waiting) = dimse
            && !waiting.await.unwrap_or(false)
        {
            warn!("DICOM associations still running after {DRAIN:?}");
        }
        self.background.abort();
        let _ = self.background.await;
        // A pass on the blocking pool ends at its next original.
        self.federation.scrub.stop();
        self.scrubbing.abort();
        let _ = self.scrubbing.await;
        self.network.shutdown().await;
        let _ = self.network_task.await;
        if !self.federation.drain(DRAIN).await {
            warn!("work for peers and viewers still running after {DRAIN:?}");
        }
        let audit = self.federation.holdings.audit.clone();
        let drained = tokio::task::spawn_blocking(move || audit.close(DRAIN))
            .await
            .unwrap_or(false);
        if !drained {
            warn!("audit entries queued at shutdown were not all written within {DRAIN:?}");
        }
        // Batches cached since the last durable commit survive the restart.
        if let Err(e) = self.federation.holdings.cache.flush() {
            warn!(error = %e, "tile cache not flushed");
        }
        let _ = std::fs::remove_file(&self.info_path);
        info!("stopped");
        served
    }
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
    warn_if_shared(&path, "the sign-on proxy's secret");
    ProxyTrust::new(networks, secret, &users.proxy_secret_header)
        .map(Some)
        .map_err(|e| anyhow!("[users] proxy_secret_header: {e}"))
}

/// Fewer bytes than this could be guessed.
const MIN_PROXY_SECRET: usize = 16;

/// Warns when a secret file is readable by other users.
fn warn_if_shared(path: &std::path::Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(path = %path.display(), "{what} is readable by other users (chmod 600 it)");
    }
}

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
        warn_if_shared(&path, "the OpenID client secret");
        Some(secret.to_string())
    };
    let ca_file = (!users.oidc_ca_file.trim().is_empty())
        .then(|| config::in_data_dir(data.root(), users.oidc_ca_file.trim()));
    let settings = OidcSettings::new(users, secret, tls);
    Oidc::discover(settings, ca_file.as_deref()).await.map(Some)
}
