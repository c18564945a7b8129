//! Decisions for this trust's own people, and for the trust itself when its API names no
//! one, about every slide this node shows them: its own slides (its policy and recorded
//! consent, no grant) and slides other trusts shared with it (the owner's rules from its
//! signed consent statement, under the grant held, which that statement must list as
//! holding: a grantee stops using a grant its owner's latest statement leaves out, whether
//! or not the revocation itself arrived). Every decision is [`crate::access::decide`]; this
//! file gathers the rules and records the entries.
//!
//! Fail closed: an allowed decision that is due in the log is durable before anything of
//! the slide is shown (the caller gets its token only then); while the log cannot be
//! written, nothing is shown ([`RemoteError::AuditFailed`]).
//!
//! Logging (side `gateway`): an allowed access once per person (or the trust itself), slide
//! and action per [`GATEWAY_LOG_EVERY`], so the log reads "jsmith viewed slide X at 10:02",
//! not one entry per tile; a refusal once per [`GATEWAY_REFUSAL_LOG_EVERY`] (a refused viewer
//! asks for dozens of tiles a second). Lists and searches leave out what a person may not
//! view without logging anything ([`Federation::user_may`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slidemesh_protocol::{GrantId, SlideId, TileId, TrustCode, UserClaim};
use tracing::info;

use super::Federation;
use super::remote::RemoteError;
use crate::access::{self, Basis, CheckedGrant, GrantQuestion, Refusal, Rules, Side, Subject};
use crate::consent::{ConsentAction, Policy};
use crate::store::consent::SlideConsent;
use crate::store::now_unix;

/// How long a slide's rules are reused before the store is read again (a shared slide's
/// statement itself is refreshed from the owner every few minutes).
const RULES_TTL: Duration = Duration::from_secs(5);
/// How often an allowed access by the same person to the same slide is logged again.
pub const GATEWAY_LOG_EVERY: Duration = Duration::from_secs(600);
/// How often the same refusal is logged again.
pub const GATEWAY_REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Entries of the log throttle kept before old ones are dropped.
const LOGGED_MAX: usize = 10_000;
/// How long a decision waits for its audit entry to become durable before it fails.
const AUDIT_WAIT: Duration = Duration::from_secs(5);

/// A slide decided for the one asking ([`Federation::decide_slide`]): what the HTTP API
/// needs to read a slide's content for them, so no route shows a slide undecided.
#[derive(Debug, Clone)]
pub struct SlideDecided {
    slide: SlideId,
    user: Option<UserClaim>,
    actions: Vec<ConsentAction>,
}

impl SlideDecided {
    pub fn slide(&self) -> SlideId {
        self.slide
    }

    pub fn user(&self) -> Option<&UserClaim> {
        self.user.as_ref()
    }

    /// Whether `action` was decided (and so allowed) for this request.
    pub fn allows(&self, action: ConsentAction) -> bool {
        self.actions.contains(&action)
    }
}

/// Tiles of a slide decided for the one asking ([`Federation::authorize_tiles`]): the only
/// way to read them, from this node's files or from peers, so no path shows a tile
/// undecided.
pub struct TilesDecided {
    pub(super) slide: SlideId,
    pub(super) tiles: std::collections::HashSet<TileId>,
    pub(super) user: Option<UserClaim>,
}

impl TilesDecided {
    pub fn slide(&self) -> SlideId {
        self.slide
    }

    /// Whether `tile` was part of the decision.
    pub fn covers(&self, tile: &TileId) -> bool {
        self.tiles.contains(tile)
    }
}

