//! `config.toml`: the operator's settings for one node, and its commented template.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use slidemesh_protocol::TrustCode;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub http: HttpSection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub dimse: DimseSection,
    #[serde(default)]
    pub users: UsersSection,
    #[serde(default)]
    pub referrals: ReferralsSection,
    #[serde(default)]
    pub research: ResearchSection,
    #[serde(default)]
    pub scrub: ScrubSection,
}

/// The background scrub (`[scrub]`): how fast and how often originals and cached tiles are
/// re-verified against their ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubSection {
    /// Bytes of originals hashed per second in the background (0: as fast as the disk goes).
    #[serde(default = "default_scrub_bytes_per_sec")]
    pub bytes_per_sec: u64,
    /// Hours between the starts of two passes.
    #[serde(default = "default_scrub_every_hours")]
    pub every_hours: u64,
}

impl Default for ScrubSection {
    fn default() -> Self {
        Self {
            bytes_per_sec: default_scrub_bytes_per_sec(),
            every_hours: default_scrub_every_hours(),
        }
    }
}

fn default_scrub_bytes_per_sec() -> u64 {
    50_000_000
}

fn default_scrub_every_hours() -> u64 {
    24
}

/// How this trust answers research queries (`[research]`): its disclosure control, and how
/// long its own people's queries wait for other members.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchSection {
    /// A total below this is released as "<min_cell", a group below it is not listed
    /// (small-cell suppression).
    #[serde(default = "default_min_cell")]
    pub min_cell: u64,
    /// Each released count is moved by a seeded amount of at most this much (the same slides
    /// always get the same amount, so repeating or rephrasing a query does not average the
    /// noise away).
    #[serde(default = "default_noise")]
    pub noise: u64,
    /// Distinct queries one requester (a trust's node, or a person it names) is answered
    /// per `budget_window_secs`; repeating one is free.
    #[serde(default = "default_query_budget")]
    pub budget: u32,
    /// Distinct queries all of one trust's requesters together are answered per window.
    #[serde(default = "default_trust_query_budget")]
    pub trust_budget: u32,
    #[serde(default = "default_budget_window_secs")]
    pub budget_window_secs: u64,
    /// Milliseconds a query from this node waits for each member's answer.
    #[serde(default = "default_query_deadline_ms")]
    pub deadline_ms: u64,
    /// Milliseconds a cohort request from this node waits for each member (a site signs a
    /// grant per slide it releases).
    #[serde(default = "default_cohort_deadline_ms")]
    pub cohort_deadline_ms: u64,
    /// The SNOMED CT is-a relationships `under` reads: the release's RF2 relationship file,
    /// or `child<TAB>parent` lines (relative paths are in the data directory). Empty: `under`
    /// matches the code itself only.
    #[serde(default)]
    pub snomed_hierarchy: String,
}

fn default_min_cell() -> u64 {
    10
}
fn default_noise() -> u64 {
    2
}
fn default_query_budget() -> u32 {
    200
}
fn default_trust_query_budget() -> u32 {
    1_000
}
fn default_budget_window_secs() -> u64 {
    86_400
}
fn default_query_deadline_ms() -> u64 {
    3_000
}
fn default_cohort_deadline_ms() -> u64 {
    30_000
}

/// Largest `[research] noise`: the noise must stay small beside real counts.
pub const MAX_NOISE: u64 = 1_000;

impl ResearchSection {
    /// Refuses settings no trust means: a noise beyond [`MAX_NOISE`], no budget, no window,
    /// no deadline (or one over ten minutes).
    pub fn check(&self) -> Result<()> {
        if self.noise > MAX_NOISE {
            bail!("[research] noise = {} is over {MAX_NOISE}", self.noise);
        }
        if self.min_cell > 1_000_000 {
            bail!("[research] min_cell = {} is over 1000000", self.min_cell);
        }
        if self.budget == 0 || self.trust_budget == 0 || self.budget_window_secs == 0 {
            bail!("[research] budget, trust_budget and budget_window_secs must be at least 1");
        }
        if !(1..=600_000).contains(&self.deadline_ms) {
            bail!("[research] deadline_ms must be 1 to 600000");
        }
        if !(1..=600_000).contains(&self.cohort_deadline_ms) {
            bail!("[research] cohort_deadline_ms must be 1 to 600000");
        }
        Ok(())
    }
}

impl Default for ResearchSection {
    fn default() -> Self {
        Self {
            min_cell: default_min_cell(),
            noise: default_noise(),
            budget: default_query_budget(),
            trust_budget: default_trust_query_budget(),
            budget_window_secs: default_budget_window_secs(),
            deadline_ms: default_query_deadline_ms(),
            cohort_deadline_ms: default_cohort_deadline_ms(),
            snomed_hierarchy: String::new(),
        }
    }
}

/// This trust's referral directory (`[referrals]`): what other trusts' referral forms offer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralsSection {
    /// Sub-specialty queues this trust takes referrals for.
    #[serde(default)]
    pub queues: Vec<slidemesh_protocol::QueueEntry>,
    /// Its named specialists, the queues they report and who covers for them.
    #[serde(default)]
    pub specialists: Vec<slidemesh_protocol::SpecialistEntry>,
}

impl ReferralsSection {
    /// The directory to sign and announce, checked as receivers check it.
    pub fn directory(
        &self,
        trust: &TrustCode,
        issued_at: u64,
    ) -> Result<slidemesh_protocol::Directory> {
        let directory = slidemesh_protocol::Directory {
            trust: trust.clone(),
            issued_at,
            queues: self.queues.clone(),
            specialists: self.specialists.clone(),
        };
        directory
            .validate()
            .map_err(|e| anyhow!("[referrals]: {e}"))?;
        Ok(directory)
    }
}

