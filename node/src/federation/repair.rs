//! The running node's scrub: each pass re-verifies the originals and the cached tiles
//! ([`crate::scrub`]) and repairs what it can from other copies: a corrupt tile of one of
//! this trust's originals is fetched back from a replica it named (a replica answers its
//! owner from the tiles it pinned for that slide, nothing else), hashed against its id on
//! arrival, and written into a copy of the original that replaces it once whole
//! ([`crate::scrub::repair_object`]). A rotten cached tile is dropped; a replica's is
//! fetched again by the replica loop at once.
//!
//! A damaged original is suspect (its tiles checked on every read) from the moment it is
//! found, and the suspects are saved at once. Passes run `[scrub] every_hours` after the
//! last one finished (across restarts), paced; sooner when one left something unrepaired;
//! at once and unpaced when asked (`POST /api/v1/scrub`, which `slidemesh scrub --now`
//! uses). One pass at a time; a stopping node ends its pass at the next original.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slidemesh_protocol::wire::TileRequest;
use slidemesh_protocol::{Action, SignedGrant, SlideId, TileId};
use tracing::{info, warn};

use super::Federation;
use super::remote::lock;
use crate::scrub::{self, Finding, Ranges, ScrubProgress, ScrubReport, ScrubSettings, ScrubState};
use crate::store::now_unix;

/// How long after start the first background pass begins at the earliest (start-up
/// settles first).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
/// When a pass left something unrepaired, the next one comes this soon (a replica may
/// have been down).
const RETRY_AFTER: Duration = Duration::from_secs(600);
/// Longest a repair waits on one source.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// The scrub's shared state: progress, the last report, the "now" button.
#[derive(Default)]
pub struct Scrub {
    pub progress: ScrubProgress,
    last: std::sync::Mutex<Option<ScrubReport>>,
    now: tokio::sync::Notify,
    /// `scrub.json`, once the loop runs.
    state: std::sync::OnceLock<PathBuf>,
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

    /// Ends a running pass at its next original (the node is stopping).
    pub fn stop(&self) {
        self.progress.stop.store(true, Ordering::SeqCst);
    }

