//! A research query answered by this site over its own slides: who may count which slide is
//! decided by [`access::decide`] (action `query`, basis `Research`), the matching slides
//! are counted, the site's disclosure control is applied, and one audit entry says what was
//! asked and released. The same function answers a member's query and this node's own
//! people's, so every site's part of an answer means the same thing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use slidemesh_protocol::query::{MAX_CELLS, Query, ReleasedCounts};
use slidemesh_protocol::{Roster, SlideId, TrustCode, UserClaim};

use super::disclosure::Disclosure;
use super::facts::is_a;
use super::index::FactsIndex;
use crate::access::{self, AuditEntry, Basis, Refusal, Rules, Side, Subject};
use crate::consent::{ConsentAction, Policy};
use crate::store::Store;
use crate::store::research::Charge;

/// How this site answers: its disclosure rules and its budget per requester.
#[derive(Clone)]
pub struct SiteRules {
    pub disclosure: Disclosure,
    /// Distinct queries one requester is answered per `window_secs`.
    pub budget: u32,
    pub window_secs: u64,
}

impl SiteRules {
    /// The rules of `[research]`, the noise keyed by this node's key.
    pub fn from_config(
        config: &crate::config::ResearchSection,
        key: &slidemesh_protocol::NodeKey,
    ) -> Self {
        Self {
            disclosure: Disclosure::new(config.min_cell, config.noise, key),
            budget: config.budget,
            window_secs: config.budget_window_secs,
        }
    }
}

/// Who asks: a member's node (or this node), the person it names, their ethics approval.
pub struct Asker<'a> {
    pub trust: &'a TrustCode,
    /// The asking node's peer id (empty for this node's own people).
    pub peer_id: &'a str,
    pub user: Option<&'a UserClaim>,
    pub ethics: Option<&'a str>,
}

/// What the site's policy and records are, at the moment of answering.
pub struct Site<'a> {
    pub store: &'a Store,
    /// The in-memory copy of the store's research facts.
    pub index: &'a FactsIndex,
    pub policy: &'a Policy,
    pub roster: Option<&'a Roster>,
    pub trust: &'a TrustCode,
    pub rules: &'a SiteRules,
}

/// Longest ethics approval reference a query may name.
pub const MAX_ETHICS_REFERENCE: usize = 128;

/// Checks an ethics approval reference a requester names (it reaches policies and audit
/// logs): 1 to 128 characters, no control characters.
pub fn check_ethics(ethics: Option<&str>) -> Result<(), String> {
    match ethics {
        Some(e) if e.trim().is_empty() || e.len() > MAX_ETHICS_REFERENCE => Err(format!(
            "an ethics approval reference is 1 to {MAX_ETHICS_REFERENCE} characters"
        )),
        Some(e) if e.chars().any(char::is_control) => {
            Err("an ethics approval reference has no control characters".into())
        }
        _ => Ok(()),
    }
}

/// The answer, and the audit entry to record for it (whatever the answer).
pub struct Answer {
    pub outcome: Result<ReleasedCounts, Refusal>,
    pub entry: AuditEntry,
}

/// Answers `query` (already parsed; `text` its canonical form) for `asker` at `now`.
pub fn answer(site: &Site<'_>, asker: &Asker<'_>, query: &Query, text: &str, now: u64) -> Answer {
    let hash = blake3::hash(text.as_bytes());
    let query_id = hash.to_hex().to_string();
    let mut entry = AuditEntry {
        time: now,
        side: Side::Served,
        peer: asker.trust.clone(),
        peer_id: asker.peer_id.to_string(),
        user: asker.user.map(ToString::to_string),
        purpose: slidemesh_protocol::Purpose::Research.as_str().to_string(),
        // A query concerns no one slide: the entry names the query by its id instead.
        slide: SlideId::from_bytes(*hash.as_bytes()),
        action: ConsentAction::Query.as_str().to_string(),
        what: format!("query {text}"),
        allowed: false,
        rules: Vec::new(),
        policy_hash: site.policy.hash().to_string(),
        grant: None,
    };
    let outcome = count_and_release(site, asker, query, &query_id, now, &mut entry);
    match &outcome {
        Ok(released) => {
            entry.allowed = true;
            entry.what = format!("{}: {} groups released", entry.what, released.cells.len());
        }
        Err(refusal) => {
            entry.what = format!("{}: not answered: {refusal}", entry.what);
            if matches!(refusal, Refusal::Failed(_)) {
                entry.rules = vec!["built-in: the site could not answer".into()];
            }
        }
    }
    Answer { outcome, entry }
}

