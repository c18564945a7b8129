//! Tile endpoints: by content id, by grid position, and associated images. Each response is
//! the stored frame bytes, unchanged, from positioned reads of the original file.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use slidemesh_protocol::{AssociatedKind, Level, SlideId, TileId};
use tracing::Instrument;

use super::requester::Requester;
use super::{ApiError, ApiState, SlideView, decide, etag_matches, load_slide, parse_id};
use crate::consent::ConsentAction;
use crate::federation::TilesDecided;
use crate::federation::remote::RemoteError;
use crate::store::Origin;

/// Sends one tile of this trust's own slides, honouring `If-None-Match` against its strong
/// ETag (the tile id). `decided` must cover it.
async fn send_tile(
    state: &Arc<ApiState>,
    decided: &TilesDecided,
    tile: TileId,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    if !decided.covers(&tile) {
        return Err(ApiError::forbidden(format!(
            "tile {tile} was not decided for this request"
        )));
    }
    let etag = format!("\"{tile}\"");
    if etag_matches(request, &etag) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    // A tile whose location is known and whose bytes are in the page cache is read right
    // here (microseconds); handing it to the blocking pool cost more than the read. Anything
    // that could wait on redb or the disk goes to the blocking pool.
    if let Some(location) = state.locations.cached(&tile)
        && let Some(bytes) = state.reader.read_if_cached(&location)
    {
        crate::metrics::metrics().served_original.inc();
        return tile_response(bytes, &location.media_type, &etag, Sharing::Decided);
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
        let bytes = state
            .reader
            .read_tile(&tile, &location)
            .map_err(ApiError::internal)?;
        Ok::<_, ApiError>((bytes, location.media_type.clone()))
    })
    .await
    .map_err(ApiError::internal)??;
    crate::metrics::metrics().served_original.inc();
    tile_response(bytes, &media_type, &etag, Sharing::Decided)
}

/// Sends a decided tile of any slide: this trust's own from its files, a shared one from
/// the cache or peers.
async fn send_decided(
    state: &Arc<ApiState>,
    decided: &TilesDecided,
    view: &SlideView,
    tile: TileId,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    if view.is_local() {
        send_tile(state, decided, tile, request).await
    } else {
        send_remote_tile(state, decided, view, tile, request).await
    }
}

/// `GET /api/v1/slides/{slide}/tiles/{tile}`: a tile of the slide by its content id.
pub async fn by_id(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((slide_id, tile_id)): Path<(String, String)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    let tile: TileId = parse_id("tile id", &tile_id)?;
    let span = tracing::debug_span!("tile_by_id", slide = %id, tile = %tile);
    async move {
        let decided = state
            .federation
            .authorize_tiles(id, vec![tile], requester.user())
            .await
            .map_err(remote_error)?;
        let view = load_slide(&state, &decided).await?;
        send_decided(&state, &decided, &view, tile, &request).await
    }
    .instrument(span)
    .await
}

pub async fn level_tile(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((slide_id, level, col, row)): Path<(String, String, String, String)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    let level: usize = parse_id("level", &level)?;
    let col: u32 = parse_id("column", &col)?;
    let row: u32 = parse_id("row", &row)?;
    let span = tracing::debug_span!("level_tile", slide = %id, level, col, row);
    async move {
        // Nothing is read or fetched for someone the owner's rules refuse, not even prefetch.
        let decided = decide(&state, &requester, id, &[ConsentAction::FetchTiles]).await?;
        let view = load_slide(&state, &decided).await?;
        let grid = level_of(&view, level)?;
        let tile = grid.tile_at(col, row).ok_or_else(|| {
            ApiError::not_found(format!(
                "no tile at column {col}, row {row} of level {level}"
            ))
        })?;
        let tiles = state
            .federation
            .tiles_of(&decided, vec![tile])
            .map_err(remote_error)?;
        if !view.is_local() {
            let (screen, deeper) = prefetch_around(&view, level, col, row);
            let user = requester.user();
            state.federation.prefetch(id, &screen, true, user);
            state.federation.prefetch(id, &deeper, false, user);
        }
        send_decided(&state, &tiles, &view, tile, &request).await
    }
    .instrument(span)
    .await
}

