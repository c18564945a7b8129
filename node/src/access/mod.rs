//! Who may see or do what: every access decision this node makes, in one pure function.
//!
//! [`decide`] takes the rules (the slide owner's cedar policy and the slide's recorded
//! consent, and the roster grants are checked against), the subject (a trust, and the person
//! its node names), the basis (the owner's own people on its own slide, or a grant), the slide,
//! the actions and the time, and answers a [`Verdict`]: allowed or why not, each action's
//! deciding rules, and the audit entries to record. It does no I/O: the callers gather the
//! rules (this node's policy and store for its own slides, the owner's signed consent
//! statement for a copy or a shared slide) and record the entries. The peer path (a trust's
//! node asking for a manifest or tiles), this trust's own people (its own slides and slides
//! shared with it) and the `policy test` command all decide here.
//!
//! Written once, here:
//! - the grant rule ([`grant::check_grant`]): signed by the owner's roster key, for the
//!   requester, slide and time, not revoked by its issuer (a revocation signed by anyone
//!   else counts for nothing), and, away from the owner, listed as holding in the owner's
//!   latest signed consent statement; default deny;
//! - the owner's cedar policy for every action, with the person's role when one is named
//!   ([`crate::consent::Policy::decide`]);
//! - the label rule: label and overview images (and associated images showing text) never go
//!   to research or education, whatever a policy says;
//! - the identity rule: reading identified metadata is `view` and `see_label` together
//!   ([`metadata_actions`]).
//!
//! Must not: read the store, the network or the clock; log. Everything it needs is handed in.

pub mod grant;
#[cfg(test)]
mod tests;

use slidemesh_protocol::{
    Action, GrantId, Roster, SignedGrant, SignedRevocation, SlideId, TrustCode, UserClaim,
};

pub use crate::audit::{AuditEntry, Side};
use crate::consent::{ConsentAction, ConsentRequest, Policy};
use crate::store::consent::SlideConsent;
pub use grant::{CheckedGrant, GrantQuestion, OwnersList, check_grant};
/// Why a request was not served (its form on the wire: denied, or failed to decide).
pub use slidemesh_protocol::wire::Refusal;

/// The rules a slide is decided by: always its owner's, wherever the decision is made.
pub struct Rules<'a> {
    /// The owner's policy: this node's own for its slides, else the owner's signed one.
    pub policy: &'a Policy,
    /// The slide's recorded consent, as the owner recorded it.
    pub consent: &'a SlideConsent,
    pub owner: &'a TrustCode,
    /// The roster in force, for checking a grant's signer (`None`: no federation yet, so
    /// no grant can hold).
    pub roster: Option<&'a Roster>,
    /// Away from the owner (a copy serving others, a grantee deciding for its own people),
    /// the grants the owner's latest signed consent statement lists as holding: any other
    /// is refused. `None` at the owner, whose own store of revocations decides.
    pub listed: Option<OwnersList<'a>>,
}

/// Who asks: a trust's node, for itself or for a person it names.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub trust: &'a TrustCode,
    pub user: Option<&'a UserClaim>,
}

