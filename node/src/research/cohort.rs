//! An approved project's cohort, released by this site from its own slides. The site's own
//! people recorded the project as approved for the requesting trust (`slidemesh project
//! approve`); each slide matching the query's conditions is decided by [`access::decide`]
//! (action `receive_cohort`, basis `Project`: purpose research, the recorded approval as
//! the ethics approval; an opted-out patient never goes), and each one allowed is released
//! as a research grant for the project (the same grant when asked again), the patient's
//! per-project pseudonym and the query's group-by fields as labels. Opening a slide then
//! goes the way of every research grant: its manifest arrives de-identified for the project
//! and each tile is decided again under the grant. One audit entry says what was asked and
//! how many slides went.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use slidemesh_protocol::query::{CohortMember, Field, MAX_COHORT, Query};
use slidemesh_protocol::{
    Action, Grant, NodeKey, NodePublicKey, Purpose, SignedGrant, SlideId, TrustCode,
};

use super::answer::{self, Asker, Site, decide_rows};
use crate::access::{self, AuditEntry, Basis, Refusal, Side};
use crate::consent::ConsentAction;
use crate::deidentify::{Pseudonyms, patient_pseudonym};
use crate::store::cohorts::{CohortEntry, ProjectApproval};
use crate::store::federation::StoredGrant;

/// The cohort as released, and the audit entry to record for it (whatever the answer).
pub struct Released {
    pub outcome: Result<Vec<CohortMember>, Refusal>,
    pub entry: AuditEntry,
}

/// Releases `project`'s cohort of the slides matching `query` (canonical text `text`) to
/// `asker`, issuing the grants it needs with `key`.
pub fn release(
    site: &Site<'_>,
    key: &NodeKey,
    asker: &Asker<'_>,
    project: &str,
    query: &Query,
    text: &str,
    now: u64,
) -> Released {
    let mut entry = super::request_entry(
        Side::Served,
        (asker.trust, asker.peer_id),
        asker.user,
        ConsentAction::ReceiveCohort,
        text,
        format!("cohort for project {project}: {text}"),
        now,
    );
    entry.policy_hash = site.policy.hash().to_string();
    let outcome = select_and_grant(site, key, asker, project, query, now, &mut entry);
    match &outcome {
        Ok(members) => {
            entry.allowed = true;
            entry.what = format!("{}: {} slides released", entry.what, members.len());
        }
        Err(refusal) => entry.what = format!("{}: not released: {refusal}", entry.what),
    }
    Released { outcome, entry }
}