/// Who the HTTP API and web UI act for: the trust itself, the person the trust's single
/// sign-on proxy authenticated, or the person who signed on at the trust's OpenID provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersSection {
    #[serde(default)]
    pub from: UsersFrom,
    /// Header naming the person's account (with `from = "proxy"`).
    #[serde(default = "default_user_header")]
    pub user_header: String,
    /// Header naming the role they act in.
    #[serde(default = "default_role_header")]
    pub role_header: String,
    /// With `from = "proxy"`: refuse (401) requests that name no one. `false` lets them act
    /// as the trust when they come from this host (scripts on the node's own host). Ignored
    /// with `from = "none"`.
    #[serde(default = "default_required")]
    pub required: bool,
    /// With `from = "proxy"`: where the sign-on proxy connects from, IP addresses or CIDR
    /// networks (`"10.1.2.0/24"`). Identity headers from any other address are refused (403),
    /// since anyone else could write them.
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
    /// With `from = "proxy"`: a file holding the secret the proxy sends in
    /// `proxy_secret_header` with every request (relative paths are in the data directory).
    /// Identity headers without it are refused (403): an address alone can be shared.
    #[serde(default)]
    pub proxy_secret_file: String,
    /// The header carrying that secret.
    #[serde(default = "default_proxy_secret_header")]
    pub proxy_secret_header: String,
    /// Roles whose people (or service accounts) may store slides through STOW-RS. With
    /// `from = "none"` the trust itself may (the node then answers on loopback only).
    #[serde(default = "default_ingest_roles")]
    pub ingest_roles: Vec<String>,
    /// With `from = "oidc"`: the trust's OpenID provider (its issuer URL; the node reads
    /// `/.well-known/openid-configuration` under it when `serve` starts).
    #[serde(default)]
    pub oidc_issuer: String,
    /// This node's client id at the provider.
    #[serde(default)]
    pub oidc_client_id: String,
    /// A file holding the client secret (relative paths are in the data directory); empty:
    /// a public client, PKCE only.
    #[serde(default)]
    pub oidc_client_secret_file: String,
    /// Where the provider sends the browser back: this node's `/auth/callback` as browsers
    /// reach it, registered at the provider.
    #[serde(default)]
    pub oidc_redirect_url: String,
    /// Scopes asked for (`openid` always is).
    #[serde(default = "default_oidc_scopes")]
    pub oidc_scopes: Vec<String>,
    /// The ID token claim naming the person's account.
    #[serde(default = "default_oidc_user_claim")]
    pub oidc_user_claim: String,
    /// The ID token claim holding the person's role (a string or a list of strings).
    #[serde(default = "default_oidc_roles_claim")]
    pub oidc_roles_claim: String,
    /// Where the provider sends the browser after signing out there (registered at the
    /// provider); empty: the provider's own page.
    #[serde(default)]
    pub oidc_post_logout_redirect_url: String,
    /// Seconds a session lasts after signing on.
    #[serde(default = "default_oidc_session_secs")]
    pub oidc_session_secs: u64,
    /// A PEM file of CA certificates to trust for the provider besides the system's
    /// (relative paths are in the data directory); empty: the system's only.
    #[serde(default)]
    pub oidc_ca_file: String,
}

/// See [`UsersSection`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsersFrom {
    /// Every request acts as this trust; user headers are ignored.
    #[default]
    None,
    /// The trust's sign-on proxy in front of the node names the person in headers.
    Proxy,
    /// People sign on at the trust's OpenID provider (authorization code flow with PKCE);
    /// the node keeps their sessions.
    Oidc,
}

impl UsersFrom {
    /// As config.toml writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            UsersFrom::None => "none",
            UsersFrom::Proxy => "proxy",
            UsersFrom::Oidc => "oidc",
        }
    }
}

impl Default for UsersSection {
    fn default() -> Self {
        Self {
            from: UsersFrom::None,
            user_header: default_user_header(),
            role_header: default_role_header(),
            required: default_required(),
            proxy_addresses: Vec::new(),
            proxy_secret_file: String::new(),
            proxy_secret_header: default_proxy_secret_header(),
            ingest_roles: default_ingest_roles(),
            oidc_issuer: String::new(),
            oidc_client_id: String::new(),
            oidc_client_secret_file: String::new(),
            oidc_redirect_url: String::new(),
            oidc_scopes: default_oidc_scopes(),
            oidc_user_claim: default_oidc_user_claim(),
            oidc_roles_claim: default_oidc_roles_claim(),
            oidc_post_logout_redirect_url: String::new(),
            oidc_session_secs: default_oidc_session_secs(),
            oidc_ca_file: String::new(),
        }
    }
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

fn default_oidc_user_claim() -> String {
    "preferred_username".into()
}

fn default_oidc_roles_claim() -> String {
    "roles".into()
}

/// A working day.
fn default_oidc_session_secs() -> u64 {
    8 * 60 * 60
}

fn default_proxy_secret_header() -> String {
    "x-slidemesh-proxy-secret".into()
}

fn default_ingest_roles() -> Vec<String> {
    vec!["lab".into(), "ingest".into()]
}

fn default_required() -> bool {
    true
}

fn default_user_header() -> String {
    "x-slidemesh-user".into()
}

fn default_role_header() -> String {
    "x-slidemesh-role".into()
}

/// The DICOM C-STORE / C-ECHO receiver for scanners and PACS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimseSection {
    /// Address and port (`slidemesh serve --dimse` overrides); empty: no DICOM receiver.
    #[serde(default)]
    pub listen: String,
    /// This node's AE title; associations calling another title are refused.
    #[serde(default = "default_ae_title")]
    pub ae_title: String,
    /// AE titles of senders (scanners, PACS) allowed to associate. Required (not empty)
    /// whenever `listen` is set: `serve` refuses to start a receiver that admits any caller.
    #[serde(default)]
    pub calling_ae_titles: Vec<String>,
    /// Associations received at once; more are closed as they arrive.
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Bytes of data one association may send; more aborts it (instances already
    /// acknowledged are kept).
    #[serde(default = "default_max_association_bytes")]
    pub max_bytes_per_association: u64,
}

fn default_max_associations() -> usize {
    16
}

fn default_max_association_bytes() -> u64 {
    64 << 30
}

impl Default for DimseSection {
    fn default() -> Self {
        Self {
            listen: String::new(),
            ae_title: default_ae_title(),
            calling_ae_titles: Vec::new(),
            max_associations: default_max_associations(),
            max_bytes_per_association: default_max_association_bytes(),
        }
    }
}

fn default_ae_title() -> String {
    "SLIDEMESH".into()
}

/// How the node reaches its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// libp2p listen addresses (QUIC and TCP).
    #[serde(default = "default_p2p_listen")]
    pub listen: Vec<String>,
    /// Bytes of tiles fetched from peers kept on disk (least recently used go first).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Addresses to dial a member trust at instead of the ones in its roster entry, by ODS
    /// code: a site-to-site tunnel's endpoint, or the testnet's link relays.
    #[serde(default)]
    pub peer_addresses: std::collections::BTreeMap<String, Vec<String>>,
    /// Filler bytes pushed to a member once per new connection, so the connection's
    /// congestion window has grown before the first tiles travel; 0 turns it off.
    #[serde(default = "default_warm_up_bytes")]
    pub warm_up_bytes: u64,
    /// Seconds between fetches of a shared slide's manifest and its owner's consent
    /// statement (a copy follows the owner's edits, and revocations it missed, within this).
    #[serde(default = "default_consent_refresh_secs")]
    pub consent_refresh_secs: u64,
    /// Seconds between audit checkpoints co-signed by the members.
    #[serde(default = "default_audit_checkpoint_secs")]
    pub audit_checkpoint_secs: u64,
    /// Control requests (manifests, grants, revocations, co-signing, rosters) one member's
    /// node may send per second, in bursts of twice that; more are answered "failed, ask
    /// again later" without being handled.
    #[serde(default = "default_peer_requests_per_sec")]
    pub peer_requests_per_sec: u32,
    /// Tiles per second a replica fetches in the background (it also waits for viewers'
    /// batches to finish before each of its own).
    #[serde(default = "default_replica_tiles_per_sec")]
    pub replica_tiles_per_sec: u32,
    /// Seconds between checks of the replicas this node holds (missing tiles fetched,
    /// replicas no longer granted released); a new replicate grant starts one at once.
    #[serde(default = "default_replica_check_secs")]
    pub replica_check_secs: u64,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            listen: default_p2p_listen(),
            cache_bytes: default_cache_bytes(),
            peer_addresses: Default::default(),
            warm_up_bytes: default_warm_up_bytes(),
            consent_refresh_secs: default_consent_refresh_secs(),
            audit_checkpoint_secs: default_audit_checkpoint_secs(),
            peer_requests_per_sec: default_peer_requests_per_sec(),
            replica_tiles_per_sec: default_replica_tiles_per_sec(),
            replica_check_secs: default_replica_check_secs(),
        }
    }
}

