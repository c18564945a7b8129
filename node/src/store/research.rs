//! Tables for research queries. `research_facts_v1`: each own slide's facts as a query sees
//! them (filled at ingest, in the slide's own transaction, from its DICOM attributes; the
//! LIMS's word on the case is joined when a query runs, so `annotate-lims` needs no
//! re-index). `query_budget_v1`: which distinct queries each requester asked, when, so each
//! trust can bound how many it answers one requester in a window.
//!
//! The facts table is made with its rows: a data directory from before it has none until
//! [`Store::create_research_index`] fills it in one transaction (the node does so when it
//! opens), and a reader before then sees no facts rather than an error.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::{SlideId, TrustCode};

use super::{RedbContext, Store, StoreError, decode, encode};

pub(super) const FACTS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("research_facts_v1");
/// One row, `generation`: bumped in every transaction that changes what a query counts
/// (facts, LIMS entries, recorded consent), so an in-memory copy knows when it is stale.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("research_meta_v1");
/// Key: requester (`TRUST` or `TRUST/person`), a zero byte, the query id; value: when it
/// was first asked in the current window (Unix seconds).
pub(super) const BUDGET: TableDefinition<&[u8], u64> = TableDefinition::new("query_budget_v1");

/// One own slide as research queries see it, before the LIMS join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlideFacts {
    pub trust: Option<TrustCode>,
    pub stain: Option<String>,
    pub anatomic_site: Option<String>,
    pub year: Option<i64>,
    /// The decade of age at the study, as its first year (40 for 40 to 49).
    pub age_band: Option<i64>,
    pub sex: Option<String>,
    /// Manufacturer and model.
    pub scanner: Option<String>,
    /// What the LIMS entry is found by.
    pub accession: Option<String>,
    /// What the slide's recorded consent is found by.
    pub series_uid: String,
}

/// How a requester's query is charged against its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// Asked before in this window: answered again (the same answer), nothing charged.
    Repeat,
    /// A new query, charged.
    Charged,
    /// A new query with `requester`'s budget spent: not answered.
    Exhausted { requester: String, budget: u32 },
}

/// Bumps the research generation within `tx` (see [`META`]).
pub(super) fn changed(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META).op("open research meta")?;
    let now = meta
        .get("generation")
        .op("read research generation")?
        .map_or(0, |g| g.value());
    meta.insert("generation", now + 1)
        .op("bump research generation")?;
    Ok(())
}

/// Everything a query counts over, read in one transaction: the generation it is of, every
/// own slide's facts, the LIMS entries by accession number, the recorded consent by series.
pub struct ResearchView {
    pub generation: u64,
    pub facts: Vec<(SlideId, SlideFacts)>,
    pub lims: std::collections::HashMap<String, super::lims::LimsEntry>,
    pub consents: std::collections::HashMap<String, super::consent::SlideConsent>,
}

impl Store {
    /// The research generation now (0 before anything was indexed).
    pub fn research_generation(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let meta = tx.open_table(META).op("open research meta")?;
        Ok(meta
            .get("generation")
            .op("read research generation")?
            .map_or(0, |g| g.value()))
    }

    /// What a query counts over, as of one moment.
    pub fn research_view(&self) -> Result<ResearchView, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let generation = tx
            .open_table(META)
            .op("open research meta")?
            .get("generation")
            .op("read research generation")?
            .map_or(0, |g| g.value());
        let mut facts = Vec::new();
        match tx.open_table(FACTS) {
            Ok(table) => {
                facts.reserve(table.len().op("count research facts")? as usize);
                for row in table.iter().op("list research facts")? {
                    let (key, value) = row.op("list research facts")?;
                    facts.push((
                        SlideId::from_bytes(*key.value()),
                        decode("research_facts_v1", value.value())?,
                    ));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e).op("open research facts"),
        }
        let mut lims = std::collections::HashMap::new();
        for row in tx
            .open_table(super::lims::LIMS)
            .op("open LIMS")?
            .iter()
            .op("list LIMS entries")?
        {
            let (key, value) = row.op("list LIMS entries")?;
            lims.insert(key.value().to_string(), decode("lims_v1", value.value())?);
        }
        let mut consents = std::collections::HashMap::new();
        for row in tx
            .open_table(super::consent::CONSENT)
            .op("open consent")?
            .iter()
            .op("list consent")?
        {
            let (key, value) = row.op("list consent")?;
            consents.insert(
                key.value().to_string(),
                decode("consent_v1", value.value())?,
            );
        }
        Ok(ResearchView {
            generation,
            facts,
            lims,
            consents,
        })
    }