/// One release at a time: each reads the grants the project holds, checks the project's
/// limit and issues the rest, which two at once could each do past the limit (or issue two
/// grants for one slide). Releases are rare; the wait is short.
static RELEASING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn select_and_grant(
    site: &Site<'_>,
    key: &NodeKey,
    asker: &Asker<'_>,
    project: &str,
    query: &Query,
    now: u64,
    entry: &mut AuditEntry,
) -> Result<Vec<CohortMember>, Refusal> {
    let failed = |what: &str, e: crate::store::StoreError| Refusal::Failed(format!("{what}: {e}"));
    let refused = |entry: &mut AuditEntry, rule: String, reason: String| {
        entry.rules = vec![format!("built-in: {rule}")];
        Refusal::Denied(reason)
    };
    let approval = site
        .store
        .project(asker.trust, project)
        .map_err(|e| failed("reading the project's approval", e))?;
    let Some(approval) = approval else {
        return Err(refused(
            entry,
            "no approval of the project for the requester".into(),
            format!(
                "{} has no approval of project {project} for {} in force",
                site.trust, asker.trust
            ),
        ));
    };
    if let Err(reason) = access::project_in_force(&approval.reference, approval.expires_at, now) {
        return Err(refused(
            entry,
            reason.clone(),
            format!("{}: {reason}", site.trust),
        ));
    }
    // Selecting by a value says each slide selected has it, as a label would.
    let named = query.fields();
    if let Some(field) = named.iter().find(|f| !approval.fields.contains(f)) {
        let allowed: Vec<&str> = approval.fields.iter().map(|f| f.name()).collect();
        return Err(refused(
            entry,
            format!("field {field} not approved"),
            format!(
                "{}'s approval of project {project} allows selecting and labelling by {} only, \
                 not {field}",
                site.trust,
                allowed.join(", ")
            ),
        ));
    }
    let _one_at_a_time = RELEASING.lock().unwrap_or_else(|p| p.into_inner());
    // A cohort request is charged like a query: its answer says how many slides match.
    let request_id = blake3::hash(format!("cohort {project}\0{query}").as_bytes());
    answer::charge(site, asker, &request_id.to_hex(), now, entry)?;
    let snapshot = site
        .index
        .snapshot(site.store, &site.rules.disclosure)
        .map_err(|e| failed("reading the research index", e))?;
    let decided = decide_rows(
        site,
        asker,
        &snapshot,
        &|| Basis::Project {
            reference: &approval.reference,
            expires_at: approval.expires_at,
        },
        ConsentAction::ReceiveCohort,
        now,
    );
    entry.rules = decided.rules.iter().cloned().collect();
    if let Some(reason) = &decided.refusal {
        // Which slide was refused, and why, is for this site's log only.
        entry.rules.push(format!("first slide left out: {reason}"));
    }
    // A slide with several values of a field (diagnoses) is in several groups: one member,
    // its labels each field's values joined.
    let selected = snapshot.columns.tally(
        query,
        &|code: &str, ancestor: &str| site.rules.hierarchy.is_a(code, ancestor),
        |row| decided.allowed[row],
        |rows: &mut Vec<usize>, row| rows.push(row),
    );
    let mut labels_of: BTreeMap<usize, Vec<BTreeSet<String>>> = BTreeMap::new();
    for (key, rows) in selected {
        for row in rows {
            let labels = labels_of
                .entry(row)
                .or_insert_with(|| vec![BTreeSet::new(); key.len()]);
            for (values, value) in labels.iter_mut().zip(super::key_text(&key)) {
                values.extend(value);
            }
        }
    }
    // Records without images (the demo's synthetic ones) are counted by queries, never
    // released.
    let mut held = Vec::new();
    for (row, labels) in labels_of {
        let slide = snapshot.rows[row].slide;
        if let Some(record) = site
            .store
            .slide(&slide)
            .map_err(|e| failed("reading a slide", e))?
        {
            held.push((slide, record, labels));
        }
    }
    // The approval's limit is on the project, not the request: slides given before count.
    let issued = site
        .store
        .project_grants(&approval)
        .map_err(|e| failed("reading the project's grants", e))?;
    let mut reusable: HashMap<SlideId, StoredGrant> = HashMap::new();
    for (slide, id) in &issued {
        let Some(stored) = site
            .store
            .grant(id)
            .map_err(|e| failed("reading a project grant", e))?
        else {
            continue;
        };
        let revocations = site
            .store
            .revocations(id)
            .map_err(|e| failed("reading a project grant's revocations", e))?;
        let revoked = site.roster.is_none_or(|roster| {
            access::grant::revoked_by_issuer(id, &stored.grant, &revocations, roster)
        });
        if !revoked && stored.grant.expires_at == approval.expires_at {
            reusable.insert(*slide, stored);
        }
    }
    let given: BTreeSet<SlideId> = reusable
        .keys()
        .copied()
        .chain(held.iter().map(|(slide, _, _)| *slide))
        .collect();
    let limit = (approval.max_slides as usize).min(MAX_COHORT);
    if given.len() > limit {
        return Err(refused(
            entry,
            format!("more than {limit} slides for the project"),
            format!(
                "the cohort would take project {project} past the {limit} slides its approval \
                 at {} allows: narrow the query",
                site.trust
            ),
        ));
    }
    let pseudonyms = Pseudonyms::for_project(key, &approval.reference);
    let mut members = Vec::with_capacity(held.len());
    let mut new_grants = Vec::new();
    for (slide, record, labels) in held {
        let manifest = record
            .signed
            .verify()
            .map_err(|e| Refusal::Failed(format!("slide {slide}'s manifest: {e}")))?;
        // A slide with no patient identity has none in its view either: a pseudonym from
        // the slide stands in, so every member has one.
        let patient = patient_pseudonym(&manifest, &pseudonyms)
            .map_err(|e| Refusal::Failed(format!("slide {slide}'s metadata: {e}")))?
            .unwrap_or_else(|| pseudonyms.text(&slide.to_string()));
        let grant = match reusable.get(&slide) {
            Some(stored) => stored.signed.clone(),
            None => {
                let stored = issue(site.trust, key, &approval, slide, now)?;
                let signed = stored.signed.clone();
                new_grants.push(stored);
                signed
            }
        };
        members.push(CohortMember {
            grant,
            patient,
            labels: labels.into_iter().map(joined_label).collect(),
        });
    }
    let kept = site
        .store
        .put_project_grants(&approval, &new_grants)
        .map_err(|e| failed("keeping the project's grants", e))?;
    if !kept {
        return Err(Refusal::Failed(format!(
            "the approval of project {project} changed while the cohort was made: ask again"
        )));
    }
    Ok(members)
}

