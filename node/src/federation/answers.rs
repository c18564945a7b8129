//! What this node answers peers: manifests and tile batches under grants (every decision
//! [`access::decide`]'s, every allowed one durable in the audit log before anything
//! leaves), grants and revocations delivered to it, co-signatures of members' audit
//! checkpoints, roster versions. [`PeerAnswers`] holds no network handle: it is built
//! before the network, which answers with it; what it leaves for the fetching side (a
//! manifest to fetch for a grant received, a roster version to verify and adopt) goes as
//! a [`Followup`] on a channel the background loops read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::PeerId;
use slidemesh_protocol::wire::{Announcement, ControlRequest, ControlResponse, TileRequest};
use slidemesh_protocol::{
    Action, GrantId, SignedGrant, SignedRevocation, SignedRoster, SlideId, TileId, UserClaim,
};
use tokio::sync::mpsc;
use tracing::{Instrument, info, warn};

use super::holdings::{Holdings, OwnersRules};
use super::{Faults, Refusal};
use crate::access;
use crate::audit::{AuditEntry, Pending, Side};
use crate::consent::ConsentAction;
use crate::net::{Inbound, ReceiptFuture};
use crate::store::federation::StoredGrant;
use crate::store::now_unix;

/// How often the same refusal of a peer's request is logged again.
const SERVED_REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Work an answer leaves for the fetching side.
#[derive(Debug)]
pub enum Followup {
    /// A grant was received and stored: fetch its slide's manifest from the owner.
    FetchManifest(SignedGrant),
    /// A member announced a roster version: verify it against the one in force, adopt it.
    OfferRoster { from: PeerId, signed: SignedRoster },
    /// Something to announce to every member now (an offered case's outcome).
    Announce(Announcement),
}

/// Answers peers' requests with this node's holdings.
pub struct PeerAnswers {
    pub(crate) holdings: Arc<Holdings>,
    /// When each distinct refusal of a peer was last logged ([`Self::refusal_log_due`]).
    refusals_logged: Mutex<HashMap<blake3::Hash, std::time::Instant>>,
    /// Test and testnet fault switches.
    faults: Faults,
    followups: mpsc::UnboundedSender<Followup>,
    /// Work spawned for peers, awaited at shutdown with the fetching side's.
    tasks: tokio_util::task::TaskTracker,
}

impl PeerAnswers {
    pub fn new(
        holdings: Arc<Holdings>,
        faults: Faults,
        followups: mpsc::UnboundedSender<Followup>,
        tasks: tokio_util::task::TaskTracker,
    ) -> Self {
        Self {
            holdings,
            refusals_logged: Mutex::new(HashMap::new()),
            faults,
            followups,
            tasks,
        }
    }

    /// May `peer` do each of `actions` on `slide` under `grant`? Decided by
    /// [`access::decide`] with the owner's rules (this node's own for its slides, the owner's
    /// signed statement for a copy). `Err` says why not; `Ok` carries the allowed decisions
    /// on their way into the audit log: nothing may leave before they are durable
    /// ([`PeerAnswers::sign_receipt`] waits for them).
    pub(super) fn authorize(
        &self,
        peer: &PeerId,
        slide: &SlideId,
        grant: &SignedGrant,
        user: Option<&UserClaim>,
        actions: &[ConsentAction],
        what: &str,
    ) -> Result<Vec<Pending>, Refusal> {
        let denied = Refusal::Denied;
        let roster = self
            .holdings
            .membership
            .roster()
            .ok_or_else(|| denied("this node has no roster".into()))?;
        let requester = self
            .holdings
            .membership
            .trust_of(peer)
            .ok_or_else(|| denied(format!("{peer} is not a member")))?;
        let served = self.holdings.served_slide(slide)?;
        // The owner decides with its own policy, recorded consent and revocations. A node
        // serving a copy decides with the owner's signed statement of policy, consent and
        // the grants that hold, never with its own rules.
        let (policy, consent, owners) = if served.local {
            let consent = self
                .holdings
                .store
                .slide_consent(slide, &served.series_uid)
                .map_err(|e| Refusal::Failed(format!("cannot read the slide's consent: {e}")))?;
            (self.holdings.policy.current(), consent, None)
        } else {
            let owners = self.holdings.owners_rules(slide)?;
            (owners.policy.clone(), owners.consent.clone(), Some(owners))
        };
        let rules = access::Rules {
            policy: &policy,
            consent: &consent,
            owner: &served.owner,
            roster: Some(&roster),
            listed: owners.as_ref().map(OwnersRules::listed),
        };
        // The slide's owner asking a copy for its own tiles back (repairing its original)
        // decides as its own node; anyone else on the grant it presents.
        let basis = if requester == served.owner && !served.local {
            access::Basis::OwnSlide
        } else {
            access::Basis::Grant {
                signed: grant,
                revocations: self
                    .holdings
                    .store
                    .revocations(&grant.id())
                    .map_err(|e| e.to_string()),
            }
        };
        let verdict = access::decide(
            &rules,
            access::Subject {
                trust: &requester,
                user,
            },
            basis,
            *slide,
            actions,
            now_unix(),
        );
        info!(%peer, %slide, trust = %requester, user = ?user.map(|u| u.to_string()), purpose = %verdict.purpose, allowed = verdict.allowed(), decisions = ?verdict.decisions, "consent decision");
        let entries = verdict.entries(Side::Served, &requester, &peer.to_string(), what);
        match verdict.outcome {
            Ok(()) => Ok(entries
                .into_iter()
                .map(|e| self.holdings.audit.record_pending(e))
                .collect()),
            Err(refusal) => {
                // The same refusal again (a grantee asking until it gives up) is logged once
                // an hour, not once per ask.
                for entry in entries {
                    if self.refusal_log_due(&entry) {
                        self.holdings.audit.record(entry);
                    }
                }
                Err(refusal)
            }
        }
    }

