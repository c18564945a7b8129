//! Referrals between two stores, Leeds (RR8) referring to Bradford (RAE), with Wakefield
//! (RWA) as a third member: messages handed over as plain values, as the outbox would.

use slidemesh_protocol::referral::{Coding, SNOMED_CT};
use slidemesh_protocol::wire::ControlRequest;
use slidemesh_protocol::{
    NodeKey, Opinion, Recipient, Referral, ReferralId, Roster, SignedReferral,
    SignedReferralUpdate, SlideId, Step, TrustCode, Urgency, UserClaim,
};

use super::{Party, ReferralFailure};
use crate::audit::Side;
use crate::store::Store;
use crate::store::federation::{OutboxItem, StoredGrant};
use crate::store::referrals::{Alongside, Status, StoredReferral};
use crate::testing::member;

struct Site {
    _dir: tempfile::TempDir,
    store: Store,
    trust: TrustCode,
    key: NodeKey,
}

impl Site {
    fn new(trust: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        Self {
            _dir: dir,
            store,
            trust: trust.parse().unwrap(),
            key: NodeKey::generate(),
        }
    }

    fn party(&self) -> Party<'_> {
        Party {
            store: &self.store,
            trust: &self.trust,
            key: &self.key,
        }
    }

    fn outbox(&self) -> Vec<OutboxItem> {
        self.store
            .outbox()
            .unwrap()
            .into_iter()
            .map(|(_, i)| i)
            .collect()
    }

    /// The referral updates queued for the other side, oldest first.
    fn updates(&self) -> Vec<SignedReferralUpdate> {
        self.outbox()
            .into_iter()
            .filter_map(|i| match i.message {
                ControlRequest::DeliverReferralUpdate(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    fn referral(&self, id: &ReferralId) -> StoredReferral {
        self.store.referral(id).unwrap().unwrap()
    }

    fn audit_sides(&self) -> Vec<(Side, String)> {
        self.store
            .audit_entries()
            .unwrap()
            .into_iter()
            .map(|(_, e)| (e.side, e.action))
            .collect()
    }
}

struct World {
    leeds: Site,
    bradford: Site,
    wakefield: Site,
    roster: Roster,
}

fn world() -> World {
    let (leeds, bradford, wakefield) = (Site::new("RR8"), Site::new("RAE"), Site::new("RWA"));
    let roster = Roster {
        federation: "north".into(),
        version: 1,
        quorum: 1,
        members: vec![
            member("RR8", &leeds.key),
            member("RAE", &bradford.key),
            member("RWA", &wakefield.key),
        ],
        issued_at: 1,
    };
    World {
        leeds,
        bradford,
        wakefield,
        roster,
    }
}

/// A time in the past (steps a peer dates in the future are refused).
const NOW: u64 = 1_790_000_000;

/// A referral from `from` to `to` of two slides, with its grants (signed by `from`, naming
/// it), which the test delivers first as the outbox would.
fn referral_with_grants(from: &Site, to: &str) -> (Referral, Vec<StoredGrant>) {
    let nonce = slidemesh_protocol::referral::fresh_nonce();
    let id = slidemesh_protocol::referral::referral_id(&from.trust, &nonce);
    let slides = vec![SlideId::of(b"core 1"), SlideId::of(b"core 2")];
    let grants: Vec<StoredGrant> = slides
        .iter()
        .map(|slide| {
            let grant = slidemesh_protocol::Grant {
                slide: *slide,
                owner: from.trust.clone(),
                grantee: to.parse().unwrap(),
                action: slidemesh_protocol::Action::View,
                purpose: slidemesh_protocol::Purpose::SecondOpinion,
                reference: Some(id.to_string()),
                issued_at: NOW,
                expires_at: NOW + 86_400,
            };
            StoredGrant {
                signed: slidemesh_protocol::SignedGrant::sign(&grant, &from.key).unwrap(),
                grant,
                issued_here: false,
                stored_at: NOW,
            }
        })
        .collect();
    let referral = Referral {
        id,
        nonce,
        from: from.trust.clone(),
        referrer: Some(UserClaim::new("jsmith", "pathologist").unwrap()),
        to: to.parse().unwrap(),
        recipient: Recipient::Queue("breast".into()),
        grants: grants.iter().map(|g| g.signed.id()).collect(),
        slides,
        purpose: slidemesh_protocol::Purpose::SecondOpinion,
        question: "DCIS or invasive?".into(),
        urgency: Urgency::TwoWeekWait,
        report: String::new(),
        sent_at: NOW,
        expires_at: NOW + 86_400,
    };
    (referral, grants)
}

fn referral(from: &Site, to: &str) -> Referral {
    referral_with_grants(from, to).0
}

/// Delivers `grants` to `site` as its node accepts a delivered grant.
fn deliver_grants(site: &Site, grants: &[StoredGrant]) {
    for g in grants {
        site.store.put_grant(g, None).unwrap();
    }
}

/// Leeds has sent a referral to Bradford (as `Party::send` stores it) and Bradford received
/// its grants, then it.
fn sent_and_received(w: &World) -> ReferralId {
    let (r, grants) = referral_with_grants(&w.leeds, "RAE");
    deliver_grants(&w.bradford, &grants);
    let signed = SignedReferral::sign(&r, &w.leeds.key);
    w.leeds
        .store
        .put_referral(
            &StoredReferral::new(signed.clone(), r.clone(), true),
            Alongside::default(),
        )
        .unwrap();
    w.bradford
        .party()
        .receive(&w.roster, &w.leeds.trust, signed, NOW + 1)
        .unwrap();
    r.id
}

fn opinion() -> Opinion {
    Opinion {
        author: Some(UserClaim::new("apatel", "pathologist").unwrap()),
        text: "High-grade DCIS; no invasion seen.".into(),
        diagnosis: Some(Coding {
            system: SNOMED_CT.into(),
            code: "399935008".into(),
            display: "Ductal carcinoma in situ of breast".into(),
        }),
        annotations: vec![],
    }
}

#[test]
fn a_received_referral_is_stored_once_acknowledged_and_logged_per_slide() {
    let w = world();
    let id = sent_and_received(&w);
    let stored = w.bradford.referral(&id);
    assert!(!stored.sent_here);
    assert_eq!(stored.status, Status::Delivered);
    assert_eq!(stored.peer(), &w.leeds.trust);
    let updates = w.bradford.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].verify().unwrap().step, Step::Delivered);
    assert_eq!(w.bradford.outbox()[0].to, w.leeds.trust);
    let logged = w.bradford.audit_sides();
    assert_eq!(
        logged,
        vec![
            (Side::ReferralNotice, "referral:sent".to_string()),
            (Side::ReferralNotice, "referral:sent".to_string()),
            (Side::ReferralStep, "referral:delivered".to_string()),
            (Side::ReferralStep, "referral:delivered".to_string()),
        ]
    );
    // Delivered again (the acknowledgement was lost): nothing changes, nothing is queued.
    let signed = w.leeds.referral(&id).signed;
    w.bradford
        .party()
        .receive(&w.roster, &w.leeds.trust, signed, NOW + 5)
        .unwrap();
    assert_eq!(w.bradford.updates().len(), 1);
    assert_eq!(w.bradford.audit_sides().len(), 4);

    // The acknowledgement reaches Leeds: delivered there too, once however often it comes.
    for _ in 0..2 {
        w.leeds
            .party()
            .receive_update(&w.roster, &w.bradford.trust, updates[0].clone(), NOW + 2)
            .unwrap();
    }
    let at_leeds = w.leeds.referral(&id);
    assert_eq!(at_leeds.status, Status::Delivered);
    assert_eq!(at_leeds.history.len(), 2);
    assert_eq!(at_leeds.history[1].at, NOW + 1);
}

#[test]
fn forged_and_misdirected_referrals_are_refused() {
    let w = world();
    let r = referral(&w.leeds, "RAE");
    // Signed by Wakefield's key, claiming to be from Leeds.
    let forged = SignedReferral::sign(&r, &w.wakefield.key);
    let e = w
        .bradford
        .party()
        .receive(&w.roster, &w.leeds.trust, forged, NOW)
        .unwrap_err();
    assert!(matches!(e, ReferralFailure::Refused(_)), "{e}");
    assert!(e.to_string().contains("roster key"), "{e}");
    // Leeds' genuine referral relayed by Wakefield's node.
    let genuine = SignedReferral::sign(&r, &w.leeds.key);
    let e = w
        .bradford
        .party()
        .receive(&w.roster, &w.wakefield.trust, genuine.clone(), NOW)
        .unwrap_err();
    assert!(e.to_string().contains("delivered a referral from"), "{e}");
    // For Bradford, delivered to Wakefield.
    let e = w
        .wakefield
        .party()
        .receive(&w.roster, &w.leeds.trust, genuine, NOW)
        .unwrap_err();
    assert!(e.to_string().contains("not this trust"), "{e}");
    // Malformed (a question of nothing).
    let mut empty = referral(&w.leeds, "RAE");
    empty.question = String::new();
    let e = w
        .bradford
        .party()
        .receive(
            &w.roster,
            &w.leeds.trust,
            SignedReferral::sign(&empty, &w.leeds.key),
            NOW,
        )
        .unwrap_err();
    assert!(e.to_string().contains("question"), "{e}");
    assert!(w.bradford.store.referrals().unwrap().is_empty());
    assert!(w.bradford.outbox().is_empty());
    assert!(w.bradford.audit_sides().is_empty());
}

#[test]
fn a_referral_is_received_only_after_its_own_grants() {
    let w = world();
    let (r, grants) = referral_with_grants(&w.leeds, "RAE");
    let signed = SignedReferral::sign(&r, &w.leeds.key);
    // Its grants not here yet: not a refusal, the sender asks again.
    let e = w
        .bradford
        .party()
        .receive(&w.roster, &w.leeds.trust, signed.clone(), NOW + 1)
        .unwrap_err();
    assert!(matches!(e, ReferralFailure::NotYet(_)), "{e}");
    // Grants that name another referral (a member reusing grants Bradford holds for
    // something else): refused.
    let (_, others) = referral_with_grants(&w.leeds, "RAE");
    deliver_grants(&w.bradford, &others);
    let mut borrowed = r.clone();
    borrowed.grants = others.iter().map(|g| g.signed.id()).collect();
    let e = w
        .bradford
        .party()
        .receive(
            &w.roster,
            &w.leeds.trust,
            SignedReferral::sign(&borrowed, &w.leeds.key),
            NOW + 1,
        )
        .unwrap_err();
    assert!(matches!(e, ReferralFailure::Refused(_)), "{e}");
    assert!(e.to_string().contains("for referral"), "{e}");
    deliver_grants(&w.bradford, &grants);
    w.bradford
        .party()
        .receive(&w.roster, &w.leeds.trust, signed, NOW + 1)
        .unwrap();
}

#[test]
fn each_side_takes_only_its_own_steps_and_an_answer_reaches_the_referrer() {
    let w = world();
    let id = sent_and_received(&w);
    let specialist = UserClaim::new("apatel", "pathologist").unwrap();
    let bradford = w.bradford.party();
    // Opening twice is one step.
    bradford
        .take_step(&id, Some(&specialist), Step::Opened, NOW + 10)
        .unwrap();
    bradford
        .take_step(&id, Some(&specialist), Step::Opened, NOW + 11)
        .unwrap();
    assert_eq!(w.bradford.referral(&id).status, Status::Opened);
    assert_eq!(w.bradford.updates().len(), 2, "delivered, opened");
    // Closing and withdrawing are the referrer's.
    for step in [Step::Closed, Step::Withdrawn] {
        let e = bradford.take_step(&id, None, step, NOW + 12).unwrap_err();
        assert!(e.to_string().contains("the referring trust"), "{e}");
    }
    // An opinion with a made-up SNOMED CT id is refused before anything is written.
    let mut wrong = opinion();
    wrong.diagnosis.as_mut().unwrap().code = "399935009".into();
    let e = bradford
        .take_step(&id, Some(&specialist), Step::Answered(wrong), NOW + 13)
        .unwrap_err();
    assert!(e.to_string().contains("SNOMED"), "{e}");
    // So is one marking a slide the referral does not name.
    let mut elsewhere = opinion();
    elsewhere.annotations.push(slidemesh_protocol::Annotation {
        slide: SlideId::of(b"another case"),
        shape: slidemesh_protocol::Shape::Point(slidemesh_protocol::Point::new(812.5, 96.0)),
        text: "comedo necrosis".into(),
    });
    let e = bradford
        .take_step(&id, Some(&specialist), Step::Answered(elsewhere), NOW + 13)
        .unwrap_err();
    assert!(e.to_string().contains("does not name"), "{e}");
    let answered = bradford
        .take_step(&id, Some(&specialist), Step::Answered(opinion()), NOW + 20)
        .unwrap();
    assert_eq!(answered.status, Status::Answered);

    // Leeds receives the steps in order; the answer carries the opinion.
    let leeds = w.leeds.party();
    for update in w.bradford.updates() {
        leeds
            .receive_update(&w.roster, &w.bradford.trust, update, NOW + 30)
            .unwrap();
    }
    let at_leeds = w.leeds.referral(&id);
    assert_eq!(at_leeds.status, Status::Answered);
    assert_eq!(super::opinion(&at_leeds), Some(&opinion()));
    let steps: Vec<_> = at_leeds.history.iter().map(|h| h.status).collect();
    assert_eq!(
        steps,
        [
            Status::Sent,
            Status::Delivered,
            Status::Opened,
            Status::Answered
        ]
    );
    assert_eq!(
        at_leeds.history[3].user.as_deref(),
        Some("apatel (pathologist)")
    );

    // A step Bradford took, replayed as if Wakefield sent it, or Bradford claiming the
    // referrer's step: refused.
    let stolen = w.bradford.updates().pop().unwrap();
    let e = leeds
        .receive_update(&w.roster, &w.wakefield.trust, stolen, NOW + 30)
        .unwrap_err();
    assert!(matches!(e, ReferralFailure::Refused(_)), "{e}");
    let claimed = SignedReferralUpdate::sign(
        &slidemesh_protocol::ReferralUpdate {
            referral: id,
            by: w.bradford.trust.clone(),
            user: None,
            at: NOW + 30,
            step: Step::Closed,
        },
        &w.bradford.key,
    );
    let e = leeds
        .receive_update(&w.roster, &w.bradford.trust, claimed, NOW + 30)
        .unwrap_err();
    assert!(e.to_string().contains("may not mark"), "{e}");

    // Leeds closes it; Bradford learns; nothing more can happen.
    leeds.take_step(&id, None, Step::Closed, NOW + 40).unwrap();
    let close = w.leeds.updates().pop().unwrap();
    bradford
        .receive_update(&w.roster, &w.leeds.trust, close, NOW + 41)
        .unwrap();
    assert_eq!(w.bradford.referral(&id).status, Status::Closed);
    let e = bradford
        .take_step(&id, Some(&specialist), Step::Opened, NOW + 41)
        .unwrap_err();
    assert!(e.to_string().contains("closed already"), "{e}");
}

#[test]
fn withdrawing_revokes_the_grants_and_tells_the_receiver_after_them() {
    let w = world();
    let id = sent_and_received(&w);
    let leeds = w.leeds.party();
    // Closing an unanswered referral is refused: withdrawal is what revokes its grants.
    let e = leeds
        .take_step(&id, None, Step::Closed, NOW + 5)
        .unwrap_err();
    assert!(e.to_string().contains("withdraw it instead"), "{e}");
    leeds
        .take_step(&id, None, Step::Withdrawn, NOW + 10)
        .unwrap();
    let stored = w.leeds.referral(&id);
    assert_eq!(stored.status, Status::Withdrawn);
    for grant in &stored.referral.grants {
        let revocations = w.leeds.store.revocations(grant).unwrap();
        assert_eq!(revocations.len(), 1, "grant {grant}");
        assert_eq!(revocations[0].verify().unwrap().grant, *grant);
    }
    let kinds: Vec<&str> = w
        .leeds
        .outbox()
        .iter()
        .map(|i| match &i.message {
            ControlRequest::DeliverRevocation(_) => "revocation",
            ControlRequest::DeliverReferralUpdate(_) => "update",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["revocation", "revocation", "update"]);
    let update = w.leeds.updates().pop().unwrap();
    w.bradford
        .party()
        .receive_update(&w.roster, &w.leeds.trust, update, NOW + 11)
        .unwrap();
    assert_eq!(w.bradford.referral(&id).status, Status::Withdrawn);
    let e = w
        .bradford
        .party()
        .take_step(&id, None, Step::Answered(opinion()), NOW + 20)
        .unwrap_err();
    assert!(e.to_string().contains("withdrawn already"), "{e}");
}

#[test]
fn referrals_expire_on_each_side_by_its_own_clock() {
    let w = world();
    let id = sent_and_received(&w);
    let end = w.leeds.referral(&id).referral.expires_at;
    assert!(w.leeds.party().expire_due(end - 1).unwrap().is_empty());
    assert_eq!(w.leeds.party().expire_due(end).unwrap(), vec![id]);
    assert_eq!(w.bradford.party().expire_due(end + 60).unwrap(), vec![id]);
    assert!(w.leeds.party().expire_due(end + 120).unwrap().is_empty());
    for site in [&w.leeds, &w.bradford] {
        let stored = site.referral(&id);
        assert_eq!(stored.status, Status::Expired);
        assert_eq!(stored.history.last().unwrap().at, end);
    }
    // A late answer changes nothing.
    let e = w
        .bradford
        .party()
        .take_step(&id, None, Step::Answered(opinion()), end + 200)
        .unwrap_err();
    assert!(e.to_string().contains("expired already"), "{e}");
}

#[test]
fn statuses_move_forward_and_final_ones_stay() {
    use Status::*;
    assert_eq!(Answered.after(Opened), Answered);
    assert_eq!(Opened.after(Answered), Answered);
    assert_eq!(Withdrawn.after(Answered), Withdrawn);
    assert_eq!(Answered.after(Closed), Closed);
    assert_eq!(Expired.after(Closed), Expired);
}

mod queue {
    use slidemesh_protocol::{Claim, Offer, SignedOffer, Urgency};

    use super::*;
    use crate::referrals::queue::figures;
    use crate::store::referrals::StoredOffer;

    /// Leeds's offer of a case to the gi queue, made and ending at these times, signed.
    fn leeds_offer(w: &World, offered_at: u64, expires_at: u64) -> (Offer, SignedOffer) {
        let nonce = slidemesh_protocol::referral::fresh_nonce();
        let offer = Offer {
            id: slidemesh_protocol::referral::referral_id(&w.leeds.trust, &nonce),
            nonce,
            from: w.leeds.trust.clone(),
            queue: "gi".into(),
            slides: vec![SlideId::of(b"biopsy")],
            question: "Dysplasia?".into(),
            urgency: Urgency::Routine,
            offered_at,
            expires_at,
        };
        let signed = SignedOffer::sign(&offer, &w.leeds.key);
        (offer, signed)
    }

    #[test]
    fn offers_made_in_the_future_or_already_ended_are_refused() {
        let w = world();
        let make = |offered_at, expires_at| leeds_offer(&w, offered_at, expires_at).1;
        let bradford = w.bradford.party();
        let e = bradford
            .receive_offer(&w.roster, make(NOW + 3_600, NOW + 86_400), NOW)
            .unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
        let e = bradford
            .receive_offer(&w.roster, make(NOW - 7_200, NOW - 3_600), NOW)
            .unwrap_err();
        assert!(e.to_string().contains("ended"), "{e}");
        assert!(
            bradford
                .receive_offer(&w.roster, make(NOW, NOW + 86_400), NOW)
                .unwrap()
        );
    }

    /// Leeds's offer of a case to the gi queue, stored at Leeds (as `Party::offer` would,
    /// without the slide check) and received by Bradford and Wakefield.
    fn offered(w: &World) -> Offer {
        let (offer, signed) = leeds_offer(w, NOW, NOW + 86_400);
        w.leeds
            .store
            .put_offer(&StoredOffer {
                signed: signed.clone(),
                offer: offer.clone(),
                taken_by: None,
                outcome: None,
                claimed_here: None,
                report: String::new(),
                claim_refused: None,
            })
            .unwrap();
        for site in [&w.bradford, &w.wakefield] {
            assert!(
                site.party()
                    .receive_offer(&w.roster, signed.clone(), NOW + 1)
                    .unwrap()
            );
            // Announced again: nothing new.
            assert!(
                !site
                    .party()
                    .receive_offer(&w.roster, signed.clone(), NOW + 1)
                    .unwrap()
            );
        }
        offer
    }

    fn claim_by(site: &Site, offer: &Offer) -> Claim {
        Claim {
            offer: offer.id,
            by: site.trust.clone(),
            user: Some(UserClaim::new("apatel", "pathologist").unwrap()),
            at: NOW + 5,
        }
    }

    #[test]
    fn the_first_claim_takes_the_case_and_later_ones_name_the_taker() {
        let w = world();
        let offer = offered(&w);
        let leeds = w.leeds.party();
        assert!(
            leeds
                .take_claim(&claim_by(&w.bradford, &offer), NOW + 6)
                .unwrap()
                .is_ok()
        );
        let lost = leeds
            .take_claim(&claim_by(&w.wakefield, &offer), NOW + 6)
            .unwrap()
            .unwrap_err();
        assert!(lost.contains("taken by RAE"), "{lost}");
        // Bradford's claim delivered again: the same answer, still Bradford's.
        let again = leeds
            .take_claim(&claim_by(&w.bradford, &offer), NOW + 7)
            .unwrap()
            .unwrap();
        assert_eq!(again.taken_by.unwrap().0, w.bradford.trust);
        // A claim of an offer that is not Leeds's, at Leeds: refused.
        let foreign = Claim {
            offer: ReferralId::of(b"unknown"),
            ..claim_by(&w.bradford, &offer)
        };
        assert!(matches!(
            leeds.take_claim(&foreign, NOW),
            Err(ReferralFailure::NotFound(_))
        ));
    }

    #[test]
    fn a_claim_is_queued_for_the_offerer_once_and_an_outcome_closes_the_offer_everywhere() {
        let w = world();
        let offer = offered(&w);
        let bradford = w.bradford.party();
        let user = UserClaim::new("apatel", "pathologist").unwrap();
        bradford.claim(&offer.id, Some(&user), NOW + 1).unwrap();
        bradford.claim(&offer.id, Some(&user), NOW + 2).unwrap();
        let claims: Vec<_> = w
            .bradford
            .outbox()
            .into_iter()
            .filter(|i| matches!(i.message, ControlRequest::ClaimOffer(_)))
            .collect();
        assert_eq!(
            claims.len(),
            1,
            "one claim queued however often it is asked"
        );
        assert_eq!(claims[0].to, w.leeds.trust);
        // Refused by Leeds (say, the claimant's role): said on the offer, and Bradford may
        // claim it again, which queues a new claim.
        bradford
            .claim_refused(&offer.id, "not a pathologist")
            .unwrap();
        let at_bradford = w.bradford.store.offer(&offer.id).unwrap().unwrap();
        assert_eq!(
            at_bradford.claim_refused.as_deref(),
            Some("not a pathologist")
        );
        assert_eq!(at_bradford.claimed_here, None);
        bradford.claim(&offer.id, Some(&user), NOW + 3).unwrap();
        let at_bradford = w.bradford.store.offer(&offer.id).unwrap().unwrap();
        assert_eq!(
            (at_bradford.claim_refused, at_bradford.claimed_here),
            (None, Some(NOW + 3))
        );
        // Leeds's own offer cannot be claimed by Leeds.
        let e = w.leeds.party().claim(&offer.id, None, NOW + 1).unwrap_err();
        assert!(e.to_string().contains("own offer"), "{e}");

        // Leeds takes Bradford's claim; its outcome, forged by Wakefield, is refused; Leeds's
        // own closes the offer at Wakefield.
        let leeds = w.leeds.party();
        leeds
            .take_claim(&claim_by(&w.bradford, &offer), NOW + 3)
            .unwrap()
            .unwrap();
        let outcome = slidemesh_protocol::OfferOutcome {
            offer: offer.id,
            from: w.leeds.trust.clone(),
            taken_by: Some(w.bradford.trust.clone()),
            referral: None,
            at: NOW + 3,
        };
        let forged = slidemesh_protocol::SignedOfferOutcome::sign(&outcome, &w.wakefield.key);
        assert!(
            w.wakefield
                .party()
                .receive_outcome(&w.roster, forged)
                .is_err()
        );
        assert!(
            w.wakefield
                .store
                .offer(&offer.id)
                .unwrap()
                .unwrap()
                .is_open(NOW + 4)
        );
        let signed = slidemesh_protocol::SignedOfferOutcome::sign(&outcome, &w.leeds.key);
        w.wakefield
            .party()
            .receive_outcome(&w.roster, signed)
            .unwrap();
        let at_wakefield = w.wakefield.store.offer(&offer.id).unwrap().unwrap();
        assert!(!at_wakefield.is_open(NOW + 4));
        let e = w
            .wakefield
            .party()
            .claim(&offer.id, None, NOW + 5)
            .unwrap_err();
        assert!(e.to_string().contains("no longer open"), "{e}");

        let shown = figures(&w.leeds.store.offers().unwrap(), &[], NOW + 10);
        assert_eq!(shown.len(), 1);
        assert_eq!((shown[0].open, shown[0].taken), (0, 1));
        assert_eq!(shown[0].median_wait_secs, Some(3));
    }
}

#[test]
fn a_peers_answer_marking_a_slide_outside_the_referral_is_refused() {
    let w = world();
    let id = sent_and_received(&w);
    let mut answer = opinion();
    answer.annotations.push(slidemesh_protocol::Annotation {
        slide: SlideId::of(b"another case"),
        shape: slidemesh_protocol::Shape::Point(slidemesh_protocol::Point::new(10.0, 10.0)),
        text: String::new(),
    });
    // Signed by Bradford's roster key, as its node would (its own checks bypassed).
    let update = slidemesh_protocol::ReferralUpdate {
        referral: id,
        by: w.bradford.trust.clone(),
        user: None,
        at: NOW + 20,
        step: Step::Answered(answer),
    };
    let signed = SignedReferralUpdate::sign(&update, &w.bradford.key);
    let e = w
        .leeds
        .party()
        .receive_update(&w.roster, &w.bradford.trust, signed, NOW + 30)
        .unwrap_err();
    assert!(e.to_string().contains("does not name"), "{e}");
    assert_ne!(w.leeds.referral(&id).status, Status::Answered);
}

#[test]
fn a_referral_to_a_named_specialist_is_for_them_and_their_cover_only() {
    let w = world();
    let id = sent_and_received(&w);
    let mut at_bradford = w.bradford.referral(&id);
    let person = |id: &str| UserClaim::new(id, "pathologist").unwrap();
    let directory = slidemesh_protocol::Directory {
        trust: w.bradford.trust.clone(),
        issued_at: NOW,
        queues: vec![],
        specialists: vec![slidemesh_protocol::SpecialistEntry {
            account: "apatel".into(),
            name: "Dr A Patel".into(),
            queues: vec![],
            covered_by: Some("bcover".into()),
        }],
    };
    at_bradford.referral.recipient = Recipient::Specialist("apatel".into());
    for (who, expected) in [("apatel", true), ("bcover", true), ("cother", false)] {
        assert_eq!(
            super::addressed_to(&at_bradford, Some(&person(who)), Some(&directory)),
            expected,
            "{who}"
        );
    }
    // Without a directory, only the specialist; the trust's node itself always.
    assert!(!super::addressed_to(
        &at_bradford,
        Some(&person("bcover")),
        None
    ));
    assert!(super::addressed_to(&at_bradford, None, None));
    // A queue's referral is for whoever there may answer; the referring side is not narrowed.
    at_bradford.referral.recipient = Recipient::Queue("breast".into());
    assert!(super::addressed_to(
        &at_bradford,
        Some(&person("cother")),
        None
    ));
    let mut at_leeds = w.leeds.referral(&id);
    at_leeds.referral.recipient = Recipient::Specialist("apatel".into());
    assert!(super::addressed_to(
        &at_leeds,
        Some(&person("jsmith")),
        None
    ));
}

#[test]
fn quotas_count_only_what_is_open_from_that_trust() {
    let w = world();
    let id = sent_and_received(&w);
    let received = w.bradford.referral(&id);
    let mut closed = received.clone();
    closed.status = Status::Closed;
    let sent = w.leeds.referral(&id);
    let all = vec![received.clone(), received, closed, sent];
    assert_eq!(super::open_from(&all, &w.leeds.trust), 2);
    assert_eq!(super::open_from(&all, &w.bradford.trust), 0);
}
