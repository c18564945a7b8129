//! One function per fuzz target: the first byte selects, the rest is the payload.

use slidemesh_protocol::audit::{
    AuditEntry, Checkpoint, Hash, Receipt, SignedCheckpoint, SignedReceipt, consistency_proof,
    leaf_hash, root, verify_consistency,
};
use slidemesh_protocol::canonical;
use slidemesh_protocol::consent::{ConsentStatement, SignedConsentStatement};
use slidemesh_protocol::wire::{
    Announcement, ControlRequest, ControlResponse, MAX_CONTROL_MESSAGE, MAX_RECEIPT,
    MAX_TILE_BYTES, MAX_TILE_REQUEST, MAX_TILES_PER_REQUEST, MAX_WARM_UP_BYTES, TILE_SESSION_READY,
    TileRequest, TileStatus, WARM_UP_DONE, request_tag,
};
use slidemesh_protocol::{
    Action, DeidentifiedView, Grant, GrantError, ManifestError, Revocation, Roster, RosterError,
    SignedDeidentifiedView, SignedGrant, SignedManifest, SignedRevocation, SignedRoster,
    SlideManifest, Statement, TileId,
};

use crate::frame::{self, FrameError};
use crate::statements::{self, as_sent, signed_here};
use crate::{Outcome, fixtures, round_trip};

/// `canonical`: bytes straight into `canonical::decode` as each hashed or signed type (what
/// every `verify` does once the signature holds, without the signature's cost).
/// Selector: the type, modulo 9.
pub fn canonical(data: &[u8]) -> Outcome {
    let Some((&selector, bytes)) = data.split_first() else {
        return Outcome::Refused;
    };
    match selector % 9 {
        0 => decode::<SlideManifest>(bytes, |m| {
            let valid = m.validate();
            if valid.is_ok() {
                statements::read_grid(m);
            }
            Outcome::from_ok(&valid)
        }),
        1 => decode::<Grant>(bytes, |_| Outcome::Accepted),
        2 => decode::<Revocation>(bytes, |_| Outcome::Accepted),
        3 => decode::<Roster>(bytes, |r| Outcome::from_ok(&r.validate())),
        4 => decode::<Checkpoint>(bytes, |_| Outcome::Accepted),
        5 => decode::<Receipt>(bytes, |_| Outcome::Accepted),
        6 => decode::<AuditEntry>(bytes, |e| {
            let _ = e.leaf();
            Outcome::Accepted
        }),
        7 => {
            // Read only from the version its shape last changed at, as `Signed::verify` does.
            let since = <ConsentStatement as Statement>::SINCE_VERSION;
            match canonical::decode_since::<ConsentStatement>(bytes, since) {
                Ok(statement) => {
                    round_trip::canonical(bytes, &statement);
                    Outcome::Accepted
                }
                Err(_) => Outcome::Refused,
            }
        }
        _ => decode::<DeidentifiedView>(bytes, |_| Outcome::Accepted),
    }
}

fn decode<T>(bytes: &[u8], then: impl FnOnce(&T) -> Outcome) -> Outcome
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    match canonical::decode::<T>(bytes) {
        Ok(value) => {
            round_trip::canonical(bytes, &value);
            then(&value)
        }
        Err(_) => Outcome::Refused,
    }
}

/// `signed_statements`: grants, revocations, manifests and de-identified views, each as
/// sent or signed here. Selector: the kind modulo 4; the top bit, signed here.
pub fn signed_statements(data: &[u8]) -> Outcome {
    let Some((&selector, payload)) = data.split_first() else {
        return Outcome::Refused;
    };
    let here = signed_here(selector);
    match (selector % 4, here) {
        (0, false) => {
            as_sent::<SignedGrant>(payload).map_or(Outcome::Refused, |s| statements::grant(&s))
        }
        (0, true) => {
            let signed = statements::grant_signed_here(payload);
            let outcome = statements::grant(&signed);
            assert!(
                !matches!(signed.verify(), Err(GrantError::Signature(_))),
                "a grant signed as the protocol signs grants failed its signature check"
            );
            outcome
        }
        (1, false) => as_sent::<SignedRevocation>(payload)
            .map_or(Outcome::Refused, |s| statements::revocation(&s)),
        (1, true) => {
            let signed = statements::revocation_signed_here(payload);
            let outcome = statements::revocation(&signed);
            assert!(
                !matches!(signed.verify(), Err(GrantError::Signature(_))),
                "a revocation signed as the protocol signs them failed its signature check"
            );
            outcome
        }
        (2, false) => as_sent::<SignedManifest>(payload)
            .map_or(Outcome::Refused, |s| statements::manifest(&s)),
        (2, true) => {
            let signed = statements::manifest_signed_here(payload);
            let outcome = statements::manifest(&signed);
            assert!(
                !matches!(signed.verify(), Err(ManifestError::Signature(_))),
                "a manifest signed as the protocol signs manifests failed its signature check"
            );
            outcome
        }
        (_, false) => as_sent::<SignedDeidentifiedView>(payload)
            .map_or(Outcome::Refused, |s| statements::deidentified_view(&s)),
        (_, true) => {
            let signed = statements::statement_signed_here::<DeidentifiedView>(payload);
            assert!(!statements::statement_signature_refused(&signed));
            statements::deidentified_view(&signed)
        }
    }
}

