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
//! - People: when the trust's sign-on names the person asking, the owner's rules (its signed
//!   consent statement) decide for that person here before anything is shown, cached tiles
//!   included, and the batches fetched for them carry their name, so the owner decides for
//!   them too and both logs name them. A tile already in flight for one person is shared
//!   with the next who may see it (single flight); the owner's log names the first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use slidemesh_protocol::wire::{MAX_TILES_PER_REQUEST, TileRequest};
use slidemesh_protocol::{SignedGrant, SlideId, TileId, UserClaim};
use tokio::sync::{Semaphore, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Federation;
use super::gateway::TilesDecided;
use crate::consent::ConsentAction;

/// How long a batch waits for more tiles after the first one arrived.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Largest batch sent to one peer.
const BATCH_MAX: usize = 128;
/// Batches someone waits for, in flight at once, across slides and peers.
const MAX_IN_FLIGHT: usize = 16;
/// Prefetch batches in flight at once.
const MAX_PREFETCH_IN_FLIGHT: usize = 2;
/// Tries of one source when its stream breaks (not when it refuses or sends wrong bytes).
const ATTEMPTS_PER_SOURCE: u32 = 3;
/// Pause before retrying a broken stream, times the attempt number.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a Kademlia provider lookup for a slide is reused.
const PROVIDERS_TTL: Duration = Duration::from_secs(30);
/// A broken stream that took this long to fail means the peer is not answering.
const SLOW_FAILURE: Duration = Duration::from_secs(2);
/// A provider lookup this recent is used as it is when every source failed: a batch tries
/// its providers, or fails, at once rather than wait out another lookup.
const LOOKUP_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// How long a batch someone waits for may go without its first tile before another
/// source at hand is tried instead (at least ten of the peer's recent batch times).
const FIRST_TILE_BUDGET: Duration = Duration::from_secs(1);
/// How long one batch may take before the next source is tried.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a prefetch batch waits for the batches someone waits for to finish.
const PREFETCH_HOLD: Duration = Duration::from_secs(1);

type Answer = oneshot::Sender<Result<Vec<u8>, String>>;

/// Someone waiting for a tile, and the person it is for (`None`: the trust itself).
struct Waiter {
    user: Option<UserClaim>,
    answer: Answer,
}

/// Whom a batch is for, which decides the slot it waits for and how its failures are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BatchClass {
    /// Someone waits for its tiles.
    Demanded,
    /// Tiles a viewer will likely want; dropped when no prefetch slot is free.
    Prefetch,
    /// A replica's background fetch: its loop runs one batch at a time, behind viewers.
    Replica,
}

/// Which batch a queued tile joins: its slide, whether someone waits for it, and whom it is
/// fetched for.
type BatchKey = (SlideId, bool, Option<UserClaim>);

/// Wakes everyone waiting on the `Notify` when dropped (a batch ended, however it ended).
struct NotifyOnDrop(Arc<tokio::sync::Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

/// One tile being fetched: who waits for it, and its bytes once they arrived verified (kept
/// until the tile is in the cache, so askers in between are answered at once instead of
/// waiting for the rest of the batch to be written).
#[derive(Default)]
struct Flight {
    waiters: Vec<Waiter>,
    arrived: Option<Vec<u8>>,
}

/// Fetch bookkeeping shared by every request.
pub struct RemoteState {
    /// Tiles being fetched, with everyone waiting for each.
    in_flight: Mutex<HashMap<TileId, Flight>>,
    /// Tiles waiting to join a batch, per slide, priority (true: someone waits) and person.
    queued: Mutex<HashMap<BatchKey, Vec<TileId>>>,
    /// Seconds per batch of the last batch from each peer (smaller is faster).
    speed: Mutex<HashMap<PeerId, f64>>,
    /// Peers not answering lately, skipped until their backoff ends.
    health: Mutex<super::health::PeerHealth>,
    /// Told whenever a peer is marked as not answering.
    health_changed: tokio::sync::Notify,
    permits: Arc<Semaphore>,
    /// Prefetch batches in flight are bounded apart, so they never hold up tiles a viewer
    /// is waiting for.
    prefetch_permits: Arc<Semaphore>,
    /// Signalled whenever a batch someone waits for ends (prefetch waits for a quiet link).
    demanded_done: Arc<tokio::sync::Notify>,
    /// The grant held for each shared slide, with the withdrawal count it was read at (a
    /// revocation invalidates it); reading it from the store decodes the whole manifest.
    grants: Mutex<HashMap<SlideId, (u64, SignedGrant, u64)>>,
    /// Received grants found expired whose slides were withdrawn (each is swept once).
    expired: Mutex<std::collections::HashSet<slidemesh_protocol::GrantId>>,
    /// Recent provider lookups per slide (a lookup per batch would cost a DHT query each).
    providers: Mutex<HashMap<SlideId, (Instant, Vec<PeerId>)>>,
    /// Shared slides this node announced itself as a source for.
    providing: Mutex<std::collections::HashSet<SlideId>>,
}

impl Default for RemoteState {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashMap::new()),
            speed: Mutex::new(HashMap::new()),
            health: Mutex::default(),
            health_changed: tokio::sync::Notify::new(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            prefetch_permits: Arc::new(Semaphore::new(MAX_PREFETCH_IN_FLIGHT)),
            demanded_done: Arc::new(tokio::sync::Notify::new()),
            grants: Mutex::new(HashMap::new()),
            expired: Mutex::new(std::collections::HashSet::new()),
            providers: Mutex::new(HashMap::new()),
            providing: Mutex::new(std::collections::HashSet::new()),
        }
    }
}

