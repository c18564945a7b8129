//! Referrals: one trust asks another for a pathologist's opinion on a case's slides.
//!
//! The referring node signs a [`Referral`] (the slides, the question, the urgency, the
//! report so far, who it is for) and the second-opinion grants it needs, scoped to it (each
//! grant's reference is the referral's id) and ending with it. Each later step (delivered,
//! opened, answered, closed, withdrawn, expired) is a [`ReferralUpdate`] signed by the node
//! of the trust that took it and sent to the other side, so both keep the same timestamped
//! history. An answer carries the specialist's [`Opinion`]. Whether a node may speak for
//! the trust a statement names is the receiver's question (the roster's key for it).

use serde::{Deserialize, Serialize};

use crate::annotation::{self, Annotation};
use crate::grant::Purpose;
use crate::ids::{GrantId, ReferralId, SlideId};
use crate::sign::{Signed, Statement};
use crate::trust::TrustCode;
use crate::user::UserClaim;

/// Signature domain for referrals.
pub const REFERRAL_DOMAIN: &str = "slidemesh/referral/v1";
/// Signature domain for referral updates.
pub const REFERRAL_UPDATE_DOMAIN: &str = "slidemesh/referral-update/v1";

/// Most slides one referral names.
pub const MAX_REFERRAL_SLIDES: usize = 64;
/// Longest clinical question, in bytes.
pub const MAX_QUESTION: usize = 4 << 10;
/// Longest report text or opinion, in bytes.
pub const MAX_REPORT: usize = 64 << 10;
/// Longest queue name or coded value, in bytes.
pub const MAX_NAME: usize = 128;

/// How soon the referring pathologist needs the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    Routine,
    Urgent,
    /// The NHS two-week-wait suspected cancer pathway.
    TwoWeekWait,
}

impl Urgency {
    pub const ALL: [Urgency; 3] = [Urgency::Routine, Urgency::Urgent, Urgency::TwoWeekWait];

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::Urgent => "urgent",
            Urgency::TwoWeekWait => "two-week-wait",
        }
    }
}

impl std::str::FromStr for Urgency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| format!("urgency must be routine, urgent or two-week-wait, got {s:?}"))
    }
}

impl std::fmt::Display for Urgency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of a referral or offer made by `from` with `nonce`: BLAKE3 over both, so no other
/// trust can sign a statement under an id a member announced (receivers recompute it).
pub fn referral_id(from: &TrustCode, nonce: &[u8; 16]) -> ReferralId {
    let mut hasher = blake3::Hasher::new_derive_key("slidemesh referral id v1");
    hasher.update(from.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(nonce);
    ReferralId::from(hasher.finalize())
}

/// 16 bytes from the operating system's random source, for a new referral's or offer's id.
pub fn fresh_nonce() -> [u8; 16] {
    crate::wire::fresh_nonce()
}

/// The longest a referral or offer stays open.
pub const MAX_LIFETIME_SECS: u64 = 366 * 86_400;

/// Checks a statement's id against its maker and nonce, and its times: the end after the
/// start and within [`MAX_LIFETIME_SECS`] of it.
fn check_id_and_times(
    what: &str,
    id: &ReferralId,
    from: &TrustCode,
    nonce: &[u8; 16],
    start: u64,
    end: u64,
) -> Result<(), ReferralError> {
    if *id != referral_id(from, nonce) {
        return Err(ReferralError(format!(
            "the {what}'s id is not {from}'s with its nonce"
        )));
    }
    if end <= start {
        return Err(ReferralError(format!("the {what} ends before it starts")));
    }
    if end - start > MAX_LIFETIME_SECS {
        return Err(ReferralError(format!(
            "the {what} stays open longer than {} days",
            MAX_LIFETIME_SECS / 86_400
        )));
    }
    Ok(())
}

/// Who at the receiving trust the referral is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// A named specialist (their account at the receiving trust).
    Specialist(String),
    /// A sub-specialty queue there (`breast`, `gi`, `skin`, `haematopathology`, ...).
    Queue(String),
}

