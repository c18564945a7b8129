//! The co-operative's shared reporting queue: a trust with a backlog offers a case to the
//! queue for a sub-specialty; every member sees it; any with capacity claims it. The offering
//! trust's node is the one arbiter of its own offers, so no agreement among members is
//! needed: the first claim it records (one store transaction) takes the case, every later
//! one is refused naming the taker. It then refers the case to the taker (grants for direct
//! care, the taker as the case's reporter) and announces the outcome to every member.
//!
//! Claims travel in the outbox, so a claim made while the offerer is down or cut off is
//! delivered when it returns; offers and outcomes are announced again every few seconds
//! while they matter, so a member that was away learns them when it is back.

use slidemesh_protocol::wire::ControlRequest;
use slidemesh_protocol::{
    Claim, Offer, OfferOutcome, Purpose, Recipient, ReferralId, Roster, SignedClaim, SignedOffer,
    SignedOfferOutcome, SlideId, TrustCode, Urgency, UserClaim,
};

use super::{NewReferral, Party, ReferralFailure};
use crate::store::federation::OutboxItem;
use crate::store::referrals::{Alongside, Change, Status, StoredOffer, StoredReferral};

/// A case as the offering pathologist describes it.
#[derive(Debug, Clone)]
pub struct NewOffer {
    pub queue: String,
    pub slides: Vec<SlideId>,
    /// A summary every member reads (no patient identifiers).
    pub question: String,
    pub urgency: Urgency,
    /// The report so far: only the trust that takes the case receives it, with the referral.
    pub report: String,
    pub expires_at: u64,
}

fn check_text_of_report(report: &str) -> Result<(), ReferralFailure> {
    if report.len() > slidemesh_protocol::referral::MAX_REPORT {
        return Err(ReferralFailure::Invalid(format!(
            "the report is {} bytes; at most {}",
            report.len(),
            slidemesh_protocol::referral::MAX_REPORT
        )));
    }
    Ok(())
}

/// One finisher at a time in this process: the claim handler and the background loop may
/// both find the same taken offer.
static FINISHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The nonce of the referral a taken offer becomes: derived from the offer, so making it
/// again (after a crash between referral and outcome) makes the same referral, once.
fn claimed_referral_nonce(offer: &ReferralId) -> [u8; 16] {
    let hash = blake3::derive_key("slidemesh claimed case referral v1", offer.as_bytes());
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&hash[..16]);
    nonce
}

/// One queue's figures, as this node sees them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueFigures {
    pub queue: String,
    /// Cases on offer now.
    pub open: usize,
    /// Cases taken from the queue.
    pub taken: usize,
    /// Median seconds from offered to taken.
    pub median_wait_secs: Option<u64>,
    /// Median seconds from referral to answer, over this node's referrals to or from the
    /// queue (claimed cases and referrals addressed to it).
    pub median_turnaround_secs: Option<u64>,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Each queue's depth and turnaround from the offers and referrals this node knows.
pub fn figures(
    offers: &[StoredOffer],
    referrals: &[StoredReferral],
    now: u64,
) -> Vec<QueueFigures> {
    let mut names: Vec<String> = offers.iter().map(|o| o.offer.queue.clone()).collect();
    names.extend(
        referrals
            .iter()
            .filter_map(|r| match &r.referral.recipient {
                Recipient::Queue(q) => Some(q.clone()),
                Recipient::Specialist(_) => None,
            }),
    );
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|queue| {
            let mine: Vec<&StoredOffer> =
                offers.iter().filter(|o| o.offer.queue == queue).collect();
            let waits: Vec<u64> = mine
                .iter()
                .filter_map(|o| {
                    let at = o
                        .outcome
                        .as_ref()
                        .filter(|(out, _)| out.taken_by.is_some())
                        .map(|(out, _)| out.at)
                        .or(o.taken_by.as_ref().map(|t| t.2))?;
                    Some(at.saturating_sub(o.offer.offered_at))
                })
                .collect();
            let turnarounds: Vec<u64> = referrals
                .iter()
                .filter(|r| matches!(&r.referral.recipient, Recipient::Queue(q) if *q == queue))
                .filter_map(|r| {
                    let answered = r.history.iter().find(|h| h.status == Status::Answered)?;
                    Some(answered.at.saturating_sub(r.referral.sent_at))
                })
                .collect();
            QueueFigures {
                open: mine.iter().filter(|o| o.is_open(now)).count(),
                taken: waits.len(),
                median_wait_secs: median(waits),
                median_turnaround_secs: median(turnarounds),
                queue,
            }
        })
        .collect()
}

