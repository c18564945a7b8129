//! The tile stream protocol (`/slidemesh/tiles/5`, framing in `slidemesh_protocol::wire`):
//! the server loop that answers batches, and the client that fetches batches and verifies
//! every tile against its id.
//!
//! A requester keeps a few long-lived streams ("sessions") to each peer, in two lanes
//! (tiles someone waits for, and prefetch), and pipelines batch requests on them, a bounded
//! number in flight per session; the server answers each stream's batches in order. Why not
//! a stream per batch: libp2p-stream hands inbound streams to the server over a one-slot
//! channel and drops any that arrive while it is full, so a burst of batches lost some of
//! them; and every new stream costs a protocol negotiation.
//!
//! Tile bytes never pass through the swarm's event loop: each session is served by its own
//! task on the server, and read by its own task on the client.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use slidemesh_protocol::TileId;
use slidemesh_protocol::audit::SignedReceipt;
use slidemesh_protocol::wire::{
    MAX_RECEIPT, MAX_TILE_BYTES, MAX_TILE_REQUEST, MAX_TILES_PER_REQUEST, TILE_SESSION_READY,
    TILES_PROTOCOL, TileRequest, TileStatus,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, info_span, warn};

use super::Inbound;
use super::codec::{read_message, write_message};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(TILES_PROTOCOL);

/// Tiles read from disk per trip to the blocking pool.
const READ_CHUNK: usize = 16;

/// Tile sessions this node serves at once, across all peers.
const MAX_SESSIONS: usize = 128;
/// Tile sessions one peer may hold open with this node (a new one beyond this closes its
/// oldest).
const MAX_SESSIONS_PER_PEER: usize = 8;

/// Sessions a requester opens per peer and lane.
const SESSIONS_PER_LANE: usize = 4;
/// Batches requested and not yet answered, per session.
const MAX_PENDING_PER_SESSION: usize = 4;
/// New streams tried for one batch when the peer drops them unserved.
const OPEN_TRIES: u32 = 4;
/// A session waiting for an answer that sees no byte for this long is closed.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which sessions a batch travels on: prefetch never queues in front of tiles a viewer is
/// waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Someone waits for these tiles.
    Demanded,
    /// Prefetch: nobody waits yet.
    Prefetch,
}

/// Why fetching a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open a tile stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    /// The peer's node closed a new tile stream without serving it (it was over a limit,
    /// or libp2p dropped it while handing it over): the batch is sent again on a new one.
    #[error("{peer} did not accept a tile stream")]
    NotAccepted { peer: PeerId },
    #[error("tile stream with {peer} failed: {source}")]
    Io {
        peer: PeerId,
        source: std::io::Error,
    },
    #[error(
        "{peer} refused the tile request (no grant covers it or its policy forbids it; its audit log says which)"
    )]
    Denied { peer: PeerId },
    #[error("{peer} could not decide on the tile request (its store failed); try again")]
    Failed { peer: PeerId },
    #[error("{peer} sent bytes that do not hash to tile {tile}")]
    Corrupt { peer: PeerId, tile: TileId },
    #[error("{peer} sent a malformed tile stream: {detail}")]
    Protocol { peer: PeerId, detail: String },
}

impl FetchError {
    /// Whether the stream broke (connection closed or not yet open): worth another try.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Open { .. } | Self::Io { .. } | Self::NotAccepted { .. }
        )
    }

    /// Whether the peer misbehaved (as opposed to being unreachable or unwilling).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Protocol { .. })
    }

    /// Whether the session can carry on after this batch (the peer refused it in good
    /// order); otherwise the stream is out of step or broken and is closed.
    fn keeps_session(&self) -> bool {
        matches!(self, Self::Denied { .. } | Self::Failed { .. })
    }
}

