//! Research queries this node's people ask of the whole co-operative: every roster member
//! (this node included) asked at once within `[research] deadline_ms`, each site's part
//! reported (`research::fanout`). This node answers its own part the way it answers a
//! member; each other site's answer is recorded in this node's audit log as received, and
//! in the answering site's as served.

use std::sync::Arc;

use futures::StreamExt;
use slidemesh_protocol::query::{CohortMember, CohortRequest, Field, Query, QueryRequest};
use slidemesh_protocol::wire::{ControlRequest, ControlResponse};
use slidemesh_protocol::{SignedGrant, TrustCode, UserClaim};
use tracing::{Instrument, info_span};

use super::Federation;
use crate::access::Side;
use crate::consent::ConsentAction;
use crate::research::answer::{self, Asker};
use crate::research::cohort;
use crate::research::fanout::{SiteStatus, ask_all};
use crate::store::now_unix;

/// A query asked of every member, with each site's part.
#[derive(Debug, Clone)]
pub struct FederatedAnswer {
    /// The canonical text every site answered.
    pub text: String,
    /// BLAKE3 of the text: the id audit logs name the query by.
    pub id: String,
    pub sites: Vec<(TrustCode, SiteStatus)>,
}

impl Federation {
    /// Asks every member `query` (canonical text `text`) for `user` under `ethics`.
    pub async fn research_query(
        self: &Arc<Self>,
        query: &Query,
        text: String,
        user: Option<UserClaim>,
        ethics: Option<String>,
    ) -> FederatedAnswer {
        let own = self.holdings.trust.clone();
        let id = blake3::hash(text.as_bytes()).to_hex().to_string();
        let mut sites: Vec<TrustCode> = self
            .holdings
            .membership
            .roster()
            .map(|r| r.members.iter().map(|m| m.trust.clone()).collect())
            .unwrap_or_default();
        if !sites.contains(&own) {
            sites.insert(0, own.clone());
        }
        let request = QueryRequest {
            text: text.clone(),
            user: user.clone(),
            ethics: ethics.clone(),
        };
        let deadline = self.holdings.research.deadline;
        let answered = ask_all(sites, deadline, |site| {
            let fed = self.clone();
            let request = request.clone();
            let query = query.clone();
            let span = info_span!("research_query", peer = %site, query = %id);
            async move {
                if site == fed.holdings.trust {
                    fed.answer_own(query, request).await
                } else {
                    fed.ask_member(&site, request).await
                }
            }
            .instrument(span)
        })
        .await;
        for (site, status) in &answered {
            if *site == own {
                continue;
            }
            self.record_research_received(
                site,
                user.as_ref(),
                &text,
                ConsentAction::Query,
                format!("query {text}: {}", status.label()),
                matches!(status, SiteStatus::Answered(_)),
            );
        }
        FederatedAnswer {
            text,
            id,
            sites: answered,
        }
    }

    /// Records what `site` answered this node's people (`action` on the query `text`) in
    /// this node's audit log, as received; the query's id stands in the slide field.
    fn record_research_received(
        &self,
        site: &TrustCode,
        user: Option<&UserClaim>,
        text: &str,
        action: ConsentAction,
        what: String,
        allowed: bool,
    ) {
        let peer_id = self
            .holdings
            .membership
            .peer_of(site)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let mut entry = crate::research::request_entry(
            Side::Received,
            (site, &peer_id),
            user,
            action,
            text,
            what,
            now_unix(),
        );
        entry.allowed = allowed;
        self.holdings.audit.record(entry);
    }