/// A referral, as the referring node signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// [`referral_id`] of `from` and `nonce`.
    pub id: ReferralId,
    pub nonce: [u8; 16],
    /// The referring trust (its node signs).
    pub from: TrustCode,
    /// The referring pathologist; `None` when the trust's node refers on its own account.
    pub referrer: Option<UserClaim>,
    pub to: TrustCode,
    pub recipient: Recipient,
    /// The case's slides, each owned by `from`.
    pub slides: Vec<SlideId>,
    /// The grants made for this referral, one per slide, in the order of `slides`.
    pub grants: Vec<GrantId>,
    /// Their purpose: second-opinion for a referral; direct-care for a case a member claimed
    /// from the co-operative's queue (it reports it).
    pub purpose: Purpose,
    pub question: String,
    pub urgency: Urgency,
    /// The relevant report text so far (may be empty).
    pub report: String,
    /// Unix seconds.
    pub sent_at: u64,
    /// Unix seconds; the referral and its grants end then.
    pub expires_at: u64,
}

/// Why a referral or update is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferralError(pub String);

fn check_text(what: &str, text: &str, max: usize, required: bool) -> Result<(), ReferralError> {
    if required && text.trim().is_empty() {
        return Err(ReferralError(format!("{what} must not be empty")));
    }
    if text.len() > max {
        return Err(ReferralError(format!(
            "{what} is {} bytes; at most {max}",
            text.len()
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(ReferralError(format!("{what} contains control characters")));
    }
    Ok(())
}

impl Referral {
    /// Checks what a receiver must not trust blindly: sizes, texts, one grant per slide,
    /// an end after the start. (The signer's right to speak for `from` is the roster's.)
    pub fn validate(&self) -> Result<(), ReferralError> {
        if self.from == self.to {
            return Err(ReferralError("a trust cannot refer to itself".into()));
        }
        if self.slides.is_empty() || self.slides.len() > MAX_REFERRAL_SLIDES {
            return Err(ReferralError(format!(
                "a referral names 1 to {MAX_REFERRAL_SLIDES} slides, this one {}",
                self.slides.len()
            )));
        }
        let mut unique = self.slides.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != self.slides.len() {
            return Err(ReferralError("a slide is named twice".into()));
        }
        if self.grants.len() != self.slides.len() {
            return Err(ReferralError(format!(
                "{} grants for {} slides; one per slide",
                self.grants.len(),
                self.slides.len()
            )));
        }
        if let Some(referrer) = &self.referrer {
            referrer
                .validate()
                .map_err(|e| ReferralError(format!("referrer: {e}")))?;
        }
        match &self.recipient {
            Recipient::Specialist(name) | Recipient::Queue(name) => {
                check_text("recipient", name, MAX_NAME, true)?
            }
        }
        check_text("question", &self.question, MAX_QUESTION, true)?;
        check_text("report", &self.report, MAX_REPORT, false)?;
        check_id_and_times(
            "referral",
            &self.id,
            &self.from,
            &self.nonce,
            self.sent_at,
            self.expires_at,
        )?;
        if !matches!(
            self.purpose,
            Purpose::DirectCare | Purpose::SecondOpinion | Purpose::Mdt
        ) {
            return Err(ReferralError(format!(
                "a referral is for care, not {}",
                self.purpose
            )));
        }
        Ok(())
    }
}

impl Statement for Referral {
    const DOMAIN: &'static str = REFERRAL_DOMAIN;
}

/// A [`Referral`] signed by the referring trust's node.
pub type SignedReferral = Signed<Referral>;

/// A coded value (SNOMED CT for diagnoses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    /// The code system's URI (`http://snomed.info/sct`).
    pub system: String,
    pub code: String,
    pub display: String,
}

/// The SNOMED CT code system URI, as FHIR names it.
pub const SNOMED_CT: &str = "http://snomed.info/sct";

/// A specialist's answer to a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opinion {
    /// The specialist who wrote it; `None` when the receiving trust's node answered on its
    /// own account.
    pub author: Option<UserClaim>,
    pub text: String,
    pub diagnosis: Option<Coding>,
    /// The marks drawn on the referral's slides (each names one of them).
    pub annotations: Vec<Annotation>,
}

impl Opinion {
    pub fn validate(&self) -> Result<(), ReferralError> {
        if let Some(author) = &self.author {
            author
                .validate()
                .map_err(|e| ReferralError(format!("author: {e}")))?;
        }
        check_text("opinion", &self.text, MAX_REPORT, true)?;
        if let Some(code) = &self.diagnosis {
            check_text("diagnosis system", &code.system, MAX_NAME, true)?;
            check_text("diagnosis code", &code.code, MAX_NAME, true)?;
            check_text("diagnosis display", &code.display, MAX_NAME * 4, false)?;
            if code.system == SNOMED_CT && !is_sctid(&code.code) {
                return Err(ReferralError(format!(
                    "{:?} is not a SNOMED CT concept id",
                    code.code
                )));
            }
        }
        annotation::validate_all(&self.annotations)?;
        Ok(())
    }
}

/// A SNOMED CT identifier: 6 to 18 digits, no leading zero, its last digit a Verhoeff check
/// digit over the rest.
pub fn is_sctid(code: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    if !(6..=18).contains(&code.len())
        || code.starts_with('0')
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    // The partition (the two digits before the check digit) says what the id names: a
    // concept is 00 (short format) or 10 (long format); descriptions and relationships
    // are not diagnoses.
    let partition = &code[code.len() - 3..code.len() - 1];
    if partition != "00" && partition != "10" {
        return false;
    }
    let check = code.bytes().rev().enumerate().fold(0u8, |c, (i, b)| {
        D[c as usize][P[i % 8][(b - b'0') as usize] as usize]
    });
    check == 0
}

/// One step of a referral's life after it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The receiving node stored it (sent by the receiver).
    Delivered,
    /// Someone at the receiving trust opened it (sent by the receiver).
    Opened,
    /// The specialist's opinion (sent by the receiver).
    Answered(Opinion),
    /// The referring trust is done with it (sent by the referrer).
    Closed,
    /// The referring trust took it back; its grants are revoked (sent by the referrer).
    Withdrawn,
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Delivered => "delivered",
            Step::Opened => "opened",
            Step::Answered(_) => "answered",
            Step::Closed => "closed",
            Step::Withdrawn => "withdrawn",
        }
    }

    /// Whether the receiving trust takes this step (else the referring one does).
    pub fn by_receiver(&self) -> bool {
        matches!(self, Step::Delivered | Step::Opened | Step::Answered(_))
    }
}

