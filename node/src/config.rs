//! `config.toml`: the operator's settings for one node, and its commented template.

use std::path::Path;

use anyhow::{Context, Result};
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
}

/// Who the HTTP API and web UI act for: the trust itself, or the person the trust's single
/// sign-on proxy authenticated.
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
    /// as the trust (scripts on the node's own host). Ignored with `from = "none"`.
    #[serde(default = "default_required")]
    pub required: bool,
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
}

impl Default for UsersSection {
    fn default() -> Self {
        Self {
            from: UsersFrom::None,
            user_header: default_user_header(),
            role_header: default_role_header(),
            required: default_required(),
        }
    }
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
    /// AE titles of senders (scanners, PACS) allowed to associate; empty admits any.
    #[serde(default)]
    pub calling_ae_titles: Vec<String>,
}

impl Default for DimseSection {
    fn default() -> Self {
        Self {
            listen: String::new(),
            ae_title: default_ae_title(),
            calling_ae_titles: Vec::new(),
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
    /// statement (a copy follows the owner's edits within this).
    #[serde(default = "default_consent_refresh_secs")]
    pub consent_refresh_secs: u64,
    /// Seconds between audit checkpoints co-signed by the members.
    #[serde(default = "default_audit_checkpoint_secs")]
    pub audit_checkpoint_secs: u64,
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
        }
    }
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
            },
            ingest: IngestSection::default(),
            network: NetworkSection::default(),
            dimse: DimseSection::default(),
            users: UsersSection::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))
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
# e.g. ["https://viewer.trust.nhs.uk"]; "*" allows any page. Empty: only the node's own UI.
cors_origins = {cors}

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
# statement: a slide here follows the owner's consent, policy and opt-out edits within this
# (revocations are pushed at once). A refused fetch is retried no sooner than this.
consent_refresh_secs = 600
# Seconds between checkpoints of the audit log, each co-signed by the other members.
audit_checkpoint_secs = 60

[dimse]
# DICOM receiver (C-ECHO, C-STORE) for scanners and PACS pushing slides, e.g.
# "127.0.0.1:11112"; empty: off. `slidemesh serve --dimse` overrides it for one run.
# Received instances are ingested when the sender releases the association.
listen = {dimse_listen}
# This node's AE title: associations calling another title are refused.
ae_title = {ae_title}
# AE titles allowed to send (your scanners and PACS); empty admits any caller.
calling_ae_titles = {callers}

[users]
# Who the web UI and API act for. "none": every request acts as this trust, and peers' and
# owners' policies see the trust. "proxy": the trust's single sign-on proxy in front of this
# node authenticates each person and names them in the two headers below; owners' policies
# then decide per person and role (principal Slidemesh::User::"TRUST/account"), and both
# sides' audit logs name them. With "proxy", only the proxy may reach [http] listen: anyone
# else could set the headers.
from = "{users_from}"
user_header = {user_header}
role_header = {role_header}
# With "proxy": refuse requests that name no one (401), so nothing is seen without a named
# person; false lets them act as the trust (scripts on this host). Ignored with "none".
required = {users_required}
"#,
            users_from = match self.users.from {
                UsersFrom::None => "none",
                UsersFrom::Proxy => "proxy",
            },
            user_header = toml_string(&self.users.user_header),
            role_header = toml_string(&self.users.role_header),
            users_required = self.users.required,
            dimse_listen = toml_string(&self.dimse.listen),
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
        let parsed: NodeConfig = toml::from_str(&config.to_commented_toml()).unwrap();
        assert_eq!(parsed.network.peer_addresses, config.network.peer_addresses);
        assert_eq!(parsed.node.trust.as_str(), "RAE");
        assert_eq!(parsed.node.trust_name, "Bradford \"BTHFT\"");
        assert_eq!(parsed.ingest.keep_originals, KeepOriginals::Link);
    }
}
