//! Federation state in the store: roster versions, grants (issued and received),
//! revocations, slides other trusts shared with us, and the outbox of messages to peers.
//!
//! The outbox is how the CLI and the running node cooperate without talking to each other:
//! `slidemesh share` signs a grant and commits it together with an outbox entry in one
//! transaction; the node's delivery task sends outbox entries to their peers and removes
//! each once the peer acknowledged it, retrying across restarts and outages.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::consent::SignedConsentStatement;
use slidemesh_protocol::wire::ControlRequest;
use slidemesh_protocol::{
    Grant, GrantId, Roster, SignedDeidentifiedView, SignedGrant, SignedManifest, SignedRevocation,
    SignedRoster, SlideId, TrustCode,
};

use super::{RedbContext, SlideSummary, Store, StoreError, decode, encode};

/// Roster version -> postcard([`SignedRoster`]).
pub(super) const ROSTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("rosters_v1");
/// GrantId -> postcard([`StoredGrant`]).
pub(super) const GRANTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("grants_v1");
/// GrantId -> postcard([`SignedRevocation`]).
pub(super) const REVOCATIONS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("revocations_v1");
/// SlideId -> postcard([`RemoteSlide`]). v2 added the de-identified view, v3 the owner's
/// consent statement; older rows are left behind unread, and the node fetches those
/// slides' manifests again because their grants have no stored slide.
const REMOTE_SLIDES_NAME: &str = "remote_slides_v3";
pub(super) const REMOTE_SLIDES: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new(REMOTE_SLIDES_NAME);
/// Sequence number -> postcard([`OutboxItem`]).
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_v1");

/// A grant this node issued or received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredGrant {
    pub signed: SignedGrant,
    /// The decoded statement (verified before it was stored).
    pub grant: Grant,
    /// True at the owner, false at the grantee.
    pub issued_here: bool,
    pub stored_at: u64,
}

/// A slide another trust shared with this node's trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteSlide {
    /// The manifest as the owner sent it: the slide's own, or its de-identified view.
    pub signed: SignedManifest,
    pub summary: SlideSummary,
    /// The grant this node shows when it asks the owner for tiles.
    pub grant: GrantId,
    pub stored_at: u64,
    /// Present when `signed` is a de-identified view: the owner's statement binding it to
    /// the granted slide and naming the project its pseudonyms are for.
    pub deidentified: Option<SignedDeidentifiedView>,
    /// The owner's signed policy text and recorded consent for the slide, as of
    /// `stored_at`: what this node decides with when it serves the slide's tiles to others.
    pub consent: Option<SignedConsentStatement>,
}

/// A message waiting to be delivered to a member trust's node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxItem {
    pub to: TrustCode,
    pub message: ControlRequest,
    pub created_at: u64,
}

