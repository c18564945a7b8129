//! Tables for the cohorts of approved research projects.
//!
//! At the owning trust: `projects_v1`, the projects its people approved, each for one member
//! trust until a time (what a cohort request is answered on), and `project_grants_v1`, every
//! grant it issued for a slide it released to a project (so asking again hands out the same
//! grant rather than a new one, and ending the project revokes them all). At the requesting trust: `cohorts_v1`, what each site
//! released to a project (the slide, the grant to open it, the patient's pseudonym, the
//! labels); the grants themselves are kept with every other grant, in the same transaction.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::query::Field;
use slidemesh_protocol::{GrantId, SlideId, TrustCode};

use super::federation::{StoredGrant, insert_grant};
use super::{RedbContext, Store, StoreError, decode, encode};

/// `TRUST` NUL reference -> postcard([`ProjectApproval`]).
pub(super) const PROJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("projects_v1");
/// `TRUST` NUL reference NUL slide (hex) NUL grant (hex) -> the grant's id.
pub(super) const PROJECT_GRANTS: TableDefinition<&str, &[u8; 32]> =
    TableDefinition::new("project_grants_v1");
/// reference NUL owner NUL slide (hex) -> postcard([`CohortEntry`]).
pub(super) const COHORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("cohorts_v1");

/// A research project this trust approved for one member trust: cohorts are released to
/// it until `expires_at`, at most `max_slides` slides in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectApproval {
    /// The project's ethics approval reference (e.g. "REC 26/YH/0042"); its pseudonyms are
    /// made for it.
    pub reference: String,
    pub trust: TrustCode,
    pub approved_at: u64,
    pub expires_at: u64,
    /// Most slides given to the project in all (each request's counted with those before).
    pub max_slides: u32,
    /// The fields a cohort may be selected or labelled by (a request naming another is
    /// refused): what the trust approved becoming known of each pseudonym, since a slide
    /// selected by a value is known to have it.
    pub fields: Vec<Field>,
}

/// One slide a site released to a project's cohort, as the requesting trust keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortEntry {
    pub owner: TrustCode,
    pub slide: SlideId,
    pub grant: GrantId,
    /// The patient's pseudonym in the project.
    pub patient: String,
    /// Each label field and its value (`None`: the slide has none).
    pub labels: Vec<(Field, Option<String>)>,
    pub added_at: u64,
}

fn project_key(trust: &TrustCode, reference: &str) -> String {
    format!("{trust}\0{reference}")
}

fn cohort_prefix(reference: &str, owner: &TrustCode) -> String {
    format!("{reference}\0{owner}\0")
}

/// The keys from `prefix` on that start with it.
fn prefixed(prefix: &str) -> std::ops::RangeFrom<&str> {
    prefix..
}

