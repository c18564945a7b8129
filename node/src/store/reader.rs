//! Reading tile bytes: one positioned read per fragment range from the original file.
//!
//! Open file handles are kept in a small cache so that a busy viewer does not pay an
//! `open` per tile. Reads are `pread`s: no seek state is shared between requests.
//! [`TileReader::read_if_cached`] is the non-blocking variant the HTTP API tries first: it
//! reads only from files already open and only bytes already in the page cache
//! (`preadv2` with `RWF_NOWAIT`), so an async thread never waits on the disk.
//! Originals the scrub found corrupt are *suspect*: their tiles are hashed on every read
//! and never served when they do not match ([`crate::scrub`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use slidemesh_protocol::{ObjectId, TileId};

use super::TileLocation;
use super::objects::{ObjectError, ObjectStore};

/// How many original files stay open at once.
const OPEN_FILES: usize = 256;

/// Why a tile could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("reading tile bytes from object {object}: {source}")]
    Io { object: ObjectId, source: io::Error },
    #[error(
        "tile {tile} in original {object} failed verification (the scrub found the file \
         corrupt); it is not served until repaired"
    )]
    Corrupt { tile: TileId, object: ObjectId },
}

/// Reads tiles out of original files. Clones share open files and the suspect list.
#[derive(Clone)]
pub struct TileReader {
    objects: ObjectStore,
    open: Arc<Mutex<HashMap<ObjectId, Arc<File>>>>,
    /// Originals the scrub found not to be what their ids name: every tile read from one
    /// is hashed against its id before it is served (the others are hashed at ingest and
    /// by each scrub pass, not on every read: hashing each read would cost a tenth of a
    /// busy node's CPU).
    suspects: Arc<std::sync::RwLock<HashSet<ObjectId>>>,
}

impl TileReader {
    pub fn new(objects: ObjectStore) -> Self {
        Self {
            objects,
            open: Arc::new(Mutex::new(HashMap::new())),
            suspects: Arc::default(),
        }
    }

    /// Marks an original suspect (found corrupt) or clears it (repaired, or intact again).
    pub fn set_suspect(&self, object: ObjectId, suspect: bool) {
        let mut set = self.suspects.write().unwrap_or_else(|e| e.into_inner());
        if suspect {
            set.insert(object);
        } else {
            set.remove(&object);
        }
    }

    /// Closes the kept handle of an original replaced on disk (repaired through a copy),
    /// so the next read opens the new file.
    pub fn forget(&self, object: &ObjectId) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(object);
        }
    }

    /// Whether an original is suspect (for readers that stream it whole).
    pub fn is_suspect_object(&self, object: &ObjectId) -> bool {
        self.is_suspect(object)
    }

    pub fn suspects(&self) -> Vec<ObjectId> {
        let set = self.suspects.read().unwrap_or_else(|e| e.into_inner());
        set.iter().copied().collect()
    }

    fn is_suspect(&self, object: &ObjectId) -> bool {
        let set = self.suspects.read().unwrap_or_else(|e| e.into_inner());
        !set.is_empty() && set.contains(object)
    }

    /// A tile's bytes for serving: read, and from a suspect original hashed against `tile`
    /// first (a mismatch is [`ReadError::Corrupt`], never served).
    pub fn read_tile(&self, tile: &TileId, location: &TileLocation) -> Result<Vec<u8>, ReadError> {
        let bytes = self.read(location)?;
        if self.is_suspect(&location.object) && TileId::of(&bytes) != *tile {
            return Err(ReadError::Corrupt {
                tile: *tile,
                object: location.object,
            });
        }
        Ok(bytes)
    }

    /// Where the original files are.
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    fn file(&self, id: &ObjectId) -> Result<Arc<File>, ReadError> {
        if let Some(file) = self.open.lock().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(file);
        }
        let file = Arc::new(self.objects.open(id)?);
        if let Ok(mut open) = self.open.lock() {
            if open.len() >= OPEN_FILES {
                // Dropping everything is crude but bounded; handles reopen on demand.
                open.clear();
            }
            open.insert(*id, file.clone());
        }
        Ok(file)
    }

    /// The tile's bytes if they can be had without waiting: its file is open already and
    /// every range is in the page cache. `None` for anything else (a file to open, bytes
    /// on disk, an error), which [`TileReader::read`] then handles on a blocking thread.
    pub fn read_if_cached(&self, location: &TileLocation) -> Option<Vec<u8>> {
        // A suspect original's tiles are hashed on the blocking path.
        if self.is_suspect(&location.object) {
            return None;
        }
        let file = self.open.lock().ok()?.get(&location.object).cloned()?;
        let mut out = vec![0u8; location.byte_len() as usize];
        let mut at = 0usize;
        for &(offset, len) in &location.ranges {
            let end = at + len as usize;
            let mut done = at;
            while done < end {
                let read = rustix::io::preadv2(
                    &*file,
                    &mut [io::IoSliceMut::new(&mut out[done..end])],
                    offset + (done - at) as u64,
                    rustix::io::ReadWriteFlags::NOWAIT,
                );
                match read {
                    Ok(n) if n > 0 => done += n,
                    // End of file or not cached (EAGAIN): the blocking path reads or reports it.
                    _ => return None,
                }
            }
            at = end;
        }
        Some(out)
    }

    /// The bytes at a tile's ranges, concatenated, as they are on disk (unverified: for
    /// checking them; serving reads through [`Self::read_tile`]).
    pub fn read(&self, location: &TileLocation) -> Result<Vec<u8>, ReadError> {
        let file = self.file(&location.object)?;
        let mut out = vec![0u8; location.byte_len() as usize];
        let mut at = 0usize;
        for &(offset, len) in &location.ranges {
            let end = at + len as usize;
            file.read_exact_at(&mut out[at..end], offset)
                .map_err(|source| ReadError::Io {
                    object: location.object,
                    source,
                })?;
            at = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_need_an_open_file_and_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStore::new(dir.path().join("objects"), dir.path().join("tmp"));
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let object = ObjectId::from_bytes([3; 32]);
        let path = objects.path(&object);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let reader = TileReader::new(objects);
        let location = TileLocation {
            object,
            ranges: vec![(10, 5_000), (60_000, 30_000)],
            media_type: "image/jpeg".into(),
        };
        // Not opened yet: the non-blocking path declines rather than open a file.
        assert_eq!(reader.read_if_cached(&location), None);
        let read = reader.read(&location).unwrap();
        let expected = [&bytes[10..5_010], &bytes[60_000..90_000]].concat();
        assert_eq!(read, expected);
        // Open now, and just written, so in the page cache.
        assert_eq!(reader.read_if_cached(&location), Some(expected));
        // Past the end of the file: declined, for the blocking path to report.
        let beyond = TileLocation {
            ranges: vec![(99_990, 20)],
            ..location
        };
        assert_eq!(reader.read_if_cached(&beyond), None);
    }
}
