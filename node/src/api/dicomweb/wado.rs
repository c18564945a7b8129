//! WADO-RS (PS3.18 10.4): metadata, frames, bulk data, whole instances and rendered images,
//! for local and shared slides alike. Frames are the stored tile bytes (BLAKE3-verified
//! when they come from a peer); nothing is transcoded.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use slidemesh_protocol::{AssociatedKind, TileId};
use tracing::Instrument;

use super::super::{ApiError, ApiState};
use super::accept::{self, FrameFormat};
use super::catalogue::{self, InstanceEntry, SeriesEntry};
use super::urls::Urls;
use super::{annotations, rebuild, render};
use crate::api::requester::Requester;
use crate::consent::ConsentAction;
use crate::dicom_json::PIXEL_DATA;
use crate::federation::{SlideDecided, TilesDecided};
use crate::store::Origin;

/// Most frames one request may name; a viewer asks for a screenful at a time.
const MAX_FRAMES_PER_REQUEST: usize = 4096;

/// `.../metadata` at study level.
pub async fn study_metadata(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&accept::ranges(&headers))?;
    let all = catalogue::load(&state).await?;
    let series: Vec<&Arc<SeriesEntry>> = all.iter().filter(|s| s.study_uid == study).collect();
    if series.is_empty() {
        return Err(ApiError::not_found(format!("no study {study}")));
    }
    for entry in &series {
        may_read(&state, &requester, entry).await?;
    }
    let urls = Urls::from_headers(&headers);
    let body: Vec<Value> = series
        .iter()
        .flat_map(|s| s.instances.iter().map(|i| instance_metadata(s, i, &urls)))
        .collect();
    Ok(dicom_json(body))
}

/// `.../metadata` at series level.
pub async fn series_metadata(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&accept::ranges(&headers))?;
    let entry = match catalogue::series(&state, &study, &series).await {
        Err(missing) if missing.status == StatusCode::NOT_FOUND => {
            return match annotations::find(&state, &requester, &study, &series).await? {
                Some(marks) => Ok(dicom_json(annotations::metadata(&marks))),
                None => Err(missing),
            };
        }
        other => other?,
    };
    may_read(&state, &requester, &entry).await?;
    let urls = Urls::from_headers(&headers);
    let body = entry
        .instances
        .iter()
        .map(|i| instance_metadata(&entry, i, &urls))
        .collect();
    Ok(dicom_json(body))
}

/// `.../metadata` at instance level.
pub async fn instance_metadata_route(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&accept::ranges(&headers))?;
    let (entry, index) = match find_instance(&state, &study, &series, &instance).await {
        Err(missing) if missing.status == StatusCode::NOT_FOUND => {
            return match annotations::find(&state, &requester, &study, &series).await? {
                Some(marks) if marks.entry.instance(&instance).is_some() => {
                    Ok(dicom_json(annotations::metadata(&marks)))
                }
                _ => Err(missing),
            };
        }
        other => other?,
    };
    may_read(&state, &requester, &entry).await?;
    let urls = Urls::from_headers(&headers);
    Ok(dicom_json(vec![instance_metadata(
        &entry,
        &entry.instances[index],
        &urls,
    )]))
}

/// Decides reading a series' metadata for the requester (403 when the owner's rules
/// refuse; see [`crate::api::decide_metadata`]).
async fn may_read(
    state: &Arc<ApiState>,
    requester: &Requester,
    series: &SeriesEntry,
) -> Result<SlideDecided, ApiError> {
    crate::api::decide_metadata(state, requester, series.slide).await
}

/// An instance's metadata: its stored data set plus a BulkDataURI for the pixel data.
fn instance_metadata(series: &SeriesEntry, instance: &InstanceEntry, urls: &Urls) -> Value {
    let mut object = instance.metadata.clone();
    let url = urls.instance(
        &series.study_uid,
        &series.series_uid,
        &instance.sop_instance_uid,
    );
    object.insert(
        PIXEL_DATA.to_string(),
        json!({ "vr": "OB", "BulkDataURI": format!("{url}/bulkdata/{PIXEL_DATA}") }),
    );
    Value::Object(object)
}

