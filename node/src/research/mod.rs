//! Research queries: grouped counts over the co-operative's slides, asked from any node,
//! with no hub.
//!
//! - [`facts`]: each own slide's facts as query fields (stain, site, year, age band, sex,
//!   scanner from its DICOM attributes, indexed at ingest; diagnoses, grade and specimen
//!   from the LIMS, joined on accession number when a query runs).
//! - [`answer`]: this site's answer to a query, from anyone: who may count which slide is
//!   `access`'s decision (action `query`; an opted-out patient is never counted), then
//!   [`disclosure`] control (small cells, seeded noise) and the requester's budget; one audit
//!   entry per query.
//! - [`index`]: the running node's in-memory copy of the facts, rebuilt when the store's
//!   research generation moves; [`columns`]: the facts by column, each field's values as ids
//!   into its dictionary, a query's value tests decided once per distinct value.
//! - [`fanout`]: a query asked of every member at once within a deadline, each site
//!   reported as answered, refused, failed, timed out or unreachable.
//!
//! Knows no network: `federation` carries queries between members and `api` takes them
//! from people.
//!
//! - [`snomed`]: the SNOMED CT is-a hierarchy `under` reads, from the trust's release files.
//!
//! - [`cohort`]: an approved project's cohort released by this site: the matching slides
//!   its policy allows (action `receive_cohort`), each as a research grant for the project,
//!   the patient's per-project pseudonym and labels.
//!
//! Partly built: no complementary suppression.

pub mod answer;
pub mod cohort;
pub mod columns;
pub mod disclosure;
pub mod facts;
pub mod fanout;
pub mod index;
pub mod snomed;

pub use facts::{Case, SlideFacts, facts, index_if_missing};

use slidemesh_protocol::query::Field;

/// A released group's key as JSON: each group-by field with its value (a number for
/// numeric fields, `null` where the slides had none).
pub fn key_json(
    group_by: &[Field],
    key: &[Option<String>],
) -> serde_json::Map<String, serde_json::Value> {
    group_by
        .iter()
        .zip(key)
        .map(|(field, value)| {
            let json = match value {
                None => serde_json::Value::Null,
                Some(v) if field.is_number() => v
                    .parse::<i64>()
                    .map_or_else(|_| serde_json::json!(v), |n| serde_json::json!(n)),
                Some(v) => serde_json::json!(v),
            };
            (field.name().to_string(), json)
        })
        .collect()
}

/// An audit entry about a research request (a query or a cohort), on either side: no one
/// slide is concerned, so its `slide` field names the request by its query's id (BLAKE3
/// of the canonical `text`). Not yet allowed, no rules, no policy: the caller fills them.
pub fn request_entry(
    side: crate::access::Side,
    peer: (&slidemesh_protocol::TrustCode, &str),
    user: Option<&slidemesh_protocol::UserClaim>,
    action: crate::consent::ConsentAction,
    text: &str,
    what: String,
    now: u64,
) -> crate::access::AuditEntry {
    crate::access::AuditEntry {
        time: now,
        side,
        peer: peer.0.clone(),
        peer_id: peer.1.to_string(),
        user: user.map(ToString::to_string),
        purpose: slidemesh_protocol::Purpose::Research.as_str().to_string(),
        slide: slidemesh_protocol::SlideId::from_bytes(*blake3::hash(text.as_bytes()).as_bytes()),
        action: action.as_str().to_string(),
        what,
        allowed: false,
        rules: Vec::new(),
        policy_hash: String::new(),
        grant: None,
    }
}

/// A group's key as text (numbers in decimal), as sites release it.
pub fn key_text(key: &[Option<slidemesh_protocol::query::Value>]) -> Vec<Option<String>> {
    use slidemesh_protocol::query::Value;
    key.iter()
        .map(|v| {
            v.as_ref().map(|v| match v {
                Value::Text(t) => t.clone(),
                Value::Number(n) => n.to_string(),
            })
        })
        .collect()
}

/// How this node takes part in research queries (`[research]`).
#[derive(Clone)]
pub struct ResearchSettings {
    /// How it answers anyone's query.
    pub rules: answer::SiteRules,
    /// How long its own people's queries wait for each member.
    pub deadline: std::time::Duration,
    /// How long its own people's cohort requests wait for each member.
    pub cohort_deadline: std::time::Duration,
    /// The facts queries count over, kept in memory.
    pub index: std::sync::Arc<index::FactsIndex>,
    /// Queries answered at once (each counts every own slide on a blocking thread); more
    /// wait their turn.
    pub answering: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Queries a node answers at once.
pub const ANSWERING_AT_ONCE: usize = 2;

impl ResearchSettings {
    pub fn from_config(
        config: &crate::config::ResearchSection,
        key: &slidemesh_protocol::NodeKey,
        hierarchy: snomed::Hierarchy,
    ) -> Self {
        Self {
            rules: answer::SiteRules::from_config(config, key, hierarchy),
            deadline: std::time::Duration::from_millis(config.deadline_ms),
            cohort_deadline: std::time::Duration::from_millis(config.cohort_deadline_ms),
            index: Default::default(),
            answering: std::sync::Arc::new(tokio::sync::Semaphore::new(ANSWERING_AT_ONCE)),
        }
    }
}