impl Store {
    /// The newest roster version this node accepted, if any.
    pub fn current_roster(&self) -> Result<Option<(Roster, SignedRoster)>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(ROSTERS).op("open rosters")?;
        let Some((_, value)) = table.last().op("read roster")? else {
            return Ok(None);
        };
        let signed: SignedRoster = decode("rosters_v1", value.value())?;
        let roster = signed.roster().map_err(|e| StoreError::Corrupt {
            table: "rosters_v1",
            detail: e.to_string(),
        })?;
        Ok(Some((roster, signed)))
    }

    /// Roster versions newer than `version`, oldest first.
    pub fn rosters_after(&self, version: u64) -> Result<Vec<SignedRoster>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(ROSTERS).op("open rosters")?;
        let mut out = Vec::new();
        for entry in table.range(version + 1..).op("list rosters")? {
            let (_, value) = entry.op("list rosters")?;
            out.push(decode("rosters_v1", value.value())?);
        }
        Ok(out)
    }

    /// Stores a roster version the caller has verified against the current one. Returns
    /// false (and changes nothing) if that version is already stored.
    pub fn put_roster(&self, version: u64, signed: &SignedRoster) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        let added = {
            let mut table = tx.open_table(ROSTERS).op("open rosters")?;
            if table.get(version).op("read roster")?.is_some() {
                false
            } else {
                table
                    .insert(version, encode(signed).as_slice())
                    .op("insert roster")?;
                true
            }
        };
        tx.commit().op("commit roster")?;
        Ok(added)
    }

    /// Stores a grant, and optionally an outbox message, in one transaction.
    pub fn put_grant(
        &self,
        stored: &StoredGrant,
        outbox: Option<OutboxItem>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut grants = tx.open_table(GRANTS).op("open grants")?;
            grants
                .insert(stored.signed.id().as_bytes(), encode(stored).as_slice())
                .op("insert grant")?;
            if let Some(item) = outbox {
                push_outbox(&tx, &item)?;
            }
        }
        tx.commit().op("commit grant")?;
        Ok(())
    }

    pub fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(GRANTS).op("open grants")?;
        table
            .get(id.as_bytes())
            .op("read grant")?
            .map(|v| decode("grants_v1", v.value()))
            .transpose()
    }

    pub fn grants(&self) -> Result<Vec<StoredGrant>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(GRANTS).op("open grants")?;
        let mut out = Vec::new();
        for entry in table.iter().op("list grants")? {
            let (_, value) = entry.op("list grants")?;
            out.push(decode("grants_v1", value.value())?);
        }
        Ok(out)
    }

    /// Records a revocation (and optionally an outbox message) in one transaction. At the
    /// grantee it also forgets the shared slide the grant covered, if no other grant does.
    pub fn put_revocation(
        &self,
        grant: &GrantId,
        signed: &SignedRevocation,
        outbox: Option<OutboxItem>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(REVOCATIONS).op("open revocations")?;
            table
                .insert(grant.as_bytes(), encode(signed).as_slice())
                .op("insert revocation")?;
            remove_remote_slides_of(&tx, grant)?;
            if let Some(item) = outbox {
                push_outbox(&tx, &item)?;
            }
        }
        tx.commit().op("commit revocation")?;
        Ok(())
    }

    /// Forgets the shared slides a received grant covered (it expired); returns how many.
    pub fn withdraw_grant(&self, grant: &GrantId) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        let removed = remove_remote_slides_of(&tx, grant)?;
        tx.commit().op("commit withdrawal")?;
        Ok(removed)
    }

    /// Removes the shared slide `id` if it is kept under `grant` (its owner refused this
    /// node the slide), in one transaction; returns what was removed.
    pub fn end_remote_slide(
        &self,
        id: &SlideId,
        grant: &GrantId,
    ) -> Result<Option<RemoteSlide>, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        let ended = {
            let mut table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
            let kept: Option<RemoteSlide> = table
                .get(id.as_bytes())
                .op("read remote slide")?
                .map(|v| decode(REMOTE_SLIDES_NAME, v.value()))
                .transpose()?;
            match kept {
                Some(slide) if slide.grant == *grant => {
                    table.remove(id.as_bytes()).op("remove remote slide")?;
                    Some(slide)
                }
                _ => None,
            }
        };
        tx.commit().op("commit end of a shared slide")?;
        Ok(ended)
    }

    pub fn is_revoked(&self, grant: &GrantId) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REVOCATIONS).op("open revocations")?;
        Ok(table.get(grant.as_bytes()).op("read revocation")?.is_some())
    }

    pub fn put_remote_slide(&self, id: &SlideId, slide: &RemoteSlide) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
            table
                .insert(id.as_bytes(), encode(slide).as_slice())
                .op("insert remote slide")?;
        }
        tx.commit().op("commit remote slide")?;
        Ok(())
    }

    pub fn remote_slide(&self, id: &SlideId) -> Result<Option<RemoteSlide>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
        table
            .get(id.as_bytes())
            .op("read remote slide")?
            .map(|v| decode(REMOTE_SLIDES_NAME, v.value()))
            .transpose()
    }

    pub fn remote_summaries(&self) -> Result<Vec<(SlideId, SlideSummary)>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
        let mut out = Vec::new();
        for entry in table.iter().op("list remote slides")? {
            let (key, value) = entry.op("list remote slides")?;
            let slide: RemoteSlide = decode(REMOTE_SLIDES_NAME, value.value())?;
            out.push((SlideId::from_bytes(*key.value()), slide.summary));
        }
        Ok(out)
    }

    /// The shared slides this node holds as de-identified views, with the project each
    /// view was made for (from the owner's statement, verified when it was stored).
    pub fn deidentified_projects(
        &self,
    ) -> Result<std::collections::HashMap<SlideId, String>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
        let mut out = std::collections::HashMap::new();
        for entry in table.iter().op("list remote slides")? {
            let (key, value) = entry.op("list remote slides")?;
            let slide: RemoteSlide = decode(REMOTE_SLIDES_NAME, value.value())?;
            if let Some(view) = slide.deidentified.and_then(|v| v.verify().ok()) {
                out.insert(SlideId::from_bytes(*key.value()), view.project);
            }
        }
        Ok(out)
    }

    /// Outbox entries, oldest first.
    pub fn outbox(&self) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(OUTBOX).op("open outbox")?;
        let mut out = Vec::new();
        for entry in table.iter().op("list outbox")? {
            let (key, value) = entry.op("list outbox")?;
            out.push((key.value(), decode("outbox_v1", value.value())?));
        }
        Ok(out)
    }

    /// Removes a delivered outbox entry.
    pub fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(OUTBOX).op("open outbox")?;
            table.remove(seq).op("remove outbox entry")?;
        }
        tx.commit().op("commit outbox")?;
        Ok(())
    }
}

fn push_outbox(tx: &redb::WriteTransaction, item: &OutboxItem) -> Result<(), StoreError> {
    let mut table = tx.open_table(OUTBOX).op("open outbox")?;
    let next = table
        .last()
        .op("read outbox")?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(0);
    table
        .insert(next, encode(item).as_slice())
        .op("insert outbox entry")?;
    Ok(())
}

/// Removes the shared slides held under `grant`; returns how many.
fn remove_remote_slides_of(
    tx: &redb::WriteTransaction,
    grant: &GrantId,
) -> Result<usize, StoreError> {
    let mut remote = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
    let covered: Vec<[u8; 32]> = remote
        .iter()
        .op("list remote slides")?
        .filter_map(|e| e.ok())
        .filter_map(|(k, v)| {
            let slide: RemoteSlide = decode(REMOTE_SLIDES_NAME, v.value()).ok()?;
            (slide.grant == *grant).then_some(*k.value())
        })
        .collect();
    for key in &covered {
        remote.remove(key).op("remove remote slide")?;
    }
    Ok(covered.len())
}