fn dicom_json(body: Vec<Value>) -> Response {
    let mut response = axum::Json(Value::Array(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    response
}

async fn find_instance(
    state: &Arc<ApiState>,
    study: &str,
    series: &str,
    instance: &str,
) -> Result<(Arc<SeriesEntry>, usize), ApiError> {
    let entry = catalogue::series(state, study, series).await?;
    let index = entry
        .instances
        .iter()
        .position(|i| i.sop_instance_uid == instance)
        .ok_or_else(|| ApiError::not_found(format!("no instance {instance} in series {series}")))?;
    Ok((entry, index))
}

/// `.../instances/{uid}/frames/{list}`: the frames, in the order asked.
pub async fn frames(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (entry, index) = find_instance(&state, &study, &series, &instance).await?;
    let inst = &entry.instances[index];
    let numbers = parse_frame_list(&list, inst.frames.len())?;
    let format = accept::frames(
        &accept::ranges(&headers),
        &inst.transfer_syntax_uid,
        numbers.len() == 1,
    )?;
    let tiles: Vec<TileId> = numbers.iter().map(|n| inst.frames[n - 1]).collect();
    let span = tracing::debug_span!("dicomweb_frames", slide = %entry.slide, instance = %instance, frames = tiles.len());
    let parts = frame_bytes(&state, &requester, &entry, tiles)
        .instrument(span)
        .await?;
    Ok(frames_response(&format, &inst.transfer_syntax_uid, parts))
}

/// `.../instances/{uid}/bulkdata/7FE00010`: the pixel data, one part per frame.
pub async fn bulkdata(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !tag.eq_ignore_ascii_case(PIXEL_DATA) {
        return Err(ApiError::not_found(format!(
            "no bulk data {tag}: only Pixel Data ({PIXEL_DATA}) is held as bulk data"
        )));
    }
    let (entry, index) = find_instance(&state, &study, &series, &instance).await?;
    let inst = &entry.instances[index];
    if inst.frames.len() > MAX_FRAMES_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "instance {instance} has {} frames; retrieve them with /frames in batches of at \
             most {MAX_FRAMES_PER_REQUEST}",
            inst.frames.len()
        )));
    }
    let format = accept::frames(&accept::ranges(&headers), &inst.transfer_syntax_uid, false)?;
    let parts = frame_bytes(&state, &requester, &entry, inst.frames.clone()).await?;
    Ok(frames_response(&format, &inst.transfer_syntax_uid, parts))
}

/// "1,5,9" -> [1, 5, 9], each within 1..=count.
fn parse_frame_list(list: &str, count: usize) -> Result<Vec<usize>, ApiError> {
    let numbers = list
        .split(',')
        .map(|n| {
            n.trim().parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "malformed frame list {list:?}: {n:?} is not a frame number"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if numbers.len() > MAX_FRAMES_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "{} frames asked for; at most {MAX_FRAMES_PER_REQUEST} per request",
            numbers.len()
        )));
    }
    if let Some(bad) = numbers.iter().find(|&&n| n == 0 || n > count) {
        return Err(ApiError::not_found(format!(
            "no frame {bad}: the instance has frames 1 to {count}"
        )));
    }
    Ok(numbers)
}

/// The bytes of each tile, in order: local tiles from the original files, shared tiles from
/// the cache or peers (verified on arrival).
async fn frame_bytes(
    state: &Arc<ApiState>,
    requester: &Requester,
    series: &SeriesEntry,
    tiles: Vec<TileId>,
) -> Result<Vec<Vec<u8>>, ApiError> {
    // One decision for the whole request, however many frames it names.
    let decided = state
        .federation
        .authorize_tiles(series.slide, tiles.clone(), requester.user())
        .await
        .map_err(crate::api::tiles::remote_error)?;
    decided_frames(state, series, &decided, tiles).await
}

/// The bytes of decided tiles, in order.
async fn decided_frames(
    state: &Arc<ApiState>,
    series: &SeriesEntry,
    decided: &TilesDecided,
    tiles: Vec<TileId>,
) -> Result<Vec<Vec<u8>>, ApiError> {
    if let Some(stray) = tiles.iter().find(|t| !decided.covers(t)) {
        return Err(ApiError::forbidden(format!(
            "tile {stray} was not decided for this request"
        )));
    }
    if series.origin == Origin::Shared {
        let fetches = tiles
            .into_iter()
            .map(|tile| state.federation.remote_tile(decided, tile));
        return futures::future::try_join_all(fetches)
            .await
            .map_err(crate::api::tiles::remote_error);
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        tiles
            .iter()
            .map(|tile| {
                let location = state
                    .locations
                    .get(tile)
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::internal(format!("tile {tile} is not indexed")))?;
                let bytes = state
                    .reader
                    .read_tile(tile, &location)
                    .map_err(ApiError::internal)?;
                // Frames are tiles served from the originals, as the tile routes count them
                // (shared ones are counted by `remote_tile`).
                crate::metrics::metrics().served_original.inc();
                Ok(bytes)
            })
            .collect()
    })
    .await
    .map_err(ApiError::internal)?
}