    /// This node's own part, answered as it answers a member.
    async fn answer_own(self: &Arc<Self>, query: Query, request: QueryRequest) -> SiteStatus {
        let holdings = self.holdings.clone();
        let Ok(turn) = holdings.research.answering.clone().acquire_owned().await else {
            return SiteStatus::Failed {
                reason: "this node is shutting down".into(),
            };
        };
        let answered = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let answered = holdings.with_research_site(|site| {
                answer::answer(
                    site,
                    &Asker {
                        trust: &holdings.trust,
                        peer_id: "",
                        user: request.user.as_ref(),
                        ethics: request.ethics.as_deref(),
                    },
                    &query,
                    &request.text,
                    now_unix(),
                )
            });
            holdings.audit.record(answered.entry);
            answered.outcome
        })
        .await;
        match answered {
            Ok(Ok(counts)) => SiteStatus::Answered(counts),
            Ok(Err(refusal)) => status_of(refusal.into()),
            Err(e) => SiteStatus::Failed {
                reason: format!("the answering task failed: {e}"),
            },
        }
    }

    /// A member's part, over the network.
    async fn ask_member(&self, site: &TrustCode, request: QueryRequest) -> SiteStatus {
        let Some(peer) = self.holdings.membership.peer_of(site) else {
            return SiteStatus::Unreachable {
                reason: format!("{site} has no node in the roster"),
            };
        };
        match self
            .network
            .request(peer, ControlRequest::Query(request))
            .await
        {
            Ok(response) => status_of(response),
            Err(e) => SiteStatus::Unreachable {
                reason: e.to_string(),
            },
        }
    }
}

/// An approved project's cohort asked of every other member, with each site's part (how
/// many slides it released).
#[derive(Debug, Clone)]
pub struct FederatedCohort {
    pub project: String,
    /// The canonical text of the query that selected the slides.
    pub text: String,
    pub sites: Vec<(TrustCode, SiteStatus<usize>)>,
}

/// Manifests of a cohort's new slides fetched at once while the request waits.
const COHORT_MANIFESTS_AT_ONCE: usize = 4;

impl Federation {
    /// Asks every other member for `project`'s cohort of the slides matching `query`
    /// (canonical text `text`) for `user`. What each site releases is checked, kept
    /// (`cohorts_v1`, with its grants) and opened: each new slide's de-identified manifest is
    /// fetched before the answer returns (one that fails is fetched again by the background
    /// loop that looks for grants without a slide). This trust's own slides are not part of
    /// it: its own people open them under its own rules.
    pub async fn research_cohort(
        self: &Arc<Self>,
        project: String,
        query: &Query,
        text: String,
        user: Option<UserClaim>,
    ) -> FederatedCohort {
        let own = self.holdings.trust.clone();
        let sites: Vec<TrustCode> = self
            .holdings
            .membership
            .roster()
            .map(|r| {
                r.members
                    .iter()
                    .map(|m| m.trust.clone())
                    .filter(|t| *t != own)
                    .collect()
            })
            .unwrap_or_default();
        let request = CohortRequest {
            project: project.clone(),
            text: text.clone(),
            user: user.clone(),
        };
        let labels = query.group_by.clone();
        let answered = ask_all(sites, self.holdings.research.cohort_deadline, |site| {
            let fed = self.clone();
            let request = request.clone();
            let labels = labels.clone();
            let span = info_span!("research_cohort", peer = %site, project = %request.project);
            async move { fed.cohort_from(&site, request, &labels).await }.instrument(span)
        })
        .await;
        for (site, status) in &answered {
            let what = match status {
                SiteStatus::Answered(n) => format!("{n} slides received"),
                other => other.label().to_string(),
            };
            self.record_research_received(
                site,
                user.as_ref(),
                &text,
                ConsentAction::ReceiveCohort,
                format!("cohort for project {project}: {text}: {what}"),
                matches!(status, SiteStatus::Answered(_)),
            );
        }
        FederatedCohort {
            project,
            text,
            sites: answered,
        }
    }

