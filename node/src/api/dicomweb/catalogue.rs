//! The DICOM view of the node's slides: studies, series and instances with their metadata
//! and the tile id behind every frame, for local and shared slides alike.
//!
//! Everything here is derived from signed manifests, so a slide's entry is built once per
//! manifest and kept; a shared slide's manifest can be replaced (refreshed, or another
//! grant's view), so entries remember which manifest they were built from. The list of
//! slides is read from the store on every request so that withdrawn shared slides disappear
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use slidemesh_protocol::{InstanceRole, ObjectId, SlideId, TileId};

use super::super::{ApiError, ApiState, SlideView};
use crate::dicom_json as json;
use crate::store::Origin;

/// One DICOM instance as DICOMweb serves it.
#[derive(Debug)]
pub struct InstanceEntry {
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// The original file (local slides only: shared slides' files stay with their owner).
    pub object: ObjectId,
    /// The data set in the DICOM JSON model, bulk data omitted.
    pub metadata: Map<String, Value>,
    /// The tile behind each frame, frame 1 first.
    pub frames: Vec<TileId>,
}

/// One slide: one DICOM series.
#[derive(Debug)]
pub struct SeriesEntry {
    pub slide: SlideId,
    pub origin: Origin,
    pub study_uid: String,
    pub series_uid: String,
    /// Sorted by SOP Instance UID, as in the manifest.
    pub instances: Vec<InstanceEntry>,
}

impl SeriesEntry {
    pub fn instance(&self, uid: &str) -> Option<&InstanceEntry> {
        self.instances
            .binary_search_by(|i| i.sop_instance_uid.as_str().cmp(uid))
            .ok()
            .map(|i| &self.instances[i])
    }

    /// The instance whose attributes stand for the series and its study in query results:
    /// the full-resolution level when there is one.
    pub fn representative(&self) -> &InstanceEntry {
        self.instances
            .iter()
            .max_by_key(|i| i.frames.len())
            .unwrap_or(&self.instances[0])
    }