    /// Saves the suspects and the last report (from a blocking context).
    fn save(&self, suspects: Vec<slidemesh_protocol::ObjectId>, last: Option<ScrubReport>) {
        let Some(path) = self.state.get() else {
            return;
        };
        if let Err(e) = (ScrubState { suspects, last }).save(path) {
            warn!(path = %path.display(), error = %e, "cannot save the scrub's state");
        }
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

        // Originals: each damaged one suspect, and saved so, the moment it is found.
        let fed = self.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            let reader = &fed.holdings.reader;
            scrub::scrub_originals(
                &fed.holdings.store,
                reader.objects(),
                bytes_per_second,
                &fed.scrub.progress,
                |damage| {
                    reader.set_suspect(damage.object, true);
                    fed.scrub.save(reader.suspects(), fed.scrub.last());
                },
            )
        })
        .await;
        let damaged = match hashed {
            Ok(Ok((count, bytes, checked, damaged))) => {
                report.originals = count;
                report.original_bytes = bytes;
                metrics.scrub_bytes.inc_by(bytes);
                // A suspect checked and found whole (repaired, or restored from backup) is
                // served as usual; one not checked (a pass cut short) stays suspect.
                let reader = &self.holdings.reader;
                for object in reader.suspects() {
                    if checked.contains(&object) && !damaged.iter().any(|d| d.object == object) {
                        reader.set_suspect(object, false);
                        info!(%object, "original whole again; no longer suspect");
                    }
                }
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
        for damage in damaged {
            report.findings.push(self.repair_original(damage).await);
        }

        // Cached tiles.
        if !progress.stop.load(Ordering::SeqCst) {
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
                            detail: "did not hash to its id: dropped, never served; fetched \
                                     again from the owner or another copy (a replica's at once)"
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
        let fed = self.clone();
        let saved = report.clone();
        let _ = tokio::task::spawn_blocking(move || {
            fed.scrub.save(fed.holdings.reader.suspects(), Some(saved));
        })
        .await;
        progress.passes.fetch_add(1, Ordering::SeqCst);
        progress.running.store(false, Ordering::SeqCst);
        report
    }

    /// Repairs an original's corrupt tiles from the replicas this trust named for its
    /// slide; says what came of it.
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
        if damage.tiles.is_empty() || !damage.rest_intact {
            return finding(why, false);
        }
        // Each corrupt tile once, with every place in the file that holds it (a slide may
        // repeat a tile, a blank one say).
        let mut places: HashMap<TileId, Vec<Ranges>> = HashMap::new();
        for (tile, ranges) in &damage.tiles {
            places.entry(*tile).or_default().push(ranges.clone());
        }
        let total = places.len();
        let (fetched, sources) = self
            .fetch_from_replicas(damage.slide, places.keys().copied().collect())
            .await;
        let fed = self.clone();
        let slide = damage.slide;
        let got = fetched.len();
        let outcome = tokio::task::spawn_blocking(move || {
            let original = scrub::original(&fed.holdings.store, &slide, &object)?
                .ok_or_else(|| anyhow::anyhow!("original {object} is no longer in the store"))?;
            let patches: Vec<scrub::Patch> = fetched
                .into_iter()
                .filter_map(|(tile, bytes)| places.remove(&tile).map(|p| (bytes, p)))
                .collect();
            if patches.is_empty() {
                return Ok(false);
            }
            let whole = scrub::repair_object(fed.holdings.reader.objects(), &original, &patches)?;
            if whole {
                // Open handles still read the replaced file.
                fed.holdings.reader.forget(&object);
                fed.holdings.reader.set_suspect(object, false);
                fed.scrub
                    .save(fed.holdings.reader.suspects(), fed.scrub.last());
            }
            Ok::<_, anyhow::Error>(whole)
        })
        .await;
        let from = if sources.is_empty() {
            "no replica answered".to_string()
        } else {
            format!("from {}", sources.join(", "))
        };
        match outcome {
            Ok(Ok(true)) => {
                info!(%slide, %object, total, "original repaired from replicas");
                finding(
                    format!("{why}: repaired {from}; the file is whole again"),
                    true,
                )
            }
            Ok(Ok(false)) => finding(
                format!(
                    "{why}: {got} of {total} had from replicas ({from}), not enough to make the \
                     file whole; its corrupt tiles are not served, and are tried again shortly"
                ),
                false,
            ),
            Ok(Err(e)) => finding(format!("{why}: the repair failed: {e:#}"), false),
            Err(e) => finding(format!("{why}: the repair failed: {e}"), false),
        }
    }

    /// Fetches `tiles` of one of this trust's own slides back from the replicas it named
    /// for it, each hashed against its id on arrival. Returns the tiles had, and from which
    /// trusts.
    async fn fetch_from_replicas(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: Vec<TileId>,
    ) -> (Vec<(TileId, Vec<u8>)>, Vec<String>) {
        let fed = self.clone();
        let replicas: Vec<(slidemesh_protocol::TrustCode, SignedGrant)> =
            tokio::task::spawn_blocking(move || {
                let now = now_unix();
                let store = &fed.holdings.store;
                store
                    .grants()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|g| {
                        g.issued_here
                            && g.grant.slide == slide
                            && g.grant.action == Action::Replicate
                            && g.grant.expires_at > now
                            && store
                                .revocations(&g.signed.id())
                                .is_ok_and(|r| r.is_empty())
                    })
                    .map(|g| (g.grant.grantee, g.signed))
                    .collect()
            })
            .await
            .unwrap_or_default();
        let mut wanted: std::collections::HashSet<TileId> = tiles.into_iter().collect();
        let mut had = Vec::new();
        let mut from = Vec::new();
        for (trust, grant) in replicas {
            if wanted.is_empty() {
                break;
            }
            let Some(peer) = self.holdings.membership.peer_of(&trust) else {
                continue;
            };
            let ids: Vec<TileId> = wanted.iter().copied().collect();
            let before = had.len();
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
                    info!(%peer, %slide, error = %e, "replica refused or failed a repair");
                }
                for (tile, bytes) in got {
                    if wanted.remove(&tile) {
                        had.push((tile, bytes));
                    }
                }
            }
            if had.len() > before {
                from.push(trust.to_string());
            }
        }
        (had, from)
    }
}

/// Runs the scrub: a paced pass `settings.every` after the last one finished (at the
/// earliest a minute after start; sooner after one that left something unrepaired), and
/// an unpaced one whenever asked. The suspects and the last report are saved to `state`.
pub async fn run(fed: Arc<Federation>, settings: ScrubSettings, state: PathBuf) {
    let last = ScrubState::load(&state).last;
    let _ = fed.scrub.state.set(state);
    // How long from now until the pass due after `last`.
    let due = |last: Option<&ScrubReport>| match last {
        Some(r) if r.unresolved() > 0 => RETRY_AFTER,
        Some(r) => {
            let finished = r.finished_at.unwrap_or(r.started_at);
            Duration::from_secs((finished + settings.every.as_secs()).saturating_sub(now_unix()))
        }
        None => Duration::ZERO,
    };
    let mut next = tokio::time::Instant::now() + FIRST_PASS_AFTER.max(due(last.as_ref()));
    *lock(&fed.scrub.last) = last;
    loop {
        let pace = tokio::select! {
            () = tokio::time::sleep_until(next) => settings.bytes_per_second,
            () = fed.scrub.now.notified() => 0,
        };
        let report = fed.scrub_pass(pace).await;
        next = tokio::time::Instant::now() + due(Some(&report));
    }
}