    /// Whether a refusal to a peer is due in the log: the same requester, person, slide,
    /// grant, action and rules are logged once per [`SERVED_REFUSAL_LOG_EVERY`].
    fn refusal_log_due(&self, entry: &AuditEntry) -> bool {
        let key = blake3::hash(
            format!(
                "{}|{:?}|{}|{:?}|{}|{}",
                entry.peer,
                entry.user,
                entry.slide,
                entry.grant,
                entry.action,
                entry.rules.join(",")
            )
            .as_bytes(),
        );
        let mut logged = super::remote::lock(&self.refusals_logged);
        if logged.len() >= 10_000 {
            logged.retain(|_, at| at.elapsed() < SERVED_REFUSAL_LOG_EVERY);
        }
        match logged.get(&key) {
            Some(at) if at.elapsed() < SERVED_REFUSAL_LOG_EVERY => false,
            _ => {
                logged.insert(key, std::time::Instant::now());
                true
            }
        }
    }

    /// A grant delivered by its owner: check it names us and is signed by the owner's
    /// roster key, store it, then fetch the manifest in the background.
    fn accept_grant(&self, peer: PeerId, signed: SignedGrant) -> ControlResponse {
        let grant = match signed.verify() {
            Ok(g) => g,
            Err(e) => {
                return ControlResponse::Denied {
                    reason: e.to_string(),
                };
            }
        };
        let from_owner = self.holdings.membership.trust_of(&peer).as_ref() == Some(&grant.owner)
            && self.holdings.membership.node_key_of(&grant.owner) == Some(signed.signer);
        if !from_owner || grant.grantee != self.holdings.trust {
            return ControlResponse::Denied {
                reason: "grant not from its owner's node, or not for this trust".into(),
            };
        }
        let stored = StoredGrant {
            grant: grant.clone(),
            signed: signed.clone(),
            issued_here: false,
            stored_at: now_unix(),
        };
        if let Err(e) = self.holdings.store.put_grant(&stored, None) {
            return ControlResponse::Failed {
                reason: e.to_string(),
            };
        }
        info!(owner = %grant.owner, slide = %grant.slide, purpose = %grant.purpose, "grant received");
        // The fetching side asks the owner for the manifest (the background loops also
        // find grants without one, should this be lost at shutdown).
        let _ = self.followups.send(Followup::FetchManifest(signed));
        ControlResponse::Accepted
    }

    /// A referral delivered by the referring trust's node, or a step of one from the other
    /// side: checked and recorded by [`crate::referrals`], acknowledged once durable (a
    /// repeated delivery is acknowledged again and changes nothing).
    fn accept_referral_message(&self, peer: PeerId, message: ReferralMessage) -> ControlResponse {
        // No roster yet, or one behind the sender's: not a refusal, ask again later (the
        // sender's outbox would drop a refused referral for good).
        let Some(roster) = self.holdings.membership.roster() else {
            return ControlResponse::Failed {
                reason: "this node has no roster yet".into(),
            };
        };
        let Some(trust) = self.holdings.membership.trust_of(&peer) else {
            return ControlResponse::Failed {
                reason: format!("{peer} is not a member of the roster in force here"),
            };
        };
        let party = self.holdings.referral_party();
        let (kind, result) = match message {
            ReferralMessage::Referral(signed) => (
                "referral",
                party.receive(&roster, &trust, signed, now_unix()),
            ),
            ReferralMessage::Update(signed) => (
                "referral update",
                party.receive_update(&roster, &trust, signed, now_unix()),
            ),
        };
        use crate::referrals::ReferralFailure;
        match result {
            Ok(()) => {
                info!(%peer, from = %trust, kind, "received");
                // A referral's acknowledgement is queued for the referring node.
                self.holdings.outbox_queued.notify_one();
                ControlResponse::Accepted
            }
            Err(ReferralFailure::Store(e)) => ControlResponse::Failed {
                reason: e.to_string(),
            },
            // What it needs has not arrived (the referral of an update, a grant): later.
            Err(e @ (ReferralFailure::NotYet(_) | ReferralFailure::NotFound(_))) => {
                ControlResponse::Failed {
                    reason: e.to_string(),
                }
            }
            Err(e) => {
                warn!(%peer, from = %trust, kind, reason = %e, "refused");
                ControlResponse::Denied {
                    reason: e.to_string(),
                }
            }
        }
    }

