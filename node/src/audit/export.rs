//! Audit entries as FHIR R4 `AuditEvent` resources in a `Bundle`, for the trust's SIEM.

use serde_json::{Value, json};

use super::{AuditEntry, Side};

/// A FHIR `Bundle` (type collection) holding one `AuditEvent` per entry.
pub fn fhir_bundle(node_trust: &str, entries: &[(u64, AuditEntry)]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": entries
            .iter()
            .map(|(seq, e)| json!({ "resource": audit_event(node_trust, *seq, e) }))
            .collect::<Vec<_>>(),
    })
}

fn audit_event(node_trust: &str, seq: u64, e: &AuditEntry) -> Value {
    let recorded = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.time),
    )
    .to_string();
    // DICOM audit event types: 110106 Export (we sent), 110107 Import (we received),
    // 110103 Instances Accessed (one of our people looked at a shared slide), 110110 Patient
    // Record (a referral's step).
    let (code, display) = match e.side {
        Side::Served => ("110106", "Export"),
        Side::Received => ("110107", "Import"),
        Side::Gateway => ("110103", "DICOM Instances Accessed"),
        // A referral's step changes the patient's record at both trusts.
        Side::ReferralStep | Side::ReferralNotice => ("110110", "Patient Record"),
    };
    let ods = |trust: &str| json!({ "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": trust });
    let (requester, source) = match e.side {
        Side::Served | Side::ReferralNotice => (e.peer.as_str(), node_trust),
        Side::Received | Side::Gateway | Side::ReferralStep => (node_trust, e.peer.as_str()),
    };
    json!({
        "resourceType": "AuditEvent",
        "id": format!("{node_trust}-{seq}"),
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": code,
            "display": display,
        },
        "subtype": [{ "system": "https://slidemesh.nhs.example/audit-action", "code": e.action }],
        "action": "R",
        "recorded": recorded,
        // 0 success; 4 minor failure (the request was refused).
        "outcome": if e.allowed { "0" } else { "4" },
        "outcomeDesc": if e.allowed {
            format!("allowed by {}", e.rules.join(", "))
        } else {
            format!("denied: {}", e.rules.join(", "))
        },
        "purposeOfEvent": [{
            "coding": [{ "system": "https://slidemesh.nhs.example/purpose", "code": e.purpose }]
        }],
        "agent": [{
            "who": { "identifier": ods(requester) },
            "altId": e.user,
            "requestor": true,
            "network": { "address": e.peer_id, "type": "5" },
        }],
        "source": { "observer": { "identifier": ods(node_trust) } },
        "entity": [{
            "what": { "identifier": { "system": "urn:slidemesh:slide", "value": e.slide.to_hex() } },
            "description": e.what,
            "detail": [
                { "type": "policy-hash", "valueString": e.policy_hash },
                { "type": "grant", "valueString": e.grant.map(|g| g.to_string()).unwrap_or_default() },
                { "type": "source", "valueString": source },
            ],
        }],
    })
}
