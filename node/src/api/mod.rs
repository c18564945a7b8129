//! The HTTP API and web UI (axum). Handlers hold only an `Arc<ApiState>`; they read the
//! store and never write its tables (referral steps go through [`crate::referrals`], files
//! through ingest).
//!
//! Routes (all JSON unless stated):
//! - `GET /api/v1/node`: who this node is; `GET /api/v1/network`: peers and cache;
//!   `GET /api/v1/replicas`: replicas held here and named for this trust's slides;
//!   `GET|POST /api/v1/scrub`: the scrub's progress and last report; a pass now
//!   (operator only, [`Exposure::Operator`]).
//! - `GET /api/v1/slides`, `GET /api/v1/slides/{slide_id}`, `.../manifest` ([`slides`]).
//! - `GET /api/v1/slides/{slide_id}/access`: the audit trail about the slide, newest first.
//! - `GET /api/v1/slides/{slide_id}/{thumbnail|label|overview}`: associated image bytes.
//! - `POST /api/v1/slides/{slide_id}/cache`: fetch every tile of a shared slide into the
//!   cache now (verified), answering when done ([`tiles`]).
//! - `GET /api/v1/slides/{slide_id}/tiles/{tile_id}` and
//!   `GET /api/v1/slides/{slide_id}/levels/{level}/tiles/{col}/{row}`: tile bytes ([`tiles`]).
//! - `/api/v1/referrals...`, `/api/v1/directory`, `/api/v1/offers...`: the referral inbox
//!   and sent list, sending, steps, members' directories, the shared reporting queue
//!   ([`referrals`]).
//! - `POST /api/v1/research/query`: a research query asked of every member, each site's
//!   status and released counts ([`research`]).
//! - `/dicomweb/...`: QIDO-RS and WADO-RS ([`dicomweb`]).
//! - `GET /auth/login`, `GET /auth/callback`, `POST /auth/logout`, `GET /auth/me`: sign-on
//!   at the trust's OpenID provider and who is signed on ([`oidc`]).
//! - everything else: the embedded web UI ([`web`]).
//!
//! Every route acts for a [`requester::Requester`]: the trust, or the person its sign-on
//! proxy named or who signed on at its OpenID provider. Every route that shows a slide's content is decided for that requester
//! first ([`decide`], [`decide_metadata`], or the federation's `authorize_tiles`), and
//! reads the slide only with the decision's token ([`load_slide`] takes one; tile reads
//! take a `TilesDecided`). Content-addressed responses carry strong ETags (the id).
//! Every response carries the security headers of [`headers`]; [`tls`] serves it all over
//! HTTPS.

pub mod dicomweb;
pub mod headers;
pub mod oidc;
pub mod referrals;
pub mod requester;
pub mod research;
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

