//! The node's federation services: what it does for peers (answers control requests,
//! serves tile batches under grants) and what it does for its own users (shared slides,
//! remote tiles through the cache). Sits between the HTTP API / CLI and the store / net.
//!
//! Layout:
//! - this file: [`Federation`], the shared state, and the [`Inbound`] answers to peers.
//! - [`membership`]: the roster in force and who each peer speaks for.
//! - `gateway`: decisions for this trust's own people about shared slides, with the
//!   owner's signed rules.
//! - `manifests`: a slide's manifest, or its de-identified view, from owner to grantee.
//! - `receipts`: the server's signed receipt for an access, and the requester's record of
//!   the access with it.
//! - [`remote`]: remote tiles for the grantee's viewer: cache, single flight, batching,
//!   several sources, prefetch.
//! - [`tasks`]: background loops: roster updates, outbox delivery.
//!
//! Architecture invariant: every manifest or tile that leaves this node passed
//! [`crate::access::decide`]; every tile that enters it was hashed against its id.

mod gateway;
mod manifests;
pub mod membership;
mod receipts;
pub mod remote;
pub mod tasks;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::PeerId;
use slidemesh_protocol::wire::{Announcement, ControlRequest, ControlResponse, TileRequest};
use slidemesh_protocol::{
    AssociatedKind, GrantId, NodeKey, SignedGrant, SignedRevocation, SlideId, SlideManifest,
    TileId, TrustCode, UserClaim,
};
use tracing::{info, warn};

use crate::access;
pub(crate) use crate::access::Refusal;
use crate::audit::{AuditEntry, AuditLog, Pending, Side};
use crate::consent::{ConsentAction, Policy, PolicyHandle};
use crate::net::{Inbound, Network, ReceiptFuture};
use crate::store::cache::TileCache;
use crate::store::consent::SlideConsent;
use crate::store::federation::StoredGrant;
use crate::store::locations::LocationCache;
use crate::store::reader::TileReader;
use crate::store::{Store, now_unix};
pub use gateway::{SlideDecided, TilesDecided};
pub use membership::{Membership, PeerAddresses};

/// How often the same refusal of a peer's request is logged again.
const SERVED_REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long a copy decides with an owner's consent statement it could not refresh.
const CONSENT_STATEMENT_MAX_AGE_SECS: u64 = 24 * 3600;

/// Fault injection for tests and the testnet (`serve` reads them from the environment).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Serve tiles to peers with one byte flipped, so requesters must detect and bypass
    /// this node.
    pub corrupt_tiles: bool,
    /// Drop every revocation message unread (delivered or announced) and answer that it
    /// could not be taken: this node stands for one that was down or cut off whenever a
    /// revocation travelled, and must learn of it from the owner's statements alone.
    pub drop_revocations: bool,
}

/// The owner's rules for a slide this node holds a copy of, from the owner's latest signed
/// consent statement.
pub(crate) struct OwnersRules {
    pub policy: Arc<Policy>,
    pub consent: SlideConsent,
    /// The owner's grants for the slide that held when the statement was issued.
    pub valid_grants: Vec<GrantId>,
    /// When the owner issued the statement (Unix seconds).
    pub issued_at: u64,
}

impl OwnersRules {
    /// The statement's list, as a decision takes it.
    pub fn listed(&self) -> access::OwnersList<'_> {
        access::OwnersList {
            grants: &self.valid_grants,
            issued_at: self.issued_at,
        }
    }
}

struct ServedSlide {
    tiles: HashSet<TileId>,
    /// Tiles of the LABEL and OVERVIEW images (they show the patient's label).
    label_tiles: HashSet<TileId>,
    series_uid: String,
    owner: TrustCode,
    /// This node owns the slide (else it serves a cached copy).
    local: bool,
}

