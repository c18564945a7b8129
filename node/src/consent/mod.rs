//! Consent decisions by the owning trust's written policy, evaluated with cedar-policy.
//!
//! The policy (`policy.cedar` in the data directory, from [`DEFAULT_POLICY`] at `init`) is
//! validated against [`SCHEMA`] when it is loaded, so a misspelt attribute, an unknown action
//! or a type error is refused with a message naming the rule. Decisions are default deny:
//! allowed only when a `permit` matches and no `forbid` does. Each decision names the rules
//! that decided it (their `@id`) and the BLAKE3 hash of the policy text, for the audit trail.
//!
//! This module evaluates a policy; it does not decide who may see what on its own:
//! [`crate::access::decide`] checks the grant (signed by the owner, for this requester and
//! slide, unexpired, unrevoked) and the built-in label rule, and asks the policy whether the
//! grant's purpose (or this trust's own people's role) is acceptable for the slide's
//! recorded consent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request,
    Schema, ValidationMode, Validator,
};
use serde::Serialize;
use slidemesh_protocol::{Purpose, SlideId, TrustCode, UserClaim};

use crate::store::consent::SlideConsent;

/// The vocabulary policies are written in.
pub const SCHEMA: &str = include_str!("schema.cedarschema");
/// The policy a new node starts with: readable, commented, default deny.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");

/// The purpose the policy sees (`context.purpose`) when the slide owner's own people, or
/// its node, use the owner's own slide: no grant, no purpose a grant could name.
pub const OWN_TRUST_PURPOSE: &str = "own-trust";

/// What a requester wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ConsentAction {
    View,
    FetchTiles,
    SeeLabel,
    Query,
    ReceiveCohort,
    Replicate,
    Export,
    /// Refer the slide to another trust for an opinion (the owner's own people).
    Refer,
    /// Answer a referral of the slide (the receiving trust's people, under its grant).
    Answer,
    /// Claim the slide's case from a shared reporting queue.
    Claim,
}

impl ConsentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::FetchTiles => "fetch_tiles",
            Self::SeeLabel => "see_label",
            Self::Query => "query",
            Self::ReceiveCohort => "receive_cohort",
            Self::Replicate => "replicate",
            Self::Export => "export",
            Self::Refer => "refer",
            Self::Answer => "answer",
            Self::Claim => "claim",
        }
    }
}

/// Whether a rule's JSON form names an entity of type `entity_type` by its id (an entity
/// literal: `{"type": ..., "id": ...}`; `is` tests name only the type).
fn names_an_entity(json: &serde_json::Value, entity_type: &str) -> bool {
    match json {
        serde_json::Value::Object(map) => {
            (map.get("type").and_then(|t| t.as_str()) == Some(entity_type)
                && map.contains_key("id"))
                || map.values().any(|v| names_an_entity(v, entity_type))
        }
        serde_json::Value::Array(items) => items.iter().any(|v| names_an_entity(v, entity_type)),
        _ => false,
    }
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct ConsentRequest<'a> {
    pub requester: &'a TrustCode,
    /// The person at the requesting trust, when its node names one: the principal is then
    /// `Slidemesh::User::"TRUST/id"`, a member of the requester's `Trust`, with its role.
    /// Otherwise the principal is the requesting trust itself.
    pub user: Option<&'a UserClaim>,
    pub action: ConsentAction,
    pub slide: SlideId,
    pub owner: &'a TrustCode,
    pub consent: &'a SlideConsent,
    /// The grant's purpose; `None` when the owner's own people use its own slide (the
    /// policy then sees [`OWN_TRUST_PURPOSE`]).
    pub purpose: Option<Purpose>,
    /// The grant's reference: a referral id for care purposes, an ethics approval for
    /// research.
    pub reference: Option<&'a str>,
    pub grant_expires: u64,
    pub now: u64,
}

/// The outcome, with what decided it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The `@id`s of the rules that decided: the matching permits when allowed, the
    /// matching forbids when denied by one, empty when nothing permitted (default deny).
    pub rules: Vec<String>,
    /// Evaluation errors (a rule that could not be evaluated counts as not matching).
    pub errors: Vec<String>,
    /// BLAKE3 of the policy text that decided.
    pub policy_hash: String,
}

