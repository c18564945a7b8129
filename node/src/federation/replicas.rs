//! Replicas this node holds for other trusts: slides whose owner named this trust a
//! replica with a `replicate` grant, so the slide stays available to its other grantees
//! while the owner's site or link is down.
//!
//! A replica is a shared slide kept under its replicate grant (manifest and the owner's
//! signed consent statement fetched and refreshed like any other, [`super::manifests`]),
//! whose every tile is fetched in the background, hashed against its id on arrival, and
//! pinned in the tile cache (never evicted while the grant holds). The loop here:
//! - fetches the tiles not pinned yet, one batch at a time behind this trust's viewers and
//!   at most `tiles_per_second`; resumable across restarts (the pins are on disk);
//! - announces this node as a source of the slide (Kademlia), so grantees find it when the
//!   owner does not answer;
//! - releases replicas no longer granted (revoked, expired, or ended by the owner): their
//!   tiles become ordinary cached tiles, or go with the slide.
//!
//! What the replica trust's own people may do is decided as everywhere
//! ([`crate::access::decide`]): nothing under a replicate grant. What the replica serves to
//! others is decided with the owner's rules (its signed statement), as for any copy.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use slidemesh_protocol::{Action, SignedGrant, SlideId, TileId, TrustCode};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Federation;
use super::remote::{BatchClass, lock};
use crate::store::federation::{CopyKind, StoredGrant};
use crate::store::now_unix;

/// Tiles asked of a source in one background batch.
const REPLICA_BATCH: usize = 128;
/// Background batches of one replica in flight at once (each still waits for a quiet link).
const REPLICA_IN_FLIGHT: usize = 4;

/// How the replica loop paces itself (`[network]` in config.toml).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    pub tiles_per_second: u32,
    /// Between checks of every replica (a new replicate grant starts one at once).
    pub check_every: Duration,
}

/// What the loop learnt of each replica, for `slidemesh replicas`.
#[derive(Default)]
pub struct ReplicaState {
    progress: std::sync::Mutex<HashMap<SlideId, Progress>>,
    /// Told when a replicate grant's manifest arrived, so the loop starts on it now.
    pub(super) wanted: tokio::sync::Notify,
}

#[derive(Default, Clone)]
struct Progress {
    /// When every tile was pinned (this run of the node).
    complete_at: Option<u64>,
    last_error: Option<String>,
    /// Tiles fetched by this run of the node.
    fetched: u64,
}

/// One replica as `slidemesh replicas` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub slide: SlideId,
    pub owner: TrustCode,
    pub grant: slidemesh_protocol::GrantId,
    pub expires_at: u64,
    /// Tiles of the slide, and those held (each hashed against its id when it arrived).
    pub tiles: usize,
    pub held: usize,
    pub bytes: u64,
    /// When the owner issued the rules this replica decides with; `lag_secs` is their age.
    pub rules_issued_at: Option<u64>,
    pub lag_secs: Option<u64>,
    pub state: &'static str,
    pub fetched_this_run: u64,
    pub last_error: Option<String>,
}

/// A replica of one of this trust's slides, named by a replicate grant issued here.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaNamed {
    pub slide: SlideId,
    pub replica: TrustCode,
    pub grant: slidemesh_protocol::GrantId,
    pub expires_at: u64,
}

/// A replicate grant this node holds, and the slide's tiles once its manifest is here.
struct Held {
    stored: StoredGrant,
    /// `None`: no manifest yet (the received-grants loop fetches it).
    tiles: Option<Vec<TileId>>,
    rules_issued_at: Option<u64>,
}