    /// Whether the facts table exists (it is made with its first rows).
    pub fn research_index_exists(&self) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let exists = tx
            .list_tables()
            .op("list tables")?
            .any(|t| t.name() == FACTS.name());
        Ok(exists)
    }

    /// Makes the facts table with `rows` (every own slide's facts), in one transaction.
    pub fn create_research_index(&self, rows: &[(SlideId, SlideFacts)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin research index write")?;
        {
            let mut table = tx.open_table(FACTS).op("open research facts")?;
            for (id, facts) in rows {
                table
                    .insert(id.as_bytes(), encode(facts).as_slice())
                    .op("write research facts")?;
            }
        }
        changed(&tx)?;
        tx.commit().op("commit research index")
    }

    /// Charges `query` to each of `budgets` (a requester's key and how many distinct
    /// queries it may ask per `window_secs`), in one transaction: a query asked before in
    /// the window under the first key is a repeat and costs nothing; otherwise it is charged
    /// to every key, or to none when any is spent. Entries older than the window are dropped
    /// as it goes.
    pub fn charge_query(
        &self,
        budgets: &[(&str, u32)],
        query: &str,
        now: u64,
        window_secs: u64,
    ) -> Result<Charge, StoreError> {
        let since = now.saturating_sub(window_secs);
        let tx = self.db.begin_write().op("begin query budget write")?;
        let charge = {
            let mut table = tx.open_table(BUDGET).op("open query budget")?;
            let mut keys = Vec::new();
            let mut outcome = None;
            let mut wrote = false;
            for (i, (requester, budget)) in budgets.iter().enumerate() {
                let mut prefix = requester.as_bytes().to_vec();
                prefix.push(0);
                let mut key = prefix.clone();
                key.extend_from_slice(query.as_bytes());
                let mut end = requester.as_bytes().to_vec();
                end.push(1);
                let mut stale = Vec::new();
                let mut used = 0u32;
                let mut repeat = false;
                for row in table
                    .range(prefix.as_slice()..end.as_slice())
                    .op("read query budget")?
                {
                    let (k, asked) = row.op("read query budget")?;
                    if asked.value() < since {
                        stale.push(k.value().to_vec());
                    } else {
                        used += 1;
                        repeat |= k.value() == key.as_slice();
                    }
                }
                wrote |= !stale.is_empty();
                for k in stale {
                    table
                        .remove(k.as_slice())
                        .op("drop old query budget entry")?;
                }
                if i == 0 && repeat {
                    outcome = Some(Charge::Repeat);
                    break;
                }
                if !repeat && used >= *budget && outcome.is_none() {
                    outcome = Some(Charge::Exhausted {
                        requester: requester.to_string(),
                        budget: *budget,
                    });
                }
                if !repeat {
                    keys.push(key);
                }
            }
            match outcome {
                Some(done) => (done, wrote),
                None => {
                    for key in keys {
                        table
                            .insert(key.as_slice(), now)
                            .op("charge query budget")?;
                    }
                    (Charge::Charged, true)
                }
            }
        };
        let (charge, wrote) = charge;
        // A repeat with nothing expired writes nothing: no commit (and no fsync) for it.
        if wrote {
            tx.commit().op("commit query budget")?;
        } else {
            tx.abort().op("end query budget read")?;
        }
        Ok(charge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_distinct_queries_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let charge = |who: &str, q: &str, now| {
            store
                .charge_query(&[(who, 2), ("trust:RX1", 4)], q, now, 100)
                .unwrap()
        };
        let spent = |who: &str, budget| Charge::Exhausted {
            requester: who.to_string(),
            budget,
        };
        assert_eq!(charge("RX1/amy", "q1", 1000), Charge::Charged);
        assert_eq!(charge("RX1/amy", "q1", 1010), Charge::Repeat);
        assert_eq!(charge("RX1/amy", "q2", 1020), Charge::Charged);
        assert_eq!(charge("RX1/amy", "q3", 1030), spent("RX1/amy", 2));
        // Another person at the same trust has their own budget (a requester's key is not a
        // prefix of another's), but the trust's is shared: two left, then none.
        assert_eq!(charge("RX1/am", "q3", 1030), Charge::Charged);
        assert_eq!(charge("RX1/bob", "q4", 1031), Charge::Charged);
        assert_eq!(charge("RX1/cat", "q5", 1032), spent("trust:RX1", 4));
        // A query another person of the trust asked is not new to the trust.
        assert_eq!(charge("RX1/cat", "q1", 1033), Charge::Charged);
        // Once the window has passed, the first queries no longer count.
        assert_eq!(charge("RX1/amy", "q6", 1101), Charge::Charged);
        assert_eq!(charge("RX1/amy", "q7", 1121), Charge::Charged);
        assert_eq!(charge("RX1/amy", "q8", 1122), spent("RX1/amy", 2));
    }

    #[test]
    fn facts_read_as_none_before_the_index_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        assert!(!store.research_index_exists().unwrap());
        assert!(store.research_view().unwrap().facts.is_empty());
        let id = SlideId::from_bytes([7; 32]);
        let facts = SlideFacts {
            stain: Some("HE".into()),
            series_uid: "1.2.3".into(),
            ..Default::default()
        };
        store.create_research_index(&[(id, facts.clone())]).unwrap();
        assert!(store.research_index_exists().unwrap());
        let view = store.research_view().unwrap();
        assert_eq!(view.facts, vec![(id, facts)]);
        assert_eq!(view.generation, 1, "made with its rows, in one change");
    }
}
