//! Reading tile bytes: one positioned read per fragment range from the original file.
//!
//! Open file handles are kept in a small cache so that a busy viewer does not pay an
//! `open` per tile. Reads are `pread`s: no seek state is shared between requests.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use slidemesh_protocol::ObjectId;

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
}

/// Reads tiles out of original files.
pub struct TileReader {
    objects: ObjectStore,
    open: Mutex<HashMap<ObjectId, Arc<File>>>,
}

impl TileReader {
    pub fn new(objects: ObjectStore) -> Self {
        Self {
            objects,
            open: Mutex::new(HashMap::new()),
        }
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

    /// The tile's bytes: its ranges read and concatenated.
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
