//! Remote tiles for this node's own users: a shared slide's tiles come from peers, through
//! the on-disk cache.
//!
//! - Single flight: one fetch per tile however many viewers ask; later askers wait on it.
//! - Batching: tiles asked for within a couple of milliseconds of each other (a viewer asks
//!   for a whole viewport at once) go to a peer as one batch on one stream.
//! - Sources: the owner's node and any provider Kademlia knows for the slide, fastest first
//!   (by the last batch's time); a source that sends wrong bytes is dropped for the rest of
//!   the fetch and the batch is retried from the next one.
//! - Prefetch: the API asks for neighbours and the next zoom level without waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use slidemesh_protocol::wire::{MAX_TILES_PER_REQUEST, TileRequest};
use slidemesh_protocol::{SignedGrant, SlideId, TileId};
use tokio::sync::{Semaphore, oneshot};
use tracing::{Instrument, debug, info_span, warn};

use super::Federation;

/// How long a batch waits for more tiles after the first one arrived.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Largest batch sent to one peer.
const BATCH_MAX: usize = 128;
/// Batches in flight at once, across slides and peers.
const MAX_IN_FLIGHT: usize = 16;
/// How long one batch may take before the next source is tried.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

type Waiter = oneshot::Sender<Result<Vec<u8>, String>>;

/// Fetch bookkeeping shared by every request.
pub struct RemoteState {
    /// Tiles being fetched, with everyone waiting for each.
    in_flight: Mutex<HashMap<TileId, Vec<Waiter>>>,
    /// Tiles waiting to join a batch, per slide.
    queued: Mutex<HashMap<SlideId, Vec<TileId>>>,
    /// Seconds per batch of the last batch from each peer (smaller is faster).
    speed: Mutex<HashMap<PeerId, f64>>,
    permits: Arc<Semaphore>,
    /// Shared slides this node announced itself as a source for.
    providing: Mutex<std::collections::HashSet<SlideId>>,
}

impl Default for RemoteState {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashMap::new()),
            speed: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            providing: Mutex::new(std::collections::HashSet::new()),
        }
    }
}

/// Why a remote tile could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("slide {0} is not shared with this trust")]
    NotShared(SlideId),
    #[error("{0}")]
    Unavailable(String),
}

impl Federation {
    /// A tile of a shared slide: from the cache, else fetched from peers (verified).
    pub async fn remote_tile(
        self: &Arc<Self>,
        slide: SlideId,
        tile: TileId,
    ) -> Result<Vec<u8>, RemoteError> {
        let fed = self.clone();
        let cached = tokio::task::spawn_blocking(move || fed.cache.get(&tile))
            .await
            .ok()
            .flatten();
        if let Some(bytes) = cached {
            return Ok(bytes);
        }
        let (tx, rx) = oneshot::channel();
        self.enqueue(slide, &[tile], Some((tile, tx)));
        rx.await
            .map_err(|_| RemoteError::Unavailable("fetch abandoned".into()))?
            .map_err(RemoteError::Unavailable)
    }

    /// Starts fetching tiles nobody waits for yet (neighbours, the next zoom level).
    pub fn prefetch(self: &Arc<Self>, slide: SlideId, tiles: &[TileId]) {
        let wanted: Vec<TileId> = tiles
            .iter()
            .copied()
            .filter(|t| !self.cache.contains(t))
            .collect();
        if !wanted.is_empty() {
            self.enqueue(slide, &wanted, None);
        }
    }

    fn enqueue(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: &[TileId],
        waiter: Option<(TileId, Waiter)>,
    ) {
        let mut fresh = Vec::new();
        {
            let mut in_flight = self
                .remote
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for tile in tiles {
                if !in_flight.contains_key(tile) {
                    in_flight.insert(*tile, Vec::new());
                    fresh.push(*tile);
                }
            }
            if let Some((tile, tx)) = waiter {
                in_flight.entry(tile).or_default().push(tx);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let start_batch = {
            let mut queued = self.remote.queued.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queued.entry(slide).or_default();
            let first = queue.is_empty();
            queue.extend(fresh);
            first
        };
        if start_batch {
            let fed = self.clone();
            tokio::spawn(
                async move {
                    tokio::time::sleep(BATCH_WINDOW).await;
                    let tiles = fed
                        .remote
                        .queued
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&slide)
                        .unwrap_or_default();
                    for chunk in tiles.chunks(BATCH_MAX.min(MAX_TILES_PER_REQUEST)) {
                        let fed = fed.clone();
                        let chunk = chunk.to_vec();
                        tokio::spawn(async move { fed.fetch_batch(slide, chunk).await });
                    }
                }
                .instrument(info_span!("remote_batch", slide = %slide)),
            );
        }
    }

    /// Resolves everyone waiting for `tile`.
    fn finish(&self, tile: &TileId, result: Result<Vec<u8>, String>) {
        let waiters = self
            .remote
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tile)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }

