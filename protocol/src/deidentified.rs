//! De-identified views of a slide: what an owner sends instead of its manifest when the
//! purpose of a grant does not allow the patient's identity to leave the trust (research,
//! education, or whatever else the owner's policy withholds the label for).
//!
//! The view is itself a [`SlideManifest`], rewritten by the owner (PS3.15 Basic Application
//! Level Confidentiality Profile, per-project pseudonyms, label and overview images dropped),
//! so it has its own id. The grantee still names the slide by the id its grant names, and
//! tiles are the same content either way. This module's [`DeidentifiedView`] is the owner's
//! signed statement binding the two ids and the project the pseudonyms were made for, so a
//! grantee (or anyone it relays the view to) can check that the view came from the owner
//! and belongs to the granted slide.

use serde::{Deserialize, Serialize};

use crate::ids::SlideId;
use crate::sign::{Signed, Statement};

/// Signature domain for de-identified views.
pub const DEIDENTIFIED_VIEW_DOMAIN: &str = "slidemesh/deidentified-view/v1";

/// The profile every view is made with, as recorded in the view's DICOM metadata.
pub const PROFILE: &str = "DICOM PS3.15 Basic Application Level Confidentiality Profile";

/// The owner's statement: `view` is the de-identified form of `original`, made for `project`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeidentifiedView {
    /// The slide as ingested: the id grants name and tile requests carry.
    pub original: SlideId,
    /// The id of the de-identified manifest.
    pub view: SlideId,
    /// The project the pseudonyms are stable within (the grant's reference, e.g. an ethics
    /// approval, or the grant itself when it names none).
    pub project: String,
}

impl Statement for DeidentifiedView {
    const DOMAIN: &'static str = DEIDENTIFIED_VIEW_DOMAIN;
}

/// A [`DeidentifiedView`] with the owner's signature over its canonical bytes.
pub type SignedDeidentifiedView = Signed<DeidentifiedView>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{NodeKey, StatementError};

    fn sample() -> DeidentifiedView {
        DeidentifiedView {
            original: SlideId::of(b"original"),
            view: SlideId::of(b"view"),
            project: "IRAS 123456".into(),
        }
    }

    #[test]
    fn signed_view_verifies_and_detects_tampering() {
        let key = NodeKey::generate();
        let signed = SignedDeidentifiedView::sign(&sample(), &key);
        assert_eq!(signed.verify().unwrap(), sample());

        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify().is_err());

        let mut other_signer = signed;
        other_signer.signer = NodeKey::generate().public();
        assert!(matches!(
            other_signer.verify(),
            Err(StatementError::Signature(_))
        ));
    }
}
