//! Tile endpoints: by content id, by grid position, and associated images. Each response is
//! the stored frame bytes, unchanged, from positioned reads of the original file.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use slidemesh_protocol::{AssociatedKind, SlideId, TileId};
use tracing::Instrument;

use super::{ApiError, ApiState, load_slide, parse_id};

/// Sends one tile, honouring `If-None-Match` against its strong ETag (the tile id).
async fn send_tile(
    state: &Arc<ApiState>,
    tile: TileId,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = format!("\"{tile}\"");
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let state = state.clone();
    let span = tracing::debug_span!("read_tile", tile = %tile);
    let (bytes, media_type) = tokio::task::spawn_blocking(move || {
        let _guard = span.enter();
        let location = state
            .locations
            .get(&tile)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no tile {tile}")))?;
        let bytes = state.reader.read(&location).map_err(ApiError::internal)?;
        Ok::<_, ApiError>((bytes, location.media_type.clone()))
    })
    .await
    .map_err(ApiError::internal)??;
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}

pub async fn by_id(
    State(state): State<Arc<ApiState>>,
    Path(tile_id): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let tile: TileId = parse_id("tile id", &tile_id)?;
    send_tile(&state, tile, &request).await
}

pub async fn level_tile(
    State(state): State<Arc<ApiState>>,
    Path((slide_id, level, col, row)): Path<(String, String, String, String)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    let level: usize = parse_id("level", &level)?;
    let col: u32 = parse_id("column", &col)?;
    let row: u32 = parse_id("row", &row)?;
    let span = tracing::debug_span!("level_tile", slide = %id, level, col, row);
    async move {
        let view = load_slide(&state, id).await?;
        let grid = view.manifest.levels.get(level).ok_or_else(|| {
            ApiError::not_found(format!(
                "slide {id} has {} levels; no level {level}",
                view.manifest.levels.len()
            ))
        })?;
        let tile = grid.tile_at(col, row).ok_or_else(|| {
            ApiError::not_found(format!(
                "no tile at column {col}, row {row} of level {level}"
            ))
        })?;
        send_tile(&state, tile, &request).await
    }
    .instrument(span)
    .await
}

/// `thumbnail`, `label` or `overview`: the image's first frame. (Tiled associated images
/// would need stitching, which needs a decoder; scanners write these as single frames.)
pub async fn associated(
    State(state): State<Arc<ApiState>>,
    Path((slide_id, image)): Path<(String, String)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = match image.as_str() {
        "thumbnail" => AssociatedKind::Thumbnail,
        "label" => AssociatedKind::Label,
        "overview" => AssociatedKind::Overview,
        other => {
            return Err(ApiError::not_found(format!(
                "no such slide resource {other:?}"
            )));
        }
    };
    let id: SlideId = parse_id("slide id", &slide_id)?;
    let view = load_slide(&state, id).await?;
    let tile = view
        .manifest
        .associated(kind)
        .and_then(|a| a.tiles.first().copied())
        .ok_or_else(|| ApiError::not_found(format!("slide {id} has no {} image", kind.as_str())))?;
    send_tile(&state, tile, &request).await
}
