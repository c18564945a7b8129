//! Decisions for this trust's own people about slides other trusts shared with it.
//!
//! The grantee's node is its people's gateway: when the trust's sign-on names the person
//! asking, the owner's rules (the policy and consent in its signed consent statement, the
//! same a copy decides with) are applied to that person here, before anything of the slide
//! is shown, tiles already cached included. The owner decides again when tiles are fetched
//! for them, and both logs name them.
//!
//! Logging (side `gateway`): an allowed access once per person, slide and action per
//! [`GATEWAY_LOG_EVERY`], so the log reads "jsmith viewed slide X at 10:02", not one entry
//! per tile; a refusal once per person, slide and action per [`GATEWAY_REFUSAL_LOG_EVERY`]
//! (a refused viewer asks for dozens of tiles a second). Lists and searches leave out what a
//! person may not view without logging anything ([`Federation::user_may`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slidemesh_protocol::{SlideId, TileId, UserClaim};
use tracing::info;

use super::Federation;
use super::remote::RemoteError;
use crate::audit::{AuditEntry, Side};
use crate::consent::{ConsentAction, ConsentRequest, Policy};
use crate::store::consent::SlideConsent;
use crate::store::now_unix;

/// How long the owner's rules for a slide are reused before the store is read again (the
/// statement itself is refreshed from the owner every few minutes).
const RULES_TTL: Duration = Duration::from_secs(5);
/// How often an allowed access by the same person to the same slide is logged again.
pub const GATEWAY_LOG_EVERY: Duration = Duration::from_secs(600);
/// How often the same refusal is logged again.
pub const GATEWAY_REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Entries of the log throttle kept before old ones are dropped.
const LOGGED_MAX: usize = 10_000;

/// Tiles of a slide decided for the one asking ([`Federation::authorize_tiles`]): the only
/// way to fetch them ([`Federation::remote_tile`]), so no path shows a tile undecided.
pub struct TilesDecided {
    pub(super) slide: SlideId,
    pub(super) tiles: std::collections::HashSet<TileId>,
    pub(super) user: Option<UserClaim>,
}

/// The owner's rules for a slide, as read at an instant and withdrawal count.
#[derive(Clone)]
struct OwnersRules {
    read_at: Instant,
    generation: u64,
    policy: Arc<Policy>,
    consent: SlideConsent,
    /// This trust holds the identified manifest (not a de-identified view).
    identified: bool,
    /// The grant held, its signature checked once per read rather than per decision.
    grant: VerifiedGrant,
}

#[derive(Clone)]
struct VerifiedGrant {
    id: slidemesh_protocol::GrantId,
    grant: slidemesh_protocol::Grant,
}

/// The owner's rules for recently asked slides, and when each allowed access was last
/// logged.
#[derive(Default)]
pub struct GatewayState {
    rules: std::sync::Mutex<HashMap<SlideId, OwnersRules>>,
    logged: std::sync::Mutex<HashMap<(SlideId, UserClaim, ConsentAction, bool), Instant>>,
}

impl Federation {
    /// What asking for `tiles` of `slide` amounts to: fetching tiles, and seeing the label
    /// when any of them is a label or overview image.
    pub(super) fn tile_actions(
        &self,
        slide: &SlideId,
        tiles: &[TileId],
    ) -> Result<Vec<ConsentAction>, RemoteError> {
        let served = self
            .served_slide(slide)
            .map_err(|e| RemoteError::Unavailable(format!("cannot read slide {slide}: {e}")))?;
        let mut actions = vec![ConsentAction::FetchTiles];
        if tiles.iter().any(|t| served.label_tiles.contains(t)) {
            actions.push(ConsentAction::SeeLabel);
        }
        Ok(actions)
    }

