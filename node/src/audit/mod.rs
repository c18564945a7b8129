//! The audit trail: every consent decision this node makes when serving a peer, and every
//! access it makes as a requester, appended to a Merkle log (RFC 6962 shape, BLAKE3; see
//! `slidemesh_protocol::audit`) in the store, with checkpoints signed by the node's key.
//!
//! Entries carry who (trust, peer id, user when known), why (purpose), what (slide id,
//! action, what was served), the decision, the deciding rules and the policy's hash, and the
//! grant: never patient data. A checkpoint commits to every entry before it; `slidemesh
//! audit verify` recomputes the tree from the entries and checks every signed checkpoint
//! against it, so an entry changed or removed after a checkpoint is detected.
//!
//! Appends are cheap for the serving path: decisions go through a channel to one writer
//! thread that commits whatever queued during its previous commit as one group. A decision
//! that a peer gets a receipt for ([`AuditLog::record_pending`]) is committed before the
//! receipt is signed, so a receipt never names an entry a crash could lose. A received
//! access is stored with the server's receipt (table `audit_receipts_v1`).

pub mod cosign;
pub mod export;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
pub use slidemesh_protocol::audit::{AuditEntry, Side};
use slidemesh_protocol::audit::{
    Checkpoint, Hash, SignedCheckpoint, SignedReceipt, consistency_proof, leaf_hash, root,
    verify_consistency,
};
use slidemesh_protocol::{NodeKey, NodePublicKey, TrustCode, canonical};

use crate::store::audit::{CHECKPOINTS, COSIGNED, ENTRIES, LEAVES, RECEIPTS};
use crate::store::{RedbContext, Store, StoreError, decode, encode, now_unix};

/// One append for the writer thread.
struct Append {
    entry: AuditEntry,
    /// The server's receipt for a received access, kept beside the entry.
    receipt: Option<SignedReceipt>,
    /// Told the entry's sequence number once it is committed.
    done: Option<std::sync::mpsc::SyncSender<u64>>,
}

/// What the writer thread is handed: an entry, or a request to say when everything handed
/// before it is durable.
enum ToWriter {
    Append(Box<Append>),
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Flush, then end the writer; a batch the store still refuses at `give_up` is lost
    /// (nothing it covers was served: its waiters timed out).
    Stop {
        done: std::sync::mpsc::SyncSender<()>,
        give_up: std::time::Instant,
    },
}

impl ToWriter {
    fn sort_into(
        self,
        batch: &mut Vec<Append>,
        flushes: &mut Vec<mpsc::SyncSender<()>>,
        stop: &mut Option<std::time::Instant>,
    ) {
        match self {
            Self::Append(append) => batch.push(*append),
            Self::Flush(done) => flushes.push(done),
            Self::Stop { done, give_up } => {
                flushes.push(done);
                *stop = Some(give_up);
            }
        }
    }
}

/// An entry on its way into the log; [`Pending::wait`] gives its sequence number once it
/// is durable.
pub struct Pending {
    pub entry: AuditEntry,
    committed: std::sync::mpsc::Receiver<u64>,
}

impl Pending {
    /// Waits (blocking) until the entry is committed; `None` if the writer failed or took
    /// longer than `timeout`.
    pub fn wait(self, timeout: Duration) -> Option<(u64, AuditEntry)> {
        let seq = self.committed.recv_timeout(timeout).ok()?;
        Some((seq, self.entry))
    }
}

/// The log's handle for the running node: appends go to a writer thread.
#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::SyncSender<ToWriter>,
    /// The writer thread, joined by [`Self::close`].
    writer: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// How an entry is counted in the `decisions` metric: its side, action and outcome.
fn decision_labels(entry: &AuditEntry) -> crate::metrics::DecisionLabels {
    let side = match entry.side {
        Side::Served => "served",
        Side::Received => "received",
        Side::Gateway => "local",
        Side::ReferralStep => "referral_step",
        Side::ReferralNotice => "referral_notice",
    };
    crate::metrics::DecisionLabels {
        side: side.into(),
        action: entry.action.clone(),
        outcome: if entry.allowed { "allowed" } else { "refused" }.into(),
    }
}

