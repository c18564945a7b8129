//! The consent a slide arrives with: from the LIMS's sidecar file, else from the DICOM
//! attributes, else nothing (the store's default then applies: clinical care only).
//!
//! Sidecar: `consent.json` in the folder of the series' files, written by the trust's
//! LIMS. Either one record for every series in the folder, or records by series UID:
//!
//! ```json
//! {"codes": ["GRU", "IRB"], "opted_out": false, "expires": "2030-12-31"}
//! {"series": {"2.25.1234": {"codes": ["HMB"], "opted_out": true}}}
//! ```
//!
//! DICOM: the Consent for Clinical Trial Use Sequence (0012,0083). A distribution flag of
//! NO or WITHDRAWN is an opt-out; the distribution type maps to DUO codes (PUBLIC_RELEASE:
//! GRU; RESTRICTED_REUSE: HMB; NAMED_PROTOCOL: HMB with IRB).
//!
//! A sidecar is authoritative and replaces what was recorded; DICOM attributes only fill in
//! a series that has no record yet, so a consent edited with `slidemesh consent` stays.
//!
//! Both are read only for files the operator gives to `slidemesh ingest`
//! ([`super::BatchSource::Operator`]). Files received over the network (STOW-RS, C-STORE)
//! are never a source of consent: neither their consent sequence nor any sidecar is read,
//! so a sender cannot widen what a slide may be used for.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::store::consent::SlideConsent;

/// The sidecar's file name; ingest never scans it as DICOM.
pub const SIDECAR: &str = "consent.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(default)]
    codes: Vec<String>,
    #[serde(default)]
    opted_out: bool,
    /// A date (2030-12-31) or date-time (RFC 3339).
    expires: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Sidecar {
    BySeries {
        series: std::collections::BTreeMap<String, Record>,
    },
    One(Record),
}

/// Where the consent came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sidecar,
    Dicom,
}

/// The sidecar's record for `series_uid` in `dir`, if there is a sidecar naming it.
pub fn from_sidecar(dir: &Path, series_uid: &str) -> Result<Option<SlideConsent>, String> {
    let path = dir.join(SIDECAR);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let sidecar: Sidecar = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a consent record ({e}); expected {{\"codes\": [...], \"opted_out\": false, \"expires\": \"2030-12-31\"}}",
            path.display()
        )
    })?;
    let record = match sidecar {
        Sidecar::One(r) => r,
        Sidecar::BySeries { mut series } => match series.remove(series_uid) {
            Some(r) => r,
            None => return Ok(None),
        },
    };
    let expires = match record.expires.as_deref() {
        None | Some("never") => None,
        Some(text) => Some(parse_date(text).map_err(|e| format!("{}: {e}", path.display()))?),
    };
    Ok(Some(SlideConsent {
        codes: normalise(&record.codes).map_err(|e| format!("{}: {e}", path.display()))?,
        opted_out: record.opted_out,
        expires,
    }))
}

/// The consent stated in an instance's DICOM attributes, if any.
pub fn from_dicom(metadata_json: &str) -> Option<SlideConsent> {
    let meta: Value = serde_json::from_str(metadata_json).ok()?;
    let items = meta.get("00120083")?.get("Value")?.as_array()?;
    let text = |item: &Value, tag: &str| {
        item.get(tag)
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.get(0))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_uppercase())
    };
    let mut consent = SlideConsent {
        codes: Vec::new(),
        opted_out: false,
        expires: None,
    };
    for item in items {
        if matches!(text(item, "00120085").as_deref(), Some("NO" | "WITHDRAWN")) {
            consent.opted_out = true;
        }
        match text(item, "00120084").as_deref() {
            Some("PUBLIC_RELEASE") => consent.codes.push("GRU".into()),
            Some("RESTRICTED_REUSE") => consent.codes.push("HMB".into()),
            Some("NAMED_PROTOCOL") => consent.codes.extend(["HMB".into(), "IRB".into()]),
            _ => {}
        }
    }
    if consent.codes.is_empty() {
        consent.codes.push("CC".into());
    }
    consent.codes.sort();
    consent.codes.dedup();
    Some(consent)
}

/// GA4GH DUO codes this node knows.
pub const DUO_CODES: &[&str] = &[
    "CC", "GRU", "HMB", "DS", "POA", "NRES", "NCU", "NPU", "NMDS", "GSO", "IRB", "PS", "IS", "COL",
    "RTN", "TS", "US", "PUB", "GS", "MOR",
];

/// Upper case, known, sorted, without duplicates.
pub fn normalise(codes: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for code in codes
        .iter()
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
    {
        if !DUO_CODES.contains(&code.as_str()) {
            return Err(format!(
                "unknown DUO consent code {code:?}; known: {}",
                DUO_CODES.join(", ")
            ));
        }
        out.push(code);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A date (end of that day, UTC) or RFC 3339 date-time, as Unix seconds.
pub fn parse_date(text: &str) -> Result<u64, String> {
    let full = if text.len() == 10 {
        format!("{text}T23:59:59Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map_err(|_| format!("invalid date {text:?}: give 2030-12-31 or 2030-12-31T17:00:00Z"))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_consent_sequence_maps_to_duo_and_opt_out() {
        let json = r#"{"00120083": {"vr": "SQ", "Value": [
            {"00120084": {"vr": "CS", "Value": ["NAMED_PROTOCOL"]},
             "00120085": {"vr": "CS", "Value": ["WITHDRAWN"]}}]}}"#;
        let c = from_dicom(json).unwrap();
        assert_eq!(c.codes, vec!["HMB", "IRB"]);
        assert!(c.opted_out);
        assert!(from_dicom("{}").is_none());
    }

    #[test]
    fn sidecars_one_record_or_by_series() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(from_sidecar(dir.path(), "1.2").unwrap(), None);
        std::fs::write(
            dir.path().join(SIDECAR),
            r#"{"codes": ["gru", "IRB"], "expires": "2030-12-31"}"#,
        )
        .unwrap();
        let c = from_sidecar(dir.path(), "1.2").unwrap().unwrap();
        assert_eq!(c.codes, vec!["GRU", "IRB"]);
        assert_eq!(c.expires, Some(1_924_991_999));
        std::fs::write(
            dir.path().join(SIDECAR),
            r#"{"series": {"1.2": {"codes": ["HMB"], "opted_out": true}}}"#,
        )
        .unwrap();
        assert!(from_sidecar(dir.path(), "1.2").unwrap().unwrap().opted_out);
        assert_eq!(from_sidecar(dir.path(), "9.9").unwrap(), None);
        std::fs::write(dir.path().join(SIDECAR), r#"{"codes": ["XYZ"]}"#).unwrap();
        assert!(from_sidecar(dir.path(), "1.2").unwrap_err().contains("XYZ"));
        std::fs::write(dir.path().join(SIDECAR), r#"{"cods": []}"#).unwrap();
        assert!(from_sidecar(dir.path(), "1.2").is_err());
    }
}
