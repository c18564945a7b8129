//! Receipts, so that each access is recorded on both sides. The serving node appends its
//! decisions to its audit log, waits until they are committed, and signs a receipt naming
//! them and their positions in its log. The requester checks the receipt (the source's
//! roster key; an access by this trust, to this slide, under this grant) and appends its
//! own entry with the server's deciding rules and policy hash, the receipt kept beside it.
//! A receipt is evidence the requester holds of what the server logged: an entry the
//! server later removed or changed no longer matches the receipt's leaf.

use std::time::Duration;

use libp2p::PeerId;
use slidemesh_protocol::audit::{Receipt, SignedReceipt};
use slidemesh_protocol::{Grant, GrantId, SignedGrant, SlideId, TrustCode, UserClaim};
use tracing::warn;

use super::{Federation, PeerAnswers};
use crate::audit::{AuditEntry, Pending, Side};
use crate::net::identity;
use crate::store::now_unix;

/// How long a server waits for its audit writer, in all, before it answers without a
/// receipt: well inside the requester's stall timeout, so a slow disk costs a receipt, not
/// the session.
const RECEIPT_WAIT: Duration = Duration::from_secs(3);

/// How far a receipt's entries may be from the requester's clock: an old receipt replayed
/// for a new request is refused.
const RECEIPT_CLOCK_WINDOW_SECS: u64 = 300;

/// What this node asked a source for, as the source's audit entry (and so its receipt) must
/// state it: the action, its description (a tile batch's names a digest of its tile ids),
/// and the person it was asked for.
pub(crate) struct Asked<'a> {
    pub action: &'a str,
    pub described: &'a str,
    pub user: Option<&'a UserClaim>,
}

impl PeerAnswers {
    /// The receipt for allowed decisions, once all are committed (blocking, up to
    /// [`RECEIPT_WAIT`]). `None` when there is nothing to receipt or the log did not take
    /// them in time.
    pub(super) fn sign_receipt(&self, pending: Vec<Pending>) -> Option<SignedReceipt> {
        if pending.is_empty() {
            return None;
        }
        let deadline = std::time::Instant::now() + RECEIPT_WAIT;
        let mut entries = Vec::with_capacity(pending.len());
        for decision in pending {
            match decision.wait(deadline.saturating_duration_since(std::time::Instant::now())) {
                Some(committed) => entries.push(committed),
                None => {
                    warn!("audit entry not committed in time; answering without a receipt");
                    return None;
                }
            }
        }
        let receipt = Receipt {
            log: self.holdings.trust.clone(),
            entries,
        };
        Some(SignedReceipt::sign(&receipt, &self.holdings.key))
    }
}

impl Federation {
    /// Records an access this node made as a requester, with the server's receipt when it
    /// gave a valid one; the entry says when it gave none or a wrong one. A receipt for
    /// another request does not pass for this one (see [`Asked`]).
    pub(crate) fn record_received(
        &self,
        signed_grant: &SignedGrant,
        grant: &Grant,
        peer: &PeerId,
        asked: Asked<'_>,
        what: &str,
        receipt: Option<SignedReceipt>,
    ) {
        let (action, user) = (asked.action, asked.user);
        let Some(source) = self.holdings.membership.trust_of(peer) else {
            return;
        };
        let grant_id = signed_grant.id();
        let mut entry = AuditEntry {
            time: now_unix(),
            side: Side::Received,
            peer: source.clone(),
            peer_id: peer.to_string(),
            user: user.map(ToString::to_string),
            purpose: grant.purpose.as_str().to_string(),
            slide: grant.slide,
            action: action.to_string(),
            what: what.to_string(),
            allowed: true,
            rules: Vec::new(),
            policy_hash: String::new(),
            grant: Some(grant_id),
        };
        let Some(signed) = receipt else {
            entry.what = format!("{what}; no receipt");
            self.holdings.audit.record(entry);
            return;
        };
        match self.check_receipt(&signed, &source, grant.slide, grant_id, &asked) {
            Ok(receipt) => {
                if let Some((seq, theirs)) =
                    receipt.entries.iter().find(|(_, e)| e.action == action)
                {
                    entry.rules = theirs.rules.clone();
                    entry.policy_hash = theirs.policy_hash.clone();
                    entry.what = format!("{what}; receipt {}#{seq}", receipt.log);
                }
                self.holdings.audit.record_with_receipt(entry, signed);
            }
            Err(reason) => {
                warn!(%peer, slide = %grant.slide, reason, "receipt refused");
                entry.what = format!("{what}; receipt refused: {reason}");
                self.holdings.audit.record(entry);
            }
        }
    }

    /// A receipt is good when the source's roster key signed it for its own log, every entry
    /// is an allowed access by this node to `slide` under `grant` made within the last few
    /// minutes, and one of them is for the action and description `asked`.
    fn check_receipt(
        &self,
        signed: &SignedReceipt,
        source: &TrustCode,
        slide: SlideId,
        grant: GrantId,
        asked: &Asked<'_>,
    ) -> Result<Receipt, String> {
        let (action, described, user) = (asked.action, asked.described, asked.user);
        let receipt = signed.verify().map_err(|e| e.to_string())?;
        let source_key = self.holdings.membership.node_key_of(source);
        if source_key != Some(signed.signer) || receipt.log != *source {
            return Err(format!("not signed by {source}'s roster key for its log"));
        }
        let this_node = identity::peer_id(&self.holdings.key.public()).map(|p| p.to_string());
        let now = now_unix();
        let about_this_access = |e: &AuditEntry| {
            e.side == Side::Served
                && e.allowed
                && e.time.abs_diff(now) <= RECEIPT_CLOCK_WINDOW_SECS
                && e.peer == self.holdings.trust
                && Some(&e.peer_id) == this_node.as_ref()
                && e.slide == slide
                && e.grant == Some(grant)
                && e.user == user.map(ToString::to_string)
        };
        if receipt.entries.is_empty() || !receipt.entries.iter().all(|(_, e)| about_this_access(e))
        {
            return Err("it names another access".into());
        }
        if !receipt
            .entries
            .iter()
            .any(|(_, e)| e.action == action && e.what == described)
        {
            return Err(format!("it names no {action} decision for {described}"));
        }
        Ok(receipt)
    }
}