/// A slide's rules as read at an instant and withdrawal count.
#[derive(Clone)]
struct SlideRules {
    read_at: Instant,
    generation: u64,
    policy: Arc<Policy>,
    consent: SlideConsent,
    owner: TrustCode,
    /// This trust's own slide (decided without a grant).
    local: bool,
    /// This trust holds the identified manifest (its own slide, or a shared one that is
    /// not a de-identified view).
    identified: bool,
    /// For a shared slide: the grant held, checked once per read rather than per decision.
    grant: Option<CheckedGrant>,
    /// Verdicts reached under exactly these rules (they go when the rules are read again):
    /// a viewer asks the same question for every tile, and cedar takes 10-50 µs to answer
    /// what a lookup answers in well under one.
    /// Keyed by a hash of the one asking and the actions (looked up without allocating);
    /// the entry holds both, compared on a hit.
    verdicts: Arc<std::sync::Mutex<HashMap<u64, MemoVerdict>>>,
    /// For a shared slide: the grants the owner's statement lists as holding, and when it
    /// was issued.
    listed: Option<(Vec<GrantId>, u64)>,
}

impl SlideRules {
    fn listed(&self) -> Option<access::OwnersList<'_>> {
        self.listed
            .as_ref()
            .map(|(grants, issued_at)| access::OwnersList {
                grants,
                issued_at: *issued_at,
            })
    }
}

/// What a verdict says, without its audit entries (which are built when due).
#[derive(Clone)]
struct MemoVerdict {
    user: Option<UserClaim>,
    actions: Vec<ConsentAction>,
    outcome: Result<(), Refusal>,
    /// Each decided action and whether it was allowed.
    steps: Vec<(ConsentAction, bool)>,
    /// Until when none of the steps is due in the log (so a hit needs no look at it).
    quiet_until: Option<Instant>,
}

impl MemoVerdict {
    fn answers(&self, user: Option<&UserClaim>, actions: &[ConsentAction]) -> bool {
        self.user.as_ref() == user && self.actions == actions
    }
}

fn verdict_hash(user: Option<&UserClaim>, actions: &[ConsentAction]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    user.hash(&mut hasher);
    actions.hash(&mut hasher);
    hasher.finish()
}

/// Verdicts kept per slide's rules before the memo starts afresh.
const VERDICTS_MAX: usize = 4096;

/// Slides' rules for recently asked slides, and when each access was last logged.
#[derive(Default)]
pub struct GatewayState {
    rules: std::sync::Mutex<HashMap<SlideId, SlideRules>>,
    /// When each access was last logged, and whether that entry is durable yet (until it
    /// is, the access counts as not logged: a concurrent request logs and waits too).
    logged: std::sync::Mutex<HashMap<LogKey, (Instant, bool)>>,
}

type LogKey = (SlideId, Option<UserClaim>, ConsentAction, bool);

impl Federation {
    /// What asking for `tiles` of `slide` amounts to: fetching tiles, and seeing the label
    /// when any of them is a label or overview image.
    pub(super) fn tile_actions(
        &self,
        slide: &SlideId,
        tiles: &[TileId],
    ) -> Result<Vec<ConsentAction>, RemoteError> {
        let served = self
            .holdings
            .served_slide(slide)
            .map_err(|refusal| match refusal {
                Refusal::Denied(_) => RemoteError::NotShared(*slide),
                Refusal::Failed(reason) => {
                    RemoteError::Unavailable(format!("cannot read slide {slide}: {reason}"))
                }
            })?;
        if let Some(stray) = tiles.iter().find(|t| !served.tiles.contains(t)) {
            return Err(RemoteError::NoSuchTile(format!(
                "slide {slide} has no tile {stray}"
            )));
        }
        Ok(access::tile_actions(
            tiles.iter().any(|t| served.label_tiles.contains(t)),
        ))
    }