impl Federation {
    /// Replicate grants received and in force here (unexpired, not revoked by their
    /// issuer), with their slides' tiles. Reads the store: call from a blocking context.
    fn held_replicas(&self) -> Result<Vec<Held>, String> {
        let store = &self.holdings.store;
        let roster = self.holdings.membership.roster();
        let now = now_unix();
        let mut out = Vec::new();
        for stored in store.grants().map_err(|e| e.to_string())? {
            let grant = &stored.grant;
            if stored.issued_here
                || grant.action != Action::Replicate
                || grant.grantee != self.holdings.trust
                || grant.expires_at <= now
            {
                continue;
            }
            let id = stored.signed.id();
            let revocations = store.revocations(&id).map_err(|e| e.to_string())?;
            let revoked = match &roster {
                Some(roster) => {
                    crate::access::grant::revoked_by_issuer(&id, grant, &revocations, roster)
                }
                None => true,
            };
            if revoked {
                continue;
            }
            let remote = store
                .copy(CopyKind::Replica, &grant.slide)
                .map_err(|e| e.to_string())?
                .filter(|r| r.grant == id && r.deidentified.is_none());
            let statement = remote
                .as_ref()
                .and_then(|r| r.consent.as_ref())
                .and_then(|c| c.verify().ok());
            // The owner's latest word: a grant its statement no longer lists holds no more,
            // whether or not the revocation reached this node.
            if statement.as_ref().is_some_and(|s| !s.lists(&id)) {
                continue;
            }
            // Each tile once (a slide may repeat one, a blank background tile say).
            let tiles = remote
                .as_ref()
                .and_then(|r| r.signed.verify().ok())
                .map(|m| {
                    let mut tiles: Vec<TileId> = m.all_tiles().copied().collect();
                    tiles.sort_unstable();
                    tiles.dedup();
                    tiles
                });
            let rules_issued_at = statement.map(|s| s.issued_at);
            out.push(Held {
                stored,
                tiles,
                rules_issued_at,
            });
        }
        Ok(out)
    }

