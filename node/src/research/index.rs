//! The running node's in-memory copy of what queries count over: every own slide's facts
//! joined with its LIMS entry, by column ([`super::columns`]), and its consent for research
//! as an index into the distinct consents (slides alike in consent are decided once per
//! query). Rebuilt from the store
//! when the store's research generation moved (ingest, `annotate-lims`, `slidemesh consent`,
//! in this process or another), so a query reads one counter, not the tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use slidemesh_protocol::SlideId;

use super::columns::{Columns, ColumnsBuilder};
use super::disclosure::Disclosure;
use super::facts::Case;
use crate::store::consent::{SlideConsent, joined_consent};
use crate::store::{Store, StoreError};

/// One own slide: what decides whether it may be counted, and its noise.
pub struct Row {
    pub slide: SlideId,
    /// Its consent for research: an index into [`Snapshot::consents`].
    pub consent: usize,
    /// What its cells' noise is drawn from ([`Disclosure::record_key`]).
    pub record_key: u64,
}

/// Every own slide as of one research generation.
pub struct Snapshot {
    pub generation: u64,
    pub rows: Vec<Row>,
    /// Their fields, by column (row `i` is slide `rows[i]`).
    pub columns: Columns,
    /// The distinct consents for research, each once.
    pub consents: Vec<SlideConsent>,
}

impl Snapshot {
    /// Reads the store's research view (one transaction) and joins it.
    pub fn read(store: &Store, disclosure: &Disclosure) -> Result<Snapshot, StoreError> {
        let view = store.research_view()?;
        let mut consents: Vec<SlideConsent> = Vec::new();
        let mut class_of: HashMap<SlideConsent, usize> = HashMap::new();
        let mut columns = ColumnsBuilder::default();
        let rows = view
            .facts
            .into_iter()
            .map(|(slide, facts)| {
                let lims = facts
                    .accession
                    .as_ref()
                    .and_then(|a| view.lims.get(a))
                    .cloned();
                let consent = joined_consent(view.consents.get(&facts.series_uid), lims.as_ref());
                let consent = *class_of.entry(consent.clone()).or_insert_with(|| {
                    consents.push(consent);
                    consents.len() - 1
                });
                columns.push(&Case {
                    facts: &facts,
                    lims: lims.as_ref(),
                });
                Row {
                    record_key: disclosure.record_key(&slide),
                    slide,
                    consent,
                }
            })
            .collect();
        Ok(Snapshot {
            generation: view.generation,
            rows,
            columns: columns.finish(),
            consents,
        })
    }
}

/// The latest snapshot, shared by every query this process answers.
#[derive(Default)]
pub struct FactsIndex {
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl FactsIndex {
    /// The snapshot of the store's current research generation, rebuilt if it moved. One
    /// rebuild at a time: queries arriving meanwhile wait for it rather than each reading
    /// the tables.
    pub fn snapshot(
        &self,
        store: &Store,
        disclosure: &Disclosure,
    ) -> Result<Arc<Snapshot>, StoreError> {
        let generation = store.research_generation()?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        // Generations only grow: one at least as new (built by a query that read the counter
        // later) is as good.
        if let Some(snapshot) = current.as_ref()
            && snapshot.generation >= generation
        {
            return Ok(snapshot.clone());
        }
        let fresh = Arc::new(Snapshot::read(store, disclosure)?);
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::lims::LimsEntry;
    use crate::store::research::SlideFacts;

    #[test]
    fn a_snapshot_is_kept_until_the_store_changes_and_groups_consents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let facts = |series: &str, accession: &str| SlideFacts {
            series_uid: series.into(),
            accession: Some(accession.into()),
            ..Default::default()
        };
        store
            .create_research_index(&[
                (SlideId::from_bytes([1; 32]), facts("1.1", "A1")),
                (SlideId::from_bytes([2; 32]), facts("1.2", "A2")),
                (SlideId::from_bytes([3; 32]), facts("1.3", "A3")),
            ])
            .unwrap();
        let index = FactsIndex::default();
        let rules = Disclosure::with_secret(10, 2, [9; 32]);
        let first = index.snapshot(&store, &rules).unwrap();
        assert_eq!(first.rows.len(), 3);
        assert_eq!(first.consents.len(), 1, "all clinical care only");
        assert!(Arc::ptr_eq(
            &first,
            &index.snapshot(&store, &rules).unwrap()
        ));
        // Recorded consent and the LIMS's word change it.
        let gru = SlideConsent {
            codes: vec!["GRU".into()],
            opted_out: false,
            expires: None,
        };
        store.put_consent("1.1", &gru).unwrap();
        store.put_consent("1.2", &gru).unwrap();
        store
            .put_lims(&[(
                "A2".to_string(),
                LimsEntry {
                    opted_out: true,
                    ..Default::default()
                },
            )])
            .unwrap();
        let second = index.snapshot(&store, &rules).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        let consent_of = |i: usize| &second.consents[second.rows[i].consent];
        assert_eq!(consent_of(0), &gru);
        assert!(consent_of(1).opted_out, "the LIMS's opt-out counts");
        assert_eq!(consent_of(2), &SlideConsent::default());
        assert_eq!(second.consents.len(), 3);
        // The LIMS's consent codes count only where nothing is recorded: they never widen
        // what the trust recorded.
        let lims = |codes: &[&str]| LimsEntry {
            consent: codes.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        store
            .put_lims(&[
                ("A1".to_string(), lims(&["CC"])),
                ("A3".to_string(), lims(&["hmb"])),
            ])
            .unwrap();
        let third = index.snapshot(&store, &rules).unwrap();
        let consent_of = |i: usize| &third.consents[third.rows[i].consent];
        assert_eq!(consent_of(0), &gru, "recorded consent stands");
        assert_eq!(
            consent_of(2).codes,
            ["HMB"],
            "the LIMS's, where none is recorded"
        );
    }
}
