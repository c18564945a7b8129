//! DICOM files that arrive over the network (STOW-RS, C-STORE) on their way into ingest.
//!
//! Each request or association gets a [`Batch`]: a staging folder `tmp/incoming-N.PID/` in
//! the data directory, on the object store's file system, so ingest hard-links the files
//! into place rather than copying them. When the batch is complete it goes through the same
//! pipeline as `slidemesh ingest` (one transaction per slide, bad files reported, nothing
//! half-stored) as a [`BatchSource::Network`] batch: no consent is taken from what was
//! received, and an instance cannot change a stored series' patient identity. The staging
//! folder is removed whatever happened. A node that dies
//! mid-batch leaves the folder to the start-up sweep (its name ends in the dead pid).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_dictionary_std::tags;
use slidemesh_protocol::{NodeKey, TrustCode};

use super::{BatchSource, IngestReport, IngestTarget, Silent, ingest_paths};
use crate::config::KeepOriginals;
use crate::store::Store;
use crate::store::objects::ObjectStore;

/// The node's ingest, for files received while `serve` runs.
pub struct Incoming {
    owner: TrustCode,
    key: NodeKey,
    store: Arc<Store>,
    objects: ObjectStore,
    keep: KeepOriginals,
    staging: PathBuf,
    next: AtomicU64,
    /// One batch ingests at a time: two batches with parts of one series would otherwise
    /// each extend the stored slide from the same starting point.
    ingesting: Mutex<()>,
}

/// The identity of a received instance, read from its header (for STOW-RS answers).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedInstance {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
}

impl Incoming {
    pub fn new(
        owner: TrustCode,
        key: NodeKey,
        store: Arc<Store>,
        objects: ObjectStore,
        keep: KeepOriginals,
        staging: PathBuf,
    ) -> Self {
        Self {
            owner,
            key,
            store,
            objects,
            keep,
            staging,
            next: AtomicU64::new(0),
            ingesting: Mutex::new(()),
        }
    }

    /// A new, empty staging folder.
    pub fn batch(&self) -> io::Result<Batch> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .staging
            .join(format!("incoming-{n}.{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Batch { dir, files: 0 })
    }

    /// Ingests every file of the batch, then removes the staging folder. Blocking.
    pub fn ingest(&self, batch: Batch) -> IngestReport {
        let _one_at_a_time = self.ingesting.lock().unwrap_or_else(|p| p.into_inner());
        let target = IngestTarget {
            owner: &self.owner,
            key: &self.key,
            store: &self.store,
            objects: &self.objects,
            keep: self.keep,
            source: BatchSource::Network,
        };
        if batch.files == 0 {
            return IngestReport::default();
        }
        ingest_paths(&target, std::slice::from_ref(&batch.dir), &Silent)
        // `batch` drops here: the staging folder goes.
    }
}

/// A staging folder for one request or association. Dropping it removes the folder.
pub struct Batch {
    dir: PathBuf,
    files: usize,
}

impl Batch {
    /// Where to write the next received file.
    pub fn next_path(&mut self) -> PathBuf {
        self.files += 1;
        self.dir.join(format!("{:06}.dcm", self.files))
    }

    pub fn len(&self) -> usize {
        self.files
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove staging folder");
        }
    }
}

/// Reads a received file's identity from its header (never its pixel data). The header's
/// lengths are checked against the file first ([`super::header`]), so a crafted one is
/// refused here, before anything is allocated by it.
pub fn identify(path: &Path) -> Result<ReceivedInstance, String> {
    let obj = super::dicom::open_header(path)
        .map_err(|e| format!("not a readable DICOM file: {e}"))?
        .object;
    let text = |tag, name: &str| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("missing {name}"))
    };
    Ok(ReceivedInstance {
        sop_class_uid: text(tags::SOP_CLASS_UID, "SOPClassUID")?,
        sop_instance_uid: text(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        study_uid: text(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
        series_uid: text(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
    })
}