/// Most cases one trust may have on offer at once, as another member holds them.
pub const MAX_OPEN_OFFERS: usize = 1_000;

/// How many of `from`'s offers are open at `now`.
pub(crate) fn open_offers_from(held: &[StoredOffer], from: &TrustCode, now: u64) -> usize {
    held.iter()
        .filter(|o| &o.offer.from == from && o.is_open(now))
        .count()
}

impl Party<'_> {
    /// Signs and stores an offer of this trust's case; the background loops announce it.
    /// The caller decided `refer` on every slide.
    pub fn offer(&self, new: NewOffer, now: u64) -> Result<StoredOffer, ReferralFailure> {
        let invalid = ReferralFailure::Invalid;
        for slide in &new.slides {
            if self.store.slide(slide)?.is_none() {
                return Err(invalid(format!(
                    "slide {slide} is not held by this node (only its owner offers a case)"
                )));
            }
        }
        let nonce = slidemesh_protocol::referral::fresh_nonce();
        let offer = Offer {
            id: slidemesh_protocol::referral::referral_id(self.trust, &nonce),
            nonce,
            from: self.trust.clone(),
            queue: new.queue,
            slides: new.slides,
            question: new.question,
            urgency: new.urgency,
            offered_at: now,
            expires_at: new.expires_at,
        };
        offer.validate().map_err(|e| invalid(e.to_string()))?;
        check_text_of_report(&new.report)?;
        let stored = StoredOffer {
            signed: SignedOffer::sign(&offer, self.key),
            offer,
            taken_by: None,
            outcome: None,
            claimed_here: None,
            report: new.report,
            claim_refused: None,
        };
        self.store.put_offer(&stored)?;
        Ok(stored)
    }

    /// An offer announced by a member: kept when signed by the roster key of the trust it
    /// is from. Returns whether it was new.
    pub fn receive_offer(
        &self,
        roster: &Roster,
        signed: SignedOffer,
        now: u64,
    ) -> Result<bool, ReferralFailure> {
        let refused = ReferralFailure::Refused;
        let offer = signed
            .verify()
            .map_err(|e| refused(format!("offer does not verify: {e}")))?;
        if roster.member(&offer.from).map(|m| m.node) != Some(signed.signer) {
            return Err(refused(format!(
                "offer not signed by {}'s roster key",
                offer.from
            )));
        }
        if &offer.from == self.trust {
            return Ok(false);
        }
        offer
            .validate()
            .map_err(|e| refused(format!("malformed offer: {e}")))?;
        // One member cannot flood every member's queue: a new offer is refused while its
        // trust has MAX_OPEN_OFFERS of them open here by this node's clock, and one made in
        // the future or already ended is refused outright (a repeat announcement is not new).
        if self.store.offer(&offer.id)?.is_none() {
            if offer.offered_at > now + super::MAX_CLOCK_SKEW_SECS {
                return Err(refused(format!(
                    "offer made {} s in the future",
                    offer.offered_at - now
                )));
            }
            if offer.expires_at <= now {
                return Err(refused("offer ended before it arrived".into()));
            }
            let open = open_offers_from(&self.store.offers()?, &offer.from, now);
            if open >= MAX_OPEN_OFFERS {
                return Err(refused(format!(
                    "{} has {open} cases on offer here already; at most {MAX_OPEN_OFFERS}",
                    offer.from
                )));
            }
        }
        Ok(self.store.put_offer(&StoredOffer {
            signed,
            offer,
            taken_by: None,
            outcome: None,
            claimed_here: None,
            report: String::new(),
            claim_refused: None,
        })?)
    }

    /// Claims another trust's offered case for `user`: the claim is queued for the offering
    /// trust's node (delivered when it can be reached). Whether it won is in the outcome the
    /// offerer announces, and in the referral it then sends.
    pub fn claim(
        &self,
        id: &ReferralId,
        user: Option<&UserClaim>,
        now: u64,
    ) -> Result<StoredOffer, ReferralFailure> {
        let changed = self.store.change_offer(id, |stored| {
            if &stored.offer.from == self.trust {
                return Change::Keep(Err(ReferralFailure::Invalid(
                    "a trust does not claim its own offer".into(),
                )));
            }
            if !stored.is_open(now) {
                return Change::Keep(Err(ReferralFailure::Invalid(format!(
                    "offer {id} is no longer open"
                ))));
            }
            if stored.claimed_here.is_some() {
                return Change::Keep(Ok(stored.clone()));
            }
            stored.claimed_here = Some(now);
            stored.claim_refused = None;
            let claim = Claim {
                offer: *id,
                by: self.trust.clone(),
                user: user.cloned(),
                at: now,
            };
            let outbox = vec![OutboxItem {
                to: stored.offer.from.clone(),
                message: ControlRequest::ClaimOffer(SignedClaim::sign(&claim, self.key)),
                created_at: now,
            }];
            Change::Commit(
                Alongside {
                    outbox,
                    ..Alongside::default()
                },
                Ok(stored.clone()),
            )
        })?;
        changed.ok_or(ReferralFailure::NotFound(*id))?
    }

    /// At a claiming node: the offerer refused this trust's claim (its policy, or the case
    /// was taken): the reason is kept on the offer, and this trust may claim again.
    pub fn claim_refused(&self, id: &ReferralId, reason: &str) -> Result<(), ReferralFailure> {
        let reason: String = reason.chars().take(512).collect();
        self.store.change_offer(id, |stored| {
            stored.claimed_here = None;
            stored.claim_refused = Some(reason.clone());
            Change::Commit(Alongside::default(), ())
        })?;
        Ok(())
    }

    /// At the offering node, a claim whose `claim` decision allowed it (the caller's):
    /// the first one recorded takes the case; later ones are refused naming the taker.
    /// Returns the offer as it now stands; the taker's referral is made by
    /// [`Self::finish_taken`].
    pub fn take_claim(
        &self,
        claim: &Claim,
        now: u64,
    ) -> Result<Result<StoredOffer, String>, ReferralFailure> {
        let changed = self.store.change_offer(&claim.offer, |stored| {
            if &stored.offer.from != self.trust {
                return Change::Keep(Err(format!("offer {} is not this trust's", claim.offer)));
            }
            if let Some((taker, _, _)) = &stored.taken_by {
                // The same claim again (its acknowledgement was lost): the same answer.
                return Change::Keep(if taker == &claim.by {
                    Ok(stored.clone())
                } else {
                    Err(format!("offer {} was taken by {taker}", claim.offer))
                });
            }
            if !stored.is_open(now) {
                return Change::Keep(Err(format!("offer {} is no longer open", claim.offer)));
            }
            stored.taken_by = Some((claim.by.clone(), claim.user.clone(), now));
            Change::Commit(Alongside::default(), Ok(stored.clone()))
        })?;
        changed.ok_or(ReferralFailure::NotFound(claim.offer))
    }

    /// At the offering node: every taken offer without its outcome yet gets its referral
    /// to the taker (direct care; the claimant named as the specialist) and its signed
    /// outcome. Returns the outcomes made, to announce.
    pub fn finish_taken(
        &self,
        roster: &Roster,
        now: u64,
    ) -> Result<Vec<SignedOfferOutcome>, ReferralFailure> {
        let _one_at_a_time = FINISHING.lock().unwrap_or_else(|e| e.into_inner());
        let mut made = Vec::new();
        for stored in self.store.offers()? {
            let Some((taker, user, _)) = stored.taken_by.clone() else {
                continue;
            };
            if stored.outcome.is_some() || &stored.offer.from != self.trust {
                continue;
            }
            // One offer that cannot be referred (its taker left the roster, a slide is
            // gone) does not hold up the others.
            match self.finish_one(roster, &stored, taker, user, now) {
                Ok(Some(signed)) => made.push(signed),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(offer = %stored.offer.id, error = %e, "cannot refer a taken case")
                }
            }
        }
        Ok(made)
    }

    fn finish_one(
        &self,
        roster: &Roster,
        stored: &StoredOffer,
        taker: TrustCode,
        user: Option<UserClaim>,
        now: u64,
    ) -> Result<Option<SignedOfferOutcome>, ReferralFailure> {
        let o = &stored.offer;
        let recipient = match &user {
            Some(u) => Recipient::Specialist(u.id.clone()),
            None => Recipient::Queue(o.queue.clone()),
        };
        let nonce = claimed_referral_nonce(&o.id);
        let id = slidemesh_protocol::referral::referral_id(self.trust, &nonce);
        // Made already (the outcome was not written after it): the same referral.
        if self.store.referral(&id)?.is_none() {
            self.send(
                roster,
                None,
                NewReferral {
                    to: taker.clone(),
                    recipient,
                    slides: o.slides.clone(),
                    question: o.question.clone(),
                    urgency: o.urgency,
                    report: stored.report.clone(),
                    expires_at: o.expires_at.max(now + 86_400),
                    purpose: Purpose::DirectCare,
                    nonce: Some(nonce),
                },
                now,
            )?;
        }
        let outcome = OfferOutcome {
            offer: o.id,
            from: self.trust.clone(),
            taken_by: Some(taker),
            referral: Some(id),
            at: now,
        };
        let signed = SignedOfferOutcome::sign(&outcome, self.key);
        let written = self.store.change_offer(&o.id, |s| {
            if s.outcome.is_some() {
                return Change::Keep(false);
            }
            s.outcome = Some((outcome.clone(), signed.clone()));
            Change::Commit(Alongside::default(), true)
        })?;
        Ok((written == Some(true)).then_some(signed))
    }

    /// An outcome announced by the offering trust: kept with its offer.
    pub fn receive_outcome(
        &self,
        roster: &Roster,
        signed: SignedOfferOutcome,
    ) -> Result<(), ReferralFailure> {
        let refused = ReferralFailure::Refused;
        let outcome = signed
            .verify()
            .map_err(|e| refused(format!("offer outcome does not verify: {e}")))?;
        if roster.member(&outcome.from).map(|m| m.node) != Some(signed.signer) {
            return Err(refused(format!(
                "offer outcome not signed by {}'s roster key",
                outcome.from
            )));
        }
        let id = outcome.offer;
        self.store.change_offer(&id, |stored| {
            if stored.offer.from != outcome.from || stored.outcome.is_some() {
                return Change::Keep(());
            }
            stored.outcome = Some((outcome.clone(), signed.clone()));
            Change::Commit(Alongside::default(), ())
        })?;
        Ok(())
    }
}

/// What the offering trust announces about its own offers: open ones, and the outcomes of
/// those taken until they end (a member that was away learns them when it is back).
pub fn announcements(
    offers: &[StoredOffer],
    trust: &TrustCode,
    now: u64,
) -> (Vec<SignedOffer>, Vec<SignedOfferOutcome>) {
    let own = offers.iter().filter(|o| &o.offer.from == trust);
    let open = own
        .clone()
        .filter(|o| o.is_open(now))
        .map(|o| o.signed.clone())
        .collect();
    let outcomes = own
        .filter(|o| o.offer.expires_at > now)
        .filter_map(|o| o.outcome.as_ref().map(|(_, s)| s.clone()))
        .collect();
    (open, outcomes)
}