/// The part of a level a viewer is about to show: columns and rows, both inclusive.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WantedRegion {
    pub cols: [u32; 2],
    pub rows: [u32; 2],
}

/// Most tiles one `wanted` call may name (a 4K screen of 256 px tiles is about 150).
const MAX_WANTED_TILES: u64 = 1024;

/// `POST .../levels/{level}/wanted`: the viewer names the tiles of the screen it is moving
/// to, before it asks for them one by one. For a shared slide the node fetches them all in
/// one batch now (one round trip to the owner, instead of one per wave of the browser's six
/// connections); for this trust's own slides there is nothing to do. Answers 202 with the
/// number of tiles named, at once: the tiles themselves come through the tile endpoint.
pub async fn wanted(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((slide_id, level)): Path<(String, String)>,
    axum::Json(region): axum::Json<WantedRegion>,
) -> Result<Response, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    let level: usize = parse_id("level", &level)?;
    // Nothing is fetched for someone the owner's rules refuse.
    let decided = decide(&state, &requester, id, &[ConsentAction::FetchTiles]).await?;
    let view = load_slide(&state, &decided).await?;
    let grid = level_of(&view, level)?;
    let [c0, c1] = region.cols;
    let [r0, r1] = region.rows;
    if c0 > c1 || r0 > r1 || c0 >= grid.cols() || r0 >= grid.rows() {
        return Err(ApiError::bad_request(format!(
            "columns {c0}..={c1} and rows {r0}..={r1} are not a region of level {level} ({} x {} tiles)",
            grid.cols(),
            grid.rows()
        )));
    }
    let (c1, r1) = (c1.min(grid.cols() - 1), r1.min(grid.rows() - 1));
    let count = (c1 - c0 + 1) as u64 * (r1 - r0 + 1) as u64;
    if count > MAX_WANTED_TILES {
        return Err(ApiError::bad_request(format!(
            "{count} tiles named; at most {MAX_WANTED_TILES} at once"
        )));
    }
    if view.summary.origin == Origin::Shared {
        // From the middle outwards: the middle of the screen is what the eye goes to.
        let tiles = tiles_outwards(grid, (c0, c1), (r0, r1), ((c0 + c1) / 2, (r0 + r1) / 2));
        state
            .federation
            .prefetch(id, &tiles, true, requester.user());
    }
    let mut response = axum::Json(serde_json::json!({ "tiles": count })).into_response();
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

/// `thumbnail`, `label` or `overview`: the image's first frame. (Tiled associated images
/// would need stitching, which needs a decoder; scanners write these as single frames.)
pub async fn associated(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
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
    let actions = match kind {
        AssociatedKind::Label | AssociatedKind::Overview => {
            vec![ConsentAction::FetchTiles, ConsentAction::SeeLabel]
        }
        _ => vec![ConsentAction::FetchTiles],
    };
    let decided = decide(&state, &requester, id, &actions).await?;
    let view = load_slide(&state, &decided).await?;
    let tile = view
        .manifest
        .associated(kind)
        .and_then(|a| a.tiles.first().copied())
        .ok_or_else(|| ApiError::not_found(format!("slide {id} has no {} image", kind.as_str())))?;
    let tiles = state
        .federation
        .tiles_of(&decided, vec![tile])
        .map_err(remote_error)?;
    send_decided(&state, &tiles, &view, tile, &request).await
}

/// Levels with at most this many tiles are fetched whole when any of their tiles is asked
/// for: a viewer opening a slide shows the whole slide, one coarse level of a few dozen
/// tiles, and a screen in one batch is one round trip to the peer instead of several.
const WHOLE_LEVEL_TILES: usize = 128;