/// On what footing the subject asks.
pub enum Basis<'a> {
    /// The owner's own people (or its node) on the owner's own slide: no grant; the policy
    /// sees the purpose [`OWN_TRUST_PURPOSE`].
    OwnSlide,
    /// A grant as presented, checked here; `revocations` every revocation of it the
    /// caller's store holds, whoever signed it (only the issuer's count).
    Grant {
        signed: &'a SignedGrant,
        revocations: Result<Vec<SignedRevocation>, String>,
    },
    /// A grant that passed [`check_grant`] a moment ago (callers deciding many requests
    /// under the grant they hold keep it, rather than verify its signature each time).
    Checked(&'a CheckedGrant),
    /// The owner offered the slide's case to the co-operative's reporting queue (`offer`
    /// its id, open until `expires_at`): any member may ask to claim it, and nothing else;
    /// the policy sees the purpose direct-care (the claimant becomes its reporter) and the
    /// offer as the referral.
    Offered { offer: &'a str, expires_at: u64 },
    /// A research query or cohort from any member, with no grant: the policy sees the
    /// purpose research and no ethics approval (one a requester merely names is not the
    /// owner's word; an approval counts only in a grant the owner signed). Only `query` and
    /// `receive_cohort` are decided on this basis.
    Research,
    /// An approved project's cohort, with no grant yet: the owner recorded the project
    /// `reference` as approved for the subject's trust until `expires_at` (the caller finds
    /// that record). Only `receive_cohort` is decided on this basis; the policy sees the
    /// purpose research and the owner's recorded approval as the ethics approval.
    Project { reference: &'a str, expires_at: u64 },
}

/// The purpose the policy sees when the owner's own people use its own slides.
pub const OWN_TRUST_PURPOSE: &str = crate::consent::OWN_TRUST_PURPOSE;

/// One action's outcome and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionDecision {
    pub action: ConsentAction,
    pub allowed: bool,
    /// The deciding rules: the policy's `@id`s, or `grant: ...` / `built-in: ...`.
    pub rules: Vec<String>,
    /// BLAKE3 of the policy text, empty when no policy was consulted.
    pub policy_hash: String,
}

/// The answer to one question, with everything the audit log needs.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Allowed (every action), or why not.
    pub outcome: Result<(), Refusal>,
    /// The actions decided, in the order asked, up to and including the first refused one.
    /// Empty when nothing was decided (`Refusal::Failed`).
    pub decisions: Vec<ActionDecision>,
    /// The purpose decided for: the grant's, or [`OWN_TRUST_PURPOSE`].
    pub purpose: String,
    /// The grant decided under, when there was one.
    pub grant: Option<GrantId>,
    /// The grant as checked, when it held (for callers that memoise it).
    pub checked: Option<CheckedGrant>,
    slide: SlideId,
    user: Option<String>,
    now: u64,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The audit entries this verdict asks to be recorded: one per decided action. `peer`
    /// and `peer_id` name the other side (the requester when serving, the owner when this
    /// node decides for its own people about a shared slide), `what` what was asked for.
    pub fn entries(
        &self,
        side: Side,
        peer: &TrustCode,
        peer_id: &str,
        what: &str,
    ) -> Vec<AuditEntry> {
        self.decisions
            .iter()
            .map(|d| AuditEntry {
                time: self.now,
                side,
                peer: peer.clone(),
                peer_id: peer_id.to_string(),
                user: self.user.clone(),
                purpose: self.purpose.clone(),
                slide: self.slide,
                action: d.action.as_str().to_string(),
                what: what.to_string(),
                allowed: d.allowed,
                rules: d.rules.clone(),
                policy_hash: d.policy_hash.clone(),
                grant: self.grant,
            })
            .collect()
    }
}

