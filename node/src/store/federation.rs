//! Federation state in the store: roster versions, grants (issued and received),
//! revocations, slides other trusts shared with us, and the outbox of messages to peers.
//!
//! Revocations are kept as received, one per grant and signer: which of them counts (only
//! the grant issuer's) is decided with the grant and the roster, by `access::grant`, not
//! here. Keyed by signer too, so a member's forged revocation never replaces the issuer's.
//!
//! The outbox is how the CLI and the running node cooperate without talking to each other:
//! `slidemesh share` signs a grant and commits it together with an outbox entry in one
//! transaction; the node's delivery task sends outbox entries to their peers and removes
//! each once the peer acknowledged it, retrying across restarts and outages.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::Statement;
use slidemesh_protocol::consent::{ConsentStatement, SignedConsentStatement};
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
/// GrantId ++ the signer's key -> postcard([`SignedRevocation`]). v1 was keyed by the
/// grant alone (a later revocation replaced an earlier one, whoever signed it); its rows
/// are moved here when the store is opened ([`Store::migrate_federation`]).
pub(super) const REVOCATIONS: TableDefinition<&[u8; 64], &[u8]> =
    TableDefinition::new("revocations_v2");
const REVOCATIONS_V1: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("revocations_v1");
/// SlideId -> postcard([`RemoteSlide`]). v2 added the de-identified view, v3 the owner's
/// consent statement; older rows are left behind unread, and the node fetches those
/// slides' manifests again because their grants have no stored slide.
const REMOTE_SLIDES_NAME: &str = "remote_slides_v3";
pub(super) const REMOTE_SLIDES: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new(REMOTE_SLIDES_NAME);
/// SlideId -> postcard([`RemoteSlide`]): the slides this node holds as a replica for
/// others, under a `replicate` grant (kept apart from the slides shared with this trust's
/// people: the two come and go under different grants).
pub(super) const REPLICAS_NAME: &str = "replicas_v1";
pub(super) const REPLICAS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new(REPLICAS_NAME);

/// Where a copy of another trust's slide is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Shared with this trust's people (a view grant).
    Shared,
    /// Held for others (a replicate grant); shows this trust's people nothing.
    Replica,
}

impl CopyKind {
    /// The kind a grant's copy is kept as.
    pub fn of(action: slidemesh_protocol::Action) -> Self {
        match action {
            slidemesh_protocol::Action::View => Self::Shared,
            slidemesh_protocol::Action::Replicate => Self::Replica,
        }
    }

    fn table(
        self,
    ) -> (
        TableDefinition<'static, &'static [u8; 32], &'static [u8]>,
        &'static str,
    ) {
        match self {
            Self::Shared => (REMOTE_SLIDES, REMOTE_SLIDES_NAME),
            Self::Replica => (REPLICAS, REPLICAS_NAME),
        }
    }
}

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
    /// The owner's signed policy text, recorded consent and grants that hold for the
    /// slide, as of `stored_at`: what this node decides with when it serves the slide's
    /// tiles to others, and for its own people. A statement older than canonical version 2
    /// (no grant list) is dropped when the store is opened, and fetched again at once.
    pub consent: Option<SignedConsentStatement>,
}