fn frames_response(format: &FrameFormat, ts: &str, mut parts: Vec<Vec<u8>>) -> Response {
    if !format.multipart && parts.len() == 1 {
        let mut response = Response::new(Body::from(parts.remove(0)));
        set_header(&mut response, header::CONTENT_TYPE, format.part_type);
        return response;
    }
    let boundary = new_boundary();
    let part_header = format!(
        "Content-Type: {}; transfer-syntax={ts}\r\n",
        format.part_type
    );
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 128).sum::<usize>() + 64);
    for part in &parts {
        body.extend_from_slice(format!("--{boundary}\r\n{part_header}").as_bytes());
        body.extend_from_slice(format!("Content-Length: {}\r\n\r\n", part.len()).as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut response = Response::new(Body::from(body));
    set_header(
        &mut response,
        header::CONTENT_TYPE,
        &format!(
            "multipart/related; type=\"{}\"; transfer-syntax={ts}; boundary={boundary}",
            format.part_type
        ),
    );
    response
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// A boundary that cannot plausibly occur in tile bytes (128 random-looking bits).
fn new_boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    format!(
        "slidemesh-{}",
        &blake3::hash(seed.as_bytes()).to_hex()[..32]
    )
}

/// `GET /studies/{study}`: every instance of the study as Part 10 files.
pub async fn retrieve_study(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let all = catalogue::load(&state).await?;
    let series: Vec<Arc<SeriesEntry>> = all.into_iter().filter(|s| s.study_uid == study).collect();
    if series.is_empty() {
        return Err(ApiError::not_found(format!("no study {study}")));
    }
    retrieve_instances(&state, &requester, &headers, &series, None).await
}

/// `GET /studies/{study}/series/{series}`.
pub async fn retrieve_series(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = match catalogue::series(&state, &study, &series).await {
        Err(missing) if missing.status == StatusCode::NOT_FOUND => {
            return match annotations::find(&state, &requester, &study, &series).await? {
                Some(marks) => annotation_instance(&headers, &marks, None),
                None => Err(missing),
            };
        }
        other => other?,
    };
    retrieve_instances(&state, &requester, &headers, &[entry], None).await
}

/// `GET /studies/{study}/series/{series}/instances/{instance}`.
pub async fn retrieve_instance(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (entry, _) = match find_instance(&state, &study, &series, &instance).await {
        Err(missing) if missing.status == StatusCode::NOT_FOUND => {
            return match annotations::find(&state, &requester, &study, &series).await? {
                Some(marks) => annotation_instance(&headers, &marks, Some(&instance)),
                None => Err(missing),
            };
        }
        other => other?,
    };
    retrieve_instances(&state, &requester, &headers, &[entry], Some(&instance)).await
}

/// An annotation series' instance as a Part 10 file in `multipart/related`.
fn annotation_instance(
    headers: &HeaderMap,
    marks: &annotations::AnnotationSeries,
    only: Option<&str>,
) -> Result<Response, ApiError> {
    let inst = &marks.entry.instances[0];
    if only.is_some_and(|uid| uid != inst.sop_instance_uid) {
        return Err(ApiError::not_found(format!(
            "no instance {} in series {}",
            only.unwrap_or_default(),
            marks.entry.series_uid
        )));
    }
    accept::instances(&accept::ranges(headers), &inst.transfer_syntax_uid)?;
    let boundary = new_boundary();
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\n\r\n",
        inst.transfer_syntax_uid
    )
    .into_bytes();
    body.extend_from_slice(&marks.part10);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut response = Response::new(Body::from(body));
    set_header(
        &mut response,
        header::CONTENT_TYPE,
        &format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
    );
    Ok(response)
}

/// One instance in a retrieve answer.
enum InstanceBody {
    /// A local instance: the original file, streamed unchanged.
    Original(PathBuf),
    /// A shared instance, rebuilt from its metadata and verified frames.
    Rebuilt(Vec<u8>),
}

