//! The owner's consent statement for one slide: the text of its written policy and the
//! slide's recorded consent, signed by the owner's node. It travels with the manifest, so a
//! node that serves the slide's tiles on the owner's behalf (a grantee's cache acting as a
//! replica) decides every request with the owner's rules, even while the owner is down,
//! and never with its own.
//!
//! The statement also lists the owner's grants for the slide that hold when it is issued
//! (neither revoked nor expired). A node that holds a copy refuses any grant its latest
//! statement does not list, and a grantee stops using its own grant once a statement
//! leaves it out: a revocation holds at a node that never received the revocation itself
//! (it was down, or cut off, while it travelled), from that node's next refresh on.
//! A grant issued after the statement is not listed either, until the next refresh.
//! Added in canonical version 2; statements of version 1 (no list) are not read.

use serde::{Deserialize, Serialize};

use crate::ids::{GrantId, SlideId};
use crate::sign::{Signed, Statement};
use crate::trust::TrustCode;

/// Signature domain for consent statements.
pub const CONSENT_STATEMENT_DOMAIN: &str = "slidemesh/consent-statement/v1";

/// What the patient agreed to for a specimen's slides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlideConsent {
    /// GA4GH DUO codes (e.g. `GRU`, `HMB`, `DS`, `NCU`, `IRB`, `CC`), upper case, sorted.
    pub codes: Vec<String>,
    /// The patient registered a national data opt-out: no research or planning use.
    pub opted_out: bool,
    /// Unix seconds after which consent for secondary use has ended; `None`: no end.
    pub expires: Option<u64>,
}

impl Default for SlideConsent {
    /// Nothing recorded: clinical care only (`CC`), which the default policy allows for
    /// care purposes and nothing else.
    fn default() -> Self {
        Self {
            codes: vec!["CC".into()],
            opted_out: false,
            expires: None,
        }
    }
}

/// The owner's rules for one slide at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentStatement {
    pub owner: TrustCode,
    pub slide: SlideId,
    /// The owner's policy, as the cedar text it decides with.
    pub policy: String,
    pub consent: SlideConsent,
    /// Unix seconds; a newer statement replaces an older one.
    pub issued_at: u64,
    /// The owner's grants for this slide that hold at `issued_at` (issued by the owner,
    /// neither revoked nor expired), sorted. Any other grant is refused by whoever decides
    /// with this statement.
    pub valid_grants: Vec<GrantId>,
}

impl ConsentStatement {
    /// Whether the statement lists `grant` as holding.
    pub fn lists(&self, grant: &GrantId) -> bool {
        self.valid_grants.contains(grant)
    }
}

impl Statement for ConsentStatement {
    const DOMAIN: &'static str = CONSENT_STATEMENT_DOMAIN;
    /// Version 2 added `valid_grants`.
    const SINCE_VERSION: u8 = 2;
}

/// A [`ConsentStatement`] signed by the owner's node key.
pub type SignedConsentStatement = Signed<ConsentStatement>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::NodeKey;

    fn statement() -> ConsentStatement {
        ConsentStatement {
            owner: "RR8".parse().unwrap(),
            slide: SlideId::of(b"slide"),
            policy: "permit(principal, action, resource);".into(),
            consent: SlideConsent::default(),
            issued_at: 1_800_000_000,
            valid_grants: vec![GrantId::of(b"a grant")],
        }
    }

    #[test]
    fn statements_verify_and_detect_tampering() {
        let key = NodeKey::generate();
        let statement = statement();
        let signed = SignedConsentStatement::sign(&statement, &key);
        assert_eq!(signed.verify().unwrap(), statement);
        assert!(statement.lists(&GrantId::of(b"a grant")));
        assert!(!statement.lists(&GrantId::of(b"a revoked grant")));
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify().is_err());
    }

    /// A statement of version 1 (as a node before grant lists signed it) is refused, not
    /// read as one listing no grants or every grant.
    #[test]
    fn statements_before_grant_lists_are_not_read() {
        #[derive(Serialize)]
        struct StatementV1 {
            owner: TrustCode,
            slide: SlideId,
            policy: String,
            consent: SlideConsent,
            issued_at: u64,
        }
        let s = statement();
        let mut bytes = vec![1u8];
        bytes.extend(
            postcard::to_allocvec(&StatementV1 {
                owner: s.owner,
                slide: s.slide,
                policy: s.policy,
                consent: s.consent,
                issued_at: s.issued_at,
            })
            .unwrap(),
        );
        let key = NodeKey::generate();
        let signature = key.sign(CONSENT_STATEMENT_DOMAIN, &bytes).to_vec();
        let old: SignedConsentStatement = postcard::from_bytes(
            &postcard::to_allocvec(&(bytes, key.public(), signature)).unwrap(),
        )
        .unwrap();
        let refused = old.verify().unwrap_err().to_string();
        assert!(refused.contains("version 1"), "{refused}");
    }
}
