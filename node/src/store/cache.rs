//! The on-disk cache of tiles fetched from peers: bounded in bytes, least recently used
//! out first, kept across restarts.
//!
//! One redb file, `cache/tiles.redb`: the tiles' bytes by id, and beside them each tile's
//! last-use stamp and length, so opening the cache rebuilds its recency order without
//! reading any tile. A batch of fetched tiles is one write transaction (one file and one
//! commit per batch, not one file per tile: creating ~20,000 small files was what bound a
//! whole-slide copy). Most commits are not fsynced (redb's `Durability::None`): the cache
//! is only a copy, so a crash may lose the last few batches, which are fetched again, but
//! never leaves a torn tile; every read is hashed against the tile id all the same, and
//! every `DURABLE_EVERY`th commit, and the last one on shutdown, is durable.
//!
//! Recency: a hit moves the tile to the back of the in-memory order at once; its new stamp
//! reaches the file with the next write, so a restart keeps the order as of then.
//!
//! Replicas: the tiles of a slide this trust holds a replicate grant for are *pinned* to
//! it (table `pins`, slide and tile): a pinned tile leaves the recency order, is never
//! evicted and does not count against the capacity (the owner's grant bounds what is
//! pinned). Unpinned by its last slide, it joins the recency order as the newest tile. A
//! pinned tile that fails its hash on a read is dropped with its pins, so the replica
//! fetches it again.
//!
//! The one-file-per-tile layout of earlier versions (`cache/ab/<hex id>`) is removed when
//! found; its tiles are fetched again when next needed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use slidemesh_protocol::{SlideId, TileId};
use tracing::{info, warn};

/// Tile id -> the tile's bytes.
const TILES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tiles");
/// Tile id -> (last-use stamp, length in bytes).
const USES: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("uses");
/// (Slide id, tile id) -> the tile's length: a replica's tiles, never evicted.
const PINS: TableDefinition<&[u8; 64], u64> = TableDefinition::new("pins");
/// The cache's file inside the cache directory.
const FILE: &str = "tiles.redb";
/// redb's own page cache for this file (its default is 1 GiB, which a busy cache would fill
/// with tiles the browser already holds); the kernel's page cache keeps the file's hot
/// pages anyway.
const MEMORY_CACHE_BYTES: usize = 32 << 20;
/// One commit in this many is durable (fsynced). redb reuses the pages a non-durable
/// commit frees only after a durable one, so they cannot all be non-durable.
const DURABLE_EVERY: u64 = 16;

/// A bounded, persistent tile cache.
pub struct TileCache {
    db: Database,
    capacity: u64,
    inner: Mutex<Inner>,
    /// Serialises writers, so the in-memory index and the file change in the same order.
    writer: Mutex<()>,
    commits: AtomicU64,
}

struct Inner {
    /// Tile -> length, most recently used last out.
    entries: LruCache<TileId, u64>,
    bytes: u64,
    /// The next use stamp (grows with every put and hit).
    stamp: u64,
    /// Hits since the last write: tile -> its new stamp.
    touched: HashMap<TileId, u64>,
    /// Pinned tiles (out of `entries`): their length and the slides pinning them.
    pinned: HashMap<TileId, Pin>,
}

struct Pin {
    len: u64,
    slides: Vec<SlideId>,
}

impl Inner {
    /// Records tiles (with their lengths) as pinned to `slide`, after the write that made
    /// it so: out of the recency order and the counted bytes.
    fn pin_all(&mut self, slide: &SlideId, tiles: &[(TileId, u64)]) {
        for &(id, len) in tiles {
            if let Some(old) = self.entries.pop(&id) {
                self.bytes -= old;
                self.touched.remove(&id);
            }
            self.pinned
                .entry(id)
                .or_insert_with(|| Pin {
                    len,
                    slides: Vec::new(),
                })
                .slides
                .push(*slide);
        }
    }
}

fn pin_key(slide: &SlideId, tile: &TileId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(slide.as_bytes());
    key[32..].copy_from_slice(tile.as_bytes());
    key
}

/// A slide's pinned tiles: how many, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PinnedStats {
    pub tiles: usize,
    pub bytes: u64,
}