    /// A member claims a case this trust offered to the co-operative's queue: decided
    /// (`claim`, with this trust's policy and each slide's recorded consent, for the
    /// claiming trust and person), then the first claim recorded takes the case; its
    /// referral goes out and its outcome is announced at once.
    fn accept_claim(
        &self,
        peer: PeerId,
        signed: slidemesh_protocol::SignedClaim,
    ) -> ControlResponse {
        let denied = |reason: String| ControlResponse::Denied { reason };
        let (Some(roster), Some(trust)) = (
            self.holdings.membership.roster(),
            self.holdings.membership.trust_of(&peer),
        ) else {
            return denied(format!("{peer} is not a member"));
        };
        let claim = match signed.verify() {
            Ok(c) => c,
            Err(e) => return denied(format!("claim does not verify: {e}")),
        };
        if claim.by != trust || roster.member(&trust).map(|m| m.node) != Some(signed.signer) {
            return denied(format!("{trust} sent a claim signed for {}", claim.by));
        }
        if let Some(Err(e)) = claim.user.as_ref().map(UserClaim::validate) {
            return denied(format!("claim names no valid person: {e}"));
        }
        let offer = match self.holdings.store.offer(&claim.offer) {
            Ok(Some(o)) if o.offer.from == self.holdings.trust => o,
            Ok(_) => return denied(format!("no offer {} of this trust", claim.offer)),
            Err(e) => {
                return ControlResponse::Failed {
                    reason: e.to_string(),
                };
            }
        };
        let now = now_unix();
        let offer_id = claim.offer.to_string();
        for slide in &offer.offer.slides {
            let consent = match self.holdings.served_slide(slide).and_then(|served| {
                self.holdings
                    .store
                    .slide_consent(slide, &served.series_uid)
                    .map_err(|e| Refusal::Failed(format!("slide {slide}'s consent: {e}")))
            }) {
                Ok(consent) => consent,
                Err(refusal) => return refusal.into(),
            };
            let policy = self.holdings.policy.current();
            let verdict = access::decide(
                &access::Rules {
                    policy: &policy,
                    consent: &consent,
                    owner: &self.holdings.trust,
                    roster: Some(&roster),
                    listed: None,
                },
                access::Subject {
                    trust: &trust,
                    user: claim.user.as_ref(),
                },
                access::Basis::Offered {
                    offer: &offer_id,
                    expires_at: offer.offer.expires_at,
                },
                *slide,
                &[ConsentAction::Claim],
                now,
            );
            for entry in verdict.entries(
                Side::Served,
                &trust,
                &peer.to_string(),
                &format!("offer {offer_id}"),
            ) {
                self.holdings.audit.record(entry);
            }
            if let Err(refusal) = verdict.outcome {
                warn!(%peer, from = %trust, offer = %offer_id, reason = %refusal, "claim refused");
                return refusal.into();
            }
        }
        let party = self.holdings.referral_party();
        match party.take_claim(&claim, now) {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => {
                info!(%peer, from = %trust, offer = %offer_id, reason, "claim lost");
                return denied(reason);
            }
            Err(e) => {
                return ControlResponse::Failed {
                    reason: e.to_string(),
                };
            }
        }
        info!(%peer, from = %trust, offer = %offer_id, "offered case taken");
        match party.finish_taken(&roster, now) {
            Ok(outcomes) => {
                self.holdings.outbox_queued.notify_one();
                for outcome in outcomes {
                    let _ = self
                        .followups
                        .send(Followup::Announce(Announcement::OfferOutcome(outcome)));
                }
            }
            // Taken, and recorded: the referral is made at the next try of the loops.
            Err(e) => warn!(offer = %offer_id, error = %e, "cannot refer the taken case yet"),
        }
        ControlResponse::Accepted
    }

    /// A member's research query: answered over this node's own slides under its policy,
    /// disclosure control and the requester's budget; the answer leaves once its audit entry
    /// is durable.
    fn answer_query(
        &self,
        peer: PeerId,
        request: slidemesh_protocol::query::QueryRequest,
    ) -> ControlResponse {
        let (trust, query) =
            match self.research_request(&peer, request.user.as_ref(), &request.text) {
                Ok(checked) => checked,
                Err(reason) => return ControlResponse::Denied { reason },
            };
        if let Err(e) = crate::research::answer::check_ethics(request.ethics.as_deref()) {
            return ControlResponse::Denied { reason: e };
        }
        let answered = self.holdings.with_research_site(|site| {
            crate::research::answer::answer(
                site,
                &crate::research::answer::Asker {
                    trust: &trust,
                    peer_id: &peer.to_string(),
                    user: request.user.as_ref(),
                    ethics: request.ethics.as_deref(),
                },
                &query,
                &query.to_string(),
                now_unix(),
            )
        });
        let durable = self.record_durably(answered.entry);
        match answered.outcome {
            Ok(_) if !durable => ControlResponse::Failed {
                reason: "this node's audit log did not record the query".into(),
            },
            Ok(counts) => {
                info!(%peer, from = %trust, cells = counts.cells.len(), "research query answered");
                ControlResponse::Counts(counts)
            }
            Err(refusal) => {
                info!(%peer, from = %trust, reason = %refusal, "research query not answered");
                refusal.into()
            }
        }
    }

