//! Referrals over HTTP: the inbox and sent list, a referral in full, sending one, and the
//! steps people take on it.
//!
//! - `GET /api/v1/referrals[?box=inbox|sent]`: the referrals the requester may see, newest
//!   first.
//! - `POST /api/v1/referrals`: refer slides of this trust to another trust (JSON body:
//!   `to`, `recipient` (`{"queue": "breast"}` or `{"specialist": "account"}`), `slides`,
//!   `question`, `urgency`, `report`, optional `expires_at` in Unix seconds).
//! - `GET /api/v1/directory`: every member's referral directory (queues, specialists, cover).
//! - `GET /api/v1/offers`: the co-operative's reporting queue (each queue's depth and
//!   turnaround, the offers); `POST /api/v1/offers`: offer a case of this trust to it;
//!   `POST /api/v1/offers/{id}/claim`: claim another trust's case (decided at the offerer).
//! - `GET /api/v1/referrals/{id}`: one referral, its history and any opinion.
//! - `GET /api/v1/referrals/{id}/fhir`: its opinion as a FHIR DiagnosticReport (404 until
//!   answered).
//! - `GET /api/v1/referrals/{id}/annotations/{slide}`: the opinion's marks on that slide as
//!   a DICOM Microscopy Bulk Simple Annotations file ([`referrals::dicom`]).
//! - `POST /api/v1/referrals/{id}/open|answer|close|withdraw`: a step (`answer` takes
//!   `{"text": ..., "diagnosis": {"code": SCTID, "display": ...}, "annotations": [{"slide":
//!   ..., "shape": "point|line|rectangle|polygon", "points": [[x, y], ...], "text": ...}]}`,
//!   points in the slide's full-resolution pixels, a rectangle's as two corners).
//!
//! Who may see or act on a referral is decided for every slide it names, with the action
//! [`referrals::visible_action`] says (refer at the referring trust, answer at the receiving
//! one), through the same gateway as every other decision; a list leaves out what the
//! requester may not see without logging anything. Writes go through
//! [`crate::referrals`], never to the store's tables from here.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use slidemesh_protocol::referral::{Coding, SNOMED_CT};
use slidemesh_protocol::{
    Annotation, Opinion, Point, Recipient, ReferralId, Shape, SlideId, Step, TrustCode, Urgency,
};

use super::requester::Requester;
use super::{ApiError, ApiState};
use crate::consent::ConsentAction;
use crate::referrals::{self, NewReferral, ReferralFailure};
use crate::store::now_unix;
use crate::store::referrals::StoredReferral;

/// How long a referral stays open when the form names no end, by urgency.
fn default_lifetime(urgency: Urgency) -> u64 {
    const DAY: u64 = 86_400;
    match urgency {
        Urgency::Routine => 28 * DAY,
        Urgency::Urgent => 14 * DAY,
        Urgency::TwoWeekWait => 14 * DAY,
    }
}

/// A referral as JSON.
pub fn referral_json(stored: &StoredReferral, now: u64) -> Value {
    let r = &stored.referral;
    let recipient = match &r.recipient {
        Recipient::Specialist(name) => json!({ "specialist": name }),
        Recipient::Queue(name) => json!({ "queue": name }),
    };
    let opinion = stored.opinion.as_ref().map(|(o, _)| {
        json!({
            "author": o.author.as_ref().map(ToString::to_string),
            "text": o.text,
            "diagnosis": o.diagnosis,
            "annotations": o.annotations.iter().map(AnnotationForm::of).collect::<Vec<_>>(),
        })
    });
    json!({
        "id": r.id,
        "direction": if stored.sent_here { "sent" } else { "received" },
        "from": r.from,
        "to": r.to,
        "referrer": r.referrer.as_ref().map(ToString::to_string),
        "recipient": recipient,
        "slides": r.slides,
        "grants": r.grants,
        "question": r.question,
        "urgency": r.urgency,
        "report": r.report,
        "status": stored.status.as_str(),
        "sent_at": r.sent_at,
        "expires_at": r.expires_at,
        "age_secs": now.saturating_sub(r.sent_at),
        "history": stored.history.iter().map(|h| json!({
            "status": h.status.as_str(),
            "at": h.at,
            "by": h.by,
            "user": h.user,
        })).collect::<Vec<_>>(),
        "opinion": opinion,
    })
}