fn default_replica_tiles_per_sec() -> u32 {
    2000
}

fn default_replica_check_secs() -> u64 {
    60
}

fn default_p2p_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/udp/7400/quic-v1".into(),
        "/ip4/0.0.0.0/tcp/7400".into(),
    ]
}

fn default_cache_bytes() -> u64 {
    4 << 30
}

fn default_consent_refresh_secs() -> u64 {
    600
}

fn default_audit_checkpoint_secs() -> u64 {
    60
}

fn default_peer_requests_per_sec() -> u32 {
    50
}

/// About one first screen of tiles, plus headroom.
fn default_warm_up_bytes() -> u64 {
    1 << 20
}

/// Who this node is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The owning trust's ODS code; it owns every slide ingested here.
    pub trust: TrustCode,
    /// Display name shown in the web UI.
    pub trust_name: String,
}

/// Where the HTTP API and web UI listen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address and port; loopback by default, since users reach the node through the trust's
    /// own network and a reverse proxy, never directly from outside.
    pub listen: String,
    /// Web origins (e.g. `https://viewer.trust.nhs.uk`) whose pages may call this node's API
    /// and DICOMweb from a browser; `*` allows any. Empty: only the node's own web UI.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain for HTTPS; with `tls_key`, the API and UI are served over TLS
    /// only. Both files are read again when they change, without a restart. Relative paths
    /// are in the data directory. Empty: plain HTTP.
    #[serde(default)]
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: String,
    /// The bearer token Prometheus scrapes `/metrics` with (its scrape config's
    /// `authorization: {credentials: ...}`). Empty: `/metrics` is not served.
    #[serde(default)]
    pub metrics_token: String,
    /// What clients may take of the server (`[http.limits]`).
    #[serde(default)]
    pub limits: HttpLimits,
}

/// Bounds on what clients may take of the HTTP server; over them a client gets a clear
/// refusal (connection closed at the cap, 503 when busy, 413 for a body too large, the
/// connection closed when its request head does not arrive in time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Open connections at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's head (its first one included, TLS
    /// handshake too), and an HTTP/1 connection may stay idle between requests.
    pub header_timeout_secs: u64,
    /// Seconds a connection may pass without a byte either way before it is closed (an
    /// HTTP/2 connection left open after its requests; longer than any answer takes).
    pub idle_timeout_secs: u64,
    /// Requests being answered at once; more are answered 503 at once.
    pub max_requests_in_flight: usize,
    /// Bytes of one STOW-RS request, and of one instance (part) in it.
    pub stow_max_bytes: u64,
    pub stow_max_part_bytes: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout_secs: 30,
            idle_timeout_secs: 120,
            max_requests_in_flight: 512,
            // Whole-slide images run to a few GB an instance.
            stow_max_bytes: 16 << 30,
            stow_max_part_bytes: 8 << 30,
        }
    }
}

/// How ingest keeps original files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// "link": hard-link originals into the object store when on the same file system
    /// (no extra space, but the scanner's file and ours are then one inode), falling back to
    /// a copy; "copy": always copy.
    #[serde(default = "default_keep")]
    pub keep_originals: KeepOriginals,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            keep_originals: default_keep(),
        }
    }
}

fn default_keep() -> KeepOriginals {
    KeepOriginals::Link
}

/// See [`IngestSection::keep_originals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeepOriginals {
    Link,
    Copy,
}

