//! Slide metadata endpoints: node info, slide list, slide detail, signed manifest.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use slidemesh_protocol::{AssociatedKind, SlideId};

use super::requester::Requester;
use super::{ApiError, ApiState, SlideView, parse_id};
use crate::consent::ConsentAction;
use crate::store::{Origin, SlideSummary};

/// Who this node is, and the federation's members (what a referral can be addressed to).
pub async fn node_info(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let roster = state.federation.holdings.membership.roster();
    let members: Vec<Value> = roster
        .iter()
        .flat_map(|r| r.members.iter())
        .map(|m| json!({ "trust": m.trust, "name": m.name }))
        .collect();
    Json(json!({
        "trust": state.trust,
        "trust_name": state.trust_name,
        "node_key": state.node_key,
        "version": env!("CARGO_PKG_VERSION"),
        "peer_id": state.federation.network.local_peer_id().to_string(),
        "federation": roster.as_ref().map(|r| r.federation.clone()),
        "members": members,
    }))
}

/// The swarm's view (peers, listen addresses), the roster version and the cache.
pub async fn network_status(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let network = state
        .federation
        .network
        .status()
        .await
        .map_err(ApiError::internal)?;
    let not_answering: Vec<Value> = state
        .federation
        .peers_not_answering()
        .into_iter()
        .map(|(trust, since)| json!({ "trust": trust, "for_secs": since.as_secs() }))
        .collect();
    let members = state.federation.member_health(&network.connected);
    Ok(Json(json!({
        "network": network,
        // Each other member: connected, not answering for how long, its last batch's time.
        "members": members,
        "roster_version": state.federation.holdings.membership.roster().map(|r| r.version),
        "cache": state.federation.holdings.cache.stats(),
        // Peers skipped for tile requests until their backoff ends (the next asks again).
        "not_answering": not_answering,
    })))
}

/// `GET /api/v1/replicas`: the replicas this node holds for other trusts (tiles held,
/// bytes, the age of the owner's rules they decide with) and those this trust named for
/// its own slides. Slide ids and counts only, nothing of a slide's content.
pub async fn replicas(
    State(state): State<Arc<ApiState>>,
    requester: super::requester::Requester,
) -> Result<Json<Value>, ApiError> {
    super::operator_only(&requester)?;
    let held = state
        .federation
        .replicas()
        .await
        .map_err(ApiError::internal)?;
    let named = state
        .federation
        .replicas_named()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "held": held, "named": named })))
}

/// `GET /api/v1/scrub`: the running pass's progress and the last pass's report.
pub async fn scrub_status(
    State(state): State<Arc<ApiState>>,
    requester: super::requester::Requester,
) -> Result<Json<Value>, ApiError> {
    super::operator_only(&requester)?;
    let scrub = &state.federation.scrub;
    Ok(Json(json!({
        "progress": scrub.progress.snapshot(),
        "last": scrub.last(),
        "suspects": state.federation.holdings.reader.suspects(),
    })))
}

/// `POST /api/v1/scrub`: starts a pass now, unpaced (202), unless one is running (409).
/// Takes a JSON body (`{}`): a form posted from another site cannot send one without the
/// browser asking first, so a page elsewhere cannot start a pass.
pub async fn scrub_now(
    State(state): State<Arc<ApiState>>,
    requester: super::requester::Requester,
    Json(_): Json<Value>,
) -> Result<axum::response::Response, ApiError> {
    super::operator_only(&requester)?;
    use axum::response::IntoResponse;
    if state.federation.scrub.start_now() {
        Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(json!({ "started": true })),
        )
            .into_response())
    } else {
        Err(ApiError {
            status: axum::http::StatusCode::CONFLICT,
            message: "a scrub pass is running; follow it with GET /api/v1/scrub".into(),
        })
    }
}

