//! What a node does with each signed object a peer sends: verify it (signature, then
//! canonical decoding, then validation), and on success use it the way the node goes on
//! to. Shared by every target that meets the object, whether alone or inside a message.
//!
//! Also the signed-here constructors: the statement bytes an input supplies, signed as
//! their signer would sign them, so verification gets past the signature to the decoding.

use serde::Serialize;
use serde::de::DeserializeOwned;
use slidemesh_protocol::audit::{CHECKPOINT_DOMAIN, SignedCheckpoint, SignedReceipt};
use slidemesh_protocol::consent::{ConsentStatement, SignedConsentStatement};
use slidemesh_protocol::grant::{GRANT_DOMAIN, REVOCATION_DOMAIN};
use slidemesh_protocol::manifest::MANIFEST_DOMAIN;
use slidemesh_protocol::{
    Action, CANONICAL_VERSION, GrantId, SignedDeidentifiedView, SignedGrant, SignedManifest,
    SignedRevocation, SignedRoster, SlideId, SlideManifest, Statement,
};

use crate::fixtures;
use crate::round_trip;
use crate::{Outcome, SIGNED_HERE};

/// Which shape a selector asks for.
pub fn signed_here(selector: u8) -> bool {
    selector & SIGNED_HERE != 0
}

/// Decodes `payload` as the postcard of `T`, asserting the round trip of what decodes.
pub fn as_sent<T: Serialize + DeserializeOwned>(payload: &[u8]) -> Option<T> {
    let value: T = postcard::from_bytes(payload).ok()?;
    round_trip::postcard(&value);
    Some(value)
}

pub fn grant(signed: &SignedGrant) -> Outcome {
    let Ok(grant) = signed.verify() else {
        return Outcome::Refused;
    };
    round_trip::canonical(&signed.bytes, &grant);
    // A server next asks whether the grant covers the request: for the grant's own slide,
    // grantee and issue time, exactly when its window is not empty.
    assert_eq!(
        grant.covers(&grant.slide, &grant.grantee, Action::View, grant.issued_at),
        grant.issued_at < grant.expires_at,
        "a grant's own request at its issue time"
    );
    Outcome::Accepted
}

pub fn grant_signed_here(bytes: &[u8]) -> SignedGrant {
    let key = fixtures::signer();
    SignedGrant {
        bytes: bytes.to_vec(),
        signer: key.public(),
        signature: key
            .sign(GRANT_DOMAIN, GrantId::of(bytes).as_bytes())
            .to_vec(),
    }
}

pub fn revocation(signed: &SignedRevocation) -> Outcome {
    let Ok(revocation) = signed.verify() else {
        return Outcome::Refused;
    };
    round_trip::canonical(&signed.bytes, &revocation);
    // The node then checks it against the grant it names, and the key the roster lists for
    // that grant's issuer: here the fixture grant, issued by the signed-here key.
    let (id, grant) = (fixtures::grant_id(), fixtures::grant());
    let issuer = fixtures::signer().public();
    if let Ok(by_issuer) = signed.verify_by_issuer(&id, &grant, &issuer) {
        assert_eq!(by_issuer, revocation);
        assert!(by_issuer.grant == id && by_issuer.owner == grant.owner && signed.signer == issuer);
    }
    Outcome::Accepted
}

pub fn revocation_signed_here(bytes: &[u8]) -> SignedRevocation {
    let key = fixtures::signer();
    SignedRevocation {
        bytes: bytes.to_vec(),
        signer: key.public(),
        signature: key
            .sign(REVOCATION_DOMAIN, blake3::hash(bytes).as_bytes())
            .to_vec(),
    }
}

pub fn manifest(signed: &SignedManifest) -> Outcome {
    let Ok(manifest) = signed.verify() else {
        return Outcome::Refused;
    };
    round_trip::canonical(&signed.bytes, &manifest);
    if signed.bytes[0] == CANONICAL_VERSION {
        assert_eq!(manifest.slide_id(), signed.slide_id());
    }
    read_grid(&manifest);
    Outcome::Accepted
}

/// What the node reads off a manifest it accepted: the tile grid of every level.
pub fn read_grid(manifest: &SlideManifest) {
    for level in &manifest.levels {
        let (cols, rows) = (level.cols(), level.rows());
        for (col, row) in [(0, 0), (cols.saturating_sub(1), rows.saturating_sub(1))] {
            let _ = level.tile_at(col, row);
        }
        assert_eq!(level.tile_at(cols, 0), None, "a tile outside the grid");
    }
    let _ = manifest.all_tiles().count();
}

pub fn manifest_signed_here(bytes: &[u8]) -> SignedManifest {
    let key = fixtures::signer();
    SignedManifest {
        bytes: bytes.to_vec(),
        signer: key.public(),
        signature: key
            .sign(MANIFEST_DOMAIN, SlideId::of(bytes).as_bytes())
            .to_vec(),
    }
}

/// Any [`Statement`] in the generic [`slidemesh_protocol::Signed`] form.
pub fn statement<T: Statement>(signed: &slidemesh_protocol::Signed<T>) -> Option<T> {
    let value = signed.verify().ok()?;
    round_trip::canonical(&signed.bytes, &value);
    Some(value)
}

