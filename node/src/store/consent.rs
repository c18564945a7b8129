//! Per-slide consent attributes the owner's policy decides on: GA4GH DUO consent codes, the
//! NHS national data opt-out, and when consent for secondary use ends. Keyed by series UID
//! (the specimen), not slide id, so that a series that grows keeps its consent.

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{RedbContext, Store, StoreError, decode, encode};

/// Series Instance UID -> postcard([`SlideConsent`]).
pub(super) const CONSENT: TableDefinition<&str, &[u8]> = TableDefinition::new("consent_v1");

/// What the patient agreed to for this specimen's slides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlideConsent {
    /// GA4GH DUO codes (e.g. `GRU`, `HMB`, `DS`, `NCU`, `IRB`, `CC`), upper case, sorted.
    pub codes: Vec<String>,
    /// The patient registered a national data opt-out: no research or planning use.
    pub opted_out: bool,
    /// Unix seconds after which consent for secondary use has ended; `None`: no end.
    pub expires: Option<u64>,
}

impl Default for SlideConsent {
    /// Nothing recorded: clinical care only (`CC`), which the default policy allows for
    /// care purposes and nothing else.
    fn default() -> Self {
        Self {
            codes: vec!["CC".into()],
            opted_out: false,
            expires: None,
        }
    }
}

impl Store {
    /// The recorded consent of a series, or the default (clinical care only).
    pub fn consent(&self, series_uid: &str) -> Result<SlideConsent, StoreError> {
        Ok(self.consent_recorded(series_uid)?.unwrap_or_default())
    }

    /// The recorded consent of a series, if any was recorded.
    pub fn consent_recorded(&self, series_uid: &str) -> Result<Option<SlideConsent>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(CONSENT).op("open consent")?;
        match table.get(series_uid).op("read consent")? {
            Some(value) => decode("consent_v1", value.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Records a series' consent, replacing what was there.
    pub fn put_consent(&self, series_uid: &str, consent: &SlideConsent) -> Result<(), StoreError> {
        let tx = self.db.begin_write().op("begin write")?;
        {
            let mut table = tx.open_table(CONSENT).op("open consent")?;
            table
                .insert(series_uid, encode(consent).as_slice())
                .op("write consent")?;
        }
        tx.commit().op("commit consent")
    }
}
