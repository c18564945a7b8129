//! Research queries across sites: a grouped count over slide records, in a text form people
//! type (`slidemesh query "..."`) and a JSON form programs send, the same [`Query`] either
//! way. It lives here because every answering node must read a query the same way: a count
//! means the same thing at every site.
//!
//! ```text
//! count where stain = "H&E" and anatomic_site = breast and diagnosis under 413448000
//!   and year between 2022 and 2024 by trust, grade
//! ```
//!
//! Conditions: `field = v`, `!=`, `<`, `<=`, `>`, `>=`, `field in (v, v, ...)`,
//! `field between a and b` (inclusive), `field under CODE` (the code or any concept below it
//! in the SNOMED CT hierarchy the answering node knows), joined by `and`, `or`, `not` and
//! parentheses (`and` binds tighter than `or`). Values are numbers, bare words or
//! double-quoted strings. A parse error names the byte offset of the offending token
//! ([`QueryError::render`] draws a caret under it).
//!
//! A query travels between members as its canonical text ([`Query::canonical`], parsed
//! again by the answering node under the same limits; its BLAKE3 is the query's id), and a
//! site answers with its [`ReleasedCounts`] (after its own disclosure control, in
//! `slidemesh-node`'s `research`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest query text, in bytes.
pub const MAX_QUERY_TEXT: usize = 4 << 10;
/// Most nodes (comparisons, sets, ranges, hierarchy tests, and, or, not) in one query.
pub const MAX_CONDITIONS: usize = 64;
/// Deepest nesting of `not`, `and`, `or` and parentheses.
pub const MAX_DEPTH: usize = 16;
/// Most values in one `in (...)`.
pub const MAX_SET: usize = 256;
/// Most fields to group by.
pub const MAX_GROUP_BY: usize = 4;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 256;

/// What a slide record says, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The trust holding the slide (its ODS code).
    Trust,
    Stain,
    AnatomicSite,
    /// The specimen type (core biopsy, excision, ...).
    Specimen,
    /// A diagnosis code (SNOMED CT) from the LIMS.
    Diagnosis,
    Grade,
    /// The study's year.
    Year,
    /// The decade of age at the study, as its first year (40 for 40 to 49).
    AgeBand,
    Sex,
    Scanner,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::Trust,
        Field::Stain,
        Field::AnatomicSite,
        Field::Specimen,
        Field::Diagnosis,
        Field::Grade,
        Field::Year,
        Field::AgeBand,
        Field::Sex,
        Field::Scanner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Trust => "trust",
            Field::Stain => "stain",
            Field::AnatomicSite => "anatomic_site",
            Field::Specimen => "specimen",
            Field::Diagnosis => "diagnosis",
            Field::Grade => "grade",
            Field::Year => "year",
            Field::AgeBand => "age_band",
            Field::Sex => "sex",
            Field::Scanner => "scanner",
        }
    }

    /// Whether the field's values are numbers (year, age band, grade).
    pub fn is_number(self) -> bool {
        matches!(self, Field::Year | Field::AgeBand | Field::Grade)
    }

    /// The field of a name, as the query language spells it (any case).
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value a record holds or a condition names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Number(i64),
    Text(String),
}