    fn build(view: &SlideView) -> Result<Self, ApiError> {
        let m = &view.manifest;
        // Each data set is parsed once; concatenation parts need each other's frame counts.
        let metadata = m
            .instances
            .iter()
            .map(|meta| {
                serde_json::from_str::<Map<String, Value>>(&meta.metadata_json).map_err(|e| {
                    ApiError::internal(format!(
                        "slide {}: metadata of instance {} is not DICOM JSON: {e}",
                        view.id, meta.sop_instance_uid
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frames_of = |uid: &str| {
            m.instances
                .iter()
                .position(|i| i.sop_instance_uid == uid)
                .and_then(|i| json::first_u64(&metadata[i], json::NUMBER_OF_FRAMES))
                .unwrap_or(0) as usize
        };
        let mut instances = Vec::with_capacity(m.instances.len());
        for (meta, metadata) in m.instances.iter().zip(&metadata) {
            let frames = match meta.role {
                InstanceRole::Level(index) => {
                    let level = m.levels.get(index as usize).ok_or_else(|| {
                        ApiError::internal(format!(
                            "slide {}: instance {} names level {index}, which does not exist",
                            view.id, meta.sop_instance_uid
                        ))
                    })?;
                    level_frames(
                        &level.instance_uids,
                        &level.tiles,
                        &meta.sop_instance_uid,
                        frames_of,
                    )
                }
                InstanceRole::Associated(kind) => m
                    .associated
                    .iter()
                    .find(|a| a.kind == kind && a.instance_uid == meta.sop_instance_uid)
                    .map(|a| a.tiles.clone())
                    .unwrap_or_default(),
            };
            instances.push(InstanceEntry {
                sop_instance_uid: meta.sop_instance_uid.clone(),
                transfer_syntax_uid: meta.transfer_syntax_uid.clone(),
                object: meta.object,
                metadata: metadata.clone(),
                frames,
            });
        }
        if instances.is_empty() {
            return Err(ApiError::internal(format!(
                "slide {} lists no instances",
                view.id
            )));
        }
        Ok(Self {
            slide: view.id,
            origin: view.summary.origin.clone(),
            study_uid: m.study_uid.clone(),
            series_uid: m.series_uid.clone(),
            instances,
        })
    }
}

/// The frames of one instance of a level: all of the level's tiles, or for a part of a
/// concatenation, the run of tiles after the parts before it (in the level's part order).
fn level_frames(
    parts: &[String],
    tiles: &[TileId],
    uid: &str,
    frames_of: impl Fn(&str) -> usize,
) -> Vec<TileId> {
    if parts.len() <= 1 {
        return tiles.to_vec();
    }
    let mut start = 0usize;
    for part in parts {
        let count = frames_of(part);
        if part == uid {
            let end = (start + count).min(tiles.len());
            return tiles.get(start.min(end)..end).unwrap_or(&[]).to_vec();
        }
        start += count;
    }
    Vec::new()
}

/// Built entries by slide id, each with the id of the manifest it was built from.
#[derive(Default)]
pub struct Catalogue {
    entries: Mutex<HashMap<SlideId, (SlideId, Arc<SeriesEntry>)>>,
}

impl Catalogue {
    /// Every series this node can serve (local and shared), in a stable order. Reads the
    /// store: call from a blocking context.
    pub fn all(&self, state: &ApiState) -> Result<Vec<Arc<SeriesEntry>>, ApiError> {
        let mut ids: Vec<SlideId> = state
            .store
            .summaries()
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.extend(
            state
                .store
                .remote_summaries()
                .map_err(ApiError::internal)?
                .into_iter()
                .map(|(id, _)| id),
        );
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.entry(state, &id)?);
        }
        out.sort_by(|a, b| {
            (a.study_uid.as_str(), a.series_uid.as_str())
                .cmp(&(b.study_uid.as_str(), b.series_uid.as_str()))
        });
        // Drop entries of slides that are gone (a shared slide whose grant was revoked).
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|id, _| out.iter().any(|s| s.slide == *id));
        }
        Ok(out)
    }

    fn entry(&self, state: &ApiState, id: &SlideId) -> Result<Arc<SeriesEntry>, ApiError> {
        // A local slide's manifest never changes: its entry needs no second look.
        let local = self
            .entries
            .lock()
            .ok()
            .and_then(|e| e.get(id).cloned())
            .filter(|(_, entry)| entry.origin == Origin::Local);
        if let Some((_, entry)) = local {
            return Ok(entry);
        }
        let view = state.slide(id)?;
        let manifest = view.manifest_id();
        let built = self
            .entries
            .lock()
            .ok()
            .and_then(|e| e.get(id).cloned())
            .filter(|(from, _)| *from == manifest);
        if let Some((_, entry)) = built {
            return Ok(entry);
        }
        let entry = Arc::new(SeriesEntry::build(&view)?);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(*id, (manifest, entry.clone()));
        }
        Ok(entry)
    }
}

/// The catalogue, read on the blocking pool.
pub async fn load(state: &Arc<ApiState>) -> Result<Vec<Arc<SeriesEntry>>, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.dicomweb.all(&state))
        .await
        .map_err(ApiError::internal)?
}

/// The series with these UIDs, or 404 naming what is missing.
pub async fn series(
    state: &Arc<ApiState>,
    study: &str,
    series: &str,
) -> Result<Arc<SeriesEntry>, ApiError> {
    load(state)
        .await?
        .into_iter()
        .find(|s| s.study_uid == study && s.series_uid == series)
        .ok_or_else(|| ApiError::not_found(format!("no series {series} in study {study}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenation_parts_take_consecutive_frames() {
        let tiles: Vec<TileId> = (0..5u8).map(|i| TileId::of(&[i])).collect();
        let parts = vec!["a".to_string(), "b".to_string()];
        let counts = |uid: &str| if uid == "a" { 3 } else { 2 };
        assert_eq!(level_frames(&parts, &tiles, "a", counts), tiles[..3]);
        assert_eq!(level_frames(&parts, &tiles, "b", counts), tiles[3..]);
        assert!(level_frames(&parts, &tiles, "c", counts).is_empty());
        assert_eq!(level_frames(&parts[..1], &tiles, "a", counts), tiles);
    }
}
