//! Audit log tests on real redb files: honest logs verify; rewritten entries and forked
//! checkpoints are reported; the export is FHIR.

use super::*;
use crate::store::Store;

fn entry(i: u64, allowed: bool) -> AuditEntry {
    AuditEntry {
        time: 1_800_000_000 + i,
        side: Side::Served,
        peer: "RAE".parse().unwrap(),
        peer_id: "12D3KooWtest".into(),
        user: None,
        purpose: "second-opinion".into(),
        slide: SlideId::of(b"slide"),
        action: "fetch_tiles".into(),
        what: format!("{i} tiles"),
        allowed,
        rules: vec!["care".into()],
        policy_hash: "00".repeat(32),
        grant: None,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    (dir, store)
}

#[test]
fn an_honest_log_verifies() {
    let (_dir, store) = store();
    let key = NodeKey::generate();
    let trust: TrustCode = "RR8".parse().unwrap();
    store
        .append_audit(&[entry(0, true), entry(1, false)])
        .unwrap();
    assert!(store.audit_checkpoint(&trust, &key).unwrap().is_some());
    assert!(
        store.audit_checkpoint(&trust, &key).unwrap().is_none(),
        "unchanged log"
    );
    store.append_audit(&[entry(2, true)]).unwrap();
    store.audit_checkpoint(&trust, &key).unwrap();
    let v = store.verify_audit(&key.public()).unwrap();
    assert_eq!((v.entries, v.checkpoints), (3, 2));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(store.audit_entries().unwrap()[1].1, entry(1, false));
}

#[test]
fn a_rewritten_entry_is_detected() {
    let (_dir, store) = store();
    let key = NodeKey::generate();
    store
        .append_audit(&[entry(0, true), entry(1, false)])
        .unwrap();
    store
        .audit_checkpoint(&"RR8".parse().unwrap(), &key)
        .unwrap();
    // The denial becomes an allow.
    store.tamper_audit_entry(1, &entry(1, true)).unwrap();
    let v = store.verify_audit(&key.public()).unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("entry 1 is not what was written")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("rewritten")),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_forked_checkpoint_is_detected() {
    let (_dir, store) = store();
    let key = NodeKey::generate();
    let trust: TrustCode = "RR8".parse().unwrap();
    store
        .append_audit(&[entry(0, true), entry(1, true)])
        .unwrap();
    store.audit_checkpoint(&trust, &key).unwrap();
    store.append_audit(&[entry(2, true)]).unwrap();
    // A checkpoint signed over another history of size 3.
    let other: Vec<Hash> = (0..3).map(|i| leaf_hash(&[i])).collect();
    let forged = SignedCheckpoint::sign(
        &Checkpoint {
            log: trust.clone(),
            size: 3,
            root: root(&other),
            time: 0,
        },
        &key,
    );
    let tx = store.db.begin_write().unwrap();
    {
        let mut t = tx.open_table(CHECKPOINTS).unwrap();
        t.insert(3, encode(&forged).as_slice()).unwrap();
    }
    tx.commit().unwrap();
    let v = store.verify_audit(&key.public()).unwrap();
    assert!(
        v.problems.iter().any(|p| p.contains("forked")),
        "{:?}",
        v.problems
    );
}

#[test]
fn export_is_fhir_audit_events() {
    let bundle = export::fhir_bundle("RR8", &[(0, entry(0, false))]);
    let event = &bundle["entry"][0]["resource"];
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["outcome"], "4");
    assert_eq!(event["agent"][0]["who"]["identifier"]["value"], "RAE");
}