    /// Decides, once per request, before anything of `tiles` is shown or fetched for the
    /// one asking (a named person, or the trust itself); the answer is what reading them
    /// needs ([`Federation::remote_tile`], the API's local reads).
    pub async fn authorize_tiles(
        self: &Arc<Self>,
        slide: SlideId,
        tiles: Vec<TileId>,
        user: Option<&UserClaim>,
    ) -> Result<TilesDecided, RemoteError> {
        // This trust's own slide with everything in memory: no trip to the blocking pool.
        if let Some(served) = self.holdings.served_in_memory(&slide) {
            if let Some(stray) = tiles.iter().find(|t| !served.tiles.contains(t)) {
                return Err(RemoteError::NoSuchTile(format!(
                    "slide {slide} has no tile {stray}"
                )));
            }
            let actions =
                access::tile_actions(tiles.iter().any(|t| served.label_tiles.contains(t)));
            if let Some(decided) = self.decide_in_memory(&slide, user, &actions) {
                return decided.map(|_| TilesDecided {
                    slide,
                    tiles: tiles.into_iter().collect(),
                    user: user.cloned(),
                });
            }
        }
        let fed = self.clone();
        let person = user.cloned();
        tokio::task::spawn_blocking(move || {
            let actions = fed.tile_actions(&slide, &tiles)?;
            fed.judge(&slide, person.as_ref(), &actions, true)?;
            Ok(TilesDecided {
                slide,
                tiles: tiles.into_iter().collect(),
                user: person,
            })
        })
        .await
        .map_err(|e| RemoteError::Unavailable(e.to_string()))?
    }

    /// Tiles of a slide already decided for the one asking: allowed when the decision
    /// included fetching tiles and, for label or overview tiles, seeing the label; every tile
    /// must be the slide's. No new decision, so nothing new to log.
    pub fn tiles_of(
        &self,
        decided: &SlideDecided,
        tiles: Vec<TileId>,
    ) -> Result<TilesDecided, RemoteError> {
        let slide = decided.slide;
        if !decided.allows(ConsentAction::FetchTiles) {
            return Err(RemoteError::Forbidden(format!(
                "tiles of slide {slide} were not decided for this request"
            )));
        }
        let served = self
            .holdings
            .served_slide(&slide)
            .map_err(|refusal| match refusal {
                Refusal::Denied(_) => RemoteError::NotShared(slide),
                Refusal::Failed(reason) => RemoteError::Unavailable(reason),
            })?;
        if let Some(stray) = tiles.iter().find(|t| !served.tiles.contains(t)) {
            return Err(RemoteError::Forbidden(format!(
                "tile {stray} is not part of slide {slide}"
            )));
        }
        if !decided.allows(ConsentAction::SeeLabel)
            && tiles.iter().any(|t| served.label_tiles.contains(t))
        {
            return Err(RemoteError::Forbidden(format!(
                "seeing the label of slide {slide} was not decided for this request"
            )));
        }
        Ok(TilesDecided {
            slide,
            tiles: tiles.into_iter().collect(),
            user: decided.user.clone(),
        })
    }

    /// Decides `actions` on `slide` for the one asking and, when allowed, gives the token
    /// the API needs to show the slide. Reads the store on a miss: call from a blocking
    /// context.
    pub fn decide_slide(
        &self,
        slide: &SlideId,
        user: Option<&UserClaim>,
        actions: &[ConsentAction],
    ) -> Result<SlideDecided, RemoteError> {
        self.judge(slide, user, actions, true)?;
        Ok(SlideDecided {
            slide: *slide,
            user: user.cloned(),
            actions: actions.to_vec(),
        })
    }

