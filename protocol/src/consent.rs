//! The owner's consent statement for one slide: the text of its written policy and the
//! slide's recorded consent, signed by the owner's node. It travels with the manifest, so a
//! node that serves the slide's tiles on the owner's behalf (a grantee's cache acting as a
//! replica) decides every request with the owner's rules, even while the owner is down,
//! and never with its own.

use serde::{Deserialize, Serialize};

use crate::ids::SlideId;
use crate::sign::{Signed, Statement};
use crate::trust::TrustCode;

/// Signature domain for consent statements.
pub const CONSENT_STATEMENT_DOMAIN: &str = "slidemesh/consent-statement/v1";

/// What the patient agreed to for a specimen's slides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Statement for ConsentStatement {
    const DOMAIN: &'static str = CONSENT_STATEMENT_DOMAIN;
}

/// A [`ConsentStatement`] signed by the owner's node key.
pub type SignedConsentStatement = Signed<ConsentStatement>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::NodeKey;

    #[test]
    fn statements_verify_and_detect_tampering() {
        let key = NodeKey::generate();
        let statement = ConsentStatement {
            owner: "RR8".parse().unwrap(),
            slide: SlideId::of(b"slide"),
            policy: "permit(principal, action, resource);".into(),
            consent: SlideConsent::default(),
            issued_at: 1_800_000_000,
        };
        let signed = SignedConsentStatement::sign(&statement, &key);
        assert_eq!(signed.verify().unwrap(), statement);
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify().is_err());
    }
}