/// What a viewer asks for next: the tiles around this one on the same level (the whole
/// level when it is small, else a 7 x 7 window, which holds most of a screen) and the four
/// under it on the next finer level.
///
/// The screen starts with the tile asked for, then goes outwards ring by ring: a batch's
/// tiles arrive in its order, and the one asked for (and its neighbours, which the viewer
/// asks for next) should not wait behind the far corner of the level.
fn prefetch_around(
    view: &SlideView,
    level: usize,
    col: u32,
    row: u32,
) -> (Vec<TileId>, Vec<TileId>) {
    const RADIUS: u32 = 3;
    let levels = &view.manifest.levels;
    let mut out = Vec::new();
    let grid = &levels[level];
    let (cols, rows) = (grid.cols(), grid.rows());
    let screen = if grid.tiles.len() <= WHOLE_LEVEL_TILES {
        tiles_outwards(
            grid,
            (0, cols.saturating_sub(1)),
            (0, rows.saturating_sub(1)),
            (col, row),
        )
    } else {
        tiles_outwards(
            grid,
            (
                col.saturating_sub(RADIUS),
                (col + RADIUS).min(cols.saturating_sub(1)),
            ),
            (
                row.saturating_sub(RADIUS),
                (row + RADIUS).min(rows.saturating_sub(1)),
            ),
            (col, row),
        )
    };
    if level > 0 {
        let finer = &levels[level - 1];
        let scale_x = (finer.width as f64 / grid.width as f64).round().max(1.0) as u32;
        let scale_y = (finer.height as f64 / grid.height as f64).round().max(1.0) as u32;
        let (fc, fr) = (
            col * grid.tile_width * scale_x / finer.tile_width.max(1),
            row * grid.tile_height * scale_y / finer.tile_height.max(1),
        );
        for r in fr..fr + scale_y.min(4) {
            for c in fc..fc + scale_x.min(4) {
                out.extend(finer.tile_at(c, r));
            }
        }
    }
    (screen, out)
}

/// A level of a slide, or 404 naming how many it has.
fn level_of(view: &SlideView, level: usize) -> Result<&Level, ApiError> {
    view.manifest.levels.get(level).ok_or_else(|| {
        ApiError::not_found(format!(
            "slide {} has {} levels; no level {level}",
            view.id,
            view.manifest.levels.len()
        ))
    })
}

/// The tiles of columns `cols.0..=cols.1` and rows `rows.0..=rows.1` of a level, ring by
/// ring outwards from `centre`: a batch's tiles arrive in its order, so what the viewer
/// looks at (or asked for first) comes first. Positions without a tile (sparse levels) are
/// skipped; identical tiles (blank glass) share an id and the fetch queue keeps one of each.
fn tiles_outwards(
    grid: &Level,
    cols: (u32, u32),
    rows: (u32, u32),
    centre: (u32, u32),
) -> Vec<TileId> {
    let mut cells: Vec<(u32, u32, u32)> = (rows.0..=rows.1)
        .flat_map(|r| {
            (cols.0..=cols.1).map(move |c| (c.abs_diff(centre.0).max(r.abs_diff(centre.1)), c, r))
        })
        .collect();
    cells.sort_unstable();
    cells
        .into_iter()
        .filter_map(|(_, c, r)| grid.tile_at(c, r))
        .collect()
}

/// A tile of a shared slide: from the cache or fetched from peers, verified either way.
/// Decided before a 304 too (`decided`): "you may keep showing it" is a decision as well.
async fn send_remote_tile(
    state: &Arc<ApiState>,
    decided: &TilesDecided,
    view: &SlideView,
    tile: TileId,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = format!("\"{tile}\"");
    if etag_matches(request, &etag) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let started = std::time::Instant::now();
    let bytes = state
        .federation
        .remote_tile(decided, tile)
        .await
        .map_err(remote_error)?;
    tracing::debug!(%tile, waited_ms = started.elapsed().as_secs_f64() * 1000.0, "remote tile answered");
    let media_type = view
        .manifest
        .instances
        .first()
        .map(|i| crate::store::instance::tile_media_type(&i.transfer_syntax_uid))
        .unwrap_or("application/octet-stream");
    // Decided per person: a shared cache in front of the node must not hand it to another.
    tile_response(bytes, media_type, &etag, Sharing::Private)
}