/// A field's values on one slide as one label: joined by "|", as many as fit in a value
/// the requester accepts (`MAX_VALUE` bytes); none: `None`.
fn joined_label(values: BTreeSet<String>) -> Option<String> {
    let mut label = String::new();
    for value in values {
        let extra = if label.is_empty() { 0 } else { 1 } + value.len();
        if label.len() + extra > slidemesh_protocol::query::MAX_VALUE {
            break;
        }
        if !label.is_empty() {
            label.push('|');
        }
        label.push_str(&value);
    }
    (!label.is_empty()).then_some(label)
}

/// A research grant of `slide` to the approval's trust, for its project, until it ends.
fn issue(
    owner: &TrustCode,
    key: &NodeKey,
    approval: &ProjectApproval,
    slide: SlideId,
    now: u64,
) -> Result<StoredGrant, Refusal> {
    let grant = Grant {
        slide,
        owner: owner.clone(),
        grantee: approval.trust.clone(),
        action: Action::View,
        purpose: Purpose::Research,
        reference: Some(approval.reference.clone()),
        issued_at: now,
        expires_at: approval.expires_at,
    };
    let signed = SignedGrant::sign(&grant, key)
        .map_err(|e| Refusal::Failed(format!("cannot sign a grant of slide {slide}: {e}")))?;
    Ok(StoredGrant {
        signed,
        grant,
        issued_here: true,
        stored_at: now,
    })
}

/// Checks a project reference a requester names (it becomes grants' references, the
/// pseudonyms' key and audit text): an ethics approval reference, without surrounding
/// spaces (the owner's approval is recorded trimmed).
pub fn check_project(project: &str) -> Result<(), String> {
    super::answer::check_ethics(Some(project))?;
    if project.trim() != project {
        return Err("a project reference has no surrounding spaces".into());
    }
    Ok(())
}

/// What the requesting node asked one site for, to check its release against.
pub struct Release<'a> {
    pub site: &'a TrustCode,
    /// The site's roster key: every grant must be signed by it.
    pub site_key: &'a NodePublicKey,
    pub requester: &'a TrustCode,
    pub project: &'a str,
    /// The query's group-by fields: each slide's labels, in order.
    pub labels: &'a [Field],
}

/// A site's release as the requesting node keeps it.
pub struct Checked {
    pub entries: Vec<CohortEntry>,
    pub grants: Vec<StoredGrant>,
}

