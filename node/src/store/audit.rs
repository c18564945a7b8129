//! The audit log's tables, declared here with the store's other tables (so `init` creates
//! them and the store needs nothing of the log); what goes in them, and why, is
//! [`crate::audit`]'s.

use redb::TableDefinition;

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