impl Store {
    /// Records (or replaces) an approval.
    pub fn put_project(&self, approval: &ProjectApproval) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(PROJECTS).op("open projects")?;
            table
                .insert(
                    project_key(&approval.trust, &approval.reference).as_str(),
                    encode(approval).as_slice(),
                )
                .op("insert project")?;
        }
        tx.commit().op("commit project")
    }

    /// The approval of `reference` for `trust`, if recorded.
    pub fn project(
        &self,
        trust: &TrustCode,
        reference: &str,
    ) -> Result<Option<ProjectApproval>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(PROJECTS).op("open projects")?;
        table
            .get(project_key(trust, reference).as_str())
            .op("read project")?
            .map(|v| decode("projects_v1", v.value()))
            .transpose()
    }

    /// Every approval recorded, by trust and reference.
    pub fn projects(&self) -> Result<Vec<ProjectApproval>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(PROJECTS).op("open projects")?;
        table
            .iter()
            .op("read projects")?
            .map(|row| {
                let (_, v) = row.op("read project")?;
                decode("projects_v1", v.value())
            })
            .collect()
    }

    /// Every grant this trust issued to `approval`'s project (revoked and expired ones too),
    /// with its slide.
    pub fn project_grants(
        &self,
        approval: &ProjectApproval,
    ) -> Result<Vec<(SlideId, GrantId)>, StoreError> {
        let prefix = format!("{}\0", project_key(&approval.trust, &approval.reference));
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(PROJECT_GRANTS).op("open project grants")?;
        let mut found = Vec::new();
        for row in table.range(prefixed(&prefix)).op("read project grants")? {
            let (k, v) = row.op("read project grant")?;
            let Some(rest) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            let slide = rest.split('\0').next().unwrap_or_default();
            let slide: SlideId = slide.parse().map_err(|e| StoreError::Corrupt {
                table: "project_grants_v1",
                detail: format!("slide id: {e}"),
            })?;
            found.push((slide, GrantId::from_bytes(*v.value())));
        }
        Ok(found)
    }

    /// Records the grants issued for `approval`'s project in one transaction: each with
    /// every other grant this trust issued, and as its slide's grant for the project. Only
    /// while the approval stands as it was read (`false`, nothing written, when it was
    /// ended or changed meanwhile, say by `project end` in another process).
    pub fn put_project_grants(
        &self,
        approval: &ProjectApproval,
        grants: &[StoredGrant],
    ) -> Result<bool, StoreError> {
        if grants.is_empty() {
            return Ok(true);
        }
        let prefix = project_key(&approval.trust, &approval.reference);
        let tx = self.db.begin_write().op("begin write")?;
        let current: Option<ProjectApproval> = tx
            .open_table(PROJECTS)
            .op("open projects")?
            .get(prefix.as_str())
            .op("read project")?
            .map(|v| decode("projects_v1", v.value()))
            .transpose()?;
        if current.as_ref() != Some(approval) {
            return Ok(false);
        }
        {
            let mut table = tx.open_table(PROJECT_GRANTS).op("open project grants")?;
            for stored in grants {
                insert_grant(&tx, stored)?;
                table
                    .insert(
                        format!("{prefix}\0{}\0{}", stored.grant.slide, stored.signed.id())
                            .as_str(),
                        stored.signed.id().as_bytes(),
                    )
                    .op("insert project grant")?;
            }
        }
        tx.commit().op("commit project grants")?;
        Ok(true)
    }

    /// Records what `owner` released to `reference`'s cohort, replacing what it released
    /// before, with the grants received for it, in one transaction.
    pub fn put_cohort(
        &self,
        reference: &str,
        owner: &TrustCode,
        entries: &[CohortEntry],
        grants: &[StoredGrant],
    ) -> Result<(), StoreError> {
        let prefix = cohort_prefix(reference, owner);
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(COHORTS).op("open cohorts")?;
            let stale: Vec<String> = table
                .range(prefixed(&prefix))
                .op("read cohort")?
                .map(|row| {
                    row.op("read cohort entry")
                        .map(|(k, _)| k.value().to_string())
                })
                .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(&prefix)))
                .collect::<Result<_, _>>()?;
            for key in stale {
                table.remove(key.as_str()).op("remove cohort entry")?;
            }
            for entry in entries {
                table
                    .insert(
                        format!("{prefix}{}", entry.slide).as_str(),
                        encode(entry).as_slice(),
                    )
                    .op("insert cohort entry")?;
            }
            for stored in grants {
                insert_grant(&tx, stored)?;
            }
        }
        tx.commit().op("commit cohort")
    }

    /// Every slide released to `reference`'s cohort, by site and slide.
    pub fn cohort(&self, reference: &str) -> Result<Vec<CohortEntry>, StoreError> {
        let prefix = format!("{reference}\0");
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(COHORTS).op("open cohorts")?;
        let mut found = Vec::new();
        for row in table.range(prefixed(&prefix)).op("read cohort")? {
            let (k, v) = row.op("read cohort entry")?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            found.push(decode("cohorts_v1", v.value())?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sites_part_of_a_cohort_replaces_its_earlier_part_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let entry = |owner: &str, n: u8| CohortEntry {
            owner: owner.parse().unwrap(),
            slide: SlideId::from_bytes([n; 32]),
            grant: GrantId::from_bytes([n; 32]),
            patient: format!("SMP{n}"),
            labels: vec![(Field::Grade, Some("2".into()))],
            added_at: 1,
        };
        let leeds: TrustCode = "RR8".parse().unwrap();
        let york: TrustCode = "RCB".parse().unwrap();
        store
            .put_cohort("REC 1", &leeds, &[entry("RR8", 1), entry("RR8", 2)], &[])
            .unwrap();
        store
            .put_cohort("REC 1", &york, &[entry("RCB", 3)], &[])
            .unwrap();
        // A project whose reference extends another's is another project.
        store
            .put_cohort("REC 10", &leeds, &[entry("RR8", 4)], &[])
            .unwrap();
        assert_eq!(store.cohort("REC 1").unwrap().len(), 3);
        store
            .put_cohort("REC 1", &leeds, &[entry("RR8", 5)], &[])
            .unwrap();
        let slides: Vec<u8> = store
            .cohort("REC 1")
            .unwrap()
            .iter()
            .map(|e| e.slide.as_bytes()[0])
            .collect();
        assert_eq!(slides, [3, 5]);
        assert_eq!(store.cohort("REC 10").unwrap().len(), 1);
    }
}
