//! STOW-RS (PS3.18 10.5): `POST /studies[/{study}]` with `multipart/related;
//! type="application/dicom"`. Parts are streamed to a staging folder as they arrive (a
//! slide can be gigabytes), then go through the same ingest as `slidemesh ingest`. The
//! answer lists what was stored and what failed, with the standard's failure reasons;
//! ingest's own message for the first failure is in a `Warning` header. Only a person or
//! service account with an ingest role may store (`requester::may_ingest`, checked before
//! the body is read), or the trust itself on a node without sign-on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use super::super::requester::{Requester, may_ingest};
use super::super::{ApiError, ApiState};
use super::accept;
use super::urls::Urls;
use crate::ingest::incoming::{self, ReceivedInstance};

/// PS3.4 status codes used as STOW-RS failure reasons.
const OUT_OF_RESOURCES: u16 = 0xA700;
const STUDY_MISMATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;

pub async fn store_any(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    may_ingest(&state.users, &requester)?;
    store(state, None, headers, body).await
}

pub async fn store_in_study(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    may_ingest(&state.users, &requester)?;
    store(state, Some(study), headers, body).await
}

/// A part's identity (when readable) and whether it was stored, else the failure reason
/// (a PS3.4 status) with ingest's message.
type Outcome = (Option<ReceivedInstance>, Result<(), (u16, String)>);

/// One received part: where it was written, or why it could not be.
struct Part {
    path: PathBuf,
    written: Result<(), String>,
}

/// Why a STOW-RS body could not be read, `parts` parts in: too large (413, saying which
/// limit), or malformed or broken off (400).
fn body_error(e: multer::Error, parts: usize) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "the request is larger than {limit} bytes, the most one STOW-RS request may \
                 carry here ([http.limits] stow_max_bytes); send fewer instances per request"
            ),
        },
        multer::Error::FieldSizeExceeded { limit, .. } => ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "part {} is larger than {limit} bytes, the most one instance may have here \
                 ([http.limits] stow_max_part_bytes)",
                parts + 1
            ),
        },
        e => ApiError::bad_request(format!("malformed multipart body after {parts} parts: {e}")),
    }
}

async fn store(
    state: Arc<ApiState>,
    study: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let incoming = state
        .incoming
        .clone()
        .ok_or_else(|| ApiError::internal("this server was started without ingest"))?;
    let boundary = multipart_boundary(&headers)?;
    let mut batch = incoming.batch().map_err(|e| {
        ApiError::internal(format!("cannot create a staging folder for STOW-RS: {e}"))
    })?;
    let limits = &state.limits;
    let sizes = multer::SizeLimit::new()
        .whole_stream(limits.stow_max_bytes)
        .per_field(limits.stow_max_part_bytes);
    let mut multipart = multer::Multipart::with_constraints(
        body.into_data_stream(),
        boundary,
        multer::Constraints::new().size_limit(sizes),
    );
    let mut parts = Vec::new();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(body_error(e, parts.len())),
        };
        if let Some(t) = field.content_type()
            && t.essence_str() != "application/dicom"
        {
            return Err(unsupported(format!(
                "part {} is {t}; this node stores application/dicom parts only",
                parts.len() + 1
            )));
        }
        let path = batch.next_path();
        let mut written = Ok(());
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ApiError::internal(format!("cannot stage a received part: {e}")))?;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if written.is_ok()
                        && let Err(e) = file.write_all(&chunk).await
                    {
                        // Keep reading (the client is still sending) but drop this part.
                        written = Err(format!("cannot store the part: {e}"));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(body_error(e, parts.len())),
            }
        }
        if written.is_ok()
            && let Err(e) = file.sync_all().await
        {
            written = Err(format!("cannot store the part: {e}"));
        }
        parts.push(Part { path, written });
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request("the request holds no DICOM parts"));
    }
    let urls = Urls::from_headers(&headers);
    tokio::task::spawn_blocking(move || {
        // Identify every part, refuse those of another study, ingest the rest.
        let mut outcomes: Vec<Outcome> = Vec::new();
        for part in &parts {
            let outcome = match &part.written {
                Err(e) => (None, Err((OUT_OF_RESOURCES, e.clone()))),
                Ok(()) => match incoming::identify(&part.path) {
                    Err(e) => (None, Err((CANNOT_UNDERSTAND, e))),
                    Ok(id) if study.as_deref().is_some_and(|s| s != id.study_uid) => {
                        let message = format!(
                            "instance {} belongs to study {}, not {}",
                            id.sop_instance_uid,
                            id.study_uid,
                            study.as_deref().unwrap_or_default()
                        );
                        (Some(id), Err((STUDY_MISMATCH, message)))
                    }
                    Ok(id) => (Some(id), Ok(())),
                },
            };
            if outcome.1.is_err() {
                let _ = std::fs::remove_file(&part.path);
            }
            outcomes.push(outcome);
        }
        let report = incoming.ingest(batch);
        let failed_paths: HashMap<PathBuf, String> = report
            .failures
            .iter()
            .filter_map(|f| Some((f.path.clone()?, f.error.clone())))
            .collect();
        let failed_series: HashMap<String, String> = report
            .failures
            .iter()
            .filter_map(|f| Some((f.series_uid.clone()?, f.error.clone())))
            .collect();
        for (part, outcome) in parts.iter().zip(outcomes.iter_mut()) {
            if outcome.1.is_err() {
                continue;
            }
            let series = outcome.0.as_ref().map(|i| i.series_uid.as_str());
            if let Some(e) = failed_paths.get(&part.path) {
                outcome.1 = Err((CANNOT_UNDERSTAND, e.clone()));
            } else if let Some(e) = series.and_then(|s| failed_series.get(s)) {
                outcome.1 = Err((CANNOT_UNDERSTAND, e.clone()));
            }
        }
        Ok(answer(&outcomes, study.as_deref(), &urls))
    })
    .await
    .map_err(ApiError::internal)?
}

