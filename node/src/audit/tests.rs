//! Audit log tests on real redb files: honest logs verify; rewritten entries and forked
//! checkpoints are reported; the export is FHIR.

use super::*;
use crate::store::Store;
use slidemesh_protocol::SlideId;

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
        .append_audit_entries(&[entry(0, true), entry(1, false)])
        .unwrap();
    assert!(store.audit_checkpoint(&trust, &key).unwrap().is_some());
    assert!(
        store.audit_checkpoint(&trust, &key).unwrap().is_none(),
        "unchanged log"
    );
    store.append_audit_entries(&[entry(2, true)]).unwrap();
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
        .append_audit_entries(&[entry(0, true), entry(1, false)])
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
        .append_audit_entries(&[entry(0, true), entry(1, true)])
        .unwrap();
    store.audit_checkpoint(&trust, &key).unwrap();
    store.append_audit_entries(&[entry(2, true)]).unwrap();
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

#[test]
fn the_writer_gives_sequence_numbers_once_committed_and_keeps_receipts() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    let log = AuditLog::start(store.clone()).unwrap();
    log.record(entry(0, false));
    let pending = log.record_pending(entry(1, true));
    let (seq, written) = pending.wait(Duration::from_secs(5)).expect("committed");
    assert_eq!((seq, &written), (1, &entry(1, true)));
    // Committed means readable, and the sequence number is the entry's place in the log.
    assert_eq!(store.audit_entries().unwrap()[1], (1, entry(1, true)));

    // The server's receipt for it, kept beside a received entry at the requester.
    let server = NodeKey::generate();
    let receipt = SignedReceipt::sign(
        &slidemesh_protocol::audit::Receipt {
            log: "RR8".parse().unwrap(),
            entries: vec![(seq, written)],
        },
        &server,
    );
    let mut received = entry(2, true);
    received.side = Side::Received;
    log.record_with_receipt(received, receipt.clone());
    let settled = log.record_pending(entry(3, true));
    assert_eq!(settled.wait(Duration::from_secs(5)).unwrap().0, 3);
    assert_eq!(store.audit_receipt(2).unwrap(), Some(receipt.clone()));
    assert_eq!(store.audit_receipt(1).unwrap(), None);
    let key = NodeKey::generate();
    assert!(
        store
            .verify_audit(&key.public())
            .unwrap()
            .problems
            .is_empty()
    );

    // A kept receipt changed afterwards is reported.
    let mut forged = receipt;
    let last = forged.bytes.len() - 1;
    forged.bytes[last] ^= 1;
    let tx = store.db.begin_write().unwrap();
    tx.open_table(RECEIPTS)
        .unwrap()
        .insert(2, encode(&forged).as_slice())
        .unwrap();
    tx.commit().unwrap();
    let problems = store.verify_audit(&key.public()).unwrap().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("receipt kept with entry 2")),
        "{problems:?}"
    );
}

/// The drain at shutdown: once `flush` returns, everything queued before it is on disk.
#[test]
fn flush_returns_once_everything_queued_before_it_is_durable() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    let log = AuditLog::start(store.clone()).unwrap();
    assert!(
        log.flush(Duration::from_secs(5)),
        "an empty log flushes at once"
    );
    for i in 0..500 {
        log.record(entry(i, i % 3 != 0));
    }
    assert!(log.flush(Duration::from_secs(10)));
    let written = store.audit_entries().unwrap();
    assert_eq!(written.len(), 500);
    assert_eq!(written[499].1, entry(499, true));
}

/// The drain at shutdown: `close` writes everything queued before it, then ends the writer
/// thread, which lets go of its store handle; an entry queued afterwards is refused, so a
/// request still waiting for one serves nothing.
#[test]
fn close_writes_the_queue_then_ends_the_writer_and_refuses_later_entries() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    let log = AuditLog::start(store.clone()).unwrap();
    for i in 0..300 {
        log.record(entry(i, true));
    }
    assert!(log.close(Duration::from_secs(10)));
    assert_eq!(store.audit_entries().unwrap().len(), 300);
    // Only this test's handle is left: the writer's was dropped with its thread.
    assert_eq!(std::sync::Arc::strong_count(&store), 1);
    let late = log.record_pending(entry(300, true));
    assert!(late.wait(Duration::from_secs(1)).is_none());
    assert!(
        !log.close(Duration::from_secs(1)),
        "a closed log closes no more"
    );
    assert_eq!(store.audit_entries().unwrap().len(), 300);
}

/// A slide's history comes from the index by slide, newest first, a page at a time; a log
/// written before the index existed is indexed when the store opens.
#[test]
fn a_slides_history_is_read_through_its_index_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (one, other) = (SlideId::of(b"one"), SlideId::of(b"other"));
    let about = |slide: SlideId, i: u64| AuditEntry {
        slide,
        ..entry(i, true)
    };
    {
        let store = Store::open(&path).unwrap();
        let entries: Vec<AuditEntry> = (0..10)
            .map(|i| about(if i % 2 == 0 { one } else { other }, i))
            .collect();
        store.append_audit_entries(&entries).unwrap();
        let history = store.slide_history(&one, None, 3).unwrap();
        assert_eq!(history.total, 5);
        let seqs: Vec<u64> = history.entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [8, 6, 4]);
        assert!(history.entries.iter().all(|(_, e)| e.slide == one));
        let next = store.slide_history(&one, Some(4), 3).unwrap();
        let seqs: Vec<u64> = next.entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [2, 0]);
        assert!(
            store
                .slide_history(&SlideId::of(b"none"), None, 3)
                .unwrap()
                .entries
                .is_empty()
        );

        // As a log from before the index: the index emptied.
        let tx = store.db.begin_write().unwrap();
        tx.delete_table(crate::store::audit::BY_SLIDE).unwrap();
        tx.open_table(crate::store::audit::BY_SLIDE).unwrap();
        tx.commit().unwrap();
        assert_eq!(store.slide_history(&other, None, 10).unwrap().total, 0);
    }
    let store = Store::open(&path).unwrap();
    let history = store.slide_history(&other, None, 10).unwrap();
    let seqs: Vec<u64> = history.entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [9, 7, 5, 3, 1]);
}