/// Locks one of the fetch maps. A panic while one was held leaves only bookkeeping behind,
/// so a poisoned lock is used as is.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a remote tile could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("slide {0} is not shared with this trust")]
    NotShared(SlideId),
    /// The grant for the slide expired: nothing of it may be shown, not even tiles already
    /// cached here. (A revoked grant's slide is gone from the store: `NotShared`.)
    #[error("{0}")]
    Withdrawn(String),
    /// The owner's rules do not let this person do that (decided here, with the owner's
    /// signed statement).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    /// The slide has no such tile.
    #[error("{0}")]
    NoSuchTile(String),
    /// This node's audit log could not record the decision: nothing is shown unlogged.
    #[error("{0}")]
    AuditFailed(String),
}

impl Federation {
    /// A tile of a shared slide: from the cache, else fetched from peers (verified).
    /// A tile of a shared slide, once decided for the one asking
    /// ([`Federation::authorize_tiles`]), cached tiles included.
    pub async fn remote_tile(
        self: &Arc<Self>,
        decided: &TilesDecided,
        tile: TileId,
    ) -> Result<Vec<u8>, RemoteError> {
        let (slide, user) = (decided.slide, decided.user.as_ref());
        if !decided.tiles.contains(&tile) {
            return Err(RemoteError::Forbidden(format!(
                "tile {tile} was not decided for this request"
            )));
        }
        // The grantee's node honours the grant's end itself: a cached tile of a slide whose
        // grant expired is not shown, whether or not the owner can be reached to say so.
        let fed = self.clone();
        let cached = tokio::task::spawn_blocking(move || {
            fed.grant_for(&slide)?;
            Ok::<_, RemoteError>(fed.holdings.cache.get(&tile))
        })
        .await
        .map_err(|e| RemoteError::Unavailable(e.to_string()))??;
        if let Some(bytes) = cached {
            crate::metrics::metrics().served_cache.inc();
            return Ok(bytes);
        }
        let (tx, rx) = oneshot::channel();
        self.enqueue(slide, &[tile], vec![(tile, tx)], true, user);
        let bytes = rx
            .await
            .map_err(|_| RemoteError::Unavailable("fetch abandoned".into()))?
            .map_err(RemoteError::Unavailable)?;
        crate::metrics::metrics().served_peer.inc();
        Ok(bytes)
    }

