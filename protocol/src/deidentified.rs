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

use crate::canonical::{self, CanonicalError};
use crate::ids::SlideId;
use crate::sign::{NodeKey, NodePublicKey, SignatureError};

/// Signature domain for de-identified views.
pub const DEIDENTIFIED_VIEW_DOMAIN: &str = "slidemesh/deidentified-view/v1";

/// The profile every view is made with, as recorded in the view's DICOM metadata.
pub const PROFILE: &str = "DICOM PS3.15 Basic Application Level Confidentiality Profile";

/// Why a de-identified view was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    #[error("de-identified view encoding: {0}")]
    Encoding(#[from] CanonicalError),
    #[error("de-identified view signature: {0}")]
    Signature(#[from] SignatureError),
}

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

/// A [`DeidentifiedView`] with the owner's signature over its canonical bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedDeidentifiedView {
    pub bytes: Vec<u8>,
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
}

impl SignedDeidentifiedView {
    pub fn sign(view: &DeidentifiedView, key: &NodeKey) -> Self {
        let bytes = canonical::encode(view);
        let signature = key.sign(DEIDENTIFIED_VIEW_DOMAIN, &bytes).to_vec();
        Self {
            bytes,
            signer: key.public(),
            signature,
        }
    }

    /// Checks the signature and decodes. Whether the signer is the slide's owner is the
    /// caller's question (it needs the roster).
    pub fn verify(&self) -> Result<DeidentifiedView, ViewError> {
        self.signer
            .verify(DEIDENTIFIED_VIEW_DOMAIN, &self.bytes, &self.signature)?;
        Ok(canonical::decode(&self.bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(ViewError::Signature(_))
        ));
    }
}