    /// The replicas this trust named for its own slides (replicate grants issued here,
    /// unexpired and not revoked). How far each replica is along is the replica's to say.
    pub async fn replicas_named(self: &Arc<Self>) -> Result<Vec<ReplicaNamed>, String> {
        let store = self.holdings.store.clone();
        tokio::task::spawn_blocking(move || {
            let now = now_unix();
            let mut out = Vec::new();
            for stored in store.grants().map_err(|e| e.to_string())? {
                let g = &stored.grant;
                if !stored.issued_here || g.action != Action::Replicate || g.expires_at <= now {
                    continue;
                }
                let id = stored.signed.id();
                if !store
                    .revocations(&id)
                    .map_err(|e| e.to_string())?
                    .is_empty()
                {
                    continue;
                }
                out.push(ReplicaNamed {
                    slide: g.slide,
                    replica: g.grantee.clone(),
                    grant: id,
                    expires_at: g.expires_at,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Each replica held here and how far along it is.
    pub async fn replicas(self: &Arc<Self>) -> Result<Vec<ReplicaStatus>, String> {
        let fed = self.clone();
        let held = tokio::task::spawn_blocking(move || fed.held_replicas())
            .await
            .map_err(|e| e.to_string())??;
        let pinned = self.holdings.cache.pinned_slides();
        let progress = lock(&self.replicas.progress).clone();
        let now = now_unix();
        Ok(held
            .into_iter()
            .map(|h| {
                let slide = h.stored.grant.slide;
                let stats = pinned.get(&slide).copied().unwrap_or_default();
                let p = progress.get(&slide).cloned().unwrap_or_default();
                let tiles = h.tiles.as_ref().map_or(0, Vec::len);
                let state = match &h.tiles {
                    None => "waiting for the owner's manifest",
                    Some(_) if stats.tiles >= tiles => "complete",
                    Some(_) => "fetching",
                };
                ReplicaStatus {
                    slide,
                    owner: h.stored.grant.owner.clone(),
                    grant: h.stored.signed.id(),
                    expires_at: h.stored.grant.expires_at,
                    tiles,
                    held: stats.tiles,
                    bytes: stats.bytes,
                    rules_issued_at: h.rules_issued_at,
                    lag_secs: h.rules_issued_at.map(|at| now.saturating_sub(at)),
                    state,
                    fetched_this_run: p.fetched,
                    last_error: p.last_error,
                }
            })
            .collect())
    }

    /// One pass over the replicas: releases those no longer granted, then fetches and pins
    /// every missing tile of the others. Returns the tiles pinned by this pass.
    pub async fn replicate_pass(self: &Arc<Self>, settings: ReplicaSettings) -> usize {
        let fed = self.clone();
        let held = match tokio::task::spawn_blocking(move || fed.held_replicas()).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot list the replicas held here");
                return 0;
            }
            Err(_) => return 0,
        };
        let granted: HashSet<SlideId> = held.iter().map(|h| h.stored.grant.slide).collect();
        for slide in self.holdings.cache.pinned_slides().into_keys() {
            if !granted.contains(&slide) {
                let holdings = self.holdings.clone();
                // Its tiles go, unless the slide is still shared with this trust's people.
                let released = tokio::task::spawn_blocking(move || {
                    let still_shared = holdings
                        .store
                        .remote_slide(&slide)
                        .map_err(io::Error::other)?
                        .is_some();
                    holdings.cache.unpin_slide(&slide, still_shared)
                })
                .await;
                match released {
                    Ok(Ok(tiles)) => {
                        info!(%slide, tiles, "replica released: no replicate grant holds");
                    }
                    Ok(Err(e)) => warn!(%slide, error = %e, "cannot release a replica"),
                    Err(_) => {}
                }
                lock(&self.replicas.progress).remove(&slide);
            }
        }
        let (held_tiles, missing_tiles) = {
            let pinned = self.holdings.cache.pinned_slides();
            held.iter().fold((0, 0), |(have, lack), h| {
                let all = h.tiles.as_ref().map_or(0, Vec::len);
                let got = pinned.get(&h.stored.grant.slide).map_or(0, |p| p.tiles);
                (have + got, lack + all.saturating_sub(got))
            })
        };
        let metrics = crate::metrics::metrics();
        metrics.replica_tiles_held.set(held_tiles as i64);
        metrics.replica_tiles_missing.set(missing_tiles as i64);
        let mut pinned = 0;
        for h in held {
            let Some(tiles) = h.tiles else { continue };
            let slide = h.stored.grant.slide;
            let span = info_span!("replica", %slide, owner = %h.stored.grant.owner);
            pinned += self
                .fill_replica(slide, &tiles, &h.stored.signed, settings)
                .instrument(span)
                .await;
        }
        pinned
    }

    /// Fetches and pins the tiles of one replica not pinned yet (`tiles`: each once).
    async fn fill_replica(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: &[TileId],
        grant: &SignedGrant,
        settings: ReplicaSettings,
    ) -> usize {
        let cache = &self.holdings.cache;
        let missing_now = || {
            let held = cache.pinned_to(&slide);
            tiles
                .iter()
                .filter(|t| !held.contains(t))
                .copied()
                .collect::<Vec<TileId>>()
        };
        let missing = missing_now();
        if missing.is_empty() {
            self.replica_complete(slide).await;
            return 0;
        }
        info!(missing = missing.len(), of = tiles.len(), "filling replica");
        let per_tile = Duration::from_secs_f64(1.0 / f64::from(settings.tiles_per_second.max(1)));
        let began = tokio::time::Instant::now();
        // A few batches in flight (one stream's round trips would bound the rate), each
        // starting no sooner than the pace allows: batch i at i batches' worth of time.
        let gave_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let chunks: Vec<Vec<TileId>> = missing
            .chunks(REPLICA_BATCH)
            .map(<[TileId]>::to_vec)
            .collect();
        let batches: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let due = began + per_tile * (i * REPLICA_BATCH) as u32;
                let (fed, grant, gave_up) = (self.clone(), grant.clone(), gave_up.clone());
                async move {
                    tokio::time::sleep_until(due).await;
                    // Batches after one that came back short are not started (a batch is
                    // never dropped half-way: its flights would be left for ever).
                    if gave_up.load(std::sync::atomic::Ordering::SeqCst) {
                        return (0, 0);
                    }
                    // Stored pinned as they arrive ([`BatchClass::Replica`]). Tiles cached
                    // for another slide are never pinned to this one: a replica's tiles
                    // come from this slide's own sources.
                    let arrived = fed.fetch_for_replica(slide, &chunk, &grant).await;
                    (chunk.len(), arrived.len())
                }
            })
            .collect();
        let mut batches = futures::stream::iter(batches).buffer_unordered(REPLICA_IN_FLIGHT);
        let mut fetched = 0;
        let mut short = 0;
        while let Some((asked, arrived)) = batches.next().await {
            fetched += arrived;
            lock(&self.replicas.progress)
                .entry(slide)
                .or_default()
                .fetched += arrived as u64;
            crate::metrics::metrics()
                .replica_tiles_fetched
                .inc_by(arrived as u64);
            if arrived < asked {
                // The sources are down or refuse: the rest wait for the next check.
                short += asked - arrived;
                gave_up.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if short > 0 {
            self.replica_failed(
                slide,
                format!("{short} tiles could not be fetched; trying again at the next check"),
            );
            return fetched;
        }
        // Complete only when every tile is pinned (one evicted before its pin is fetched
        // again at the next check).
        let left = missing_now().len();
        if left == 0 {
            self.replica_complete(slide).await;
        } else {
            self.replica_failed(
                slide,
                format!("{left} tiles not held yet; fetched at the next check"),
            );
        }
        fetched
    }

    /// Fetches `tiles` of a replica (hashed against their ids on arrival, stored pinned)
    /// under its replicate grant; returns those that arrived. Tiles in flight for someone
    /// else are left for the next check.
    async fn fetch_for_replica(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: &[TileId],
        grant: &SignedGrant,
    ) -> Vec<TileId> {
        let (fresh, receivers) = self.start_flights(tiles);
        if !fresh.is_empty() {
            self.clone()
                .fetch_batch(slide, fresh, BatchClass::Replica, None, Some(grant.clone()))
                .await;
        }
        let mut arrived = Vec::new();
        for (tile, rx) in receivers {
            if let Ok(Ok(_)) = rx.await {
                arrived.push(tile);
            }
        }
        debug!(%slide, asked = tiles.len(), arrived = arrived.len(), "replica batch");
        arrived
    }

    async fn replica_complete(&self, slide: SlideId) {
        let first = {
            let mut progress = lock(&self.replicas.progress);
            let p = progress.entry(slide).or_default();
            p.last_error = None;
            let first = p.complete_at.is_none();
            p.complete_at.get_or_insert_with(now_unix);
            first
        };
        if first {
            info!(%slide, "replica complete");
        }
        // A source for the slide from now on: grantees find this node when the owner is down.
        self.announce_source(&self.network, slide).await;
    }

    fn replica_failed(&self, slide: SlideId, error: String) {
        warn!(%slide, error, "replica incomplete");
        let mut progress = lock(&self.replicas.progress);
        let p = progress.entry(slide).or_default();
        p.last_error = Some(error);
        p.complete_at = None;
    }
}

/// Runs the replica loop: a pass every `check_every`, and at once when a replicate grant's
/// manifest arrived.
pub async fn run(fed: Arc<Federation>, settings: ReplicaSettings) {
    let mut every = tokio::time::interval(settings.check_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = fed.replicas.wanted.notified() => {}
        }
        fed.replicate_pass(settings).await;
    }
}

/// The answer a flight's waiter gets.
pub(super) type FlightAnswer = oneshot::Receiver<Result<Vec<u8>, String>>;
