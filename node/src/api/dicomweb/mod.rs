//! DICOMweb (PS3.18) on the node's HTTP server, under `/dicomweb`: QIDO-RS searches,
//! WADO-RS retrieval (metadata, frames, bulk data, instances, rendered images), for local
//! slides and slides other trusts shared with this one alike, so a standard viewer pointed
//! at a trust's own node sees both; STOW-RS into the node's ingest ([`stow`]).
//!
//! - [`catalogue`]: slides as studies, series and instances, with each frame's tile id.
//! - [`annotations`]: answered referrals' marks as annotation series in the slides' studies.
//! - [`qido`]: matching and result attributes. [`wado`]: retrieval.
//! - [`accept`]: content negotiation (the node never transcodes: other syntaxes are 406).
//! - [`urls`]: links as the client sees the node; `crate::dicom_json`: the DICOM JSON model.

pub mod accept;
pub mod annotations;
pub mod catalogue;
pub mod qido;
pub mod rebuild;
pub mod render;
pub mod stow;
pub mod urls;
pub mod wado;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use super::requester::Requester;
use super::{ApiError, ApiState, Exposure, Route};
use qido::Level;

/// The DICOMweb routes, relative to [`urls::PREFIX`], with what each exposes.
pub(super) fn routes() -> Vec<Route> {
    use Exposure::*;
    use axum::http::Method;
    use axum::routing::{MethodRouter, any};
    const INSTANCE: &str = "/studies/{study}/series/{series}/instances/{instance}";
    // Every DICOMweb answer is private unless its handler says otherwise.
    let route = |path: &str,
                 methods: Vec<(Method, Exposure)>,
                 handler: MethodRouter<Arc<ApiState>>|
     -> Route {
        super::route(
            path,
            methods,
            handler.layer(axum::middleware::map_response(private_unless_said)),
        )
    };
    let get_ = |path: &str, exposure, handler| route(path, vec![(Method::GET, exposure)], handler);
    let search_and_store = vec![(Method::GET, Listing), (Method::POST, Ingest)];
    let retrieve_and_store = vec![(Method::GET, Content), (Method::POST, Ingest)];
    vec![
        route(
            "/studies",
            search_and_store,
            get(search_studies).post(stow::store_any),
        ),
        get_("/series", Listing, get(search_all_series)),
        get_("/instances", Listing, get(search_all_instances)),
        route(
            "/studies/{study}",
            retrieve_and_store,
            get(wado::retrieve_study).post(stow::store_in_study),
        ),
        get_(
            "/studies/{study}/metadata",
            Content,
            get(wado::study_metadata),
        ),
        get_(
            "/studies/{study}/thumbnail",
            Content,
            get(wado::study_thumbnail),
        ),
        get_("/studies/{study}/series", Listing, get(search_series)),
        get_(
            "/studies/{study}/instances",
            Listing,
            get(search_study_instances),
        ),
        get_(
            "/studies/{study}/series/{series}",
            Content,
            get(wado::retrieve_series),
        ),
        get_(
            "/studies/{study}/series/{series}/metadata",
            Content,
            get(wado::series_metadata),
        ),
        get_(
            "/studies/{study}/series/{series}/thumbnail",
            Content,
            get(wado::series_thumbnail),
        ),
        get_(
            "/studies/{study}/series/{series}/instances",
            Listing,
            get(search_series_instances),
        ),
        get_(INSTANCE, Content, get(wado::retrieve_instance)),
        get_(
            &format!("{INSTANCE}/metadata"),
            Content,
            get(wado::instance_metadata_route),
        ),
        get_(
            &format!("{INSTANCE}/rendered"),
            Content,
            get(wado::rendered_instance),
        ),
        get_(
            &format!("{INSTANCE}/thumbnail"),
            Content,
            get(wado::rendered_instance),
        ),
        get_(
            &format!("{INSTANCE}/frames/{{frames}}"),
            Content,
            get(wado::frames),
        ),
        get_(
            &format!("{INSTANCE}/frames/{{frames}}/rendered"),
            Content,
            get(wado::rendered_frame_route),
        ),
        get_(
            &format!("{INSTANCE}/bulkdata/{{tag}}"),
            Content,
            get(wado::bulkdata),
        ),
        get_("", Public, any(not_a_resource)),
        get_("/{*rest}", Public, any(not_a_resource)),
    ]
}

/// Answers that say nothing of caching get `private, no-cache`: what they hold of a shared
/// slide was decided for one person, so no shared cache (the sign-on proxy) may keep it for
/// another, and the browser asks again each time. Only responses that chose otherwise
/// (rendered images of this trust's own slides) are cached more widely.
pub(super) async fn private_unless_said(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-cache"));
    response
}

pub(super) async fn not_a_resource() -> ApiError {
    ApiError::not_found("no such DICOMweb resource; see /dicomweb/studies")
}

type Pairs = Query<Vec<(String, String)>>;

/// Which level a search answers at, within which study and series.
type Scope<'a> = (Level, Option<&'a str>, Option<&'a str>);

async fn search(
    state: &Arc<ApiState>,
    requester: &Requester,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    (level, study, series): Scope<'_>,
) -> Result<Response, ApiError> {
    accept::json(&accept::ranges(headers))?;
    let query = qido::Query::parse(pairs)?;
    let mut catalogue = catalogue::load(state).await?;
    // The one asking finds only the series whose metadata the owners' rules let them read
    // (results carry the patient's attributes), this trust's own included.
    let user = requester.user().cloned();
    let federation = state.federation.clone();
    catalogue = tokio::task::spawn_blocking(move || {
        catalogue
            .into_iter()
            .filter(|s| federation.user_may_read_metadata(&s.slide, user.as_ref()))
            .collect()
    })
    .await
    .map_err(ApiError::internal)?;
    catalogue.extend(annotations::visible(state, requester, study).await?);
    catalogue.sort_by(|a, b| {
        (a.study_uid.as_str(), a.series_uid.as_str())
            .cmp(&(b.study_uid.as_str(), b.series_uid.as_str()))
    });
    let urls = urls::Urls::from_headers(headers);
    let results = query.run(&catalogue, level, study, series, &urls);
    let mut response = axum::Json(Value::Array(results)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    // Results change as slides are ingested, shared and withdrawn, and are per person.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}

async fn search_studies(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(
        &state,
        &requester,
        &headers,
        &pairs,
        (Level::Study, None, None),
    )
    .await
}

async fn search_all_series(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(
        &state,
        &requester,
        &headers,
        &pairs,
        (Level::Series, None, None),
    )
    .await
}

async fn search_all_instances(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(
        &state,
        &requester,
        &headers,
        &pairs,
        (Level::Instance, None, None),
    )
    .await
}

async fn search_series(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(study): Path<String>,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(
        &state,
        &requester,
        &headers,
        &pairs,
        (Level::Series, Some(&study), None),
    )
    .await
}

async fn search_study_instances(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(study): Path<String>,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(
        &state,
        &requester,
        &headers,
        &pairs,
        (Level::Instance, Some(&study), None),
    )
    .await
}

async fn search_series_instances(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((study, series)): Path<(String, String)>,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(
        &state,
        &requester,
        &headers,
        &pairs,
        (Level::Instance, Some(&study), Some(&series)),
    )
    .await
}
