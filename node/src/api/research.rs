//! `POST /api/v1/research/query`: a research query asked of every member, for the person
//! the request acts for. The body is `{"query": TEXT | {JSON form}, "ethics": REF?}`; the
//! answer lists every site with its status (answered, refused, failed, timed out,
//! unreachable) and its released counts (a grouped answer leaves out each site's groups
//! below its `unlisted_below`), and the counts combined over the sites that answered, so a
//! partial answer says it is one (`complete: false`).
//!
//! `POST /api/v1/research/cohorts` (`{"project": REF, "query": TEXT | {JSON form}}`) asks
//! every other member for an approved project's cohort (the slides matching the query's
//! conditions, labelled by its group-by fields); `GET /api/v1/research/cohorts?project=REF`
//! lists the cohort as kept here, each slide with its site, patient pseudonym, labels and
//! whether it is open (its de-identified manifest fetched).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query as UrlQuery, State};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use slidemesh_protocol::query::{Query, QueryError, Released};

use super::requester::Requester;
use super::{ApiError, ApiState};
use crate::research::fanout::SiteStatus;
use crate::research::key_json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// The text form, or the JSON form.
    query: JsonValue,
    /// The research ethics approval the query is made under.
    #[serde(default)]
    ethics: Option<String>,
}

/// The query of a request body, or a 400 naming what is wrong (a caret under the offending
/// token of a text query).
fn parse(body: &QueryBody) -> Result<(Query, String), ApiError> {
    let query = match &body.query {
        JsonValue::String(text) => text.parse().map_err(|e: QueryError| {
            ApiError::bad_request(format!("not a query:\n{}", e.render(text)))
        })?,
        form @ JsonValue::Object(_) => {
            let query: Query = serde_json::from_value(form.clone())
                .map_err(|e| ApiError::bad_request(format!("not a query: {e}")))?;
            query
                .validate()
                .map_err(|e| ApiError::bad_request(format!("not a query: {}", e.message)))?;
            query
        }
        _ => {
            return Err(ApiError::bad_request(
                "\"query\" is the query's text or its JSON form",
            ));
        }
    };
    let text = query
        .canonical()
        .map_err(|e| ApiError::bad_request(format!("not a query: {}", e.message)))?;
    Ok((query, text))
}