/// `consent_statement`: the owner's signed consent statement, as sent or signed here.
/// Selector: the top bit, signed here.
pub fn consent_statement(data: &[u8]) -> Outcome {
    let Some((&selector, payload)) = data.split_first() else {
        return Outcome::Refused;
    };
    if signed_here(selector) {
        let signed = statements::statement_signed_here::<ConsentStatement>(payload);
        assert!(!statements::statement_signature_refused(&signed));
        statements::consent_statement(&signed)
    } else {
        as_sent::<SignedConsentStatement>(payload)
            .map_or(Outcome::Refused, |s| statements::consent_statement(&s))
    }
}

/// `roster`: a signed roster as sent, or roster bytes co-signed here by the fixture keys
/// whose bits are set in selector bits 0 to 3, checked as a genesis and as the successor of
/// the fixture genesis. Selector: the top bit, signed here.
pub fn roster(data: &[u8]) -> Outcome {
    let Some((&selector, payload)) = data.split_first() else {
        return Outcome::Refused;
    };
    if signed_here(selector) {
        let signed = statements::roster_signed_here(payload, selector & 0x0f);
        for result in [
            signed.verify_genesis(),
            signed.verify_successor(&fixtures::genesis()),
        ] {
            assert!(
                !matches!(result, Err(RosterError::Signature { .. })),
                "a roster co-signed as the protocol co-signs failed a signature check"
            );
        }
        statements::roster(&signed)
    } else {
        as_sent::<SignedRoster>(payload).map_or(Outcome::Refused, |s| statements::roster(&s))
    }
}

/// `audit`: checkpoints and receipts (as sent, or signed here with the fixture members'
/// co-signatures in selector bits 2 to 4), and the consistency proofs co-signing relies on.
/// Selector: the kind modulo 4; the top bit, signed here.
pub fn audit(data: &[u8]) -> Outcome {
    let Some((&selector, payload)) = data.split_first() else {
        return Outcome::Refused;
    };
    let here = signed_here(selector);
    match selector % 4 {
        0 if here => statements::checkpoint(&statements::checkpoint_signed_here(
            payload,
            (selector >> 2) & 7,
        )),
        0 => as_sent::<SignedCheckpoint>(payload)
            .map_or(Outcome::Refused, |s| statements::checkpoint(&s)),
        1 if here => {
            let signed = statements::statement_signed_here::<Receipt>(payload);
            assert!(!statements::statement_signature_refused(&signed));
            statements::receipt(&signed)
        }
        1 => {
            as_sent::<SignedReceipt>(payload).map_or(Outcome::Refused, |s| statements::receipt(&s))
        }
        2 => consistency_as_sent(payload),
        _ => consistency_of_a_tree(payload),
    }
}

/// A co-signing request's proof as the node checks it: sizes, roots and proof hashes all
/// from the peer (`m`, `n` u64 LE, two roots, then 32-byte proof hashes).
fn consistency_as_sent(mut payload: &[u8]) -> Outcome {
    let fields = (|| {
        let m = u64::from_le_bytes(frame::take_array(&mut payload)?);
        let n = u64::from_le_bytes(frame::take_array(&mut payload)?);
        let old: Hash = frame::take_array(&mut payload)?;
        let new: Hash = frame::take_array(&mut payload)?;
        Ok::<_, FrameError>((m, n, old, new))
    })();
    let Ok((m, n, old, new)) = fields else {
        return Outcome::Refused;
    };
    let proof: Vec<Hash> = payload
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32-byte chunks"))
        .collect();
    let consistent = verify_consistency(m, n, &old, &new, &proof);
    if m == n {
        assert_eq!(consistent, proof.is_empty() && old == new);
    }
    if consistent {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// The proof the protocol crate makes for a tree verifies, and stops verifying once any
/// byte of it changes. The payload shapes the tree: its size (1 to 64 leaves), the old
/// size, which proof byte to flip, and the leaves' contents.
fn consistency_of_a_tree(payload: &[u8]) -> Outcome {
    let [size, old, flip, content @ ..] = payload else {
        return Outcome::Refused;
    };
    let n = 1 + *size as usize % 64;
    let m = *old as usize % (n + 1);
    let leaves: Vec<Hash> = (0..n)
        .map(|i| leaf_hash(&[&(i as u64).to_le_bytes()[..], content].concat()))
        .collect();
    let (old_root, new_root) = (root(&leaves[..m]), root(&leaves));
    let mut proof = consistency_proof(m, &leaves);
    assert!(
        verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof),
        "a consistency proof from {m} to {n} leaves does not verify"
    );
    if !proof.is_empty() {
        let byte = *flip as usize % (proof.len() * 32);
        proof[byte / 32][byte % 32] ^= 1 << (flip % 8);
        assert!(
            !verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof),
            "a tampered consistency proof from {m} to {n} leaves verifies"
        );
    }
    Outcome::Accepted
}