    /// The decision for this trust's own slide when it needs neither the store nor the
    /// log: its rules are in memory and no entry is due. `None`: decide with
    /// [`Self::decide_slide`] on the blocking pool. (Most requests of a viewer are of this
    /// kind: the same person, slide and actions as a moment ago.)
    pub fn decide_in_memory(
        &self,
        slide: &SlideId,
        user: Option<&UserClaim>,
        actions: &[ConsentAction],
    ) -> Option<Result<SlideDecided, RemoteError>> {
        let generation = self
            .holdings
            .withdrawals
            .load(std::sync::atomic::Ordering::SeqCst);
        let memo = {
            let rules = super::remote::lock(&self.gateway.rules);
            let rules = rules.get(slide)?;
            let fresh = rules.local
                && rules.generation == generation
                && rules.read_at.elapsed() < RULES_TTL
                && Arc::ptr_eq(&rules.policy, &self.holdings.policy.current());
            if !fresh {
                return None;
            }
            rules.verdicts.clone()
        };
        let hash = verdict_hash(user, actions);
        let now = Instant::now();
        let known = super::remote::lock(&memo)
            .get(&hash)
            .filter(|v| v.answers(user, actions))
            .cloned();
        let verdict = match known {
            Some(verdict) => verdict,
            None => {
                let rules = super::remote::lock(&self.gateway.rules)
                    .get(slide)
                    .cloned()?;
                let verdict = access::decide(
                    &Rules {
                        policy: &rules.policy,
                        consent: &rules.consent,
                        owner: &rules.owner,
                        roster: None,
                        listed: None,
                    },
                    Subject {
                        trust: &self.holdings.trust,
                        user,
                    },
                    Basis::OwnSlide,
                    *slide,
                    actions,
                    now_unix(),
                );
                let verdict = MemoVerdict {
                    user: user.cloned(),
                    actions: actions.to_vec(),
                    steps: verdict
                        .decisions
                        .iter()
                        .map(|d| (d.action, d.allowed))
                        .collect(),
                    outcome: verdict.outcome,
                    quiet_until: None,
                };
                let mut memo = super::remote::lock(&memo);
                if memo.len() >= VERDICTS_MAX {
                    memo.clear();
                }
                memo.insert(hash, verdict.clone());
                verdict
            }
        };
        if verdict.quiet_until.is_none_or(|until| now >= until) {
            // Some step may be due: ask the log throttle, and note how long all stay quiet.
            let mut quiet_until: Option<Instant> = None;
            for &(action, allowed) in &verdict.steps {
                let until = self.log_quiet_until(&(*slide, user.cloned(), action, allowed))?;
                quiet_until = Some(quiet_until.map_or(until, |q| q.min(until)));
            }
            if let Some(v) = super::remote::lock(&memo).get_mut(&hash)
                && v.answers(user, actions)
            {
                v.quiet_until = quiet_until;
            }
        }
        Some(match verdict.outcome {
            Ok(()) => Ok(SlideDecided {
                slide: *slide,
                user: user.cloned(),
                actions: actions.to_vec(),
            }),
            Err(Refusal::Denied(reason)) => Err(RemoteError::Forbidden(reason)),
            Err(Refusal::Failed(reason)) => Err(RemoteError::Unavailable(reason)),
        })
    }

    /// Whether the one asking may do `action` on a slide, decided without logging: for
    /// leaving things out of lists and searches. Reads the store on a miss: call from a
    /// blocking context.
    pub fn user_may(
        &self,
        slide: &SlideId,
        user: Option<&UserClaim>,
        action: ConsentAction,
    ) -> bool {
        self.judge(slide, user, &[action], false).is_ok()
    }

    /// May the one asking (one of this trust's people, or the trust itself) do each of
    /// `actions` on `slide`? See the module docs. With `log`, the decision is recorded
    /// (throttled) and an allowed one is durable before this returns.
    fn judge(
        &self,
        slide: &SlideId,
        user: Option<&UserClaim>,
        actions: &[ConsentAction],
        log: bool,
    ) -> Result<(), RemoteError> {
        let rules = self.rules_here(slide)?;
        // Checked on every call for a shared slide: a grant that expired is refused at once.
        if !rules.local {
            let signed = self.grant_for(slide)?;
            if rules.grant.as_ref().map(CheckedGrant::id) != Some(signed.id()) {
                self.forget_owners_rules(slide);
                return Err(RemoteError::Unavailable(format!(
                    "the grant for slide {slide} changed; try again"
                )));
            }
        }
        let roster = self.holdings.membership.roster();
        let basis = match &rules.grant {
            Some(checked) => Basis::Checked(checked),
            None => Basis::OwnSlide,
        };
        let verdict = access::decide(
            &Rules {
                policy: &rules.policy,
                consent: &rules.consent,
                owner: &rules.owner,
                roster: roster.as_deref(),
                listed: rules.listed(),
            },
            Subject {
                trust: &self.holdings.trust,
                user,
            },
            basis,
            *slide,
            actions,
            now_unix(),
        );
        if log {
            self.record_here(slide, user, &rules, &verdict)?;
        }
        verdict.outcome.map_err(|refusal| match refusal {
            Refusal::Denied(reason) => RemoteError::Forbidden(reason),
            Refusal::Failed(reason) => RemoteError::Unavailable(reason),
        })
    }