fn summary_json(id: &SlideId, s: &SlideSummary) -> Value {
    let url = |kind: AssociatedKind, present: bool| {
        present.then(|| format!("/api/v1/slides/{id}/{}", kind.as_str()))
    };
    json!({
        "slide_id": id,
        "owner": s.owner,
        "origin": match s.origin { Origin::Local => "local", Origin::Shared => "shared" },
        "series_uid": s.series_uid,
        "study_uid": s.study_uid,
        "container_id": s.container_id,
        "stain": s.stain,
        "anatomic_site": s.anatomic_site,
        "acquired": s.acquired,
        "levels": s.levels,
        "width": s.width,
        "height": s.height,
        "tiles": s.tiles,
        "bytes": s.bytes,
        "thumbnail_url": url(AssociatedKind::Thumbnail, s.has_thumbnail),
        "label_url": url(AssociatedKind::Label, s.has_label),
        "overview_url": url(AssociatedKind::Overview, s.has_overview),
    })
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let (federation, user) = (state.federation.clone(), requester.0.clone());
    let (mut summaries, deidentified) = tokio::task::spawn_blocking(move || {
        // The one asking sees only the slides the owners' rules let them view (this trust's
        // own and shared ones alike), and those they may not know the patient of without
        // the specimen's identifier.
        let mut all = Vec::new();
        for (id, mut summary) in store
            .summaries()?
            .into_iter()
            .chain(store.remote_summaries()?)
        {
            if !federation.user_may(&id, user.as_ref(), ConsentAction::View) {
                continue;
            }
            if !federation.user_may_read_metadata(&id, user.as_ref()) {
                redact(&mut summary);
            }
            all.push((id, summary));
        }
        Ok::<_, crate::store::StoreError>((all, store.deidentified_projects()?))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    summaries.sort_by(|a, b| b.1.acquired.cmp(&a.1.acquired).then_with(|| a.0.cmp(&b.0)));
    let slides: Vec<Value> = summaries
        .iter()
        .map(|(id, s)| {
            let mut slide = summary_json(id, s);
            slide["deidentified"] = json!(deidentified.get(id).map(|p| json!({ "project": p })));
            slide
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "private, no-cache")],
        Json(json!({ "slides": slides })),
    )
        .into_response())
}

/// What a person who may view a shared slide but not know whose it is must not see in its
/// summary: the specimen's identifier, the study and series UIDs, the acquisition date and
/// the label images (what the owner's de-identification would replace or drop).
fn redact(summary: &mut SlideSummary) {
    summary.container_id = None;
    summary.acquired = None;
    summary.study_uid.clear();
    summary.series_uid.clear();
    summary.has_label = false;
    summary.has_overview = false;
}

/// The slide, when the requester may view it (decided with the owner's rules, this trust's
/// own slides included).
async fn load(
    state: &Arc<ApiState>,
    requester: &Requester,
    raw_id: &str,
) -> Result<Arc<SlideView>, ApiError> {
    let id: SlideId = parse_id("slide id", raw_id)?;
    let decided = super::decide(state, requester, id, &[ConsentAction::View]).await?;
    super::load_slide(state, &decided).await
}

/// A JSON response about one slide, with a strong ETag. A local slide's data is content
/// addressed and cached forever; a shared slide's can change under the same id (the
/// grantee's grant changes, or the owner withdraws it), so clients revalidate.
pub fn slide_json(view: &SlideView, etag: &str, request: &HeaderMap, body: Value) -> Response {
    let etag = format!("\"{etag}\"");
    if super::etag_matches(request, &etag) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if view.is_local() {
            // Decided for this person: only their browser keeps it (as this trust's tiles).
            "private, max-age=31536000, immutable"
        } else {
            // Shared: decided per person, and may change under the same id.
            "private, no-cache"
        }),
    );
    response
}