    /// What every member's research request is checked for before anything is decided: a
    /// member asking, a valid person named, a query that parses here.
    fn research_request(
        &self,
        peer: &PeerId,
        user: Option<&UserClaim>,
        text: &str,
    ) -> Result<
        (
            slidemesh_protocol::TrustCode,
            slidemesh_protocol::query::Query,
        ),
        String,
    > {
        let trust = self
            .holdings
            .membership
            .trust_of(peer)
            .ok_or_else(|| format!("{peer} is not a member"))?;
        if let Some(Err(e)) = user.map(UserClaim::validate) {
            return Err(format!("the request names no valid person: {e}"));
        }
        let query = text.parse().map_err(|e| format!("not a query: {e}"))?;
        Ok((trust, query))
    }

    /// Records `entry` in the audit log and waits until it is durable (at most 5 s):
    /// whether it is, so nothing leaves before its entry would survive a crash.
    fn record_durably(&self, entry: AuditEntry) -> bool {
        self.holdings
            .audit
            .record_pending(entry)
            .wait(std::time::Duration::from_secs(5))
            .is_some()
    }

    /// A member asks for an approved project's cohort from this trust's slides
    /// ([`crate::research::cohort`]); released only once the decision and the grants are
    /// durable.
    fn answer_cohort(
        &self,
        peer: PeerId,
        request: slidemesh_protocol::query::CohortRequest,
    ) -> ControlResponse {
        let (trust, query) =
            match self.research_request(&peer, request.user.as_ref(), &request.text) {
                Ok(checked) => checked,
                Err(reason) => return ControlResponse::Denied { reason },
            };
        if let Err(e) = crate::research::cohort::check_project(&request.project) {
            return ControlResponse::Denied { reason: e };
        }
        let released = self.holdings.with_research_site(|site| {
            crate::research::cohort::release(
                site,
                &self.holdings.key,
                &crate::research::answer::Asker {
                    trust: &trust,
                    peer_id: &peer.to_string(),
                    user: request.user.as_ref(),
                    ethics: Some(&request.project),
                },
                &request.project,
                &query,
                &query.to_string(),
                now_unix(),
            )
        });
        let durable = self.record_durably(released.entry);
        match released.outcome {
            Ok(_) if !durable => ControlResponse::Failed {
                reason: "this node's audit log did not record the cohort".into(),
            },
            Ok(members) => {
                info!(%peer, from = %trust, project = %request.project, slides = members.len(), "cohort released");
                ControlResponse::Cohort(members)
            }
            Err(refusal) => {
                info!(%peer, from = %trust, project = %request.project, reason = %refusal, "cohort not released");
                refusal.into()
            }
        }
    }

