//! Scrub: re-verifies what this node holds against the ids that name it, in the
//! background at a configured rate (`[scrub]` in config.toml) or at once (`slidemesh scrub
//! --now`).
//!
//! - Originals: each file is hashed whole (BLAKE3, memory-mapped, on every core, as `b3sum`
//!   does) against its object id. One that differs becomes *suspect*: from then on every
//!   tile read from it is hashed before it is served, and one that fails is never served
//!   ([`crate::store::reader::TileReader::read_tile`]). Its tiles are checked one by one; the running node
//!   repairs the corrupt ones from a replica or another copy
//!   ([`crate::federation::Federation::scrub_pass`]) by writing the copy's verified bytes
//!   back at the tile's ranges ([`patch_tile`]), then hashes the file again and clears it
//!   once whole. Damage outside tile data (the DICOM header) cannot be rebuilt from tiles;
//!   it is reported, and the file's intact tiles keep being served.
//! - Cached tiles (other trusts' slides, replicas held here): each is read and hashed; a
//!   rotten one is dropped, with its pin, so a replica fetches it again at its next check
//!   ([`crate::store::cache::TileCache::scrub`]).
//!
//! The suspects and the last report are kept in `scrub.json` in the data directory, so a
//! restart does not serve a suspect original's tiles unchecked.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use slidemesh_protocol::{ObjectId, SlideId, TileId};

use crate::store::Store;
use crate::store::instance::FrameRef;
use crate::store::objects::ObjectStore;

/// How the background scrub paces itself.
#[derive(Debug, Clone, Copy)]
pub struct ScrubSettings {
    /// Bytes of originals hashed per second (0: as fast as the disk goes).
    pub bytes_per_second: u64,
    /// Between the starts of two passes.
    pub every: Duration,
}

/// One thing a pass found wrong, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// `original` or `cached tile`.
    pub what: String,
    pub id: String,
    pub detail: String,
    pub repaired: bool,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub originals: u64,
    pub original_bytes: u64,
    pub cached_tiles: u64,
    pub cached_bytes: u64,
    pub seconds: f64,
    pub findings: Vec<Finding>,
}

impl ScrubReport {
    /// Findings not repaired.
    pub fn unresolved(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }
}

/// What `scrub.json` keeps across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubState {
    pub suspects: Vec<ObjectId>,
    pub last: Option<ScrubReport>,
}

impl ScrubState {
    pub fn path(data_root: &Path) -> PathBuf {
        data_root.join("scrub.json")
    }

    /// The state an earlier run left; none (or unreadable) is a fresh start, logged.
    pub fn load(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "scrub state unreadable; starting afresh");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Written whole to a temporary file, then renamed over the old one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let file = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&file, self).map_err(io::Error::other)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// A pass's progress, read by the API and the command line's bar while it runs.
#[derive(Debug, Default)]
pub struct ScrubProgress {
    pub running: AtomicBool,
    /// Bytes to hash this pass (originals, then cached tiles), and hashed so far.
    pub total_bytes: AtomicU64,
    pub done_bytes: AtomicU64,
    /// Passes finished by this run of the node (a waiter knows its pass ended).
    pub passes: AtomicU64,
}

impl ScrubProgress {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "running": self.running.load(Ordering::SeqCst),
            "total_bytes": self.total_bytes.load(Ordering::SeqCst),
            "done_bytes": self.done_bytes.load(Ordering::SeqCst),
            "passes": self.passes.load(Ordering::SeqCst),
        })
    }
}

/// One stored original as the scrub checks it: its slide and its frames (each frame's
/// ranges and tile id, from the store).
#[derive(Debug, Clone)]
pub struct Original {
    pub object: ObjectId,
    pub slide: SlideId,
    pub frames: Vec<FrameRef>,
    pub len: u64,
}

/// What is wrong with one original.
#[derive(Debug, Clone)]
pub struct Damage {
    pub object: ObjectId,
    pub slide: SlideId,
    /// Its corrupt tiles and their ranges in the file.
    pub tiles: Vec<(TileId, Vec<(u64, u32)>)>,
    /// False when bytes outside the frames changed (not repairable from tiles).
    pub rest_intact: bool,
    /// The file could not be read at all.
    pub unreadable: Option<String>,
}

impl Damage {
    /// Why the original is not what its id names, as a person reads it.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.unreadable {
            return format!("cannot read the file: {e}");
        }
        match (self.tiles.len(), self.rest_intact) {
            (0, _) => "bytes outside tile data (the DICOM header) changed; every tile in it is \
                       intact and still served, each checked; restore the file from backup"
                .into(),
            (n, true) => format!("{n} tile(s) do not hash to their ids"),
            (n, false) => format!(
                "{n} tile(s) do not hash to their ids, and bytes outside tile data changed too"
            ),
        }
    }
}

/// Every original the store references, with its slide and frames.
pub fn originals(store: &Store) -> anyhow::Result<Vec<Original>> {
    let mut out: Vec<Original> = Vec::new();
    for (slide, summary) in store.summaries()? {
        for record in store.series_instances(&summary.series_uid)? {
            if out.iter().any(|o| o.object == record.object) {
                continue;
            }
            out.push(Original {
                object: record.object,
                slide,
                frames: record.frames,
                len: record.file_len,
            });
        }
    }
    Ok(out)
}