pub async fn detail(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(slide_id): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let view = load(&state, &requester, &slide_id).await?;
    let mut summary = view.summary.clone();
    let (federation, id, user) = (state.federation.clone(), view.id, requester.0.clone());
    let may_read =
        tokio::task::spawn_blocking(move || federation.user_may_read_metadata(&id, user.as_ref()))
            .await
            .map_err(ApiError::internal)?;
    if !may_read {
        redact(&mut summary);
    }
    let redacted = summary != view.summary;
    let m = &view.manifest;
    let base = &m.levels[0];
    let levels: Vec<Value> = m
        .levels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "index": i,
                "width": l.width,
                "height": l.height,
                "tile_width": l.tile_width,
                "tile_height": l.tile_height,
                "cols": l.cols(),
                "rows": l.rows(),
                "downsample": base.width as f64 / l.width as f64,
                "pixel_spacing_mm": l.pixel_spacing_mm,
                "organization": l.organization,
                "tiles": l.tiles.len(),
            })
        })
        .collect();
    let mut body = summary_json(&view.id, &summary);
    body["pixel_spacing_mm"] = json!(base.pixel_spacing_mm);
    body["optical_paths"] = json!(m.optical_paths);
    // `levels` in the list is a count; in the detail it is the level array the viewer needs.
    body["level_count"] = body["levels"].clone();
    body["levels"] = json!(levels);
    body["deidentified"] = json!(view.deidentified.as_ref().map(|d| json!({
        "project": d.project,
        "view_id": d.view,
        "profile": slidemesh_protocol::deidentified::PROFILE,
    })));
    let etag = if redacted {
        format!("{}.redacted", view.manifest_id())
    } else {
        view.manifest_id().to_hex()
    };
    Ok(slide_json(&view, &etag, &request, body))
}

pub async fn manifest(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(slide_id): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    let decided = super::decide_metadata(&state, &requester, id).await?;
    let view = super::load_slide(&state, &decided).await?;
    let body = json!({
        "slide_id": id,
        // The id the signature covers: the slide id, or the de-identified view's.
        "manifest_id": view.manifest_id(),
        "deidentified_project": view.deidentified.as_ref().map(|d| &d.project),
        "signer": view.signer,
        "signature": hex::encode(&view.signature),
        "canonical_version": slidemesh_protocol::CANONICAL_VERSION,
        "manifest": view.manifest,
    });
    let etag = format!("{}.manifest", view.manifest_id());
    Ok(slide_json(&view, &etag, &request, body))
}

/// Entries the access history returns per page unless asked for fewer (newest first).
const ACCESS_HISTORY_PAGE: usize = 200;
/// The most entries one page may have.
const ACCESS_HISTORY_MAX_PAGE: usize = 1000;

/// Which page of a slide's history: entries older than `before` (a sequence number;
/// none: from the newest), at most `limit` of them.
#[derive(Debug, serde::Deserialize)]
pub struct HistoryPage {
    before: Option<u64>,
    limit: Option<usize>,
}

/// The audit trail about one slide, newest first, a page at a time (`?before=SEQ&limit=N`;
/// `next_before` names the next page): at the owner, who was allowed or refused what and
/// why; at a grantee, what this node fetched. From this node's own log, read through its
/// index by slide (not a scan of the log).
pub async fn access_history(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(slide_id): Path<String>,
    Query(page): Query<HistoryPage>,
) -> Result<Response, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    // The history of a slide is for those who may view it (it names their colleagues).
    let decided = super::decide(&state, &requester, id, &[ConsentAction::View]).await?;
    let id = decided.slide();
    let limit = page
        .limit
        .unwrap_or(ACCESS_HISTORY_PAGE)
        .clamp(1, ACCESS_HISTORY_MAX_PAGE);
    let store = state.store.clone();
    let history = tokio::task::spawn_blocking(move || store.slide_history(&id, page.before, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let total = history.total;
    let next_before = (history.entries.len() == limit)
        .then(|| history.entries.last().map(|(seq, _)| *seq))
        .flatten();
    let entries: Vec<Value> = history
        .entries
        .iter()
        .map(|(seq, e)| {
            json!({
                "seq": seq,
                "time": e.time,
                "side": e.side,
                "peer": e.peer,
                "user": e.user,
                "purpose": e.purpose,
                "action": e.action,
                "what": e.what,
                "allowed": e.allowed,
                "rules": e.rules,
            })
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "no-cache")],
        Json(json!({
            "slide_id": id,
            "total": total,
            "entries": entries,
            "next_before": next_before,
        })),
    )
        .into_response())
}
