//! Table `lims_v1`: what the trust's laboratory information system says of its cases, for
//! research queries: diagnosis codes, grade, specimen type, consent codes and opt-out, keyed
//! by the case's accession number (the DICOM Accession Number of its slides). Written by
//! `slidemesh annotate-lims`; a later file replaces a case's entry.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{RedbContext, Store, StoreError, decode, encode};

pub(super) const LIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("lims_v1");

/// One case as the LIMS describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimsEntry {
    /// SNOMED CT concept ids.
    pub diagnoses: Vec<String>,
    pub grade: Option<i64>,
    /// The specimen type (core biopsy, excision, ...).
    pub specimen: Option<String>,
    /// Consent codes (DUO: GRU, HMB, ...).
    pub consent: Vec<String>,
    /// The patient opted out of research: never counted for it.
    pub opted_out: bool,
}

impl Store {
    /// Stores `entries` by accession number in one transaction (replacing earlier ones).
    pub fn put_lims(&self, entries: &[(String, LimsEntry)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin LIMS write")?;
        {
            let mut table = tx.open_table(LIMS).op("open LIMS")?;
            for (accession, entry) in entries {
                table
                    .insert(accession.as_str(), encode(entry).as_slice())
                    .op("store LIMS entry")?;
            }
        }
        super::research::changed(&tx)?;
        tx.commit().op("commit LIMS entries")
    }

    /// Every case's LIMS entry, by accession number.
    pub fn lims(&self) -> Result<std::collections::HashMap<String, LimsEntry>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(LIMS).op("open LIMS")?;
        let mut out = std::collections::HashMap::new();
        for row in table.iter().op("list LIMS entries")? {
            let (key, value) = row.op("list LIMS entries")?;
            out.insert(key.value().to_string(), decode("lims_v1", value.value())?);
        }
        Ok(out)
    }
}