impl NodeConfig {
    pub fn new(trust: TrustCode, trust_name: String, listen: String) -> Self {
        Self {
            node: NodeSection { trust, trust_name },
            http: HttpSection {
                listen,
                cors_origins: Vec::new(),
                tls_cert: String::new(),
                tls_key: String::new(),
                metrics_token: String::new(),
                limits: HttpLimits::default(),
            },
            ingest: IngestSection::default(),
            network: NetworkSection::default(),
            referrals: ReferralsSection::default(),
            research: ResearchSection::default(),
            scrub: ScrubSection::default(),
            dimse: DimseSection::default(),
            users: UsersSection::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        config
            .research
            .check()
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        Ok(config)
    }

    /// The file `init` writes: every setting with a comment saying what it does.
    pub fn to_commented_toml(&self) -> String {
        let keep = match self.ingest.keep_originals {
            KeepOriginals::Link => "link",
            KeepOriginals::Copy => "copy",
        };
        format!(
            r#"# slidemesh node configuration. Edit, then restart `slidemesh serve`.

[node]
# NHS ODS code of the trust that runs this node. Every slide ingested here is owned by it
# and its manifests are signed with this node's key (node.key beside this file).
trust = {trust}
# Name shown to users in the web UI.
trust_name = {name}

[http]
# Address of the HTTP API and web UI. Keep it on loopback or a private interface and put the
# trust's reverse proxy in front; `slidemesh serve --http` overrides it for one run.
listen = {listen}
# Web origins whose pages may call this node's API and DICOMweb (/dicomweb) from a browser,
# e.g. ["https://viewer.trust.nhs.uk"]; "*" allows any page (refused with [users] sign-on,
# "proxy" or "oidc").
# Empty: only the node's own UI.
cors_origins = {cors}
# HTTPS: PEM certificate chain and private key (relative paths are in the data directory).
# With both set the API and UI answer over TLS only, and replaced files are picked up without
# a restart. Empty: plain HTTP (for loopback, or behind a proxy that terminates TLS).
tls_cert = {tls_cert}
tls_key = {tls_key}
# Prometheus metrics at /metrics (counts by trust, action and outcome; no slide, person or
# patient), served only to a scraper presenting this bearer token. Empty: not served.
metrics_token = {metrics_token}

[http.limits]
# Open connections at once (more are closed as they arrive); requests answered at once (more
# get 503); seconds a client may take to send a request's head or (HTTP/1) stay idle, and
# seconds any connection may pass without a byte either way (an idle HTTP/2 connection).
max_connections = {max_connections}
max_requests_in_flight = {max_requests_in_flight}
header_timeout_secs = {header_timeout_secs}
idle_timeout_secs = {idle_timeout_secs}
# Bytes of one STOW-RS request and of one instance in it (more: 413).
stow_max_bytes = {stow_max_bytes}
stow_max_part_bytes = {stow_max_part_bytes}

[ingest]
# How original DICOM files are kept in objects/: "link" hard-links them when they are on the
# same file system (falls back to copying), "copy" always copies.
keep_originals = "{keep}"

[network]
# libp2p addresses peers reach this node on: QUIC first, TCP (Noise + Yamux) as fallback.
# The same addresses go into this trust's roster entry (`slidemesh federation member`).
listen = [{listen_p2p}]
# Disk space for tiles of slides other trusts shared with us (least recently used go first).
cache_bytes = {cache}
# Addresses to dial a member at instead of those in the roster, by ODS code, e.g.
# {{ RAE = ["/ip4/10.20.0.2/tcp/7400"] }} through a site-to-site tunnel. Empty: the roster's.
# `slidemesh serve --peer-address RAE=/ip4/...` overrides it for one run.
peer_addresses = {peer_addresses}
# Bytes of filler pushed to each member once per new connection, so the connection's
# congestion window has grown before the first tiles travel (a fresh QUIC or TCP connection
# starts at about 12 KB per round trip). Costs this much per connection; 0 turns it off.
warm_up_bytes = 1048576
# Seconds between fetches of each shared slide's manifest and its owner's signed consent
# statement: a slide here follows the owner's consent, policy and opt-out edits within this.
# Revocations are pushed at once; the statement also lists the owner's grants that still
# hold, so a copy that missed a revocation refuses the grant from its next fetch (and serves
# a new grant from then on). A refused fetch is retried no sooner than this.
consent_refresh_secs = 600
# Seconds between checkpoints of the audit log, each co-signed by the other members.
audit_checkpoint_secs = 60
# Control requests one member's node may send per second (bursts of twice that); more are
# answered "failed, ask again later" unhandled. Tile batches travel on their own streams.
peer_requests_per_sec = {peer_requests_per_sec}
# Replicas this node holds for other trusts (their owners' `replicate` grants): tiles per
# second fetched in the background, behind this trust's viewers, and seconds between checks
# for missing tiles and replicas no longer granted. A replica's tiles are never evicted and
# do not count against cache_bytes.
replica_tiles_per_sec = 2000
replica_check_secs = 60

[scrub]
# Originals and cached tiles are re-verified against their ids in the background: bytes of
# originals hashed per second (0: as fast as the disk goes) and hours between passes.
# A corrupt tile of an original is not served, and is repaired from a replica this trust
# named (`slidemesh share --replicate`) or another copy; `slidemesh scrub --now` runs a pass
# at once.
bytes_per_sec = 50000000
every_hours = 24

[dimse]
# DICOM receiver (C-ECHO, C-STORE) for scanners and PACS pushing slides, e.g.
# "127.0.0.1:11112"; empty: off. `slidemesh serve --dimse` overrides it for one run.
# Received instances are ingested when the sender releases the association. Beyond loopback
# only with sign-on ([users] from = "proxy" or "oidc").
listen = {dimse_listen}
# This node's AE title: associations calling another title are refused.
ae_title = {ae_title}
# AE titles allowed to send (your scanners and PACS), e.g. ["SCANNER1", "PACS"]. Required
# when listen is set: serve refuses to start a receiver that admits any caller.
calling_ae_titles = {callers}
# Associations received at once (more are closed as they arrive), and bytes one association
# may send (more aborts it; instances already acknowledged are kept).
max_associations = {max_associations}
max_bytes_per_association = {max_association_bytes}

[users]
# Who the web UI and API act for. "none": every request acts as this trust, and peers' and
# owners' policies see the trust. "proxy": the trust's single sign-on proxy in front of this
# node authenticates each person and names them in the two headers below. "oidc": people
# sign on at the trust's OpenID provider (oidc_* below). With "proxy" or "oidc" owners'
# policies decide per person and role (principal Slidemesh::User::"TRUST/account"), and both
# sides' audit logs name them. With "none", serve listens on loopback only ([http] listen
# and [dimse] listen): no one else may act as the trust.
from = "{users_from}"
user_header = {user_header}
role_header = {role_header}
# With "proxy" or "oidc": refuse requests that name no one (401; with "oidc" the web UI's
# pages go to the provider's sign-in instead), so nothing is seen without a named person;
# false lets them act as the trust when they come from this host (scripts).
required = {users_required}
# With "proxy": the proxy's addresses, IPs or CIDR networks, e.g. ["10.1.2.5", "10.1.3.0/24"],
# and a file holding a secret it sends in proxy_secret_header with every request (make one
# with `head -c 32 /dev/urandom | base64 > proxy-secret; chmod 600 proxy-secret`; relative
# paths are in the data directory). Identity headers from another address, or without the
# secret, are refused (403) and logged. serve refuses to start in "proxy" mode without both.
proxy_addresses = {proxy_addresses}
proxy_secret_file = {proxy_secret_file}
proxy_secret_header = {proxy_secret_header}
# Roles whose people or service accounts may store slides through STOW-RS (with "none", the
# trust itself may).
ingest_roles = {ingest_roles}
# With "oidc": the authorization code flow with PKCE at the trust's OpenID provider. The
# provider is found at serve start from its issuer URL (/.well-known/openid-configuration
# under it); serve refuses to start when it cannot be reached. Register this node there as a
# client with oidc_redirect_url (this node's /auth/callback as browsers reach it, e.g.
# "https://slides.trust.nhs.uk/auth/callback") and put the client secret in a file (chmod
# 600; relative paths are in the data directory; empty: a public client, PKCE only). The
# issuer and the redirect URL must be https unless on loopback.
oidc_issuer = {oidc_issuer}
oidc_client_id = {oidc_client_id}
oidc_client_secret_file = {oidc_client_secret_file}
oidc_redirect_url = {oidc_redirect_url}
# Scopes asked for ("openid" always is); add the one your provider needs to put the roles
# claim in the ID token, e.g. ["openid", "profile", "roles"].
oidc_scopes = {oidc_scopes}
# ID token claims: the person's account ("preferred_username", "sub", "email" or another
# string claim) and their role (a string or a list; the first valid role is used: lowercase
# letters, digits and '-', as policies compare them). No role, no sign-on.
oidc_user_claim = {oidc_user_claim}
oidc_roles_claim = {oidc_roles_claim}
# Where the provider sends the browser after it signed the person out too (its
# end_session_endpoint, when it has one), e.g. "https://slides.trust.nhs.uk/signed-out";
# register it at the provider. Empty: the provider's own page.
oidc_post_logout_redirect_url = {oidc_post_logout_redirect_url}
# Seconds a session lasts. Sessions live in this process's memory: they end when serve
# restarts, and people then sign on again (usually without a password, at the provider).
oidc_session_secs = {oidc_session_secs}
# Extra CA certificates (PEM) to trust for the provider besides the system's, e.g. the
# trust's internal CA; empty: the system's trust store only.
oidc_ca_file = {oidc_ca_file}

[referrals]
# This trust's referral directory, signed by this node and announced to every member, so
# their referral forms offer it: the sub-specialty queues it takes referrals for (name:
# lowercase letters, digits and '-'), and its named specialists (their sign-on accounts) with
# the queues they report and who covers for them, e.g.
#   queues = [{{ name = "breast", title = "Breast pathology" }}]
#   specialists = [{{ account = "apatel", name = "Dr A Patel", queues = ["breast"], covered_by = "bjones" }}]
queues = {referral_queues}
specialists = {referral_specialists}

[research]
# Research queries from any member are answered under this trust's policy (action `query`)
# and this disclosure control: a total below `min_cell` is released as "<min_cell" and a
# group below it is not listed; every count is moved by at most `noise`, seeded by this
# node's key and the slides counted, so the same slides always get the same count however
# the query is written; one requester (a trust, or a person it names) is
# answered at most `budget` distinct queries per `budget_window_secs`, and all of one trust's
# requesters together `trust_budget`.
min_cell = {research_min_cell}
noise = {research_noise}
budget = {research_budget}
trust_budget = {research_trust_budget}
budget_window_secs = {research_budget_window_secs}
# Milliseconds this node's own queries wait for each member before calling it timed out.
deadline_ms = {research_deadline_ms}
# Milliseconds a cohort request (`slidemesh cohort build`) waits for each member.
cohort_deadline_ms = {research_cohort_deadline_ms}
# The SNOMED CT is-a relationships `diagnosis under CODE` reads: the release's relationship
# file (sct2_Relationship_Snapshot_*.txt) or `child<TAB>parent` lines; relative to this
# folder. Empty: `under` matches the code itself only. Read at `serve` start.
snomed_hierarchy = {research_snomed}
"#,
            research_min_cell = self.research.min_cell,
            research_noise = self.research.noise,
            research_budget = self.research.budget,
            research_trust_budget = self.research.trust_budget,
            research_budget_window_secs = self.research.budget_window_secs,
            research_deadline_ms = self.research.deadline_ms,
            research_cohort_deadline_ms = self.research.cohort_deadline_ms,
            research_snomed = toml_string(&self.research.snomed_hierarchy),
            referral_queues = inline_tables(&self.referrals.queues),
            referral_specialists = inline_tables(&self.referrals.specialists),
            users_from = self.users.from.as_str(),
            oidc_issuer = toml_string(&self.users.oidc_issuer),
            oidc_client_id = toml_string(&self.users.oidc_client_id),
            oidc_client_secret_file = toml_string(&self.users.oidc_client_secret_file),
            oidc_redirect_url = toml_string(&self.users.oidc_redirect_url),
            oidc_scopes = toml_strings(&self.users.oidc_scopes),
            oidc_user_claim = toml_string(&self.users.oidc_user_claim),
            oidc_roles_claim = toml_string(&self.users.oidc_roles_claim),
            oidc_post_logout_redirect_url = toml_string(&self.users.oidc_post_logout_redirect_url),
            oidc_session_secs = self.users.oidc_session_secs,
            oidc_ca_file = toml_string(&self.users.oidc_ca_file),
            user_header = toml_string(&self.users.user_header),
            role_header = toml_string(&self.users.role_header),
            users_required = self.users.required,
            proxy_addresses = toml_strings(&self.users.proxy_addresses),
            proxy_secret_file = toml_string(&self.users.proxy_secret_file),
            proxy_secret_header = toml_string(&self.users.proxy_secret_header),
            ingest_roles = toml_strings(&self.users.ingest_roles),
            tls_cert = toml_string(&self.http.tls_cert),
            tls_key = toml_string(&self.http.tls_key),
            metrics_token = toml_string(&self.http.metrics_token),
            max_connections = self.http.limits.max_connections,
            max_requests_in_flight = self.http.limits.max_requests_in_flight,
            header_timeout_secs = self.http.limits.header_timeout_secs,
            idle_timeout_secs = self.http.limits.idle_timeout_secs,
            stow_max_bytes = self.http.limits.stow_max_bytes,
            stow_max_part_bytes = self.http.limits.stow_max_part_bytes,
            dimse_listen = toml_string(&self.dimse.listen),
            peer_requests_per_sec = self.network.peer_requests_per_sec,
            max_associations = self.dimse.max_associations,
            max_association_bytes = self.dimse.max_bytes_per_association,
            ae_title = toml_string(&self.dimse.ae_title),
            callers = toml::Value::Array(
                self.dimse
                    .calling_ae_titles
                    .iter()
                    .map(|o| toml::Value::String(o.clone()))
                    .collect()
            ),
            listen_p2p = self
                .network
                .listen
                .iter()
                .map(|a| toml_string(a))
                .collect::<Vec<_>>()
                .join(", "),
            cache = self.network.cache_bytes,
            peer_addresses = toml::Value::Table(
                self.network
                    .peer_addresses
                    .iter()
                    .map(|(trust, addrs)| {
                        (
                            trust.clone(),
                            toml::Value::Array(
                                addrs
                                    .iter()
                                    .map(|a| toml::Value::String(a.clone()))
                                    .collect(),
                            ),
                        )
                    })
                    .collect()
            ),
            trust = toml_string(self.node.trust.as_str()),
            name = toml_string(&self.node.trust_name),
            listen = toml_string(&self.http.listen),
            cors = toml::Value::Array(
                self.http
                    .cors_origins
                    .iter()
                    .map(|o| toml::Value::String(o.clone()))
                    .collect()
            ),
        )
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A list of records as one line of TOML inline tables (their fields are strings and lists
/// of strings, which `toml::Value` writes inline).
fn inline_tables<T: Serialize>(list: &[T]) -> String {
    let items: Vec<String> = list
        .iter()
        .filter_map(|item| match toml::Value::try_from(item) {
            Ok(toml::Value::Table(table)) => Some(format!(
                "{{ {} }}",
                table
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => None,
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn toml_strings(list: &[String]) -> String {
    toml::Value::Array(
        list.iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    )
    .to_string()
}

/// A path from config.toml: relative paths are in the data directory.
pub fn in_data_dir(root: &Path, path: &str) -> PathBuf {
    root.join(path)
}

/// `[users] proxy_addresses` as networks (a plain address is a network of one).
pub fn proxy_networks(list: &[String]) -> Result<Vec<IpNet>> {
    list.iter()
        .map(|entry| {
            let net = entry
                .trim()
                .parse::<IpNet>()
                .or_else(|_| entry.trim().parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow!(
                        "[users] proxy_addresses: {entry:?} is neither an IP address nor a CIDR \
                         network (e.g. \"10.1.2.5\" or \"10.1.2.0/24\")"
                    )
                })?;
            if net.prefix_len() == 0 {
                bail!(
                    "[users] proxy_addresses: {entry:?} would trust every address; name the \
                     sign-on proxy's own addresses"
                );
            }
            Ok(net.trunc())
        })
        .collect()
}

impl UsersSection {
    /// With `from = "oidc"`: the provider and this node's client are named, and both URLs
    /// are https unless on loopback (a session cookie or a code sent in clear could be
    /// taken on the way).
    fn check_oidc(&self) -> Result<()> {
        let needs = |value: &str, key: &str, example: &str| {
            if value.trim().is_empty() {
                bail!("[users] from = \"oidc\" needs {key}, e.g. {key} = {example}");
            }
            Ok(())
        };
        needs(
            &self.oidc_issuer,
            "oidc_issuer",
            "\"https://login.trust.nhs.uk/realms/staff\" (the provider's issuer URL)",
        )?;
        needs(
            &self.oidc_client_id,
            "oidc_client_id",
            "\"slidemesh\" (this node's client at the provider)",
        )?;
        needs(
            &self.oidc_redirect_url,
            "oidc_redirect_url",
            "\"https://slides.trust.nhs.uk/auth/callback\" (this node's /auth/callback as \
             browsers reach it, registered at the provider)",
        )?;
        oidc_url("oidc_issuer", &self.oidc_issuer)?;
        let redirect = oidc_url("oidc_redirect_url", &self.oidc_redirect_url)?;
        if redirect.path() != "/auth/callback" || redirect.query().is_some() {
            bail!(
                "[users] oidc_redirect_url {:?} must be this node's /auth/callback, e.g. \
                 \"https://slides.trust.nhs.uk/auth/callback\"",
                self.oidc_redirect_url
            );
        }
        if !self.oidc_post_logout_redirect_url.is_empty() {
            oidc_url(
                "oidc_post_logout_redirect_url",
                &self.oidc_post_logout_redirect_url,
            )?;
        }
        if self.oidc_user_claim.trim().is_empty() || self.oidc_roles_claim.trim().is_empty() {
            bail!(
                "[users] oidc_user_claim and oidc_roles_claim name ID token claims, e.g. \
                 \"preferred_username\" and \"roles\"; one is empty"
            );
        }
        if self.oidc_session_secs == 0 {
            bail!("[users] oidc_session_secs must be more than 0, e.g. 28800 (eight hours)");
        }
        Ok(())
    }
}

/// A URL of the sign-on flow: absolute, and https unless its host is loopback.
pub fn oidc_url(key: &str, value: &str) -> Result<openidconnect::url::Url> {
    let url = openidconnect::url::Url::parse(value.trim()).map_err(|e| {
        anyhow!("[users] {key} {value:?} is not a URL ({e}), e.g. \"https://login.trust.nhs.uk\"")
    })?;
    let loopback = match url.host() {
        Some(openidconnect::url::Host::Domain(d)) => d == "localhost",
        Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => bail!(
            "[users] {key} {value:?} is plain http: sign-on codes, tokens and session cookies \
             would cross the network in clear; use https (http is for loopback only)"
        ),
        other => bail!("[users] {key} {value:?}: {other:?} is not http or https"),
    }
}

impl NodeConfig {
    /// Refuses settings that would let someone other than the trust's signed-on people in,
    /// before `serve` binds anything: `http` is the HTTP address, `dimse` the DICOM
    /// receiver's addresses (empty: none). Each message says what to configure.
    pub fn check_edge(&self, http: SocketAddr, dimse: &[SocketAddr]) -> Result<()> {
        let users = &self.users;
        match users.from {
            UsersFrom::None => {
                let fix = "listen on loopback (127.0.0.1), or turn sign-on on: put the trust's \
                           sign-on proxy in front and set [users] from = \"proxy\" with \
                           proxy_addresses and proxy_secret_file, or let people sign on at the \
                           trust's OpenID provider with [users] from = \"oidc\" and oidc_issuer, \
                           oidc_client_id and oidc_redirect_url";
                if !http.ip().is_loopback() {
                    bail!(
                        "refusing to serve HTTP on {http} without sign-on: with [users] from = \
                         \"none\" every request acts as the trust, so it is for loopback only; \
                         {fix}"
                    );
                }
                if let Some(addr) = dimse.iter().find(|a| !a.ip().is_loopback()) {
                    bail!(
                        "refusing to receive DICOM on {addr} without sign-on: with [users] from \
                         = \"none\" the node is for loopback only; {fix}"
                    );
                }
            }
            UsersFrom::Proxy => {
                if users.proxy_addresses.is_empty() {
                    bail!(
                        "[users] from = \"proxy\" needs proxy_addresses: the sign-on proxy's IP \
                         addresses or networks, e.g. proxy_addresses = [\"10.1.2.5\"]; identity \
                         headers from anywhere else are refused"
                    );
                }
                proxy_networks(&users.proxy_addresses)?;
                if users.proxy_secret_file.trim().is_empty() {
                    bail!(
                        "[users] from = \"proxy\" needs proxy_secret_file: a file holding the \
                         secret the sign-on proxy sends in the {} header (make one with `head -c \
                         32 /dev/urandom | base64 > proxy-secret`)",
                        users.proxy_secret_header
                    );
                }
            }
            UsersFrom::Oidc => users.check_oidc()?,
        }
        if users.from != UsersFrom::None && self.http.cors_origins.iter().any(|o| o == "*") {
            bail!(
                "[http] cors_origins = [\"*\"] would let any web page call this node with its \
                 users' sign-on; with [users] from = \"{}\" name the viewer origins instead, \
                 e.g. [\"https://viewer.trust.nhs.uk\"]",
                users.from.as_str()
            );
        }
        if !dimse.is_empty() && self.dimse.calling_ae_titles.is_empty() {
            bail!(
                "a DICOM receiver needs [dimse] calling_ae_titles: the AE titles of the scanners \
                 and PACS allowed to send, e.g. calling_ae_titles = [\"SCANNER1\"]; an empty \
                 list would admit any caller"
            );
        }
        if self.http.tls_cert.is_empty() != self.http.tls_key.is_empty() {
            bail!("HTTPS needs both [http] tls_cert and tls_key (PEM files); only one is set");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_template_parses_back() {
        let config = NodeConfig::new(
            "RAE".parse().unwrap(),
            "Bradford \"BTHFT\"".into(),
            "127.0.0.1:8080".into(),
        );
        let mut config = config;
        config
            .network
            .peer_addresses
            .insert("RR8".into(), vec!["/ip4/10.20.0.2/tcp/7400".into()]);
        config.http.limits.max_connections = 77;
        let parsed: NodeConfig = toml::from_str(&config.to_commented_toml()).unwrap();
        assert_eq!(parsed.network.peer_addresses, config.network.peer_addresses);
        assert_eq!(parsed.http.limits, config.http.limits);
        assert_eq!(parsed.node.trust.as_str(), "RAE");
        assert_eq!(parsed.node.trust_name, "Bradford \"BTHFT\"");
        assert_eq!(parsed.ingest.keep_originals, KeepOriginals::Link);
        assert_eq!(parsed.users.ingest_roles, ["lab", "ingest"]);
        assert_eq!(parsed.users.proxy_secret_header, "x-slidemesh-proxy-secret");
        assert!(parsed.http.tls_cert.is_empty() && parsed.users.proxy_addresses.is_empty());
        assert_eq!(parsed.users.oidc_scopes, ["openid", "profile"]);
        assert_eq!(parsed.users.oidc_user_claim, "preferred_username");
        assert_eq!(parsed.users.oidc_roles_claim, "roles");
        assert_eq!(parsed.users.oidc_session_secs, 8 * 60 * 60);
        // Every mode reads back as written.
        for from in [UsersFrom::None, UsersFrom::Proxy, UsersFrom::Oidc] {
            let mut c = config.clone();
            c.users.from = from;
            c.users.oidc_issuer = "https://login.trust.nhs.uk".into();
            let parsed: NodeConfig = toml::from_str(&c.to_commented_toml()).unwrap();
            assert_eq!(parsed.users.from, from);
            assert_eq!(parsed.users.oidc_issuer, "https://login.trust.nhs.uk");
        }
    }

    fn config() -> NodeConfig {
        NodeConfig::new("RR8".parse().unwrap(), "Leeds".into(), "127.0.0.1:0".into())
    }

    fn behind_proxy() -> NodeConfig {
        let mut c = config();
        c.users.from = UsersFrom::Proxy;
        c.users.proxy_addresses = vec!["10.1.2.0/24".into()];
        c.users.proxy_secret_file = "proxy-secret".into();
        c
    }

    fn signing_on() -> NodeConfig {
        let mut c = config();
        c.users.from = UsersFrom::Oidc;
        c.users.oidc_issuer = "https://login.trust.nhs.uk/realms/staff".into();
        c.users.oidc_client_id = "slidemesh".into();
        c.users.oidc_redirect_url = "https://slides.trust.nhs.uk/auth/callback".into();
        c
    }

    #[test]
    fn serve_refuses_what_would_let_others_act_as_the_trust() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "[::]:11112".parse().unwrap();
        let dimse_loopback: SocketAddr = "[::1]:11112".parse().unwrap();
        let scanner = |mut c: NodeConfig| {
            c.dimse.calling_ae_titles = vec!["SCANNER1".into()];
            c
        };
        let cors_any = |mut c: NodeConfig| {
            c.http.cors_origins = vec!["*".into()];
            c
        };
        let no_secret = |mut c: NodeConfig| {
            c.users.proxy_secret_file.clear();
            c
        };
        let no_proxy = |mut c: NodeConfig| {
            c.users.proxy_addresses.clear();
            c
        };
        let everyone = |mut c: NodeConfig| {
            c.users.proxy_addresses = vec!["0.0.0.0/0".into()];
            c
        };
        let cert_only = |mut c: NodeConfig| {
            c.http.tls_cert = "cert.pem".into();
            c
        };
        let oidc = |mut c: NodeConfig, edit: fn(&mut UsersSection)| {
            edit(&mut c.users);
            c
        };
        // (config, http, dimse, refusal naming this, or None: accepted)
        let cases: Vec<(NodeConfig, SocketAddr, Vec<SocketAddr>, Option<&str>)> = vec![
            (config(), loopback, vec![], None),
            (config(), any, vec![], Some("listen on loopback")),
            (scanner(config()), loopback, vec![dimse_loopback], None),
            (
                scanner(config()),
                loopback,
                vec![lan],
                Some("refusing to receive DICOM"),
            ),
            (
                config(),
                loopback,
                vec![dimse_loopback],
                Some("calling_ae_titles"),
            ),
            (cors_any(config()), loopback, vec![], None),
            (behind_proxy(), any, vec![], None),
            (scanner(behind_proxy()), any, vec![lan], None),
            (behind_proxy(), any, vec![lan], Some("calling_ae_titles")),
            (
                no_secret(behind_proxy()),
                any,
                vec![],
                Some("proxy_secret_file"),
            ),
            (
                no_proxy(behind_proxy()),
                any,
                vec![],
                Some("proxy_addresses"),
            ),
            (everyone(behind_proxy()), any, vec![], Some("every address")),
            (cors_any(behind_proxy()), any, vec![], Some("cors_origins")),
            (cert_only(config()), loopback, vec![], Some("tls_key")),
            // Signing on at the trust's OpenID provider is sign-on too.
            (signing_on(), any, vec![], None),
            (scanner(signing_on()), any, vec![lan], None),
            (cors_any(signing_on()), any, vec![], Some("cors_origins")),
            (
                oidc(signing_on(), |u| u.oidc_issuer.clear()),
                any,
                vec![],
                Some("needs oidc_issuer"),
            ),
            (
                oidc(signing_on(), |u| u.oidc_client_id.clear()),
                any,
                vec![],
                Some("needs oidc_client_id"),
            ),
            (
                oidc(signing_on(), |u| u.oidc_redirect_url.clear()),
                any,
                vec![],
                Some("needs oidc_redirect_url"),
            ),
            (
                oidc(signing_on(), |u| {
                    u.oidc_issuer = "http://login.trust.nhs.uk".into()
                }),
                any,
                vec![],
                Some("plain http"),
            ),
            (
                oidc(signing_on(), |u| {
                    u.oidc_redirect_url = "http://slides.trust.nhs.uk/auth/callback".into()
                }),
                any,
                vec![],
                Some("plain http"),
            ),
            (
                oidc(signing_on(), |u| {
                    u.oidc_redirect_url = "https://slides.trust.nhs.uk/callback".into()
                }),
                any,
                vec![],
                Some("/auth/callback"),
            ),
            (
                oidc(signing_on(), |u| {
                    u.oidc_issuer = "http://127.0.0.1:9000".into();
                    u.oidc_redirect_url = "http://localhost:8080/auth/callback".into();
                }),
                loopback,
                vec![],
                None,
            ),
            (
                oidc(signing_on(), |u| {
                    u.oidc_issuer = "login.trust.nhs.uk".into()
                }),
                any,
                vec![],
                Some("is not a URL"),
            ),
        ];
        for (i, (config, http, dimse, refusal)) in cases.into_iter().enumerate() {
            match (config.check_edge(http, &dimse), refusal) {
                (Ok(()), None) => {}
                (Err(e), Some(needle)) => {
                    assert!(e.to_string().contains(needle), "case {i}: {e}")
                }
                (outcome, _) => panic!("case {i}: {outcome:?}, expected {refusal:?}"),
            }
        }
    }

    #[test]
    fn proxy_addresses_are_addresses_or_networks() {
        let nets =
            proxy_networks(&["10.1.2.5".into(), "10.1.3.7/24".into(), "::1".into()]).unwrap();
        let contains = |ip: &str| {
            nets.iter()
                .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
        };
        assert!(contains("10.1.2.5") && contains("10.1.3.200") && contains("::1"));
        assert!(!contains("10.1.2.6") && !contains("10.1.4.1"));
        assert!(proxy_networks(&["proxy.trust.nhs.uk".into()]).is_err());
        assert!(proxy_networks(&["::/0".into()]).is_err());
    }
}