/// Answers `multipart/related; type="application/dicom"`: local instances as their original
/// files (unchanged, so in their stored transfer syntax), shared ones rebuilt.
async fn retrieve_instances(
    state: &Arc<ApiState>,
    requester: &Requester,
    headers: &HeaderMap,
    series: &[Arc<SeriesEntry>],
    only: Option<&str>,
) -> Result<Response, ApiError> {
    let ranges = accept::ranges(headers);
    let mut parts: Vec<(InstanceBody, String)> = Vec::new();
    for entry in series {
        // A whole instance carries the metadata as well as the frames: both are decided,
        // once per series.
        let mut actions = state
            .federation
            .metadata_actions(&entry.slide)
            .map_err(crate::api::tiles::remote_error)?;
        actions.push(ConsentAction::FetchTiles);
        let decided = crate::api::decide(state, requester, entry.slide, &actions).await?;
        for inst in &entry.instances {
            if only.is_some_and(|uid| uid != inst.sop_instance_uid) {
                continue;
            }
            accept::instances(&ranges, &inst.transfer_syntax_uid)?;
            // Label instances only for someone decided to see the label.
            let tiles = state
                .federation
                .tiles_of(&decided, inst.frames.clone())
                .map_err(crate::api::tiles::remote_error)?;
            let body = if entry.origin == Origin::Shared {
                let frames = decided_frames(state, entry, &tiles, inst.frames.clone()).await?;
                let (entry, uid) = (entry.clone(), inst.sop_instance_uid.clone());
                let rebuilt = tokio::task::spawn_blocking(move || {
                    let inst = entry.instance(&uid).ok_or("instance vanished")?;
                    rebuild::part10(inst, frames)
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
                InstanceBody::Rebuilt(rebuilt)
            } else if state.reader.is_suspect_object(&inst.object) {
                // Streamed whole, its tiles could not be checked one by one.
                return Err(ApiError {
                    status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    message: format!(
                        "instance {} is in an original the scrub found corrupt; it is not \
                         served until repaired (its frames are, each checked)",
                        inst.sop_instance_uid
                    ),
                });
            } else {
                InstanceBody::Original(state.reader.objects().path(&inst.object))
            };
            parts.push((body, inst.transfer_syntax_uid.clone()));
        }
    }
    let boundary = new_boundary();
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let stream = stream::iter(parts)
        .then(move |(body, ts)| {
            let head = Bytes::from(format!(
                "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={ts}\r\n\r\n"
            ));
            let tail = Bytes::from_static(b"\r\n");
            async move {
                match body {
                    InstanceBody::Rebuilt(bytes) => {
                        stream::iter([Ok(head), Ok(Bytes::from(bytes)), Ok(tail)]).boxed()
                    }
                    InstanceBody::Original(path) => match tokio::fs::File::open(&path).await {
                        Ok(file) => stream::once(async { Ok(head) })
                            .chain(tokio_util::io::ReaderStream::new(file))
                            .chain(stream::once(async { Ok(tail) }))
                            .boxed(),
                        Err(e) => stream::once(async move {
                            tracing::error!(path = %path.display(), error = %e, "original file unreadable");
                            Err(e)
                        })
                        .boxed(),
                    },
                }
            }
        })
        .flatten()
        .chain(stream::once(async { Ok::<_, std::io::Error>(closing) }));
    let mut response = Response::new(Body::from_stream(stream));
    set_header(&mut response, header::CONTENT_TYPE, &content_type);
    Ok(response)
}

/// A frame as a rendered image (see [`render`]).
async fn rendered_frame(
    state: &Arc<ApiState>,
    request: &Rendering<'_>,
    series: &SeriesEntry,
    instance: &InstanceEntry,
    frame: usize,
) -> Result<Response, ApiError> {
    let format = render::negotiate(&accept::ranges(request.headers))?;
    let viewport = render::viewport(request.query)?;
    let tile = *instance.frames.get(frame - 1).ok_or_else(|| {
        ApiError::not_found(format!(
            "no frame {frame}: the instance has frames 1 to {}",
            instance.frames.len()
        ))
    })?;
    let mut bytes = frame_bytes(state, request.requester, series, vec![tile]).await?;
    let frame_bytes = bytes.remove(0);
    let ts = instance.transfer_syntax_uid.clone();
    let image =
        tokio::task::spawn_blocking(move || render::render(frame_bytes, &ts, format, viewport))
            .await
            .map_err(ApiError::internal)??;
    let mut response = Response::new(Body::from(image));
    set_header(&mut response, header::CONTENT_TYPE, format.media_type());
    set_header(
        &mut response,
        header::CACHE_CONTROL,
        if series.origin == Origin::Shared {
            // Decided per person: no shared cache may hand it to another, and the browser
            // asks again each time.
            "private, no-cache"
        } else {
            // Decided for this person: only their browser keeps it (as this trust's tiles).
            "private, max-age=31536000, immutable"
        },
    );
    Ok(response)
}

/// What a rendered request asks for: its headers (Accept) and query (`viewport`).
struct Rendering<'a> {
    requester: &'a Requester,
    headers: &'a HeaderMap,
    query: &'a [(String, String)],
}

/// `.../frames/{n}/rendered`.
pub async fn rendered_frame_route(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series, instance, frame)): Path<(String, String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = Rendering {
        requester: &requester,
        headers: &headers,
        query: &query,
    };
    let (entry, index) = find_instance(&state, &study, &series, &instance).await?;
    let inst = &entry.instances[index];
    let numbers = parse_frame_list(&frame, inst.frames.len())?;
    if numbers.len() != 1 {
        return Err(ApiError::bad_request(
            "rendered frames are one image per request",
        ));
    }
    rendered_frame(&state, &request, &entry, inst, numbers[0]).await
}