/// Accepts tile sessions until the swarm goes away; one task per session.
pub async fn serve(mut control: libp2p_stream::Control, inbound: Arc<dyn Inbound>) {
    let mut incoming = match control.accept(PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            warn!(error = %e, "tile protocol already registered");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_SESSIONS));
    let held: Arc<Mutex<HeldSessions>> = Arc::default();
    let mut next_id = 0u64;
    while let Some((peer, stream)) = incoming.next().await {
        // Never wait here: streams that arrive while this loop is busy are dropped by
        // libp2p-stream. Over the limit, the stream is closed at once instead.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, "too many tile sessions; refusing one");
            continue;
        };
        let id = next_id;
        next_id += 1;
        // Locked across the spawn, so the session cannot end (and deregister) before it
        // is registered.
        let mut sessions = lock(&held);
        let inbound = inbound.clone();
        let deregister = held.clone();
        let task = tokio::spawn(
            async move {
                if let Err(e) = serve_session(peer, stream, inbound).await {
                    debug!(error = %e, "tile session ended early");
                }
                let mut sessions = lock(&deregister);
                if let Some(of_peer) = sessions.get_mut(&peer) {
                    of_peer.retain(|(held, _)| *held != id);
                    if of_peer.is_empty() {
                        sessions.remove(&peer);
                    }
                }
                drop(permit);
            }
            .instrument(info_span!("serve_tiles", peer = %peer)),
        );
        let of_peer = sessions.entry(peer).or_default();
        of_peer.push_back((id, task.abort_handle()));
        // A peer over its share replaces its oldest session rather than being refused: a
        // node that restarted opens new sessions before this side has noticed that the old
        // connection (and its sessions) died.
        if of_peer.len() > MAX_SESSIONS_PER_PEER
            && let Some((_, oldest)) = of_peer.pop_front()
        {
            debug!(%peer, "peer opened more tile sessions than its share; closing its oldest");
            oldest.abort();
        }
    }
}

/// The sessions being served, per peer, oldest first: an id and a handle to end each.
type HeldSessions = HashMap<PeerId, VecDeque<(u64, AbortHandle)>>;

/// Answers one session's batches in order until the requester closes it.
async fn serve_session(
    peer: PeerId,
    mut stream: Stream,
    inbound: Arc<dyn Inbound>,
) -> std::io::Result<()> {
    stream.write_all(&[TILE_SESSION_READY]).await?;
    stream.flush().await?;
    loop {
        let request: TileRequest = match read_message(&mut stream, MAX_TILE_REQUEST).await {
            Ok(request) => request,
            // The requester closed the session between batches.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return stream.close().await;
            }
            Err(e) => return Err(e),
        };
        serve_batch(peer, &mut stream, &*inbound, request).await?;
    }
}

async fn serve_batch(
    peer: PeerId,
    stream: &mut Stream,
    inbound: &dyn Inbound,
    request: TileRequest,
) -> std::io::Result<()> {
    let slide = request.slide;
    if request.tiles.len() > MAX_TILES_PER_REQUEST {
        warn!(%slide, tiles = request.tiles.len(), "tile request too large; denied");
        stream.write_all(&[TileStatus::Denied as u8]).await?;
        return stream.flush().await;
    }
    let started = Instant::now();
    let authorized = inbound.authorize_tiles(peer, &request).await;
    let authorize_ms = started.elapsed().as_secs_f64() * 1000.0;
    let receipt = match authorized {
        Ok(receipt) => receipt,
        Err(refusal) => {
            let status = match &refusal {
                slidemesh_protocol::wire::Refusal::Denied(_) => TileStatus::Denied,
                slidemesh_protocol::wire::Refusal::Failed(_) => TileStatus::Failed,
            };
            warn!(%slide, reason = %refusal, ?status, "tile request not served");
            stream.write_all(&[status as u8]).await?;
            return stream.flush().await;
        }
    };
    // Nothing leaves before the decision is durable in the audit log (the writer's next
    // group commit): while the log cannot be written, the batch fails rather than leaves
    // unlogged. The first chunk is read meanwhile.
    let mut chunks = request.tiles.chunks(READ_CHUNK).map(|c| c.to_vec());
    let mut next = chunks.next().map(|c| inbound.read_tiles(c));
    let Some(receipt) = receipt.await else {
        warn!(%slide, "the decision is not durable in the audit log; batch not served");
        stream.write_all(&[TileStatus::Failed as u8]).await?;
        return stream.flush().await;
    };
    // Reads go to the blocking pool a chunk at a time: one hop per chunk, not per tile,
    // and the next chunk is read while this one is being sent.
    while let Some(reading) = next.take() {
        let tiles = reading.await;
        next = chunks.next().map(|c| inbound.read_tiles(c));
        let mut out = Vec::new();
        for bytes in tiles {
            match bytes {
                Some(bytes) => {
                    out.push(TileStatus::Ok as u8);
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(&bytes);
                }
                None => out.push(TileStatus::Missing as u8),
            }
        }
        stream.write_all(&out).await?;
    }
    stream.flush().await?;
    write_message(stream, &Some(receipt)).await?;
    debug!(
        %slide,
        tiles = request.tiles.len(),
        authorize_ms,
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
        "tile batch served"
    );
    Ok(())
}