/// Decides whether `subject` may do each of `actions` on `slide` at `now`, under `rules`
/// and `basis`. The one entry point for every decision (see the module docs).
pub fn decide(
    rules: &Rules<'_>,
    subject: Subject<'_>,
    basis: Basis<'_>,
    slide: SlideId,
    actions: &[ConsentAction],
    now: u64,
) -> Verdict {
    let mut verdict = Verdict {
        outcome: Ok(()),
        decisions: Vec::new(),
        purpose: OWN_TRUST_PURPOSE.to_string(),
        grant: None,
        checked: None,
        slide,
        user: subject.user.map(ToString::to_string),
        now,
    };
    let first = actions.first().copied().unwrap_or(ConsentAction::View);
    let refuse = |verdict: &mut Verdict, action, rule: String, reason: String| {
        verdict.decisions.push(ActionDecision {
            action,
            allowed: false,
            rules: vec![rule],
            policy_hash: String::new(),
        });
        verdict.outcome = Err(Refusal::Denied(reason));
    };
    if let Some(Err(e)) = subject.user.map(UserClaim::validate) {
        refuse(
            &mut verdict,
            first,
            format!("built-in: the request names no valid person: {e}"),
            format!("the request names no valid person: {e}"),
        );
        return verdict;
    }
    // The grant, when there is one; the owner's own people need none.
    let mut offered: Option<(&str, u64)> = None;
    let mut research = false;
    let mut project: Option<(&str, u64)> = None;
    let checked = match basis {
        Basis::Project {
            reference,
            expires_at,
        } => {
            verdict.purpose = slidemesh_protocol::Purpose::Research.as_str().to_string();
            if let Some(&other) = actions.iter().find(|&&a| a != ConsentAction::ReceiveCohort) {
                let reason = format!(
                    "an approved project receives cohorts on its approval, nothing else ({} \
                     asked)",
                    other.as_str()
                );
                refuse(&mut verdict, other, format!("built-in: {reason}"), reason);
                return verdict;
            }
            if let Err(reason) = project_in_force(reference, expires_at, now) {
                refuse(&mut verdict, first, format!("built-in: {reason}"), reason);
                return verdict;
            }
            research = true;
            project = Some((reference, expires_at));
            None
        }
        Basis::Research => {
            verdict.purpose = slidemesh_protocol::Purpose::Research.as_str().to_string();
            if let Some(&other) = actions
                .iter()
                .find(|&&a| !matches!(a, ConsentAction::Query | ConsentAction::ReceiveCohort))
            {
                let reason = format!(
                    "without a grant, research may query and receive cohorts, nothing else ({} \
                     asked)",
                    other.as_str()
                );
                refuse(&mut verdict, other, format!("built-in: {reason}"), reason);
                return verdict;
            }
            research = true;
            None
        }
        Basis::Offered { offer, expires_at } => {
            verdict.purpose = slidemesh_protocol::Purpose::DirectCare.as_str().to_string();
            if let Some(&other) = actions.iter().find(|&&a| a != ConsentAction::Claim) {
                let reason = format!(
                    "an offered case may be claimed, nothing else ({} asked)",
                    other.as_str()
                );
                refuse(&mut verdict, other, format!("built-in: {reason}"), reason);
                return verdict;
            }
            if expires_at <= now {
                let reason = format!("offer {offer} has ended");
                refuse(&mut verdict, first, format!("built-in: {reason}"), reason);
                return verdict;
            }
            offered = Some((offer, expires_at));
            None
        }
        Basis::OwnSlide => {
            if subject.trust != rules.owner {
                let reason = format!(
                    "slide {slide} belongs to {}; {} needs a grant",
                    rules.owner, subject.trust
                );
                refuse(&mut verdict, first, format!("built-in: {reason}"), reason);
                return verdict;
            }
            None
        }
        Basis::Checked(checked) => {
            // Checked a moment ago, perhaps before the owner's latest statement arrived.
            if let Err(refusal) = grant::listed_by_owner(&checked.id(), rules.listed, &slide) {
                verdict.grant = Some(checked.id());
                verdict.purpose = checked.grant().purpose.as_str().to_string();
                let reason = refusal.to_string();
                refuse(&mut verdict, first, format!("grant: {reason}"), reason);
                return verdict;
            }
            Some(checked.clone())
        }
        Basis::Grant {
            signed,
            revocations,
        } => {
            verdict.grant = Some(signed.id());
            let Some(roster) = rules.roster else {
                let reason = "this node has no roster, so no grant can hold".to_string();
                refuse(&mut verdict, first, format!("grant: {reason}"), reason);
                return verdict;
            };
            let question = GrantQuestion {
                roster,
                requester: subject.trust,
                slide: &slide,
                owner: rules.owner,
                now,
                revocations,
                listed: rules.listed,
            };
            match check_grant(signed, &question) {
                Ok(checked) => Some(checked),
                // Not a decision: nothing to record, and the requester asks again later.
                Err(failed @ Refusal::Failed(_)) => {
                    verdict.outcome = Err(failed);
                    return verdict;
                }
                Err(Refusal::Denied(reason)) => {
                    verdict.purpose = signed
                        .verify()
                        .map(|g| g.purpose.as_str().to_string())
                        .unwrap_or_else(|_| "unknown".into());
                    refuse(&mut verdict, first, format!("grant: {reason}"), reason);
                    return verdict;
                }
            }
        }
    };
    let grant = checked.as_ref().map(CheckedGrant::grant);
    if let Some(checked) = &checked {
        verdict.grant = Some(checked.id());
        verdict.purpose = checked.grant().purpose.as_str().to_string();
    }
    if let Err(reason) = replication_rule(actions, grant, subject, &slide) {
        refuse(&mut verdict, first, format!("built-in: {reason}"), reason);
        return verdict;
    }
    let purpose = grant.map(|g| g.purpose).or(if offered.is_some() {
        Some(slidemesh_protocol::Purpose::DirectCare)
    } else if research {
        Some(slidemesh_protocol::Purpose::Research)
    } else {
        None
    });
    // Research and teaching are secondary uses: an opted-out patient's slide serves neither.
    let secondary_use = purpose.is_some_and(slidemesh_protocol::Purpose::requires_deidentification);
    for &action in actions {
        // A patient who opted out is never counted in research, given to a cohort, or shown
        // for research or teaching, whatever a policy says.
        if rules.consent.opted_out
            && (secondary_use
                || matches!(action, ConsentAction::Query | ConsentAction::ReceiveCohort))
        {
            let reason = "the patient opted out of research use";
            refuse(
                &mut verdict,
                action,
                format!("built-in: {reason}"),
                format!("{} of slide {slide}: {reason}", action.as_str()),
            );
            return verdict;
        }
        // Whatever a policy says, the label's identity never goes to research or education
        // (their manifests are de-identified for the same reason).
        if action == ConsentAction::SeeLabel
            && let Some(grant) = grant
            && grant.purpose.requires_deidentification()
        {
            let reason = "label and overview images are never shown for research or education";
            refuse(
                &mut verdict,
                action,
                format!("built-in: {reason}"),
                format!("see_label for {}: {reason}", grant.purpose),
            );
            return verdict;
        }
        let decision = rules.policy.decide(&ConsentRequest {
            requester: subject.trust,
            user: subject.user,
            action,
            slide,
            owner: rules.owner,
            consent: rules.consent,
            purpose,
            reference: grant
                .and_then(|g| g.reference.as_deref())
                .or(offered.or(project).map(|(reference, _)| reference)),
            grant_expires: grant
                .map_or(offered.or(project).map_or(0, |(_, e)| e), |g| g.expires_at),
            now,
        });
        verdict.decisions.push(ActionDecision {
            action,
            allowed: decision.allowed,
            rules: decision.rules.clone(),
            policy_hash: decision.policy_hash.clone(),
        });
        if !decision.allowed {
            let who = match subject.user {
                Some(user) => format!("{user} at {}", subject.trust),
                None => subject.trust.to_string(),
            };
            verdict.outcome = Err(Refusal::Denied(format!(
                "{who} may not {} slide {slide} for {} under {}'s rules: {}",
                action.as_str(),
                verdict.purpose,
                rules.owner,
                decision.explain()
            )));
            return verdict;
        }
    }
    verdict.checked = checked;
    verdict
}