use crate::federation::{Federation, SlideDecided, TilesDecided};
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
    /// The answered referrals' annotation series, served over DICOMweb beside the slides.
    pub annotations: dicomweb::annotations::AnnotationCatalogue,
    /// Ingest of files received over the network (STOW-RS).
    pub incoming: Option<Arc<crate::ingest::incoming::Incoming>>,
    /// Who requests act for ([`requester`]).
    pub users: crate::config::UsersSection,
    /// With `[users] from = "proxy"`: how the sign-on proxy is recognised (none: no one is).
    pub proxy: Option<requester::ProxyTrust>,
    /// With `[users] from = "oidc"`: the OpenID provider and the sessions it opened.
    pub oidc: Option<Arc<oidc::Oidc>>,
    /// The token `/metrics` is served for (`[http] metrics_token`; empty: not served).
    pub metrics_token: String,
    /// Bounds on requests (`[http.limits]`); STOW-RS reads its body sizes here.
    pub limits: crate::config::HttpLimits,
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
            annotations: Default::default(),
            incoming: None,
            users: Default::default(),
            proxy: None,
            oidc: None,
            metrics_token: String::new(),
            limits: crate::config::HttpLimits::default(),
        }
    }

    /// The slide if it is already decoded in memory (no I/O, so callable from async code).
    pub fn cached_slide(&self, id: &SlideId) -> Option<Arc<SlideView>> {
        use std::sync::atomic::Ordering;
        let mut cache = self.manifests.lock().ok()?;
        // A shared slide was withdrawn (grant revoked): forget every decoded manifest.
        let now = self.federation.holdings.withdrawals.load(Ordering::SeqCst);
        if self.withdrawals_seen.swap(now, Ordering::SeqCst) != now {
            cache.clear();
        }
        cache.get(id).cloned()
    }

    /// The slide with this id, decoded and verified once, then cached. Reads the store on a
    /// miss: call from a blocking context. Undecided: handlers go through [`load_slide`]
    /// with a decision's token; only the DICOMweb catalogues (slides, and referrals'
    /// annotation series) read here, and their answers are decided per requester before
    /// anything is shown.
    pub(crate) fn slide(&self, id: &SlideId) -> Result<Arc<SlideView>, ApiError> {
        if let Some(view) = self.cached_slide(id) {
            return Ok(view);
        }
        let generation = self
            .federation
            .holdings
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
            .holdings
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

/// The slide a decision was made about, from memory when cached, else loaded on the
/// blocking pool. Taking the decision's token is the point: no handler shows a slide's
/// content without one.
pub async fn load_slide(
    state: &Arc<ApiState>,
    decided: &impl Decided,
) -> Result<Arc<SlideView>, ApiError> {
    let id = decided.decided_slide();
    if let Some(view) = state.cached_slide(&id) {
        return Ok(view);
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.slide(&id))
        .await
        .map_err(ApiError::internal)?
}

/// A decision's token ([`SlideDecided`] or [`TilesDecided`]): what reading a slide needs.
pub trait Decided {
    fn decided_slide(&self) -> SlideId;
}

impl Decided for SlideDecided {
    fn decided_slide(&self) -> SlideId {
        self.slide()
    }
}

impl Decided for TilesDecided {
    fn decided_slide(&self) -> SlideId {
        self.slide()
    }
}

/// Decides `actions` on `slide` for the requester (the trust itself, or the person its
/// sign-on named), local and shared slides alike ([`crate::access::decide`] through the
/// federation's gateway): refused 403, unknown 404; allowed, the decision is durable in the
/// audit log before the token is handed back.
pub async fn decide(
    state: &Arc<ApiState>,
    requester: &requester::Requester,
    slide: SlideId,
    actions: &[crate::consent::ConsentAction],
) -> Result<SlideDecided, ApiError> {
    if let Some(decided) = state
        .federation
        .decide_in_memory(&slide, requester.user(), actions)
    {
        return decided.map_err(tiles::remote_error);
    }
    let federation = state.federation.clone();
    let user = requester.user().cloned();
    let actions = actions.to_vec();
    tokio::task::spawn_blocking(move || federation.decide_slide(&slide, user.as_ref(), &actions))
        .await
        .map_err(ApiError::internal)?
        .map_err(tiles::remote_error)
}

/// Decides reading a slide's metadata ([`Federation::metadata_actions`]: viewing it, and
/// knowing who the patient is when this node holds the identified metadata).
pub async fn decide_metadata(
    state: &Arc<ApiState>,
    requester: &requester::Requester,
    slide: SlideId,
) -> Result<SlideDecided, ApiError> {
    let federation = state.federation.clone();
    let user = requester.user().cloned();
    tokio::task::spawn_blocking(move || {
        let actions = federation.metadata_actions(&slide)?;
        federation.decide_slide(&slide, user.as_ref(), &actions)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(tiles::remote_error)
}

/// What a route shows, and so what it must decide before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Nothing of any slide: who the node is, the network, the web UI's files.
    Public,
    /// Lists and searches: each slide in the answer is one the requester may view (and its
    /// identity only when they may know it); no decision is logged for leaving one out.
    Listing,
    /// One slide's content (metadata, tiles, images, instances, history): decided for the
    /// requester first, refused 403, and read only with the decision's token.
    Content,
    /// Files into the node's ingest (STOW-RS).
    Ingest,
    /// One referral, seen or acted on: decided for the requester on every slide it names
    /// (refer at the referring trust, answer at the receiving one), refused 403. Offering a
    /// case is decided as referring it; claiming one is decided by the offering trust.
    Referral,
    /// Counts over many slides, never one slide's content: each site decides which of its
    /// slides may be counted for the requester (action `query`) and releases the counts
    /// under its own disclosure control.
    Research,
    /// The node's own operation (replicas it holds, the scrub): slide ids and counts, never
    /// content, answered only to the trust itself (no person named: `slidemesh` on the
    /// node's machine without sign-on); a named person is refused 403 ([`operator_only`]).
    Operator,
}

/// Refuses an [`Exposure::Operator`] route to anyone but the trust itself.
pub(crate) fn operator_only(requester: &requester::Requester) -> Result<(), ApiError> {
    match requester.user() {
        None => Ok(()),
        Some(user) => Err(ApiError::forbidden(format!(
            "{user}: this is the node operator's view; run `slidemesh` on the node's machine"
        ))),
    }
}

/// One route: its path (as the router writes it, `/dicomweb` prefix included) and what
/// each of its methods exposes.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub path: String,
    pub methods: Vec<(axum::http::Method, Exposure)>,
}

pub(crate) type Route = (RouteInfo, axum::routing::MethodRouter<Arc<ApiState>>);

/// A route at `path` whose methods expose what `methods` says, handled by `handler`.
pub(crate) fn route(
    path: &str,
    methods: Vec<(axum::http::Method, Exposure)>,
    handler: axum::routing::MethodRouter<Arc<ApiState>>,
) -> Route {
    (
        RouteInfo {
            path: path.to_string(),
            methods,
        },
        handler,
    )
}

/// A GET-only route.
pub(crate) fn get_route(
    path: &str,
    exposure: Exposure,
    handler: axum::routing::MethodRouter<Arc<ApiState>>,
) -> Route {
    route(path, vec![(axum::http::Method::GET, exposure)], handler)
}

/// Every route of the API, described and handled: the router is built from this list, so
/// no route escapes [`route_table`], which the route-walking test requests as a refused
/// requester (every `Content` route must answer 403 or 404, never the slide).
fn routes() -> Vec<Route> {
    use Exposure::*;
    use axum::http::Method;
    use axum::routing::post;
    let get_ = get_route;
    let mut all = vec![
        get_("/api/v1/node", Public, get(slides::node_info)),
        get_("/api/v1/network", Public, get(slides::network_status)),
        get_("/api/v1/replicas", Operator, get(slides::replicas)),
        route(
            "/api/v1/scrub",
            vec![(Method::GET, Operator), (Method::POST, Operator)],
            get(slides::scrub_status).post(slides::scrub_now),
        ),
        get_("/metrics", Public, get(metrics)),
        get_("/api/v1/slides", Listing, get(slides::list)),
        get_("/api/v1/slides/{slide_id}", Content, get(slides::detail)),
        get_(
            "/api/v1/slides/{slide_id}/manifest",
            Content,
            get(slides::manifest),
        ),
        get_(
            "/api/v1/slides/{slide_id}/access",
            Content,
            get(slides::access_history),
        ),
        route(
            "/api/v1/slides/{slide_id}/cache",
            vec![(Method::POST, Content)],
            post(tiles::cache_whole_slide),
        ),
        get_(
            "/api/v1/slides/{slide_id}/{image}",
            Content,
            get(tiles::associated),
        ),
        get_(
            "/api/v1/slides/{slide_id}/levels/{level}/tiles/{col}/{row}",
            Content,
            get(tiles::level_tile),
        ),
        route(
            "/api/v1/slides/{slide_id}/levels/{level}/wanted",
            vec![(Method::POST, Content)],
            post(tiles::wanted),
        ),
        get_(
            "/api/v1/slides/{slide_id}/tiles/{tile_id}",
            Content,
            get(tiles::by_id),
        ),
        get_("/api/v1/directory", Public, get(referrals::directory)),
        route(
            "/api/v1/offers",
            vec![(Method::GET, Listing), (Method::POST, Referral)],
            get(referrals::offers).post(referrals::create_offer),
        ),
        route(
            "/api/v1/offers/{offer_id}/{step}",
            vec![(Method::POST, Referral)],
            post(referrals::claim_offer),
        ),
        route(
            "/api/v1/referrals",
            vec![(Method::GET, Listing), (Method::POST, Referral)],
            get(referrals::list).post(referrals::create),
        ),
        get_(
            "/api/v1/referrals/{referral_id}",
            Referral,
            get(referrals::detail),
        ),
        get_(
            "/api/v1/referrals/{referral_id}/annotations/{slide_id}",
            Referral,
            get(referrals::annotations),
        ),
        route(
            "/api/v1/referrals/{referral_id}/{step}",
            vec![(Method::GET, Referral), (Method::POST, Referral)],
            get(referrals::fhir).post(referrals::step),
        ),
        route(
            "/api/v1/research/query",
            vec![(Method::POST, Research)],
            post(research::query),
        ),
        route(
            "/api/v1/research/cohorts",
            vec![(Method::GET, Research), (Method::POST, Research)],
            get(research::cohort).post(research::build_cohort),
        ),
        get_("/api/{*rest}", Public, get(api_not_found)),
        get_("/auth/login", Public, get(oidc::login)),
        get_("/auth/callback", Public, get(oidc::callback)),
        route(
            "/auth/logout",
            vec![(Method::POST, Public)],
            post(oidc::logout),
        ),
        get_("/auth/me", Public, get(oidc::me)),
    ];
    all.extend(dicomweb::routes().into_iter().map(|(mut info, handler)| {
        info.path = format!("{}{}", dicomweb::urls::PREFIX, info.path);
        (info, handler)
    }));
    all
}

/// What every route exposes ([`Exposure`]), for tests and documentation.
pub fn route_table() -> Vec<RouteInfo> {
    routes().into_iter().map(|(info, _)| info).collect()
}

/// Builds the router. `cors_origins` lists the web origins allowed to call the API from a
/// browser (a DICOMweb viewer served elsewhere); `*` allows any. Empty: same origin only.
/// `https`: the node serves TLS itself (adds HSTS to the security headers).
pub fn router(state: Arc<ApiState>, cors_origins: &[String], https: bool) -> Router {
    let router = routes()
        .into_iter()
        .fold(Router::new(), |router, (info, handler)| {
            router.route(&info.path, handler)
        })
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
        // Not the CSRF token's header: only the node's own UI sends it.
        .allow_headers([header::ACCEPT, header::CONTENT_TYPE, header::IF_NONE_MATCH])
        .expose_headers([header::CONTENT_TYPE, header::ETAG, header::WARNING])
}

/// `GET /metrics`: the node's Prometheus metrics ([`crate::metrics`]): counts by trust,
/// action and outcome, never a slide, person or patient; still telling of when trusts
/// exchange referrals or run research, so served only to a scraper with the configured
/// bearer token (not found without one configured, 401 with a wrong one).
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if state.metrics_token.is_empty() {
        return Err(ApiError::not_found(
            "metrics are not served: set [http] metrics_token",
        ));
    }
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared in constant time: the token is a secret.
    let matches = presented.len() == state.metrics_token.len()
        && presented
            .bytes()
            .zip(state.metrics_token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0;
    if !matches {
        return Err(ApiError {
            status: axum::http::StatusCode::UNAUTHORIZED,
            message: "metrics need the scraper's bearer token".into(),
        });
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response())
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