    /// A member's referral directory, announced: kept when signed by the roster key of the
    /// trust it describes and newer than the one kept.
    fn accept_directory(&self, from: PeerId, signed: slidemesh_protocol::SignedDirectory) {
        let directory = match signed.verify() {
            Ok(d) => d,
            Err(e) => return warn!(peer = %from, error = %e, "directory refused"),
        };
        if self.holdings.membership.node_key_of(&directory.trust) != Some(signed.signer) {
            return warn!(peer = %from, trust = %directory.trust, "directory not signed by its trust's roster key; refused");
        }
        if let Err(e) = directory.validate() {
            return warn!(peer = %from, trust = %directory.trust, error = %e, "malformed directory refused");
        }
        match self.holdings.store.put_directory(&signed, &directory) {
            Ok(true) => {
                info!(trust = %directory.trust, queues = directory.queues.len(), "referral directory updated")
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot keep a referral directory"),
        }
    }

    /// A revocation delivered by `peer` (`via` a control message or a gossip announcement,
    /// which `peer` may only have relayed). Kept only when it is signed by the roster key of
    /// the trust it names and, for a grant this node holds, when that trust issued the
    /// grant; refused with a warning naming the peer otherwise. A revocation of a grant this
    /// node does not hold (another trust's, which a copy may be asked to serve under) is
    /// kept as it is, and counts only if the grant later shown with it was issued by its
    /// signer ([`access::check_grant`] checks that again on every decision).
    fn accept_revocation(
        &self,
        peer: PeerId,
        signed: SignedRevocation,
        via: &'static str,
    ) -> ControlResponse {
        if self.faults.drop_revocations {
            warn!(%peer, via, "revocation dropped unread (fault injection)");
            return ControlResponse::Failed {
                reason: "this node drops revocations (fault injection)".into(),
            };
        }
        let refuse = |grant: Option<GrantId>, reason: String| {
            warn!(%peer, via, grant = ?grant.map(|g| g.to_string()), reason, "revocation refused");
            ControlResponse::Denied { reason }
        };
        let revocation = match signed.verify() {
            Ok(r) => r,
            Err(e) => return refuse(None, e.to_string()),
        };
        let Some(roster) = self.holdings.membership.roster() else {
            return refuse(
                Some(revocation.grant),
                "this node has no roster to check the signer with".into(),
            );
        };
        let signer = roster
            .members
            .iter()
            .find(|m| m.node == signed.signer)
            .map_or_else(|| format!("key {}", signed.signer), |m| m.trust.to_string());
        let named_key = roster.member(&revocation.owner).map(|m| m.node);
        if named_key != Some(signed.signer) {
            return refuse(
                Some(revocation.grant),
                format!(
                    "revocation in the name of {} is not signed by {}'s roster key (signed by {signer})",
                    revocation.owner, revocation.owner
                ),
            );
        }
        // A grant this node holds: only its issuer revokes it.
        let held = match self.holdings.store.grant(&revocation.grant) {
            Ok(held) => held,
            Err(e) => {
                return ControlResponse::Failed {
                    reason: e.to_string(),
                };
            }
        };
        if let Some(held) = &held {
            let issuer_key = roster.member(&held.grant.owner).map(|m| m.node);
            let by_issuer = issuer_key
                .ok_or_else(|| format!("the grant's issuer {} is not a member", held.grant.owner))
                .and_then(|key| {
                    signed
                        .verify_by_issuer(&revocation.grant, &held.grant, &key)
                        .map_err(|e| e.to_string())
                });
            if let Err(reason) = by_issuer {
                return refuse(
                    Some(revocation.grant),
                    format!("revocation by {signer}, who did not issue the grant: {reason}"),
                );
            }
        }
        match self
            .holdings
            .store
            .put_revocation(&revocation.grant, &signed, None)
        {
            Ok(()) => {
                self.holdings
                    .withdrawals
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if held.is_some() {
                    info!(%peer, via, grant = %revocation.grant, owner = %revocation.owner, "grant revoked by its owner");
                } else {
                    info!(%peer, via, grant = %revocation.grant, owner = %revocation.owner, "revocation kept for a grant this node does not hold");
                }
                ControlResponse::Accepted
            }
            Err(e) => ControlResponse::Failed {
                reason: e.to_string(),
            },
        }
    }

    /// Reads a tile this node can serve: from an original file, else from the cache.
    fn read_local_tile(&self, tile: &TileId) -> Option<Vec<u8>> {
        let from_files = self
            .holdings
            .locations
            .get(tile)
            .ok()
            .flatten()
            .and_then(|location| self.holdings.reader.read_tile(tile, &location).ok());
        let mut bytes = from_files.or_else(|| self.holdings.cache.get(tile))?;
        if self.faults.corrupt_tiles
            && let Some(b) = bytes.last_mut()
        {
            *b ^= 0xff;
        }
        Some(bytes)
    }
}

/// A referral or a step of one, as delivered.
enum ReferralMessage {
    Referral(slidemesh_protocol::SignedReferral),
    Update(slidemesh_protocol::SignedReferralUpdate),
}

/// Network handlers, each answered on its own task (store reads are blocking).
pub struct Handlers(pub Arc<PeerAnswers>);

impl Inbound for Handlers {
    fn control(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> BoxFuture<'static, ControlResponse> {
        let answers = self.0.clone();
        let span = tracing::info_span!("control", peer = %peer);
        async move {
            match request {
                ControlRequest::Manifest {
                    slide,
                    grant,
                    refresh,
                    nonce,
                } => tokio::task::block_in_place(|| {
                    answers.answer_manifest(peer, slide, grant, refresh, nonce)
                }),
                ControlRequest::DeliverGrant(signed) => {
                    tokio::task::block_in_place(|| answers.accept_grant(peer, signed))
                }
                ControlRequest::DeliverRevocation(signed) => tokio::task::block_in_place(|| {
                    answers.accept_revocation(peer, signed, "delivered")
                }),
                ControlRequest::DeliverReferral(signed) => tokio::task::block_in_place(|| {
                    answers.accept_referral_message(peer, ReferralMessage::Referral(signed))
                }),
                ControlRequest::DeliverReferralUpdate(signed) => {
                    tokio::task::block_in_place(|| {
                        answers.accept_referral_message(peer, ReferralMessage::Update(signed))
                    })
                }
                ControlRequest::ClaimOffer(signed) => {
                    tokio::task::block_in_place(|| answers.accept_claim(peer, signed))
                }
                ControlRequest::Cosign {
                    checkpoint,
                    since,
                    proof,
                } => {
                    let Some(log) = answers.holdings.membership.trust_of(&peer) else {
                        return ControlResponse::Denied {
                            reason: "not a member".into(),
                        };
                    };
                    let Some(log_key) = answers.holdings.membership.node_key_of(&log) else {
                        return ControlResponse::Denied {
                            reason: "not a member".into(),
                        };
                    };
                    tokio::task::block_in_place(|| {
                        crate::audit::cosign::answer(
                            &answers.holdings.store,
                            &answers.holdings.key,
                            &log,
                            &log_key,
                            &checkpoint,
                            since,
                            &proof,
                        )
                    })
                }
                ControlRequest::Query(request) => {
                    let answering = answers.holdings.research.answering.clone();
                    let Ok(_turn) = answering.acquire_owned().await else {
                        return ControlResponse::Failed {
                            reason: "this node is shutting down".into(),
                        };
                    };
                    tokio::task::block_in_place(|| answers.answer_query(peer, request))
                }
                ControlRequest::Cohort(request) => {
                    let answering = answers.holdings.research.answering.clone();
                    let Ok(_turn) = answering.acquire_owned().await else {
                        return ControlResponse::Failed {
                            reason: "this node is shutting down".into(),
                        };
                    };
                    tokio::task::block_in_place(|| answers.answer_cohort(peer, request))
                }
                ControlRequest::RosterAfter { version } => {
                    match answers.holdings.store.rosters_after(version) {
                        Ok(rosters) => ControlResponse::Rosters(rosters),
                        Err(e) => ControlResponse::Failed {
                            reason: e.to_string(),
                        },
                    }
                }
            }
        }
        .instrument(span)
        .boxed()
    }

