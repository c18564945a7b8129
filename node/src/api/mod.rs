//! The HTTP API and web UI (axum). Handlers hold only an `Arc<ApiState>`; they read the
//! store and never write it.
//!
//! Routes (all JSON unless stated):
//! - `GET /api/v1/node`: who this node is; `GET /api/v1/network`: peers and cache.
//! - `GET /api/v1/slides`, `GET /api/v1/slides/{slide_id}`, `.../manifest` ([`slides`]).
//! - `GET /api/v1/slides/{slide_id}/access`: the audit trail about the slide, newest first.
//! - `GET /api/v1/slides/{slide_id}/{thumbnail|label|overview}`: associated image bytes.
//! - `POST /api/v1/slides/{slide_id}/cache`: fetch every tile of a shared slide into the
//!   cache now (verified), answering when done ([`tiles`]).
//! - `GET /api/v1/tiles/{tile_id}` and
//!   `GET /api/v1/slides/{slide_id}/levels/{level}/tiles/{col}/{row}`: tile bytes ([`tiles`]).
//! - `/dicomweb/...`: QIDO-RS and WADO-RS ([`dicomweb`]).
//! - everything else: the embedded web UI ([`web`]).
//!
//! Every route acts for a [`requester::Requester`]: the trust, or the person its sign-on
//! proxy named. Content-addressed responses carry strong ETags (the id) and immutable cache headers.
//! Every response carries the security headers of [`headers`]; [`tls`] serves it all over HTTPS.

pub mod dicomweb;
pub mod headers;
pub mod requester;
pub mod slides;
pub mod tiles;
pub mod tls;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use slidemesh_protocol::{DeidentifiedView, NodePublicKey, SlideId, SlideManifest, TrustCode};

use crate::federation::Federation;
use crate::store::locations::LocationCache;
use crate::store::reader::TileReader;
use crate::store::{Origin, SlideSummary, Store};

/// How many decoded manifests the server keeps in memory.
const MANIFEST_CACHE: usize = 64;

/// Shared state of the HTTP server.
pub struct ApiState {
    pub store: Arc<Store>,
    pub locations: LocationCache,
    pub reader: TileReader,
    pub trust: TrustCode,
    pub trust_name: String,
    pub node_key: NodePublicKey,
    /// Grants, shared slides, remote tiles and the network.
    pub federation: Arc<Federation>,
    /// Decoded manifests by slide id; manifests are immutable, so entries never go stale.
    manifests: Mutex<HashMap<SlideId, Arc<SlideView>>>,
    /// The federation's withdrawal count when `manifests` was last valid.
    withdrawals_seen: std::sync::atomic::AtomicU64,
    /// Slides as DICOM studies, series and instances, for DICOMweb.
    pub dicomweb: dicomweb::catalogue::Catalogue,
    /// Ingest of files received over the network (STOW-RS).
    pub incoming: Option<Arc<crate::ingest::incoming::Incoming>>,
    /// Who requests act for ([`requester`]).
    pub users: crate::config::UsersSection,
    /// With `[users] from = "proxy"`: how the sign-on proxy is recognised (none: no one is).
    pub proxy: Option<requester::ProxyTrust>,
}

/// A slide as handlers use it.
pub struct SlideView {
    pub id: SlideId,
    pub manifest: SlideManifest,
    pub summary: SlideSummary,
    /// The owner's signature over the manifest, as stored, for `/manifest`.
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
    /// For a shared slide its owner de-identified for this trust's grant: the owner's
    /// statement (which project the pseudonyms are for, and the view's own id).
    pub deidentified: Option<DeidentifiedView>,
}

impl SlideView {
    /// The id of the manifest this view shows: the slide's own, or its de-identified view's.
    pub fn manifest_id(&self) -> SlideId {
        self.deidentified.as_ref().map_or(self.id, |d| d.view)
    }

    /// The slide is this node's own: what it shows for this id can never change.
    pub fn is_local(&self) -> bool {
        self.summary.origin == Origin::Local
    }
}

impl ApiState {
    pub fn new(
        store: Arc<Store>,
        reader: TileReader,
        trust: TrustCode,
        trust_name: String,
        node_key: NodePublicKey,
        federation: Arc<Federation>,
    ) -> Self {
        Self {
            locations: LocationCache::new(store.clone()),
            store,
            reader,
            trust,
            trust_name,
            node_key,
            federation,
            manifests: Mutex::new(HashMap::new()),
            withdrawals_seen: std::sync::atomic::AtomicU64::new(0),
            dicomweb: Default::default(),
            incoming: None,
            users: Default::default(),
            proxy: None,
        }
    }

    /// The slide if it is already decoded in memory (no I/O, so callable from async code).
    pub fn cached_slide(&self, id: &SlideId) -> Option<Arc<SlideView>> {
        use std::sync::atomic::Ordering;
        let mut cache = self.manifests.lock().ok()?;
        // A shared slide was withdrawn (grant revoked): forget every decoded manifest.
        let now = self.federation.withdrawals.load(Ordering::SeqCst);
        if self.withdrawals_seen.swap(now, Ordering::SeqCst) != now {
            cache.clear();
        }
        cache.get(id).cloned()
    }