    /// Records what `verdict` asks to, throttled (see the module docs); an allowed entry is
    /// durable before this returns, or nothing is shown.
    fn record_here(
        &self,
        slide: &SlideId,
        user: Option<&UserClaim>,
        rules: &SlideRules,
        verdict: &access::Verdict,
    ) -> Result<(), RemoteError> {
        let (peer, peer_id, what) = if rules.local {
            (
                self.holdings.trust.clone(),
                String::new(),
                "own slide, for this trust",
            )
        } else {
            let peer_id = self
                .holdings
                .membership
                .peer_of(&rules.owner)
                .map(|p| p.to_string())
                .unwrap_or_default();
            (rules.owner.clone(), peer_id, "shared slide, for this trust")
        };
        let entries = verdict.entries(Side::Gateway, &peer, &peer_id, what);
        let mut pending = Vec::new();
        for (entry, decision) in entries.into_iter().zip(&verdict.decisions) {
            let key: LogKey = (*slide, user.cloned(), decision.action, decision.allowed);
            if !self.log_due(&key) {
                continue;
            }
            info!(%slide, user = ?entry.user, action = entry.action, allowed = entry.allowed, rules = ?entry.rules, "decision for this trust");
            if decision.allowed {
                pending.push((key, self.holdings.audit.record_pending(entry)));
            } else {
                self.holdings.audit.record(entry);
            }
        }
        let deadline = Instant::now() + AUDIT_WAIT;
        let mut failed = false;
        for (key, entry) in pending {
            if failed
                || entry
                    .wait(deadline.saturating_duration_since(Instant::now()))
                    .is_none()
            {
                failed = true;
                // Logged again next time: this access was not.
                super::remote::lock(&self.gateway.logged).remove(&key);
            } else if let Some(logged) = super::remote::lock(&self.gateway.logged).get_mut(&key) {
                logged.1 = true;
            }
        }
        if failed {
            return Err(RemoteError::AuditFailed(
                "this node's audit log cannot be written; nothing is shown unlogged".into(),
            ));
        }
        Ok(())
    }

    /// A slide's rules: this node's own policy and recorded consent for its own slides, the
    /// owner's signed statement under the grant held for shared ones; memoised briefly and
    /// forgotten at any withdrawal.
    fn rules_here(&self, slide: &SlideId) -> Result<SlideRules, RemoteError> {
        let generation = self
            .holdings
            .withdrawals
            .load(std::sync::atomic::Ordering::SeqCst);
        use super::remote::lock;
        if let Some(rules) = lock(&self.gateway.rules).get(slide)
            && rules.generation == generation
            && rules.read_at.elapsed() < RULES_TTL
            && (!rules.local || Arc::ptr_eq(&rules.policy, &self.holdings.policy.current()))
        {
            return Ok(rules.clone());
        }
        let unavailable = |e: &dyn std::fmt::Display| RemoteError::Unavailable(e.to_string());
        let refused = |refusal: Refusal| match refusal {
            Refusal::Denied(reason) => RemoteError::Forbidden(reason),
            Refusal::Failed(reason) => RemoteError::Unavailable(reason),
        };
        let served = self
            .holdings
            .served_slide(slide)
            .map_err(|refusal| match refusal {
                Refusal::Denied(_) => RemoteError::NotShared(*slide),
                Refusal::Failed(reason) => RemoteError::Unavailable(reason),
            })?;
        let rules = if served.local {
            let consent = self
                .holdings
                .store
                .slide_consent(slide, &served.series_uid)
                .map_err(|e| unavailable(&e))?;
            SlideRules {
                read_at: Instant::now(),
                generation,
                policy: self.holdings.policy.current(),
                consent,
                owner: served.owner.clone(),
                local: true,
                identified: true,
                grant: None,
                verdicts: Default::default(),
                listed: None,
            }
        } else {
            let signed = self.grant_for(slide)?;
            let roster = self
                .holdings
                .membership
                .roster()
                .ok_or_else(|| RemoteError::Unavailable("this node has no roster".into()))?;
            let revocations = self
                .holdings
                .store
                .revocations(&signed.id())
                .map_err(|e| e.to_string());
            let owners = self.holdings.owners_rules(slide).map_err(refused)?;
            let checked = access::check_grant(
                &signed,
                &GrantQuestion {
                    roster: &roster,
                    requester: &self.holdings.trust,
                    slide,
                    owner: &served.owner,
                    now: now_unix(),
                    revocations,
                    listed: Some(owners.listed()),
                },
            )
            .map_err(refused)?;
            let identified = self
                .holdings
                .store
                .remote_slide(slide)
                .map_err(|e| unavailable(&e))?
                .is_none_or(|r| r.deidentified.is_none());
            SlideRules {
                read_at: Instant::now(),
                generation,
                listed: Some((owners.valid_grants, owners.issued_at)),
                policy: owners.policy,
                consent: owners.consent,
                owner: served.owner.clone(),
                local: false,
                identified,
                grant: Some(checked),
                verdicts: Default::default(),
            }
        };
        lock(&self.gateway.rules).insert(*slide, rules.clone());
        Ok(rules)
    }