/// 403 when the grant ended or the owner's rules refuse the person asking, 404 when the
/// slide is not shared here, 502 when no peer could provide the tile.
pub(crate) fn remote_error(e: RemoteError) -> ApiError {
    match e {
        RemoteError::Withdrawn(reason) | RemoteError::Forbidden(reason) => {
            ApiError::forbidden(reason)
        }
        RemoteError::NotShared(_) => ApiError::not_found(e.to_string()),
        RemoteError::Unavailable(reason) => ApiError::bad_gateway(reason),
        RemoteError::NoSuchTile(_) => ApiError::not_found(e.to_string()),
        RemoteError::AuditFailed(reason) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: reason,
        },
    }
}

/// Who may cache a tile response: only the browser of the one it was decided for. This
/// trust's own tiles never change under their id, so that browser keeps them; a shared
/// slide's can be withdrawn, so it asks again on each use and is decided again.
enum Sharing {
    Decided,
    Private,
}

fn tile_response(
    bytes: Vec<u8>,
    media_type: &str,
    etag: &str,
    sharing: Sharing,
) -> Result<Response, ApiError> {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(match sharing {
            Sharing::Decided => "private, max-age=31536000, immutable",
            // Asked again on each use, so the decision for the person is made again.
            Sharing::Private => "private, no-cache",
        }),
    );
    Ok(response)
}

/// Most tiles one request may name to be cached.
const MAX_CACHE_TILES: usize = 4096;

/// Which of a slide's tiles to cache (none named: all of them).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRequest {
    tiles: Vec<TileId>,
}

/// Fetches every tile of a shared slide (or, with a JSON body `{"tiles": [...]}`, those of
/// its tiles, at most 4096) into this node's cache, in batches, and reports how long it
/// took. For local slides there is nothing to do.
pub async fn cache_whole_slide(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(slide_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let id: SlideId = parse_id("slide id", &slide_id)?;
    // Label images come along only for someone who may see them (a refusal of that is
    // logged, and the rest of the slide is copied all the same).
    let with_label = [ConsentAction::FetchTiles, ConsentAction::SeeLabel];
    let decided = match decide(&state, &requester, id, &with_label).await {
        Ok(decided) => decided,
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            decide(&state, &requester, id, &[ConsentAction::FetchTiles]).await?
        }
        Err(e) => return Err(e),
    };
    let view = load_slide(&state, &decided).await?;
    if view.summary.origin != Origin::Shared {
        return Ok(axum::Json(serde_json::json!({
            "slide_id": id, "tiles": 0, "bytes": 0, "seconds": 0.0, "local": true,
        })));
    }
    // Read once decided (someone refused learns nothing from its checks), and only when
    // there is something to fetch.
    let named = if body.is_empty() {
        None
    } else {
        let request: CacheRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("not a list of tiles: {e}")))?;
        if request.tiles.len() > MAX_CACHE_TILES {
            return Err(ApiError::bad_request(format!(
                "{} tiles named; at most {MAX_CACHE_TILES} at once",
                request.tiles.len()
            )));
        }
        Some(request.tiles)
    };
    // Named tiles must be the slide's: `fetch_whole_slide` refuses any other.
    let mut tiles: Vec<TileId> =
        named.unwrap_or_else(|| view.manifest.all_tiles().copied().collect());
    tiles.sort_unstable();
    tiles.dedup();
    let total = tiles.len();
    let started = std::time::Instant::now();
    let (fetched, bytes) = state
        .federation
        .fetch_whole_slide(&decided, tiles)
        .await
        .map_err(remote_error)?;
    Ok(axum::Json(serde_json::json!({
        "slide_id": id,
        "tiles": total,
        "fetched": fetched,
        "bytes": bytes,
        "seconds": started.elapsed().as_secs_f64(),
        "local": false,
    })))
}
