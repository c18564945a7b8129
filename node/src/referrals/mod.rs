//! Referrals: a case's slides sent to another trust for a pathologist's opinion, and
//! everything that happens to them until they are closed, withdrawn or expire.
//!
//! Both sides keep the referral and its history (`store::referrals`), and every change is
//! one store transaction with what goes with it: the grants the referral needs (second
//! opinion, their reference the referral's id, ending with it), the signed messages to the
//! other side (the outbox, delivered in order, exactly once: a receiver recognises a repeated
//! referral by its id and a repeated update by its hash), revocations on withdrawal, and the
//! step's audit entries (one per slide, side `referral_step` for a step this trust took,
//! `referral_notice` for one the other trust told it of).
//!
//! Who may refer or answer is decided by [`crate::access::decide`] (actions `refer` and
//! `answer` in the owner's policy) by the caller before it calls in here; who may see a
//! referral is [`visible_action`]'s question, decided the same way. This module checks the
//! rest: that a step is the taking side's to take, that messages are signed by the roster
//! key of the trust they speak for, and that the referral is still open.

pub mod dicom;
pub mod fhir;
pub mod queue;
#[cfg(test)]
mod tests;

use slidemesh_protocol::wire::ControlRequest;
use slidemesh_protocol::{
    Action, Annotation, Directory, Grant, GrantId, NodeKey, Opinion, Purpose, Recipient, Referral,
    ReferralId, ReferralUpdate, Revocation, Roster, SignedGrant, SignedReferral,
    SignedReferralUpdate, SignedRevocation, SlideId, Step, TrustCode, Urgency, UserClaim,
};

use crate::audit::{AuditEntry, Side};
use crate::consent::ConsentAction;
use crate::store::federation::{OutboxItem, StoredGrant};
use crate::store::referrals::{Alongside, Change, HistoryStep, Status, StoredReferral};
use crate::store::{Store, StoreError};

/// Why a referral or a step of one was not taken or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReferralFailure {
    /// The request is wrong as asked (a missing slide, a closed referral, a bad text).
    #[error("{0}")]
    Invalid(String),
    /// No such referral here.
    #[error("no referral {0} here")]
    NotFound(ReferralId),
    /// A peer's message that must not be accepted (wrong signer, wrong trust).
    #[error("{0}")]
    Refused(String),
    /// Not now, perhaps later (what it needs has not arrived yet): the sender asks again.
    #[error("{0}")]
    NotYet(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far in the future a peer's timestamp may be (clocks differ a little).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// This node as a party to referrals: its trust and the key it signs with.
pub struct Party<'a> {
    pub store: &'a Store,
    pub trust: &'a TrustCode,
    pub key: &'a NodeKey,
}

/// A referral as the referring pathologist fills it in.
#[derive(Debug, Clone)]
pub struct NewReferral {
    pub to: TrustCode,
    pub recipient: Recipient,
    pub slides: Vec<SlideId>,
    pub question: String,
    pub urgency: Urgency,
    pub report: String,
    /// Unix seconds; the referral and its grants end then.
    pub expires_at: u64,
    /// Second opinion, or direct care for a case claimed from the co-operative's queue.
    pub purpose: Purpose,
    /// The nonce the referral's id is made from; `None`: a fresh one. (A claimed case's is
    /// derived from its offer, so referring it twice makes the same referral once.)
    pub nonce: Option<[u8; 16]>,
}

/// The action that shows a referral to one of this trust's people: referring its slides at
/// the referring trust, answering them at the receiving one. The caller decides it for every
/// slide the referral names ([`crate::access::decide`], through the gateway).
pub fn visible_action(stored: &StoredReferral) -> ConsentAction {
    if stored.sent_here {
        ConsentAction::Refer
    } else {
        ConsentAction::Answer
    }
}

