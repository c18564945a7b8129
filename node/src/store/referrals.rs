//! Referrals in the store: table `referrals_v1`, a referral's signed form and its history as
//! this node knows it (sent here or received). Every change commits in one transaction with
//! what goes with it: the grants made for a referral and the messages to the other side
//! (outbox, in order), revocations on withdrawal, and the step's audit entries, so a crash
//! leaves a step whole (recorded, logged and queued for the other side) or absent.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::{
    Directory, GrantId, Offer, OfferOutcome, Opinion, Referral, ReferralId, SignedDirectory,
    SignedOffer, SignedOfferOutcome, SignedReferral, SignedReferralUpdate, SignedRevocation,
    TrustCode, UserClaim,
};

use super::federation::{OutboxItem, StoredGrant};
use super::{RedbContext, Store, StoreError, decode, encode};
use slidemesh_protocol::audit::AuditEntry;

/// ReferralId -> postcard([`StoredReferral`]).
pub(super) const REFERRALS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("referrals_v1");

/// Offer id -> postcard([`StoredOffer`]): cases offered to the co-operative's reporting
/// queue, by this trust or announced by others.
pub(super) const OFFERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("offers_v1");

/// Trust (ODS code) -> postcard([`SignedDirectory`]): each member's latest referral
/// directory, this trust's own included.
pub(super) const DIRECTORIES: TableDefinition<&str, &[u8]> = TableDefinition::new("directories_v1");

/// Most steps a referral's history keeps: a peer sending endless updates is refused beyond
/// it.
pub const MAX_HISTORY: usize = 64;

/// Where a referral stands, from the last step that decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Sent,
    Delivered,
    Opened,
    Answered,
    Closed,
    Expired,
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Opened => "opened",
            Status::Answered => "answered",
            Status::Closed => "closed",
            Status::Expired => "expired",
            Status::Withdrawn => "withdrawn",
        }
    }

    /// Closed, expired or withdrawn: no later step changes the status.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Closed | Status::Expired | Status::Withdrawn)
    }

    /// Where a step leads from `self`: a final status stays; otherwise the further along of
    /// the two (a late "opened" after "answered" does not move it back).
    pub fn after(self, step: Status) -> Status {
        if self.is_final() {
            self
        } else if step.is_final() || step.rank() > self.rank() {
            step
        } else {
            self
        }
    }

    fn rank(self) -> u8 {
        match self {
            Status::Sent => 0,
            Status::Delivered => 1,
            Status::Opened => 2,
            Status::Answered => 3,
            Status::Closed | Status::Expired | Status::Withdrawn => 4,
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Status::Sent,
            Status::Delivered,
            Status::Opened,
            Status::Answered,
            Status::Closed,
            Status::Expired,
            Status::Withdrawn,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown referral status {s:?}"))
    }
}

/// One step of a referral's history as this node recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStep {
    pub status: Status,
    /// Unix seconds, as the trust that took the step stated it (expiry: this node's clock).
    pub at: u64,
    /// The trust that took it.
    pub by: TrustCode,
    /// The person who took it, as "account (role)".
    pub user: Option<String>,
    /// BLAKE3 of the signed update that told this node of it (none for steps this node
    /// took itself and for the referral's sending): a repeated delivery is recognised.
    pub update: Option<[u8; 32]>,
}

/// A referral this node sent or received, and what happened to it since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReferral {
    pub signed: SignedReferral,
    /// The decoded statement (verified before it was stored).
    pub referral: Referral,
    /// True at the referring node, false at the receiving one.
    pub sent_here: bool,
    pub status: Status,
    /// Every step, oldest first; the first is the sending.
    pub history: Vec<HistoryStep>,
    /// The specialist's opinion once answered, with the receiving node's signed update.
    pub opinion: Option<(Opinion, SignedReferralUpdate)>,
}

impl StoredReferral {
    /// A referral as first stored: sent, at its referring trust's time.
    pub fn new(signed: SignedReferral, referral: Referral, sent_here: bool) -> Self {
        let history = vec![HistoryStep {
            status: Status::Sent,
            at: referral.sent_at,
            by: referral.from.clone(),
            user: referral.referrer.as_ref().map(ToString::to_string),
            update: None,
        }];
        Self {
            signed,
            referral,
            sent_here,
            status: Status::Sent,
            history,
            opinion: None,
        }
    }

    /// The other trust.
    pub fn peer(&self) -> &TrustCode {
        if self.sent_here {
            &self.referral.to
        } else {
            &self.referral.from
        }
    }

    /// Whether the signed update with this hash was applied already.
    pub fn has_update(&self, hash: &[u8; 32]) -> bool {
        self.history.iter().any(|s| s.update.as_ref() == Some(hash))
    }