/// The node's federation state, shared by the network handlers, background tasks and the
/// HTTP API.
pub struct Federation {
    pub store: Arc<Store>,
    pub trust: TrustCode,
    locations: LocationCache,
    reader: TileReader,
    pub cache: TileCache,
    /// The roster in force and who each peer speaks for.
    pub membership: Arc<Membership>,
    /// The handle to the node's swarm (its event loop answers peers through [`Handlers`]).
    pub network: Network,
    /// What the policy check needs to know of each slide this node serves (its own, and
    /// shared ones it has cached): its tiles (a batch may ask only for tiles of the slide
    /// its grant covers), which of them show the label, its series and owner.
    served: Mutex<HashMap<SlideId, Arc<ServedSlide>>>,
    /// The owner's consent policy, decided on every manifest and tile batch.
    pub policy: Arc<PolicyHandle>,
    /// Other owners' policies, parsed from their consent statements, by BLAKE3 of the text.
    owner_policies: Mutex<HashMap<blake3::Hash, Arc<Policy>>>,
    /// Where every decision (served) and access (received) is recorded.
    pub audit: AuditLog,
    /// This node's key, for co-signing other members' audit checkpoints and its own.
    pub(crate) key: Arc<NodeKey>,
    remote: remote::RemoteState,
    gateway: gateway::GatewayState,
    /// Bumped whenever a shared slide is withdrawn or its stored manifest replaced, so
    /// readers holding decoded manifests (the HTTP API's cache) drop them.
    pub withdrawals: std::sync::atomic::AtomicU64,
    /// When each distinct refusal of a peer was last logged ([`Self::refusal_log_due`]).
    refusals_logged: Mutex<HashMap<blake3::Hash, std::time::Instant>>,
    /// Test and testnet fault switches.
    faults: Faults,
    /// Work spawned on behalf of peers and viewers (tile batches, manifest fetches,
    /// provider lookups, announcements), awaited at shutdown ([`Self::drain`]).
    tasks: tokio_util::task::TaskTracker,
}