    /// Decides for a named person, once per request, before anything of `tiles` is shown or
    /// fetched for them; the answer is what [`Federation::remote_tile`] needs to fetch them.
    /// The trust itself (`None`) passes here: the owner decides for it when tiles are
    /// fetched.
    pub async fn authorize_tiles(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: Vec<TileId>,
        user: Option<&UserClaim>,
    ) -> Result<TilesDecided, RemoteError> {
        let decided = |tiles: Vec<TileId>| TilesDecided {
            slide,
            tiles: tiles.into_iter().collect(),
            user: user.cloned(),
        };
        let Some(person) = user.cloned() else {
            return Ok(decided(tiles));
        };
        let fed = self.clone();
        tokio::task::spawn_blocking(move || {
            let actions = fed.tile_actions(&slide, &tiles)?;
            fed.decide_for_user(&slide, &person, &actions)?;
            Ok(tiles)
        })
        .await
        .map_err(|e| RemoteError::Unavailable(e.to_string()))?
        .map(decided)
    }

    /// Whether `user` may do `action` on a shared slide, decided without logging: for
    /// leaving things out of lists and searches. Reads the store on a miss: call from a
    /// blocking context.
    pub fn user_may(&self, slide: &SlideId, user: &UserClaim, action: ConsentAction) -> bool {
        self.judge(slide, user, &[action], false).is_ok()
    }

    /// May `user`, one of this trust's people, do each of `actions` on a slide shared with
    /// this trust? Decided with the owner's signed rules under the grant held. Reads the
    /// store on a miss: call from a blocking context.
    pub fn decide_for_user(
        &self,
        slide: &SlideId,
        user: &UserClaim,
        actions: &[ConsentAction],
    ) -> Result<(), RemoteError> {
        self.judge(slide, user, actions, true)
    }

    fn judge(
        &self,
        slide: &SlideId,
        user: &UserClaim,
        actions: &[ConsentAction],
        log: bool,
    ) -> Result<(), RemoteError> {
        // Checked on every call: a grant that expired is refused at once.
        let signed = self.grant_for(slide)?;
        let OwnersRules {
            policy,
            consent,
            grant,
            ..
        } = self.rules_for_gateway(slide)?;
        if grant.id != signed.id() {
            return Err(RemoteError::Unavailable(format!(
                "the grant for slide {slide} changed; try again"
            )));
        }
        let grant = grant.grant;
        let now = now_unix();
        let owner_peer = self
            .peer_of(&grant.owner)
            .map(|p| p.to_string())
            .unwrap_or_default();
        for &action in actions {
            let (allowed, rules, policy_hash, reason) = if action == ConsentAction::SeeLabel
                && grant.purpose.requires_deidentification()
            {
                let reason = "label and overview images are never shown for research or education";
                (
                    false,
                    vec![format!("built-in: {reason}")],
                    String::new(),
                    reason.to_string(),
                )
            } else {
                let decision = policy.decide(&ConsentRequest {
                    requester: &self.trust,
                    user: Some(user),
                    action,
                    slide: *slide,
                    owner: &grant.owner,
                    consent: &consent,
                    purpose: grant.purpose,
                    reference: grant.reference.as_deref(),
                    grant_expires: grant.expires_at,
                    now,
                });
                let reason = decision.explain();
                (
                    decision.allowed,
                    decision.rules,
                    decision.policy_hash,
                    reason,
                )
            };
            if log && self.log_due(slide, user, action, allowed) {
                info!(%slide, user = %user, action = action.as_str(), allowed, ?rules, "decision for one of this trust's people");
                self.audit.record(AuditEntry {
                    time: now,
                    side: Side::Gateway,
                    peer: grant.owner.clone(),
                    peer_id: owner_peer.clone(),
                    user: Some(user.to_string()),
                    purpose: grant.purpose.as_str().to_string(),
                    slide: *slide,
                    action: action.as_str().to_string(),
                    what: "shared slide, for one of this trust's people".into(),
                    allowed,
                    rules,
                    policy_hash,
                    grant: Some(signed.id()),
                });
            }
            if !allowed {
                return Err(RemoteError::Forbidden(format!(
                    "{} may not {} slide {slide} for {} under {}'s rules: {reason}",
                    user,
                    action.as_str(),
                    grant.purpose.as_str(),
                    grant.owner
                )));
            }
        }
        Ok(())
    }

