//! Per-slide consent attributes the owner's policy decides on: GA4GH DUO consent codes, the
//! NHS national data opt-out, and when consent for secondary use ends. Keyed by series UID
//! (the specimen), not slide id, so that a series that grows keeps its consent.

use redb::{ReadableDatabase, TableDefinition};

use super::{RedbContext, Store, StoreError, decode, encode};

/// Series Instance UID -> postcard([`SlideConsent`]).
pub(super) const CONSENT: TableDefinition<&str, &[u8]> = TableDefinition::new("consent_v1");

pub use slidemesh_protocol::consent::SlideConsent;

use super::lims::LimsEntry;

/// A slide's consent as this trust knows it, for every decision about it: the consent it
/// recorded; where it recorded none, the consent codes its LIMS gives the case; opted out
/// when either says so (the LIMS's opt-out counts even against recorded consent).
pub fn joined_consent(recorded: Option<&SlideConsent>, lims: Option<&LimsEntry>) -> SlideConsent {
    let mut consent = match (recorded, lims) {
        (Some(recorded), _) => recorded.clone(),
        (None, Some(case)) if !case.consent.is_empty() => {
            let mut codes: Vec<String> = case
                .consent
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .collect();
            codes.sort();
            codes.dedup();
            SlideConsent {
                codes,
                ..SlideConsent::default()
            }
        }
        _ => SlideConsent::default(),
    };
    consent.opted_out |= lims.is_some_and(|c| c.opted_out);
    consent
}

impl Store {
    /// An own slide's consent as its decisions use it ([`joined_consent`]): what was
    /// recorded for its series, joined with the LIMS entry of its accession number (from
    /// the slide's research facts), read in one transaction.
    pub fn slide_consent(
        &self,
        slide: &slidemesh_protocol::SlideId,
        series_uid: &str,
    ) -> Result<SlideConsent, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let recorded: Option<SlideConsent> = tx
            .open_table(CONSENT)
            .op("open consent")?
            .get(series_uid)
            .op("read consent")?
            .map(|v| decode("consent_v1", v.value()))
            .transpose()?;
        // The facts table is made with its rows: a store from before it has none yet.
        let accession = match tx.open_table(super::research::FACTS) {
            Ok(facts) => facts
                .get(slide.as_bytes())
                .op("read research facts")?
                .map(|v| decode::<super::research::SlideFacts>("research_facts_v1", v.value()))
                .transpose()?
                .and_then(|f| f.accession),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e).op("open research facts"),
        };
        let lims: Option<LimsEntry> = match accession {
            Some(accession) => tx
                .open_table(super::lims::LIMS)
                .op("open LIMS")?
                .get(accession.as_str())
                .op("read LIMS entry")?
                .map(|v| decode("lims_v1", v.value()))
                .transpose()?,
            None => None,
        };
        Ok(joined_consent(recorded.as_ref(), lims.as_ref()))
    }

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