impl AuditLog {
    /// Starts the writer thread over `store`.
    pub fn start(store: std::sync::Arc<Store>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel::<ToWriter>(65536);
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                // Group commit: whatever queued while the previous transaction committed
                // goes into the next one. An entry waits for at most one commit, never for
                // a timer, so a crash loses only what had not reached the writer yet.
                // A failed commit (a full disk) loses nothing: the batch is kept and tried
                // again, with whatever queued meanwhile, until the store takes it. Waiters
                // for a durable entry meanwhile time out, so nothing leaves unlogged.
                // A flush is answered once everything handed before it is committed; a
                // stop also ends the writer then.
                let mut batch: Vec<Append> = Vec::new();
                let mut flushes: Vec<mpsc::SyncSender<()>> = Vec::new();
                let mut stop = None;
                let mut backoff = Duration::from_millis(100);
                loop {
                    if batch.is_empty() && flushes.is_empty() {
                        match receiver.recv() {
                            Ok(first) => first.sort_into(&mut batch, &mut flushes, &mut stop),
                            Err(_) => break,
                        }
                    }
                    let room = batch.len() + 4096;
                    while batch.len() < room && stop.is_none() {
                        match receiver.try_recv() {
                            Ok(message) => message.sort_into(&mut batch, &mut flushes, &mut stop),
                            Err(_) => break,
                        }
                    }
                    let committed = if batch.is_empty() {
                        Ok(0)
                    } else {
                        store.append_audit(&batch)
                    };
                    let counted = crate::metrics::metrics();
                    match committed {
                        Ok(first_seq) => {
                            // Waiters first; counting is for operators and can wait.
                            for (seq, append) in (first_seq..).zip(batch.iter_mut()) {
                                if let Some(done) = append.done.take() {
                                    let _ = done.try_send(seq);
                                }
                            }
                            counted.audit_entries.inc_by(batch.len() as u64);
                            counted.audit_waiting.set(0);
                            let mut by_kind: HashMap<crate::metrics::DecisionLabels, u64> =
                                HashMap::new();
                            for append in batch.drain(..) {
                                *by_kind.entry(decision_labels(&append.entry)).or_default() += 1;
                            }
                            for (labels, n) in by_kind {
                                counted.decisions.get_or_create(&labels).inc_by(n);
                            }
                            for done in flushes.drain(..) {
                                let _ = done.try_send(());
                            }
                            backoff = Duration::from_millis(100);
                            if stop.is_some() {
                                break;
                            }
                        }
                        Err(e) if stop.is_some_and(|give_up| std::time::Instant::now() >= give_up) => {
                            tracing::error!(error = %e, entries = batch.len(), "audit writer stopping with entries it could not write; nothing they cover was served");
                            break;
                        }
                        Err(e) => {
                            counted.audit_write_failures.inc();
                            counted.audit_waiting.set(batch.len() as i64);
                            tracing::error!(error = %e, entries = batch.len(), retry_in = ?backoff, "audit entries could not be written; kept, and nothing they cover is served");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            })?;
        Ok(Self {
            sender,
            writer: std::sync::Arc::new(std::sync::Mutex::new(Some(writer))),
        })
    }

    /// The drain at shutdown: writes every entry queued before this call, then ends and
    /// joins the writer thread, so the store is no longer in its hands. Entries queued
    /// afterwards are refused (their waiters see a failure and serve nothing). `false` when
    /// the queue could not all be written within `timeout` (a full disk, say); the writer
    /// still ends then.
    pub fn close(&self, timeout: Duration) -> bool {
        let (done, flushed) = mpsc::sync_channel(1);
        let stop = ToWriter::Stop {
            done,
            give_up: std::time::Instant::now() + timeout,
        };
        // The writer gives up at `give_up`, after its current back-off (at most 5 s).
        let written = self.sender.send(stop).is_ok()
            && flushed
                .recv_timeout(timeout + Duration::from_secs(6))
                .is_ok();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer
            && (written || writer.is_finished())
        {
            let _ = writer.join();
        }
        written
    }

    fn send(&self, append: Append) {
        // When the writer is far behind (65,536 queued) the caller waits for room rather
        // than losing entries.
        if self
            .sender
            .send(ToWriter::Append(Box::new(append)))
            .is_err()
        {
            tracing::error!("audit writer stopped; entry lost");
        }
    }

    /// Waits (blocking) until every entry queued before this call is durable: the drain at
    /// shutdown. `false` if that took longer than `timeout` (the disk is full, say) or the
    /// writer has stopped.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, flushed) = mpsc::sync_channel(1);
        if self.sender.send(ToWriter::Flush(done)).is_err() {
            return false;
        }
        flushed.recv_timeout(timeout).is_ok()
    }