    /// Adds a step to the history and moves the status on. Each step happens once, and none
    /// after the referral is closed, expired or withdrawn (so the other side can neither
    /// fill the history nor change an opinion after the fact); a final step is always taken.
    pub fn push(&mut self, step: HistoryStep) -> Result<(), String> {
        if self.status.is_final() {
            return Err(format!(
                "referral {} is {} already",
                self.referral.id,
                self.status.as_str()
            ));
        }
        if self.history.iter().any(|h| h.status == step.status) {
            return Err(format!(
                "referral {} was {} already",
                self.referral.id,
                step.status.as_str()
            ));
        }
        if self.history.len() >= MAX_HISTORY && !step.status.is_final() {
            return Err(format!(
                "referral {} has {MAX_HISTORY} steps already",
                self.referral.id
            ));
        }
        self.status = self.status.after(step.status);
        self.history.push(step);
        Ok(())
    }
}

/// A case offered to the co-operative's queue, as this node knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredOffer {
    pub signed: SignedOffer,
    pub offer: Offer,
    /// At the offering node: the claim that won, once one did (before its referral is
    /// made: a crash between the two is finished at the next start).
    pub taken_by: Option<(TrustCode, Option<UserClaim>, u64)>,
    /// The offering trust's signed word on who took it, once given.
    pub outcome: Option<(OfferOutcome, SignedOfferOutcome)>,
    /// At the offering node: the report so far, sent only with the referral to the taker.
    pub report: String,
    /// At a claiming node: when this trust sent its claim.
    pub claimed_here: Option<u64>,
    /// At a claiming node: why the offerer refused this trust's last claim (it may claim
    /// again).
    pub claim_refused: Option<String>,
}

impl StoredOffer {
    /// Still on offer at `now`: not taken, not withdrawn, not ended.
    pub fn is_open(&self, now: u64) -> bool {
        self.taken_by.is_none() && self.outcome.is_none() && self.offer.expires_at > now
    }
}

/// What commits with a referral's change, besides the referral itself.
#[derive(Default)]
pub struct Alongside {
    /// Grants made for it (the referring side, when sending).
    pub grants: Vec<StoredGrant>,
    /// Revocations of its grants (withdrawal, expiry), each with its grant.
    pub revocations: Vec<(GrantId, SignedRevocation)>,
    /// Messages to the other side, delivered in this order after any queued before them.
    pub outbox: Vec<OutboxItem>,
    /// The step's audit entries.
    pub audit: Vec<AuditEntry>,
}

/// The outcome of [`Store::change_referral`]'s closure.
pub enum Change<T> {
    /// Write the referral (as the closure left it) and everything alongside.
    Commit(Alongside, T),
    /// Write nothing.
    Keep(T),
}