/// Cache occupancy, for the node's status endpoint.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    pub tiles: usize,
    pub bytes: u64,
    pub capacity: u64,
    /// Replicas' tiles, outside the capacity.
    pub pinned: PinnedStats,
}

fn redb_error(what: &str, e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(format!("tile cache: {what}: {}", e.into()))
}

impl TileCache {
    /// Opens (creating if needed) the cache in `dir`, indexing what an earlier run left,
    /// oldest first, and trimming it to `capacity` bytes. A cache file redb cannot open is
    /// replaced by an empty one (it holds only copies).
    pub fn open(dir: &Path, capacity: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        remove_old_layout(dir);
        let path = dir.join(FILE);
        let open = || {
            Database::builder()
                .set_cache_size(MEMORY_CACHE_BYTES)
                .create(&path)
        };
        let db = match open() {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(io::Error::other(format!(
                    "tile cache {} is in use by another process",
                    path.display()
                )));
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "tile cache unreadable; starting an empty one");
                fs::remove_file(&path)?;
                open().map_err(|e| redb_error("create", e))?
            }
        };
        {
            let tx = db.begin_write().map_err(|e| redb_error("begin", e))?;
            tx.open_table(TILES)
                .map_err(|e| redb_error("open tiles", e))?;
            tx.open_table(USES)
                .map_err(|e| redb_error("open uses", e))?;
            tx.open_table(PINS)
                .map_err(|e| redb_error("open pins", e))?;
            tx.commit().map_err(|e| redb_error("commit", e))?;
        }
        let mut found: Vec<(u64, TileId, u64)> = Vec::new();
        let mut pinned: HashMap<TileId, Pin> = HashMap::new();
        {
            let tx = db.begin_read().map_err(|e| redb_error("begin read", e))?;
            let pins = tx
                .open_table(PINS)
                .map_err(|e| redb_error("open pins", e))?;
            for row in pins.iter().map_err(|e| redb_error("read pins", e))? {
                let (key, len) = row.map_err(|e| redb_error("read pins", e))?;
                let key = key.value();
                let mut slide = [0u8; 32];
                let mut tile = [0u8; 32];
                slide.copy_from_slice(&key[..32]);
                tile.copy_from_slice(&key[32..]);
                pinned
                    .entry(TileId::from_bytes(tile))
                    .or_insert_with(|| Pin {
                        len: len.value(),
                        slides: Vec::new(),
                    })
                    .slides
                    .push(SlideId::from_bytes(slide));
            }
            let uses = tx
                .open_table(USES)
                .map_err(|e| redb_error("open uses", e))?;
            for row in uses.iter().map_err(|e| redb_error("read uses", e))? {
                let (id, value) = row.map_err(|e| redb_error("read uses", e))?;
                let (stamp, len) = value.value();
                let id = TileId::from_bytes(*id.value());
                if !pinned.contains_key(&id) {
                    found.push((stamp, id, len));
                }
            }
        }
        found.sort_unstable_by_key(|(stamp, _, _)| *stamp);
        let mut entries = LruCache::unbounded();
        let mut bytes = 0;
        let stamp = found.last().map_or(0, |(s, _, _)| s + 1);
        for (_, id, len) in found {
            entries.push(id, len);
            bytes += len;
        }
        let cache = Self {
            db,
            capacity,
            inner: Mutex::new(Inner {
                entries,
                bytes,
                stamp,
                touched: HashMap::new(),
                pinned,
            }),
            writer: Mutex::new(()),
            commits: AtomicU64::new(0),
        };
        // Trims a cache that outgrew a smaller capacity.
        cache.put_many(&[])?;
        Ok(cache)
    }

    /// A write transaction for a batch of tiles: durable one commit in [`DURABLE_EVERY`].
    fn begin_batch(&self) -> Result<redb::WriteTransaction, redb::Error> {
        let mut tx = self.db.begin_write()?;
        let durable = self
            .commits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(DURABLE_EVERY);
        if !durable {
            tx.set_durability(Durability::None)?;
        }
        Ok(tx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tile's bytes if cached and intact.
    pub fn get(&self, id: &TileId) -> Option<Vec<u8>> {
        if !self.contains(id) {
            return None;
        }
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let tx = self.db.begin_read()?;
            let tiles = tx.open_table(TILES)?;
            Ok(tiles.get(id.as_bytes())?.map(|v| v.value().to_vec()))
        };
        match read() {
            Ok(Some(bytes)) if TileId::of(&bytes) == *id => {
                let mut inner = self.lock();
                if !inner.pinned.contains_key(id) && inner.entries.get(id).is_some() {
                    let stamp = inner.stamp;
                    inner.stamp += 1;
                    inner.touched.insert(*id, stamp);
                }
                Some(bytes)
            }
            // Written by a batch still committing: not there yet, so not a loss.
            Ok(None) => None,
            Ok(Some(_)) => {
                warn!(tile = %id, "cached tile does not match its id; dropping it");
                self.remove(id);
                None
            }
            Err(e) => {
                warn!(tile = %id, error = %e, "cannot read a cached tile");
                None
            }
        }
    }

    pub fn contains(&self, id: &TileId) -> bool {
        let inner = self.lock();
        inner.entries.contains(id) || inner.pinned.contains_key(id)
    }

    /// Stores a tile the caller has verified against its id.
    pub fn put(&self, id: &TileId, bytes: &[u8]) -> io::Result<()> {
        self.put_many(&[(*id, bytes)])
    }

    /// Stores tiles the caller has verified, in one transaction, evicting the least
    /// recently used as needed; also records the hits since the last write.
    pub fn put_many(&self, tiles: &[(TileId, &[u8])]) -> io::Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.put_many_locked(tiles)
    }

    /// [`Self::put_many`], the writer lock held by the caller.
    fn put_many_locked(&self, tiles: &[(TileId, &[u8])]) -> io::Result<()> {
        // Decide under the lock, write without it: readers only wait for the decision.
        let (new, evicted, touched) = {
            let mut inner = self.lock();
            let mut new: Vec<(TileId, &[u8], u64)> = Vec::new();
            let mut adding = 0u64;
            for (id, bytes) in tiles {
                let len = bytes.len() as u64;
                if inner.entries.contains(id)
                    || inner.pinned.contains_key(id)
                    || len > self.capacity
                    || new.iter().any(|(n, _, _)| n == id)
                {
                    continue;
                }
                let stamp = inner.stamp;
                inner.stamp += 1;
                new.push((*id, bytes, stamp));
                adding += len;
            }
            let mut evicted = Vec::new();
            while inner.bytes + adding > self.capacity {
                let Some((id, len)) = inner.entries.pop_lru() else {
                    break;
                };
                inner.bytes -= len;
                inner.touched.remove(&id);
                evicted.push(id);
            }
            let touched: Vec<(TileId, u64, u64)> = std::mem::take(&mut inner.touched)
                .into_iter()
                .filter_map(|(id, stamp)| inner.entries.peek(&id).map(|len| (id, stamp, *len)))
                .collect();
            (new, evicted, touched)
        };
        if new.is_empty() && evicted.is_empty() && touched.is_empty() {
            return Ok(());
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.begin_batch()?;
            {
                let mut table = tx.open_table(TILES)?;
                let mut uses = tx.open_table(USES)?;
                for id in &evicted {
                    table.remove(id.as_bytes())?;
                    uses.remove(id.as_bytes())?;
                }
                for (id, bytes, stamp) in &new {
                    table.insert(id.as_bytes(), *bytes)?;
                    uses.insert(id.as_bytes(), (*stamp, bytes.len() as u64))?;
                }
                for (id, stamp, len) in &touched {
                    uses.insert(id.as_bytes(), (*stamp, *len))?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        let written = write();
        let mut inner = self.lock();
        match written {
            Ok(()) => {
                for (id, bytes, _) in new {
                    inner.entries.push(id, bytes.len() as u64);
                    inner.bytes += bytes.len() as u64;
                }
                Ok(())
            }
            Err(e) => {
                // The evicted tiles may still be in the file; they are gone from the index,
                // and the next open finds them again. The new tiles were not stored.
                Err(redb_error("write", e))
            }
        }
    }

    fn remove(&self, id: &TileId) {
        if let Err(e) = self.remove_many(std::slice::from_ref(id)) {
            warn!(tile = %id, error = %e, "cannot drop a cached tile");
        }
    }

    /// Drops tiles from the cache in one durable transaction (a slide this node may no
    /// longer show: its copy must not outlive the decision; a tile found rotten), pins
    /// included.
    pub fn remove_many(&self, ids: &[TileId]) -> io::Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut unpinned = Vec::new();
        {
            let mut inner = self.lock();
            for id in ids {
                if let Some(len) = inner.entries.pop(id) {
                    inner.bytes -= len;
                }
                inner.touched.remove(id);
                if let Some(pin) = inner.pinned.remove(id) {
                    unpinned.extend(pin.slides.iter().map(|s| pin_key(s, id)));
                }
            }
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut tiles = tx.open_table(TILES)?;
                let mut uses = tx.open_table(USES)?;
                let mut pins = tx.open_table(PINS)?;
                for id in ids {
                    tiles.remove(id.as_bytes())?;
                    uses.remove(id.as_bytes())?;
                }
                for key in &unpinned {
                    pins.remove(key)?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| redb_error("remove", e))
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            tiles: inner.entries.len(),
            bytes: inner.bytes,
            capacity: self.capacity,
            pinned: PinnedStats {
                tiles: inner.pinned.len(),
                bytes: inner.pinned.values().map(|p| p.len).sum(),
            },
        }
    }

    /// Pins to `slide` those of `tiles` the cache holds (the rest are the caller's to fetch
    /// and pin later), in one durable transaction. Returns how many of `tiles` are pinned
    /// to the slide now.
    pub fn pin(&self, slide: &SlideId, tiles: &[TileId]) -> io::Result<usize> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (new, already): (Vec<(TileId, u64)>, usize) = {
            let inner = self.lock();
            let mut new = Vec::new();
            let mut already = 0;
            for id in tiles {
                match inner.pinned.get(id) {
                    Some(pin) if pin.slides.contains(slide) => already += 1,
                    Some(pin) => new.push((*id, pin.len)),
                    None => {
                        if let Some(len) = inner.entries.peek(id) {
                            new.push((*id, *len));
                        }
                    }
                }
            }
            (new, already)
        };
        if new.is_empty() {
            return Ok(already);
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut pins = tx.open_table(PINS)?;
                for (id, len) in &new {
                    pins.insert(&pin_key(slide, id), *len)?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| redb_error("pin", e))?;
        self.lock().pin_all(slide, &new);
        Ok(already + new.len())
    }

    /// Stores tiles the caller has verified pinned to `slide` (a replica's), in one
    /// transaction and outside the capacity: nothing is evicted for them and they are
    /// never evicted themselves.
    pub fn put_pinned(&self, slide: &SlideId, tiles: &[(TileId, &[u8])]) -> io::Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // New tiles (with their use stamps), and every tile to pin with its length.
        type New<'a> = Vec<(TileId, &'a [u8], u64)>;
        let (new, pins): (New<'_>, Vec<(TileId, u64)>) = {
            let mut inner = self.lock();
            let mut new = Vec::new();
            let mut pins = Vec::new();
            for (id, bytes) in tiles {
                let len = bytes.len() as u64;
                if pins.iter().any(|(p, _)| p == id) {
                    continue;
                }
                match inner.pinned.get(id) {
                    Some(pin) if pin.slides.contains(slide) => continue,
                    Some(_) => {}
                    None if inner.entries.contains(id) => {}
                    None => {
                        let stamp = inner.stamp;
                        inner.stamp += 1;
                        new.push((*id, *bytes, stamp));
                    }
                }
                pins.push((*id, len));
            }
            (new, pins)
        };
        if pins.is_empty() {
            return Ok(());
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.begin_batch()?;
            {
                let mut table = tx.open_table(TILES)?;
                let mut uses = tx.open_table(USES)?;
                let mut pinned = tx.open_table(PINS)?;
                for (id, bytes, stamp) in &new {
                    table.insert(id.as_bytes(), *bytes)?;
                    uses.insert(id.as_bytes(), (*stamp, bytes.len() as u64))?;
                }
                for (id, len) in &pins {
                    pinned.insert(&pin_key(slide, id), *len)?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| redb_error("write pinned", e))?;
        self.lock().pin_all(slide, &pins);
        Ok(())
    }

    /// Drops those of `ids` no replica pins (a shared slide this node may no longer show:
    /// its copy must not outlive the decision, but a replica held for others keeps its
    /// tiles while its own grant holds).
    pub fn drop_unpinned(&self, ids: &[TileId]) -> io::Result<()> {
        let unpinned: Vec<TileId> = {
            let inner = self.lock();
            ids.iter()
                .filter(|id| !inner.pinned.contains_key(id))
                .copied()
                .collect()
        };
        self.remove_many(&unpinned)
    }

    /// Unpins every tile pinned to `slide`. Tiles no other slide pins are dropped, or, with
    /// `keep` (the slide is still shared with this trust's people), become ordinary cached
    /// tiles, the first to be evicted (a released replica must not push out what viewers
    /// use).
    pub fn unpin_slide(&self, slide: &SlideId, keep: bool) -> io::Result<usize> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tiles: Vec<TileId> = {
            let inner = self.lock();
            inner
                .pinned
                .iter()
                .filter(|(_, pin)| pin.slides.contains(slide))
                .map(|(id, _)| *id)
                .collect()
        };
        if tiles.is_empty() {
            return Ok(0);
        }
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut pins = tx.open_table(PINS)?;
                for id in &tiles {
                    pins.remove(&pin_key(slide, id))?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| redb_error("unpin", e))?;
        let mut released = Vec::new();
        {
            let mut inner = self.lock();
            for id in &tiles {
                let Some(pin) = inner.pinned.get_mut(id) else {
                    continue;
                };
                pin.slides.retain(|s| s != slide);
                if pin.slides.is_empty() {
                    let len = pin.len;
                    inner.pinned.remove(id);
                    released.push(*id);
                    if keep {
                        // Oldest: stamped below every other tile, and last in line.
                        inner.touched.insert(*id, 0);
                        inner.entries.push(*id, len);
                        inner.entries.demote(id);
                        inner.bytes += len;
                    }
                }
            }
        }
        if keep {
            // Back within the capacity, evicting (these first) as needed.
            self.put_many_locked(&[])?;
        } else {
            let write = || -> Result<(), redb::Error> {
                let tx = self.db.begin_write()?;
                {
                    let mut table = tx.open_table(TILES)?;
                    let mut uses = tx.open_table(USES)?;
                    for id in &released {
                        table.remove(id.as_bytes())?;
                        uses.remove(id.as_bytes())?;
                    }
                }
                tx.commit()?;
                Ok(())
            };
            write().map_err(|e| redb_error("drop released tiles", e))?;
        }
        Ok(tiles.len())
    }

    /// Reads every cached tile and hashes it against its id, calling `progress` with each
    /// tile's length; drops the rotten ones (and their pins: a replica fetches them again).
    /// Returns how many tiles and bytes were checked, and the tiles dropped.
    pub fn scrub(&self, mut progress: impl FnMut(u64)) -> io::Result<(u64, u64, Vec<TileId>)> {
        let mut rotten = Vec::new();
        let (mut checked, mut bytes) = (0u64, 0u64);
        let mut after: Option<[u8; 32]> = None;
        // In slices of a read transaction each, so a long scrub does not hold one open.
        loop {
            let tx = self
                .db
                .begin_read()
                .map_err(|e| redb_error("begin read", e))?;
            let tiles = tx
                .open_table(TILES)
                .map_err(|e| redb_error("open tiles", e))?;
            let range = match &after {
                Some(key) => tiles.range::<&[u8; 32]>((
                    std::ops::Bound::Excluded(key),
                    std::ops::Bound::Unbounded,
                )),
                None => tiles.range::<&[u8; 32]>(..),
            }
            .map_err(|e| redb_error("read tiles", e))?;
            let mut seen = 0;
            for row in range.take(1024) {
                let (id, value) = row.map_err(|e| redb_error("read tiles", e))?;
                let id = TileId::from_bytes(*id.value());
                let value = value.value();
                if TileId::of(value) != id {
                    rotten.push(id);
                }
                checked += 1;
                bytes += value.len() as u64;
                progress(value.len() as u64);
                after = Some(*id.as_bytes());
                seen += 1;
            }
            if seen == 0 {
                break;
            }
        }
        if !rotten.is_empty() {
            warn!(
                tiles = rotten.len(),
                "cached tiles do not match their ids; dropping them"
            );
            self.remove_many(&rotten)?;
        }
        Ok((checked, bytes, rotten))
    }

    /// The tiles pinned to `slide`.
    pub fn pinned_to(&self, slide: &SlideId) -> std::collections::HashSet<TileId> {
        self.lock()
            .pinned
            .iter()
            .filter(|(_, pin)| pin.slides.contains(slide))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The slides with tiles pinned to them, and their tiles' count and bytes.
    pub fn pinned_slides(&self) -> HashMap<SlideId, PinnedStats> {
        let mut out: HashMap<SlideId, PinnedStats> = HashMap::new();
        for pin in self.lock().pinned.values() {
            for slide in &pin.slides {
                let stats = out.entry(*slide).or_default();
                stats.tiles += 1;
                stats.bytes += pin.len;
            }
        }
        out
    }
}

impl TileCache {
    /// Makes everything written durable, with the hits since the last write (on shutdown).
    pub fn flush(&self) -> io::Result<()> {
        self.put_many(&[])?;
        // A durable commit also makes the non-durable ones before it durable.
        let tx = self.db.begin_write().map_err(|e| redb_error("begin", e))?;
        tx.commit().map_err(|e| redb_error("commit", e))
    }
}

impl Drop for TileCache {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            warn!(error = %e, "tile cache not flushed");
        }
    }
}