    /// One member's part of a cohort: asked, checked, kept, opened.
    async fn cohort_from(
        self: &Arc<Self>,
        site: &TrustCode,
        request: CohortRequest,
        labels: &[Field],
    ) -> SiteStatus<usize> {
        let Some(peer) = self.holdings.membership.peer_of(site) else {
            return SiteStatus::Unreachable {
                reason: format!("{site} has no node in the roster"),
            };
        };
        let project = request.project.clone();
        let members = match self
            .network
            .request(peer, ControlRequest::Cohort(request))
            .await
        {
            Ok(ControlResponse::Cohort(members)) => members,
            Ok(other) => return not_answered(other),
            Err(e) => {
                return SiteStatus::Unreachable {
                    reason: e.to_string(),
                };
            }
        };
        let fed = self.clone();
        let (site_, labels) = (site.clone(), labels.to_vec());
        let kept = tokio::task::spawn_blocking(move || {
            fed.keep_cohort(&site_, &project, &labels, members)
        })
        .await;
        let to_open = match kept {
            Ok(Ok(to_open)) => to_open,
            Ok(Err(reason)) => {
                tracing::warn!(%site, %reason, "cohort refused");
                return SiteStatus::Failed { reason };
            }
            Err(e) => {
                return SiteStatus::Failed {
                    reason: format!("the keeping task failed: {e}"),
                };
            }
        };
        let released = to_open.released;
        futures::stream::iter(to_open.new_grants)
            .for_each_concurrent(COHORT_MANIFESTS_AT_ONCE, |signed| async move {
                if let Err(e) = self.fetch_manifest(&signed, false).await {
                    tracing::warn!(grant = %signed.id(), error = %e, "cannot open a cohort slide yet");
                }
            })
            .await;
        SiteStatus::Answered(released)
    }

    /// Checks what `site` released to `project` and keeps it; answers how many slides it
    /// released and the grants of those this node has not opened yet. A release that is not
    /// what was asked for (a grant not signed by the site's roster key, for another trust,
    /// slide or project, labels that do not fit) is refused whole, nothing kept.
    fn keep_cohort(
        &self,
        site: &TrustCode,
        project: &str,
        labels: &[Field],
        members: Vec<CohortMember>,
    ) -> Result<ToOpen, String> {
        let key = self
            .holdings
            .membership
            .node_key_of(site)
            .ok_or_else(|| format!("{site} has no key in the roster"))?;
        let checked = cohort::check_released(
            &cohort::Release {
                site,
                site_key: &key,
                requester: &self.holdings.trust,
                project,
                labels,
            },
            members,
            now_unix(),
        )?;
        let mut new_grants = Vec::new();
        for grant in &checked.grants {
            // Opened under this grant already: nothing to do. Held under another (shared
            // for care, say): left as it is, since this node keeps one view of a slide and
            // a cohort must not turn a clinician's view into a de-identified one.
            let held = self
                .holdings
                .store
                .remote_slide(&grant.grant.slide)
                .map_err(|e| format!("reading held slide {}: {e}", grant.grant.slide))?;
            if held.is_none() {
                new_grants.push(grant.signed.clone());
            }
        }
        let (entries, grants) = (checked.entries, checked.grants);
        self.holdings
            .store
            .put_cohort(project, site, &entries, &grants)
            .map_err(|e| format!("cannot keep the cohort: {e}"))?;
        Ok(ToOpen {
            released: entries.len(),
            new_grants,
        })
    }
}

/// What a site released, and which of its slides are still to be opened.
struct ToOpen {
    released: usize,
    new_grants: Vec<SignedGrant>,
}

/// A site's response as a status.
fn status_of(response: ControlResponse) -> SiteStatus {
    match response {
        ControlResponse::Counts(counts) => SiteStatus::Answered(counts),
        other => not_answered(other),
    }
}

/// A response that is not the answer asked for, as a status.
fn not_answered<T>(response: ControlResponse) -> SiteStatus<T> {
    match response {
        ControlResponse::Denied { reason } => SiteStatus::Refused { reason },
        ControlResponse::Failed { reason } => SiteStatus::Failed { reason },
        other => SiteStatus::Failed {
            reason: format!("answered with something else: {}", kind(&other)),
        },
    }
}

fn kind(response: &ControlResponse) -> &'static str {
    match response {
        ControlResponse::Manifest { .. } | ControlResponse::DeidentifiedManifest { .. } => {
            "a manifest"
        }
        ControlResponse::NotFound => "not found",
        ControlResponse::Counts(_) => "counts",
        ControlResponse::Cohort(_) => "a cohort",
        _ => "an unexpected message",
    }
}