fn failure(e: ReferralFailure) -> ApiError {
    match e {
        ReferralFailure::Invalid(m) => ApiError {
            status: StatusCode::CONFLICT,
            message: m,
        },
        ReferralFailure::NotFound(_) => ApiError::not_found(e.to_string()),
        ReferralFailure::Refused(m) => ApiError::forbidden(m),
        ReferralFailure::NotYet(m) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: m,
        },
        ReferralFailure::Store(e) => ApiError::internal(e),
    }
}

fn parse_slides(texts: &[String]) -> Result<Vec<SlideId>, ApiError> {
    texts
        .iter()
        .map(|s| {
            s.parse::<SlideId>()
                .map_err(|e| ApiError::bad_request(format!("invalid slide id {s:?}: {e}")))
        })
        .collect()
}

fn parse_id(text: &str) -> Result<ReferralId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid referral id {text:?}: {e}")))
}

/// Whether `user` may see referral `stored` (its grants still hold, it is addressed to them
/// ([`referrals::addressed_to`], with this trust's `directory`), and the owners' rules allow
/// [`referrals::visible_action`] on each of its slides), without logging a decision: for
/// lists and searches, which leave out what is not theirs. Blocking (reads the store).
pub(crate) fn may_see(
    store: &crate::store::Store,
    federation: &crate::federation::Federation,
    roster: Option<&slidemesh_protocol::Roster>,
    directory: Option<&slidemesh_protocol::Directory>,
    user: Option<&slidemesh_protocol::UserClaim>,
    stored: &StoredReferral,
    now: u64,
) -> bool {
    let action = referrals::visible_action(stored);
    referrals::addressed_to(stored, user, directory)
        && referrals::grants_hold(store, roster, stored, now).unwrap_or(false)
        && stored
            .referral
            .slides
            .iter()
            .all(|s| federation.user_may(s, user, action))
}

/// Decides seeing or acting on referral `stored` for the requester, logged per slide (403
/// when its grants no longer hold or the owners' rules refuse); the decisions' tokens read
/// its slides.
pub(crate) async fn decide_referral(
    state: &Arc<ApiState>,
    requester: &Requester,
    stored: &StoredReferral,
) -> Result<Vec<super::SlideDecided>, ApiError> {
    let (store, held) = (state.store.clone(), stored.clone());
    let roster = state.federation.holdings.membership.roster();
    let trust = state.federation.holdings.trust.clone();
    let user = requester.user().cloned();
    let (hold, addressed) = tokio::task::spawn_blocking(move || {
        let directory = referrals::own_directory(&store, &trust);
        let addressed = referrals::addressed_to(&held, user.as_ref(), directory.as_ref());
        Ok::<_, crate::store::StoreError>((
            referrals::grants_hold(&store, roster.as_deref(), &held, now_unix())?,
            addressed,
        ))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if !addressed {
        let to = match &stored.referral.recipient {
            Recipient::Specialist(name) => name.as_str(),
            Recipient::Queue(name) => name.as_str(),
        };
        return Err(ApiError::forbidden(format!(
            "referral {} is for {to} (and whoever covers them)",
            stored.referral.id
        )));
    }
    if !hold {
        return Err(ApiError::forbidden(format!(
            "referral {}'s grants no longer hold here (withdrawn, closed or ended)",
            stored.referral.id
        )));
    }
    let action = referrals::visible_action(stored);
    let mut decided = Vec::with_capacity(stored.referral.slides.len());
    for slide in &stored.referral.slides {
        decided.push(super::decide(state, requester, *slide, &[action]).await?);
    }
    Ok(decided)
}

async fn load(state: &Arc<ApiState>, id: ReferralId) -> Result<StoredReferral, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.referral(&id))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no referral {id} here")))
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// `inbox` (received), `sent`, or both when absent.
    #[serde(rename = "box")]
    which: Option<String>,
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let sent = match query.which.as_deref() {
        None | Some("all") => None,
        Some("inbox") => Some(false),
        Some("sent") => Some(true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "box must be inbox, sent or all, not {other:?}"
            )));
        }
    };
    let (store, federation, user) = (
        state.store.clone(),
        state.federation.clone(),
        requester.0.clone(),
    );
    let roster = state.federation.holdings.membership.roster();
    let trust = state.federation.holdings.trust.clone();
    let referrals = tokio::task::spawn_blocking(move || {
        let now = now_unix();
        let directory = referrals::own_directory(&store, &trust);
        let all = store.referrals()?;
        let shown: Vec<Value> = all
            .iter()
            .filter(|r| sent.is_none_or(|s| r.sent_here == s))
            .filter(|r| {
                may_see(
                    &store,
                    &federation,
                    roster.as_deref(),
                    directory.as_ref(),
                    user.as_ref(),
                    r,
                    now,
                )
            })
            .map(|r| referral_json(r, now))
            .collect();
        Ok::<_, crate::store::StoreError>(shown)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(json!({ "referrals": referrals })))
}