    fn announcement(&self, from: PeerId, announcement: Announcement) {
        match announcement {
            // Rosters are the fetching side's to verify and adopt (it pulls them too).
            Announcement::Roster(signed) => {
                let _ = self
                    .0
                    .followups
                    .send(Followup::OfferRoster { from, signed });
            }
            Announcement::Directory(signed) => {
                let answers = self.0.clone();
                self.0.tasks.spawn(async move {
                    let _ =
                        tokio::task::spawn_blocking(move || answers.accept_directory(from, signed))
                            .await;
                });
            }
            Announcement::Offer(signed) => {
                let answers = self.0.clone();
                self.0.tasks.spawn(async move {
                    let _ = tokio::task::spawn_blocking(move || {
                        let Some(roster) = answers.holdings.membership.roster() else {
                            return;
                        };
                        match answers.holdings.referral_party().receive_offer(
                            &roster,
                            signed,
                            crate::store::now_unix(),
                        ) {
                            Ok(true) => info!(peer = %from, "offered case received"),
                            Ok(false) => {}
                            Err(e) => warn!(peer = %from, error = %e, "offer refused"),
                        }
                    })
                    .await;
                });
            }
            Announcement::OfferOutcome(signed) => {
                let answers = self.0.clone();
                self.0.tasks.spawn(async move {
                    let _ = tokio::task::spawn_blocking(move || {
                        let Some(roster) = answers.holdings.membership.roster() else {
                            return;
                        };
                        if let Err(e) = answers
                            .holdings
                            .referral_party()
                            .receive_outcome(&roster, signed)
                        {
                            warn!(peer = %from, error = %e, "offer outcome refused");
                        }
                    })
                    .await;
                });
            }
            Announcement::Revocation(signed) => {
                let answers = self.0.clone();
                self.0.tasks.spawn(async move {
                    let _ = tokio::task::spawn_blocking(move || {
                        answers.accept_revocation(from, signed, "announced")
                    })
                    .await;
                });
            }
        }
    }