    /// Queues an entry.
    pub fn record(&self, entry: AuditEntry) {
        self.send(Append {
            entry,
            receipt: None,
            done: None,
        });
    }

    /// Queues an entry the caller will want to prove was written (a receipt for a peer).
    pub fn record_pending(&self, entry: AuditEntry) -> Pending {
        let (done, committed) = std::sync::mpsc::sync_channel(1);
        self.send(Append {
            entry: entry.clone(),
            receipt: None,
            done: Some(done),
        });
        Pending { entry, committed }
    }

    /// Queues a received access together with the server's receipt for it.
    pub fn record_with_receipt(&self, entry: AuditEntry, receipt: SignedReceipt) {
        self.send(Append {
            entry,
            receipt: Some(receipt),
            done: None,
        });
    }
}

/// A receipt as `audit show --json` and the protocol probe print it: whose log, the
/// signer, and each decision it names (sequence number, action, peer, person, leaf hash); or why it
/// does not verify.
pub fn receipt_json(signed: &SignedReceipt) -> serde_json::Value {
    match signed.verify() {
        Ok(receipt) => serde_json::json!({
            "log": receipt.log,
            "signer": signed.signer.to_string(),
            "decisions": receipt.entries.iter().map(|(seq, decision)| serde_json::json!({
                "seq": seq,
                "action": decision.action,
                "peer": decision.peer,
                "user": decision.user,
                "leaf": hex::encode(decision.leaf()),
            })).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "invalid": e.to_string() }),
    }
}

/// What `verify` found.
#[derive(Debug, Serialize)]
pub struct Verification {
    pub entries: u64,
    pub checkpoints: usize,
    pub cosignatures: usize,
    pub problems: Vec<String>,
}