/// `wire_control`: the control protocol. Selector modulo 3: 0, a framed request (what a
/// server reads); 1, a framed response (what a requester reads); 2, a gossiped
/// announcement (postcard, unframed, as gossipsub delivers it).
pub fn wire_control(data: &[u8]) -> Outcome {
    let Some((&selector, mut payload)) = data.split_first() else {
        return Outcome::Refused;
    };
    match selector % 3 {
        0 => match frame::read_message::<ControlRequest>(&mut payload, MAX_CONTROL_MESSAGE) {
            Ok(request) => {
                round_trip::postcard(&request);
                control_request(&request)
            }
            Err(_) => Outcome::Refused,
        },
        1 => match frame::read_message::<ControlResponse>(&mut payload, MAX_CONTROL_MESSAGE) {
            Ok(response) => {
                round_trip::postcard(&response);
                control_response(&response)
            }
            Err(_) => Outcome::Refused,
        },
        _ => match as_sent::<Announcement>(payload) {
            Some(Announcement::Roster(roster)) => statements::roster(&roster),
            Some(Announcement::Revocation(revocation)) => statements::revocation(&revocation),
            None => Outcome::Refused,
        },
    }
}

fn control_request(request: &ControlRequest) -> Outcome {
    match request {
        ControlRequest::Manifest {
            slide,
            grant,
            refresh: _,
            nonce,
        } => {
            assert_eq!(request_tag(nonce).len(), 16);
            let outcome = statements::grant(grant);
            // The server serves only the slide the grant names.
            let names_it = grant.verify().is_ok_and(|g| &g.slide == slide);
            outcome.and(if names_it {
                Outcome::Accepted
            } else {
                Outcome::Refused
            })
        }
        ControlRequest::DeliverGrant(grant) => statements::grant(grant),
        ControlRequest::DeliverRevocation(revocation) => statements::revocation(revocation),
        ControlRequest::RosterAfter { .. } => Outcome::Accepted,
        ControlRequest::Cosign {
            checkpoint,
            since,
            proof,
        } => {
            let outcome = statements::checkpoint(checkpoint);
            if let Ok(c) = checkpoint.verify() {
                // The node checks the proof against the root it co-signed at `since`; the
                // request carries none, so the new root stands in for it.
                let _ = verify_consistency(*since, c.size, &c.root, &c.root, proof);
            }
            outcome
        }
    }
}

fn control_response(response: &ControlResponse) -> Outcome {
    let optional = |outcome: Option<Outcome>| outcome.unwrap_or(Outcome::Accepted);
    match response {
        ControlResponse::Manifest {
            manifest,
            consent,
            receipt,
        } => statements::manifest(manifest)
            .and(optional(
                consent.as_ref().map(statements::consent_statement),
            ))
            .and(optional(receipt.as_ref().map(statements::receipt))),
        ControlResponse::DeidentifiedManifest {
            manifest,
            view,
            consent,
            receipt,
        } => statements::manifest(manifest)
            .and(statements::deidentified_view(view))
            .and(optional(
                consent.as_ref().map(statements::consent_statement),
            ))
            .and(optional(receipt.as_ref().map(statements::receipt))),
        ControlResponse::Rosters(rosters) => rosters
            .iter()
            .map(statements::roster)
            .fold(Outcome::Accepted, Outcome::and),
        ControlResponse::Cosignature(signature) => {
            // The requester checks the co-signature over its own checkpoint's bytes.
            let _ = fixtures::signer().public().verify(
                slidemesh_protocol::audit::CHECKPOINT_DOMAIN,
                b"checkpoint",
                signature,
            );
            Outcome::Accepted
        }
        ControlResponse::Accepted
        | ControlResponse::Denied { .. }
        | ControlResponse::NotFound
        | ControlResponse::Failed { .. }
        | ControlResponse::Inconsistent { .. } => Outcome::Accepted,
    }
}