/// A step, as the node of the trust that took it signs it for the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralUpdate {
    pub referral: ReferralId,
    /// The trust that took the step (its node signs).
    pub by: TrustCode,
    /// The person who took it, when one did.
    pub user: Option<UserClaim>,
    /// Unix seconds.
    pub at: u64,
    pub step: Step,
}

impl ReferralUpdate {
    pub fn validate(&self) -> Result<(), ReferralError> {
        if let Some(user) = &self.user {
            user.validate()
                .map_err(|e| ReferralError(format!("user: {e}")))?;
        }
        if let Step::Answered(opinion) = &self.step {
            opinion.validate()?;
        }
        Ok(())
    }
}

/// Read at every version: only an answer's shape changed at 3 (it carries annotations), and
/// an answer written before fails to decode rather than being misread.
impl Statement for ReferralUpdate {
    const DOMAIN: &'static str = REFERRAL_UPDATE_DOMAIN;
}

/// A [`ReferralUpdate`] signed by the node of the trust that took the step.
pub type SignedReferralUpdate = Signed<ReferralUpdate>;

/// Signature domains for the shared reporting queue.
pub const OFFER_DOMAIN: &str = "slidemesh/offer/v1";
pub const CLAIM_DOMAIN: &str = "slidemesh/claim/v1";
pub const OFFER_OUTCOME_DOMAIN: &str = "slidemesh/offer-outcome/v1";

