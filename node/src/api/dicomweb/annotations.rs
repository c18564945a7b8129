//! The specialists' marks as DICOM: each answered referral's annotations on each of its
//! slides is one Microscopy Bulk Simple Annotations series (one instance) in that slide's
//! study ([`crate::referrals::dicom`]), so a DICOMweb viewer pointed at either trust's node
//! finds it next to the slide and draws it.
//!
//! These series are not slides (no frames, no tiles), so they live beside the slide
//! catalogue rather than in it: searches add the ones the requester may see, and series
//! metadata and retrieval look here when the catalogue has no such series. Who may see one is
//! who may see its referral (`api::referrals::may_see` for searches, which leave the rest
//! out silently; `decide_referral`, logged, for reading one) and may read the marked slide's
//! metadata (the instance names the patient). Coordinates travel inline in the
//! metadata (InlineBinary), so no bulk data endpoint is needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use slidemesh_protocol::{ReferralId, SlideId};

use super::super::{ApiError, ApiState};
use super::catalogue::{InstanceEntry, SeriesEntry};
use crate::api::requester::Requester;
use crate::referrals;
use crate::store::referrals::StoredReferral;

/// One annotation series: its referral, its catalogue-shaped entry (metadata for searches)
/// and the instance as a Part 10 file.
#[derive(Debug)]
pub struct AnnotationSeries {
    pub referral: ReferralId,
    pub entry: Arc<SeriesEntry>,
    pub part10: Vec<u8>,
}

/// Built series by (referral, slide). An answer never changes, so an entry is built once.
#[derive(Default)]
pub struct AnnotationCatalogue {
    built: Mutex<HashMap<(ReferralId, SlideId), Arc<AnnotationSeries>>>,
}

impl AnnotationCatalogue {
    /// The annotation series of `stored` (one per marked slide this node can read the
    /// manifest of). Blocking.
    fn of(&self, state: &ApiState, stored: &StoredReferral) -> Vec<Arc<AnnotationSeries>> {
        let Some((opinion, _)) = &stored.opinion else {
            return Vec::new();
        };
        let mut slides: Vec<SlideId> = opinion.annotations.iter().map(|a| a.slide).collect();
        slides.sort();
        slides.dedup();
        let mut out = Vec::new();
        for slide in slides {
            let key = (stored.referral.id, slide);
            if let Some(done) = self.built.lock().ok().and_then(|b| b.get(&key).cloned()) {
                out.push(done);
                continue;
            }
            match build(state, stored, &slide) {
                Ok(Some(series)) => {
                    let series = Arc::new(series);
                    if let Ok(mut built) = self.built.lock() {
                        built.insert(key, series.clone());
                    }
                    out.push(series);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    referral = %stored.referral.id, slide = %slide, error = %e,
                    "annotation series not served"
                ),
            }
        }
        out
    }
}

fn build(
    state: &ApiState,
    stored: &StoredReferral,
    slide: &SlideId,
) -> anyhow::Result<Option<AnnotationSeries>> {
    // The slide as this node holds it (local, or shared under the referral's grant).
    let view = state
        .slide(slide)
        .map_err(|e| anyhow::anyhow!("slide {slide}: {}", e.message))?;
    let Some(part10) = referrals::dicom::annotation_file(stored, slide, &view.manifest)? else {
        return Ok(None);
    };
    let object = dicom_object::from_reader(&part10[..])?;
    let metadata = match dicom_json::to_value(object.into_inner())? {
        Value::Object(map) => map,
        other => anyhow::bail!("the annotation data set is not a JSON object: {other}"),
    };
    let (series_uid, instance_uid) = referrals::dicom::uids(&stored.referral, slide);
    let instance = InstanceEntry {
        sop_instance_uid: instance_uid,
        transfer_syntax_uid: dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
        object: slidemesh_protocol::ObjectId::of(&part10),
        metadata,
        frames: Vec::new(),
    };
    Ok(Some(AnnotationSeries {
        referral: stored.referral.id,
        entry: Arc::new(SeriesEntry {
            slide: *slide,
            origin: view.summary.origin.clone(),
            study_uid: view.manifest.study_uid.clone(),
            series_uid,
            instances: vec![instance],
        }),
        part10,
    }))
}

