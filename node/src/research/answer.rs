//! A research query answered by this site over its own slides: the requester's budget is
//! charged, who may count which slide is decided by [`access::decide`] (action `query`,
//! basis `Research`), the matching slides are counted, the site's disclosure control is
//! applied, and one audit entry says what was asked and released. The same function answers
//! a member's query and this node's own people's, so every site's part of an answer means
//! the same thing.
//!
//! A refusal tells the requester no more than that it is one (which slide or consent made
//! it stays in this site's audit entry), and a query is charged before it is counted, so no
//! answer, refused or not, is free.

use std::collections::{BTreeSet, HashMap};

use slidemesh_protocol::query::{MAX_CELLS, Query, ReleasedCounts};
use slidemesh_protocol::{Roster, SlideId, TrustCode, UserClaim};

use super::disclosure::{Cell, Disclosure};
use super::index::{FactsIndex, Snapshot};
use super::snomed::Hierarchy;
use crate::access::{self, AuditEntry, Basis, Refusal, Rules, Side, Subject};
use crate::consent::{ConsentAction, Policy};
use crate::store::Store;
use crate::store::research::Charge;

/// How this site answers: its disclosure rules and its budgets.
#[derive(Clone)]
pub struct SiteRules {
    pub disclosure: Disclosure,
    /// Distinct queries one requester (a person, or a trust's node naming no one) is
    /// answered per `window_secs`.
    pub budget: u32,
    /// Distinct queries all of one trust's requesters together are answered per window (a
    /// member's node names its people, so without this it could name new ones for ever).
    pub trust_budget: u32,
    pub window_secs: u64,
    /// What `under` reads.
    pub hierarchy: std::sync::Arc<Hierarchy>,
}

impl SiteRules {
    /// The rules of `[research]`, the noise keyed by this node's key.
    pub fn from_config(
        config: &crate::config::ResearchSection,
        key: &slidemesh_protocol::NodeKey,
        hierarchy: Hierarchy,
    ) -> Self {
        Self {
            hierarchy: std::sync::Arc::new(hierarchy),
            disclosure: Disclosure::new(config.min_cell, config.noise, key),
            budget: config.budget,
            trust_budget: config.trust_budget,
            window_secs: config.budget_window_secs,
        }
    }
}

/// Who asks: a member's node (or this node), the person it names, and the ethics approval
/// they say they work under (recorded, not believed: a policy's ethics rule is met only by
/// an approval the owner signed into a grant).
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
    let what = match asker.ethics {
        Some(ethics) => format!("query {text} (ethics approval named: {ethics})"),
        None => format!("query {text}"),
    };
    let mut entry = super::request_entry(
        Side::Served,
        (asker.trust, asker.peer_id),
        asker.user,
        ConsentAction::Query,
        text,
        what,
        now,
    );
    entry.policy_hash = site.policy.hash().to_string();
    let outcome = count_and_release(site, asker, query, &hash.to_hex(), now, &mut entry);
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
    // Charged first: an answer that says anything, a refusal included, is never free.
    charge(site, asker, query_id, now, entry)?;
    let snapshot = site
        .index
        .snapshot(site.store, &site.rules.disclosure)
        .map_err(failed)?;
    let decided = decide_rows(
        site,
        asker,
        &snapshot,
        &|| Basis::Research,
        ConsentAction::Query,
        now,
    );
    if decided.count == 0
        && let Some(reason) = decided.refusal
    {
        // The reason names a slide and its consent: this site's log keeps it; the
        // requester learns only that nothing may be counted.
        entry.rules = vec![format!("no slide may be counted: {reason}")];
        return Err(Refusal::Denied(format!(
            "{}'s policy allows none of its slides to be counted for this requester",
            site.trust
        )));
    }
    entry.rules = decided.rules.into_iter().collect();
    let allowed = decided.allowed;
    let cells = snapshot.columns.tally(
        query,
        &|code: &str, ancestor: &str| site.rules.hierarchy.is_a(code, ancestor),
        |row| allowed[row],
        |cell: &mut Cell, row| cell.add(snapshot.rows[row].record_key),
    );
    if cells.len() > MAX_CELLS {
        return Err(Refusal::Denied(format!(
            "the query makes more groups than a site releases ({MAX_CELLS})"
        )));
    }
    Ok(site
        .rules
        .disclosure
        .release(!query.group_by.is_empty(), &cells))
}

/// Which of a snapshot's slides an asker may have, each decided by [`access::decide`].
pub(super) struct RowDecisions {
    /// By row: allowed or not.
    pub allowed: Vec<bool>,
    /// How many are allowed.
    pub count: usize,
    /// The rules that decided those allowed.
    pub rules: BTreeSet<String>,
    /// The first refusal's reason (it names a slide: for this site's log only).
    pub refusal: Option<String>,
}

/// Decides `action` for every row of `snapshot` on `basis`. Slides alike in their consent
/// are decided once, unless a rule of the policy names a slide.
pub(super) fn decide_rows<'b>(
    site: &Site<'_>,
    asker: &Asker<'_>,
    snapshot: &Snapshot,
    basis: &dyn Fn() -> Basis<'b>,
    action: ConsentAction,
    now: u64,
) -> RowDecisions {
    let per_slide = site.policy.names_slides();
    let mut decided: HashMap<(Option<SlideId>, usize), Result<Vec<String>, String>> =
        HashMap::new();
    let mut allowed = vec![false; snapshot.rows.len()];
    let mut count = 0usize;
    let mut refusal = None;
    for (at, row) in snapshot.rows.iter().enumerate() {
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
                basis(),
                row.slide,
                &[action],
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
            Ok(_) => {
                allowed[at] = true;
                count += 1;
            }
            Err(reason) => {
                refusal.get_or_insert_with(|| reason.clone());
            }
        }
    }
    let rules = decided.values().flatten().flatten().cloned().collect();
    RowDecisions {
        allowed,
        count,
        rules,
        refusal,
    }
}

/// Charges `asker`'s budgets for the request `query_id` (a repeat in the window is free):
/// the person's, theirs whatever role they ask in, and their whole trust's. Spent: refused,
/// the entry naming whose budget.
pub(super) fn charge(
    site: &Site<'_>,
    asker: &Asker<'_>,
    query_id: &str,
    now: u64,
    entry: &mut AuditEntry,
) -> Result<(), Refusal> {
    let person = match asker.user {
        Some(user) => format!("person:{}/{}", asker.trust, user.id),
        None => format!("person:{}", asker.trust),
    };
    let trust = format!("trust:{}", asker.trust);
    let charge = site
        .store
        .charge_query(
            &[
                (person.as_str(), site.rules.budget),
                (trust.as_str(), site.rules.trust_budget),
            ],
            query_id,
            now,
            site.rules.window_secs,
        )
        .map_err(|e| Refusal::Failed(e.to_string()))?;
    if let Charge::Exhausted { requester, budget } = charge {
        entry.rules = vec![format!("built-in: query budget of {requester} spent")];
        let whose = if requester.starts_with("trust:") {
            format!("{} as a whole", asker.trust)
        } else {
            "this requester".to_string()
        };
        return Err(Refusal::Denied(format!(
            "{} has answered {whose} {budget} distinct queries in the last {} hours, its \
             budget; repeating one of them is still answered",
            site.trust,
            site.rules.window_secs / 3600
        )));
    }
    Ok(())
}
