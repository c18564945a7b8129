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
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
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
    /// Set when the node stops: a pass running ends at the next original.
    pub stop: AtomicBool,
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

/// A tile's place in its original: (offset, length) of each fragment.
pub type Ranges = Vec<(u64, u32)>;

/// A repair's patch: a tile's verified bytes, and every place in the file holding it.
pub type Patch = (Vec<u8>, Vec<Ranges>);

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

/// The originals of one slide, with their frames (read one slide at a time: a store's
/// frames together would not fit in memory).
pub fn originals_of(store: &Store, slide: &SlideId) -> anyhow::Result<Vec<Original>> {
    let Some(record) = store.slide(slide)? else {
        return Ok(Vec::new());
    };
    let series = record.signed.verify()?.series_uid;
    Ok(store
        .series_instances(&series)?
        .into_iter()
        .map(|r| Original {
            object: r.object,
            slide: *slide,
            frames: r.frames,
            len: r.file_len,
        })
        .collect())
}

/// One original by id, found through its slide.
pub fn original(
    store: &Store,
    slide: &SlideId,
    object: &ObjectId,
) -> anyhow::Result<Option<Original>> {
    Ok(originals_of(store, slide)?
        .into_iter()
        .find(|o| o.object == *object))
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

/// Repairs original `object` with verified tile bytes: a copy in `tmp/` gets each tile's
/// bytes written at each of its ranges (`patches`: the bytes, and every place in the file
/// holding that tile), is checked whole as ingest would, synced, and renamed over the
/// object. A crash leaves the old file or the repaired one; a hard link to a file outside
/// the data directory is broken, never written through. The caller checked every patch's
/// bytes hash to its tile id. Returns whether the file is now whole (else it is left as
/// it was, the copy discarded).
pub fn repair_object(
    objects: &ObjectStore,
    original: &Original,
    patches: &[Patch],
) -> io::Result<bool> {
    let path = objects.path(&original.object);
    let copy =
        objects
            .staging_dir()
            .join(format!("repair-{}.{}", original.object, std::process::id()));
    std::fs::create_dir_all(objects.staging_dir())?;
    std::fs::copy(&path, &copy)?;
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)?;
        // `fs::copy` kept the mode (read-only): the copy is ours alone for this write.
        for (bytes, places) in patches {
            for ranges in places {
                let expected: u64 = ranges.iter().map(|r| u64::from(r.1)).sum();
                if bytes.len() as u64 != expected {
                    return Err(io::Error::other(format!(
                        "{} bytes for a tile of {expected} bytes",
                        bytes.len()
                    )));
                }
                let mut at = 0usize;
                for &(offset, len) in ranges {
                    let end = at + len as usize;
                    file.write_all_at(&bytes[at..end], offset)?;
                    at = end;
                }
            }
        }
        file.sync_all()?;
        // SAFETY: a private read-only mapping of the copy only this function writes.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let whole = crate::ingest::frames::check_object(&map, &original.frames, &original.object)
            .is_ok_and(|c| c.corrupt_frames.is_empty() && c.rest_intact);
        Ok(whole)
    })();
    let whole = match result {
        Ok(whole) => whole,
        Err(e) => {
            let _ = std::fs::remove_file(&copy);
            return Err(e);
        }
    };
    if !whole {
        let _ = std::fs::remove_file(&copy);
        return Ok(false);
    }
    std::fs::rename(&copy, &path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// Checks every original the store references, one slide at a time, at most
/// `bytes_per_second` (0: unpaced), counting into `progress`; `found` is told of each
/// damaged original as soon as it is found. Stops early when `progress.stop` is set.
/// Returns how many originals and bytes were checked, which originals were checked (a
/// suspect not among them stays suspect), and what is wrong.
pub fn scrub_originals(
    store: &Store,
    objects: &ObjectStore,
    bytes_per_second: u64,
    progress: &ScrubProgress,
    mut found: impl FnMut(&Damage),
) -> anyhow::Result<(u64, u64, Vec<ObjectId>, Vec<Damage>)> {
    let slides: Vec<SlideId> = store.summaries()?.into_iter().map(|(s, _)| s).collect();
    // The total from the files themselves: cheap, and it needs no frames in memory.
    let total: u64 = objects
        .list()?
        .iter()
        .map(|id| std::fs::metadata(objects.path(id)).map_or(0, |m| m.len()))
        .sum();
    progress.total_bytes.fetch_add(total, Ordering::SeqCst);
    let started = Instant::now();
    let mut hashed = 0u64;
    let mut checked = Vec::new();
    let mut damaged = Vec::new();
    let mut seen = std::collections::HashSet::new();
    'slides: for slide in slides {
        for original in originals_of(store, &slide)? {
            if progress.stop.load(Ordering::SeqCst) {
                break 'slides;
            }
            if !seen.insert(original.object) {
                continue;
            }
            if let Some(damage) = check_original(objects, &original) {
                found(&damage);
                damaged.push(damage);
            }
            checked.push(original.object);
            hashed += original.len;
            progress
                .done_bytes
                .fetch_add(original.len, Ordering::SeqCst);
            if bytes_per_second > 0 {
                let due = Duration::from_secs_f64(hashed as f64 / bytes_per_second as f64);
                // Paced in short sleeps, so a stop is not kept waiting.
                while started.elapsed() < due && !progress.stop.load(Ordering::SeqCst) {
                    std::thread::sleep((due - started.elapsed()).min(Duration::from_millis(200)));
                }
            }
        }
    }
    Ok((checked.len() as u64, hashed, checked, damaged))
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
    fn a_damaged_original_is_repaired_through_a_copy_or_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStore::new(dir.path().join("objects"), dir.path().join("tmp"));
        // A "file": a header, two frames (one in two fragments), a trailer.
        let mut bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        let frames = vec![
            FrameRef {
                tile: TileId::of(&bytes[1000..2000]),
                ranges: vec![(1000, 1000)],
            },
            FrameRef {
                tile: TileId::of(&[&bytes[3000..3500], &bytes[4000..4500]].concat()),
                ranges: vec![(3000, 500), (4000, 500)],
            },
        ];
        let object = crate::ingest::frames::object_id_of(&bytes, &frames).unwrap();
        let path = objects.path(&object);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let second_tile = [&bytes[3000..3500], &bytes[4000..4500]].concat();
        bytes[4100] ^= 0x33;
        std::fs::write(&path, &bytes).unwrap();
        let original = Original {
            object,
            slide: SlideId::of(b"s"),
            frames: frames.clone(),
            len: bytes.len() as u64,
        };
        let damage = check_original(&objects, &original).expect("damaged");
        assert_eq!(damage.tiles.len(), 1);
        assert!(damage.rest_intact);
        // Wrong bytes: refused, the file left as it was.
        assert!(
            repair_object(
                &objects,
                &original,
                &[(vec![0; 3], vec![frames[1].ranges.clone()])]
            )
            .is_err()
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // The right bytes: whole again, through a copy (no staging file left).
        assert!(
            repair_object(
                &objects,
                &original,
                &[(second_tile, vec![frames[1].ranges.clone()])]
            )
            .unwrap()
        );
        assert!(check_original(&objects, &original).is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