    /// The owner's rules for a shared slide, from its signed statement; memoised briefly and
    /// forgotten at any withdrawal.
    fn rules_for_gateway(&self, slide: &SlideId) -> Result<OwnersRules, RemoteError> {
        let generation = self.withdrawals.load(std::sync::atomic::Ordering::SeqCst);
        use super::remote::lock;
        if let Some(rules) = lock(&self.gateway.rules).get(slide)
            && rules.generation == generation
            && rules.read_at.elapsed() < RULES_TTL
        {
            return Ok(rules.clone());
        }
        let signed = self.grant_for(slide)?;
        let grant = VerifiedGrant {
            id: signed.id(),
            grant: signed.verify().map_err(|e| {
                RemoteError::Unavailable(format!("the grant held does not verify: {e}"))
            })?,
        };
        let (policy, consent) = self.owners_rules(slide).map_err(|refusal| match refusal {
            super::Refusal::Denied(reason) => RemoteError::Forbidden(reason),
            super::Refusal::Failed(reason) => RemoteError::Unavailable(reason),
        })?;
        let identified = self
            .store
            .remote_slide(slide)
            .map_err(|e| RemoteError::Unavailable(e.to_string()))?
            .is_none_or(|r| r.deidentified.is_none());
        let rules = OwnersRules {
            read_at: Instant::now(),
            generation,
            policy,
            consent,
            identified,
            grant,
        };
        lock(&self.gateway.rules).insert(*slide, rules.clone());
        Ok(rules)
    }

    /// What reading a shared slide's metadata amounts to: viewing it, and, when this trust
    /// holds the identified manifest, seeing the patient's identity (the owner lets identity
    /// leave only where it lets the label be seen, so a person must be allowed both).
    pub fn metadata_actions(&self, slide: &SlideId) -> Result<Vec<ConsentAction>, RemoteError> {
        let mut actions = vec![ConsentAction::View];
        if self.rules_for_gateway(slide)?.identified {
            actions.push(ConsentAction::SeeLabel);
        }
        Ok(actions)
    }

    /// Whether `user` may read a shared slide's metadata ([`Self::metadata_actions`]),
    /// decided without logging: for leaving slides out of searches and redacting lists.
    pub fn user_may_read_metadata(&self, slide: &SlideId, user: &UserClaim) -> bool {
        self.metadata_actions(slide)
            .and_then(|actions| self.judge(slide, user, &actions, false))
            .is_ok()
    }

    /// Drops the owner's rules read for `slide`, so the next decision reads them again.
    pub(super) fn forget_owners_rules(&self, slide: &SlideId) {
        super::remote::lock(&self.gateway.rules).remove(slide);
    }

    /// Whether a decision for `user` about `slide` should be logged now (and notes it).
    fn log_due(
        &self,
        slide: &SlideId,
        user: &UserClaim,
        action: ConsentAction,
        allowed: bool,
    ) -> bool {
        let every = if allowed {
            GATEWAY_LOG_EVERY
        } else {
            GATEWAY_REFUSAL_LOG_EVERY
        };
        let mut logged = super::remote::lock(&self.gateway.logged);
        if logged.len() >= LOGGED_MAX {
            logged.retain(|_, at| at.elapsed() < GATEWAY_LOG_EVERY);
            if logged.len() >= LOGGED_MAX / 2 {
                // Still crowded with recent entries: start afresh (a few entries are logged
                // again early) rather than rescan on every decision.
                logged.clear();
            }
        }
        let key = (*slide, user.clone(), action, allowed);
        match logged.get(&key) {
            Some(at) if at.elapsed() < every => false,
            _ => {
                logged.insert(key, Instant::now());
                true
            }
        }
    }
}