/// `.../instances/{uid}/rendered` and `.../thumbnail`: single-frame instances (label,
/// overview, thumbnail) as their image; for a tiled level, `thumbnail` gives the slide's
/// thumbnail image.
pub async fn rendered_instance(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series, instance)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = Rendering {
        requester: &requester,
        headers: &headers,
        query: &query,
    };
    let (entry, index) = find_instance(&state, &study, &series, &instance).await?;
    let inst = &entry.instances[index];
    if inst.frames.len() == 1 {
        return rendered_frame(&state, &request, &entry, inst, 1).await;
    }
    // Saying why not names the frame count: decided like the instance's metadata first.
    may_read(&state, &requester, &entry).await?;
    Err(accept::not_acceptable(format!(
        "instance {instance} is a tiled level of {} frames; rendering it whole needs \
         decoding and stitching, which this node does not do: ask for \
         /frames/{{n}}/rendered, or the series thumbnail",
        inst.frames.len()
    )))
}

/// `/studies/{study}/series/{series}/thumbnail`: the slide's THUMBNAIL image (else its
/// smallest single-frame level).
pub async fn series_thumbnail(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = catalogue::series(&state, &study, &series).await?;
    let request = Rendering {
        requester: &requester,
        headers: &headers,
        query: &query,
    };
    series_thumbnail_of(&state, &request, &entry).await
}

/// `/studies/{study}/thumbnail`: the thumbnail of the study's first slide.
pub async fn study_thumbnail(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(study): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = Rendering {
        requester: &requester,
        headers: &headers,
        query: &query,
    };
    let entry = catalogue::load(&state)
        .await?
        .into_iter()
        .find(|s| s.study_uid == study)
        .ok_or_else(|| ApiError::not_found(format!("no study {study}")))?;
    series_thumbnail_of(&state, &request, &entry).await
}

async fn series_thumbnail_of(
    state: &Arc<ApiState>,
    request: &Rendering<'_>,
    entry: &SeriesEntry,
) -> Result<Response, ApiError> {
    let decided = crate::api::decide(
        state,
        request.requester,
        entry.slide,
        &[ConsentAction::View],
    )
    .await?;
    let view = super::super::load_slide(state, &decided).await?;
    let uid = view
        .manifest
        .associated(AssociatedKind::Thumbnail)
        .map(|a| a.instance_uid.clone())
        .or_else(|| {
            let smallest = view.manifest.levels.last()?;
            (smallest.tiles.len() == 1).then(|| smallest.instance_uids.first().cloned())?
        })
        .ok_or_else(|| {
            accept::not_acceptable(format!(
                "series {} has no thumbnail image and no single-frame level; making one needs \
                 decoding, which this node does not do",
                entry.series_uid
            ))
        })?;
    let inst = entry
        .instance(&uid)
        .ok_or_else(|| ApiError::internal(format!("thumbnail instance {uid} not catalogued")))?;
    rendered_frame(state, request, entry, inst, 1).await
}
