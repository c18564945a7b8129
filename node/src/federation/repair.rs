//! The running node's scrub: each pass re-verifies the originals and the cached tiles
//! ([`crate::scrub`]) and repairs what it can from other copies: a corrupt tile of one of
//! this trust's originals is fetched back from a replica it named (or any member holding
//! the slide, found through the DHT), hashed against its id on arrival, and written back
//! at its ranges. A rotten cached tile is dropped; a replica's is fetched again by the
//! replica loop at once.
//!
//! Passes run every `[scrub] every_hours`, paced, or at once and unpaced when asked
//! (`POST /api/v1/scrub`, which `slidemesh scrub --now` uses). One pass at a time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use slidemesh_protocol::wire::TileRequest;
use slidemesh_protocol::{Action, SignedGrant, SlideId, TileId};
use tracing::{info, warn};

use super::Federation;
use super::remote::lock;
use crate::scrub::{self, Finding, ScrubProgress, ScrubReport, ScrubSettings, ScrubState};
use crate::store::now_unix;

/// A tile's ranges in its original file: (offset, length) of each fragment.
type Ranges = Vec<(u64, u32)>;

/// How long after start the first background pass begins (start-up settles first).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
/// Longest a repair waits on one source.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// The scrub's shared state: progress, the last report, the "now" button.
#[derive(Default)]
pub struct Scrub {
    pub progress: ScrubProgress,
    last: std::sync::Mutex<Option<ScrubReport>>,
    now: tokio::sync::Notify,
}

impl Scrub {
    /// Asks for a pass now, unpaced. `false` when one is running already.
    pub fn start_now(&self) -> bool {
        if self.progress.running.load(Ordering::SeqCst) {
            return false;
        }
        self.now.notify_one();
        true
    }

    pub fn last(&self) -> Option<ScrubReport> {
        lock(&self.last).clone()
    }
}