/// The key of one signer's revocation of one grant.
fn revocation_key(grant: &GrantId, signed: &SignedRevocation) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(grant.as_bytes());
    key[32..].copy_from_slice(signed.signer.as_bytes());
    key
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
        insert_grant(&tx, stored)?;
        if let Some(item) = outbox {
            push_outbox(&tx, &item)?;
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

    /// Records a revocation (and optionally an outbox message) in one transaction, beside
    /// any other signer's revocation of the same grant. At the grantee it also forgets the
    /// shared slide the grant covered: the caller checked the revocation is by the grant's
    /// issuer first (a revocation of a grant this node does not hold covers no slide here).
    pub fn put_revocation(
        &self,
        grant: &GrantId,
        signed: &SignedRevocation,
        outbox: Option<OutboxItem>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        insert_revocation(&tx, grant, signed)?;
        if let Some(item) = outbox {
            push_outbox(&tx, &item)?;
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

    /// Removes the copy `id` of `kind` if it is kept under `grant` (its owner refused this
    /// node the slide), in one transaction; returns what was removed.
    pub fn end_copy(
        &self,
        kind: CopyKind,
        id: &SlideId,
        grant: &GrantId,
    ) -> Result<Option<RemoteSlide>, StoreError> {
        let (definition, name) = kind.table();
        let tx = self.db.begin_write().op("begin write")?;
        let ended = {
            let mut table = tx.open_table(definition).op("open copies")?;
            let kept: Option<RemoteSlide> = table
                .get(id.as_bytes())
                .op("read copy")?
                .map(|v| decode(name, v.value()))
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

    /// Every revocation received for `grant`, whoever signed it (see the module docs for
    /// which count).
    pub fn revocations(&self, grant: &GrantId) -> Result<Vec<SignedRevocation>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REVOCATIONS).op("open revocations")?;
        let (mut first, mut last) = ([0u8; 64], [0xffu8; 64]);
        first[..32].copy_from_slice(grant.as_bytes());
        last[..32].copy_from_slice(grant.as_bytes());
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8; 64]>(&first..=&last)
            .op("read revocations")?
        {
            let (_, value) = entry.op("read revocations")?;
            out.push(decode("revocations_v2", value.value())?);
        }
        Ok(out)
    }

    /// Brings federation tables written by an older version up to date, in one write
    /// transaction, only when there is something to do:
    /// - `revocations_v1` (one revocation per grant) moves into `revocations_v2` (one per
    ///   grant and signer) and is deleted;
    /// - a shared slide's consent statement of canonical version 1 (no list of the grants
    ///   that hold) is dropped and the slide marked stale, so the running node asks its
    ///   owner for a current statement at once. Until then nothing of that slide is served
    ///   from the copy, nor shown here: without a statement nothing is decided yes.
    pub(super) fn migrate_federation(&self) -> Result<(), StoreError> {
        let stale = |slide: &RemoteSlide| {
            slide.consent.as_ref().is_some_and(|c| {
                slidemesh_protocol::canonical::version_of(&c.bytes)
                    .is_none_or(|v| v < ConsentStatement::SINCE_VERSION)
            })
        };
        let (old_revocations, stale_statements) = {
            let tx = self.db.begin_read().op("begin read")?;
            let old = tx
                .list_tables()
                .op("list tables")?
                .any(|t| t.name() == REVOCATIONS_V1.name());
            let table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
            let mut stale_count = 0;
            for entry in table.iter().op("list remote slides")? {
                let (_, value) = entry.op("list remote slides")?;
                // A row this version cannot read is left for its readers to report.
                if let Ok(slide) = decode::<RemoteSlide>(REMOTE_SLIDES_NAME, value.value())
                    && stale(&slide)
                {
                    stale_count += 1;
                }
            }
            (old, stale_count > 0)
        };
        if !old_revocations && !stale_statements {
            return Ok(());
        }
        let tx = self.db.begin_write().op("begin write")?;
        {
            // Checked again inside the transaction: another process may have migrated.
            let old = tx
                .list_tables()
                .op("list tables")?
                .any(|t| t.name() == REVOCATIONS_V1.name());
            if old {
                let rows: Vec<(GrantId, SignedRevocation)> = {
                    let v1 = tx.open_table(REVOCATIONS_V1).op("open revocations_v1")?;
                    let mut rows = Vec::new();
                    for entry in v1.iter().op("list revocations_v1")? {
                        let (key, value) = entry.op("list revocations_v1")?;
                        rows.push((
                            GrantId::from_bytes(*key.value()),
                            decode("revocations_v1", value.value())?,
                        ));
                    }
                    rows
                };
                let mut v2 = tx.open_table(REVOCATIONS).op("open revocations")?;
                for (grant, signed) in &rows {
                    v2.insert(&revocation_key(grant, signed), encode(signed).as_slice())
                        .op("move revocation")?;
                }
                drop(v2);
                tx.delete_table(REVOCATIONS_V1)
                    .op("delete revocations_v1")?;
            }
            let mut table = tx.open_table(REMOTE_SLIDES).op("open remote slides")?;
            let mut rewrite = Vec::new();
            for entry in table.iter().op("list remote slides")? {
                let (key, value) = entry.op("list remote slides")?;
                if let Ok(mut slide) = decode::<RemoteSlide>(REMOTE_SLIDES_NAME, value.value())
                    && stale(&slide)
                {
                    slide.consent = None;
                    slide.stored_at = 0;
                    rewrite.push((*key.value(), slide));
                }
            }
            for (key, slide) in rewrite {
                table
                    .insert(&key, encode(&slide).as_slice())
                    .op("rewrite remote slide")?;
            }
        }
        tx.commit().op("commit migration")
    }

    pub fn put_remote_slide(&self, id: &SlideId, slide: &RemoteSlide) -> Result<(), StoreError> {
        self.put_copy(CopyKind::Shared, id, slide)
    }

    pub fn put_copy(
        &self,
        kind: CopyKind,
        id: &SlideId,
        slide: &RemoteSlide,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(kind.table().0).op("open copies")?;
            table
                .insert(id.as_bytes(), encode(slide).as_slice())
                .op("insert remote slide")?;
        }
        tx.commit().op("commit remote slide")?;
        Ok(())
    }

    /// A slide shared with this trust's people.
    pub fn remote_slide(&self, id: &SlideId) -> Result<Option<RemoteSlide>, StoreError> {
        self.copy(CopyKind::Shared, id)
    }

    pub fn copy(&self, kind: CopyKind, id: &SlideId) -> Result<Option<RemoteSlide>, StoreError> {
        let (definition, name) = kind.table();
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(definition).op("open copies")?;
        table
            .get(id.as_bytes())
            .op("read copy")?
            .map(|v| decode(name, v.value()))
            .transpose()
    }

    /// The copy this node serves others from: a replica (the owner's identified manifest,
    /// every tile held) before a slide shared with its people.
    pub fn served_copy(&self, id: &SlideId) -> Result<Option<RemoteSlide>, StoreError> {
        match self.copy(CopyKind::Replica, id)? {
            Some(replica) => Ok(Some(replica)),
            None => self.copy(CopyKind::Shared, id),
        }
    }

    /// The slides shared with this trust's people (replicas held for others are kept apart).
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

/// Stores a grant within `tx`.
///
/// A view grant issued here for a slide this trust has named replicas for also queues each
/// replica its replicate grant again: a replica serves only the grants the owner's latest
/// statement lists, and the grant's arrival makes it fetch that statement now rather than
/// at its next refresh (so it serves the new grantee through an outage starting before).
pub(super) fn insert_grant(
    tx: &redb::WriteTransaction,
    stored: &StoredGrant,
) -> Result<(), StoreError> {
    let mut grants = tx.open_table(GRANTS).op("open grants")?;
    grants
        .insert(stored.signed.id().as_bytes(), encode(stored).as_slice())
        .op("insert grant")?;
    // Research and teaching grantees get de-identified views, which only the owner makes:
    // a replica never serves them, so their grants (a cohort's, by the thousand) need no
    // word to the replicas.
    if !stored.issued_here
        || stored.grant.action != slidemesh_protocol::Action::View
        || stored.grant.purpose.requires_deidentification()
    {
        return Ok(());
    }
    let mut replicas = Vec::new();
    for entry in grants.iter().op("list grants")? {
        let (_, value) = entry.op("list grants")?;
        let other: StoredGrant = decode("grants_v1", value.value())?;
        if other.issued_here
            && other.grant.slide == stored.grant.slide
            && other.grant.action == slidemesh_protocol::Action::Replicate
            && other.grant.expires_at > stored.stored_at
        {
            replicas.push(other);
        }
    }
    drop(grants);
    let revocations = tx.open_table(REVOCATIONS).op("open revocations")?;
    // A replica with its grant still waiting in the outbox hears once.
    let pending: Vec<GrantId> = {
        let outbox = tx.open_table(OUTBOX).op("open outbox")?;
        let mut pending = Vec::new();
        for entry in outbox.iter().op("list outbox")? {
            let (_, value) = entry.op("list outbox")?;
            if let Ok(OutboxItem {
                message: ControlRequest::DeliverGrant(signed),
                ..
            }) = decode::<OutboxItem>("outbox_v1", value.value())
            {
                pending.push(signed.id());
            }
        }
        pending
    };
    for replica in replicas {
        let id = replica.signed.id();
        if pending.contains(&id) {
            continue;
        }
        let (mut first, mut last) = ([0u8; 64], [0xffu8; 64]);
        first[..32].copy_from_slice(id.as_bytes());
        last[..32].copy_from_slice(id.as_bytes());
        if revocations
            .range::<&[u8; 64]>(&first..=&last)
            .op("read revocations")?
            .next()
            .is_some()
        {
            continue;
        }
        push_outbox(
            tx,
            &OutboxItem {
                to: replica.grant.grantee.clone(),
                message: ControlRequest::DeliverGrant(replica.signed.clone()),
                created_at: stored.stored_at,
            },
        )?;
    }
    Ok(())
}

/// Records a revocation within `tx` (see [`Store::put_revocation`]).
pub(super) fn insert_revocation(
    tx: &redb::WriteTransaction,
    grant: &GrantId,
    signed: &SignedRevocation,
) -> Result<(), StoreError> {
    {
        let mut table = tx.open_table(REVOCATIONS).op("open revocations")?;
        table
            .insert(&revocation_key(grant, signed), encode(signed).as_slice())
            .op("insert revocation")?;
    }
    remove_remote_slides_of(tx, grant).map(drop)
}

/// Queues a message after every one queued before it.
pub(super) fn push_outbox(
    tx: &redb::WriteTransaction,
    item: &OutboxItem,
) -> Result<(), StoreError> {
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

/// Removes the copies (shared slides and replicas) held under `grant`; returns how many.
fn remove_remote_slides_of(
    tx: &redb::WriteTransaction,
    grant: &GrantId,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for kind in [CopyKind::Shared, CopyKind::Replica] {
        let (definition, name) = kind.table();
        let mut table = tx.open_table(definition).op("open copies")?;
        let covered: Vec<[u8; 32]> = table
            .iter()
            .op("list copies")?
            .filter_map(|e| e.ok())
            .filter_map(|(k, v)| {
                let slide: RemoteSlide = decode(name, v.value()).ok()?;
                (slide.grant == *grant).then_some(*k.value())
            })
            .collect();
        for key in &covered {
            table.remove(key).op("remove copy")?;
        }
        removed += covered.len();
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};
    use slidemesh_protocol::consent::SlideConsent;
    use slidemesh_protocol::{NodeKey, Revocation};

    use super::*;
    use crate::store::Origin;

    fn revocation(grant: GrantId, owner: &str, key: &NodeKey) -> SignedRevocation {
        SignedRevocation::sign(
            &Revocation {
                grant,
                owner: owner.parse().unwrap(),
                revoked_at: 1_800_000_000,
            },
            key,
        )
    }

    fn remote(consent: Option<SignedConsentStatement>) -> RemoteSlide {
        RemoteSlide {
            // Never verified by the migration.
            signed: SignedManifest {
                bytes: vec![2, 0],
                signer: NodeKey::generate().public(),
                signature: vec![0; 64],
            },
            summary: SlideSummary {
                owner: "RR8".parse().unwrap(),
                origin: Origin::Shared,
                series_uid: "1.2.3".into(),
                study_uid: "1.2".into(),
                container_id: None,
                stain: None,
                anatomic_site: None,
                acquired: None,
                levels: 1,
                width: 1,
                height: 1,
                tiles: 1,
                bytes: 1,
                has_label: false,
                has_overview: false,
                has_thumbnail: false,
            },
            grant: GrantId::of(b"grant"),
            stored_at: 1_800_000_000,
            deidentified: None,
            consent,
        }
    }

    /// Every signer's revocation of a grant is kept: a member's forged one arriving after
    /// the issuer's does not replace it.
    #[test]
    fn revocations_are_kept_per_signer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let (leeds, bradford) = (NodeKey::generate(), NodeKey::generate());
        let grant = GrantId::of(b"a grant");
        let honest = revocation(grant, "RR8", &leeds);
        let forged = revocation(grant, "RAE", &bradford);
        store.put_revocation(&grant, &honest, None).unwrap();
        store.put_revocation(&grant, &forged, None).unwrap();
        store.put_revocation(&grant, &honest, None).unwrap();
        let held = store.revocations(&grant).unwrap();
        assert_eq!(held.len(), 2);
        assert!(held.contains(&honest) && held.contains(&forged));
        assert!(
            store
                .revocations(&GrantId::of(b"other"))
                .unwrap()
                .is_empty()
        );
    }

    /// A data directory of the previous version: `revocations_v1` rows move to
    /// `revocations_v2`, and a shared slide's consent statement of canonical version 1 is
    /// dropped with the slide marked for a refresh at once; a current one is kept.
    #[test]
    fn an_older_stores_revocations_and_statements_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let key = NodeKey::generate();
        let grant = GrantId::of(b"a revoked grant");
        let old_revocation = revocation(grant, "RR8", &key);
        let current = SignedConsentStatement::sign(
            &ConsentStatement {
                owner: "RR8".parse().unwrap(),
                slide: SlideId::of(b"current"),
                policy: String::new(),
                consent: SlideConsent::default(),
                issued_at: 1_800_000_000,
                valid_grants: vec![GrantId::of(b"grant")],
            },
            &key,
        );
        // Version 1 bytes, as an older node signed them (they are never read here).
        let mut old_statement = current.clone();
        old_statement.bytes[0] = 1;
        let (old_slide, current_slide) = (SlideId::of(b"old"), SlideId::of(b"current"));
        drop(Store::open(&path).unwrap());
        {
            let db = Database::builder()
                .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
                .open(&path)
                .unwrap();
            let tx = db.begin_write().unwrap();
            tx.delete_table(REVOCATIONS).unwrap();
            {
                let mut v1 = tx.open_table(REVOCATIONS_V1).unwrap();
                v1.insert(grant.as_bytes(), encode(&old_revocation).as_slice())
                    .unwrap();
                let mut remote_slides = tx.open_table(REMOTE_SLIDES).unwrap();
                for (slide, consent) in [
                    (old_slide, old_statement.clone()),
                    (current_slide, current.clone()),
                ] {
                    remote_slides
                        .insert(slide.as_bytes(), encode(&remote(Some(consent))).as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.revocations(&grant).unwrap(), vec![old_revocation]);
        let tables: Vec<String> = store
            .db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(
            !tables.contains(&"revocations_v1".to_string()),
            "{tables:?}"
        );
        let migrated = store.remote_slide(&old_slide).unwrap().unwrap();
        assert!(migrated.consent.is_none());
        assert_eq!(migrated.stored_at, 0, "asked for again at once");
        let kept = store.remote_slide(&current_slide).unwrap().unwrap();
        assert_eq!(kept.consent, Some(current));
        assert_eq!(kept.stored_at, 1_800_000_000);
        // Opening again changes nothing.
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.revocations(&grant).unwrap().len(), 1);
    }
}