/// The requesting side: sessions per peer and lane, opened on first use and replaced when
/// they break. Cheap to clone.
#[derive(Clone)]
pub struct TileClient {
    control: libp2p_stream::Control,
    lanes: Arc<Mutex<HashMap<(PeerId, Lane), LaneSessions>>>,
}

/// The sessions of one peer and lane; locked while one is chosen or opened.
type LaneSessions = Arc<tokio::sync::Mutex<Vec<Arc<Session>>>>;

/// One long-lived tile stream: requests are written under `writer`'s lock, and queued for
/// the session's reader task in the same order, which matches answers to requests.
struct Session {
    writer: tokio::sync::Mutex<WriteHalf<Stream>>,
    pending: mpsc::UnboundedSender<Pending>,
    slots: Arc<Semaphore>,
    /// Batches requested and not yet answered (picks the least busy session).
    load: AtomicUsize,
    /// Set when the stream broke; the session is replaced on next use.
    dead: AtomicBool,
    /// Set when the server's ready byte arrived.
    accepted: AtomicBool,
}

/// Marks a session dead when dropped before [`Self::done`].
struct DeadUnlessDone<'a>(&'a AtomicBool, bool);

impl DeadUnlessDone<'_> {
    fn done(mut self) {
        self.1 = true;
    }
}

impl Drop for DeadUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// A batch waiting for its answer, with where its tiles go.
struct Pending {
    tiles: Vec<TileId>,
    sink: mpsc::UnboundedSender<Event>,
}

enum Event {
    Tile(TileId, Vec<u8>),
    /// The batch ended: with the server's receipt (if it gave one), or how it failed.
    Done(Result<Option<SignedReceipt>, FetchError>),
}

impl TileClient {
    pub fn new(control: libp2p_stream::Control) -> Self {
        Self {
            control,
            lanes: Arc::default(),
        }
    }

    /// Fetches one batch from `peer`, calling `on_tile` with each tile as soon as it
    /// arrived and hashed to its id. Missing tiles are skipped. Stops at the first wrong
    /// byte.
    pub async fn fetch(
        &self,
        peer: PeerId,
        lane: Lane,
        request: &TileRequest,
        mut on_tile: impl FnMut(TileId, Vec<u8>),
    ) -> Result<Option<SignedReceipt>, FetchError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.fetch_once(peer, lane, request, &mut on_tile).await {
                // Nothing arrived on that stream: send the batch again on a new one.
                Err(FetchError::NotAccepted { .. }) if tries < OPEN_TRIES => {
                    debug!(%peer, ?lane, tries, "tile stream not accepted; opening another");
                }
                result => return result,
            }
        }
    }

    async fn fetch_once(
        &self,
        peer: PeerId,
        lane: Lane,
        request: &TileRequest,
        on_tile: &mut impl FnMut(TileId, Vec<u8>),
    ) -> Result<Option<SignedReceipt>, FetchError> {
        let started = Instant::now();
        let session = self.session(peer, lane).await?;
        let _slot = session
            .slots
            .acquire()
            .await
            .map_err(|_| session_closed(peer))?;
        let queued_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (sink, mut events) = mpsc::unbounded_channel();
        {
            let mut writer = session.writer.lock().await;
            if session.dead.load(Ordering::SeqCst) {
                return Err(session_closed(peer));
            }
            let pending = Pending {
                tiles: request.tiles.clone(),
                sink,
            };
            if session.pending.send(pending).is_err() {
                session.dead.store(true, Ordering::SeqCst);
                return Err(session_closed(peer));
            }
            session.load.fetch_add(1, Ordering::SeqCst);
            // A request written in part (the caller gave up mid-write, or the write
            // failed) leaves the stream out of step: the session is not used again.
            let unfinished = DeadUnlessDone(&session.dead, false);
            let written = write_message(&mut *writer, request).await;
            if let Err(source) = written {
                // The reader fails any batch behind this one when the stream ends.
                debug!(%peer, error = %source, "cannot write a tile request");
                if !session.accepted.load(Ordering::SeqCst) {
                    // Lazy negotiation: a stream the server dropped unserved fails the
                    // first write.
                    return Err(FetchError::NotAccepted { peer });
                }
                return Err(FetchError::Io { peer, source });
            }
            unfinished.done();
        }
        let mut first_tile_ms = None;
        while let Some(event) = events.recv().await {
            match event {
                Event::Tile(tile, bytes) => {
                    first_tile_ms.get_or_insert(started.elapsed().as_secs_f64() * 1000.0);
                    on_tile(tile, bytes);
                }
                Event::Done(result) => {
                    debug!(
                        %peer,
                        ?lane,
                        tiles = request.tiles.len(),
                        queued_ms,
                        first_tile_ms,
                        total_ms = started.elapsed().as_secs_f64() * 1000.0,
                        "tile batch read"
                    );
                    return result;
                }
            }
        }
        Err(session_closed(peer))
    }

    /// The least busy live session to `peer` in `lane`, opening one while there are fewer
    /// than [`SESSIONS_PER_LANE`] and all are busy.
    async fn session(&self, peer: PeerId, lane: Lane) -> Result<Arc<Session>, FetchError> {
        let slot = lock(&self.lanes).entry((peer, lane)).or_default().clone();
        let mut sessions = slot.lock().await;
        sessions.retain(|s| !s.dead.load(Ordering::SeqCst));
        let idle = sessions
            .iter()
            .min_by_key(|s| s.load.load(Ordering::SeqCst))
            .filter(|s| s.load.load(Ordering::SeqCst) == 0 || sessions.len() >= SESSIONS_PER_LANE)
            .cloned();
        if let Some(session) = idle {
            return Ok(session);
        }
        let stream = self
            .control
            .clone()
            .open_stream(peer, PROTOCOL)
            .await
            .map_err(|e| FetchError::Open {
                peer,
                reason: e.to_string(),
            })?;
        let (reader, writer) = stream.split();
        let (pending, queue) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            writer: tokio::sync::Mutex::new(writer),
            pending,
            slots: Arc::new(Semaphore::new(MAX_PENDING_PER_SESSION)),
            load: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            accepted: AtomicBool::new(false),
        });
        tokio::spawn(
            read_answers(peer, reader, queue, Arc::downgrade(&session))
                .instrument(info_span!("tile_session", %peer, ?lane)),
        );
        sessions.push(session.clone());
        Ok(session)
    }
}