    fn authorize_tiles(
        &self,
        peer: PeerId,
        request: &TileRequest,
    ) -> BoxFuture<'static, Result<ReceiptFuture, Refusal>> {
        let answers = self.0.clone();
        let slide = request.slide;
        let grant = request.grant.clone();
        let tiles = request.tiles.clone();
        let user = request.user.clone();
        let label = request.audit_label();
        async move {
            let decisions = {
                let answers = answers.clone();
                tokio::task::spawn_blocking(move || {
                    let served = answers.holdings.served_slide(&slide)?;
                    if let Some(stray) = tiles.iter().find(|t| !served.tiles.contains(t)) {
                        return Err(Refusal::Denied(format!(
                            "tile {stray} is not part of slide {slide}"
                        )));
                    }
                    let shows_label = tiles.iter().any(|t| served.label_tiles.contains(t));
                    let owner_asks = !served.local
                        && answers.holdings.membership.trust_of(&peer).as_ref()
                            == Some(&served.owner);
                    // A copy gives a slide's owner back only a replica's tiles it holds
                    // pinned for that slide (fetched from that slide's sources under its
                    // replicate grant): never bytes it holds for another slide, which a
                    // manifest the asker wrote could list.
                    if owner_asks {
                        let replica = answers
                            .holdings
                            .store
                            .copy(crate::store::federation::CopyKind::Replica, &slide)
                            .map_err(|e| Refusal::Failed(e.to_string()))?
                            .is_some();
                        let pinned = answers.holdings.cache.pinned_to(&slide);
                        if !replica || tiles.iter().any(|t| !pinned.contains(t)) {
                            return Err(Refusal::Denied(format!(
                                "this node gives {} back only tiles of a replica of slide \
                                 {slide} it holds",
                                served.owner
                            )));
                        }
                    }
                    let actions = if owner_asks {
                        access::tile_actions(shows_label)
                    } else {
                        // A grant that does not verify is refused by the decision below.
                        let action = grant.verify().map_or(Action::View, |g| g.action);
                        access::peer_tile_actions(action, shows_label)
                    };
                    if let Some(Err(e)) = user.as_ref().map(UserClaim::validate) {
                        return Err(Refusal::Denied(format!(
                            "the request names no valid user: {e}"
                        )));
                    }
                    let decisions = answers.authorize(
                        &peer,
                        &slide,
                        &grant,
                        user.as_ref(),
                        &actions,
                        &label,
                    )?;
                    let trust = answers.holdings.membership.trust_of(&peer);
                    crate::metrics::metrics()
                        .tiles_served_to_peers
                        .get_or_create(&crate::metrics::Metrics::peer(
                            trust.map_or_else(|| "unknown".to_string(), |t| t.to_string()),
                        ))
                        .inc_by(tiles.len() as u64);
                    Ok(decisions)
                })
                .await
                .map_err(|e| Refusal::Failed(e.to_string()))??
            };
            let receipt: ReceiptFuture = async move {
                tokio::task::spawn_blocking(move || answers.sign_receipt(decisions))
                    .await
                    .ok()
                    .flatten()
            }
            .boxed();
            Ok(receipt)
        }
        .boxed()
    }

