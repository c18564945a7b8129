//! Ingest: DICOM WSI files and folders in, signed slides in the store out.
//!
//! Pipeline: collect files -> scan each (in parallel, [`dicom`]) -> group by series ->
//! merge with instances already stored for the series -> assemble the manifest
//! ([`assemble`]) -> side by side: sign the manifest | merge the tile rows | place the
//! original files in the object store, then write the rows into the slide's one redb
//! transaction -> commit.
//! A file that fails never stops the others; its error is reported with its path, and a
//! series with any bad file is not committed at all (a slide is never stored half-made).
//! Re-ingesting files already stored changes nothing and says so.
//!
//! Every batch knows where it came from ([`BatchSource`]). Files the operator names to
//! `slidemesh ingest` may bring consent (the LIMS sidecar, else the DICOM consent sequence
//! where nothing is recorded); files received over the network (STOW-RS, C-STORE) never
//! do: anyone allowed to send can write any header, so a new series received that way gets
//! no consent record (the store's default, clinical care only) and a stored one keeps its
//! own. From either source, an instance whose patient identity differs from its series'
//! stored instances is refused ([`identity`]).

pub mod assemble;
pub mod consent;
pub mod dicom;
pub mod frames;
pub mod header;
pub mod identity;
pub mod incoming;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;
use slidemesh_protocol::{NodeKey, ObjectId, SignedManifest, SlideId, TrustCode};
use tracing::{info, info_span, warn};

use crate::config::KeepOriginals;
use crate::store::instance::InstanceRecord;
use crate::store::objects::{ObjectStore, Placement};
use crate::store::{
    ConsentUpdate, Origin, PreparedInstance, SlideCommit, SlideRecord, SlideRows, Store, now_unix,
};
use dicom::InstanceError;

/// What ingest reports as it goes (a progress bar, or nothing).
pub trait Progress: Sync {
    fn files_found(&self, _files: usize, _bytes: u64) {}
    fn file_done(&self, _bytes: u64, _frames: usize) {}
    fn slide_done(&self, _outcome: &SlideOutcome) {}
}

/// Progress that reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// What happened to one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlideStatus {
    /// A new slide.
    Added,
    /// Every instance was already stored: nothing changed.
    AlreadyPresent,
    /// New instances joined a stored series; the slide has a new manifest and id.
    Extended,
}

/// The one-line summary of one slide.
#[derive(Debug, Clone, Serialize)]
pub struct SlideOutcome {
    pub slide_id: SlideId,
    pub series_uid: String,
    pub status: SlideStatus,
    /// The previous id when `Extended`.
    pub replaced: Option<SlideId>,
    pub instances: usize,
    pub levels: usize,
    pub tiles: u64,
    pub bytes: u64,
}

/// A file or series that was not ingested, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub path: Option<PathBuf>,
    pub series_uid: Option<String>,
    pub error: String,
}

/// Everything one ingest run did.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    pub slides: Vec<SlideOutcome>,
    pub failures: Vec<Failure>,
    pub files: usize,
    pub bytes: u64,
}

/// Where a batch of files came from: it decides what ingest may take from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSource {
    /// Files the operator named to `slidemesh ingest`: consent comes from the LIMS sidecar
    /// beside them, else from the DICOM consent sequence for a series with no record.
    Operator,
    /// Files received over the network (STOW-RS, C-STORE): never a source of consent.
    Network,
}

/// What ingest needs from the node.
pub struct IngestTarget<'a> {
    pub owner: &'a TrustCode,
    pub key: &'a NodeKey,
    pub store: &'a Store,
    pub objects: &'a ObjectStore,
    pub keep: KeepOriginals,
    /// Where the files came from.
    pub source: BatchSource,
}