impl Decision {
    /// A sentence for logs and denial messages.
    pub fn explain(&self) -> String {
        match (self.allowed, self.rules.is_empty()) {
            (true, _) => format!("allowed by {}", self.rules.join(", ")),
            (false, true) => "no rule of the owner's policy permits it (default deny)".into(),
            (false, false) => format!("forbidden by {}", self.rules.join(", ")),
        }
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the policy does not parse:\n{0}")]
    Parse(String),
    #[error("the policy is not taken: {0}")]
    Shape(String),
    #[error("the policy does not fit the schema:\n{0}")]
    Invalid(String),
    #[error("the built-in schema does not parse: {0}")]
    Schema(String),
}

/// The largest policy text taken (the default policy is about 6 KiB).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// The deepest nesting taken: brackets open at once, plus every `if` (which nests with
/// no closing bracket). cedar's parser and its syntax tree's drop recurse once per level
/// (about 150 bracket levels, or a few thousand `if`s, fill a 2 MiB thread stack in a debug
/// build, and a stack overflow ends the process); real policies nest a few levels.
pub const MAX_POLICY_NESTING: usize = 32;

/// The most attribute and method accesses (`.`) taken in one policy text: a chain of them
/// nests the syntax tree one level per access (60,000 overflow a 2 MiB stack when the tree
/// is dropped). The default policy has a few dozen.
pub const MAX_POLICY_ACCESSES: usize = 2_000;

/// Refuses policy text that is too large or nests too deeply to parse safely, before
/// cedar sees it. Text inside string literals and `//` comments does not count (a comment
/// ends at a line feed or a carriage return, as cedar's lexer ends it).
pub fn check_shape(text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::Shape(format!(
            "{} bytes, more than the {MAX_POLICY_BYTES} a policy may have",
            text.len()
        )));
    }
    let too_deep = || {
        Err(PolicyError::Shape(format!(
            "brackets and `if`s nested more than {MAX_POLICY_NESTING} deep"
        )))
    };
    let (mut depth, mut ifs, mut accesses) = (0usize, 0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Skip the string literal, escapes included.
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                while chars.next_if(|s| *s != '\n' && *s != '\r').is_some() {}
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth + ifs > MAX_POLICY_NESTING {
                    return too_deep();
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '.' => {
                accesses += 1;
                if accesses > MAX_POLICY_ACCESSES {
                    return Err(PolicyError::Shape(format!(
                        "more than {MAX_POLICY_ACCESSES} attribute or method accesses"
                    )));
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = String::from(c);
                while let Some(w) = chars.next_if(|w| w.is_alphanumeric() || *w == '_') {
                    word.push(w);
                }
                if word == "if" {
                    ifs += 1;
                    if depth + ifs > MAX_POLICY_NESTING {
                        return too_deep();
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A loaded, validated policy.
#[derive(Debug)]
pub struct Policy {
    schema: Schema,
    set: PolicySet,
    text: String,
    hash: String,
    /// Whether a rule names a particular slide (see [`Policy::names_slides`]).
    names_slides: bool,
}

impl Policy {
    /// Parses and validates policy text against the schema (strict mode). Text too large
    /// or too deeply nested to parse safely is refused first ([`check_shape`]): policies
    /// also arrive from peers, inside owners' consent statements.
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        check_shape(text)?;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(render(&e)))?;
        // Every rule needs an @id: decisions name rules by it in logs and the audit trail.
        let missing: Vec<String> = set
            .policies()
            .filter(|p| p.annotation("id").is_none())
            .map(|p| {
                format!(
                    "  a rule has no @id(\"...\"): {}",
                    first_line(&p.to_string())
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(PolicyError::Invalid(missing.join("\n")));
        }
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result
                .validation_errors()
                .map(|e| {
                    let rule = set
                        .policy(e.policy_id())
                        .and_then(|p| p.annotation("id"))
                        .unwrap_or("?");
                    format!("  rule {rule:?}: {}", render(e))
                })
                .collect();
            return Err(PolicyError::Invalid(errors.join("\n")));
        }
        let names_slides = set.policies().any(|p| {
            // Read from the parsed rule, not the text (cedar allows spaces and comments
            // inside `Slidemesh::Slide::"..."`); a rule that cannot be shown as JSON counts.
            p.to_json()
                .map_or(true, |json| names_an_entity(&json, "Slidemesh::Slide"))
        });
        Ok(Self {
            schema,
            set,
            hash: blake3::hash(text.as_bytes()).to_hex().to_string(),
            text: text.to_string(),
            names_slides,
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a rule names a particular slide (`Slidemesh::Slide::"..."`): otherwise a
    /// decision depends on a slide only through its owner and recorded consent, and slides
    /// alike in those are decided alike (a research query decides once per consent).
    pub fn names_slides(&self) -> bool {
        self.names_slides
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The cedar request and entities for `request`, built with cedar's typed constructors
    /// (JSON parsing of entities cost more than the decision itself; BENCHMARKS.md).
    /// Decisions skip the schema check: the policy was validated against the schema at load
    /// and requests are built here with the schema's types. Tests build with `validate` to
    /// keep this code and the schema in step.
    fn build(
        &self,
        request: &ConsentRequest<'_>,
        validate: bool,
    ) -> Result<(Request, Entities), String> {
        use cedar_policy::{Entity, RestrictedExpression as Value};
        let schema = validate.then_some(&self.schema);
        let uid = |kind: &str, id: &str| -> Result<EntityUid, String> {
            Ok(EntityUid::from_type_name_and_id(
                cedar_policy::EntityTypeName::from_str(kind).map_err(|e| e.to_string())?,
                cedar_policy::EntityId::new(id),
            ))
        };
        let trust = uid("Slidemesh::Trust", request.requester.as_str())?;
        let principal = match request.user {
            Some(user) => uid(
                "Slidemesh::User",
                &format!("{}/{}", request.requester, user.id),
            )?,
            None => trust.clone(),
        };
        let owner = uid("Slidemesh::Trust", request.owner.as_str())?;
        let action = uid("Slidemesh::Action", request.action.as_str())?;
        let resource = uid("Slidemesh::Slide", &request.slide.to_hex())?;
        let slide = Entity::new(
            resource.clone(),
            std::collections::HashMap::from([
                ("owner".to_string(), Value::new_entity_uid(owner.clone())),
                (
                    "consent_codes".to_string(),
                    Value::new_set(request.consent.codes.iter().cloned().map(Value::new_string)),
                ),
                (
                    "opted_out".to_string(),
                    Value::new_bool(request.consent.opted_out),
                ),
                (
                    "consent_expires".to_string(),
                    Value::new_long(request.consent.expires.unwrap_or(0) as i64),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("slide entity: {e}"))?;
        let mut entities = vec![slide, Entity::with_uid(owner.clone())];
        if trust != owner {
            entities.push(Entity::with_uid(trust.clone()));
        }
        if let Some(user) = request.user {
            entities.push(
                Entity::new(
                    principal.clone(),
                    std::collections::HashMap::from([(
                        "role".to_string(),
                        Value::new_string(user.role.clone()),
                    )]),
                    HashSet::from([trust.clone()]),
                )
                .map_err(|e| format!("user entity: {e}"))?,
            );
        }
        let entities =
            Entities::from_entities(entities, schema).map_err(|e| format!("entities: {e}"))?;
        let mut context = vec![
            (
                "purpose".to_string(),
                Value::new_string(
                    request
                        .purpose
                        .map_or(OWN_TRUST_PURPOSE, Purpose::as_str)
                        .to_string(),
                ),
            ),
            ("now".to_string(), Value::new_long(request.now as i64)),
            (
                "grant_expires".to_string(),
                Value::new_long(request.grant_expires as i64),
            ),
        ];
        if let Some(reference) = request.reference.filter(|r| !r.is_empty()) {
            let key = if request.purpose == Some(Purpose::Research) {
                "ethics_approval"
            } else {
                "referral"
            };
            context.push((key.to_string(), Value::new_string(reference.to_string())));
        }
        let context = Context::from_pairs(context).map_err(|e| format!("context: {e}"))?;
        let request = Request::new(principal, action, resource, context, schema)
            .map_err(|e| format!("request: {e}"))?;
        Ok((request, entities))
    }

    /// Decides one request.
    pub fn decide(&self, request: &ConsentRequest<'_>) -> Decision {
        let denied = |error: String| Decision {
            allowed: false,
            rules: Vec::new(),
            errors: vec![error],
            policy_hash: self.hash.clone(),
        };
        let built = self.build(request, false);
        let (cedar_request, entities) = match built {
            Ok(b) => b,
            Err(e) => return denied(e),
        };
        let response = Authorizer::new().is_authorized(&cedar_request, &self.set, &entities);
        let rules: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.set
                    .policy(id)
                    .and_then(|p| p.annotation("id"))
                    .unwrap_or(id.as_ref())
                    .to_string()
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Decision {
            allowed: response.decision() == CedarDecision::Allow,
            rules,
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
            policy_hash: self.hash.clone(),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// An error with its cause chain and help, on one line per part.
fn render(e: &(dyn miette::Diagnostic + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    if let Some(help) = e.help() {
        out.push_str(&format!(" (help: {help})"));
    }
    out
}

/// BLAKE3 of the policy templates earlier versions wrote at `init` (before this trust's own
/// people were decided by the policy).
const FORMER_TEMPLATES: [&str; 2] = [
    "7214e8002778ae2f533740976e21a232134c32c082d9bc8cd2e9012f77e6f7cb",
    "0a31f9345a83f0e6b8632609b7f02dd163209f54045e3b246239389483e73c95",
];

/// Replaces an unedited former template at `path` with [`DEFAULT_POLICY`] (written beside
/// it and renamed into place). Anything else, including any edit, is left alone.
fn upgrade_former_template(path: &Path) {
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let hash = blake3::hash(&text).to_hex();
    if !FORMER_TEMPLATES.contains(&hash.as_str()) {
        return;
    }
    let fresh = path.with_extension("cedar.new");
    let written =
        std::fs::write(&fresh, DEFAULT_POLICY).and_then(|()| std::fs::rename(&fresh, path));
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "unedited policy template replaced by this version's template")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot replace the former policy template")
        }
    }
}

/// The node's policy as the running server uses it: loaded from the data directory, and
/// reloaded when the file changes (checked at most once a second). An invalid new version
/// is logged and refused; the last valid one stays in force.
pub struct PolicyHandle {
    path: PathBuf,
    current: RwLock<Arc<Policy>>,
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl PolicyHandle {
    /// Loads the node's policy (the built-in default when the data directory has none). A
    /// file that is still, byte for byte, a template an earlier version wrote is replaced by
    /// today's template first: nobody chose its rules, and today's know about this trust's
    /// own people.
    pub fn load(path: PathBuf) -> Result<Self, PolicyError> {
        upgrade_former_template(&path);
        let policy = if path.exists() {
            Policy::from_file(&path)?
        } else {
            Policy::from_text(DEFAULT_POLICY)?
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path,
            current: RwLock::new(Arc::new(policy)),
            checked: Mutex::new((Instant::now(), modified)),
        })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.reload_if_changed();
        self.current
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn reload_if_changed(&self) {
        let Ok(mut checked) = self.checked.try_lock() else {
            return;
        };
        if checked.0.elapsed() < Duration::from_secs(1) {
            return;
        }
        checked.0 = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == checked.1 {
            return;
        }
        checked.1 = modified;
        match Policy::from_file(&self.path) {
            Ok(policy) => {
                tracing::info!(hash = policy.hash(), "consent policy reloaded");
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(policy);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "new consent policy refused; the previous one stays in force")
            }
        }
    }
}

#[cfg(test)]
mod tests;
