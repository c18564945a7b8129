//! The audit log's tables, declared here with the store's other tables (so `init` creates
//! them and the store needs nothing of the log's logic); what goes in them, and why, is
//! [`crate::audit`]'s. Here too: the index of entries by slide, and a slide's history read
//! through it, a page at a time.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use slidemesh_protocol::SlideId;
use slidemesh_protocol::audit::{AuditEntry, SignedReceipt, leaf_hash};
use slidemesh_protocol::canonical;

use super::{RedbContext, Store, StoreError, encode};

/// Sequence number -> canonical([`AuditEntry`](slidemesh_protocol::audit::AuditEntry)).
pub(crate) const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_entries_v1");
/// Sequence number -> leaf hash of the entry as written.
pub(crate) const LEAVES: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("audit_leaves_v1");
/// Tree size -> postcard([`SignedCheckpoint`](slidemesh_protocol::audit::SignedCheckpoint)).
pub(crate) const CHECKPOINTS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("audit_checkpoints_v1");
/// Sequence number of a received access -> postcard([`SignedReceipt`](slidemesh_protocol::audit::SignedReceipt)) the server gave.
pub(crate) const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_receipts_v1");
/// Other members' logs: trust -> postcard([`Checkpoint`](slidemesh_protocol::audit::Checkpoint)) this node last co-signed.
pub(crate) const COSIGNED: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_cosigned_v1");
/// The entries about each slide: [`by_slide_key`] -> nothing. One slide's entries are one
/// range of keys, in log order, so its history is read without scanning the log.
pub(crate) const BY_SLIDE: TableDefinition<&[u8], ()> = TableDefinition::new("audit_by_slide_v1");

/// The slide's id, then the entry's sequence number big-endian.
pub(crate) fn by_slide_key(slide: &SlideId, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(slide.as_bytes());
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Appends entries (each with the receipt a server gave for it, if any) within `tx`: the
/// entry, its leaf hash, its place in the index by slide. The audit log's writer commits
/// them on their own; a referral's step commits its entries with the step, so the two cannot
/// part. Returns the first entry's sequence number.
pub(crate) fn append_in(
    tx: &redb::WriteTransaction,
    rows: &[(&AuditEntry, Option<&SignedReceipt>)],
) -> Result<u64, StoreError> {
    let mut table = tx.open_table(ENTRIES).op("open audit entries")?;
    let mut leaves = tx.open_table(LEAVES).op("open audit leaves")?;
    let mut receipts = tx.open_table(RECEIPTS).op("open audit receipts")?;
    let mut by_slide = tx.open_table(BY_SLIDE).op("open audit index")?;
    let first = table
        .last()
        .op("read audit size")?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(0);
    for (seq, (entry, receipt)) in (first..).zip(rows) {
        let bytes = canonical::encode(*entry);
        table
            .insert(seq, bytes.as_slice())
            .op("append audit entry")?;
        leaves
            .insert(seq, &leaf_hash(&bytes))
            .op("append audit leaf")?;
        by_slide
            .insert(by_slide_key(&entry.slide, seq).as_slice(), ())
            .op("index audit entry")?;
        if let Some(receipt) = receipt {
            receipts
                .insert(seq, encode(*receipt).as_slice())
                .op("store audit receipt")?;
        }
    }
    Ok(first)
}

fn seq_of(key: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[32..40]);
    u64::from_be_bytes(seq)
}

fn decode_entry(seq: u64, bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    slidemesh_protocol::canonical::decode(bytes).map_err(|e| StoreError::Corrupt {
        table: "audit_entries_v1",
        detail: format!("entry {seq}: {e}"),
    })
}

/// One page of a slide's history.
#[derive(Debug)]
pub struct SlideHistory {
    /// Entries about the slide in the whole log.
    pub total: u64,
    /// Newest first.
    pub entries: Vec<(u64, AuditEntry)>,
}

impl Store {
    /// A log written before the index existed is indexed once, at open.
    pub(super) fn index_audit_by_slide(&self) -> Result<(), StoreError> {
        {
            let tx = self.db.begin_read().op("begin read")?;
            let indexed = tx.open_table(BY_SLIDE).op("open audit index")?;
            let entries = tx.open_table(ENTRIES).op("open audit entries")?;
            if !indexed.is_empty().op("read audit index")? || entries.is_empty().op("read")? {
                return Ok(());
            }
        }
        let tx = self.db.begin_write().op("begin write")?;
        {
            let entries = tx.open_table(ENTRIES).op("open audit entries")?;
            let mut indexed = tx.open_table(BY_SLIDE).op("open audit index")?;
            // Checked again inside the transaction: another process may have indexed.
            if indexed.is_empty().op("read audit index")? {
                for row in entries.iter().op("iterate audit entries")? {
                    let (seq, bytes) = row.op("read audit entry")?;
                    let entry = decode_entry(seq.value(), bytes.value())?;
                    indexed
                        .insert(by_slide_key(&entry.slide, seq.value()).as_slice(), ())
                        .op("index audit entry")?;
                }
            }
        }
        tx.commit().op("commit audit index")
    }

    /// The entries about `slide`, newest first: at most `limit` of those older than
    /// `before` (a sequence number; none: from the newest).
    pub fn slide_history(
        &self,
        slide: &SlideId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<SlideHistory, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let indexed = tx.open_table(BY_SLIDE).op("open audit index")?;
        let entries = tx.open_table(ENTRIES).op("open audit entries")?;
        let first = by_slide_key(slide, 0);
        let all = indexed
            .range(first.as_slice()..=by_slide_key(slide, u64::MAX).as_slice())
            .op("read audit index")?;
        let total = all.count() as u64;
        let end = by_slide_key(slide, before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        let page = indexed
            .range(first.as_slice()..end.as_slice())
            .op("read audit index")?;
        for row in page.rev().take(limit) {
            let (key, _) = row.op("read audit index")?;
            let seq = seq_of(key.value());
            let bytes =
                entries
                    .get(seq)
                    .op("read audit entry")?
                    .ok_or_else(|| StoreError::Corrupt {
                        table: "audit_by_slide_v1",
                        detail: format!("entry {seq} is indexed but not in the log"),
                    })?;
            out.push((seq, decode_entry(seq, bytes.value())?));
        }
        Ok(SlideHistory {
            total,
            entries: out,
        })
    }
}