pub async fn detail(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = load(&state, parse_id(&id)?).await?;
    decide_referral(&state, &requester, &stored).await?;
    Ok(Json(referral_json(&stored, now_unix())))
}

/// Every member's referral directory, this trust's own included, by trust.
pub async fn directory(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let all = tokio::task::spawn_blocking(move || store.directories())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let trusts: Vec<Value> = all
        .into_iter()
        .map(|(_, d)| {
            json!({
                "trust": d.trust,
                "issued_at": d.issued_at,
                "queues": d.queues,
                "specialists": d.specialists,
            })
        })
        .collect();
    Ok(Json(json!({ "trusts": trusts })))
}

/// `GET .../{id}/annotations/{slide}`: the opinion's marks on one of the referral's slides
/// as a DICOM Microscopy Bulk Simple Annotations file (Part 10, `application/dicom`).
pub async fn annotations(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((id, slide)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let stored = load(&state, parse_id(&id)?).await?;
    let slide = parse_slides(&[slide])?[0];
    let decided = decide_referral(&state, &requester, &stored).await?;
    let token = decided
        .iter()
        .find(|d| d.slide() == slide)
        .ok_or_else(|| ApiError::not_found(format!("referral {id} does not name slide {slide}")))?;
    // The file names the patient: reading it is decided as reading the slide's metadata.
    super::decide_metadata(&state, &requester, slide).await?;
    let view = super::load_slide(&state, token).await?;
    let bytes = referrals::dicom::annotation_file(&stored, &slide, &view.manifest)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!("referral {id} has no annotations on slide {slide}"))
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/dicom")],
        bytes,
    )
        .into_response())
}

