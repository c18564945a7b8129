//! The tile stream protocol (`/slidemesh/tiles/1`, framing in `slidemesh_protocol::wire`):
//! the server loop that answers batches, and the client call that fetches one batch and
//! verifies every tile against its id.
//!
//! Tile bytes never pass through the swarm's event loop: each batch is its own libp2p
//! stream, served by its own task.

use std::sync::Arc;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use slidemesh_protocol::TileId;
use slidemesh_protocol::wire::{
    MAX_TILE_BYTES, MAX_TILE_REQUEST, MAX_TILES_PER_REQUEST, TILES_PROTOCOL, TileRequest,
    TileStatus,
};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info_span, warn};

use super::Inbound;
use super::codec::{read_message, write_message};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(TILES_PROTOCOL);

/// Tiles read from disk per trip to the blocking pool.
const READ_CHUNK: usize = 16;

/// How many tile batches this node serves at once, across all peers.
const MAX_CONCURRENT_BATCHES: usize = 64;

/// Why fetching a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open a tile stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("tile stream with {peer} failed: {source}")]
    Io {
        peer: PeerId,
        source: std::io::Error,
    },
    #[error("{peer} refused the tile request (no valid grant)")]
    Denied { peer: PeerId },
    #[error("{peer} sent bytes that do not hash to tile {tile}")]
    Corrupt { peer: PeerId, tile: TileId },
    #[error("{peer} sent a malformed tile stream: {detail}")]
    Protocol { peer: PeerId, detail: String },
}

impl FetchError {
    /// Whether the stream broke (connection closed or not yet open): worth another try.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Open { .. } | Self::Io { .. })
    }

    /// Whether the peer misbehaved (as opposed to being unreachable or unwilling).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Protocol { .. })
    }
}

/// Accepts tile streams until the swarm goes away; one task per batch.
pub async fn serve(mut control: libp2p_stream::Control, inbound: Arc<dyn Inbound>) {
    let mut incoming = match control.accept(PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            warn!(error = %e, "tile protocol already registered");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_BATCHES));
    while let Some((peer, stream)) = incoming.next().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let inbound = inbound.clone();
        tokio::spawn(
            async move {
                if let Err(e) = serve_batch(peer, stream, inbound).await {
                    debug!(error = %e, "tile batch ended early");
                }
                drop(permit);
            }
            .instrument(info_span!("serve_tiles", peer = %peer)),
        );
    }
}

async fn serve_batch(
    peer: PeerId,
    mut stream: Stream,
    inbound: Arc<dyn Inbound>,
) -> std::io::Result<()> {
    let request: TileRequest = read_message(&mut stream, MAX_TILE_REQUEST).await?;
    if request.tiles.len() > MAX_TILES_PER_REQUEST {
        stream.write_all(&[TileStatus::Denied as u8]).await?;
        return stream.close().await;
    }
    let slide = request.slide;
    let started = std::time::Instant::now();
    let authorized = inbound.authorize_tiles(peer, &request).await;
    let authorize_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Err(reason) = authorized {
        warn!(%slide, reason, "tile request denied");
        stream.write_all(&[TileStatus::Denied as u8]).await?;
        return stream.close().await;
    }
    // Reads go to the blocking pool a chunk at a time: one hop per chunk, not per tile,
    // and the next chunk is read while this one is being sent.
    let mut chunks = request.tiles.chunks(READ_CHUNK).map(|c| c.to_vec());
    let mut next = chunks.next().map(|c| inbound.read_tiles(c));
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
    debug!(
        %slide,
        tiles = request.tiles.len(),
        authorize_ms,
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
        "tile batch served"
    );
    stream.close().await
}

/// Fetches one batch from `peer`, calling `on_tile` with each tile as soon as it arrived
/// and hashed to its id. Missing tiles are skipped. Stops at the first wrong byte.
pub async fn fetch_batch(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    request: &TileRequest,
    mut on_tile: impl FnMut(TileId, Vec<u8>),
) -> Result<(), FetchError> {
    let io = |source| FetchError::Io { peer, source };
    let mut stream = control
        .open_stream(peer, PROTOCOL)
        .await
        .map_err(|e| FetchError::Open {
            peer,
            reason: e.to_string(),
        })?;
    write_message(&mut stream, request).await.map_err(io)?;
    for &tile in &request.tiles {
        let mut status = [0u8; 1];
        stream.read_exact(&mut status).await.map_err(io)?;
        match TileStatus::from_byte(status[0]) {
            Some(TileStatus::Ok) => {
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).await.map_err(io)?;
                let len = u32::from_le_bytes(len);
                if len > MAX_TILE_BYTES {
                    return Err(FetchError::Protocol {
                        peer,
                        detail: format!("tile of {len} bytes"),
                    });
                }
                let mut bytes = vec![0u8; len as usize];
                stream.read_exact(&mut bytes).await.map_err(io)?;
                if TileId::of(&bytes) != tile {
                    return Err(FetchError::Corrupt { peer, tile });
                }
                on_tile(tile, bytes);
            }
            Some(TileStatus::Missing) => {}
            Some(TileStatus::Denied) => return Err(FetchError::Denied { peer }),
            None => {
                return Err(FetchError::Protocol {
                    peer,
                    detail: format!("unknown status byte {}", status[0]),
                });
            }
        }
    }
    Ok(())
}
