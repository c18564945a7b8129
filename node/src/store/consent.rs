//! Per-slide consent attributes the owner's policy decides on: GA4GH DUO consent codes, the
//! NHS national data opt-out, and when consent for secondary use ends. Keyed by series UID
//! (the specimen), not slide id, so that a series that grows keeps its consent.

use redb::{ReadableDatabase, TableDefinition};

use super::{RedbContext, Store, StoreError, decode, encode};

/// Series Instance UID -> postcard([`SlideConsent`]).
pub(super) const CONSENT: TableDefinition<&str, &[u8]> = TableDefinition::new("consent_v1");

pub use slidemesh_protocol::consent::SlideConsent;

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
        super::research::changed(&tx)?;
        tx.commit().op("commit consent")
    }
}