/// `wire_tiles`: the tile and warm-up streams. Selector modulo 3: 0, what a server reads
/// on a tile session (framed requests until the stream ends); 1, what a requester reads
/// (the ready byte, then per batch one harness byte choosing how many fixture tiles were
/// asked for, and the server's answer); 2, a warm-up stream (u64 LE length, filler).
pub fn wire_tiles(data: &[u8]) -> Outcome {
    let Some((&selector, payload)) = data.split_first() else {
        return Outcome::Refused;
    };
    match selector % 3 {
        0 => tile_session_server(payload),
        1 => tile_session_requester(payload),
        _ => warm_up(payload),
    }
}

fn tile_session_server(mut stream: &[u8]) -> Outcome {
    let mut outcome = Outcome::Accepted;
    let mut batches = 0;
    loop {
        let request = match frame::read_message::<TileRequest>(&mut stream, MAX_TILE_REQUEST) {
            Ok(request) => request,
            // The requester closed the session between batches.
            Err(FrameError::Eof) if stream.is_empty() && batches > 0 => return outcome,
            Err(_) => return Outcome::Refused,
        };
        batches += 1;
        round_trip::postcard(&request);
        if request.tiles.len() > MAX_TILES_PER_REQUEST {
            outcome = Outcome::Refused;
            continue;
        }
        let user = request
            .user
            .as_ref()
            .map_or(Outcome::Accepted, |u| Outcome::from_ok(&u.validate()));
        let grant = statements::grant(&request.grant);
        let covers = request
            .grant
            .verify()
            .is_ok_and(|g| g.covers(&request.slide, &g.grantee, Action::View, g.issued_at));
        let label = request.audit_label();
        assert!(label.starts_with(&format!("{} tiles, batch ", request.tiles.len())));
        outcome = outcome.and(user).and(grant).and(if covers {
            Outcome::Accepted
        } else {
            Outcome::Refused
        });
    }
}

fn tile_session_requester(mut stream: &[u8]) -> Outcome {
    match frame::take_array::<1>(&mut stream) {
        Ok([TILE_SESSION_READY]) => {}
        _ => return Outcome::Refused,
    }
    let mut batches = 0;
    while let Ok([asked]) = frame::take_array::<1>(&mut stream) {
        let tiles: Vec<TileId> = (0..asked as usize % 9).map(fixtures::tile_id).collect();
        match tile_batch(&mut stream, &tiles) {
            Ok(true) => batches += 1,
            // Refused as a whole: the session goes on with the next batch.
            Ok(false) => {}
            Err(()) => return Outcome::Refused,
        }
    }
    if batches > 0 {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// One batch's answer: `Ok(true)` served (with a receipt that verifies, if any),
/// `Ok(false)` refused as a whole, `Err` a protocol error that ends the session.
fn tile_batch(stream: &mut &[u8], tiles: &[TileId]) -> Result<bool, ()> {
    for (index, tile) in tiles.iter().enumerate() {
        let [status] = frame::take_array::<1>(stream).map_err(|_| ())?;
        match TileStatus::from_byte(status) {
            Some(TileStatus::Ok) => {
                let len = u32::from_le_bytes(frame::take_array(stream).map_err(|_| ())?);
                if len > MAX_TILE_BYTES {
                    return Err(());
                }
                let bytes = frame::take(stream, len as usize).map_err(|_| ())?;
                if TileId::of(bytes) != *tile {
                    return Err(());
                }
            }
            Some(TileStatus::Missing) => {}
            // Only as the batch's first byte; then nothing else follows for the batch.
            Some(TileStatus::Denied | TileStatus::Failed) if index == 0 => return Ok(false),
            Some(TileStatus::Denied | TileStatus::Failed) | None => return Err(()),
        }
    }
    match frame::read_message::<Option<SignedReceipt>>(stream, MAX_RECEIPT) {
        Ok(None) => Ok(true),
        Ok(Some(receipt)) => {
            round_trip::postcard(&receipt);
            match statements::receipt(&receipt) {
                Outcome::Accepted => Ok(true),
                Outcome::Refused => Err(()),
            }
        }
        Err(_) => Err(()),
    }
}

fn warm_up(mut stream: &[u8]) -> Outcome {
    let Ok(header) = frame::take_array::<8>(&mut stream) else {
        return Outcome::Refused;
    };
    let len = u64::from_le_bytes(header);
    if len > MAX_WARM_UP_BYTES {
        return Outcome::Refused;
    }
    // The reader discards the filler; the writer then waits for the acknowledgement.
    if frame::take(&mut stream, len as usize).is_err() {
        return Outcome::Refused;
    }
    match frame::take_array::<1>(&mut stream) {
        Ok([WARM_UP_DONE]) => Outcome::Accepted,
        _ => Outcome::Refused,
    }
}