    /// What reading a slide's metadata amounts to ([`access::metadata_actions`]): viewing
    /// it and, when this node holds the identified metadata, seeing who the patient is.
    pub fn metadata_actions(&self, slide: &SlideId) -> Result<Vec<ConsentAction>, RemoteError> {
        Ok(access::metadata_actions(self.rules_here(slide)?.identified))
    }

    /// Whether the one asking may read a slide's metadata ([`Self::metadata_actions`]),
    /// decided without logging: for leaving slides out of searches and redacting lists.
    pub fn user_may_read_metadata(&self, slide: &SlideId, user: Option<&UserClaim>) -> bool {
        self.metadata_actions(slide)
            .and_then(|actions| self.judge(slide, user, &actions, false))
            .is_ok()
    }

    /// Drops the rules read for `slide`, so the next decision reads them again.
    pub(super) fn forget_owners_rules(&self, slide: &SlideId) {
        super::remote::lock(&self.gateway.rules).remove(slide);
    }

    /// Until when a decision keyed `key` is not due in the log; `None`: due now (never
    /// logged, logged too long ago, or its entry not durable yet).
    fn log_quiet_until(&self, key: &LogKey) -> Option<Instant> {
        let logged = super::remote::lock(&self.gateway.logged);
        let &(at, durable) = logged.get(key)?;
        let until = at + log_every(key);
        (durable && Instant::now() < until).then_some(until)
    }

    /// Whether a decision keyed `key` should be logged now (and notes it).
    fn log_due(&self, key: &LogKey) -> bool {
        let every = log_every(key);
        let mut logged = super::remote::lock(&self.gateway.logged);
        if logged.len() >= LOGGED_MAX {
            logged.retain(|_, (at, _)| at.elapsed() < GATEWAY_LOG_EVERY);
            if logged.len() >= LOGGED_MAX / 2 {
                // Still crowded with recent entries: start afresh (a few entries are logged
                // again early) rather than rescan on every decision.
                logged.clear();
            }
        }
        match logged.get(key) {
            Some(&(at, true)) if at.elapsed() < every => false,
            _ => {
                // A refusal is recorded without waiting: nothing of the slide is shown on it.
                logged.insert(key.clone(), (Instant::now(), !key.3));
                true
            }
        }
    }
}

/// How often a decision of this kind is logged again.
fn log_every(key: &LogKey) -> Duration {
    if key.3 {
        GATEWAY_LOG_EVERY
    } else {
        GATEWAY_REFUSAL_LOG_EVERY
    }
}