impl Store {
    /// Appends entries in one transaction, with their leaf hashes and any receipts; returns
    /// the first entry's sequence number.
    fn append_audit(&self, appends: &[Append]) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().op("begin audit write")?;
        let rows: Vec<_> = appends
            .iter()
            .map(|a| (&a.entry, a.receipt.as_ref()))
            .collect();
        let first = crate::store::audit::append_in(&tx, &rows)?;
        tx.commit().op("commit audit entries")?;
        Ok(first)
    }

    /// Appends entries directly (tests and tools; the running node goes through
    /// [`AuditLog`]).
    pub fn append_audit_entries(&self, entries: &[AuditEntry]) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().op("begin audit write")?;
        let rows: Vec<_> = entries.iter().map(|e| (e, None)).collect();
        let first = crate::store::audit::append_in(&tx, &rows)?;
        tx.commit().op("commit audit entries")?;
        Ok(first)
    }

    /// The receipt a peer gave for entry `seq` of this log (a received access), if any.
    pub fn audit_receipt(&self, seq: u64) -> Result<Option<SignedReceipt>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(RECEIPTS).op("open audit receipts")?;
        match table.get(seq).op("read audit receipt")? {
            Some(v) => Ok(Some(decode("audit_receipts_v1", v.value())?)),
            None => Ok(None),
        }
    }

    /// Every entry, oldest first, with its sequence number.
    pub fn audit_entries(&self) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(ENTRIES).op("open audit entries")?;
        let mut out = Vec::new();
        for row in table.iter().op("iterate audit entries")? {
            let (k, v) = row.op("read audit entry")?;
            let entry = canonical::decode(v.value()).map_err(|e| StoreError::Corrupt {
                table: "audit_entries_v1",
                detail: format!("entry {}: {e}", k.value()),
            })?;
            out.push((k.value(), entry));
        }
        Ok(out)
    }

    /// Signs a checkpoint of the log as it is now (none when empty or unchanged).
    pub fn audit_checkpoint(
        &self,
        log: &TrustCode,
        key: &NodeKey,
    ) -> Result<Option<SignedCheckpoint>, StoreError> {
        let tx = self.db.begin_write().op("begin checkpoint")?;
        let signed = {
            let leaves = tx.open_table(LEAVES).op("open audit leaves")?;
            let mut hashes: Vec<Hash> = Vec::new();
            for row in leaves.iter().op("iterate audit leaves")? {
                hashes.push(*row.op("read audit leaf")?.1.value());
            }
            let mut checkpoints = tx.open_table(CHECKPOINTS).op("open checkpoints")?;
            let size = hashes.len() as u64;
            let latest = checkpoints
                .last()
                .op("read checkpoints")?
                .map(|(k, _)| k.value());
            if size == 0 || latest == Some(size) {
                None
            } else {
                let signed = SignedCheckpoint::sign(
                    &Checkpoint {
                        log: log.clone(),
                        size,
                        root: root(&hashes),
                        time: now_unix(),
                    },
                    key,
                );
                checkpoints
                    .insert(size, encode(&signed).as_slice())
                    .op("store checkpoint")?;
                Some(signed)
            }
        };
        tx.commit().op("commit checkpoint")?;
        Ok(signed)
    }

    pub fn audit_checkpoints(&self) -> Result<Vec<SignedCheckpoint>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(CHECKPOINTS).op("open checkpoints")?;
        let mut out = Vec::new();
        for row in table.iter().op("iterate checkpoints")? {
            out.push(decode(
                "audit_checkpoints_v1",
                row.op("read checkpoint")?.1.value(),
            )?);
        }
        Ok(out)
    }

    /// The leaf hashes of the first `size` entries.
    pub fn audit_leaves(&self, size: u64) -> Result<Vec<Hash>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let leaves = tx.open_table(LEAVES).op("open audit leaves")?;
        let mut out = Vec::new();
        for row in leaves.range(0..size).op("iterate audit leaves")? {
            out.push(*row.op("read audit leaf")?.1.value());
        }
        Ok(out)
    }

    /// Adds a peer's co-signature to one of this node's checkpoints.
    pub fn add_cosignature(
        &self,
        size: u64,
        trust: TrustCode,
        key: NodePublicKey,
        signature: Vec<u8>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(CHECKPOINTS).op("open checkpoints")?;
            let current = table
                .get(size)
                .op("read checkpoint")?
                .map(|v| v.value().to_vec());
            if let Some(bytes) = current {
                let mut signed: SignedCheckpoint = decode("audit_checkpoints_v1", &bytes)?;
                signed.cosignatures.retain(|(t, _, _)| *t != trust);
                signed.cosignatures.push((trust, key, signature));
                table
                    .insert(size, encode(&signed).as_slice())
                    .op("store co-signature")?;
            }
        }
        tx.commit().op("commit co-signature")
    }

    /// The checkpoint of `log` (another member) this node last co-signed.
    pub fn last_cosigned(&self, log: &TrustCode) -> Result<Option<Checkpoint>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(COSIGNED).op("open co-signed")?;
        match table.get(log.as_str()).op("read co-signed")? {
            Some(v) => Ok(Some(decode("audit_cosigned_v1", v.value())?)),
            None => Ok(None),
        }
    }

    pub fn put_cosigned(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(COSIGNED).op("open co-signed")?;
            table
                .insert(checkpoint.log.as_str(), encode(checkpoint).as_slice())
                .op("store co-signed")?;
        }
        tx.commit().op("commit co-signed")
    }

    /// Recomputes the tree from the entries and checks it against the recorded leaves and
    /// every signed checkpoint (signatures, roots, consistency between checkpoints).
    pub fn verify_audit(&self, node_key: &NodePublicKey) -> Result<Verification, StoreError> {
        let entries = {
            let tx = self.db.begin_read().op("begin read")?;
            let table = tx.open_table(ENTRIES).op("open audit entries")?;
            let leaves = tx.open_table(LEAVES).op("open audit leaves")?;
            let mut out: Vec<(u64, Hash, Option<Hash>)> = Vec::new();
            for row in table.iter().op("iterate audit entries")? {
                let (k, v) = row.op("read audit entry")?;
                let recorded = leaves
                    .get(k.value())
                    .op("read audit leaf")?
                    .map(|l| *l.value());
                out.push((k.value(), leaf_hash(v.value()), recorded));
            }
            out
        };
        let mut problems = Vec::new();
        if let Some((i, (seq, _, _))) = entries
            .iter()
            .enumerate()
            .find(|(i, (seq, _, _))| *seq != *i as u64)
        {
            problems.push(format!(
                "entry {i} is missing (the log jumps to {seq}): entries were removed"
            ));
        }
        for (seq, computed, recorded) in &entries {
            if Some(*computed) != *recorded {
                problems.push(format!(
                    "entry {seq} is not what was written (its hash differs from the recorded one)"
                ));
            }
        }
        // Receipts other logs gave this one must still be what they signed.
        {
            let tx = self.db.begin_read().op("begin read")?;
            let receipts = tx.open_table(RECEIPTS).op("open audit receipts")?;
            for row in receipts.iter().op("iterate audit receipts")? {
                let (seq, bytes) = row.op("read audit receipt")?;
                let valid = decode::<SignedReceipt>("audit_receipts_v1", bytes.value())
                    .ok()
                    .is_some_and(|r| r.verify().is_ok());
                if !valid {
                    problems.push(format!(
                        "the receipt kept with entry {} does not verify",
                        seq.value()
                    ));
                }
            }
        }
        let leaves: Vec<Hash> = entries.iter().map(|(_, h, _)| *h).collect();
        let checkpoints = self.audit_checkpoints()?;
        let mut cosignatures = 0;
        let mut previous: Option<Checkpoint> = None;
        for signed in &checkpoints {
            let checkpoint = match signed.verify() {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("a checkpoint's signature does not verify: {e}"));
                    continue;
                }
            };
            if signed.signer != *node_key {
                problems.push(format!(
                    "checkpoint of size {} is not signed by this node's key",
                    checkpoint.size
                ));
            }
            cosignatures += signed.cosignatures.len();
            let size = checkpoint.size as usize;
            if size > leaves.len() {
                problems.push(format!(
                    "checkpoint of size {size} covers more entries than the log holds ({}): \
                     entries were removed",
                    leaves.len()
                ));
                continue;
            }
            if root(&leaves[..size]) != checkpoint.root {
                problems.push(format!(
                    "checkpoint of size {size}: the entries before it are not the ones it \
                     signed (the log was rewritten)"
                ));
            }
            if let Some(prev) = &previous {
                let proof = consistency_proof(prev.size as usize, &leaves[..size]);
                if !verify_consistency(
                    prev.size,
                    checkpoint.size,
                    &prev.root,
                    &checkpoint.root,
                    &proof,
                ) {
                    problems.push(format!(
                        "checkpoint of size {size} does not extend the one of size {} (a forked log)",
                        prev.size
                    ));
                }
            }
            previous = Some(checkpoint);
        }
        Ok(Verification {
            entries: leaves.len() as u64,
            checkpoints: checkpoints.len(),
            cosignatures,
            problems,
        })
    }

    /// Overwrites an entry in place, leaving its recorded leaf hash: what someone rewriting
    /// the log behind the node's back would do. For tests of `verify_audit` only.
    #[cfg(test)]
    pub(crate) fn tamper_audit_entry(
        &self,
        seq: u64,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin")?;
        {
            let mut table = tx.open_table(ENTRIES).op("open")?;
            table
                .insert(seq, canonical::encode(entry).as_slice())
                .op("tamper")?;
        }
        tx.commit().op("commit")
    }
}

#[cfg(test)]
mod tests;
