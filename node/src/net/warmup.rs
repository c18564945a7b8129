//! Connection warm-up (`/slidemesh/warm-up/1`): once connected to a member, a node pushes
//! a fixed amount of filler to it and waits for the peer's acknowledgement.
//!
//! Why: a new QUIC (or TCP) connection starts with a congestion window of about 12 KB and
//! doubles it per round trip while it is kept busy. A first screen of a remote slide is
//! 40 to 60 tiles, 400 to 600 KB, so on a fresh connection over a 20 ms link it would take
//! six or seven round trips of slow start. Members stay connected for hours, and quinn keeps
//! a window it has grown (it does not shrink it while the connection idles), so paying the
//! slow start once, right after connecting and before anyone waits, lets the first screen
//! go out at the link's speed. The push also measures the link: the time and rate are in
//! the node's network status.
//!
//! Bounded on both sides: the reader accepts at most `MAX_WARM_UP_BYTES` per stream and
//! `MAX_CONCURRENT` streams at once; the writer gives up after `TIMEOUT`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use slidemesh_protocol::wire::{MAX_WARM_UP_BYTES, WARM_UP_DONE, WARM_UP_PROTOCOL};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(WARM_UP_PROTOCOL);

/// Longest a warm-up may take, either side.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Warm-up streams read at once, across all peers.
const MAX_CONCURRENT: usize = 16;
/// Pushes tried per connection.
const ATTEMPTS: u32 = 3;
/// Pause before trying a push again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Filler written or read per call.
const CHUNK: usize = 64 << 10;

/// A finished warm-up of the connection to one peer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WarmedUp {
    pub peer: String,
    pub bytes: u64,
    /// From opening the stream to the peer's acknowledgement.
    pub millis: f64,
    /// The rate that implies, in megabits per second (a lower bound on the link's: the
    /// push starts in slow start).
    pub mbit_per_s: f64,
}

/// Warm-ups finished on the connections open now, by peer, and how many finished since
/// the node started.
#[derive(Clone, Default)]
pub struct WarmUps {
    open: Arc<Mutex<HashMap<PeerId, WarmedUp>>>,
    done: Arc<AtomicU64>,
}

impl WarmUps {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, WarmedUp>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Warm-ups finished since the node started (a benchmark waits for the next one).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// The peer's last connection closed: a new one starts cold again.
    pub fn forget(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }

    pub fn list(&self) -> Vec<WarmedUp> {
        let mut all: Vec<WarmedUp> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.peer.cmp(&b.peer));
        all
    }

    /// Pushes `bytes` of filler to `peer` and records how long the acknowledgement took.
    /// A failed push is tried again a couple of times (when both sides dial at once, the
    /// stream may have gone out on the connection that is being closed); failures are only
    /// logged: a warm-up is an optimisation.
    pub async fn push(&self, control: libp2p_stream::Control, peer: PeerId, bytes: u64) {
        let mut error = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let started = Instant::now();
            match tokio::time::timeout(TIMEOUT, push_once(control.clone(), peer, bytes)).await {
                Ok(Ok(())) => {
                    let seconds = started.elapsed().as_secs_f64().max(1e-6);
                    let record = WarmedUp {
                        peer: peer.to_string(),
                        bytes,
                        millis: seconds * 1000.0,
                        mbit_per_s: bytes as f64 * 8.0 / seconds / 1e6,
                    };
                    debug!(%peer, bytes, millis = record.millis, mbit_per_s = record.mbit_per_s,
                        "connection warmed up");
                    self.lock().insert(peer, record);
                    self.done.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(Err(e)) => error = e,
                Err(_) => error = format!("timed out after {TIMEOUT:?}"),
            }
        }
        // A peer running an older version, or one that went away: tiles still flow, only
        // the first ones slower.
        info!(%peer, error, "connection warm-up failed");
    }
}

/// One push: the length, the filler, then the peer's acknowledgement.
async fn push_once(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    bytes: u64,
) -> Result<(), String> {
    let mut stream = control
        .open_stream(peer, PROTOCOL)
        .await
        .map_err(|e| format!("cannot open a warm-up stream: {e}"))?;
    stream
        .write_all(&bytes.to_le_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let filler = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream
            .write_all(&filler[..n])
            .await
            .map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut done = [0u8; 1];
    stream
        .read_exact(&mut done)
        .await
        .map_err(|e| format!("no acknowledgement: {e}"))?;
    if done[0] != WARM_UP_DONE {
        return Err(format!("unexpected acknowledgement byte {:#04x}", done[0]));
    }
    let _ = stream.close().await;
    Ok(())
}

/// Reads warm-up pushes from members until the swarm goes away: each is read to its end,
/// discarded and acknowledged.
pub async fn serve(mut control: libp2p_stream::Control) {
    let mut incoming = match control.accept(PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            warn!(error = %e, "warm-up protocol already registered");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    while let Some((peer, mut stream)) = incoming.next().await {
        // Never wait in this loop: libp2p-stream drops streams arriving while it is busy.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "too many warm-ups at once; refusing one");
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let read = tokio::time::timeout(TIMEOUT, async {
                let mut header = [0u8; 8];
                stream.read_exact(&mut header).await?;
                let len = u64::from_le_bytes(header);
                if len > MAX_WARM_UP_BYTES {
                    return Err(std::io::Error::other(format!(
                        "{len} bytes offered, at most {MAX_WARM_UP_BYTES} accepted"
                    )));
                }
                let mut sink = vec![0u8; CHUNK];
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    stream.read_exact(&mut sink[..n]).await?;
                    left -= n as u64;
                }
                stream.write_all(&[WARM_UP_DONE]).await?;
                stream.close().await?;
                Ok(len)
            })
            .await;
            match read {
                Ok(Ok(len)) => debug!(%peer, bytes = len, "warm-up read"),
                Ok(Err(e)) => info!(%peer, error = %e, "warm-up stream ended early"),
                Err(_) => info!(%peer, "warm-up stream timed out"),
            }
        });
    }
}