/// Ingests files and folders (recursively).
pub fn ingest_paths(
    target: &IngestTarget<'_>,
    paths: &[PathBuf],
    progress: &dyn Progress,
) -> IngestReport {
    let mut report = IngestReport::default();
    let files = collect_files(paths, &mut report.failures);
    report.files = files.len();
    report.bytes = files.iter().map(|(_, len)| *len).sum();
    progress.files_found(report.files, report.bytes);

    let started = std::time::Instant::now();
    let scanned = scan_all(&files, progress);
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        files = files.len(),
        "scanned"
    );
    let mut by_series: BTreeMap<String, Vec<PreparedInstance>> = BTreeMap::new();
    for result in scanned {
        match result {
            Ok(prepared) => by_series
                .entry(prepared.instance.series_uid.clone())
                .or_default()
                .push(prepared),
            Err(e) => report.failures.push(Failure {
                path: Some(e.path.clone()),
                series_uid: None,
                error: e.error.to_string(),
            }),
        }
    }
    for (series_uid, instances) in by_series {
        let span = info_span!("ingest_series", series = %series_uid);
        let _guard = span.enter();
        let series_started = std::time::Instant::now();
        let result = ingest_series(target, &series_uid, instances);
        tracing::debug!(
            ms = series_started.elapsed().as_millis() as u64,
            "assembled, signed, placed and committed"
        );
        match result {
            Ok(outcome) => {
                info!(slide = %outcome.slide_id, status = ?outcome.status, tiles = outcome.tiles, "slide ingested");
                progress.slide_done(&outcome);
                report.slides.push(outcome);
            }
            Err(failures) => {
                for f in &failures {
                    warn!(error = %f.error, path = ?f.path, "series not ingested");
                }
                report.failures.extend(failures);
            }
        }
    }
    report
}

/// Files under the given paths with their sizes, sorted for a stable order.
fn collect_files(paths: &[PathBuf], failures: &mut Vec<Failure>) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        match std::fs::metadata(&path) {
            // Hidden files inside folders (.DS_Store, editor and sync droppings) are not
            // scanner output; a hidden file named explicitly is still ingested.
            Ok(meta) if meta.is_dir() => match std::fs::read_dir(&path) {
                Ok(entries) => stack.extend(
                    entries
                        .flatten()
                        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                        .map(|e| e.path()),
                ),
                Err(e) => failures.push(Failure {
                    path: Some(path),
                    series_uid: None,
                    error: format!("cannot list folder: {e}"),
                }),
            },
            // The LIMS's consent sidecar sits beside the DICOM files; it is read per series.
            Ok(_) if path.file_name().is_some_and(|n| n == consent::SIDECAR) => {}
            Ok(meta) => out.push((path, meta.len())),
            Err(e) => failures.push(Failure {
                path: Some(path),
                series_uid: None,
                error: format!("cannot read: {e}"),
            }),
        }
    }
    out.sort();
    out
}

/// Scans every file on the ingest thread pool (one thread per core, shared with the frame
/// hashing inside each file), and encodes each one's store rows on the same thread.
fn scan_all(
    files: &[(PathBuf, u64)],
    progress: &dyn Progress,
) -> Vec<Result<PreparedInstance, InstanceError>> {
    // Largest first: the biggest file's serial steps (walking its items) then overlap the
    // hashing of the others instead of running alone at the end.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].1));
    let mut scanned: Vec<(usize, Result<PreparedInstance, InstanceError>)> = order
        .into_par_iter()
        .with_max_len(1)
        .map(|i| {
            let (path, len) = &files[i];
            let result = dicom::scan_file(path).map(PreparedInstance::new);
            let frames = result.as_ref().map_or(0, |p| p.instance.frames.len());
            progress.file_done(*len, frames);
            (i, result)
        })
        .collect();
    scanned.sort_by_key(|(i, _)| *i);
    scanned.into_iter().map(|(_, result)| result).collect()
}