/// Checks what a site released against what was asked: at most [`MAX_COHORT`] slides, each
/// grant verified, signed by the site's roster key, the site's own, to the requester, for
/// research on the project and unexpired; labels that fit; a pseudonym of letters and
/// digits (it names a folder in datasets). A release with any slide amiss is refused whole.
pub fn check_released(
    asked: &Release<'_>,
    members: Vec<CohortMember>,
    now: u64,
) -> Result<Checked, String> {
    let site = asked.site;
    if members.len() > MAX_COHORT {
        return Err(format!("{site} released more than {MAX_COHORT} slides"));
    }
    let mut entries = Vec::with_capacity(members.len());
    let mut grants = Vec::with_capacity(members.len());
    for member in members {
        let grant = member
            .grant
            .verify()
            .map_err(|e| format!("{site} released a grant that does not verify: {e}"))?;
        let fits = member.grant.signer == *asked.site_key
            && grant.owner == *site
            && grant.grantee == *asked.requester
            && grant.action == Action::View
            && grant.purpose == Purpose::Research
            && grant.reference.as_deref() == Some(asked.project)
            && grant.expires_at > now;
        if !fits {
            return Err(format!(
                "{site} released grant {} that is not its research grant to {} for project {}",
                member.grant.id(),
                asked.requester,
                asked.project
            ));
        }
        let pseudonym_ok = !member.patient.is_empty()
            && member.patient.len() <= 64
            && member.patient.chars().all(|c| c.is_ascii_alphanumeric());
        let labels_ok = member.labels.len() == asked.labels.len()
            && member
                .labels
                .iter()
                .flatten()
                .all(|l| l.len() <= slidemesh_protocol::query::MAX_VALUE);
        if !pseudonym_ok || !labels_ok {
            return Err(format!(
                "{site} released slide {} with a malformed pseudonym or labels",
                grant.slide
            ));
        }
        entries.push(CohortEntry {
            owner: site.clone(),
            slide: grant.slide,
            grant: member.grant.id(),
            patient: member.patient,
            labels: asked.labels.iter().copied().zip(member.labels).collect(),
            added_at: now,
        });
        grants.push(StoredGrant {
            signed: member.grant,
            grant,
            issued_here: false,
            stored_at: now,
        });
    }
    Ok(Checked { entries, grants })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(code: &str) -> TrustCode {
        code.parse().unwrap()
    }

    fn member(key: &NodeKey, edit: impl FnOnce(&mut Grant)) -> CohortMember {
        let mut grant = Grant {
            slide: SlideId::from_bytes([7; 32]),
            owner: trust("RR8"),
            grantee: trust("RAE"),
            action: Action::View,
            purpose: Purpose::Research,
            reference: Some("REC 1".into()),
            issued_at: 100,
            expires_at: 10_000,
        };
        edit(&mut grant);
        CohortMember {
            grant: SignedGrant::sign(&grant, key).unwrap(),
            patient: "SMP0123456789ABC".into(),
            labels: vec![Some("2".into())],
        }
    }

    #[test]
    fn a_fields_values_are_one_label_that_fits_what_requesters_accept() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(joined_label(set(&[])), None);
        assert_eq!(
            joined_label(set(&["413448000", "399935008"])).as_deref(),
            Some("399935008|413448000")
        );
        // Forty codes do not fit 256 bytes: as many whole ones as do.
        let many: Vec<String> = (0..40).map(|i| format!("41344800{i:02}")).collect();
        let label = joined_label(many.iter().cloned().collect()).unwrap();
        assert!(
            label.len() <= slidemesh_protocol::query::MAX_VALUE,
            "{}",
            label.len()
        );
        assert!(
            label
                .split('|')
                .all(|code| many.contains(&code.to_string()))
        );
    }

    #[test]
    fn a_release_is_kept_only_when_every_slide_is_what_was_asked_for() {
        let key = NodeKey::generate();
        let public = key.public();
        let (site, requester) = (trust("RR8"), trust("RAE"));
        let asked = Release {
            site: &site,
            site_key: &public,
            requester: &requester,
            project: "REC 1",
            labels: &[Field::Grade],
        };
        let kept = check_released(&asked, vec![member(&key, |_| {})], 200).unwrap();
        assert_eq!(kept.entries[0].labels, [(Field::Grade, Some("2".into()))]);
        assert!(!kept.grants[0].issued_here);

        let refused = |members: Vec<CohortMember>| check_released(&asked, members, 200).is_err();
        let other = NodeKey::generate();
        assert!(
            refused(vec![member(&other, |_| {})]),
            "signed by another key"
        );
        assert!(refused(vec![member(&key, |g| g.grantee = trust("RCF"))]));
        assert!(refused(vec![member(&key, |g| g.owner = trust("RCF"))]));
        assert!(refused(vec![
            member(&key, |g| g.purpose = Purpose::SecondOpinion)
        ]));
        assert!(refused(vec![
            member(&key, |g| g.reference = Some("REC 2".into()))
        ]));
        assert!(refused(vec![member(&key, |g| g.reference = None)]));
        assert!(
            refused(vec![member(&key, |g| g.expires_at = 150)]),
            "expired"
        );
        for patient in ["", "../etc", "SMP 1", &"A".repeat(65)] {
            let mut bad = member(&key, |_| {});
            bad.patient = patient.to_string();
            assert!(refused(vec![bad]), "pseudonym {patient:?}");
        }
        let mut unlabelled = member(&key, |_| {});
        unlabelled.labels.clear();
        assert!(refused(vec![unlabelled]));
        // One bad slide refuses the whole release.
        assert!(refused(vec![member(&key, |_| {}), member(&other, |_| {})]));
    }
}