/// A session's reader: answers arrive in the order the batches were requested. On a
/// broken or misbehaving stream every batch still waiting fails, and the session is marked
/// dead so the next batch opens a new one.
async fn read_answers(
    peer: PeerId,
    mut reader: ReadHalf<Stream>,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    session: std::sync::Weak<Session>,
) {
    let mut accepted = false;
    while let Some(pending) = queue.recv().await {
        let result = if accepted {
            read_batch(peer, &mut reader, &pending).await
        } else {
            match await_ready(peer, &mut reader, &session).await {
                Ok(()) => {
                    accepted = true;
                    read_batch(peer, &mut reader, &pending).await
                }
                Err(e) => Err(e),
            }
        };
        let keep = result
            .as_ref()
            .map_or_else(FetchError::keeps_session, |_| true);
        let _ = pending.sink.send(Event::Done(result));
        let Some(session) = session.upgrade() else {
            return;
        };
        session.load.fetch_sub(1, Ordering::SeqCst);
        if !keep {
            session.dead.store(true, Ordering::SeqCst);
            session.slots.close();
            queue.close();
            while let Some(behind) = queue.recv().await {
                let error = if accepted {
                    FetchError::Io {
                        peer,
                        source: std::io::Error::other("tile session closed after an earlier error"),
                    }
                } else {
                    FetchError::NotAccepted { peer }
                };
                let _ = behind.sink.send(Event::Done(Err(error)));
            }
            return;
        }
    }
}

/// Waits for the server to accept a new session, holding the session's writer meanwhile.
///
/// The stream's protocol is negotiated lazily (it costs no round trip): until the server
/// confirms it, a failed read leaves the stream in a state where any later write panics
/// inside multistream-select. So no batch may be written between the first request and
/// the server's answer to it; a session whose stream fails here is marked dead before its
/// writer is released, and batches waiting for the writer see that and go elsewhere.
async fn await_ready(
    peer: PeerId,
    reader: &mut ReadHalf<Stream>,
    session: &std::sync::Weak<Session>,
) -> Result<(), FetchError> {
    let Some(session) = session.upgrade() else {
        return Err(session_closed(peer));
    };
    let _writer = session.writer.lock().await;
    if session.dead.load(Ordering::SeqCst) {
        // The first request was never fully written: nothing will answer it.
        return Err(FetchError::NotAccepted { peer });
    }
    let ready = read_ready(peer, reader).await;
    match ready {
        Ok(()) => session.accepted.store(true, Ordering::SeqCst),
        Err(_) => session.dead.store(true, Ordering::SeqCst),
    }
    ready
}

