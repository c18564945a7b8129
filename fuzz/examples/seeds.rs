//! Writes the seed corpora, `fuzz/corpus/<target>/seed-*`: valid messages of every family,
//! built and signed with the protocol crate's own constructors and the fixture keys.
//!
//! Every seed is run through its target's harness before it is written, and must get as
//! far as it is meant to (all the way, but for the few seeds that stand for a refusal
//! worth keeping in reach): the fuzzer mutates from the seeds, so a seed refused early
//! would leave everything behind that check to chance. Seeds are deterministic, so
//! regenerating them changes no file unless a message's encoding changed.
//!
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::fs;
use std::path::Path;

use slidemesh_fuzz::fixtures::{self, key, signer};
use slidemesh_fuzz::frame::message;
use slidemesh_fuzz::{Outcome, SIGNED_HERE, targets};
use slidemesh_protocol::audit::{
    AuditEntry, Checkpoint, Hash, Receipt, Side, SignedCheckpoint, SignedReceipt,
    consistency_proof, leaf_hash, root,
};
use slidemesh_protocol::consent::{ConsentStatement, SignedConsentStatement, SlideConsent};
use slidemesh_protocol::wire::{
    Announcement, ControlRequest, ControlResponse, TILE_SESSION_READY, TileRequest, TileStatus,
    WARM_UP_DONE,
};
use slidemesh_protocol::{
    AssociatedImage, AssociatedKind, DeidentifiedView, DimensionOrganization, InstanceMeta,
    InstanceRole, Level, ObjectId, OpticalPath, Revocation, SignedDeidentifiedView, SignedManifest,
    SignedRevocation, SignedRoster, SlideManifest, TileId, TilePosition, UserClaim, canonical,
};

const TARGETS: [&str; 7] = [
    "wire_control",
    "wire_tiles",
    "signed_statements",
    "roster",
    "audit",
    "consent_statement",
    "canonical",
];

fn run(target: &str, data: &[u8]) -> Outcome {
    match target {
        "wire_control" => targets::wire_control(data),
        "wire_tiles" => targets::wire_tiles(data),
        "signed_statements" => targets::signed_statements(data),
        "roster" => targets::roster(data),
        "audit" => targets::audit(data),
        "consent_statement" => targets::consent_statement(data),
        "canonical" => targets::canonical(data),
        other => panic!("no target {other}"),
    }
}

struct Seeds {
    written: Vec<(&'static str, String, Vec<u8>)>,
}

impl Seeds {
    /// A seed that must go all the way through its target.
    fn add(&mut self, target: &'static str, name: &str, selector: u8, payload: &[u8]) {
        self.add_expecting(target, name, selector, payload, Outcome::Accepted);
    }