fn series_failure(series: &str, paths: &[PathBuf], error: String) -> Vec<Failure> {
    if paths.is_empty() {
        return vec![Failure {
            path: None,
            series_uid: Some(series.to_string()),
            error,
        }];
    }
    paths
        .iter()
        .map(|p| Failure {
            path: Some(p.clone()),
            series_uid: Some(series.to_string()),
            error: error.clone(),
        })
        .collect()
}

fn ingest_series(
    target: &IngestTarget<'_>,
    series_uid: &str,
    arrived: Vec<PreparedInstance>,
) -> Result<SlideOutcome, Vec<Failure>> {
    let paths: Vec<PathBuf> = arrived.iter().map(|p| p.instance.path.clone()).collect();
    let fail = |error: String| series_failure(series_uid, &paths, error);
    let stored = target
        .store
        .series_instances(series_uid)
        .map_err(|e| fail(e.to_string()))?;
    let previous = target
        .store
        .series_slide(series_uid)
        .map_err(|e| fail(e.to_string()))?;

    // Keep one copy of each instance; the same UID with other content is a conflict the
    // operator must resolve, not something to guess about.
    let mut merged: BTreeMap<&str, &InstanceRecord> = stored
        .iter()
        .map(|i| (i.sop_instance_uid.as_str(), i))
        .collect();
    let mut new_instances: Vec<&PreparedInstance> = Vec::new();
    for prepared in &arrived {
        let instance = &prepared.instance;
        match merged.get(instance.sop_instance_uid.as_str()) {
            Some(existing) if existing.object == instance.object => {}
            Some(existing) => {
                return Err(fail(format!(
                    "SOP Instance UID {} appears twice with different content ({} and {})",
                    instance.sop_instance_uid,
                    existing.path.display(),
                    instance.path.display()
                )));
            }
            None => {
                merged.insert(&instance.sop_instance_uid, instance);
                new_instances.push(prepared);
            }
        }
    }
    // Whoever sent them, new instances must be of the stored series' patient and study.
    let arriving: Vec<&InstanceRecord> = new_instances.iter().map(|p| &p.instance).collect();
    identity::check_series(series_uid, &stored, &arriving).map_err(fail)?;
    let all: Vec<&InstanceRecord> = merged.into_values().collect();
    if new_instances.is_empty()
        && let Some(slide_id) = previous
    {
        let manifest = assemble::assemble(target.owner, &all).map_err(|e| fail(e.to_string()))?;
        return Ok(outcome(
            slide_id,
            &manifest,
            SlideStatus::AlreadyPresent,
            None,
            all.len(),
        ));
    }

    let manifest = assemble::assemble(target.owner, &all).map_err(|e| fail(e.to_string()))?;
    let consent = match target.source {
        BatchSource::Operator => operator_consent(series_uid, &new_instances).map_err(fail)?,
        // Nothing received over the network speaks for consent: no sidecar is looked for
        // and the DICOM consent sequence is not read. A new series has no record (clinical
        // care only); a stored one keeps what the trust recorded.
        BatchSource::Network => ConsentUpdate::Keep,
    };

    // Work that needs no lock runs side by side: a helper signs and summarises the manifest,
    // another merges the tile rows, this thread places the original files. Only then is the
    // slide's write transaction opened (placing may copy gigabytes, and the write lock would
    // stall the server's own writes meanwhile); the rows go in while signing may still run.
    // Objects are in place before the transaction commits.
    let (signed, summary, facts, written) = std::thread::scope(|scope| {
        let signing = scope.spawn(|| {
            let summary = assemble::summarise(&manifest, Origin::Local);
            let facts = crate::research::facts(&summary, &manifest);
            (SignedManifest::sign(&manifest, target.key), summary, facts)
        });
        let merging = scope.spawn(|| SlideRows::new(&new_instances));
        let placement = place_objects(target, &new_instances);
        let rows = joined(merging.join());
        let written = placement.and_then(|placed| {
            let mut writer = target
                .store
                .begin_slide()
                .map_err(|e| (placed.clone(), e.to_string()))?;
            writer
                .insert_rows(&rows)
                .map_err(|e| (placed.clone(), e.to_string()))?;
            Ok((writer, placed))
        });
        let (signed, summary, facts) = joined(signing.join());
        (signed, summary, facts, written)
    });
    // Objects placed by this run are removed again if the slide does not commit, so a
    // failed ingest leaves nothing behind (objects that were already there stay).
    let undo = |placed: &[ObjectId]| {
        for id in placed {
            if !target.store.references_object(id).unwrap_or(true) {
                let _ = target.objects.remove(id);
            }
        }
    };
    let (writer, placed) = match written {
        Ok(written) => written,
        Err((placed, error)) => {
            undo(&placed);
            return Err(fail(error));
        }
    };
    let commit = SlideCommit {
        record: SlideRecord {
            signed,
            origin: Origin::Local,
            stored_at: now_unix(),
        },
        summary,
        replaces: previous,
        consent,
        facts: Some(facts),
    };
    let slide_id = match writer.commit(commit) {
        Ok(id) => id,
        Err(e) => {
            undo(&placed);
            return Err(fail(e.to_string()));
        }
    };
    let status = if previous.is_some() {
        SlideStatus::Extended
    } else {
        SlideStatus::Added
    };
    Ok(outcome(
        slide_id,
        &manifest,
        status,
        previous.filter(|p| *p != slide_id),
        all.len(),
    ))
}