impl Value {
    /// Text compares without regard to ASCII case (`he` matches `HE`); numbers as numbers,
    /// and a text that is a number (a code such as 399935008) as that number; other text and
    /// a number never match.
    fn cmp_with(&self, other: &Value) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => Some(a.cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(
                a.bytes()
                    .map(|c| c.to_ascii_lowercase())
                    .cmp(b.bytes().map(|c| c.to_ascii_lowercase())),
            ),
            (Value::Number(a), Value::Text(b)) => b.parse::<i64>().ok().map(|b| a.cmp(&b)),
            (Value::Text(a), Value::Number(b)) => a.parse::<i64>().ok().map(|a| a.cmp(b)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A filter over records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Compare {
        field: Field,
        op: Op,
        value: Value,
    },
    In {
        field: Field,
        values: Vec<Value>,
    },
    Between {
        field: Field,
        low: Value,
        high: Value,
    },
    /// The field's code is `code` or a concept below it.
    Under {
        field: Field,
        code: String,
    },
    Not(Box<Condition>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
}

/// A grouped count: how many records match `filter`, per combination of `group_by` values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub filter: Option<Condition>,
    #[serde(default)]
    pub group_by: Vec<Field>,
}

/// Why a query is not one: where (byte offset and length in the text; 0 for the JSON form)
/// and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {at}: {message}")]
pub struct QueryError {
    pub at: usize,
    pub len: usize,
    pub message: String,
}

impl QueryError {
    /// The query text with a caret line under the offending token, and the message.
    pub fn render(&self, text: &str) -> String {
        // Offsets from another text (or the length limit) may fall inside a character.
        let mut at = self.at.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let start = text[..at].chars().count();
        let width = text
            .get(at..(at + self.len).min(text.len()))
            .map_or(1, |t| t.chars().count().max(1));
        format!(
            "{text}\n{}{}\n{}",
            " ".repeat(start),
            "^".repeat(width),
            self.message
        )
    }
}

/// What a record gives the evaluator: the values it holds for a field (none, one, or
/// several, as a slide may have several diagnosis codes).
pub trait Record {
    /// The record's values of `field` (borrowed where the record keeps them ready: a query
    /// reads every record's fields, so allocating here dominates a count).
    fn values(&self, field: Field) -> std::borrow::Cow<'_, [Value]>;
}

/// Answers whether concept `code` is `ancestor` or below it (the answering node's SNOMED CT
/// hierarchy).
pub type IsA<'a> = &'a dyn Fn(&str, &str) -> bool;

impl Condition {
    /// Whether `record` matches. A field with several values matches when any does (`!=`
    /// and `not` are the negation of that).
    pub fn matches(&self, record: &dyn Record, is_a: IsA<'_>) -> bool {
        let any =
            |field: Field, test: &dyn Fn(&Value) -> bool| record.values(field).iter().any(test);
        match self {
            Condition::Compare { field, op, value } => {
                use std::cmp::Ordering::*;
                if *op == Op::Ne {
                    return !any(*field, &|v| v.cmp_with(value) == Some(Equal));
                }
                any(*field, &|v| match (op, v.cmp_with(value)) {
                    (_, None) => false,
                    (Op::Eq, Some(o)) => o == Equal,
                    (Op::Lt, Some(o)) => o == Less,
                    (Op::Le, Some(o)) => o != Greater,
                    (Op::Gt, Some(o)) => o == Greater,
                    (Op::Ge, Some(o)) => o != Less,
                    (Op::Ne, Some(_)) => unreachable!("handled above"),
                })
            }
            Condition::In { field, values } => any(*field, &|v| {
                values
                    .iter()
                    .any(|w| v.cmp_with(w) == Some(std::cmp::Ordering::Equal))
            }),
            Condition::Between { field, low, high } => any(*field, &|v| {
                v.cmp_with(low).is_some_and(|o| o.is_ge())
                    && v.cmp_with(high).is_some_and(|o| o.is_le())
            }),
            Condition::Under { field, code } => any(*field, &|v| match v {
                Value::Text(t) => is_a(t, code),
                Value::Number(n) => is_a(&n.to_string(), code),
            }),
            Condition::Not(inner) => !inner.matches(record, is_a),
            Condition::And(all) => all.iter().all(|c| c.matches(record, is_a)),
            Condition::Or(any) => any.iter().any(|c| c.matches(record, is_a)),
        }
    }

    fn size(&self, depth: usize) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        // Values reach audit logs and screens: no control characters there.
        let bad_text = |t: &str| t.len() > MAX_VALUE || t.chars().any(char::is_control);
        let bad = |v: &Value| matches!(v, Value::Text(t) if bad_text(t));
        let refused = match self {
            Condition::Compare { value, .. } => bad(value),
            Condition::In { values, .. } => values.iter().any(bad),
            Condition::Between { low, high, .. } => bad(low) || bad(high),
            Condition::Under { code, .. } => bad_text(code),
            _ => false,
        };
        if refused {
            return Err(format!(
                "a value is longer than {MAX_VALUE} bytes or holds a control character"
            ));
        }
        Ok(match self {
            Condition::In { values, .. } => {
                if values.is_empty() || values.len() > MAX_SET {
                    return Err(format!("a set holds 1 to {MAX_SET} values"));
                }
                1
            }
            Condition::Compare { .. } | Condition::Between { .. } | Condition::Under { .. } => 1,
            Condition::Not(inner) => 1 + inner.size(depth + 1)?,
            Condition::And(all) | Condition::Or(all) => {
                if all.is_empty() {
                    return Err("`and` and `or` join one or more conditions".into());
                }
                let mut n = 1;
                for c in all {
                    n += c.size(depth + 1)?;
                }
                n
            }
        })
    }
}

impl Query {
    /// Checks what an answering node must not trust blindly (the JSON form skips the
    /// parser): sizes and nesting.
    pub fn validate(&self) -> Result<(), QueryError> {
        let fail = |message: String| QueryError {
            at: 0,
            len: 0,
            message,
        };
        if self.group_by.len() > MAX_GROUP_BY {
            return Err(fail(format!("group by at most {MAX_GROUP_BY} fields")));
        }
        if let Some(filter) = &self.filter {
            let n = filter.size(0).map_err(fail)?;
            if n > MAX_CONDITIONS {
                return Err(fail(format!("{n} conditions; at most {MAX_CONDITIONS}")));
            }
        }
        Ok(())
    }