impl Federation {
    #[allow(clippy::too_many_arguments)] // one call site (serve), each argument a distinct part
    pub fn new(
        store: Arc<Store>,
        trust: TrustCode,
        reader: TileReader,
        cache: TileCache,
        policy: Arc<PolicyHandle>,
        audit: AuditLog,
        key: Arc<NodeKey>,
        faults: Faults,
        membership: Arc<Membership>,
        network: Network,
    ) -> Arc<Self> {
        Arc::new(Self {
            locations: LocationCache::new(store.clone()),
            store,
            trust,
            reader,
            cache,
            membership,
            network,
            served: Mutex::new(HashMap::new()),
            owner_policies: Mutex::new(HashMap::new()),
            policy,
            audit,
            key,
            remote: remote::RemoteState::default(),
            gateway: gateway::GatewayState::default(),
            withdrawals: std::sync::atomic::AtomicU64::new(0),
            refusals_logged: Mutex::new(HashMap::new()),
            faults,
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Runs `work` on its own task, tracked so that shutdown can wait for it.
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// At shutdown, once the network stopped: waits up to `timeout` for the spawned work
    /// to end (with the network gone it fails fast); says whether it all did.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Forgets what was memoised about a slide whose stored manifest changed.
    fn manifest_changed(&self, slide: &SlideId) {
        if let Ok(mut map) = self.served.lock() {
            map.remove(slide);
        }
        self.withdrawals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// What [`Self::served_slide`] knows of a slide without reading the store.
    fn served_in_memory(&self, slide: &SlideId) -> Option<Arc<ServedSlide>> {
        self.served.lock().ok().and_then(|m| m.get(slide).cloned())
    }

    /// What the policy check needs of a slide this node holds or caches (memoised).
    fn served_slide(&self, slide: &SlideId) -> Result<Arc<ServedSlide>, Refusal> {
        if let Some(served) = self.served.lock().ok().and_then(|m| m.get(slide).cloned()) {
            return Ok(served);
        }
        let failed = |e: &dyn std::fmt::Display| Refusal::Failed(format!("slide {slide}: {e}"));
        let (signed, local) = match self.store.slide(slide).map_err(|e| failed(&e))? {
            Some(record) => (record.signed, true),
            None => (
                self.store
                    .remote_slide(slide)
                    .map_err(|e| failed(&e))?
                    .ok_or_else(|| Refusal::Denied(format!("no slide {slide} here")))?
                    .signed,
                false,
            ),
        };
        let manifest = signed.verify().map_err(|e| failed(&e))?;
        Ok(self.remember_served(slide, &manifest, local))
    }

    /// Memoises what the policy check needs of a slide whose manifest the caller verified
    /// (the HTTP API does, when it first shows a slide, so the first tile request does not
    /// decode and verify the same manifest again). `generation` is [`Self::withdrawals`] as
    /// read before the manifest was: after a withdrawal meanwhile nothing is memoised.
    pub fn served_from_verified(
        &self,
        slide: &SlideId,
        manifest: &SlideManifest,
        local: bool,
        generation: u64,
    ) {
        let known = self.served.lock().is_ok_and(|m| m.contains_key(slide));
        if !known && self.withdrawals.load(std::sync::atomic::Ordering::SeqCst) == generation {
            self.remember_served(slide, manifest, local);
        }
    }

    fn remember_served(
        &self,
        slide: &SlideId,
        manifest: &SlideManifest,
        local: bool,
    ) -> Arc<ServedSlide> {
        // The label and overview, and any associated image that says it shows the label or
        // burned-in text (the same images a de-identified view drops).
        let shows_text: HashSet<&str> = manifest
            .instances
            .iter()
            .filter(|i| crate::deidentify::shows_text(&i.metadata_json))
            .map(|i| i.sop_instance_uid.as_str())
            .collect();
        let label_tiles = manifest
            .associated
            .iter()
            .filter(|a| {
                matches!(a.kind, AssociatedKind::Label | AssociatedKind::Overview)
                    || shows_text.contains(a.instance_uid.as_str())
            })
            .flat_map(|a| a.tiles.iter().copied())
            .collect();
        let served = Arc::new(ServedSlide {
            tiles: manifest.all_tiles().copied().collect(),
            label_tiles,
            series_uid: manifest.series_uid.clone(),
            owner: manifest.owner.clone(),
            local,
        });
        if let Ok(mut map) = self.served.lock() {
            map.insert(*slide, served.clone());
        }
        served
    }

    /// The owner's policy, recorded consent and grants that hold for a slide this node holds
    /// a copy of, from the owner's signed consent statement kept with the slide. None kept:
    /// nothing is served from the copy (default deny).
    fn owners_rules(&self, slide: &SlideId) -> Result<OwnersRules, Refusal> {
        let denied = Refusal::Denied;
        let remote = self
            .store
            .remote_slide(slide)
            .map_err(|e| Refusal::Failed(format!("cannot read slide {slide}: {e}")))?
            .ok_or_else(|| denied(format!("no slide {slide} here")))?;
        let statement = remote
            .consent
            .ok_or_else(|| {
                denied(format!(
                    "this node holds no consent statement from the owner of slide {slide}"
                ))
            })?
            .verify()
            .map_err(|e| {
                denied(format!(
                    "the owner's consent statement does not verify: {e}"
                ))
            })?;
        // Kept in force while the owner is unreachable, but not for ever: a copy that has
        // not heard from the owner for a day stops deciding on its behalf.
        if now_unix().saturating_sub(statement.issued_at) > CONSENT_STATEMENT_MAX_AGE_SECS {
            return Err(denied(format!(
                "the owner's consent statement for slide {slide} is more than a day old"
            )));
        }
        let key = blake3::hash(statement.policy.as_bytes());
        let cached = self
            .owner_policies
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        let policy = match cached {
            Some(policy) => policy,
            None => {
                let policy = Arc::new(Policy::from_text(&statement.policy).map_err(|e| {
                    denied(format!(
                        "the owner's policy for slide {slide} does not load here: {e}"
                    ))
                })?);
                if let Ok(mut map) = self.owner_policies.lock() {
                    map.insert(key, policy.clone());
                }
                policy
            }
        };
        Ok(OwnersRules {
            policy,
            consent: statement.consent,
            valid_grants: statement.valid_grants,
            issued_at: statement.issued_at,
        })
    }

    /// May `peer` do each of `actions` on `slide` under `grant`? Decided by
    /// [`access::decide`] with the owner's rules (this node's own for its slides, the owner's
    /// signed statement for a copy). `Err` says why not; `Ok` carries the allowed decisions
    /// on their way into the audit log: nothing may leave before they are durable
    /// ([`Federation::sign_receipt`] waits for them).
    fn authorize(
        &self,
        peer: &PeerId,
        slide: &SlideId,
        grant: &SignedGrant,
        user: Option<&UserClaim>,
        actions: &[ConsentAction],
        what: &str,
    ) -> Result<Vec<Pending>, Refusal> {
        let denied = Refusal::Denied;
        let roster = self
            .membership
            .roster()
            .ok_or_else(|| denied("this node has no roster".into()))?;
        let requester = self
            .membership
            .trust_of(peer)
            .ok_or_else(|| denied(format!("{peer} is not a member")))?;
        let served = self.served_slide(slide)?;
        // The owner decides with its own policy, recorded consent and revocations. A node
        // serving a copy decides with the owner's signed statement of policy, consent and
        // the grants that hold, never with its own rules.
        let (policy, consent, owners) = if served.local {
            let consent = self
                .store
                .consent(&served.series_uid)
                .map_err(|e| Refusal::Failed(format!("cannot read the slide's consent: {e}")))?;
            (self.policy.current(), consent, None)
        } else {
            let owners = self.owners_rules(slide)?;
            (owners.policy.clone(), owners.consent.clone(), Some(owners))
        };
        let rules = access::Rules {
            policy: &policy,
            consent: &consent,
            owner: &served.owner,
            roster: Some(&roster),
            listed: owners.as_ref().map(OwnersRules::listed),
        };
        let revocations = self
            .store
            .revocations(&grant.id())
            .map_err(|e| e.to_string());
        let verdict = access::decide(
            &rules,
            access::Subject {
                trust: &requester,
                user,
            },
            access::Basis::Grant {
                signed: grant,
                revocations,
            },
            *slide,
            actions,
            now_unix(),
        );
        info!(%peer, %slide, trust = %requester, user = ?user.map(|u| u.to_string()), purpose = %verdict.purpose, allowed = verdict.allowed(), decisions = ?verdict.decisions, "consent decision");
        let entries = verdict.entries(Side::Served, &requester, &peer.to_string(), what);
        match verdict.outcome {
            Ok(()) => Ok(entries
                .into_iter()
                .map(|e| self.audit.record_pending(e))
                .collect()),
            Err(refusal) => {
                // The same refusal again (a grantee asking until it gives up) is logged once
                // an hour, not once per ask.
                for entry in entries {
                    if self.refusal_log_due(&entry) {
                        self.audit.record(entry);
                    }
                }
                Err(refusal)
            }
        }
    }

    /// Whether a refusal to a peer is due in the log: the same requester, person, slide,
    /// grant, action and rules are logged once per [`SERVED_REFUSAL_LOG_EVERY`].
    fn refusal_log_due(&self, entry: &AuditEntry) -> bool {
        let key = blake3::hash(
            format!(
                "{}|{:?}|{}|{:?}|{}|{}",
                entry.peer,
                entry.user,
                entry.slide,
                entry.grant,
                entry.action,
                entry.rules.join(",")
            )
            .as_bytes(),
        );
        let mut logged = remote::lock(&self.refusals_logged);
        if logged.len() >= 10_000 {
            logged.retain(|_, at| at.elapsed() < SERVED_REFUSAL_LOG_EVERY);
        }
        match logged.get(&key) {
            Some(at) if at.elapsed() < SERVED_REFUSAL_LOG_EVERY => false,
            _ => {
                logged.insert(key, std::time::Instant::now());
                true
            }
        }
    }

    /// A grant delivered by its owner: check it names us and is signed by the owner's
    /// roster key, store it, then fetch the manifest in the background.
    fn accept_grant(self: &Arc<Self>, peer: PeerId, signed: SignedGrant) -> ControlResponse {
        let grant = match signed.verify() {
            Ok(g) => g,
            Err(e) => {
                return ControlResponse::Denied {
                    reason: e.to_string(),
                };
            }
        };
        let from_owner = self.membership.trust_of(&peer).as_ref() == Some(&grant.owner)
            && self.membership.node_key_of(&grant.owner) == Some(signed.signer);
        if !from_owner || grant.grantee != self.trust {
            return ControlResponse::Denied {
                reason: "grant not from its owner's node, or not for this trust".into(),
            };
        }
        let stored = StoredGrant {
            grant: grant.clone(),
            signed: signed.clone(),
            issued_here: false,
            stored_at: now_unix(),
        };
        if let Err(e) = self.store.put_grant(&stored, None) {
            return ControlResponse::Failed {
                reason: e.to_string(),
            };
        }
        info!(owner = %grant.owner, slide = %grant.slide, purpose = %grant.purpose, "grant received");
        let this = self.clone();
        self.spawn(async move {
            if let Err(e) = this.fetch_manifest(&signed, false).await {
                warn!(slide = %grant.slide, error = %e, "cannot fetch shared slide's manifest yet");
            }
        });
        ControlResponse::Accepted
    }

    /// A revocation delivered by `peer` (`via` a control message or a gossip announcement,
    /// which `peer` may only have relayed). Kept only when it is signed by the roster key of
    /// the trust it names and, for a grant this node holds, when that trust issued the
    /// grant; refused with a warning naming the peer otherwise. A revocation of a grant this
    /// node does not hold (another trust's, which a copy may be asked to serve under) is
    /// kept as it is, and counts only if the grant later shown with it was issued by its
    /// signer ([`access::check_grant`] checks that again on every decision).
    fn accept_revocation(
        &self,
        peer: PeerId,
        signed: SignedRevocation,
        via: &'static str,
    ) -> ControlResponse {
        if self.faults.drop_revocations {
            warn!(%peer, via, "revocation dropped unread (fault injection)");
            return ControlResponse::Failed {
                reason: "this node drops revocations (fault injection)".into(),
            };
        }
        let refuse = |grant: Option<GrantId>, reason: String| {
            warn!(%peer, via, grant = ?grant.map(|g| g.to_string()), reason, "revocation refused");
            ControlResponse::Denied { reason }
        };
        let revocation = match signed.verify() {
            Ok(r) => r,
            Err(e) => return refuse(None, e.to_string()),
        };
        let Some(roster) = self.membership.roster() else {
            return refuse(
                Some(revocation.grant),
                "this node has no roster to check the signer with".into(),
            );
        };
        let signer = roster
            .members
            .iter()
            .find(|m| m.node == signed.signer)
            .map_or_else(|| format!("key {}", signed.signer), |m| m.trust.to_string());
        let named_key = roster.member(&revocation.owner).map(|m| m.node);
        if named_key != Some(signed.signer) {
            return refuse(
                Some(revocation.grant),
                format!(
                    "revocation in the name of {} is not signed by {}'s roster key (signed by {signer})",
                    revocation.owner, revocation.owner
                ),
            );
        }
        // A grant this node holds: only its issuer revokes it.
        let held = match self.store.grant(&revocation.grant) {
            Ok(held) => held,
            Err(e) => {
                return ControlResponse::Failed {
                    reason: e.to_string(),
                };
            }
        };
        if let Some(held) = &held {
            let issuer_key = roster.member(&held.grant.owner).map(|m| m.node);
            let by_issuer = issuer_key
                .ok_or_else(|| format!("the grant's issuer {} is not a member", held.grant.owner))
                .and_then(|key| {
                    signed
                        .verify_by_issuer(&revocation.grant, &held.grant, &key)
                        .map_err(|e| e.to_string())
                });
            if let Err(reason) = by_issuer {
                return refuse(
                    Some(revocation.grant),
                    format!("revocation by {signer}, who did not issue the grant: {reason}"),
                );
            }
        }
        match self.store.put_revocation(&revocation.grant, &signed, None) {
            Ok(()) => {
                self.withdrawals
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if held.is_some() {
                    info!(%peer, via, grant = %revocation.grant, owner = %revocation.owner, "grant revoked by its owner");
                } else {
                    info!(%peer, via, grant = %revocation.grant, owner = %revocation.owner, "revocation kept for a grant this node does not hold");
                }
                ControlResponse::Accepted
            }
            Err(e) => ControlResponse::Failed {
                reason: e.to_string(),
            },
        }
    }

    /// Reads a tile this node can serve: from an original file, else from the cache.
    fn read_local_tile(&self, tile: &TileId) -> Option<Vec<u8>> {
        let from_files = self
            .locations
            .get(tile)
            .ok()
            .flatten()
            .and_then(|location| self.reader.read(&location).ok());
        let mut bytes = from_files.or_else(|| self.cache.get(tile))?;
        if self.faults.corrupt_tiles
            && let Some(b) = bytes.last_mut()
        {
            *b ^= 0xff;
        }
        Some(bytes)
    }
}

/// Network handlers, each answered on its own task (store reads are blocking).
pub struct Handlers(pub Arc<Federation>);

impl Inbound for Handlers {
    fn control(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> BoxFuture<'static, ControlResponse> {
        let fed = self.0.clone();
        async move {
            let span = tracing::info_span!("control", peer = %peer);
            let _enter = span.enter();
            match request {
                ControlRequest::Manifest {
                    slide,
                    grant,
                    refresh,
                    nonce,
                } => tokio::task::block_in_place(|| {
                    fed.answer_manifest(peer, slide, grant, refresh, nonce)
                }),
                ControlRequest::DeliverGrant(signed) => {
                    tokio::task::block_in_place(|| fed.accept_grant(peer, signed))
                }
                ControlRequest::DeliverRevocation(signed) => {
                    tokio::task::block_in_place(|| fed.accept_revocation(peer, signed, "delivered"))
                }
                ControlRequest::Cosign {
                    checkpoint,
                    since,
                    proof,
                } => {
                    let Some(log) = fed.membership.trust_of(&peer) else {
                        return ControlResponse::Denied {
                            reason: "not a member".into(),
                        };
                    };
                    let Some(log_key) = fed.membership.node_key_of(&log) else {
                        return ControlResponse::Denied {
                            reason: "not a member".into(),
                        };
                    };
                    tokio::task::block_in_place(|| {
                        crate::audit::cosign::answer(
                            &fed.store,
                            &fed.key,
                            &log,
                            &log_key,
                            &checkpoint,
                            since,
                            &proof,
                        )
                    })
                }
                ControlRequest::RosterAfter { version } => match fed.store.rosters_after(version) {
                    Ok(rosters) => ControlResponse::Rosters(rosters),
                    Err(e) => ControlResponse::Failed {
                        reason: e.to_string(),
                    },
                },
            }
        }
        .boxed()
    }

    fn announcement(&self, from: PeerId, announcement: Announcement) {
        let fed = self.0.clone();
        self.0.spawn(async move {
            match announcement {
                Announcement::Roster(signed) => {
                    if let Err(e) = tasks::offer_roster(&fed, signed).await {
                        warn!(peer = %from, error = %e, "announced roster refused");
                    }
                }
                Announcement::Revocation(signed) => {
                    let _ = tokio::task::spawn_blocking(move || {
                        fed.accept_revocation(from, signed, "announced")
                    })
                    .await;
                }
            }
        });
    }

    fn authorize_tiles(
        &self,
        peer: PeerId,
        request: &TileRequest,
    ) -> BoxFuture<'static, Result<ReceiptFuture, Refusal>> {
        let fed = self.0.clone();
        let slide = request.slide;
        let grant = request.grant.clone();
        let tiles = request.tiles.clone();
        let user = request.user.clone();
        let label = request.audit_label();
        async move {
            let decisions = {
                let fed = fed.clone();
                tokio::task::spawn_blocking(move || {
                    let served = fed.served_slide(&slide)?;
                    if let Some(stray) = tiles.iter().find(|t| !served.tiles.contains(t)) {
                        return Err(Refusal::Denied(format!(
                            "tile {stray} is not part of slide {slide}"
                        )));
                    }
                    let mut actions = vec![ConsentAction::FetchTiles];
                    if tiles.iter().any(|t| served.label_tiles.contains(t)) {
                        actions.push(ConsentAction::SeeLabel);
                    }
                    if let Some(Err(e)) = user.as_ref().map(UserClaim::validate) {
                        return Err(Refusal::Denied(format!(
                            "the request names no valid user: {e}"
                        )));
                    }
                    fed.authorize(&peer, &slide, &grant, user.as_ref(), &actions, &label)
                })
                .await
                .map_err(|e| Refusal::Failed(e.to_string()))??
            };
            let receipt: ReceiptFuture = async move {
                tokio::task::spawn_blocking(move || fed.sign_receipt(decisions))
                    .await
                    .ok()
                    .flatten()
            }
            .boxed();
            Ok(receipt)
        }
        .boxed()
    }

    fn read_tiles(&self, tiles: Vec<TileId>) -> BoxFuture<'static, Vec<Option<Vec<u8>>>> {
        let fed = self.0.clone();
        let count = tiles.len();
        async move {
            tokio::task::spawn_blocking(move || {
                tiles.iter().map(|t| fed.read_local_tile(t)).collect()
            })
            .await
            .unwrap_or_else(|_| vec![None; count])
        }
        .boxed()
    }
}