    /// Fetches every tile of a shared slide not yet cached (a pathologist making a slide
    /// available before a meeting, or a whole-slide copy), waiting for all. Returns how
    /// many tiles were fetched now and their bytes; fails if any tile could not be had.
    pub async fn fetch_whole_slide(
        self: &Arc<Self>,
        decided: &super::SlideDecided,
        tiles: Vec<TileId>,
    ) -> Result<(usize, u64), RemoteError> {
        let (slide, user) = (decided.slide(), decided.user());
        // Label images are left out for someone not decided to see them, rather than
        // failing the whole copy.
        let label = self
            .holdings
            .served_slide(&slide)
            .map_err(|e| RemoteError::Unavailable(format!("slide {slide}: {e}")))?
            .label_tiles
            .clone();
        let tiles: Vec<TileId> = tiles
            .into_iter()
            .filter(|t| decided.allows(ConsentAction::SeeLabel) || !label.contains(t))
            .collect();
        // Every tile must be the slide's, and a label only for someone decided to see it.
        self.tiles_of(decided, tiles.clone())?;
        let ids: Vec<TileId> = tiles
            .into_iter()
            .filter(|t| !self.holdings.cache.contains(t))
            .collect();
        let count = ids.len();
        let (waiters, receivers): (Vec<_>, Vec<_>) = ids
            .iter()
            .map(|&tile| {
                let (tx, rx) = oneshot::channel();
                ((tile, tx), rx)
            })
            .unzip();
        self.enqueue(slide, &ids, waiters, true, user);
        let mut bytes = 0u64;
        let mut failed = 0usize;
        let mut last = String::new();
        for rx in receivers {
            match rx.await {
                Ok(Ok(b)) => bytes += b.len() as u64,
                Ok(Err(e)) => {
                    failed += 1;
                    last = e;
                }
                Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            return Err(RemoteError::Unavailable(format!(
                "{failed} of {count} tiles could not be fetched: {last}"
            )));
        }
        Ok((count, bytes))
    }

    /// Starts fetching tiles nobody waits for yet. `urgent` tiles (the rest of the screen a
    /// viewer is about to ask for) join the batches of tiles being waited for, so a first
    /// screen goes out as one batch instead of one per wave of browser requests; the others
    /// (the next zoom level) are opportunistic.
    /// Tiles are prefetched for the person whose viewing asked for them; label images are
    /// never prefetched, so none arrives for someone who may not see it.
    pub fn prefetch(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: &[TileId],
        urgent: bool,
        user: Option<&UserClaim>,
    ) {
        let Ok(served) = self.holdings.served_slide(&slide) else {
            return;
        };
        let wanted: Vec<TileId> = tiles
            .iter()
            .copied()
            .filter(|t| !served.label_tiles.contains(t))
            .filter(|t| !self.holdings.cache.contains(t))
            .collect();
        if !wanted.is_empty() {
            self.enqueue(slide, &wanted, Vec::new(), urgent, user);
        }
    }

    fn enqueue(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: &[TileId],
        waiters: Vec<(TileId, Answer)>,
        demanded: bool,
        user: Option<&UserClaim>,
    ) {
        let mut fresh = Vec::new();
        {
            let mut in_flight = lock(&self.remote.in_flight);
            for tile in tiles {
                if !in_flight.contains_key(tile) {
                    in_flight.insert(*tile, Flight::default());
                    fresh.push(*tile);
                }
            }
            for (tile, answer) in waiters {
                let flight = in_flight.entry(tile).or_default();
                match &flight.arrived {
                    Some(bytes) => {
                        let _ = answer.send(Ok(bytes.clone()));
                    }
                    None => flight.waiters.push(Waiter {
                        user: user.cloned(),
                        answer,
                    }),
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let key: BatchKey = (slide, demanded, user.cloned());
        let start_batch = {
            let mut queued = lock(&self.remote.queued);
            let queue = queued.entry(key.clone()).or_default();
            let first = queue.is_empty();
            queue.extend(fresh);
            first
        };
        if start_batch {
            let fed = self.clone();
            self.spawn(
                async move {
                    tokio::time::sleep(BATCH_WINDOW).await;
                    let tiles = lock(&fed.remote.queued).remove(&key).unwrap_or_default();
                    for chunk in tiles.chunks(BATCH_MAX.min(MAX_TILES_PER_REQUEST)) {
                        let chunk = chunk.to_vec();
                        let user = key.2.clone();
                        let batch = fed.clone();
                        let class = if demanded {
                            BatchClass::Demanded
                        } else {
                            BatchClass::Prefetch
                        };
                        fed.spawn(async move {
                            batch.fetch_batch(slide, chunk, class, user, None).await
                        });
                    }
                }
                .instrument(info_span!("remote_batch", slide = %slide)),
            );
        }
    }

    /// Starts flights for those of `tiles` not being fetched already (returned, with a
    /// receiver each, for the caller to fetch). Tiles already in flight are left out, not
    /// joined: a replica takes only bytes fetched for its own slide, from its sources.
    pub(super) fn start_flights(
        &self,
        tiles: &[TileId],
    ) -> (Vec<TileId>, Vec<(TileId, super::replicas::FlightAnswer)>) {
        let mut fresh = Vec::new();
        let mut receivers = Vec::with_capacity(tiles.len());
        let mut in_flight = lock(&self.remote.in_flight);
        for tile in tiles {
            if in_flight.contains_key(tile) {
                continue;
            }
            let (answer, rx) = oneshot::channel();
            in_flight.insert(
                *tile,
                Flight {
                    waiters: vec![Waiter { user: None, answer }],
                    arrived: None,
                },
            );
            fresh.push(*tile);
            receivers.push((*tile, rx));
        }
        (fresh, receivers)
    }

    /// Forgets prefetched tiles that found no free slot; any that a viewer started waiting
    /// for meanwhile are fetched as demanded instead, each for its own person.
    fn drop_prefetch(self: &Arc<Self>, slide: SlideId, tiles: Vec<TileId>) {
        let waiting = {
            let mut in_flight = lock(&self.remote.in_flight);
            tiles
                .into_iter()
                .filter_map(|tile| in_flight.remove(&tile).map(|f| (tile, f.waiters)))
                .collect()
        };
        self.requeue(slide, waiting);
    }

    /// Asks again, as demanded, for tiles whose waiters are given, in one batch per person.
    fn requeue(self: &Arc<Self>, slide: SlideId, waiting: Vec<(TileId, Vec<Waiter>)>) {
        let mut by_person: HashMap<Option<UserClaim>, Vec<(TileId, Answer)>> = HashMap::new();
        for (tile, waiters) in waiting {
            for w in waiters {
                by_person.entry(w.user).or_default().push((tile, w.answer));
            }
        }
        for (user, answers) in by_person {
            let ids: Vec<TileId> = answers.iter().map(|(t, _)| *t).collect();
            self.enqueue(slide, &ids, answers, true, user.as_ref());
        }
    }

    /// Answers everyone waiting for `tile` so far and keeps its bytes for later askers,
    /// leaving it in flight until it is cached.
    fn answer(&self, tile: &TileId, bytes: &[u8]) {
        let waiters = lock(&self.remote.in_flight)
            .get_mut(tile)
            .map(|flight| {
                flight.arrived = Some(bytes.to_vec());
                std::mem::take(&mut flight.waiters)
            })
            .unwrap_or_default();
        for w in waiters {
            let _ = w.answer.send(Ok(bytes.to_vec()));
        }
    }

    /// Resolves everyone waiting for `tile` and marks it no longer in flight.
    fn finish(&self, tile: &TileId, result: Result<Vec<u8>, String>) {
        let waiters = lock(&self.remote.in_flight)
            .remove(tile)
            .map(|flight| flight.waiters)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.answer.send(result.clone());
        }
    }

    /// The grant this node holds for a shared slide, if it has not expired (memoised until
    /// a withdrawal). Reads the store on a miss: call from a blocking context.
    pub(super) fn grant_for(&self, slide: &SlideId) -> Result<SignedGrant, RemoteError> {
        let generation = self
            .holdings
            .withdrawals
            .load(std::sync::atomic::Ordering::SeqCst);
        let memo = lock(&self.remote.grants)
            .get(slide)
            .filter(|(at, _, _)| *at == generation)
            .map(|(_, grant, expires_at)| (grant.clone(), *expires_at));
        let (grant, expires_at) = match memo {
            Some(memo) => memo,
            None => {
                let unavailable =
                    |e: crate::store::StoreError| RemoteError::Unavailable(e.to_string());
                let remote = self
                    .holdings
                    .store
                    .remote_slide(slide)
                    .map_err(unavailable)?
                    .ok_or(RemoteError::NotShared(*slide))?;
                let stored = self
                    .holdings
                    .store
                    .grant(&remote.grant)
                    .map_err(unavailable)?
                    .ok_or_else(|| {
                        RemoteError::Unavailable(format!("grant {} is missing", remote.grant))
                    })?;
                let expires_at = stored.grant.expires_at;
                lock(&self.remote.grants)
                    .insert(*slide, (generation, stored.signed.clone(), expires_at));
                (stored.signed, expires_at)
            }
        };
        if expires_at <= crate::store::now_unix() {
            return Err(RemoteError::Withdrawn(format!(
                "the grant for slide {slide} expired at {}; ask its owner to share it again",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_secs(expires_at)
                )
            )));
        }
        Ok(grant)
    }

    /// Withdraws the shared slides of received grants that have expired, as a revocation
    /// would: they leave the slide list and the viewer. Each expired grant is swept once per
    /// run of the node.
    pub(super) async fn withdraw_expired(&self, grants: &[crate::store::federation::StoredGrant]) {
        let now = crate::store::now_unix();
        for stored in grants {
            if stored.issued_here || stored.grant.expires_at > now {
                continue;
            }
            let id = stored.signed.id();
            if !lock(&self.remote.expired).insert(id) {
                continue;
            }
            let store = self.holdings.store.clone();
            let withdrawn = tokio::task::spawn_blocking(move || store.withdraw_grant(&id))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match withdrawn {
                Ok(0) => {}
                Ok(_) => {
                    self.holdings
                        .withdrawals
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    info!(grant = %id, slide = %stored.grant.slide, owner = %stored.grant.owner,
                        "grant expired: shared slide withdrawn");
                }
                Err(error) => {
                    // Swept again on the next round.
                    lock(&self.remote.expired).remove(&id);
                    warn!(grant = %id, error, "cannot withdraw the slide of an expired grant");
                }
            }
        }
    }

    /// Candidate sources for a slide, fastest first: the owner, then the providers a recent
    /// Kademlia lookup found. Never waits for the DHT: a stale or missing lookup is started
    /// in the background for later batches ([`Self::lookup_providers`] waits when needed).
    fn sources(self: &Arc<Self>, slide: &SlideId, owner: Option<PeerId>) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = owner.into_iter().collect();
        let cached = lock(&self.remote.providers)
            .get(slide)
            .map(|(at, p)| (at.elapsed() < PROVIDERS_TTL, p.clone()));
        let (fresh, found) = cached.unwrap_or((false, Vec::new()));
        if !fresh {
            let fed = self.clone();
            let slide = *slide;
            let known: Vec<PeerId> = peers.clone();
            self.spawn(async move {
                fed.lookup_providers(slide, &known).await;
            });
        }
        for p in found {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        let speed = lock(&self.remote.speed);
        peers.sort_by(|a, b| {
            let sa = speed.get(a).copied().unwrap_or(0.0);
            let sb = speed.get(b).copied().unwrap_or(0.0);
            sa.total_cmp(&sb)
        });
        peers
    }

    /// Asks Kademlia who provides the slide, remembers and returns the answer. The lookup
    /// ends early once it found a provider not in `known`.
    async fn lookup_providers(&self, slide: SlideId, known: &[PeerId]) -> Vec<PeerId> {
        let mut found = Vec::new();
        let besides = known.iter().copied().collect();
        let lookup = tokio::time::timeout(
            Duration::from_secs(2),
            self.network.providers(slide, besides),
        );
        match lookup.await {
            Ok(Ok(set)) => {
                let local = self.network.local_peer_id();
                found.extend(set.into_iter().filter(|p| *p != local));
            }
            Ok(Err(e)) => debug!(%slide, error = %e, "provider lookup failed"),
            Err(_) => debug!(%slide, "provider lookup timed out"),
        }
        debug!(%slide, providers = found.len(), "providers looked up");
        lock(&self.remote.providers).insert(slide, (Instant::now(), found.clone()));
        found
    }

    /// Fetches one batch of a slide's tiles (their flights registered by the caller) from
    /// the best source that answers, under `grant` (`None`: the grant this trust views the
    /// slide under).
    pub(super) async fn fetch_batch(
        self: Arc<Self>,
        slide: SlideId,
        tiles: Vec<TileId>,
        class: BatchClass,
        user: Option<UserClaim>,
        grant: Option<SignedGrant>,
    ) {
        let demanded = class == BatchClass::Demanded;
        // Declared before the permit, so dropped after it: waiters see the slot free.
        let _done = demanded.then(|| NotifyOnDrop(self.remote.demanded_done.clone()));
        let _permit = match class {
            BatchClass::Demanded => {
                let Ok(permit) = self.remote.permits.clone().acquire_owned().await else {
                    return;
                };
                Some(permit)
            }
            // Prefetch is opportunistic: with no slot free it is dropped rather than queued,
            // so it never stands between a viewer and the tiles it is waiting for.
            BatchClass::Prefetch => {
                match self.remote.prefetch_permits.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => return self.drop_prefetch(slide, tiles),
                }
            }
            BatchClass::Replica => None,
        };
        if !demanded {
            self.wait_for_quiet_link().await;
        }
        let grant = match grant {
            Some(grant) => grant,
            None => {
                let fed = self.clone();
                match tokio::task::spawn_blocking(move || fed.grant_for(&slide)).await {
                    Ok(Ok(grant)) => grant,
                    Ok(Err(reason)) => return self.fail_all(&tiles, &reason.to_string()),
                    Err(e) => return self.fail_all(&tiles, &e.to_string()),
                }
            }
        };
        let granted = grant.verify().ok();
        let owner = granted
            .as_ref()
            .and_then(|g| self.holdings.membership.peer_of(&g.owner));
        let network = self.network.clone();
        let lane = if demanded {
            crate::net::Lane::Demanded
        } else {
            crate::net::Lane::Prefetch
        };
        let mut missing: Vec<TileId> = tiles;
        let mut last_error = String::from("no peer holds this slide");
        // A source refused the batch (its decision for this batch's person, or trust).
        let mut refused = false;
        let mut candidates = self.sources(&slide, owner);
        let mut tried: Vec<PeerId> = Vec::new();
        let mut looked_up = false;
        'sources: loop {
            // Done before another source is considered: asking the health of one not needed
            // would claim its probe for nothing.
            if missing.is_empty() {
                break;
            }
            let Some(peer) = next_untried(&mut candidates, &tried) else {
                // Every known source failed: wait for a fresh DHT answer, once; one that came
                // moments ago (perhaps while this batch ran) is used as it is instead.
                if looked_up || missing.is_empty() {
                    break;
                }
                looked_up = true;
                let lately = lock(&self.remote.providers)
                    .get(&slide)
                    .filter(|(at, _)| at.elapsed() < LOOKUP_AGAIN_AFTER)
                    .map(|(_, found)| found.clone());
                let fresh = match lately {
                    Some(found) => found,
                    None => self.lookup_providers(slide, &tried).await,
                };
                candidates.extend(fresh.into_iter().filter(|p| !tried.contains(p)));
                continue;
            };
            tried.push(peer);
            // A peer that did not answer lately is not waited on again until its backoff
            // ends: the next source, or a quick failure naming it.
            let admitted = lock(&self.remote.health).admit(&peer, tokio::time::Instant::now());
            if let Err(down) = admitted {
                last_error = format!(
                    "{} has not answered for {} s (asked again in {} s)",
                    self.describe_peer(&peer),
                    down.since.elapsed().as_secs(),
                    down.until
                        .saturating_duration_since(tokio::time::Instant::now())
                        .as_secs()
                        .max(1)
                );
                crate::metrics::metrics()
                    .fetch_failures
                    .get_or_create(&crate::metrics::FailureLabels {
                        peer: self.trust_label(&peer),
                        kind: "skipped".into(),
                    })
                    .inc();
                continue 'sources;
            }
            for attempt in 0..ATTEMPTS_PER_SOURCE {
                if missing.is_empty() {
                    break 'sources;
                }
                let request = TileRequest::new(slide, grant.clone(), missing.clone(), user.clone());
                let started = Instant::now();
                let mut got: Vec<(TileId, Vec<u8>)> = Vec::new();
                // The source's speed is how fast its tiles came, not how long its receipt
                // (its audit commit) took after them.
                let mut last_tile: Option<Instant> = None;
                // Each tile goes to its waiters the moment it arrived and hashed right, not
                // when the whole batch is in.
                let failures = lock(&self.remote.health).failures(&peer);
                let first_came = std::sync::atomic::AtomicBool::new(false);
                let fetching = network.fetch_tiles(peer, lane, &request, |tile, bytes| {
                    self.answer(&tile, &bytes);
                    got.push((tile, bytes));
                    last_tile = Some(Instant::now());
                    first_came.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                // With another source at hand, a batch someone waits for whose first tile
                // has not come within the budget goes there rather than wait out the batch
                // timeout: a node killed mid-view leaves its QUIC connection silent.
                let other_source = candidates.iter().any(|p| !tried.contains(p));
                let budget = FIRST_TILE_BUDGET.max(Duration::from_secs_f64(
                    10.0 * lock(&self.remote.speed).get(&peer).copied().unwrap_or(0.0),
                ));
                let first_tile_late = async {
                    tokio::time::sleep(budget).await;
                    if first_came.load(std::sync::atomic::Ordering::Relaxed) {
                        std::future::pending::<()>().await;
                    }
                };
                // Given up at the batch timeout, or as soon as another batch found the peer
                // not answering (its tiles' waiters are not kept for the rest of this one).
                let outcome: Result<_, GaveUp> = tokio::select! {
                    // A batch that finished keeps its answer even if the peer was marked
                    // down at the same moment.
                    biased;
                    fetched = tokio::time::timeout(BATCH_TIMEOUT, fetching) => {
                        fetched.map_err(|_| GaveUp::TimedOut)
                    }
                    () = self.until_not_answering(&peer, failures) => Err(GaveUp::PeerDown),
                    () = first_tile_late, if demanded && other_source => Err(GaveUp::TimedOut),
                };
                // Tiles verified before any failure are good whatever came after. Their
                // waiters were answered as they arrived; each stays "in flight", with its
                // bytes, until it is cached (on the blocking pool), so a request in between
                // is answered from memory instead of fetching it again.
                let arrived: std::collections::HashSet<TileId> =
                    got.iter().map(|(t, _)| *t).collect();
                if let Some(g) = &granted
                    && !got.is_empty()
                {
                    let receipt = match &outcome {
                        Ok(Ok(receipt)) => receipt.clone(),
                        _ => None,
                    };
                    let what = format!("{} tiles", got.len());
                    let asked = request.audit_label();
                    let asked = super::receipts::Asked {
                        action: match g.action {
                            slidemesh_protocol::Action::View => "fetch_tiles",
                            slidemesh_protocol::Action::Replicate => "replicate",
                        },
                        described: &asked,
                        user: user.as_ref(),
                    };
                    self.record_received(&grant, g, &peer, asked, &what, receipt);
                }
                missing.retain(|t| !arrived.contains(t));
                if !got.is_empty() {
                    let fed = self.clone();
                    let got = tokio::task::spawn_blocking(move || {
                        let batch: Vec<(TileId, &[u8])> =
                            got.iter().map(|(t, b)| (*t, b.as_slice())).collect();
                        // A replica's tiles are kept pinned, outside the cache's capacity.
                        let stored = if class == BatchClass::Replica {
                            fed.holdings.cache.put_pinned(&slide, &batch)
                        } else {
                            fed.holdings.cache.put_many(&batch)
                        };
                        if let Err(e) = stored {
                            warn!(tiles = batch.len(), error = %e, "cannot cache tiles");
                        }
                        got
                    })
                    .await
                    .unwrap_or_default();
                    for (tile, bytes) in got {
                        self.finish(&tile, Ok(bytes));
                    }
                }
                let source = crate::metrics::Metrics::peer(self.trust_label(&peer));
                let counted = crate::metrics::metrics();
                counted
                    .tiles_fetched
                    .get_or_create(&source)
                    .inc_by(arrived.len() as u64);
                let failed = |kind: &str| {
                    counted
                        .fetch_failures
                        .get_or_create(&crate::metrics::FailureLabels {
                            peer: source.peer.clone(),
                            kind: kind.into(),
                        })
                        .inc();
                };
                // Any answer in this batch (a tile, a refusal, even wrong bytes) says the peer
                // is up; a batch given up says nothing new (its tiles may be from before the
                // peer stopped answering).
                let answered = match &outcome {
                    Err(_) => false,
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => !e.is_transient() || !arrived.is_empty(),
                };
                if answered {
                    lock(&self.remote.health).answered(&peer);
                }
                match outcome {
                    Ok(Ok(_receipt)) => {
                        let served_in = last_tile.unwrap_or_else(Instant::now) - started;
                        counted
                            .fetch_seconds
                            .get_or_create(&source)
                            .observe(served_in.as_secs_f64());
                        self.record_speed(peer, served_in.as_secs_f64());
                        debug!(
                            %peer,
                            %slide,
                            tiles = arrived.len(),
                            demanded,
                            ms = started.elapsed().as_secs_f64() * 1000.0,
                            "batch fetched"
                        );
                        self.announce_source(&network, slide).await;
                        continue 'sources;
                    }
                    Ok(Err(e)) if e.is_corrupt() => {
                        failed("corrupt");
                        warn!(%peer, %slide, error = %e, "peer sent wrong bytes; trying another source");
                        last_error = e.to_string();
                        continue 'sources;
                    }
                    Ok(Err(e))
                        if e.is_transient()
                            && demanded
                            && arrived.is_empty()
                            && started.elapsed() >= SLOW_FAILURE =>
                    {
                        // A stream that took this long to fail is a peer not answering (one
                        // frozen, or a link gone), not a connection race: not asked again.
                        failed("timeout");
                        self.peer_not_answering(peer);
                        debug!(%peer, %slide, error = %e, "no answer; trying another source");
                        last_error = e.to_string();
                        continue 'sources;
                    }
                    Ok(Err(e)) if e.is_transient() => {
                        failed("interrupted");
                        // A connection closing under the stream (peers that dialled each
                        // other at once keep one of two): the same peer, shortly.
                        debug!(%peer, %slide, attempt, error = %e, "batch interrupted; retrying");
                        last_error = e.to_string();
                        tokio::time::sleep(RETRY_PAUSE * (attempt + 1)).await;
                    }
                    Ok(Err(e)) => {
                        failed("refused");
                        debug!(%peer, %slide, error = %e, "batch refused; trying another source");
                        refused |= matches!(e, crate::net::FetchError::Denied { .. });
                        last_error = e.to_string();
                        continue 'sources;
                    }
                    Err(GaveUp::PeerDown) => {
                        failed("skipped");
                        last_error = format!(
                            "{} stopped answering during the batch",
                            self.describe_peer(&peer)
                        );
                        continue 'sources;
                    }
                    Err(GaveUp::TimedOut) => {
                        failed("timeout");
                        // Silent all along: not answering. A slow source that sent tiles,
                        // or a prefetch (which waits behind viewers), is only slow.
                        if arrived.is_empty() && demanded {
                            self.peer_not_answering(peer);
                        }
                        last_error = format!("{peer} timed out");
                        self.record_speed(peer, BATCH_TIMEOUT.as_secs_f64());
                        continue 'sources;
                    }
                }
            }
            // Every attempt's stream broke or could not be opened. (Only a batch someone
            // waits for says so: a prefetch waits behind viewers and may be cut short.)
            if !missing.is_empty() && demanded {
                self.peer_not_answering(peer);
            }
        }
        if !missing.is_empty() && !tried.is_empty() {
            let tried: Vec<String> = tried.iter().map(|p| self.describe_peer(p)).collect();
            last_error = format!(
                "{} tile(s) of slide {slide} could not be had from any source (tried {}); last error: {last_error}",
                missing.len(),
                tried.join(", ")
            );
        }
        if refused {
            // Refused for this batch's person: people who joined these tiles' flights are
            // asked for again under their own names, not failed with someone else's refusal.
            // The flights end in the same critical section as their waiters are split, so
            // nobody can join one and be given this refusal.
            let mut refused_waiters = Vec::new();
            let waiting = {
                let mut in_flight = lock(&self.remote.in_flight);
                missing
                    .iter()
                    .filter_map(|tile| {
                        let flight = in_flight.remove(tile)?;
                        let (own, others): (Vec<Waiter>, Vec<Waiter>) =
                            flight.waiters.into_iter().partition(|w| w.user == user);
                        refused_waiters.extend(own);
                        (!others.is_empty()).then_some((*tile, others))
                    })
                    .collect::<Vec<_>>()
            };
            for w in refused_waiters {
                let _ = w.answer.send(Err(last_error.clone()));
            }
            self.requeue(slide, waiting);
            return;
        }
        self.fail_all(&missing, &last_error);
    }

    /// Holds prefetch back while batches someone waits for are in flight (up to
    /// [`PREFETCH_HOLD`]): on a fresh connection the congestion window is small, and the
    /// next zoom level would share it with the screen the viewer is waiting for.
    /// Batches still gathering count too: the viewer's own request usually arrives in the
    /// same millisecond as the prefetch it caused, and must not go out behind it.
    async fn wait_for_quiet_link(&self) {
        let deadline = tokio::time::Instant::now() + PREFETCH_HOLD;
        loop {
            let notified = self.remote.demanded_done.notified();
            let gathering = lock(&self.remote.queued)
                .keys()
                .any(|(_, demanded, _)| *demanded);
            if gathering {
                // A gathering batch takes its slot within BATCH_WINDOW; look again then.
                tokio::time::sleep(BATCH_WINDOW).await;
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                continue;
            }
            if self.remote.permits.available_permits() == MAX_IN_FLIGHT {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// A peer as people know it: its trust's ODS code, with the PeerId for the logs.
    fn describe_peer(&self, peer: &PeerId) -> String {
        match self.holdings.membership.trust_of(peer) {
            Some(trust) => format!("{trust}'s node"),
            None => format!("peer {peer}"),
        }
    }

    /// Marks `peer` as not answering now, and wakes every batch waiting on it.
    fn peer_not_answering(&self, peer: PeerId) {
        lock(&self.remote.health).failed(peer, tokio::time::Instant::now());
        self.remote.health_changed.notify_waiters();
    }

    /// Resolves once another batch marks `peer` as not answering (its failures in a row
    /// pass `failures`, the count when this batch started).
    async fn until_not_answering(&self, peer: &PeerId, failures: u32) {
        loop {
            // Registered before the check, so a mark in between is not missed.
            let changed = self.remote.health_changed.notified();
            if lock(&self.remote.health).failures(peer) > failures {
                return;
            }
            changed.await;
        }
    }

    /// A peer as metrics label it: its trust, or `unknown`.
    fn trust_label(&self, peer: &PeerId) -> String {
        self.holdings
            .membership
            .trust_of(peer)
            .map_or_else(|| "unknown".to_string(), |t| t.to_string())
    }

    /// The peers not answering tile requests lately, by trust, with how long.
    pub fn peers_not_answering(&self) -> Vec<(String, Duration)> {
        lock(&self.remote.health)
            .failing(tokio::time::Instant::now())
            .into_iter()
            .map(|(peer, since)| (self.trust_label(&peer), since.elapsed()))
            .collect()
    }

    /// Each other member as this node sees it for the health page: connected now (from
    /// `connected`, the swarm's peer ids), not answering tile requests for how long, and
    /// how long its last batch of tiles took.
    pub fn member_health(&self, connected: &[String]) -> Vec<serde_json::Value> {
        let Some(roster) = self.holdings.membership.roster() else {
            return Vec::new();
        };
        let failing: HashMap<PeerId, Duration> = lock(&self.remote.health)
            .failing(tokio::time::Instant::now())
            .into_iter()
            .map(|(peer, since)| (peer, since.elapsed()))
            .collect();
        let speed = lock(&self.remote.speed).clone();
        roster
            .members
            .iter()
            .filter(|m| m.trust != self.holdings.trust)
            .map(|m| {
                let peer = self.holdings.membership.peer_of(&m.trust);
                let id = peer.map(|p| p.to_string()).unwrap_or_default();
                serde_json::json!({
                    "trust": m.trust,
                    "name": m.name,
                    "connected": connected.contains(&id),
                    "not_answering_secs": peer.and_then(|p| failing.get(&p)).map(Duration::as_secs),
                    "last_batch_ms": peer
                        .and_then(|p| speed.get(&p))
                        .map(|s| (s * 1000.0).round() as u64),
                })
            })
            .collect()
    }

    fn record_speed(&self, peer: PeerId, seconds: f64) {
        lock(&self.remote.speed).insert(peer, seconds);
    }

    /// Once this node caches tiles of a shared slide it can serve them to other grantees
    /// (they present their own grant): say so through Kademlia, once per slide and run.
    pub(super) async fn announce_source(&self, network: &crate::net::Network, slide: SlideId) {
        let first = lock(&self.remote.providing).insert(slide);
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

/// The next candidate not tried yet in this fetch.
/// Why a batch was given up without an answer.
enum GaveUp {
    /// No answer within [`BATCH_TIMEOUT`].
    TimedOut,
    /// Another batch found the peer not answering meanwhile.
    PeerDown,
}

fn next_untried(candidates: &mut Vec<PeerId>, tried: &[PeerId]) -> Option<PeerId> {
    while !candidates.is_empty() {
        let peer = candidates.remove(0);
        if !tried.contains(&peer) {
            return Some(peer);
        }
    }
    None
}