    /// The grant this node holds for a shared slide.
    fn grant_for(&self, slide: &SlideId) -> Result<SignedGrant, String> {
        let remote = self
            .store
            .remote_slide(slide)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("slide {slide} is not shared with this trust"))?;
        let stored = self
            .store
            .grant(&remote.grant)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("grant {} is missing", remote.grant))?;
        Ok(stored.signed)
    }

    /// Candidate sources for a slide, fastest first: the owner, then Kademlia providers.
    async fn sources(&self, slide: &SlideId, owner: Option<PeerId>) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = owner.into_iter().collect();
        if let Some(network) = self.network() {
            let lookup = tokio::time::timeout(Duration::from_secs(2), network.providers(*slide));
            if let Ok(Ok(found)) = lookup.await {
                let local = network.local_peer_id();
                for p in found {
                    if p != local && !peers.contains(&p) {
                        peers.push(p);
                    }
                }
            }
        }
        let speed = self.remote.speed.lock().unwrap_or_else(|e| e.into_inner());
        peers.sort_by(|a, b| {
            let sa = speed.get(a).copied().unwrap_or(0.0);
            let sb = speed.get(b).copied().unwrap_or(0.0);
            sa.total_cmp(&sb)
        });
        peers
    }

    async fn fetch_batch(self: Arc<Self>, slide: SlideId, tiles: Vec<TileId>) {
        let Ok(_permit) = self.remote.permits.clone().acquire_owned().await else {
            return;
        };
        let fed = self.clone();
        let grant = match tokio::task::spawn_blocking(move || fed.grant_for(&slide)).await {
            Ok(Ok(grant)) => grant,
            Ok(Err(reason)) => return self.fail_all(&tiles, &reason),
            Err(e) => return self.fail_all(&tiles, &e.to_string()),
        };
        let owner = grant.verify().ok().and_then(|g| self.peer_of(&g.owner));
        let Some(network) = self.network().cloned() else {
            return self.fail_all(&tiles, "network not started");
        };
        let mut missing: Vec<TileId> = tiles;
        let mut last_error = String::from("no peer holds this slide");
        for peer in self.sources(&slide, owner).await {
            if missing.is_empty() {
                break;
            }
            let request = TileRequest {
                slide,
                grant: grant.clone(),
                tiles: missing.clone(),
            };
            let started = Instant::now();
            let mut got: Vec<(TileId, Vec<u8>)> = Vec::new();
            let outcome = tokio::time::timeout(
                BATCH_TIMEOUT,
                network.fetch_tiles(peer, &request, |tile, bytes| got.push((tile, bytes))),
            )
            .await;
            // Tiles verified before any failure are good whatever came after.
            for (tile, bytes) in got {
                if let Err(e) = self.cache.put(&tile, &bytes) {
                    warn!(%tile, error = %e, "cannot cache tile");
                }
                missing.retain(|t| *t != tile);
                self.finish(&tile, Ok(bytes));
            }
            match outcome {
                Ok(Ok(())) => {
                    self.remote
                        .speed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(peer, started.elapsed().as_secs_f64());
                    debug!(%peer, %slide, "batch fetched");
                    self.announce_source(&network, slide).await;
                }
                Ok(Err(e)) => {
                    if e.is_corrupt() {
                        warn!(%peer, %slide, error = %e, "peer sent wrong bytes; trying another source");
                    } else {
                        debug!(%peer, %slide, error = %e, "batch failed; trying another source");
                    }
                    last_error = e.to_string();
                }
                Err(_) => {
                    last_error = format!("{peer} timed out");
                    self.remote
                        .speed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(peer, BATCH_TIMEOUT.as_secs_f64());
                }
            }
        }
        self.fail_all(&missing, &last_error);
    }

    /// Once this node caches tiles of a shared slide it can serve them to other grantees
    /// (they present their own grant): say so through Kademlia, once per slide and run.
    async fn announce_source(&self, network: &crate::net::Network, slide: SlideId) {
        let first = self
            .remote
            .providing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slide);
        if first {
            let _ = network.provide(slide).await;
        }
    }

    fn fail_all(&self, tiles: &[TileId], reason: &str) {
        for tile in tiles {
            self.finish(tile, Err(reason.to_string()));
        }
    }
}