fn count_and_release(
    site: &Site<'_>,
    asker: &Asker<'_>,
    query: &Query,
    query_id: &str,
    now: u64,
    entry: &mut AuditEntry,
) -> Result<ReleasedCounts, Refusal> {
    let failed = |e: crate::store::StoreError| Refusal::Failed(e.to_string());
    let snapshot = site.index.snapshot(site.store).map_err(failed)?;
    // Slides alike in their consent are decided alike, unless a rule names a slide.
    let per_slide = site.policy.names_slides();
    let mut decided: HashMap<(Option<SlideId>, usize), Result<Vec<String>, String>> =
        HashMap::new();
    let mut counted = Vec::with_capacity(snapshot.rows.len());
    let mut refusal = None;
    let mut rules_used = BTreeSet::new();
    for row in &snapshot.rows {
        let key = (per_slide.then_some(row.slide), row.consent);
        let verdict = decided.entry(key).or_insert_with(|| {
            let verdict = access::decide(
                &Rules {
                    policy: site.policy,
                    consent: &snapshot.consents[row.consent],
                    owner: site.trust,
                    roster: site.roster,
                    listed: None,
                },
                Subject {
                    trust: asker.trust,
                    user: asker.user,
                },
                Basis::Research {
                    reference: asker.ethics,
                },
                row.slide,
                &[ConsentAction::Query],
                now,
            );
            let rules = verdict
                .decisions
                .iter()
                .flat_map(|d| d.rules.clone())
                .collect();
            match verdict.outcome {
                Ok(()) => Ok(rules),
                Err(refused) => Err(refused.to_string()),
            }
        });
        match verdict {
            Ok(rules) => {
                rules_used.extend(rules.iter().cloned());
                counted.push(row.case());
            }
            Err(reason) => {
                refusal.get_or_insert_with(|| reason.clone());
            }
        }
    }
    if counted.is_empty()
        && let Some(reason) = refusal
    {
        entry.rules = vec![format!("no slide may be counted: {reason}")];
        return Err(Refusal::Denied(format!(
            "{}'s policy allows none of its slides to be counted for this query ({reason})",
            site.trust
        )));
    }
    entry.rules = rules_used.into_iter().collect();
    let counts: BTreeMap<_, _> = query.count(&counted, &is_a);
    if counts.len() > MAX_CELLS {
        return Err(Refusal::Denied(format!(
            "the query makes {} groups; a site releases at most {MAX_CELLS}",
            counts.len()
        )));
    }
    // Charged once it can be answered: a refused query costs nothing. A person's budget is
    // theirs whatever role they ask in.
    let requester = match asker.user {
        Some(user) => format!("{}/{}", asker.trust, user.id),
        None => asker.trust.to_string(),
    };
    match site
        .store
        .charge_query(
            &requester,
            query_id,
            now,
            site.rules.window_secs,
            site.rules.budget,
        )
        .map_err(failed)?
    {
        Charge::Repeat | Charge::Charged { .. } => {}
        Charge::Exhausted { budget } => {
            entry.rules = vec!["built-in: query budget spent".into()];
            return Err(Refusal::Denied(format!(
                "{requester} has been answered {budget} distinct queries by {} in the last {} \
                 hours, its budget; repeating one of them is still answered",
                site.trust,
                site.rules.window_secs / 3600
            )));
        }
    }
    Ok(site.rules.disclosure.release(query_id, &counts))
}