/// Re-hashes one original (memory-mapped, frames on every core) as ingest did; `None`
/// when it is what its id names.
pub fn check_original(objects: &ObjectStore, original: &Original) -> Option<Damage> {
    let damage = |unreadable: Option<String>| Damage {
        object: original.object,
        slide: original.slide,
        tiles: Vec::new(),
        rest_intact: false,
        unreadable,
    };
    let file = match objects.open(&original.object) {
        Ok(file) => file,
        Err(e) => return Some(damage(Some(e.to_string()))),
    };
    // Read-only mapping of a file the node never writes while it serves (a repair writes
    // a tile's own bytes back, which a reader racing it sees as either).
    // SAFETY: the mapping is read-only and dropped before this returns; a concurrent
    // truncation would fault, which the object store never does.
    let map = match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => map,
        Err(e) => return Some(damage(Some(e.to_string()))),
    };
    match crate::ingest::frames::check_object(&map, &original.frames, &original.object) {
        Ok(check) if check.corrupt_frames.is_empty() && check.rest_intact => None,
        Ok(check) => Some(Damage {
            tiles: check
                .corrupt_frames
                .iter()
                .map(|&i| (original.frames[i].tile, original.frames[i].ranges.clone()))
                .collect(),
            rest_intact: check.rest_intact,
            ..damage(None)
        }),
        Err(e) => Some(damage(Some(e.to_string()))),
    }
}

/// Writes a tile's verified bytes back at its ranges in original `object` (made writable
/// for the write, read-only again after), and syncs the file. The caller checked `bytes`
/// hash to the tile's id; each range gets its share of them in order.
pub fn patch_tile(
    objects: &ObjectStore,
    object: &ObjectId,
    ranges: &[(u64, u32)],
    bytes: &[u8],
) -> io::Result<()> {
    let expected: u64 = ranges.iter().map(|r| u64::from(r.1)).sum();
    if bytes.len() as u64 != expected {
        return Err(io::Error::other(format!(
            "{} bytes for a tile of {expected} bytes",
            bytes.len()
        )));
    }
    let path = objects.path(object);
    let mut permissions = std::fs::metadata(&path)?.permissions();
    let was_read_only = permissions.readonly();
    #[allow(clippy::permissions_set_readonly_false)] // the file is ours, for this write only
    permissions.set_readonly(false);
    std::fs::set_permissions(&path, permissions.clone())?;
    let written = (|| {
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        let mut at = 0usize;
        for &(offset, len) in ranges {
            let end = at + len as usize;
            file.write_all_at(&bytes[at..end], offset)?;
            at = end;
        }
        file.sync_all()
    })();
    if was_read_only {
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions)?;
    }
    written
}

/// Checks every original the store references, at most `bytes_per_second` (0: unpaced),
/// counting into `progress`; returns how many, their bytes, and what is wrong.
pub fn scrub_originals(
    store: &Store,
    objects: &ObjectStore,
    bytes_per_second: u64,
    progress: &ScrubProgress,
) -> anyhow::Result<(u64, u64, Vec<Damage>)> {
    let originals = originals(store)?;
    progress
        .total_bytes
        .fetch_add(originals.iter().map(|o| o.len).sum(), Ordering::SeqCst);
    let started = Instant::now();
    let mut hashed = 0u64;
    let mut damaged = Vec::new();
    for original in &originals {
        damaged.extend(check_original(objects, original));
        hashed += original.len;
        progress
            .done_bytes
            .fetch_add(original.len, Ordering::SeqCst);
        if bytes_per_second > 0 {
            let due = Duration::from_secs_f64(hashed as f64 / bytes_per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok((originals.len() as u64, hashed, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = ScrubState::path(dir.path());
        assert!(ScrubState::load(&path).suspects.is_empty());
        let state = ScrubState {
            suspects: vec![ObjectId::from_bytes([7; 32])],
            last: Some(ScrubReport {
                originals: 3,
                ..Default::default()
            }),
        };
        state.save(&path).unwrap();
        let loaded = ScrubState::load(&path);
        assert_eq!(loaded.suspects, state.suspects);
        assert_eq!(loaded.last.unwrap().originals, 3);
    }

    #[test]
    fn a_patch_writes_a_tiles_bytes_back_at_its_ranges_and_keeps_the_file_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStore::new(dir.path().join("objects"), dir.path().join("tmp"));
        let object = ObjectId::from_bytes([1; 32]);
        let path = objects.path(&object);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        let mut p = std::fs::metadata(&path).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&path, p).unwrap();
        let ranges = [(10, 3), (50, 2)];
        patch_tile(&objects, &object, &ranges, b"abcde").unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(&after[10..13], b"abc");
        assert_eq!(&after[50..52], b"de");
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        assert!(patch_tile(&objects, &object, &ranges, b"abcd").is_err());
    }
}