    /// The fields the query names, in its filter or its grouping.
    pub fn fields(&self) -> std::collections::BTreeSet<Field> {
        fn walk(c: &Condition, out: &mut std::collections::BTreeSet<Field>) {
            match c {
                Condition::Compare { field, .. }
                | Condition::In { field, .. }
                | Condition::Between { field, .. }
                | Condition::Under { field, .. } => {
                    out.insert(*field);
                }
                Condition::Not(inner) => walk(inner, out),
                Condition::And(all) | Condition::Or(all) => all.iter().for_each(|c| walk(c, out)),
            }
        }
        let mut out: std::collections::BTreeSet<Field> = self.group_by.iter().copied().collect();
        if let Some(f) = &self.filter {
            walk(f, &mut out);
        }
        out
    }

    /// Counts `records` matching the filter, per combination of the group-by fields' values
    /// (a record with several values for a group-by field counts once under each; one with
    /// none, under `None`; text grouped without regard to case, shown in capitals). Without
    /// grouping there is always one count, 0 included.
    pub fn count<'r, R: Record + 'r>(
        &self,
        records: impl IntoIterator<Item = &'r R>,
        is_a: IsA<'_>,
    ) -> BTreeMap<Vec<Option<Value>>, u64> {
        self.tally(records, is_a, |n: &mut u64, _| *n += 1)
    }

    /// Folds `records` matching the filter into one value per group (grouped as
    /// [`Query::count`] groups them), with `add`; without grouping there is always one.
    pub fn tally<'r, R: Record + 'r, A: Default>(
        &self,
        records: impl IntoIterator<Item = &'r R>,
        is_a: IsA<'_>,
        mut add: impl FnMut(&mut A, &'r R),
    ) -> BTreeMap<Vec<Option<Value>>, A> {
        let mut out = BTreeMap::new();
        if self.group_by.is_empty() {
            out.insert(Vec::new(), A::default());
        }
        for record in records {
            if self
                .filter
                .as_ref()
                .is_some_and(|f| !f.matches(record, is_a))
            {
                continue;
            }
            let mut keys: Vec<Vec<Option<Value>>> = vec![Vec::new()];
            for field in &self.group_by {
                let values = record.values(*field).into_owned();
                let choices: Vec<Option<Value>> = if values.is_empty() {
                    vec![None]
                } else {
                    // Grouped as matched: text without regard to ASCII case.
                    let mut v: Vec<Option<Value>> = values
                        .into_iter()
                        .map(|v| {
                            Some(match v {
                                Value::Text(t) => Value::Text(t.to_ascii_uppercase()),
                                n => n,
                            })
                        })
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                };
                keys = keys
                    .into_iter()
                    .flat_map(|k| {
                        choices.iter().map(move |c| {
                            let mut k = k.clone();
                            k.push(c.clone());
                            k
                        })
                    })
                    .collect();
            }
            for key in keys {
                add(out.entry(key).or_default(), record);
            }
        }
        out
    }
}

impl fmt::Display for Query {
    /// The canonical text form: what is sent to members (each parses it again under the same
    /// limits) and what a query's id and its noise are derived from, so the same question
    /// asked as text or as JSON, spaced or cased differently, is the same query everywhere.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("count")?;
        if let Some(filter) = &self.filter {
            write!(f, " where {}", Clause(filter, Context::Top))?;
        }
        for (i, field) in self.group_by.iter().enumerate() {
            f.write_str(if i == 0 { " by " } else { ", " })?;
            f.write_str(field.name())?;
        }
        Ok(())
    }
}

impl Query {
    /// The query's canonical text, checked to read back as this very query (a JSON query can
    /// say what the text form cannot: a field grouped by twice, or more text than a member
    /// will read).
    pub fn canonical(&self) -> Result<String, QueryError> {
        let text = self.to_string();
        let again: Query = text.parse()?;
        if again != self.normalised() {
            return Err(QueryError {
                at: 0,
                len: 0,
                message: "this query has no text form (a field grouped by twice?)".into(),
            });
        }
        Ok(text)
    }