/// A case a trust with a backlog offers to the co-operative's queue for a sub-specialty:
/// announced to every member; any with capacity may claim it from the offering trust, whose
/// node gives it to the first claim it receives and refers the case there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// [`referral_id`] of `from` and `nonce`.
    pub id: ReferralId,
    pub nonce: [u8; 16],
    pub from: TrustCode,
    /// The sub-specialty queue (`breast`, `gi`, ...).
    pub queue: String,
    pub slides: Vec<SlideId>,
    /// A summary of the case for every member to read (no patient identifiers: the report
    /// travels only with the referral to the trust that takes it).
    pub question: String,
    pub urgency: Urgency,
    pub offered_at: u64,
    pub expires_at: u64,
}

impl Offer {
    pub fn validate(&self) -> Result<(), ReferralError> {
        if self.slides.is_empty() || self.slides.len() > MAX_REFERRAL_SLIDES {
            return Err(ReferralError(format!(
                "an offer names 1 to {MAX_REFERRAL_SLIDES} slides, this one {}",
                self.slides.len()
            )));
        }
        check_text("queue", &self.queue, MAX_NAME, true)?;
        check_text("question", &self.question, MAX_QUESTION, true)?;
        check_id_and_times(
            "offer",
            &self.id,
            &self.from,
            &self.nonce,
            self.offered_at,
            self.expires_at,
        )?;
        Ok(())
    }
}

impl Statement for Offer {
    const DOMAIN: &'static str = OFFER_DOMAIN;
}

pub type SignedOffer = Signed<Offer>;

/// A member's claim of an offer, sent to the offering trust's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub offer: ReferralId,
    pub by: TrustCode,
    /// The pathologist who will report it.
    pub user: Option<UserClaim>,
    pub at: u64,
}

impl Statement for Claim {
    const DOMAIN: &'static str = CLAIM_DOMAIN;
}

pub type SignedClaim = Signed<Claim>;

/// The offering trust's word on an offer: who took it (the case is then referred to them
/// under `referral`), or that it is no longer on offer (withdrawn or expired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferOutcome {
    pub offer: ReferralId,
    pub from: TrustCode,
    pub taken_by: Option<TrustCode>,
    pub referral: Option<ReferralId>,
    pub at: u64,
}

impl Statement for OfferOutcome {
    const DOMAIN: &'static str = OFFER_OUTCOME_DOMAIN;
}

pub type SignedOfferOutcome = Signed<OfferOutcome>;

/// Signature domain for directories.
pub const DIRECTORY_DOMAIN: &str = "slidemesh/directory/v1";
/// Most queues and specialists one trust's directory lists.
pub const MAX_QUEUES: usize = 64;
pub const MAX_SPECIALISTS: usize = 1024;

/// A trust's referral directory: the sub-specialty queues it takes referrals for and its
/// named specialists (with who covers for them), signed by its node and spread to every
/// member, so a referral form offers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub trust: TrustCode,
    /// Unix seconds; a newer directory replaces an older one.
    pub issued_at: u64,
    pub queues: Vec<QueueEntry>,
    pub specialists: Vec<SpecialistEntry>,
}

/// A sub-specialty queue (`breast`, `gi`, `skin`, `haematopathology`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Lowercase letters, digits and '-': what a referral names.
    pub name: String,
    /// How people read it ("Breast pathology").
    pub title: String,
}

/// A named specialist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialistEntry {
    /// Their account at the trust (what a referral names).
    pub account: String,
    pub name: String,
    /// The queues they report.
    pub queues: Vec<String>,
    /// Who covers while they are away (an account of the same trust), if anyone.
    pub covered_by: Option<String>,
}