/// The annotation series (of `study`, or of all) the requester may see: their referral,
/// and the metadata of the slide they mark (the instance names the patient). For searches:
/// nothing is logged for the ones left out. A store that cannot be read leaves them out
/// (logged) rather than failing the search of the slides.
pub async fn visible(
    state: &Arc<ApiState>,
    requester: &Requester,
    study: Option<&str>,
) -> Result<Vec<Arc<SeriesEntry>>, ApiError> {
    let (state, user) = (state.clone(), requester.user().cloned());
    let study = study.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let now = crate::store::now_unix();
        let roster = state.federation.holdings.membership.roster();
        let directory =
            crate::referrals::own_directory(&state.store, &state.federation.holdings.trust);
        let referrals = state.store.referrals().unwrap_or_else(|e| {
            tracing::error!(error = %e, "referrals unreadable; no annotation series listed");
            Vec::new()
        });
        let mut out = Vec::new();
        for stored in referrals {
            if stored.opinion.is_none()
                || !crate::api::referrals::may_see(
                    &state.store,
                    &state.federation,
                    roster.as_deref(),
                    directory.as_ref(),
                    user.as_ref(),
                    &stored,
                    now,
                )
            {
                continue;
            }
            out.extend(
                state
                    .annotations
                    .of(&state, &stored)
                    .iter()
                    .filter(|s| study.as_deref().is_none_or(|u| s.entry.study_uid == u))
                    .filter(|s| {
                        state
                            .federation
                            .user_may_read_metadata(&s.entry.slide, user.as_ref())
                    })
                    .map(|s| s.entry.clone()),
            );
        }
        out
    })
    .await
    .map_err(ApiError::internal)
}

/// The annotation series `series` of study `study`, decided for the requester (its
/// referral, and the marked slide's metadata; logged); `None` when no referral has such a
/// series here. Slide handlers ask only when the slide catalogue has no such series.
pub async fn find(
    state: &Arc<ApiState>,
    requester: &Requester,
    study: &str,
    series: &str,
) -> Result<Option<Arc<AnnotationSeries>>, ApiError> {
    let (inner, wanted) = (state.clone(), (study.to_string(), series.to_string()));
    let found = tokio::task::spawn_blocking(move || {
        for stored in inner.store.referrals().map_err(ApiError::internal)? {
            let Some((opinion, _)) = &stored.opinion else {
                continue;
            };
            // The UIDs derive from the referral and the slide: match before building.
            let hit = opinion
                .annotations
                .iter()
                .any(|a| referrals::dicom::uids(&stored.referral, &a.slide).0 == wanted.1);
            if !hit {
                continue;
            }
            let series = inner.annotations.of(&inner, &stored);
            if let Some(s) = series
                .into_iter()
                .find(|s| s.entry.study_uid == wanted.0 && s.entry.series_uid == wanted.1)
            {
                return Ok(Some((stored, s)));
            }
        }
        Ok::<_, ApiError>(None)
    })
    .await
    .map_err(ApiError::internal)??;
    let Some((stored, series)) = found else {
        return Ok(None);
    };
    crate::api::referrals::decide_referral(state, requester, &stored).await?;
    // The instance names the patient: decided as reading the marked slide's metadata.
    crate::api::decide_metadata(state, requester, series.entry.slide).await?;
    Ok(Some(series))
}

/// The instance's metadata as DICOM JSON (its coordinates inline).
pub fn metadata(series: &AnnotationSeries) -> Vec<Value> {
    series
        .entry
        .instances
        .iter()
        .map(|i| Value::Object(i.metadata.clone()))
        .collect()
}