    /// The query's id: BLAKE3 of its canonical text, as 64 hex digits.
    pub fn id(&self) -> String {
        blake3::hash(self.to_string().as_bytes())
            .to_hex()
            .to_string()
    }

    /// The same query as its text form reads back (a one-member `and` or `or` is that member).
    fn normalised(&self) -> Query {
        fn norm(c: &Condition) -> Condition {
            match c {
                Condition::And(all) | Condition::Or(all) if all.len() == 1 => norm(&all[0]),
                Condition::And(all) => Condition::And(all.iter().map(norm).collect()),
                Condition::Or(any) => Condition::Or(any.iter().map(norm).collect()),
                Condition::Not(inner) => Condition::Not(Box::new(norm(inner))),
                other => other.clone(),
            }
        }
        Query {
            filter: self.filter.as_ref().map(norm),
            group_by: self.group_by.clone(),
        }
    }
}

/// Where a condition is written, for the parentheses it needs there.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    Top,
    InOr,
    InAnd,
    InNot,
}

struct Clause<'a>(&'a Condition, Context);

impl fmt::Display for Clause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Clause(condition, context) = *self;
        let joined = |f: &mut fmt::Formatter<'_>, all: &[Condition], word: &str, inner| {
            for (i, c) in all.iter().enumerate() {
                if i > 0 {
                    write!(f, " {word} ")?;
                }
                write!(f, "{}", Clause(c, inner))?;
            }
            Ok(())
        };
        match condition {
            Condition::Compare { field, op, value } => {
                let op = match op {
                    Op::Eq => "=",
                    Op::Ne => "!=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                };
                write!(f, "{field} {op} {}", Literal(value))
            }
            Condition::In { field, values } => {
                write!(f, "{field} in (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Literal(v))?;
                }
                f.write_str(")")
            }
            Condition::Between { field, low, high } => {
                write!(f, "{field} between {} and {}", Literal(low), Literal(high))
            }
            Condition::Under { field, code } => {
                write!(f, "{field} under {}", Literal(&Value::Text(code.clone())))
            }
            Condition::Not(inner) => write!(f, "not {}", Clause(inner, Context::InNot)),
            // A single member reads back as itself.
            Condition::And(all) | Condition::Or(all) if all.len() == 1 => {
                write!(f, "{}", Clause(&all[0], context))
            }
            Condition::And(_) | Condition::Or(_) => {
                // `and` binds tighter than `or`: an `and` needs parentheses only inside a
                // `not` or another `and`, an `or` anywhere but at the top.
                let (members, word, inner, bare) = match condition {
                    Condition::And(all) => (
                        all,
                        "and",
                        Context::InAnd,
                        matches!(context, Context::Top | Context::InOr),
                    ),
                    Condition::Or(any) => (any, "or", Context::InOr, context == Context::Top),
                    _ => unreachable!("matched above"),
                };
                if !bare {
                    f.write_str("(")?;
                }
                joined(f, members, word, inner)?;
                if !bare {
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

/// A value as the parser reads it back: numbers bare, text always quoted (so a code such as
/// "0123" or a word such as `and` stays text).
struct Literal<'a>(&'a Value);

impl fmt::Display for Literal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => {
                f.write_str("\"")?;
                for c in t.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
        }
    }
}

/// A query as one member asks another: the canonical text (parsed again by the answering
/// node, under the same limits), who asks and under what approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    pub text: String,
    /// The person asking, as the requesting trust's sign-on names them.
    pub user: Option<crate::UserClaim>,
    /// The research ethics approval the query is made under, when it names one.
    pub ethics: Option<String>,
}

/// One site's counts as it released them, after its own disclosure control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedCounts {
    pub cells: Vec<ReleasedCell>,
    /// The site's smallest count shown: fewer is shown as "<min_cell".
    pub min_cell: u64,
    /// The largest noise the site adds to a count (each count is moved by at most this).
    pub noise: u64,
}

/// One group's count: its group-by values (as text; `None` where a slide had none) and
/// the count as released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedCell {
    pub key: Vec<Option<String>>,
    pub count: Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Released {
    /// The count with the site's noise added.
    Count(u64),
    /// Fewer than this many (suppressed).
    Below(u64),
}