impl Store {
    /// Stores a new referral with what goes with it. Returns false, writing nothing, when a
    /// referral with its id is stored already (a repeated delivery).
    pub fn put_referral(
        &self,
        stored: &StoredReferral,
        alongside: Alongside,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(REFERRALS).op("open referrals")?;
            let key = stored.referral.id.as_bytes();
            if table.get(key).op("read referral")?.is_some() {
                return Ok(false);
            }
            table
                .insert(key, encode(stored).as_slice())
                .op("insert referral")?;
        }
        write_alongside(&tx, alongside)?;
        tx.commit().op("commit referral")?;
        Ok(true)
    }

    /// Reads referral `id` and, in the same write transaction, lets `change` edit it and say
    /// what commits with the edit. `Ok(None)` when no such referral is stored.
    pub fn change_referral<T>(
        &self,
        id: &ReferralId,
        change: impl FnOnce(&mut StoredReferral) -> Change<T>,
    ) -> Result<Option<T>, StoreError> {
        self.change_row(REFERRALS, "referrals_v1", id, change)
    }

    /// [`Self::change_referral`] for an offer.
    pub fn change_offer<T>(
        &self,
        id: &ReferralId,
        change: impl FnOnce(&mut StoredOffer) -> Change<T>,
    ) -> Result<Option<T>, StoreError> {
        self.change_row(OFFERS, "offers_v1", id, change)
    }

    fn change_row<R: Serialize + for<'de> Deserialize<'de>, T>(
        &self,
        definition: TableDefinition<&[u8; 32], &[u8]>,
        name: &'static str,
        id: &ReferralId,
        change: impl FnOnce(&mut R) -> Change<T>,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        let (out, alongside) = {
            let mut table = tx.open_table(definition).op("open table")?;
            let Some(value) = table.get(id.as_bytes()).op("read row")? else {
                return Ok(None);
            };
            let mut row: R = decode(name, value.value())?;
            drop(value);
            match change(&mut row) {
                Change::Keep(out) => return Ok(Some(out)),
                Change::Commit(alongside, out) => {
                    table
                        .insert(id.as_bytes(), encode(&row).as_slice())
                        .op("update row")?;
                    (out, alongside)
                }
            }
        };
        write_alongside(&tx, alongside)?;
        tx.commit().op("commit change")?;
        Ok(Some(out))
    }

    /// Stores an offer unless one with its id is stored already; returns whether it was.
    pub fn put_offer(&self, stored: &StoredOffer) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(OFFERS).op("open offers")?;
            let key = stored.offer.id.as_bytes();
            if table.get(key).op("read offer")?.is_some() {
                return Ok(false);
            }
            table
                .insert(key, encode(stored).as_slice())
                .op("insert offer")?;
        }
        tx.commit().op("commit offer")?;
        Ok(true)
    }

    pub fn offer(&self, id: &ReferralId) -> Result<Option<StoredOffer>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(OFFERS).op("open offers")?;
        table
            .get(id.as_bytes())
            .op("read offer")?
            .map(|v| decode("offers_v1", v.value()))
            .transpose()
    }

    /// Every offer known here, newest first.
    pub fn offers(&self) -> Result<Vec<StoredOffer>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(OFFERS).op("open offers")?;
        let mut out: Vec<StoredOffer> = Vec::new();
        for entry in table.iter().op("list offers")? {
            let (_, value) = entry.op("list offers")?;
            out.push(decode("offers_v1", value.value())?);
        }
        out.sort_by_key(|o| std::cmp::Reverse(o.offer.offered_at));
        Ok(out)
    }

    pub fn referral(&self, id: &ReferralId) -> Result<Option<StoredReferral>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REFERRALS).op("open referrals")?;
        table
            .get(id.as_bytes())
            .op("read referral")?
            .map(|v| decode("referrals_v1", v.value()))
            .transpose()
    }

    /// Every referral sent or received, newest first. A row this version cannot read (an
    /// answer stored before opinions carried annotations) is left as it is and out of the
    /// list, logged, so one old row does not take every list and search down with it.
    pub fn referrals(&self) -> Result<Vec<StoredReferral>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(REFERRALS).op("open referrals")?;
        let mut out: Vec<StoredReferral> = Vec::new();
        for entry in table.iter().op("list referrals")? {
            let (key, value) = entry.op("list referrals")?;
            match decode("referrals_v1", value.value()) {
                Ok(stored) => out.push(stored),
                Err(e) => tracing::error!(
                    referral = %hex::encode(key.value()), error = %e,
                    "stored referral unreadable by this version; left out"
                ),
            }
        }
        out.sort_by(|a, b| {
            b.referral
                .sent_at
                .cmp(&a.referral.sent_at)
                .then(a.referral.id.cmp(&b.referral.id))
        });
        Ok(out)
    }
}

impl Store {
    /// Keeps `signed` (verified by the caller, `directory` its statement) as its trust's
    /// directory unless one issued at the same time or later is kept already. Returns
    /// whether it was kept.
    pub fn put_directory(
        &self,
        signed: &SignedDirectory,
        directory: &Directory,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        let kept = {
            let mut table = tx.open_table(DIRECTORIES).op("open directories")?;
            let trust = directory.trust.as_str();
            let newer = match table.get(trust).op("read directory")? {
                Some(old) => {
                    let old: SignedDirectory = decode("directories_v1", old.value())?;
                    old.verify()
                        .map_or(true, |old| old.issued_at < directory.issued_at)
                }
                None => true,
            };
            if newer {
                table
                    .insert(trust, encode(signed).as_slice())
                    .op("insert directory")?;
            }
            newer
        };
        tx.commit().op("commit directory")?;
        Ok(kept)
    }

    /// Every member's directory kept, by trust.
    pub fn directories(&self) -> Result<Vec<(SignedDirectory, Directory)>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(DIRECTORIES).op("open directories")?;
        let mut out = Vec::new();
        for entry in table.iter().op("list directories")? {
            let (_, value) = entry.op("list directories")?;
            let signed: SignedDirectory = decode("directories_v1", value.value())?;
            let directory = signed.verify().map_err(|e| StoreError::Corrupt {
                table: "directories_v1",
                detail: e.to_string(),
            })?;
            out.push((signed, directory));
        }
        Ok(out)
    }
}

fn write_alongside(tx: &redb::WriteTransaction, alongside: Alongside) -> Result<(), StoreError> {
    for grant in &alongside.grants {
        super::federation::insert_grant(tx, grant)?;
    }
    for (grant, revocation) in &alongside.revocations {
        super::federation::insert_revocation(tx, grant, revocation)?;
    }
    for item in &alongside.outbox {
        super::federation::push_outbox(tx, item)?;
    }
    if !alongside.audit.is_empty() {
        let rows: Vec<_> = alongside.audit.iter().map(|e| (e, None)).collect();
        super::audit::append_in(tx, &rows)?;
    }
    Ok(())
}