    fn add_expecting(
        &mut self,
        target: &'static str,
        name: &str,
        selector: u8,
        payload: &[u8],
        expected: Outcome,
    ) {
        let mut data = vec![selector];
        data.extend_from_slice(payload);
        let outcome = run(target, &data);
        assert_eq!(outcome, expected, "seed {target}/{name}");
        self.written.push((target, format!("seed-{name}"), data));
    }
}

fn manifest() -> SlideManifest {
    let tiles = |level: usize, n: usize| -> Vec<TileId> {
        (0..n)
            .map(|i| TileId::of(&[level as u8, i as u8]))
            .collect()
    };
    let metadata = r#"{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.77.1.6"]}}"#;
    let instance = |uid: &str, role: InstanceRole| InstanceMeta {
        sop_instance_uid: uid.into(),
        role,
        transfer_syntax_uid: "1.2.840.10008.1.2.4.50".into(),
        object: ObjectId::of(uid.as_bytes()),
        file_len: 1 << 20,
        metadata_json: metadata.into(),
    };
    SlideManifest {
        owner: fixtures::trust(fixtures::MEMBERS[0]),
        study_uid: "2.25.1".into(),
        series_uid: "2.25.2".into(),
        frame_of_reference_uid: Some("2.25.3".into()),
        levels: vec![
            Level {
                width: 600,
                height: 400,
                tile_width: 256,
                tile_height: 256,
                pixel_spacing_mm: Some([0.00025, 0.00025]),
                focal_planes: 1,
                optical_paths: 1,
                organization: DimensionOrganization::TiledFull,
                tiles: tiles(0, 6),
                positions: vec![],
                instance_uids: vec!["2.25.10".into()],
            },
            Level {
                width: 300,
                height: 200,
                tile_width: 256,
                tile_height: 256,
                pixel_spacing_mm: None,
                focal_planes: 1,
                optical_paths: 1,
                organization: DimensionOrganization::TiledSparse,
                tiles: tiles(1, 2),
                positions: vec![
                    TilePosition {
                        col: 0,
                        row: 0,
                        focal_plane: 0,
                        optical_path: 0,
                    },
                    TilePosition {
                        col: 1,
                        row: 0,
                        focal_plane: 0,
                        optical_path: 0,
                    },
                ],
                instance_uids: vec!["2.25.11".into()],
            },
        ],
        associated: vec![AssociatedImage {
            kind: AssociatedKind::Label,
            width: 200,
            height: 100,
            tile_width: 200,
            tile_height: 100,
            tiles: tiles(2, 1),
            instance_uid: "2.25.12".into(),
        }],
        optical_paths: vec![OpticalPath {
            identifier: "1".into(),
            description: Some("brightfield".into()),
        }],
        instances: vec![
            instance("2.25.10", InstanceRole::Level(0)),
            instance("2.25.11", InstanceRole::Level(1)),
            instance("2.25.12", InstanceRole::Associated(AssociatedKind::Label)),
        ],
    }
}

fn revocation() -> Revocation {
    Revocation {
        grant: fixtures::grant_id(),
        owner: fixtures::grant().owner,
        revoked_at: 1_800_000_600,
    }
}

fn view() -> DeidentifiedView {
    DeidentifiedView {
        original: fixtures::slide(),
        view: manifest().slide_id(),
        project: "IRAS 123456".into(),
    }
}

fn consent(valid_grants: bool) -> ConsentStatement {
    ConsentStatement {
        owner: fixtures::trust(fixtures::MEMBERS[0]),
        slide: fixtures::slide(),
        policy: "permit(principal, action, resource) when { context.purpose == \"mdt\" };".into(),
        consent: SlideConsent {
            codes: vec!["GRU".into(), "IRB".into()],
            opted_out: false,
            expires: Some(1_900_000_000),
        },
        issued_at: 1_800_000_000,
        valid_grants: if valid_grants {
            vec![fixtures::grant_id()]
        } else {
            vec![]
        },
    }
}

fn entry() -> AuditEntry {
    AuditEntry {
        time: 1_800_000_100,
        side: Side::Served,
        peer: fixtures::trust(fixtures::MEMBERS[1]),
        peer_id: "12D3KooWfuzz".into(),
        user: Some("j.smith@rae.nhs.uk (pathologist)".into()),
        purpose: "second-opinion".into(),
        slide: fixtures::slide(),
        action: "fetch_tiles".into(),
        what: "3 tiles, batch 0123456789abcdef".into(),
        allowed: true,
        rules: vec!["care-purposes".into()],
        policy_hash: "ab".repeat(32),
        grant: Some(fixtures::grant_id()),
    }
}

fn receipt() -> Receipt {
    Receipt {
        log: fixtures::trust(fixtures::MEMBERS[0]),
        entries: vec![(41, entry())],
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
        .collect()
}

fn checkpoint(size: usize) -> Checkpoint {
    Checkpoint {
        log: fixtures::trust(fixtures::MEMBERS[0]),
        size: size as u64,
        root: root(&leaves(size)),
        time: 1_800_000_200,
    }
}

fn signed_checkpoint(size: usize) -> SignedCheckpoint {
    let mut signed = SignedCheckpoint::sign(&checkpoint(size), signer());
    signed.cosign(fixtures::trust(fixtures::MEMBERS[1]), key(1));
    signed
}

/// A roster version signed by the given fixture keys.
fn signed_roster(version: u64, members: &[usize], signers: &[usize]) -> SignedRoster {
    let mut signed = SignedRoster::propose(&fixtures::roster(version, members)).unwrap();
    for &k in signers {
        signed.cosign(key(k));
    }
    signed
}

fn postcard<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap()
}

/// `bytes` as a node of canonical version 1 wrote them (same body, its own version byte).
fn as_version_1(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes[0] = 1;
    bytes
}

fn canonical_seeds(seeds: &mut Seeds) {
    let t = "canonical";
    seeds.add(t, "manifest", 0, &canonical::encode(&manifest()));
    seeds.add(t, "grant", 1, &canonical::encode(&fixtures::grant()));
    seeds.add(
        t,
        "grant-v1",
        1,
        &as_version_1(canonical::encode(&fixtures::grant())),
    );
    seeds.add(t, "revocation", 2, &canonical::encode(&revocation()));
    seeds.add(t, "roster", 3, &canonical::encode(&fixtures::genesis()));
    seeds.add(t, "checkpoint", 4, &canonical::encode(&checkpoint(7)));
    seeds.add(t, "receipt", 5, &canonical::encode(&receipt()));
    seeds.add(t, "audit-entry", 6, &canonical::encode(&entry()));
    seeds.add(t, "consent", 7, &canonical::encode(&consent(true)));
    seeds.add(t, "deidentified-view", 8, &canonical::encode(&view()));
}

fn signed_statement_seeds(seeds: &mut Seeds) {
    let t = "signed_statements";
    let grant = fixtures::signed_grant();
    seeds.add(t, "grant", 0, &postcard(&grant));
    seeds.add(t, "grant-here", SIGNED_HERE, &grant.bytes);
    let revocation = SignedRevocation::sign(&revocation(), signer());
    seeds.add(t, "revocation", 1, &postcard(&revocation));
    seeds.add(t, "revocation-here", SIGNED_HERE | 1, &revocation.bytes);
    let manifest = SignedManifest::sign(&manifest(), signer());
    seeds.add(t, "manifest", 2, &postcard(&manifest));
    seeds.add(t, "manifest-here", SIGNED_HERE | 2, &manifest.bytes);
    let view = SignedDeidentifiedView::sign(&view(), signer());
    seeds.add(t, "deidentified-view", 3, &postcard(&view));
    seeds.add(t, "deidentified-view-here", SIGNED_HERE | 3, &view.bytes);
}

fn consent_seeds(seeds: &mut Seeds) {
    let t = "consent_statement";
    let signed = SignedConsentStatement::sign(&consent(true), signer());
    seeds.add(t, "statement", 0, &postcard(&signed));
    seeds.add(t, "statement-here", SIGNED_HERE, &signed.bytes);
    // A statement as nodes signed them before grant lists (version 1): the same fields
    // without the list, i.e. without the empty list's length byte at the end. It must be
    // refused, and stays in the corpus so that refusal stays covered.
    let mut old = as_version_1(canonical::encode(&consent(false)));
    assert_eq!(old.pop(), Some(0));
    seeds.add_expecting(t, "statement-v1-here", SIGNED_HERE, &old, Outcome::Refused);
}

fn roster_seeds(seeds: &mut Seeds) {
    let t = "roster";
    let genesis = signed_roster(1, &[0, 1, 2], &[0, 1]);
    seeds.add(t, "genesis", 0, &postcard(&genesis));
    // The outsider (key 3) admitted by two of the three members.
    let successor = signed_roster(2, &[0, 1, 2, 3], &[0, 2]);
    seeds.add(t, "successor", 0, &postcard(&successor));
    seeds.add(t, "genesis-here", SIGNED_HERE | 0b0011, &genesis.bytes);
    seeds.add(t, "successor-here", SIGNED_HERE | 0b0101, &successor.bytes);
}

fn audit_seeds(seeds: &mut Seeds) {
    let t = "audit";
    let signed = signed_checkpoint(7);
    seeds.add(t, "checkpoint", 0, &postcard(&signed));
    seeds.add(
        t,
        "checkpoint-here",
        SIGNED_HERE | (0b011 << 2),
        &signed.bytes,
    );
    let receipt = SignedReceipt::sign(&receipt(), signer());
    seeds.add(t, "receipt", 1, &postcard(&receipt));
    seeds.add(t, "receipt-here", SIGNED_HERE | 1, &receipt.bytes);
    let (m, n) = (5, 13);
    let all = leaves(n);
    let mut proof = Vec::new();
    proof.extend_from_slice(&(m as u64).to_le_bytes());
    proof.extend_from_slice(&(n as u64).to_le_bytes());
    proof.extend_from_slice(&root(&all[..m]));
    proof.extend_from_slice(&root(&all));
    for hash in consistency_proof(m, &all) {
        proof.extend_from_slice(&hash);
    }
    seeds.add(t, "consistency", 2, &proof);
    seeds.add(t, "consistency-tree", 3, b"\x0c\x06\x07leaf content");
}

fn control_seeds(seeds: &mut Seeds) {
    let t = "wire_control";
    let grant = fixtures::signed_grant();
    let nonce = *b"fuzz seed nonce!";
    let requests = [
        (
            "manifest",
            ControlRequest::Manifest {
                slide: fixtures::slide(),
                grant: grant.clone(),
                refresh: false,
                nonce,
            },
        ),
        ("deliver-grant", ControlRequest::DeliverGrant(grant.clone())),
        (
            "deliver-revocation",
            ControlRequest::DeliverRevocation(SignedRevocation::sign(&revocation(), signer())),
        ),
        ("roster-after", ControlRequest::RosterAfter { version: 1 }),
        (
            "cosign",
            ControlRequest::Cosign {
                checkpoint: signed_checkpoint(13),
                since: 5,
                proof: consistency_proof(5, &leaves(13)),
            },
        ),
    ];
    for (name, request) in requests {
        seeds.add(t, &format!("request-{name}"), 0, &message(&request));
    }
    let manifest = SignedManifest::sign(&manifest(), signer());
    let consent = SignedConsentStatement::sign(&consent(true), signer());
    let receipt = SignedReceipt::sign(&receipt(), signer());
    let responses = [
        (
            "manifest",
            ControlResponse::Manifest {
                manifest: manifest.clone(),
                consent: Some(consent.clone()),
                receipt: Some(receipt.clone()),
            },
        ),
        ("accepted", ControlResponse::Accepted),
        (
            "rosters",
            ControlResponse::Rosters(vec![
                signed_roster(1, &[0, 1, 2], &[0, 1]),
                signed_roster(2, &[0, 1, 2, 3], &[1, 2]),
            ]),
        ),
        (
            "denied",
            ControlResponse::Denied {
                reason: "no grant covers this request".into(),
            },
        ),
        ("not-found", ControlResponse::NotFound),
        (
            "failed",
            ControlResponse::Failed {
                reason: "audit log unavailable".into(),
            },
        ),
        (
            "cosignature",
            ControlResponse::Cosignature(signer().sign("x", b"y").to_vec()),
        ),
        (
            "inconsistent",
            ControlResponse::Inconsistent {
                since: 5,
                reason: "rewritten".into(),
            },
        ),
        (
            "deidentified-manifest",
            ControlResponse::DeidentifiedManifest {
                manifest,
                view: SignedDeidentifiedView::sign(&view(), signer()),
                consent: Some(consent),
                receipt: Some(receipt),
            },
        ),
    ];
    for (name, response) in responses {
        seeds.add(t, &format!("response-{name}"), 1, &message(&response));
    }
    let announcements = [
        (
            "roster",
            Announcement::Roster(signed_roster(1, &[0, 1, 2], &[0, 2])),
        ),
        (
            "revocation",
            Announcement::Revocation(SignedRevocation::sign(&revocation(), signer())),
        ),
    ];
    for (name, announcement) in announcements {
        seeds.add(
            t,
            &format!("announcement-{name}"),
            2,
            &postcard(&announcement),
        );
    }
}

fn tile_seeds(seeds: &mut Seeds) {
    let t = "wire_tiles";
    let request = |tiles: usize, user: Option<UserClaim>| TileRequest {
        slide: fixtures::slide(),
        grant: fixtures::signed_grant(),
        tiles: (0..tiles).map(fixtures::tile_id).collect(),
        user,
        nonce: *b"fuzz seed nonce!",
    };
    let mut session = message(&request(
        3,
        Some(UserClaim::new("j.smith@rae.nhs.uk", "pathologist").unwrap()),
    ));
    session.extend(message(&request(1, None)));
    seeds.add(t, "server-session", 0, &session);

    // Three batches: served with a receipt, refused, served without one.
    let mut answer = vec![TILE_SESSION_READY];
    let ok = |out: &mut Vec<u8>, index: usize| {
        let bytes = fixtures::tile_bytes(index);
        out.push(TileStatus::Ok as u8);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    };
    answer.push(3);
    ok(&mut answer, 0);
    answer.push(TileStatus::Missing as u8);
    ok(&mut answer, 2);
    let receipt = SignedReceipt::sign(&receipt(), signer());
    answer.extend(message(&Some(receipt)));
    answer.push(2);
    answer.push(TileStatus::Denied as u8);
    answer.push(1);
    ok(&mut answer, 0);
    answer.extend(message(&None::<SignedReceipt>));
    seeds.add(t, "requester-session", 1, &answer);

    let mut warm_up = 16u64.to_le_bytes().to_vec();
    warm_up.extend_from_slice(&[0xaa; 16]);
    warm_up.push(WARM_UP_DONE);
    seeds.add(t, "warm-up", 2, &warm_up);
}

fn main() {
    let mut seeds = Seeds {
        written: Vec::new(),
    };
    canonical_seeds(&mut seeds);
    signed_statement_seeds(&mut seeds);
    consent_seeds(&mut seeds);
    roster_seeds(&mut seeds);
    audit_seeds(&mut seeds);
    control_seeds(&mut seeds);
    tile_seeds(&mut seeds);

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in TARGETS {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).unwrap();
        // Seeds no longer generated go; what the fuzzer added (not `seed-*`) stays.
        for file in fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with("seed-") {
                fs::remove_file(&path).unwrap();
            }
        }
    }
    let mut total = 0;
    for (target, name, data) in &seeds.written {
        fs::write(corpus.join(target).join(name), data).unwrap();
        total += data.len();
    }
    assert!(
        TARGETS
            .iter()
            .all(|t| seeds.written.iter().any(|(target, ..)| target == t)),
        "every target has seeds"
    );
    println!(
        "wrote {} seeds ({total} bytes) under {}",
        seeds.written.len(),
        corpus.display()
    );
}