/// Most groups one site releases for one query.
pub const MAX_CELLS: usize = 10_000;

/// A cohort asked of one site for an approved project: the slides matching the query's
/// conditions, each labelled with the query's group-by fields. The site answers only when
/// its own trust recorded the project as approved for the requesting trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortRequest {
    /// The project's ethics approval reference, as the answering site recorded it.
    pub project: String,
    /// The canonical text of the query whose conditions select the slides (its group-by
    /// fields are the labels each slide is given).
    pub text: String,
    /// The person asking, as the requesting trust's sign-on names them.
    pub user: Option<crate::UserClaim>,
}

/// One slide of a cohort, as its owner released it to an approved project: the grant to
/// open it (research, for the project), the patient's per-project pseudonym and the
/// slide's labels. The slide's identity never travels: its manifest is fetched under the
/// grant and arrives de-identified for the project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortMember {
    pub grant: crate::SignedGrant,
    /// The patient's pseudonym in the project (the de-identified view's Patient ID).
    pub patient: String,
    /// The values of the query's group-by fields, in their order (`None`: the slide has
    /// none).
    pub labels: Vec<Option<String>>,
}

/// Most slides one site releases to one cohort request.
pub const MAX_COHORT: usize = 10_000;

impl std::str::FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Query, QueryError> {
        if text.len() > MAX_QUERY_TEXT {
            return Err(QueryError {
                at: MAX_QUERY_TEXT,
                len: 0,
                message: format!("the query is longer than {MAX_QUERY_TEXT} bytes"),
            });
        }
        let tokens = tokens(text)?;
        let mut p = Parser {
            tokens,
            next: 0,
            end: text.len(),
        };
        let query = p.query()?;
        query.validate()?;
        Ok(query)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Sym(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
    len: usize,
}

fn tokens(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = text[i..].chars().next().expect("in bounds");
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        let sym = ["<=", ">=", "!=", "=", "<", ">", "(", ")", ","]
            .into_iter()
            .find(|s| text[i..].starts_with(s));
        if let Some(sym) = sym {
            i += sym.len();
            out.push(Token {
                tok: Tok::Sym(sym),
                at: start,
                len: sym.len(),
            });
        } else if c == '"' {
            let mut value = String::new();
            i += 1;
            loop {
                let Some(c) = text[i..].chars().next() else {
                    return Err(QueryError {
                        at: start,
                        len: i - start,
                        message: "this string has no closing quote".into(),
                    });
                };
                i += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let Some(escaped) = text[i..].chars().next() else {
                            return Err(QueryError {
                                at: start,
                                len: i - start,
                                message: "this string has no closing quote".into(),
                            });
                        };
                        i += escaped.len_utf8();
                        value.push(escaped);
                    }
                    c => value.push(c),
                }
            }
            out.push(Token {
                tok: Tok::Str(value),
                at: start,
                len: i - start,
            });
        } else if c.is_alphanumeric() || "_-&.+/".contains(c) {
            while let Some(c) = text[i..].chars().next() {
                if c.is_alphanumeric() || "_-&.+/".contains(c) {
                    i += c.len_utf8();
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Word(text[start..i].to_string()),
                at: start,
                len: i - start,
            });
        } else {
            return Err(QueryError {
                at: start,
                len: c.len_utf8(),
                message: format!("unexpected {c:?}"),
            });
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn fail<T>(&self, expected: &str) -> Result<T, QueryError> {
        Err(match self.peek() {
            Some(t) => QueryError {
                at: t.at,
                len: t.len,
                message: format!("expected {expected}, found {}", describe(&t.tok)),
            },
            None => QueryError {
                at: self.end,
                len: 0,
                message: format!("expected {expected}, found the end of the query"),
            },
        })
    }

    /// Consumes the keyword `word` (any case) if it is next.
    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(word))
        {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn symbol(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token { tok: Tok::Sym(s), .. }) if *s == sym) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        if !self.keyword("count") {
            return self.fail("`count`");
        }
        let filter = if self.keyword("where") {
            Some(self.or(0)?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        let grouped = if self.keyword("group") {
            if !self.keyword("by") {
                return self.fail("`by`");
            }
            true
        } else {
            self.keyword("by")
        };
        if grouped {
            loop {
                let field = self.field()?;
                if group_by.contains(&field) {
                    let t = &self.tokens[self.next - 1];
                    return Err(QueryError {
                        at: t.at,
                        len: t.len,
                        message: format!("{field} is grouped by twice"),
                    });
                }
                group_by.push(field);
                if !self.symbol(",") {
                    break;
                }
            }
        }
        if self.peek().is_some() {
            return self.fail(if group_by.is_empty() {
                "`and`, `or`, `by` or the end"
            } else {
                "`,` or the end"
            });
        }
        Ok(Query { filter, group_by })
    }

    fn or(&mut self, depth: usize) -> Result<Condition, QueryError> {
        let mut any = vec![self.and(depth)?];
        while self.keyword("or") {
            any.push(self.and(depth)?);
        }
        Ok(if any.len() == 1 {
            any.pop().expect("one")
        } else {
            Condition::Or(any)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Condition, QueryError> {
        let mut all = vec![self.term(depth)?];
        while self.keyword("and") {
            all.push(self.term(depth)?);
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one")
        } else {
            Condition::And(all)
        })
    }

    fn term(&mut self, depth: usize) -> Result<Condition, QueryError> {
        if depth > MAX_DEPTH {
            return self.fail(&format!("no deeper nesting than {MAX_DEPTH}"));
        }
        if self.keyword("not") {
            return Ok(Condition::Not(Box::new(self.term(depth + 1)?)));
        }
        if self.symbol("(") {
            let inner = self.or(depth + 1)?;
            if !self.symbol(")") {
                return self.fail("`)`");
            }
            return Ok(inner);
        }
        let field = self.field()?;
        if self.keyword("in") {
            if !self.symbol("(") {
                return self.fail("`(` and a list of values");
            }
            let mut values = vec![self.value()?];
            while self.symbol(",") {
                values.push(self.value()?);
            }
            if !self.symbol(")") {
                return self.fail("`,` or `)`");
            }
            return Ok(Condition::In { field, values });
        }
        if self.keyword("between") {
            let low = self.value()?;
            if !self.keyword("and") {
                return self.fail("`and` and the upper bound");
            }
            let high = self.value()?;
            return Ok(Condition::Between { field, low, high });
        }
        if self.keyword("under") {
            let code = match self.value()? {
                Value::Number(n) => n.to_string(),
                Value::Text(t) => t,
            };
            return Ok(Condition::Under { field, code });
        }
        let op = match self.peek().map(|t| &t.tok) {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            _ => {
                return self.fail("a comparison (=, !=, <, <=, >, >=), `in`, `between` or `under`");
            }
        };
        self.next += 1;
        let value = self.value()?;
        Ok(Condition::Compare { field, op, value })
    }

    fn field(&mut self) -> Result<Field, QueryError> {
        if let Some(Token {
            tok: Tok::Word(w), ..
        }) = self.peek()
            && let Some(field) = Field::parse(w)
        {
            self.next += 1;
            return Ok(field);
        }
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        self.fail(&format!("a field ({})", names.join(", ")))
    }

    fn value(&mut self) -> Result<Value, QueryError> {
        let value = match self.peek().map(|t| &t.tok) {
            Some(Tok::Str(s)) => Value::Text(s.clone()),
            Some(Tok::Word(w)) if !is_keyword(w) => match w.parse::<i64>() {
                Ok(n) => Value::Number(n),
                Err(_) => Value::Text(w.clone()),
            },
            _ => return self.fail("a value (a number, a word or a \"quoted string\")"),
        };
        self.next += 1;
        Ok(value)
    }
}

fn is_keyword(word: &str) -> bool {
    [
        "and", "or", "not", "in", "between", "under", "by", "group", "where", "count",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(word))
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Sym(s) => format!("`{s}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slide(Vec<(Field, Value)>);

    impl Record for Slide {
        fn values(&self, field: Field) -> std::borrow::Cow<'_, [Value]> {
            self.0
                .iter()
                .filter(|(f, _)| *f == field)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
                .into()
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn slide(trust: &str, stain: &str, year: i64, grade: Option<i64>, codes: &[&str]) -> Slide {
        let mut v = vec![
            (Field::Trust, text(trust)),
            (Field::Stain, text(stain)),
            (Field::Year, Value::Number(year)),
        ];
        if let Some(g) = grade {
            v.push((Field::Grade, Value::Number(g)));
        }
        v.extend(codes.iter().map(|c| (Field::Diagnosis, text(c))));
        Slide(v)
    }

    /// A toy hierarchy: 413448000 (invasive breast carcinoma, for the test) has two children.
    fn is_a(code: &str, ancestor: &str) -> bool {
        code == ancestor
            || (ancestor == "413448000" && ["408643008", "1080261000119100"].contains(&code))
    }

    #[test]
    fn the_issues_example_parses_and_counts_by_site_and_grade() {
        let q: Query = "count where stain = \"H&E\" and diagnosis under 413448000 \
                        and year between 2022 and 2024 by trust, grade"
            .parse()
            .unwrap();
        assert_eq!(q.group_by, [Field::Trust, Field::Grade]);
        let records = [
            slide("RR8", "H&E", 2023, Some(2), &["408643008"]),
            slide("RR8", "h&e", 2022, Some(2), &["1080261000119100"]),
            slide("RR8", "H&E", 2021, Some(2), &["408643008"]),
            slide("RAE", "H&E", 2024, Some(3), &["413448000"]),
            slide("RAE", "HER2", 2024, Some(3), &["413448000"]),
            slide("RAE", "H&E", 2024, None, &["408643008", "399935008"]),
            slide("RAE", "H&E", 2024, Some(1), &["399935008"]),
        ];
        let counts = q.count(&records, &is_a);
        let key = |t: &str, g: Option<i64>| vec![Some(text(t)), g.map(Value::Number)];
        assert_eq!(counts.get(&key("RR8", Some(2))), Some(&2));
        assert_eq!(counts.get(&key("RAE", Some(3))), Some(&1));
        assert_eq!(counts.get(&key("RAE", None)), Some(&1));
        assert_eq!(counts.values().sum::<u64>(), 4);
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_negates_any() {
        let q: Query = "count where trust = RR8 or trust = RAE and year > 2023"
            .parse()
            .unwrap();
        let records = [
            slide("RR8", "H&E", 2020, None, &[]),
            slide("RAE", "H&E", 2020, None, &[]),
            slide("RAE", "H&E", 2024, None, &[]),
        ];
        assert_eq!(q.count(&records, &is_a).values().sum::<u64>(), 2);
        let q: Query = "count where not diagnosis in (399935008, 413448000)"
            .parse()
            .unwrap();
        let records = [
            slide("RR8", "H&E", 2020, None, &["399935008", "1"]),
            slide("RR8", "H&E", 2020, None, &["2"]),
            slide("RR8", "H&E", 2020, None, &[]),
        ];
        assert_eq!(q.count(&records, &is_a).values().sum::<u64>(), 2);
        let q: Query = "count where (year >= 2021 and year <= 2022) or not (stain != HER2)"
            .parse()
            .unwrap();
        assert!(matches!(q.filter, Some(Condition::Or(_))));
    }

    #[test]
    fn parse_errors_point_at_the_offending_token() {
        let cases = [
            ("count where stian = HE", 12, "expected a field"),
            ("count where stain HE", 18, "expected a comparison"),
            ("count where year between 2020 2024", 30, "expected `and`"),
            ("count where stain = \"H&E", 20, "no closing quote"),
            ("count where (stain = HE", 23, "expected `)`"),
            ("count by trust, trust", 16, "grouped by twice"),
            ("count where stain = HE by", 25, "expected a field"),
            (
                "count where stain = HE extra",
                23,
                "expected `and`, `or`, `by` or the end",
            ),
            ("select stain from slides", 0, "expected `count`"),
            ("count where stain ~ HE", 18, "unexpected '~'"),
            ("count where stain = and", 20, "expected a value"),
        ];
        for (text, at, message) in cases {
            let e = text.parse::<Query>().unwrap_err();
            assert_eq!(e.at, at, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
        let e = "count where stian = HE".parse::<Query>().unwrap_err();
        assert_eq!(
            e.render("count where stian = HE").lines().nth(1),
            Some("            ^^^^^")
        );
    }

    #[test]
    fn limits_hold_for_text_and_json_alike() {
        let many = (0..=MAX_CONDITIONS)
            .map(|i| format!("year = {i}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let e = format!("count where {many}").parse::<Query>().unwrap_err();
        assert!(e.message.contains("conditions"), "{e}");
        let deep = format!("count where {}year = 1{}", "(".repeat(20), ")".repeat(20));
        let e = deep.parse::<Query>().unwrap_err();
        assert!(
            e.message.contains("nesting") || e.message.contains("nested"),
            "{e}"
        );
        let json = serde_json::json!({
            "filter": {"in": {"field": "grade", "values": []}},
            "group_by": ["trust"],
        });
        let q: Query = serde_json::from_value(json).unwrap();
        assert!(q.validate().unwrap_err().message.contains("set"));
        let long = format!("count where stain = {}", "x".repeat(MAX_QUERY_TEXT));
        let e = long.parse::<Query>().unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
        let empty = serde_json::json!({"filter": {"and": []}});
        let q: Query = serde_json::from_value(empty).unwrap();
        assert!(q.validate().is_err());
        // Nested empty joins count as nodes: no way around the limit.
        let nodes: Vec<serde_json::Value> = (0..100).map(|_| serde_json::json!({"and": [{"compare": {"field": "year", "op": "eq", "value": 1}}]})).collect();
        let q: Query =
            serde_json::from_value(serde_json::json!({"filter": {"or": nodes}})).unwrap();
        assert!(q.validate().unwrap_err().message.contains("conditions"));
    }

    #[test]
    fn the_canonical_text_reads_back_as_the_same_query() {
        for text in [
            "count",
            "count by trust",
            "COUNT WHERE stain = he and (year < 2020 or year >= 2023) by Trust, grade",
            "count where not (sex = F or sex = M) and diagnosis under 413448000",
            "count where scanner in (\"Leica GT450\", \"say \\\"hi\\\"\", 3) by year",
            "count where year between 2022 and 2024 and not not grade != 2",
            "count where stain = \"and\" or stain = \"0123\"",
            "count where ((stain = a and stain = b) and (grade = 1 or grade = 2)) or year = 1",
        ] {
            let query: Query = text.parse().unwrap();
            let canonical = query.canonical().unwrap();
            let again: Query = canonical.parse().unwrap();
            assert_eq!(again, query, "{text} -> {canonical}");
            assert_eq!(again.to_string(), canonical, "canonical is a fixed point");
            assert_eq!(again.id(), query.id());
        }
        let a: Query = "count where stain = HE by trust".parse().unwrap();
        let b: Query = "count   where STAIN=\"HE\"   group by TRUST"
            .parse()
            .unwrap();
        assert_eq!(
            a.id(),
            b.id(),
            "spacing and case of keywords do not change the id"
        );
        let twice: Query =
            serde_json::from_str(r#"{"filter": null, "group_by": ["trust", "trust"]}"#).unwrap();
        assert!(twice.canonical().is_err(), "no text form");
    }

    #[test]
    fn the_json_form_is_the_same_query() {
        let q: Query = "count where grade in (2, 3) and stain = HE by trust"
            .parse()
            .unwrap();
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "filter": {"and": [
                    {"in": {"field": "grade", "values": [2, 3]}},
                    {"compare": {"field": "stain", "op": "eq", "value": "HE"}},
                ]},
                "group_by": ["trust"],
            })
        );
        assert_eq!(serde_json::from_value::<Query>(json).unwrap(), q);
    }

    #[test]
    fn hostile_text_is_an_error_not_a_panic() {
        for text in [
            "",
            "count where stain = \"\\",
            "count where stain = \"é\\",
            "count where stain = é€",
            "count where stain = \"a\\\"b\" by",
            &format!("count where stain = {}", "€".repeat(1400)),
            "count where stain = \"H&E\n2026-12-07 forged audit line\"",
            "count where diagnosis under \"\u{1b}[2J\"",
        ] {
            let e = text.parse::<Query>().unwrap_err();
            let _ = e.render(text);
        }
        let q: Query = "count where stain = \"a\\\"b\"".parse().unwrap();
        assert_eq!(
            q.filter,
            Some(Condition::Compare {
                field: Field::Stain,
                op: Op::Eq,
                value: text("a\"b")
            })
        );
        let q: Query = "count where anatomic_site = Bröst".parse().unwrap();
        assert!(
            matches!(q.filter, Some(Condition::Compare { value: Value::Text(ref t), .. }) if t == "Bröst")
        );
        let e = "count where stain = Bröst ~".parse::<Query>().unwrap_err();
        assert_eq!(
            e.render("count where stain = Bröst ~").lines().nth(1),
            Some("                          ^")
        );
    }

    #[test]
    fn grouping_ignores_case_as_matching_does() {
        let q: Query = "count by stain".parse().unwrap();
        let records = [
            slide("RR8", "H&E", 2020, None, &[]),
            slide("RR8", "h&e", 2020, None, &[]),
        ];
        let counts = q.count(&records, &is_a);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts.values().next(), Some(&2));
    }
}
