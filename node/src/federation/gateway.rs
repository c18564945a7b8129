//! Decisions for this trust's own people about slides other trusts shared with it.
//!
//! The grantee's node is its people's gateway: when the trust's sign-on names the person
//! asking, the owner's rules (the policy and consent in its signed consent statement, the
//! same a copy decides with) are applied to that person here, before anything of the slide
//! is shown, tiles already cached included. The owner decides again when tiles are fetched
//! for them, and both logs name them.
//!
//! Logging: every refusal is appended (side `gateway`); an allowed access once per person,
//! slide and action per [`GATEWAY_LOG_EVERY`], so the log reads "jsmith viewed slide X at
//! 10:02", not one entry per tile.

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

/// The owner's rules for a slide as read at an instant and withdrawal count.
type RulesMemo = (Instant, u64, Arc<Policy>, SlideConsent);

/// The owner's rules for recently asked slides, and when each allowed access was last
/// logged.
#[derive(Default)]
pub struct GatewayState {
    rules: std::sync::Mutex<HashMap<SlideId, RulesMemo>>,
    logged: std::sync::Mutex<HashMap<(SlideId, UserClaim, ConsentAction), Instant>>,
}

impl Federation {
    /// What asking for `tiles` of `slide` amounts to: fetching tiles, and seeing the label
    /// when any of them is a label or overview image.
    pub(super) fn tile_actions(&self, slide: &SlideId, tiles: &[TileId]) -> Vec<ConsentAction> {
        let mut actions = vec![ConsentAction::FetchTiles];
        // A slide whose tiles cannot be listed is refused further on (no grant, no rules).
        if let Ok(served) = self.served_slide(slide)
            && tiles.iter().any(|t| served.label_tiles.contains(t))
        {
            actions.push(ConsentAction::SeeLabel);
        }
        actions
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
        let signed = self.grant_for(slide)?;
        let grant = signed.verify().map_err(|e| {
            RemoteError::Unavailable(format!("the grant held does not verify: {e}"))
        })?;
        let (policy, consent) = self.rules_for_gateway(slide)?;
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
            if !allowed || self.log_due(slide, user, action) {
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
    fn rules_for_gateway(
        &self,
        slide: &SlideId,
    ) -> Result<(Arc<Policy>, SlideConsent), RemoteError> {
        let generation = self.withdrawals.load(std::sync::atomic::Ordering::SeqCst);
        use super::remote::lock;
        if let Some((at, seen, policy, consent)) = lock(&self.gateway.rules).get(slide)
            && *seen == generation
            && at.elapsed() < RULES_TTL
        {
            return Ok((policy.clone(), consent.clone()));
        }
        let (policy, consent) = self.owners_rules(slide).map_err(RemoteError::Forbidden)?;
        lock(&self.gateway.rules).insert(
            *slide,
            (Instant::now(), generation, policy.clone(), consent.clone()),
        );
        Ok((policy, consent))
    }

    /// Whether an allowed access by `user` to `slide` should be logged now (and notes it).
    fn log_due(&self, slide: &SlideId, user: &UserClaim, action: ConsentAction) -> bool {
        let mut logged = super::remote::lock(&self.gateway.logged);
        let key = (*slide, user.clone(), action);
        match logged.get(&key) {
            Some(at) if at.elapsed() < GATEWAY_LOG_EVERY => false,
            _ => {
                logged.insert(key, Instant::now());
                true
            }
        }
    }
}