    /// The slide with this id, decoded and verified once, then cached. Reads the store on a
    /// miss: call from a blocking context.
    pub fn slide(&self, id: &SlideId) -> Result<Arc<SlideView>, ApiError> {
        if let Some(view) = self.cached_slide(id) {
            return Ok(view);
        }
        let generation = self
            .federation
            .withdrawals
            .load(std::sync::atomic::Ordering::SeqCst);
        let local = self.store.slide(id).map_err(ApiError::internal)?;
        let is_local = local.is_some();
        let (signed, summary, deidentified) = match local {
            Some(record) => {
                let summary = self
                    .store
                    .summary(id)
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::not_found(format!("no slide {id}")))?;
                (record.signed, summary, None)
            }
            None => {
                let remote = self
                    .store
                    .remote_slide(id)
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::not_found(format!("no slide {id}")))?;
                let deidentified = remote
                    .deidentified
                    .map(|statement| statement.verify())
                    .transpose()
                    .map_err(|e| {
                        ApiError::internal(format!(
                            "stored de-identified view of {id} does not verify: {e}"
                        ))
                    })?;
                (remote.signed, remote.summary, deidentified)
            }
        };
        let manifest = signed.verify().map_err(|e| {
            ApiError::internal(format!("stored manifest of {id} does not verify: {e}"))
        })?;
        // The federation checks every tile request against the same manifest: hand it over
        // verified rather than have the first tile request verify it again.
        self.federation
            .served_from_verified(id, &manifest, is_local, generation);
        let view = Arc::new(SlideView {
            id: *id,
            manifest,
            summary,
            signer: signed.signer,
            signature: signed.signature,
            deidentified,
        });
        if let Ok(mut cache) = self.manifests.lock() {
            if cache.len() >= MANIFEST_CACHE {
                cache.clear();
            }
            cache.insert(*id, view.clone());
        }
        Ok(view)
    }
}

/// Whether the request's `If-None-Match` names `etag` (already quoted), so a 304 will do.
pub fn etag_matches(request: &axum::http::HeaderMap, etag: &str) -> bool {
    request
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
}

/// The slide, from memory when cached, else loaded on the blocking pool.
pub async fn load_slide(state: &Arc<ApiState>, id: SlideId) -> Result<Arc<SlideView>, ApiError> {
    if let Some(view) = state.cached_slide(&id) {
        return Ok(view);
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.slide(&id))
        .await
        .map_err(ApiError::internal)?
}

/// Refuses (403) a named person whom the owner's rules do not let view a shared slide. The
/// trust itself, and anyone at all for this trust's own slides, pass.
pub async fn authorize_view(
    state: &Arc<ApiState>,
    requester: &requester::Requester,
    view: &SlideView,
) -> Result<(), ApiError> {
    if view.is_local() {
        return Ok(());
    }
    decide_shared(
        state,
        requester,
        view.id,
        Some(crate::consent::ConsentAction::View),
    )
    .await
}

/// Refuses (403) a named person whom the owner's rules do not let read a shared slide's
/// metadata: view it and, when this trust holds the identified manifest, see who the
/// patient is ([`Federation::metadata_actions`]).
pub async fn authorize_metadata(
    state: &Arc<ApiState>,
    requester: &requester::Requester,
    slide: SlideId,
) -> Result<(), ApiError> {
    decide_shared(state, requester, slide, None).await
}

/// Decides `action` (or the metadata actions) for the named person about a shared slide.
async fn decide_shared(
    state: &Arc<ApiState>,
    requester: &requester::Requester,
    slide: SlideId,
    action: Option<crate::consent::ConsentAction>,
) -> Result<(), ApiError> {
    let Some(user) = requester.user().cloned() else {
        return Ok(());
    };
    let federation = state.federation.clone();
    tokio::task::spawn_blocking(move || {
        let actions = match action {
            Some(action) => vec![action],
            None => federation.metadata_actions(&slide)?,
        };
        federation.decide_for_user(&slide, &user, &actions)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(tiles::remote_error)
}

/// Builds the router. `cors_origins` lists the web origins allowed to call the API from a
/// browser (a DICOMweb viewer served elsewhere); `*` allows any. Empty: same origin only.
/// `https`: the node serves TLS itself (adds HSTS to the security headers).
pub fn router(state: Arc<ApiState>, cors_origins: &[String], https: bool) -> Router {
    let router = Router::new()
        .route("/api/v1/node", get(slides::node_info))
        .route("/api/v1/network", get(slides::network_status))
        .route("/api/v1/slides", get(slides::list))
        .route("/api/v1/slides/{slide_id}", get(slides::detail))
        .route("/api/v1/slides/{slide_id}/manifest", get(slides::manifest))
        .route(
            "/api/v1/slides/{slide_id}/access",
            get(slides::access_history),
        )
        .route(
            "/api/v1/slides/{slide_id}/cache",
            axum::routing::post(tiles::cache_whole_slide),
        )
        .route("/api/v1/slides/{slide_id}/{image}", get(tiles::associated))
        .route(
            "/api/v1/slides/{slide_id}/levels/{level}/tiles/{col}/{row}",
            get(tiles::level_tile),
        )
        .route(
            "/api/v1/slides/{slide_id}/levels/{level}/wanted",
            axum::routing::post(tiles::wanted),
        )
        .route("/api/v1/tiles/{tile_id}", get(tiles::by_id))
        .route("/api/{*rest}", get(api_not_found))
        .nest(dicomweb::urls::PREFIX, dicomweb::routes())
        .fallback(web::asset)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            requester::identify,
        ))
        .with_state(state)
        .layer(cors(cors_origins));
    headers::secure(router, https).layer(tower_http::trace::TraceLayer::new_for_http())
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::ACCEPT, header::CONTENT_TYPE, header::IF_NONE_MATCH])
        .expose_headers([header::CONTENT_TYPE, header::ETAG, header::WARNING])
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API endpoint; see /api/v1/slides")
}

/// An error response: status plus a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
    /// A peer could not provide what a shared slide needs (down, refused, or sent wrong bytes).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            message: message.into(),
        }
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Parses an id from a path segment, or answers 400 naming the bad input.
pub fn parse_id<T: std::str::FromStr>(what: &str, raw: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("malformed {what} {raw:?}: {e}")))
}
