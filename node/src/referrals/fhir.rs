//! An answered referral as a FHIR DiagnosticReport, for the referring trust's LIMS: the
//! specialist's opinion (conclusion and its SNOMED CT code), who gave it and where, when, and
//! the referral it answers. Valid as FHIR R5 (and R4: it uses no element the two disagree on).
//! It names no patient: the LIMS links it to the case through the referral's id, which it
//! issued the request under.

use serde_json::{Value, json};

use crate::store::referrals::{Status, StoredReferral};

/// The identifier system slidemesh names referrals under.
pub const REFERRAL_SYSTEM: &str = "https://slidemesh.nhs.example/referral";
const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

fn instant(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// The referral's opinion as a DiagnosticReport; `None` until it is answered.
pub fn diagnostic_report(stored: &StoredReferral) -> Option<Value> {
    let (opinion, _) = stored.opinion.as_ref()?;
    let r = &stored.referral;
    let answered_at = stored
        .history
        .iter()
        .rev()
        .find(|h| h.status == Status::Answered)
        .map_or(r.sent_at, |h| h.at);
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        // A referral id is 64 hex characters: exactly the longest FHIR id.
        "id": r.id.to_string(),
        "identifier": [{ "system": REFERRAL_SYSTEM, "value": r.id.to_string() }],
        "basedOn": [{
            "type": "ServiceRequest",
            "identifier": { "system": REFERRAL_SYSTEM, "value": r.id.to_string() },
        }],
        "status": if matches!(stored.status, Status::Withdrawn) { "cancelled" } else { "final" },
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
            "code": "SP",
            "display": "Surgical Pathology",
        }]}],
        "code": {
            "coding": [{
                "system": "http://loinc.org",
                "code": "11526-1",
                "display": "Pathology study",
            }],
            "text": "Second opinion",
        },
        "effectiveDateTime": instant(answered_at),
        "issued": instant(answered_at),
        "performer": [{
            "type": "Organization",
            "identifier": { "system": ODS_SYSTEM, "value": r.to.as_str() },
            "display": r.to.as_str(),
        }],
        "conclusion": opinion.text,
    });
    if let Some(author) = &opinion.author {
        report["resultsInterpreter"] = json!([{
            "type": "Practitioner",
            "display": format!("{} at {}", author.id, r.to),
        }]);
    }
    if let Some(code) = &opinion.diagnosis {
        report["conclusionCode"] = json!([{ "coding": [{
            "system": code.system,
            "code": code.code,
            "display": code.display,
        }]}]);
    }
    Some(report)
}