fn answer(outcomes: &[Outcome], study: Option<&str>, urls: &Urls) -> Response {
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    let mut first_error = None;
    for (id, outcome) in outcomes {
        let mut item = Map::new();
        if let Some(id) = id {
            item.insert(
                "00081150".into(),
                json!({"vr": "UI", "Value": [id.sop_class_uid]}),
            );
            item.insert(
                "00081155".into(),
                json!({"vr": "UI", "Value": [id.sop_instance_uid]}),
            );
        }
        match (outcome, id) {
            (Ok(()), Some(id)) => {
                let url = urls.instance(&id.study_uid, &id.series_uid, &id.sop_instance_uid);
                item.insert("00081190".into(), json!({"vr": "UR", "Value": [url]}));
                stored.push(Value::Object(item));
            }
            (Err((reason, message)), _) => {
                tracing::warn!(reason = format!("{reason:#06X}"), %message, "STOW-RS part not stored");
                first_error.get_or_insert_with(|| message.clone());
                item.insert("00081197".into(), json!({"vr": "US", "Value": [reason]}));
                failed.push(Value::Object(item));
            }
            (Ok(()), None) => {}
        }
    }
    let mut body = Map::new();
    let study_uid = study.map(str::to_string).or_else(|| {
        outcomes.iter().find_map(|(id, o)| {
            o.is_ok()
                .then(|| id.as_ref().map(|i| i.study_uid.clone()))?
        })
    });
    if let Some(study) = study_uid {
        body.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [urls.study(&study)]}),
        );
    }
    if !stored.is_empty() {
        body.insert("00081199".into(), json!({"vr": "SQ", "Value": stored}));
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({"vr": "SQ", "Value": failed}));
    }
    // PS3.18 10.5.3.1: all stored 200, some 202, none 409.
    let status = match (stored.is_empty(), failed.is_empty()) {
        (_, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, false) => StatusCode::CONFLICT,
    };
    let mut response = (status, axum::Json(Value::Object(body))).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    if let Some(message) = first_error {
        let text: String = message
            .chars()
            .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&format!("299 slidemesh \"{text}\"")) {
            headers.insert(header::WARNING, value);
        }
    }
    response
}

fn multipart_boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = accept::parse_media_type(content_type)
        .filter(|m| m.media_type == "multipart/related")
        .ok_or_else(|| {
            unsupported(format!(
                "STOW-RS takes multipart/related; type=\"application/dicom\", not {content_type:?}"
            ))
        })?;
    if media
        .param("type")
        .is_some_and(|t| t != "application/dicom")
    {
        return Err(unsupported(
            "this node stores application/dicom parts only (no metadata + bulk data form)",
        ));
    }
    media
        .param("boundary")
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("multipart/related without a boundary"))
}

fn unsupported(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message: message.into(),
    }
}