pub async fn query(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Json(body): Json<QueryBody>,
) -> Result<Json<JsonValue>, ApiError> {
    let (query, text) = parse(&body)?;
    crate::research::answer::check_ethics(body.ethics.as_deref()).map_err(ApiError::bad_request)?;
    let answered = state
        .federation
        .research_query(&query, text, requester.0.clone(), body.ethics.clone())
        .await;
    let mut combined: BTreeMap<Vec<Option<String>>, (u64, Vec<String>)> = BTreeMap::new();
    let sites: Vec<JsonValue> = answered
        .sites
        .iter()
        .map(|(trust, status)| {
            site_json(trust, status, |site, counts| {
                let cells: Vec<JsonValue> = counts
                    .cells
                    .iter()
                    .map(|cell| {
                        let entry = combined.entry(cell.key.clone()).or_default();
                        match cell.count {
                            Released::Count(n) => {
                                entry.0 += n;
                                json!({ "key": key_json(&query.group_by, &cell.key), "count": n })
                            }
                            Released::Below(n) => {
                                entry.1.push(trust.to_string());
                                json!({ "key": key_json(&query.group_by, &cell.key), "below": n })
                            }
                        }
                    })
                    .collect();
                site["min_cell"] = json!(counts.min_cell);
                if !query.group_by.is_empty() {
                    // Groups below the threshold are left out, not shown as "<n".
                    site["unlisted_below"] = json!(counts.min_cell);
                }
                site["noise"] = json!(counts.noise);
                site["cells"] = json!(cells);
            })
        })
        .collect();
    let complete = answered
        .sites
        .iter()
        .all(|(_, s)| matches!(s, SiteStatus::Answered(_)));
    let combined: Vec<JsonValue> = combined
        .into_iter()
        .map(|(key, (count, below_at))| {
            json!({
                "key": key_json(&query.group_by, &key),
                "count": count,
                "below_at": below_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "query": answered.text,
        "id": answered.id,
        "group_by": query.group_by.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "complete": complete,
        "sites": sites,
        "combined": combined,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortBody {
    /// The project's ethics approval reference, as the sites recorded its approval.
    project: String,
    /// Selects the slides (its group-by fields are the labels), text or JSON form.
    query: JsonValue,
}

pub async fn build_cohort(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Json(body): Json<CohortBody>,
) -> Result<Json<JsonValue>, ApiError> {
    crate::research::cohort::check_project(&body.project).map_err(ApiError::bad_request)?;
    let (query, text) = parse(&QueryBody {
        query: body.query,
        ethics: None,
    })?;
    let answered = state
        .federation
        .research_cohort(body.project, &query, text, requester.0.clone())
        .await;
    let sites: Vec<JsonValue> = answered
        .sites
        .iter()
        .map(|(trust, status)| {
            site_json(trust, status, |site, slides| site["slides"] = json!(slides))
        })
        .collect();
    let slides: usize = answered
        .sites
        .iter()
        .map(|(_, s)| match s {
            SiteStatus::Answered(n) => *n,
            _ => 0,
        })
        .sum();
    Ok(Json(json!({
        "project": answered.project,
        "query": answered.text,
        "labels": query.group_by.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "complete": answered.sites.iter().all(|(_, s)| matches!(s, SiteStatus::Answered(_))),
        "sites": sites,
        "slides": slides,
    })))
}

#[derive(Deserialize)]
pub struct CohortParams {
    project: String,
}

pub async fn cohort(
    State(state): State<Arc<ApiState>>,
    _requester: Requester,
    UrlQuery(params): UrlQuery<CohortParams>,
) -> Result<Json<JsonValue>, ApiError> {
    let store = state.store.clone();
    let project = params.project.clone();
    let (entries, opened) = tokio::task::spawn_blocking(move || {
        let entries = store.cohort(&project)?;
        let opened = entries
            .iter()
            .map(|e| {
                store
                    .remote_slide(&e.slide)
                    .map(|r| r.is_some_and(|r| r.grant == e.grant && r.deidentified.is_some()))
            })
            .collect::<Result<Vec<bool>, _>>()?;
        Ok::<_, crate::store::StoreError>((entries, opened))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let members: Vec<JsonValue> = entries
        .iter()
        .zip(opened)
        .map(|(e, opened)| {
            json!({
                "site": e.owner.as_str(),
                "slide": e.slide.to_string(),
                "patient": e.patient,
                "labels": labels_json(&e.labels),
                "grant": e.grant.to_string(),
                "opened": opened,
            })
        })
        .collect();
    Ok(Json(
        json!({ "project": params.project, "members": members }),
    ))
}

/// A cohort slide's labels as JSON, as a query's group keys are shown.
fn labels_json(
    labels: &[(slidemesh_protocol::query::Field, Option<String>)],
) -> serde_json::Map<String, JsonValue> {
    let (fields, values): (Vec<_>, Vec<_>) = labels.iter().cloned().unzip();
    key_json(&fields, &values)
}

/// One site's part as JSON: its trust and status, why it did not answer, and what
/// `answered` adds from its answer.
fn site_json<T>(
    trust: &slidemesh_protocol::TrustCode,
    status: &SiteStatus<T>,
    answered: impl FnOnce(&mut JsonValue, &T),
) -> JsonValue {
    let mut site = json!({ "trust": trust.as_str(), "status": status.label() });
    match status {
        SiteStatus::Answered(answer) => answered(&mut site, answer),
        SiteStatus::Refused { reason }
        | SiteStatus::Failed { reason }
        | SiteStatus::Unreachable { reason } => site["reason"] = json!(reason),
        SiteStatus::TimedOut { after_ms } => {
            site["reason"] = json!(format!("no answer within {after_ms} ms"));
        }
    }
    site
}