impl Directory {
    pub fn validate(&self) -> Result<(), ReferralError> {
        if self.queues.len() > MAX_QUEUES || self.specialists.len() > MAX_SPECIALISTS {
            return Err(ReferralError(format!(
                "a directory lists at most {MAX_QUEUES} queues and {MAX_SPECIALISTS} specialists"
            )));
        }
        for q in &self.queues {
            let ok = !q.name.is_empty()
                && q.name.len() <= MAX_NAME
                && q.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ReferralError(format!(
                    "queue name {:?}: lowercase letters, digits and '-' only",
                    q.name
                )));
            }
            check_text("queue title", &q.title, MAX_NAME, false)?;
        }
        for s in &self.specialists {
            UserClaim::new(s.account.clone(), "pathologist")
                .map_err(|e| ReferralError(format!("specialist: {e}")))?;
            check_text("specialist name", &s.name, MAX_NAME, false)?;
            if let Some(q) = s
                .queues
                .iter()
                .find(|q| !self.queues.iter().any(|e| &e.name == *q))
            {
                return Err(ReferralError(format!(
                    "specialist {} reports queue {q:?}, which the directory does not list",
                    s.account
                )));
            }
            if let Some(cover) = &s.covered_by
                && !self.specialists.iter().any(|o| &o.account == cover)
            {
                return Err(ReferralError(format!(
                    "specialist {} is covered by {cover:?}, who is not listed",
                    s.account
                )));
            }
        }
        Ok(())
    }
}

impl Statement for Directory {
    const DOMAIN: &'static str = DIRECTORY_DOMAIN;
}