/// Removes the one-file-per-tile layout of earlier versions (two-hex-digit shard folders).
fn remove_old_layout(dir: &Path) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    let mut removed = 0usize;
    for entry in listing.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let shard = name.len() == 2 && name.chars().all(|c| c.is_ascii_hexdigit());
        if shard && entry.file_type().is_ok_and(|t| t.is_dir()) {
            removed += fs::read_dir(entry.path()).map_or(0, |d| d.count());
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    if removed > 0 {
        info!(
            tiles = removed,
            "removed the old one-file-per-tile cache; its tiles are fetched again when needed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tiles: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let ids: Vec<TileId> = tiles.iter().map(|t| TileId::of(t)).collect();
        {
            let cache = TileCache::open(dir.path(), 300).unwrap();
            for (id, t) in ids.iter().zip(&tiles).take(3) {
                cache.put(id, t).unwrap();
            }
            // Touch the first so the second is the oldest.
            assert_eq!(cache.get(&ids[0]).unwrap(), tiles[0]);
            cache.put(&ids[3], &tiles[3]).unwrap();
            assert!(
                cache.get(&ids[1]).is_none(),
                "least recently used went first"
            );
            assert_eq!(cache.stats().bytes, 300);
            // Touch the third: after a restart it is the newest but one.
            assert_eq!(cache.get(&ids[2]).unwrap(), tiles[2]);
        }
        let cache = TileCache::open(dir.path(), 300).unwrap();
        assert_eq!(cache.stats().tiles, 3);
        assert_eq!(cache.get(&ids[3]).unwrap(), tiles[3]);
        // Recency survived: the first is the oldest now (the third was touched after it,
        // the fourth just now), so it goes when a new tile arrives.
        let extra = vec![9u8; 100];
        cache.put(&TileId::of(&extra), &extra).unwrap();
        assert!(!cache.contains(&ids[0]), "oldest after reopen went first");
        assert!(cache.contains(&ids[2]) && cache.contains(&ids[3]));
    }

    #[test]
    fn a_batch_is_one_write_and_a_smaller_capacity_trims_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tiles: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 50]).collect();
        let batch: Vec<(TileId, &[u8])> = tiles
            .iter()
            .map(|t| (TileId::of(t), t.as_slice()))
            .collect();
        {
            let cache = TileCache::open(dir.path(), 10_000).unwrap();
            cache.put_many(&batch).unwrap();
            assert_eq!(cache.stats().tiles, 10);
        }
        let cache = TileCache::open(dir.path(), 200).unwrap();
        assert_eq!(cache.stats().tiles, 4);
        assert_eq!(cache.stats().bytes, 200);
        // The newest four of the batch are the ones kept.
        for (id, bytes) in &batch[6..] {
            assert_eq!(cache.get(id).as_deref(), Some(*bytes));
        }
    }

    #[test]
    fn corrupted_tile_is_dropped_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TileCache::open(dir.path(), 1000).unwrap();
        let tile = b"tile bytes".to_vec();
        let id = TileId::of(&tile);
        cache.put(&id, &tile).unwrap();
        // Rot on disk, as the file system might hand it back.
        let tx = cache.db.begin_write().unwrap();
        tx.open_table(TILES)
            .unwrap()
            .insert(id.as_bytes(), b"rotten".as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert!(cache.get(&id).is_none());
        assert!(!cache.contains(&id));
    }

    #[test]
    fn pinned_tiles_are_never_evicted_and_survive_reopen_until_unpinned() {
        let dir = tempfile::tempdir().unwrap();
        let tiles: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 100]).collect();
        let ids: Vec<TileId> = tiles.iter().map(|t| TileId::of(t)).collect();
        let slide = SlideId::of(b"replicated");
        {
            let cache = TileCache::open(dir.path(), 300).unwrap();
            for (id, t) in ids.iter().zip(&tiles).take(2) {
                cache.put(id, t).unwrap();
            }
            // Pinned: the two oldest, plus one not held (not pinned: the caller fetches it).
            assert_eq!(cache.pin(&slide, &[ids[0], ids[1], ids[5]]).unwrap(), 2);
            for (id, t) in ids.iter().zip(&tiles).skip(2).take(3) {
                cache.put(id, t).unwrap();
            }
            // Five tiles of 100 bytes in a 300-byte cache: the pinned two are outside it.
            assert!(cache.contains(&ids[0]) && cache.contains(&ids[1]));
            assert_eq!(cache.stats().bytes, 300);
            assert_eq!(
                cache.stats().pinned,
                PinnedStats {
                    tiles: 2,
                    bytes: 200
                }
            );
        }
        let cache = TileCache::open(dir.path(), 300).unwrap();
        assert_eq!(
            cache.pinned_to(&slide),
            [ids[0], ids[1]].into_iter().collect()
        );
        assert_eq!(cache.get(&ids[0]).unwrap(), tiles[0]);
        // Unpinned but kept (the slide is still shared here), they are the first evicted:
        // the cache trims to capacity by dropping them, not the tiles viewers used.
        assert_eq!(cache.unpin_slide(&slide, true).unwrap(), 2);
        assert!(cache.pinned_slides().is_empty());
        assert_eq!(cache.stats().bytes, 300);
        assert_eq!(cache.stats().tiles, 3);
        assert!(!cache.contains(&ids[0]) && !cache.contains(&ids[1]));
        assert!((2..5).all(|i| cache.contains(&ids[i])));
    }

    #[test]
    fn a_replicas_tiles_are_stored_pinned_whatever_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TileCache::open(dir.path(), 150).unwrap();
        let viewed = vec![9u8; 100];
        cache.put(&TileId::of(&viewed), &viewed).unwrap();
        let tiles: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let batch: Vec<(TileId, &[u8])> = tiles
            .iter()
            .map(|t| (TileId::of(t), t.as_slice()))
            .collect();
        let slide = SlideId::of(b"replicated");
        cache.put_pinned(&slide, &batch).unwrap();
        cache.put_pinned(&slide, &batch[..1]).unwrap();
        assert_eq!(cache.pinned_to(&slide).len(), 4);
        assert!(
            cache.contains(&TileId::of(&viewed)),
            "nothing evicted for a replica"
        );
        assert_eq!(cache.stats().bytes, 100);
        drop(cache);
        let cache = TileCache::open(dir.path(), 150).unwrap();
        assert_eq!(cache.get(&batch[3].0).as_deref(), Some(batch[3].1));
        assert_eq!(cache.stats().pinned.tiles, 4);
    }

    #[test]
    fn a_released_replica_leaves_nothing_behind_and_a_shared_slide_spares_pins() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TileCache::open(dir.path(), 10_000).unwrap();
        let tiles: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let batch: Vec<(TileId, &[u8])> = tiles
            .iter()
            .map(|t| (TileId::of(t), t.as_slice()))
            .collect();
        cache.put_many(&batch).unwrap();
        let (a, b) = (SlideId::of(b"a"), SlideId::of(b"b"));
        cache.pin(&a, &[batch[0].0, batch[1].0]).unwrap();
        cache.pin(&b, &[batch[1].0]).unwrap();
        // A shared slide ending drops its unpinned tiles only.
        cache
            .drop_unpinned(&batch.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            .unwrap();
        assert!(cache.contains(&batch[0].0) && cache.contains(&batch[1].0));
        assert!(!cache.contains(&batch[2].0) && !cache.contains(&batch[3].0));
        // Replica a released: its own tile goes; the one b still pins stays.
        cache.unpin_slide(&a, false).unwrap();
        assert!(!cache.contains(&batch[0].0));
        assert!(cache.contains(&batch[1].0));
        drop(cache);
        let cache = TileCache::open(dir.path(), 10_000).unwrap();
        assert_eq!(cache.stats().tiles, 0);
        assert_eq!(cache.pinned_to(&b), [batch[1].0].into_iter().collect());
    }

    #[test]
    fn a_rotten_pinned_tile_is_dropped_with_its_pin() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TileCache::open(dir.path(), 1000).unwrap();
        let tile = b"replica tile".to_vec();
        let id = TileId::of(&tile);
        let slide = SlideId::of(b"replicated");
        cache.put(&id, &tile).unwrap();
        cache.pin(&slide, &[id]).unwrap();
        let tx = cache.db.begin_write().unwrap();
        tx.open_table(TILES)
            .unwrap()
            .insert(id.as_bytes(), b"rotten".as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert!(cache.get(&id).is_none());
        assert!(!cache.contains(&id));
        assert!(
            cache.pinned_to(&slide).is_empty(),
            "fetched again by the replica"
        );
    }

    #[test]
    fn the_scrub_drops_rotten_tiles_and_their_pins() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TileCache::open(dir.path(), 1_000_000).unwrap();
        let tiles: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_le_bytes().repeat(10)).collect();
        let batch: Vec<(TileId, &[u8])> = tiles
            .iter()
            .map(|t| (TileId::of(t), t.as_slice()))
            .collect();
        cache.put_many(&batch).unwrap();
        let slide = SlideId::of(b"replicated");
        let bad = batch[2500].0;
        cache.pin(&slide, &[bad, batch[1].0]).unwrap();
        let tx = cache.db.begin_write().unwrap();
        tx.open_table(TILES)
            .unwrap()
            .insert(bad.as_bytes(), b"rotten".as_slice())
            .unwrap();
        tx.commit().unwrap();
        let mut seen = 0;
        let (checked, bytes, dropped) = cache.scrub(|n| seen += n).unwrap();
        assert_eq!(checked, 3000, "every tile, across read slices");
        assert_eq!(bytes, seen);
        assert_eq!(dropped, vec![bad]);
        assert!(!cache.contains(&bad));
        assert_eq!(cache.pinned_to(&slide), [batch[1].0].into_iter().collect());
        assert_eq!(cache.scrub(|_| {}).unwrap().2, vec![]);
    }

    #[test]
    fn the_old_one_file_per_tile_layout_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        fs::create_dir_all(&shard).unwrap();
        fs::write(shard.join("ab".repeat(32)), b"old").unwrap();
        let cache = TileCache::open(dir.path(), 1000).unwrap();
        assert!(!shard.exists());
        assert_eq!(cache.stats().tiles, 0);
    }
}