    fn read_tiles(&self, tiles: Vec<TileId>) -> BoxFuture<'static, Vec<Option<Vec<u8>>>> {
        let answers = self.0.clone();
        let count = tiles.len();
        async move {
            tokio::task::spawn_blocking(move || {
                tiles.iter().map(|t| answers.read_local_tile(t)).collect()
            })
            .await
            .unwrap_or_else(|_| vec![None; count])
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    //! Answers as plain calls: a real store in a temporary directory, no network.

    use std::sync::atomic::Ordering;

    use slidemesh_protocol::{
        Action, Grant, NodeKey, Purpose, Revocation, Roster, SignedGrant, SignedRevocation,
        TrustCode,
    };

    use super::*;
    use crate::audit::AuditLog;
    use crate::consent::{DEFAULT_POLICY, PolicyHandle};
    use crate::federation::membership::{Membership, PeerAddresses};
    use crate::net::identity;
    use crate::store::Store;
    use crate::store::cache::TileCache;
    use crate::store::objects::ObjectStore;
    use crate::store::reader::TileReader;
    use crate::testing::member;

    /// Bradford's node (RAE) answering, with Leeds (RR8) and Wakefield (RWA) as members.
    struct Bradford {
        _dir: tempfile::TempDir,
        answers: PeerAnswers,
        followed_up: mpsc::UnboundedReceiver<Followup>,
        leeds: NodeKey,
        wakefield: NodeKey,
    }

    fn bradford(faults: Faults) -> Bradford {
        let dir = tempfile::tempdir().unwrap();
        let (bradford, leeds, wakefield) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let roster = Roster {
            federation: "test".into(),
            version: 1,
            quorum: 1,
            members: vec![
                member("RAE", &bradford),
                member("RR8", &leeds),
                member("RWA", &wakefield),
            ],
            issued_at: now_unix(),
        };
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let policy_path = dir.path().join("policy.cedar");
        std::fs::write(&policy_path, DEFAULT_POLICY).unwrap();
        let research = crate::research::ResearchSettings::from_config(
            &Default::default(),
            &bradford,
            Default::default(),
        );
        let holdings = Holdings::new(
            store.clone(),
            "RAE".parse().unwrap(),
            Arc::new(bradford),
            TileReader::new(ObjectStore::new(
                dir.path().join("objects"),
                dir.path().join("tmp"),
            )),
            TileCache::open(&dir.path().join("cache"), 1 << 20).unwrap(),
            Arc::new(PolicyHandle::load(policy_path).unwrap()),
            AuditLog::start(store).unwrap(),
            Arc::new(Membership::new(Some(roster), PeerAddresses::new())),
            research,
        );
        let (followups, followed_up) = mpsc::unbounded_channel();
        Bradford {
            _dir: dir,
            answers: PeerAnswers::new(
                Arc::new(holdings),
                faults,
                followups,
                tokio_util::task::TaskTracker::new(),
            ),
            followed_up,
            leeds,
            wakefield,
        }
    }

    fn assert_denied(answer: &ControlResponse) {
        assert!(
            matches!(answer, ControlResponse::Denied { .. }),
            "expected a refusal, got {answer:?}"
        );
    }

    fn peer(key: &NodeKey) -> PeerId {
        identity::peer_id(&key.public()).unwrap()
    }

    /// `owner`'s grant to `grantee` of one of its slides, signed with `key`.
    fn grant(owner: &str, grantee: &str, key: &NodeKey) -> SignedGrant {
        let now = now_unix();
        let grant = Grant {
            slide: SlideId::of(format!("a slide of {owner}").as_bytes()),
            owner: owner.parse().unwrap(),
            grantee: grantee.parse().unwrap(),
            action: Action::View,
            purpose: Purpose::SecondOpinion,
            reference: None,
            issued_at: now - 10,
            expires_at: now + 3600,
        };
        SignedGrant::sign(&grant, key).unwrap()
    }

    fn revocation(signed: &SignedGrant, owner: &str, key: &NodeKey) -> SignedRevocation {
        SignedRevocation::sign(
            &Revocation {
                grant: signed.id(),
                owner: owner.parse::<TrustCode>().unwrap(),
                revoked_at: now_unix(),
            },
            key,
        )
    }

    #[test]
    fn a_grant_is_kept_only_from_its_owners_node_and_its_manifest_is_then_asked_for() {
        let mut node = bradford(Faults::default());
        let from_leeds = grant("RR8", "RAE", &node.leeds);
        // Relayed by another member's node: refused, nothing stored or asked for.
        let relayed = node
            .answers
            .accept_grant(peer(&node.wakefield), from_leeds.clone());
        assert_denied(&relayed);
        // For another trust: refused.
        let for_wakefield = grant("RR8", "RWA", &node.leeds);
        let elsewhere = node
            .answers
            .accept_grant(peer(&node.leeds), for_wakefield.clone());
        assert_denied(&elsewhere);
        assert!(node.followed_up.try_recv().is_err());
        let store = &node.answers.holdings.store;
        assert!(store.grant(&from_leeds.id()).unwrap().is_none());

        let delivered = node
            .answers
            .accept_grant(peer(&node.leeds), from_leeds.clone());
        assert!(
            matches!(delivered, ControlResponse::Accepted),
            "{delivered:?}"
        );
        let kept = store.grant(&from_leeds.id()).unwrap().expect("grant kept");
        assert!(!kept.issued_here);
        match node.followed_up.try_recv() {
            Ok(Followup::FetchManifest(signed)) => assert_eq!(signed.id(), from_leeds.id()),
            other => panic!("expected the manifest to be asked for, got {other:?}"),
        }
    }

    #[test]
    fn a_held_grant_is_revoked_only_by_its_issuer() {
        let node = bradford(Faults::default());
        let from_leeds = grant("RR8", "RAE", &node.leeds);
        let leeds = peer(&node.leeds);
        assert!(matches!(
            node.answers.accept_grant(leeds, from_leeds.clone()),
            ControlResponse::Accepted
        ));
        let store = &node.answers.holdings.store;
        let withdrawals = || node.answers.holdings.withdrawals.load(Ordering::SeqCst);
        let before = withdrawals();

        // Wakefield revokes Leeds's grant in its own name: it did not issue it.
        let by_wakefield = revocation(&from_leeds, "RWA", &node.wakefield);
        let refused =
            node.answers
                .accept_revocation(peer(&node.wakefield), by_wakefield, "delivered");
        assert_denied(&refused);
        // Wakefield signs in Leeds's name: not Leeds's roster key.
        let forged = revocation(&from_leeds, "RR8", &node.wakefield);
        let refused = node.answers.accept_revocation(leeds, forged, "announced");
        assert_denied(&refused);
        assert!(store.revocations(&from_leeds.id()).unwrap().is_empty());
        assert_eq!(withdrawals(), before);

        // Leeds's own, relayed by Wakefield: kept, and readers drop what they hold.
        let by_leeds = revocation(&from_leeds, "RR8", &node.leeds);
        let kept = node
            .answers
            .accept_revocation(peer(&node.wakefield), by_leeds, "announced");
        assert!(matches!(kept, ControlResponse::Accepted), "{kept:?}");
        assert_eq!(store.revocations(&from_leeds.id()).unwrap().len(), 1);
        assert!(withdrawals() > before);
    }

    #[test]
    fn a_node_standing_for_one_cut_off_takes_no_revocation() {
        let node = bradford(Faults {
            drop_revocations: true,
            ..Faults::default()
        });
        let from_leeds = grant("RR8", "RAE", &node.leeds);
        let by_leeds = revocation(&from_leeds, "RR8", &node.leeds);
        let answer = node
            .answers
            .accept_revocation(peer(&node.leeds), by_leeds, "delivered");
        assert!(
            matches!(answer, ControlResponse::Failed { .. }),
            "{answer:?}"
        );
    }
}