/// A [`Directory`] signed by its trust's node.
pub type SignedDirectory = Signed<Directory>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::NodeKey;

    fn referral() -> Referral {
        let from: TrustCode = "RR8".parse().unwrap();
        let nonce = [7; 16];
        Referral {
            id: referral_id(&from, &nonce),
            nonce,
            from,
            referrer: Some(UserClaim::new("jsmith", "pathologist").unwrap()),
            to: "RAE".parse().unwrap(),
            recipient: Recipient::Queue("breast".into()),
            slides: vec![SlideId::of(b"a"), SlideId::of(b"b")],
            grants: vec![GrantId::of(b"ga"), GrantId::of(b"gb")],
            purpose: Purpose::SecondOpinion,
            question: "Grade this DCIS?".into(),
            urgency: Urgency::TwoWeekWait,
            report: "Core biopsy, left breast.\nSee slides.".into(),
            sent_at: 1_800_000_000,
            expires_at: 1_800_600_000,
        }
    }

    #[test]
    fn referrals_sign_verify_and_detect_tampering() {
        let key = NodeKey::generate();
        let r = referral();
        r.validate().unwrap();
        let signed = SignedReferral::sign(&r, &key);
        assert_eq!(signed.verify().unwrap(), r);
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify().is_err());
        // An update's signature is no referral's.
        let as_update: Signed<ReferralUpdate> =
            postcard::from_bytes(&postcard::to_allocvec(&signed).unwrap()).unwrap();
        assert!(as_update.verify().is_err());
    }

    #[test]
    fn malformed_referrals_are_refused_with_the_reason() {
        type Spoil = fn(&mut Referral);
        let cases: Vec<(Spoil, &str)> = vec![
            (|r| r.to = r.from.clone(), "itself"),
            (|r| r.slides.clear(), "1 to 64"),
            (|r| r.slides[1] = r.slides[0], "twice"),
            (|r| r.grants.pop().map(drop).unwrap_or(()), "one per slide"),
            (|r| r.question = "  ".into(), "question must not be empty"),
            (|r| r.question = "a".repeat(MAX_QUESTION + 1), "at most"),
            (|r| r.report = "bell\u{7}".into(), "control characters"),
            (|r| r.expires_at = r.sent_at, "ends before"),
            (
                |r| r.expires_at = r.sent_at + MAX_LIFETIME_SECS + 1,
                "longer than",
            ),
            (|r| r.nonce[0] ^= 1, "nonce"),
            (|r| r.from = "RWA".parse().unwrap(), "nonce"),
            (
                |r| r.recipient = Recipient::Specialist(String::new()),
                "recipient",
            ),
        ];
        for (spoil, expect) in cases {
            let mut r = referral();
            spoil(&mut r);
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(expect), "{e} (expected {expect})");
        }
    }

    #[test]
    fn snomed_ids_are_checked_by_their_check_digit() {
        // Real concept ids: ductal carcinoma in situ of breast, invasive ductal carcinoma,
        // clinical finding.
        for good in ["399935008", "408643008", "404684003"] {
            assert!(is_sctid(good), "{good}");
        }
        for bad in [
            "399935009",
            "012345",
            "12345",
            "abc123456",
            "4046840031234567890",
        ] {
            assert!(!is_sctid(bad), "{bad}");
        }
        let opinion = Opinion {
            author: None,
            text: "DCIS, high grade.".into(),
            diagnosis: Some(Coding {
                system: SNOMED_CT.into(),
                code: "399935009".into(),
                display: "x".into(),
            }),
            annotations: vec![],
        };
        assert!(opinion.validate().unwrap_err().0.contains("SNOMED"));
    }

    #[test]
    fn an_answer_carries_its_annotations_signed_and_checked() {
        use crate::annotation::{Point, Shape};
        let mark = |shape| Annotation {
            slide: SlideId::of(b"s"),
            shape,
            text: "invasive focus".into(),
        };
        let mut opinion = Opinion {
            author: None,
            text: "Invasive ductal carcinoma.".into(),
            diagnosis: None,
            annotations: vec![
                mark(Shape::Point(Point::new(10.5, 20.25))),
                mark(Shape::Polygon(vec![
                    Point::new(0.0, 0.0),
                    Point::new(100.0, 0.0),
                    Point::new(50.0, 80.0),
                ])),
            ],
        };
        let update = ReferralUpdate {
            referral: referral_id(&"RR8".parse().unwrap(), &[1; 16]),
            by: "RAE".parse().unwrap(),
            user: None,
            at: 1_700_000_000,
            step: Step::Answered(opinion.clone()),
        };
        update.validate().unwrap();
        let key = crate::sign::NodeKey::generate();
        let signed = Signed::sign(&update, &key);
        assert_eq!(signed.verify().unwrap(), update);
        opinion
            .annotations
            .push(mark(Shape::Line(vec![Point::new(1.0, 1.0)])));
        let e = opinion.validate().unwrap_err().0;
        assert!(e.starts_with("annotation 3: line annotation"), "{e}");
    }

    #[test]
    fn directories_list_only_queues_and_cover_they_define() {
        let mut d = Directory {
            trust: "RAE".parse().unwrap(),
            issued_at: 1,
            queues: vec![QueueEntry {
                name: "breast".into(),
                title: "Breast pathology".into(),
            }],
            specialists: vec![
                SpecialistEntry {
                    account: "apatel".into(),
                    name: "Dr A Patel".into(),
                    queues: vec!["breast".into()],
                    covered_by: Some("bjones".into()),
                },
                SpecialistEntry {
                    account: "bjones".into(),
                    name: "Dr B Jones".into(),
                    queues: vec![],
                    covered_by: None,
                },
            ],
        };
        d.validate().unwrap();
        d.specialists[1].queues.push("skin".into());
        assert!(d.validate().unwrap_err().0.contains("skin"));
        d.specialists[1].queues.clear();
        d.specialists[0].covered_by = Some("nobody".into());
        assert!(d.validate().unwrap_err().0.contains("nobody"));
        d.specialists[0].covered_by = None;
        d.queues[0].name = "Breast!".into();
        assert!(d.validate().is_err());
    }

    #[test]
    fn steps_name_who_takes_them() {
        assert!(Step::Delivered.by_receiver());
        assert!(!Step::Withdrawn.by_receiver());
        assert_eq!(Step::Closed.name(), "closed");
        assert_eq!(
            "two-week-wait".parse::<Urgency>().unwrap(),
            Urgency::TwoWeekWait
        );
        assert!("soon".parse::<Urgency>().is_err());
    }
}