/// Reads the server's first byte: the stream was accepted and will be served.
async fn read_ready(peer: PeerId, reader: &mut ReadHalf<Stream>) -> Result<(), FetchError> {
    let mut ready = [0u8; 1];
    match read_exact(reader, &mut ready).await {
        Ok(()) if ready[0] == TILE_SESSION_READY => Ok(()),
        Ok(()) => Err(FetchError::Protocol {
            peer,
            detail: format!("tile session began with byte {}", ready[0]),
        }),
        // Closed or reset before the first byte: dropped unserved (QUIC resets a dropped
        // stream, Yamux closes it).
        Err(e) if e.kind() != std::io::ErrorKind::TimedOut => {
            debug!(%peer, error = %e, "tile stream ended before it was served");
            Err(FetchError::NotAccepted { peer })
        }
        Err(source) => Err(FetchError::Io { peer, source }),
    }
}

/// Reads one batch's answer, sending each verified tile to the batch's sink, then the
/// server's receipt.
async fn read_batch(
    peer: PeerId,
    reader: &mut ReadHalf<Stream>,
    pending: &Pending,
) -> Result<Option<SignedReceipt>, FetchError> {
    let io = |source| FetchError::Io { peer, source };
    for (index, &tile) in pending.tiles.iter().enumerate() {
        let mut status = [0u8; 1];
        read_exact(reader, &mut status).await.map_err(io)?;
        match TileStatus::from_byte(status[0]) {
            Some(TileStatus::Ok) => {
                let mut len = [0u8; 4];
                read_exact(reader, &mut len).await.map_err(io)?;
                let len = u32::from_le_bytes(len);
                if len > MAX_TILE_BYTES {
                    return Err(FetchError::Protocol {
                        peer,
                        detail: format!("tile of {len} bytes"),
                    });
                }
                let mut bytes = vec![0u8; len as usize];
                read_exact(reader, &mut bytes).await.map_err(io)?;
                if TileId::of(&bytes) != tile {
                    return Err(FetchError::Corrupt { peer, tile });
                }
                let _ = pending.sink.send(Event::Tile(tile, bytes));
            }
            Some(TileStatus::Missing) => {}
            // Only as a batch's first byte: the whole batch is refused.
            Some(TileStatus::Denied) if index == 0 => return Err(FetchError::Denied { peer }),
            Some(TileStatus::Failed) if index == 0 => return Err(FetchError::Failed { peer }),
            Some(TileStatus::Denied | TileStatus::Failed) => {
                return Err(FetchError::Protocol {
                    peer,
                    detail: "a refusal in the middle of a batch".into(),
                });
            }
            None => {
                return Err(FetchError::Protocol {
                    peer,
                    detail: format!("unknown status byte {}", status[0]),
                });
            }
        }
    }
    let receipt = tokio::time::timeout(
        STALL_TIMEOUT,
        read_message::<Option<SignedReceipt>, _>(reader, MAX_RECEIPT),
    )
    .await
    .map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no receipt after the batch",
        ))
    })?;
    match receipt {
        Ok(receipt) => Ok(receipt),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(FetchError::Protocol {
            peer,
            detail: format!("unreadable receipt: {e}"),
        }),
        Err(e) => Err(io(e)),
    }
}

/// `read_exact` that gives up when the peer sends nothing for [`STALL_TIMEOUT`].
async fn read_exact(reader: &mut ReadHalf<Stream>, buf: &mut [u8]) -> std::io::Result<()> {
    match tokio::time::timeout(STALL_TIMEOUT, reader.read_exact(buf)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no data for {} s", STALL_TIMEOUT.as_secs()),
        )),
    }
}

/// The session a batch was sent on ended before its answer was complete.
fn session_closed(peer: PeerId) -> FetchError {
    FetchError::Io {
        peer,
        source: std::io::Error::other("tile session closed"),
    }
}

/// Locks bookkeeping maps; a panic while one was held leaves only counts behind.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