/// `GET .../{id}/fhir`: the opinion as a FHIR DiagnosticReport, for the trust's LIMS.
pub async fn fhir(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((id, what)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if what != "fhir" {
        return Err(ApiError::not_found(format!(
            "no referral resource {what:?}; fhir"
        )));
    }
    let stored = load(&state, parse_id(&id)?).await?;
    decide_referral(&state, &requester, &stored).await?;
    let report = referrals::fhir::diagnostic_report(&stored)
        .ok_or_else(|| ApiError::not_found(format!("referral {id} has no answer yet")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/fhir+json")],
        Json(report),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientForm {
    Specialist(String),
    Queue(String),
}

/// What a referral and an offer both describe: the case.
#[derive(Deserialize)]
pub struct CaseForm {
    slides: Vec<String>,
    question: String,
    urgency: String,
    #[serde(default)]
    report: String,
    expires_at: Option<u64>,
}

/// A case as checked: its slides, each with `refer` decided for the requester (offering a
/// case to the shared queue is decided as referring it), its urgency and its end.
struct Case {
    slides: Vec<SlideId>,
    question: String,
    urgency: Urgency,
    report: String,
    expires_at: u64,
}

impl CaseForm {
    async fn decide(
        self,
        state: &Arc<ApiState>,
        requester: &Requester,
        now: u64,
    ) -> Result<Case, ApiError> {
        let urgency: Urgency = self.urgency.parse().map_err(ApiError::bad_request)?;
        let slides = parse_slides(&self.slides)?;
        for slide in &slides {
            super::decide(state, requester, *slide, &[ConsentAction::Refer]).await?;
        }
        Ok(Case {
            slides,
            question: self.question,
            urgency,
            report: self.report,
            expires_at: self.expires_at.unwrap_or(now + default_lifetime(urgency)),
        })
    }
}

#[derive(Deserialize)]
pub struct ReferralForm {
    to: String,
    recipient: RecipientForm,
    #[serde(flatten)]
    case: CaseForm,
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Json(form): Json<ReferralForm>,
) -> Result<Response, ApiError> {
    let to: TrustCode = form
        .to
        .parse()
        .map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
    let now = now_unix();
    let case = form.case.decide(&state, &requester, now).await?;
    let roster = state
        .federation
        .holdings
        .membership
        .roster()
        .ok_or_else(|| failure(ReferralFailure::Invalid("this node has no roster".into())))?;
    let new = NewReferral {
        to,
        recipient: match form.recipient {
            RecipientForm::Specialist(s) => Recipient::Specialist(s),
            RecipientForm::Queue(q) => Recipient::Queue(q),
        },
        slides: case.slides,
        question: case.question,
        urgency: case.urgency,
        report: case.report,
        expires_at: case.expires_at,
        purpose: slidemesh_protocol::Purpose::SecondOpinion,
        nonce: None,
    };
    let federation = state.federation.clone();
    let user = requester.0.clone();
    let stored = tokio::task::spawn_blocking(move || {
        federation
            .holdings
            .referral_party()
            .send(&roster, user.as_ref(), new, now)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(failure)?;
    state.federation.holdings.outbox_queued.notify_one();
    tracing::info!(referral = %stored.referral.id, to = %stored.referral.to, slides = stored.referral.slides.len(), "referral sent");
    Ok((StatusCode::CREATED, Json(referral_json(&stored, now))).into_response())
}

#[derive(Deserialize, Default)]
pub struct StepForm {
    /// The opinion's text (`answer`).
    text: Option<String>,
    /// The coded diagnosis (`answer`): a SNOMED CT concept id and its display.
    diagnosis: Option<DiagnosisForm>,
    /// The marks drawn on the slides (`answer`).
    #[serde(default)]
    annotations: Vec<AnnotationForm>,
}

/// One annotation as the API reads and writes it: its slide, its shape's kind, its
/// vertices as `[x, y]` pairs in the full-resolution pixel matrix (a rectangle's top-left
/// and bottom-right corners) and its text.
#[derive(Deserialize, Serialize)]
pub struct AnnotationForm {
    slide: String,
    shape: String,
    points: Vec<[f32; 2]>,
    #[serde(default)]
    text: String,
}

impl AnnotationForm {
    pub fn of(a: &Annotation) -> AnnotationForm {
        let points = match &a.shape {
            Shape::Rectangle {
                top_left,
                bottom_right,
            } => vec![*top_left, *bottom_right],
            other => other.vertices(),
        };
        AnnotationForm {
            slide: a.slide.to_string(),
            shape: a.shape.kind().to_string(),
            points: points.iter().map(|p| [p.x, p.y]).collect(),
            text: a.text.clone(),
        }
    }

    pub(crate) fn read(self, index: usize) -> Result<Annotation, ApiError> {
        let bad = |why: String| ApiError::bad_request(format!("annotation {}: {why}", index + 1));
        let slide = self
            .slide
            .parse::<SlideId>()
            .map_err(|e| bad(format!("invalid slide id {:?}: {e}", self.slide)))?;
        let mut points = self.points.iter().map(|&[x, y]| Point::new(x, y));
        let shape = match (self.shape.as_str(), self.points.len()) {
            ("point", 1) => Shape::Point(points.next().expect("one point")),
            ("rectangle", 2) => Shape::Rectangle {
                top_left: points.next().expect("two points"),
                bottom_right: points.next().expect("two points"),
            },
            ("line", _) => Shape::Line(points.collect()),
            ("polygon", _) => Shape::Polygon(points.collect()),
            ("point" | "rectangle", n) => {
                return Err(bad(format!(
                    "a {} takes {} points, not {n}",
                    self.shape,
                    if self.shape == "point" { 1 } else { 2 }
                )));
            }
            (other, _) => {
                return Err(bad(format!(
                    "no shape {other:?}; point, line, rectangle or polygon"
                )));
            }
        };
        Ok(Annotation {
            slide,
            shape,
            text: self.text,
        })
    }
}

#[derive(Deserialize)]
pub struct DiagnosisForm {
    code: String,
    #[serde(default)]
    display: String,
}

pub async fn step(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((id, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    // Open, close and withdraw need no body; an answer's is JSON, whatever its type says.
    let form: StepForm = if body.iter().all(u8::is_ascii_whitespace) {
        StepForm::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the step's body is not valid: {e}")))?
    };
    let step = match step.as_str() {
        "open" => Step::Opened,
        "close" => Step::Closed,
        "withdraw" => Step::Withdrawn,
        "answer" => Step::Answered(Opinion {
            author: requester.0.clone(),
            text: form
                .text
                .ok_or_else(|| ApiError::bad_request("an answer needs its text"))?,
            diagnosis: form.diagnosis.map(|d| Coding {
                system: SNOMED_CT.to_string(),
                code: d.code,
                display: d.display,
            }),
            annotations: form
                .annotations
                .into_iter()
                .enumerate()
                .map(|(i, a)| a.read(i))
                .collect::<Result<_, _>>()?,
        }),
        other => {
            return Err(ApiError::not_found(format!(
                "no referral step {other:?}; open, answer, close or withdraw"
            )));
        }
    };
    let stored = load(&state, id).await?;
    decide_referral(&state, &requester, &stored).await?;
    let federation = state.federation.clone();
    let user = requester.0.clone();
    let now = now_unix();
    let stored = tokio::task::spawn_blocking(move || {
        federation
            .holdings
            .referral_party()
            .take_step(&id, user.as_ref(), step, now)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(failure)?;
    state.federation.holdings.outbox_queued.notify_one();
    Ok(Json(referral_json(&stored, now)))
}

/// An offered case as JSON.
fn offer_json(o: &crate::store::referrals::StoredOffer, now: u64) -> Value {
    let (taken_by, referral) = match (&o.outcome, &o.taken_by) {
        (Some((out, _)), _) => (out.taken_by.clone(), out.referral),
        (None, Some((taker, _, _))) => (Some(taker.clone()), None),
        (None, None) => (None, None),
    };
    json!({
        "id": o.offer.id,
        "from": o.offer.from,
        "queue": o.offer.queue,
        "slides": o.offer.slides,
        "question": o.offer.question,
        "urgency": o.offer.urgency,
        "offered_at": o.offer.offered_at,
        "expires_at": o.offer.expires_at,
        "age_secs": now.saturating_sub(o.offer.offered_at),
        "open": o.is_open(now),
        "taken_by": taken_by,
        "referral": referral,
        "claimed_here_at": o.claimed_here,
        "claim_refused": o.claim_refused,
    })
}

/// `GET /api/v1/offers`: the co-operative's reporting queue as this node knows it: each
/// queue's depth and turnaround, and the offers (open first).
pub async fn offers(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let (offers, referrals) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((store.offers()?, store.referrals()?))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let now = now_unix();
    let figures = referrals::queue::figures(&offers, &referrals, now);
    let mut listed: Vec<&crate::store::referrals::StoredOffer> = offers.iter().collect();
    listed.sort_by_key(|o| (!o.is_open(now), o.offer.offered_at));
    Ok(Json(json!({
        "trust": state.federation.holdings.trust,
        "queues": figures,
        "offers": listed.iter().map(|o| offer_json(o, now)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct OfferForm {
    queue: String,
    #[serde(flatten)]
    case: CaseForm,
}

/// `POST /api/v1/offers`: offers this trust's case to the co-operative's queue (decided
/// `refer` on every slide, as a referral is), announced to every member at once.
pub async fn create_offer(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Json(form): Json<OfferForm>,
) -> Result<Response, ApiError> {
    let now = now_unix();
    let case = form.case.decide(&state, &requester, now).await?;
    let new = referrals::queue::NewOffer {
        queue: form.queue,
        slides: case.slides,
        question: case.question,
        urgency: case.urgency,
        report: case.report,
        expires_at: case.expires_at,
    };
    let federation = state.federation.clone();
    let stored =
        tokio::task::spawn_blocking(move || federation.holdings.referral_party().offer(new, now))
            .await
            .map_err(ApiError::internal)?
            .map_err(failure)?;
    let _ = state
        .federation
        .network
        .publish(slidemesh_protocol::wire::Announcement::Offer(
            stored.signed.clone(),
        ))
        .await;
    Ok((StatusCode::CREATED, Json(offer_json(&stored, now))).into_response())
}

/// `POST /api/v1/offers/{id}/claim`: claims another trust's offered case for the requester
/// (queued for the offering trust's node, which decides `claim` and takes the first).
pub async fn claim_offer(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    Path((id, what)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if what != "claim" {
        return Err(ApiError::not_found(format!(
            "no offer step {what:?}; claim"
        )));
    }
    let id = parse_id(&id)?;
    let federation = state.federation.clone();
    let user = requester.0.clone();
    let now = now_unix();
    let stored = tokio::task::spawn_blocking(move || {
        federation
            .holdings
            .referral_party()
            .claim(&id, user.as_ref(), now)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(failure)?;
    state.federation.holdings.outbox_queued.notify_one();
    Ok((StatusCode::ACCEPTED, Json(offer_json(&stored, now))).into_response())
}
