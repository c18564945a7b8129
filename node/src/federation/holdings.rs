//! What this node holds and serves, and under whose rules: its store, tile files and
//! cache, its own policy and audit log, the roster, and what the policy check needs of
//! each slide it serves (memoised), with the owner's rules for a copy from the owner's
//! signed consent statement. Shared by what answers peers ([`super::answers`]) and what
//! serves this trust's people and fetches from peers ([`super::Federation`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use slidemesh_protocol::{
    AssociatedKind, GrantId, NodeKey, SlideId, SlideManifest, TileId, TrustCode,
};

use super::Refusal;
use super::membership::Membership;
use crate::access;
use crate::audit::AuditLog;
use crate::consent::{Policy, PolicyHandle};
use crate::store::cache::TileCache;
use crate::store::consent::SlideConsent;
use crate::store::locations::LocationCache;
use crate::store::reader::TileReader;
use crate::store::{Store, now_unix};

/// How long a copy decides with an owner's consent statement it could not refresh.
const CONSENT_STATEMENT_MAX_AGE_SECS: u64 = 24 * 3600;

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

pub(crate) struct ServedSlide {
    pub tiles: HashSet<TileId>,
    /// Tiles of the LABEL and OVERVIEW images (they show the patient's label).
    pub label_tiles: HashSet<TileId>,
    pub series_uid: String,
    pub owner: TrustCode,
    /// This node owns the slide (else it serves a cached copy).
    pub local: bool,
}

/// The node's holdings and the rules it serves them under.
pub struct Holdings {
    pub store: Arc<Store>,
    pub trust: TrustCode,
    /// This node's key: receipts, consent statements, co-signatures.
    pub(crate) key: Arc<NodeKey>,
    pub(crate) locations: LocationCache,
    pub(crate) reader: TileReader,
    /// Tiles of shared slides fetched from peers.
    pub cache: TileCache,
    /// The roster in force and who each peer speaks for.
    pub membership: Arc<Membership>,
    /// This node's consent policy, decided on every manifest and tile batch of its slides.
    pub policy: Arc<PolicyHandle>,
    /// Where every decision (served) and access (received) is recorded.
    pub audit: AuditLog,
    /// What the policy check needs to know of each slide this node serves (its own, and
    /// shared ones it has cached): its tiles (a batch may ask only for tiles of the slide
    /// its grant covers), which of them show the label, its series and owner.
    served: Mutex<HashMap<SlideId, Arc<ServedSlide>>>,
    /// Other owners' policies, parsed from their consent statements, by BLAKE3 of the text.
    owner_policies: Mutex<HashMap<blake3::Hash, Arc<Policy>>>,
    /// Bumped whenever a shared slide is withdrawn or its stored manifest replaced, so
    /// readers holding decoded manifests (the HTTP API's cache) drop them.
    pub withdrawals: std::sync::atomic::AtomicU64,
    /// Told when this process queued a message in the outbox, so the delivery loop sends
    /// it now rather than at its next poll (the CLI's messages wait for the poll).
    pub(crate) outbox_queued: tokio::sync::Notify,
    /// How this node answers research queries and how long its own wait for members.
    pub research: crate::research::ResearchSettings,
}

impl Holdings {
    #[allow(clippy::too_many_arguments)] // one call site (the server), each a distinct part
    pub fn new(
        store: Arc<Store>,
        trust: TrustCode,
        key: Arc<NodeKey>,
        reader: TileReader,
        cache: TileCache,
        policy: Arc<PolicyHandle>,
        audit: AuditLog,
        membership: Arc<Membership>,
        research: crate::research::ResearchSettings,
    ) -> Self {
        Self {
            locations: LocationCache::new(store.clone()),
            store,
            trust,
            key,
            reader,
            cache,
            membership,
            policy,
            audit,
            served: Mutex::new(HashMap::new()),
            owner_policies: Mutex::new(HashMap::new()),
            withdrawals: std::sync::atomic::AtomicU64::new(0),
            outbox_queued: tokio::sync::Notify::new(),
            research,
        }
    }

    /// This trust's side of referrals, with this node's store and key.
    /// Runs `f` with this site as a research query or cohort sees it: its store, index,
    /// policy and roster now, and its `[research]` rules.
    pub fn with_research_site<R>(
        &self,
        f: impl FnOnce(&crate::research::answer::Site<'_>) -> R,
    ) -> R {
        let policy = self.policy.current();
        let roster = self.membership.roster();
        f(&crate::research::answer::Site {
            store: &self.store,
            index: &self.research.index,
            policy: &policy,
            roster: roster.as_deref(),
            trust: &self.trust,
            rules: &self.research.rules,
        })
    }

    pub fn referral_party(&self) -> crate::referrals::Party<'_> {
        crate::referrals::Party {
            store: &self.store,
            trust: &self.trust,
            key: &self.key,
        }
    }

    /// Forgets what was memoised about a slide whose stored manifest changed.
    pub(crate) fn manifest_changed(&self, slide: &SlideId) {
        if let Ok(mut map) = self.served.lock() {
            map.remove(slide);
        }
        self.withdrawals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// What [`Self::served_slide`] knows of a slide without reading the store.
    pub(crate) fn served_in_memory(&self, slide: &SlideId) -> Option<Arc<ServedSlide>> {
        self.served.lock().ok().and_then(|m| m.get(slide).cloned())
    }

    /// What the policy check needs of a slide this node holds or caches (memoised).
    pub(crate) fn served_slide(&self, slide: &SlideId) -> Result<Arc<ServedSlide>, Refusal> {
        if let Some(served) = self.served.lock().ok().and_then(|m| m.get(slide).cloned()) {
            return Ok(served);
        }
        let failed = |e: &dyn std::fmt::Display| Refusal::Failed(format!("slide {slide}: {e}"));
        let (signed, local) = match self.store.slide(slide).map_err(|e| failed(&e))? {
            Some(record) => (record.signed, true),
            None => (
                self.store
                    .served_copy(slide)
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

    pub(crate) fn remember_served(
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
    pub(crate) fn owners_rules(&self, slide: &SlideId) -> Result<OwnersRules, Refusal> {
        let denied = Refusal::Denied;
        let remote = self
            .store
            .served_copy(slide)
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
}