/// The replica rule: replicating is asked alone, by a trust's node (never for a person),
/// under a replicate grant for a care purpose (a replica holds the identified slide, label
/// included); and a replicate grant is for replicating only, so the replica trust's own
/// people see nothing under it.
fn replication_rule(
    actions: &[ConsentAction],
    grant: Option<&slidemesh_protocol::Grant>,
    subject: Subject<'_>,
    slide: &SlideId,
) -> Result<(), String> {
    let replicating = actions.contains(&ConsentAction::Replicate);
    let replicate_grant = grant.is_some_and(|g| g.action == Action::Replicate);
    if replicating {
        if actions.len() > 1 {
            return Err("replicating is asked on its own, not with other actions".into());
        }
        if subject.user.is_some() {
            return Err("a replica is held by a trust's node, never for a person".into());
        }
        let Some(grant) = grant.filter(|_| replicate_grant) else {
            return Err(format!(
                "{} holds no replicate grant for slide {slide}",
                subject.trust
            ));
        };
        if grant.purpose.requires_deidentification() {
            return Err(format!(
                "a replica holds the identified slide: never for {}",
                grant.purpose
            ));
        }
    } else if replicate_grant {
        return Err(format!(
            "the grant lets {} hold a replica of slide {slide} for others, not {} it; its \
             people need a view grant of their own",
            subject.trust,
            actions.first().map_or("use", |a| a.as_str())
        ));
    }
    Ok(())
}

/// What a peer's tile batch under a grant of `action` amounts to: fetching tiles (and seeing
/// the label when one shows it), or, under a replicate grant, replicating.
pub fn peer_tile_actions(action: Action, shows_label: bool) -> Vec<ConsentAction> {
    match action {
        Action::View => tile_actions(shows_label),
        Action::Replicate => vec![ConsentAction::Replicate],
    }
}

/// What a peer's manifest request under a grant of `action` amounts to: viewing, or
/// replicating (which takes the identified manifest with it).
pub fn peer_manifest_actions(action: Action) -> Vec<ConsentAction> {
    match action {
        Action::View => vec![ConsentAction::View],
        Action::Replicate => vec![ConsentAction::Replicate],
    }
}

/// Whether an owner's approval of project `reference`, ending at `expires_at`, is in force
/// at `now` (cohorts are released on it; `decide` checks it again on `Basis::Project`).
pub fn project_in_force(reference: &str, expires_at: u64, now: u64) -> Result<(), String> {
    if expires_at <= now {
        return Err(format!("the approval of project {reference} has ended"));
    }
    Ok(())
}

/// What reading a slide's metadata amounts to: viewing it and, when the metadata is the
/// identified one (not a de-identified view), knowing who the patient is, which an owner
/// allows exactly where it allows the label to be seen.
pub fn metadata_actions(identified: bool) -> Vec<ConsentAction> {
    let mut actions = vec![ConsentAction::View];
    if identified {
        actions.push(ConsentAction::SeeLabel);
    }
    actions
}

/// What asking for tiles amounts to: fetching tiles, and seeing the label when any of them
/// is a label or overview image (or an associated image showing text).
pub fn tile_actions(shows_label: bool) -> Vec<ConsentAction> {
    let mut actions = vec![ConsentAction::FetchTiles];
    if shows_label {
        actions.push(ConsentAction::SeeLabel);
    }
    actions
}
