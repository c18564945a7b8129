//! The on-disk cache of tiles fetched from peers: bounded in bytes, least recently used
//! out first, kept across restarts.
//!
//! One file per tile under `cache/ab/<hex id>`, written beside its final name and renamed
//! into place, so a crash leaves a whole file or none. Files are not fsynced: the cache is
//! only a copy, and every read is hashed against the tile id, so a torn or rotten file is
//! dropped and refetched, never served. Recency survives a restart through file mtimes
//! (a hit touches the file).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use lru::LruCache;
use slidemesh_protocol::TileId;
use tracing::warn;

/// A bounded, persistent tile cache.
pub struct TileCache {
    dir: PathBuf,
    capacity: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Tile -> file size, most recently used last out.
    entries: LruCache<TileId, u64>,
    bytes: u64,
}

/// Cache occupancy, for the node's status endpoint.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    pub tiles: usize,
    pub bytes: u64,
    pub capacity: u64,
}

impl TileCache {
    /// Opens (creating if needed) the cache in `dir`, indexing what an earlier run left,
    /// oldest first, and trimming it to `capacity` bytes.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(SystemTime, TileId, u64)> = Vec::new();
        for shard in fs::read_dir(dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let name = file.file_name();
                let name = name.to_string_lossy();
                match name.parse::<TileId>() {
                    Ok(id) => {
                        let meta = file.metadata()?;
                        let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((when, id, meta.len()));
                    }
                    // A write that never reached its rename.
                    Err(_) => {
                        let _ = fs::remove_file(file.path());
                    }
                }
            }
        }
        found.sort_by_key(|(when, _, _)| *when);
        let cache = Self {
            dir: dir.to_path_buf(),
            capacity,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        };
        {
            let mut inner = cache.lock();
            for (_, id, len) in found {
                inner.entries.push(id, len);
                inner.bytes += len;
            }
            cache.evict(&mut inner);
        }
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: &TileId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The tile's bytes if cached and intact.
    pub fn get(&self, id: &TileId) -> Option<Vec<u8>> {
        self.lock().entries.get(id)?;
        let path = self.path(id);
        match fs::read(&path) {
            Ok(bytes) if TileId::of(&bytes) == *id => {
                if let Ok(file) = fs::File::options().write(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(bytes)
            }
            Ok(_) => {
                warn!(tile = %id, "cached tile does not match its id; dropping it");
                self.remove(id);
                None
            }
            Err(_) => {
                self.remove(id);
                None
            }
        }
    }

    pub fn contains(&self, id: &TileId) -> bool {
        self.lock().entries.contains(id)
    }

    /// Stores a tile the caller has verified against its id.
    pub fn put(&self, id: &TileId, bytes: &[u8]) -> io::Result<()> {
        if self.contains(id) || bytes.len() as u64 > self.capacity {
            return Ok(());
        }
        let path = self.path(id);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let staged = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&staged, bytes)?;
        fs::rename(&staged, &path)?;
        let mut inner = self.lock();
        inner.entries.push(*id, bytes.len() as u64);
        inner.bytes += bytes.len() as u64;
        self.evict(&mut inner);
        Ok(())
    }

    fn remove(&self, id: &TileId) {
        let mut inner = self.lock();
        if let Some(len) = inner.entries.pop(id) {
            inner.bytes -= len;
        }
        let _ = fs::remove_file(self.path(id));
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.bytes > self.capacity {
            let Some((id, len)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= len;
            let _ = fs::remove_file(self.path(&id));
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            tiles: inner.entries.len(),
            bytes: inner.bytes,
            capacity: self.capacity,
        }
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
        }
        let cache = TileCache::open(dir.path(), 300).unwrap();
        assert_eq!(cache.stats().tiles, 3);
        assert_eq!(cache.get(&ids[3]).unwrap(), tiles[3]);
    }

    #[test]
    fn corrupted_file_is_dropped_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TileCache::open(dir.path(), 1000).unwrap();
        let tile = b"tile bytes".to_vec();
        let id = TileId::of(&tile);
        cache.put(&id, &tile).unwrap();
        fs::write(cache.path(&id), b"rotten").unwrap();
        assert!(cache.get(&id).is_none());
        assert!(!cache.contains(&id));
    }
}