/// The consent that files named by the operator bring: the LIMS sidecar beside them
/// replaces what is recorded; consent coded in the header only fills a gap. Either way it
/// commits with the slide, so a crash never leaves one without the other. Read before
/// anything is placed, so a bad sidecar stops the series whole.
fn operator_consent(
    series_uid: &str,
    new_instances: &[&PreparedInstance],
) -> Result<ConsentUpdate, String> {
    let sidecar = new_instances
        .first()
        .and_then(|p| p.instance.path.parent())
        .map(|dir| consent::from_sidecar(dir, series_uid))
        .transpose()?
        .flatten();
    Ok(match sidecar {
        Some(c) => ConsentUpdate::Replace(c),
        None => match new_instances
            .first()
            .and_then(|p| consent::from_dicom(&p.instance.metadata_json))
        {
            Some(c) => ConsentUpdate::IfAbsent(c),
            None => ConsentUpdate::Keep,
        },
    })
}

/// A helper thread's result, its panic carried on into this thread.
fn joined<T>(result: std::thread::Result<T>) -> T {
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Places the new instances' original files in the object store. Returns the objects this
/// run added (not those already there); on failure, those added so far and what went
/// wrong.
fn place_objects(
    target: &IngestTarget<'_>,
    instances: &[&PreparedInstance],
) -> Result<Vec<ObjectId>, (Vec<ObjectId>, String)> {
    let mut placed = Vec::new();
    for instance in instances.iter().map(|p| &p.instance) {
        match target
            .objects
            .put(&instance.path, &instance.object, target.keep)
        {
            Ok(Placement::AlreadyPresent) => {}
            Ok(_) => placed.push(instance.object),
            Err(e) if e.is_disk_full() => return Err((placed, format!("disk full: {e}"))),
            Err(e) => return Err((placed, e.to_string())),
        }
    }
    Ok(placed)
}

fn outcome(
    slide_id: SlideId,
    manifest: &slidemesh_protocol::SlideManifest,
    status: SlideStatus,
    replaced: Option<SlideId>,
    instances: usize,
) -> SlideOutcome {
    SlideOutcome {
        slide_id,
        series_uid: manifest.series_uid.clone(),
        status,
        replaced,
        instances,
        levels: manifest.levels.len(),
        tiles: manifest.all_tiles().count() as u64,
        bytes: manifest.instances.iter().map(|i| i.file_len).sum(),
    }
}