/// Whether a received referral's own grants still hold here (stored when delivered: from
/// the referring trust, for this trust, naming this referral; none expired or revoked by
/// their issuer): the referral is shown only then, so a withdrawn, closed or ended one is
/// not. A sent referral's slides are this trust's own: always. (Several referrals of one
/// slide may be open at once; the slide itself is shown under whichever of its grants the
/// node holds, all from its owner.)
pub fn grants_hold(
    store: &Store,
    roster: Option<&Roster>,
    stored: &StoredReferral,
    now: u64,
) -> Result<bool, StoreError> {
    if stored.sent_here {
        return Ok(true);
    }
    let Some(roster) = roster else {
        return Ok(false);
    };
    for id in &stored.referral.grants {
        let Some(held) = store.grant(id)? else {
            return Ok(false);
        };
        let revocations = store.revocations(id)?;
        if held.grant.expires_at <= now
            || crate::access::grant::revoked_by_issuer(id, &held.grant, &revocations, roster)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One audit entry per slide of the referral for a step.
fn step_entries(
    stored: &StoredReferral,
    side: Side,
    step: Status,
    user: Option<&str>,
    at: u64,
) -> Vec<AuditEntry> {
    let r = &stored.referral;
    r.slides
        .iter()
        .zip(&r.grants)
        .map(|(slide, grant)| AuditEntry {
            time: at,
            side,
            peer: stored.peer().clone(),
            peer_id: String::new(),
            user: user.map(str::to_string),
            purpose: r.purpose.as_str().to_string(),
            slide: *slide,
            action: format!("referral:{}", step.as_str()),
            what: format!("referral {}", r.id),
            allowed: true,
            rules: Vec::new(),
            policy_hash: String::new(),
            grant: Some(*grant),
        })
        .collect()
}

fn status_of(step: &Step) -> Status {
    match step {
        Step::Delivered => Status::Delivered,
        Step::Opened => Status::Opened,
        Step::Answered(_) => Status::Answered,
        Step::Closed => Status::Closed,
        Step::Withdrawn => Status::Withdrawn,
    }
}

impl Party<'_> {
    /// Signs and stores a new referral from this trust, with one grant per slide, and queues
    /// the grants and then the referral for the receiving trust's node. The caller decided
    /// `refer` on every slide for `referrer`.
    pub fn send(
        &self,
        roster: &Roster,
        referrer: Option<&UserClaim>,
        new: NewReferral,
        now: u64,
    ) -> Result<StoredReferral, ReferralFailure> {
        let invalid = |m: String| ReferralFailure::Invalid(m);
        if roster.member(&new.to).is_none() {
            return Err(invalid(format!(
                "{} is not a member of {}",
                new.to, roster.federation
            )));
        }
        // Addressed as the receiving trust's directory says, when it has announced one that
        // lists anything (a claimed case goes to whoever claimed it).
        if new.purpose == Purpose::SecondOpinion
            && let Some((_, directory)) = self.store.directories()?.into_iter().find(|(_, d)| {
                d.trust == new.to && !(d.queues.is_empty() && d.specialists.is_empty())
            })
        {
            let listed = match &new.recipient {
                Recipient::Queue(q) => directory.queues.iter().any(|e| &e.name == q),
                Recipient::Specialist(a) => directory.specialists.iter().any(|e| &e.account == a),
            };
            if !listed {
                let names: Vec<&str> = match &new.recipient {
                    Recipient::Queue(_) => {
                        directory.queues.iter().map(|e| e.name.as_str()).collect()
                    }
                    Recipient::Specialist(_) => directory
                        .specialists
                        .iter()
                        .map(|e| e.account.as_str())
                        .collect(),
                };
                return Err(invalid(format!(
                    "{}'s directory lists no {:?}; it lists: {}",
                    new.to,
                    match &new.recipient {
                        Recipient::Queue(q) | Recipient::Specialist(q) => q,
                    },
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        for slide in &new.slides {
            if self.store.slide(slide)?.is_none() {
                return Err(invalid(format!(
                    "slide {slide} is not held by this node (only its owner refers a slide)"
                )));
            }
        }
        let nonce = new
            .nonce
            .unwrap_or_else(slidemesh_protocol::referral::fresh_nonce);
        let id = slidemesh_protocol::referral::referral_id(self.trust, &nonce);
        let mut grants = Vec::new();
        for slide in &new.slides {
            let grant = Grant {
                slide: *slide,
                owner: self.trust.clone(),
                grantee: new.to.clone(),
                action: Action::View,
                purpose: new.purpose,
                reference: Some(id.to_string()),
                issued_at: now,
                expires_at: new.expires_at,
            };
            let signed = SignedGrant::sign(&grant, self.key).map_err(|e| invalid(e.to_string()))?;
            grants.push(StoredGrant {
                signed,
                grant,
                issued_here: true,
                stored_at: now,
            });
        }
        let referral = Referral {
            id,
            nonce,
            from: self.trust.clone(),
            referrer: referrer.cloned(),
            to: new.to.clone(),
            recipient: new.recipient,
            slides: new.slides,
            grants: grants.iter().map(|g| g.signed.id()).collect(),
            purpose: new.purpose,
            question: new.question,
            urgency: new.urgency,
            report: new.report,
            sent_at: now,
            expires_at: new.expires_at,
        };
        referral.validate().map_err(|e| invalid(e.to_string()))?;
        let signed = SignedReferral::sign(&referral, self.key);
        let stored = StoredReferral::new(signed.clone(), referral, true);
        let mut outbox: Vec<OutboxItem> = grants
            .iter()
            .map(|g| OutboxItem {
                to: new.to.clone(),
                message: ControlRequest::DeliverGrant(g.signed.clone()),
                created_at: now,
            })
            .collect();
        outbox.push(OutboxItem {
            to: new.to.clone(),
            message: ControlRequest::DeliverReferral(signed),
            created_at: now,
        });
        let user = referrer.map(ToString::to_string);
        let audit = step_entries(
            &stored,
            Side::ReferralStep,
            Status::Sent,
            user.as_deref(),
            now,
        );
        self.store.put_referral(
            &stored,
            Alongside {
                grants,
                outbox,
                audit,
                ..Alongside::default()
            },
        )?;
        Ok(stored)
    }

    /// Takes a step on referral `id` as this trust (opened or answered at the receiving
    /// trust; closed or withdrawn at the referring one), records it and queues it for the
    /// other side. Withdrawing or closing revokes the referral's grants. Opening is recorded
    /// once.
    pub fn take_step(
        &self,
        id: &ReferralId,
        user: Option<&UserClaim>,
        step: Step,
        now: u64,
    ) -> Result<StoredReferral, ReferralFailure> {
        if let Step::Answered(opinion) = &step {
            opinion
                .validate()
                .map_err(|e| ReferralFailure::Invalid(e.to_string()))?;
            let stored = self
                .store
                .referral(id)?
                .ok_or_else(|| ReferralFailure::NotFound(*id))?;
            check_marks(self.store, &stored.referral, opinion).map_err(ReferralFailure::Invalid)?;
        }
        let status = status_of(&step);
        let changed = self.store.change_referral(id, |stored| {
            let ours = if step.by_receiver() {
                !stored.sent_here
            } else {
                stored.sent_here
            };
            if !ours || matches!(step, Step::Delivered) {
                let side = if step.by_receiver() {
                    "the trust it was referred to"
                } else {
                    "the referring trust"
                };
                return Change::Keep(Err(ReferralFailure::Invalid(format!(
                    "only {side} marks a referral {}",
                    step.name()
                ))));
            }
            if stored.status.is_final() {
                return Change::Keep(Err(ReferralFailure::Invalid(format!(
                    "referral {id} is {} already",
                    stored.status.as_str()
                ))));
            }
            if matches!(step, Step::Opened)
                && stored.history.iter().any(|h| h.status == Status::Opened)
            {
                return Change::Keep(Ok(stored.clone()));
            }
            if matches!(step, Step::Closed) && stored.status != Status::Answered {
                // Closing before an answer is what withdrawal is for (it revokes the grants).
                return Change::Keep(Err(ReferralFailure::Invalid(format!(
                    "referral {id} has no answer yet; withdraw it instead"
                ))));
            }
            let update = ReferralUpdate {
                referral: *id,
                by: self.trust.clone(),
                user: user.cloned(),
                at: now,
                step: step.clone(),
            };
            let signed = SignedReferralUpdate::sign(&update, self.key);
            let user_text = user.map(ToString::to_string);
            if let Err(e) = stored.push(HistoryStep {
                status,
                at: now,
                by: self.trust.clone(),
                user: user_text.clone(),
                update: None,
            }) {
                return Change::Keep(Err(ReferralFailure::Invalid(e)));
            }
            if let Step::Answered(opinion) = &step {
                stored.opinion = Some((opinion.clone(), signed.clone()));
            }
            let mut alongside = Alongside {
                audit: step_entries(
                    stored,
                    Side::ReferralStep,
                    status,
                    user_text.as_deref(),
                    now,
                ),
                ..Alongside::default()
            };
            // Done with, one way or the other: the other trust no longer sees the slides.
            if matches!(step, Step::Withdrawn | Step::Closed) {
                for grant in &stored.referral.grants {
                    let revocation = SignedRevocation::sign(
                        &Revocation {
                            grant: *grant,
                            owner: self.trust.clone(),
                            revoked_at: now,
                        },
                        self.key,
                    );
                    alongside.outbox.push(OutboxItem {
                        to: stored.referral.to.clone(),
                        message: ControlRequest::DeliverRevocation(revocation.clone()),
                        created_at: now,
                    });
                    alongside.revocations.push((*grant, revocation));
                }
            }
            alongside.outbox.push(OutboxItem {
                to: stored.peer().clone(),
                message: ControlRequest::DeliverReferralUpdate(signed),
                created_at: now,
            });
            Change::Commit(alongside, Ok(stored.clone()))
        })?;
        changed.ok_or(ReferralFailure::NotFound(*id))?
    }

    /// A referral delivered by `peer_trust`'s node: checked (signed by the roster key of
    /// the trust it is from, which is the peer's; for this trust; well formed), stored with
    /// its receipt ("delivered") queued back. Accepting the same referral again changes
    /// nothing and answers the same.
    pub fn receive(
        &self,
        roster: &Roster,
        peer_trust: &TrustCode,
        signed: SignedReferral,
        now: u64,
    ) -> Result<(), ReferralFailure> {
        let refused = |m: String| ReferralFailure::Refused(m);
        let referral = signed
            .verify()
            .map_err(|e| refused(format!("referral does not verify: {e}")))?;
        if &referral.from != peer_trust {
            return Err(refused(format!(
                "{peer_trust} delivered a referral from {}",
                referral.from
            )));
        }
        if roster.member(&referral.from).map(|m| m.node) != Some(signed.signer) {
            return Err(refused(format!(
                "referral not signed by {}'s roster key",
                referral.from
            )));
        }
        if &referral.to != self.trust {
            return Err(refused(format!(
                "referral for {}, not this trust",
                referral.to
            )));
        }
        referral
            .validate()
            .map_err(|e| refused(format!("malformed referral: {e}")))?;
        if referral.sent_at > now + MAX_CLOCK_SKEW_SECS {
            return Err(refused(format!(
                "referral sent {} s in the future",
                referral.sent_at - now
            )));
        }
        // One member cannot fill this trust's store and inbox: a new referral is refused
        // while that trust has MAX_OPEN_FROM_ONE_TRUST open here (a repeat is still answered).
        if self.store.referral(&referral.id)?.is_none() {
            let open = open_from(&self.store.referrals()?, &referral.from);
            if open >= MAX_OPEN_FROM_ONE_TRUST {
                return Err(refused(format!(
                    "{} has {open} referrals open here already; at most {MAX_OPEN_FROM_ONE_TRUST}",
                    referral.from
                )));
            }
        }
        // Its grants came first, on the same ordered queue: each from the referring trust,
        // for this trust, for its slide, naming this referral. (Not here: not yet, ask again.)
        for (slide, grant) in referral.slides.iter().zip(&referral.grants) {
            let Some(held) = self.store.grant(grant)? else {
                return Err(ReferralFailure::NotYet(format!(
                    "grant {grant} for referral {} is not here yet",
                    referral.id
                )));
            };
            let g = &held.grant;
            let id = referral.id.to_string();
            if held.issued_here
                || g.owner != referral.from
                || &g.grantee != self.trust
                || g.slide != *slide
                || g.reference.as_deref() != Some(id.as_str())
                || g.purpose != referral.purpose
            {
                return Err(refused(format!(
                    "grant {grant} is not {}'s grant of slide {slide} for referral {id}",
                    referral.from
                )));
            }
        }
        let mut stored = StoredReferral::new(signed, referral, false);
        let mut audit = step_entries(
            &stored,
            Side::ReferralNotice,
            Status::Sent,
            stored
                .referral
                .referrer
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            stored.referral.sent_at,
        );
        let update = ReferralUpdate {
            referral: stored.referral.id,
            by: self.trust.clone(),
            user: None,
            at: now,
            step: Step::Delivered,
        };
        stored
            .push(HistoryStep {
                status: Status::Delivered,
                at: now,
                by: self.trust.clone(),
                user: None,
                update: None,
            })
            .map_err(ReferralFailure::Invalid)?;
        audit.extend(step_entries(
            &stored,
            Side::ReferralStep,
            Status::Delivered,
            None,
            now,
        ));
        let outbox = vec![OutboxItem {
            to: stored.referral.from.clone(),
            message: ControlRequest::DeliverReferralUpdate(SignedReferralUpdate::sign(
                &update, self.key,
            )),
            created_at: now,
        }];
        self.store.put_referral(
            &stored,
            Alongside {
                outbox,
                audit,
                ..Alongside::default()
            },
        )?;
        Ok(())
    }

    /// A step the other trust took, delivered by `peer_trust`'s node: checked (signed by the
    /// roster key of the trust that took it, which is the peer's and the side whose step it
    /// is) and recorded once (a repeated delivery changes nothing).
    pub fn receive_update(
        &self,
        roster: &Roster,
        peer_trust: &TrustCode,
        signed: SignedReferralUpdate,
        now: u64,
    ) -> Result<(), ReferralFailure> {
        let refused = |m: String| ReferralFailure::Refused(m);
        let update = signed
            .verify()
            .map_err(|e| refused(format!("referral update does not verify: {e}")))?;
        if &update.by != peer_trust {
            return Err(refused(format!(
                "{peer_trust} delivered a step taken by {}",
                update.by
            )));
        }
        if roster.member(&update.by).map(|m| m.node) != Some(signed.signer) {
            return Err(refused(format!(
                "referral update not signed by {}'s roster key",
                update.by
            )));
        }
        update
            .validate()
            .map_err(|e| refused(format!("malformed referral update: {e}")))?;
        if update.at > now + MAX_CLOCK_SKEW_SECS {
            return Err(refused(format!(
                "referral step taken {} s in the future",
                update.at - now
            )));
        }
        let hash = *blake3::hash(&signed.bytes).as_bytes();
        let status = status_of(&update.step);
        let id = update.referral;
        let changed = self.store.change_referral(&id, |stored| {
            let takers = if update.step.by_receiver() {
                &stored.referral.to
            } else {
                &stored.referral.from
            };
            if takers != &update.by || stored.peer() != &update.by {
                return Change::Keep(Err(refused(format!(
                    "{} may not mark referral {id} {}",
                    update.by,
                    update.step.name()
                ))));
            }
            if stored.has_update(&hash) {
                return Change::Keep(Ok(()));
            }
            if let Step::Answered(opinion) = &update.step
                && let Err(e) = check_marks(self.store, &stored.referral, opinion)
            {
                return Change::Keep(Err(refused(e)));
            }
            let user = update.user.as_ref().map(ToString::to_string);
            if let Err(e) = stored.push(HistoryStep {
                status,
                at: update.at.max(stored.referral.sent_at),
                by: update.by.clone(),
                user: user.clone(),
                update: Some(hash),
            }) {
                return Change::Keep(Err(refused(e)));
            }
            if let Step::Answered(opinion) = &update.step {
                stored.opinion = Some((opinion.clone(), signed.clone()));
            }
            let audit = step_entries(stored, Side::ReferralNotice, status, user.as_deref(), now);
            Change::Commit(
                Alongside {
                    audit,
                    ..Alongside::default()
                },
                Ok(()),
            )
        })?;
        changed.ok_or(ReferralFailure::NotFound(id))?
    }

    /// Marks expired every open referral whose end has come (each side by its own clock; the
    /// grants end at the same time by themselves). Returns the ids marked.
    pub fn expire_due(&self, now: u64) -> Result<Vec<ReferralId>, StoreError> {
        let mut expired = Vec::new();
        for stored in self.store.referrals()? {
            if stored.status.is_final() || stored.referral.expires_at > now {
                continue;
            }
            let id = stored.referral.id;
            let changed = self.store.change_referral(&id, |stored| {
                if stored.status.is_final() {
                    return Change::Keep(false);
                }
                let at = stored.referral.expires_at;
                if stored
                    .push(HistoryStep {
                        status: Status::Expired,
                        at,
                        by: self.trust.clone(),
                        user: None,
                        update: None,
                    })
                    .is_err()
                {
                    // A full history: the status still ends.
                    stored.status = Status::Expired;
                }
                let audit = step_entries(stored, Side::ReferralStep, Status::Expired, None, at);
                Change::Commit(
                    Alongside {
                        audit,
                        ..Alongside::default()
                    },
                    true,
                )
            })?;
            if changed == Some(true) {
                expired.push(id);
            }
        }
        Ok(expired)
    }
}

/// A referral's grant for `slide`, as the referral names it.
pub fn grant_of(referral: &Referral, slide: &SlideId) -> Option<GrantId> {
    referral
        .slides
        .iter()
        .position(|s| s == slide)
        .map(|i| referral.grants[i])
}

/// Most referrals one trust may have open at another: beyond any co-operative's workload
/// (six trusts exchange a few hundred a month), small enough that a member gone rogue
/// cannot flood the receiver's inbox. (Closed, withdrawn and expired ones still take space
/// until pruning, which is not built.)
pub const MAX_OPEN_FROM_ONE_TRUST: usize = 10_000;

/// How many referrals received from `from` are still open.
fn open_from(all: &[StoredReferral], from: &TrustCode) -> usize {
    all.iter()
        .filter(|r| !r.sent_here && &r.referral.from == from && !r.status.is_final())
        .count()
}

/// Whether a referral this trust holds is for `user` here. The referring trust's side is
/// not narrowed, nor is the trust's node acting on its own account, nor a referral to a
/// queue (whoever there may answer, as the owner's policy decides). A referral to a named
/// specialist is for that specialist and whoever covers them in this trust's `directory`
/// (where people set their cover). On top of, never instead of, the owner's decision.
pub fn addressed_to(
    stored: &StoredReferral,
    user: Option<&UserClaim>,
    directory: Option<&Directory>,
) -> bool {
    let (Some(user), false) = (user, stored.sent_here) else {
        return true;
    };
    match &stored.referral.recipient {
        Recipient::Queue(_) => true,
        Recipient::Specialist(account) => {
            user.id == *account
                || directory.is_some_and(|d| {
                    d.specialists
                        .iter()
                        .any(|s| s.account == *account && s.covered_by.as_ref() == Some(&user.id))
                })
        }
    }
}

/// This trust's own directory as it signed it, if it publishes one. Unreadable, it is
/// logged and taken as none: a named specialist's referral is then for them alone (closed,
/// not open, on error).
pub fn own_directory(store: &Store, trust: &TrustCode) -> Option<Directory> {
    match store.directories() {
        Ok(all) => all.into_iter().map(|(_, d)| d).find(|d| &d.trust == trust),
        Err(e) => {
            tracing::error!(error = %e, "stored directories unreadable; no cover applies");
            None
        }
    }
}

/// An opinion's marks lie on the referral's own slides, inside each one's full-resolution
/// pixel matrix (as the owner's signed manifest held here gives it: the referring trust
/// always holds it; the answering one does once the slide has been viewed, as marking it
/// needs).
fn check_marks(store: &Store, referral: &Referral, opinion: &Opinion) -> Result<(), String> {
    // Each slide's size, read and verified once however many marks it has.
    let mut sizes: std::collections::HashMap<SlideId, (u32, u32)> = Default::default();
    for (i, mark) in opinion.annotations.iter().enumerate() {
        if !referral.slides.contains(&mark.slide) {
            return Err(format!(
                "annotation {}: it marks slide {}, which referral {} does not name",
                i + 1,
                mark.slide,
                referral.id
            ));
        }
        if let Some(&(width, height)) = sizes.get(&mark.slide) {
            if !mark.fits(width, height) {
                return Err(outside(i, mark, width, height));
            }
            continue;
        }
        let signed =
            match store.slide(&mark.slide).map_err(|e| e.to_string())? {
                Some(local) => local.signed,
                None => store
                    .remote_slide(&mark.slide)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!(
                            "annotation {}: slide {} is not held here; view it before marking it",
                            i + 1,
                            mark.slide
                        )
                    })?
                    .signed,
            };
        let manifest = signed.verify().map_err(|e| e.to_string())?;
        let base = manifest
            .levels
            .first()
            .ok_or_else(|| format!("slide {} has no pyramid level", mark.slide))?;
        sizes.insert(mark.slide, (base.width, base.height));
        if !mark.fits(base.width, base.height) {
            return Err(outside(i, mark, base.width, base.height));
        }
    }
    Ok(())
}

fn outside(index: usize, mark: &Annotation, width: u32, height: u32) -> String {
    format!(
        "annotation {}: it lies outside slide {}'s {width} x {height} pixels",
        index + 1,
        mark.slide
    )
}

/// The opinion of an answered referral.
pub fn opinion(stored: &StoredReferral) -> Option<&Opinion> {
    stored.opinion.as_ref().map(|(o, _)| o)
}