/// A generic signed statement over `bytes`. Its marker field is private, so it is built
/// the way a node receives one: decoded from its postcard form.
pub fn statement_signed_here<T: Statement>(bytes: &[u8]) -> slidemesh_protocol::Signed<T> {
    let key = fixtures::signer();
    let signature = key.sign(T::DOMAIN, bytes).to_vec();
    let wire = postcard::to_stdvec(&(bytes, key.public(), signature)).expect("encodes");
    postcard::from_bytes(&wire).expect("a signed statement decodes from its own fields")
}

/// Whether a signed-here statement failed its signature check, which it never should:
/// the bytes were signed as the protocol says they are signed.
pub fn statement_signature_refused<T: Statement>(signed: &slidemesh_protocol::Signed<T>) -> bool {
    matches!(
        signed.verify(),
        Err(slidemesh_protocol::StatementError::Signature(_))
    )
}

pub fn deidentified_view(signed: &SignedDeidentifiedView) -> Outcome {
    match statement(signed) {
        Some(_) => Outcome::Accepted,
        None => Outcome::Refused,
    }
}

pub fn consent_statement(signed: &SignedConsentStatement) -> Outcome {
    let Some(statement) = statement(signed) else {
        return Outcome::Refused;
    };
    // Read only from version 2, when the list of valid grants came in: an older statement
    // would be read as one listing no grant.
    assert!(
        signed.bytes[0] >= <ConsentStatement as Statement>::SINCE_VERSION,
        "a consent statement of version {} was read",
        signed.bytes[0]
    );
    for grant in &statement.valid_grants {
        assert!(statement.lists(grant));
    }
    Outcome::Accepted
}

pub fn receipt(signed: &SignedReceipt) -> Outcome {
    let Some(receipt) = statement(signed) else {
        return Outcome::Refused;
    };
    // The requester keeps the receipt as proof of the server's log entries, by their leaves.
    for (_, entry) in &receipt.entries {
        let _ = entry.leaf();
    }
    Outcome::Accepted
}

pub fn checkpoint(signed: &SignedCheckpoint) -> Outcome {
    let Ok(checkpoint) = signed.verify() else {
        return Outcome::Refused;
    };
    round_trip::canonical(&signed.bytes, &checkpoint);
    Outcome::Accepted
}

/// A checkpoint over `bytes` signed by the signed-here key, co-signed by the fixture keys
/// whose bits are set in `cosigners`.
pub fn checkpoint_signed_here(bytes: &[u8], cosigners: u8) -> SignedCheckpoint {
    let key = fixtures::signer();
    let mut signed = SignedCheckpoint {
        bytes: bytes.to_vec(),
        signer: key.public(),
        signature: key.sign(CHECKPOINT_DOMAIN, bytes).to_vec(),
        cosignatures: Vec::new(),
    };
    for (index, trust) in fixtures::MEMBERS.iter().enumerate() {
        if cosigners & (1 << index) != 0 {
            signed.cosign(fixtures::trust(trust), fixtures::key(index));
        }
    }
    signed
}

/// A roster proposal over `bytes`, co-signed by the fixture keys whose bits are set in
/// `cosigners`.
pub fn roster_signed_here(bytes: &[u8], cosigners: u8) -> SignedRoster {
    let mut signed = SignedRoster {
        bytes: bytes.to_vec(),
        signatures: Vec::new(),
    };
    for index in 0..fixtures::KEYS {
        if cosigners & (1 << index) != 0 {
            signed.cosign(fixtures::key(index));
        }
    }
    signed
}

/// A node receiving rosters (in answer to `RosterAfter`, or gossiped) holds the fixture
/// genesis, and takes one as its successor; with none held it would take a genesis.
pub fn roster(signed: &SignedRoster) -> Outcome {
    let decoded = signed.roster();
    if let Ok(roster) = &decoded {
        round_trip::canonical(&signed.bytes, roster);
        // A valid roster is in canonical member order already.
        let mut normalised = roster.clone();
        normalised.normalise();
        assert_eq!(
            &normalised, roster,
            "a valid roster's members are not sorted"
        );
        let _ = roster.member(&roster.members[0].trust);
    }
    let current = fixtures::genesis();
    let genesis = signed.verify_genesis();
    let successor = signed.verify_successor(&current);
    let missing_alone = signed.signatures_missing(None);
    let missing_after = signed.signatures_missing(Some(&current));
    if let Ok(genesis) = &genesis {
        assert_eq!(genesis.version, 1);
        assert_eq!(
            missing_alone.ok(),
            Some(0),
            "a verified genesis lacks signatures"
        );
    }
    if let Ok(successor) = &successor {
        assert_eq!(successor.version, current.version + 1);
        assert_eq!(successor.federation, current.federation);
        assert_eq!(
            missing_after.ok(),
            Some(0),
            "a verified successor lacks signatures"
        );
    }
    if decoded.is_err() {
        assert!(
            genesis.is_err() && successor.is_err(),
            "an invalid roster verified"
        );
    }
    Outcome::from_ok(&genesis).or(Outcome::from_ok(&successor))
}
