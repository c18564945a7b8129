//! Research queries this node's people ask of the whole co-operative: every roster member
//! (this node included) asked at once within `[research] deadline_ms`, each site's part
//! reported (`research::fanout`). This node answers its own part the way it answers a
//! member; each other site's answer is recorded in this node's audit log as received, and
//! in the answering site's as served.

use std::sync::Arc;

use slidemesh_protocol::query::{Query, QueryRequest};
use slidemesh_protocol::wire::{ControlRequest, ControlResponse};
use slidemesh_protocol::{SlideId, TrustCode, UserClaim};
use tracing::{Instrument, info_span};

use super::Federation;
use crate::access::{AuditEntry, Side};
use crate::research::answer::{self, Asker, Site};
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
        let now = now_unix();
        for (site, status) in &answered {
            if *site == own {
                continue;
            }
            self.holdings.audit.record(AuditEntry {
                time: now,
                side: Side::Received,
                peer: site.clone(),
                peer_id: self
                    .holdings
                    .membership
                    .peer_of(site)
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                user: user.as_ref().map(ToString::to_string),
                purpose: slidemesh_protocol::Purpose::Research.as_str().to_string(),
                slide: SlideId::from_bytes(*blake3::hash(text.as_bytes()).as_bytes()),
                action: "query".into(),
                what: format!("query {text}: {}", status.label()),
                allowed: matches!(status, SiteStatus::Answered(_)),
                rules: Vec::new(),
                policy_hash: String::new(),
                grant: None,
            });
        }
        FederatedAnswer {
            text,
            id,
            sites: answered,
        }
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
            let policy = holdings.policy.current();
            let roster = holdings.membership.roster();
            let answered = answer::answer(
                &Site {
                    store: &holdings.store,
                    index: &holdings.research.index,
                    policy: &policy,
                    roster: roster.as_deref(),
                    trust: &holdings.trust,
                    rules: &holdings.research.rules,
                },
                &Asker {
                    trust: &holdings.trust,
                    peer_id: "",
                    user: request.user.as_ref(),
                    ethics: request.ethics.as_deref(),
                },
                &query,
                &request.text,
                now_unix(),
            );
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

/// A site's response as a status.
fn status_of(response: ControlResponse) -> SiteStatus {
    match response {
        ControlResponse::Counts(counts) => SiteStatus::Answered(counts),
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
        _ => "an unexpected message",
    }
}
