//! What the node counts for its operators, served as Prometheus metrics (`GET /metrics`,
//! the OpenMetrics text format, by the `prometheus-client` crate): tiles served to this
//! trust's people over its API (from its own files, its cache, or fetched from a peer; not
//! yet DICOMweb frames of its own slides), tiles each peer was allowed, tiles fetched from each peer with the batch latency and each failure by kind,
//! access decisions by side, action and outcome (as the audit log commits them), the audit
//! log's health, and peers connected. Labels name trusts and actions, never a slide,
//! person or patient.
//!
//! One registry per process ([`metrics`]): counting is a handful of atomic additions where
//! the thing counted happens, so every part of the node counts without being handed the
//! registry.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A peer trust (its ODS code, or `unknown` for a peer not on the roster).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// Where a tile served to this trust's people came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `original` (this node's files), `cache` or `peer` (fetched for the request).
    pub source: String,
}

/// What a scrub found wrong (`original`, `cached tile`) and whether it was repaired.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub what: String,
    pub repaired: String,
}

/// One way a batch fetch from a peer failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub peer: String,
    /// `corrupt` (wrong bytes), `refused`, `interrupted` (each attempt), `timeout`,
    /// `skipped` (not asked: not answering lately, or found so during the batch).
    pub kind: String,
}

/// One access decision's kind, as the audit log records it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `served` (this node decided for another), `received` (another decided for this
    /// node), `local` (this node's own people), `referral_step`, `referral_notice`.
    pub side: String,
    pub action: String,
    /// `allowed` or `refused`.
    pub outcome: String,
}

type LatencyFamily = Family<PeerLabels, Histogram, fn() -> Histogram>;

/// Every metric the node keeps.
pub struct Metrics {
    registry: Registry,
    pub tiles_served: Family<SourceLabels, Counter>,
    pub tiles_served_to_peers: Family<PeerLabels, Counter>,
    pub tiles_fetched: Family<PeerLabels, Counter>,
    pub fetch_seconds: LatencyFamily,
    pub fetch_failures: Family<FailureLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub audit_entries: Counter,
    pub audit_write_failures: Counter,
    /// Entries waiting for the audit writer (0 when it keeps up; growing while the store
    /// refuses writes, a full disk say).
    pub audit_waiting: Gauge,
    pub peers_connected: Gauge,
    /// Tiles fetched for replicas held here (verified, then pinned).
    pub replica_tiles_fetched: Counter,
    /// Tiles of replicas held here, and those missing (set by each replica check).
    pub replica_tiles_held: Gauge,
    pub replica_tiles_missing: Gauge,
    /// Bytes the scrub hashed (originals and cached tiles), and what it found.
    pub scrub_bytes: Counter,
    pub scrub_findings: Family<FindingLabels, Counter>,
    /// `tiles_served` by source, resolved once (the tile paths count without a lookup).
    pub served_original: Counter,
    pub served_cache: Counter,
    pub served_peer: Counter,
}

fn latency() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("slidemesh");
        let m = Self {
            registry: Registry::default(),
            tiles_served: Family::default(),
            tiles_served_to_peers: Family::default(),
            tiles_fetched: Family::default(),
            fetch_seconds: Family::new_with_constructor(latency),
            fetch_failures: Family::default(),
            decisions: Family::default(),
            audit_entries: Counter::default(),
            audit_write_failures: Counter::default(),
            audit_waiting: Gauge::default(),
            peers_connected: Gauge::default(),
            replica_tiles_fetched: Counter::default(),
            replica_tiles_held: Gauge::default(),
            replica_tiles_missing: Gauge::default(),
            scrub_bytes: Counter::default(),
            scrub_findings: Family::default(),
            served_original: Counter::default(),
            served_cache: Counter::default(),
            served_peer: Counter::default(),
        };
        let source =
            |m: &Self, name: &str| m.tiles_served.get_or_create(&Self::source(name)).clone();
        let m = Self {
            served_original: source(&m, "original"),
            served_cache: source(&m, "cache"),
            served_peer: source(&m, "peer"),
            ..m
        };
        // Families and counters are shared handles: the registry's clones count with them.
        let r = &mut registry;
        r.register(
            "tiles_served",
            "Tiles served to this trust's people, by where they came from",
            m.tiles_served.clone(),
        );
        r.register(
            "peer_tiles_served",
            "Tiles each peer trust asked for and was allowed",
            m.tiles_served_to_peers.clone(),
        );
        r.register(
            "peer_tiles_fetched",
            "Tiles fetched from each peer trust, verified",
            m.tiles_fetched.clone(),
        );
        r.register(
            "peer_fetch_seconds",
            "Time until a batch's last tile arrived, by peer trust",
            m.fetch_seconds.clone(),
        );
        r.register(
            "peer_fetch_failures",
            "Batch fetches from a peer that failed, by peer trust and kind",
            m.fetch_failures.clone(),
        );
        r.register(
            "decisions",
            "Access decisions committed to the audit log, by side, action and outcome",
            m.decisions.clone(),
        );
        r.register(
            "audit_entries",
            "Entries committed to the audit log",
            m.audit_entries.clone(),
        );
        r.register(
            "audit_write_failures",
            "Audit log commits that failed (each retried; nothing they cover is served)",
            m.audit_write_failures.clone(),
        );
        r.register(
            "audit_waiting_entries",
            "Entries waiting for the audit writer",
            m.audit_waiting.clone(),
        );
        r.register(
            "peers_connected",
            "Member nodes connected now",
            m.peers_connected.clone(),
        );
        r.register(
            "replica_tiles_fetched",
            "Tiles fetched for the replicas this node holds for other trusts",
            m.replica_tiles_fetched.clone(),
        );
        r.register(
            "replica_tiles_held",
            "Tiles of the replicas this node holds, verified and pinned",
            m.replica_tiles_held.clone(),
        );
        r.register(
            "replica_tiles_missing",
            "Tiles of the replicas this node holds not fetched yet",
            m.replica_tiles_missing.clone(),
        );
        r.register(
            "scrub_bytes",
            "Bytes the scrub hashed against their ids (originals and cached tiles)",
            m.scrub_bytes.clone(),
        );
        r.register(
            "scrub_findings",
            "What the scrub found not matching its id, and whether it was repaired",
            m.scrub_findings.clone(),
        );
        Self { registry, ..m }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn peer(peer: impl ToString) -> PeerLabels {
        PeerLabels {
            peer: peer.to_string(),
        }
    }

    pub fn source(source: &str) -> SourceLabels {
        SourceLabels {
            source: source.to_string(),
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The media type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_values_appear_in_the_text_with_their_labels() {
        let m = Metrics::new();
        m.tiles_fetched
            .get_or_create(&Metrics::peer("RR8"))
            .inc_by(3);
        m.fetch_seconds
            .get_or_create(&Metrics::peer("RR8"))
            .observe(0.02);
        m.decisions
            .get_or_create(&DecisionLabels {
                side: "served".into(),
                action: "fetch_tiles".into(),
                outcome: "refused".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("slidemesh_peer_tiles_fetched_total{peer=\"RR8\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("slidemesh_peer_fetch_seconds_count{peer=\"RR8\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "slidemesh_decisions_total{side=\"served\",action=\"fetch_tiles\",outcome=\"refused\"} 1"
        ), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