impl Federation {
    /// One scrub pass (`bytes_per_second` 0: unpaced): originals, then cached tiles, with
    /// repairs. Returns its report.
    pub async fn scrub_pass(self: &Arc<Self>, bytes_per_second: u64) -> ScrubReport {
        let progress = &self.scrub.progress;
        progress.running.store(true, Ordering::SeqCst);
        progress.total_bytes.store(
            {
                let stats = self.holdings.cache.stats();
                stats.bytes + stats.pinned.bytes
            },
            Ordering::SeqCst,
        );
        progress.done_bytes.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let mut report = ScrubReport {
            started_at: now_unix(),
            ..Default::default()
        };
        let metrics = crate::metrics::metrics();

        // Originals.
        let fed = self.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            scrub::scrub_originals(
                &fed.holdings.store,
                fed.holdings.reader.objects(),
                bytes_per_second,
                &fed.scrub.progress,
            )
        })
        .await;
        let damaged = match hashed {
            Ok(Ok((count, bytes, damaged))) => {
                report.originals = count;
                report.original_bytes = bytes;
                metrics.scrub_bytes.inc_by(bytes);
                damaged
            }
            Ok(Err(e)) => {
                warn!(error = %e, "cannot list the originals to scrub");
                report.findings.push(Finding {
                    what: "original".into(),
                    id: String::new(),
                    detail: format!("cannot list the originals: {e:#}"),
                    repaired: false,
                });
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let reader = &self.holdings.reader;
        // A suspect found whole again (repaired, or restored from backup) is served as usual.
        for object in reader.suspects() {
            if !damaged.iter().any(|d| d.object == object) {
                reader.set_suspect(object, false);
                info!(%object, "original whole again; no longer suspect");
            }
        }
        for damage in damaged {
            reader.set_suspect(damage.object, true);
            report.findings.push(self.repair_original(damage).await);
        }

        // Cached tiles.
        let fed = self.clone();
        let scrubbed = tokio::task::spawn_blocking(move || {
            let progress = &fed.scrub.progress;
            fed.holdings
                .cache
                .scrub(|n| _ = progress.done_bytes.fetch_add(n, Ordering::SeqCst))
        })
        .await;
        match scrubbed {
            Ok(Ok((tiles, bytes, dropped))) => {
                report.cached_tiles = tiles;
                report.cached_bytes = bytes;
                metrics.scrub_bytes.inc_by(bytes);
                for tile in &dropped {
                    report.findings.push(Finding {
                        what: "cached tile".into(),
                        id: tile.to_string(),
                        detail: "did not hash to its id: dropped, never served; fetched again \
                                 from the owner or another copy (a replica's at once)"
                            .into(),
                        repaired: true,
                    });
                }
                if !dropped.is_empty() {
                    self.replicas.wanted.notify_one();
                }
            }
            Ok(Err(e)) => report.findings.push(Finding {
                what: "cached tile".into(),
                id: String::new(),
                detail: format!("cannot read the tile cache: {e}"),
                repaired: false,
            }),
            Err(_) => {}
        }
        for finding in &report.findings {
            metrics
                .scrub_findings
                .get_or_create(&crate::metrics::FindingLabels {
                    what: finding.what.clone(),
                    repaired: finding.repaired.to_string(),
                })
                .inc();
        }
        report.seconds = started.elapsed().as_secs_f64();
        report.finished_at = Some(now_unix());
        info!(
            originals = report.originals,
            cached_tiles = report.cached_tiles,
            findings = report.findings.len(),
            unresolved = report.unresolved(),
            seconds = report.seconds,
            "scrub pass done"
        );
        *lock(&self.scrub.last) = Some(report.clone());
        progress.passes.fetch_add(1, Ordering::SeqCst);
        progress.running.store(false, Ordering::SeqCst);
        report
    }

    /// Repairs an original's corrupt tiles from other copies; says what came of it.
    async fn repair_original(self: &Arc<Self>, damage: scrub::Damage) -> Finding {
        let object = damage.object;
        let why = damage.describe();
        warn!(%object, slide = %damage.slide, corrupt_tiles = damage.tiles.len(), why, "original corrupt");
        let finding = |detail: String, repaired: bool| Finding {
            what: "original".into(),
            id: object.to_string(),
            detail,
            repaired,
        };
        if damage.tiles.is_empty() {
            return finding(why, false);
        }
        let total = damage.tiles.len();
        let (repaired, sources) = self
            .repair_tiles(damage.slide, object, damage.tiles.clone())
            .await;
        let fed = self.clone();
        let slide = damage.slide;
        // Checked again as a whole: intact tiles, intact rest.
        let again = tokio::task::spawn_blocking(move || {
            let originals = scrub::originals(&fed.holdings.store).ok()?;
            let original = originals.into_iter().find(|o| o.object == object)?;
            Some(scrub::check_original(
                fed.holdings.reader.objects(),
                &original,
            ))
        })
        .await
        .ok()
        .flatten();
        let whole = matches!(again, Some(None));
        if whole {
            self.holdings.reader.set_suspect(object, false);
        }
        let from = if sources.is_empty() {
            "no copy answered".to_string()
        } else {
            format!("from {}", sources.join(", "))
        };
        let detail = match (whole, repaired == total) {
            (true, _) => format!("{why}: {total} tile(s) repaired {from}; the file is whole again"),
            (false, true) => format!(
                "{why}: {total} tile(s) repaired {from}, but bytes outside tile data differ; \
                 restore the file from backup (its tiles are served, each checked)"
            ),
            (false, false) => format!(
                "{why}: {repaired} of {total} repaired ({from}); the rest are not served, and \
                 are tried again at the next pass"
            ),
        };
        info!(%slide, %object, repaired, total, whole, "repair of an original");
        finding(detail, whole)
    }

    /// Fetches `tiles` of one of this trust's own slides back from copies (the replicas it
    /// named first, then any holder the DHT knows), each hashed against its id on arrival,
    /// and writes them back. Returns how many were repaired, and from which trusts.
    async fn repair_tiles(
        self: &Arc<Self>,
        slide: SlideId,
        object: slidemesh_protocol::ObjectId,
        tiles: Vec<(TileId, Vec<(u64, u32)>)>,
    ) -> (usize, Vec<String>) {
        let store = self.holdings.store.clone();
        // The grants issued for the slide, by grantee: a copy answering its owner decides
        // as the owner's own node; the grant only says which slide is meant.
        let grants: Vec<(slidemesh_protocol::TrustCode, SignedGrant, bool)> =
            tokio::task::spawn_blocking(move || {
                store
                    .grants()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|g| g.issued_here && g.grant.slide == slide)
                    .map(|g| {
                        (
                            g.grant.grantee,
                            g.signed,
                            g.grant.action == Action::Replicate,
                        )
                    })
                    .collect()
            })
            .await
            .unwrap_or_default();
        let Some((_, any_grant, _)) = grants.first().cloned() else {
            return (0, Vec::new());
        };
        let membership = &self.holdings.membership;
        let mut candidates: Vec<PeerId> = Vec::new();
        let mut replicas: Vec<_> = grants.iter().filter(|(_, _, r)| *r).collect();
        replicas.extend(grants.iter().filter(|(_, _, r)| !*r));
        for (trust, _, _) in replicas {
            if let Some(peer) = membership.peer_of(trust)
                && !candidates.contains(&peer)
            {
                candidates.push(peer);
            }
        }
        let known = candidates.iter().copied().collect();
        if let Ok(Ok(found)) =
            tokio::time::timeout(Duration::from_secs(5), self.network.providers(slide, known)).await
        {
            candidates.extend(
                found
                    .into_iter()
                    .filter(|p| *p != self.network.local_peer_id()),
            );
        }
        let mut missing: HashMap<TileId, Ranges> = tiles.into_iter().collect();
        let mut repaired = 0;
        let mut from = Vec::new();
        for peer in candidates {
            if missing.is_empty() {
                break;
            }
            let trust = membership.trust_of(&peer);
            let grant = grants
                .iter()
                .find(|(t, _, _)| Some(t) == trust.as_ref())
                .map_or_else(|| any_grant.clone(), |(_, g, _)| g.clone());
            let ids: Vec<TileId> = missing.keys().copied().collect();
            for chunk in ids.chunks(slidemesh_protocol::wire::MAX_TILES_PER_REQUEST) {
                let request = TileRequest::new(slide, grant.clone(), chunk.to_vec(), None);
                let mut got: Vec<(TileId, Vec<u8>)> = Vec::new();
                let fetched = tokio::time::timeout(
                    REPAIR_TIMEOUT,
                    self.network.fetch_tiles(
                        peer,
                        crate::net::Lane::Prefetch,
                        &request,
                        |tile, bytes| got.push((tile, bytes)),
                    ),
                )
                .await;
                if let Ok(Err(e)) = &fetched {
                    info!(%peer, %slide, error = %e, "repair source refused or failed");
                }
                let objects = self.holdings.reader.objects().clone();
                let patches: Vec<(TileId, Ranges, Vec<u8>)> = got
                    .into_iter()
                    .filter_map(|(tile, bytes)| {
                        missing.get(&tile).map(|l| (tile, l.clone(), bytes))
                    })
                    .collect();
                let written = tokio::task::spawn_blocking(move || {
                    patches
                        .into_iter()
                        .filter_map(|(tile, ranges, bytes)| {
                            match scrub::patch_tile(&objects, &object, &ranges, &bytes) {
                                Ok(()) => Some(tile),
                                Err(e) => {
                                    warn!(%tile, error = %e, "cannot write a repaired tile back");
                                    None
                                }
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                if !written.is_empty() {
                    let label = trust
                        .as_ref()
                        .map_or_else(|| peer.to_string(), ToString::to_string);
                    if !from.contains(&label) {
                        from.push(label);
                    }
                }
                for tile in written {
                    missing.remove(&tile);
                    repaired += 1;
                }
            }
        }
        info!(%slide, repaired, still_missing = missing.len(), "tiles repaired from copies");
        (repaired, from)
    }
}

/// Runs the scrub: a paced pass every `settings.every` (the first a minute after start),
/// and an unpaced one whenever asked; the suspects and the last report are saved to
/// `state` after each pass.
pub async fn run(fed: Arc<Federation>, settings: ScrubSettings, state: PathBuf) {
    *lock(&fed.scrub.last) = ScrubState::load(&state).last;
    let mut next = tokio::time::Instant::now() + FIRST_PASS_AFTER;
    loop {
        let pace = tokio::select! {
            () = tokio::time::sleep_until(next) => settings.bytes_per_second,
            () = fed.scrub.now.notified() => 0,
        };
        let report = fed.scrub_pass(pace).await;
        next = tokio::time::Instant::now() + settings.every;
        let saved = ScrubState {
            suspects: fed.holdings.reader.suspects(),
            last: Some(report),
        };
        let path = state.clone();
        match tokio::task::spawn_blocking(move || saved.save(&path)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(path = %state.display(), error = %e, "cannot save the scrub's state")
            }
            Err(_) => {}
        }
    }
}
