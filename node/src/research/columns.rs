//! The index a query runs on: each field stored as a column of small ids into that field's
//! dictionary of distinct values (a slide's values of a field are a run of ids, usually one).
//! A query is compiled against the dictionaries: each test of a value (`=`, `in`, `between`,
//! `under`, ...) is decided once per distinct value, by the protocol's own
//! [`Condition::matches`] on that one value, so a slide is then matched by looking up its ids,
//! and grouped by id (text grouped without regard to case, as [`Query::tally`] groups it).
//! What a count means stays the protocol's; this only avoids deciding it again per slide.
//! `tests` checks it counts exactly as [`Query::tally`] does.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use slidemesh_protocol::query::{Condition, Field, IsA, MAX_GROUP_BY, Op, Query, Record, Value};

/// No value for a group-by field (the group of slides without one).
const NONE: u32 = u32::MAX;

/// One field of every slide.
#[derive(Default)]
struct Column {
    /// The distinct values.
    dict: Vec<Value>,
    /// Each value's group: an index into `groups` (text in capitals, so "he" and "HE" group
    /// together).
    group_of: Vec<u32>,
    groups: Vec<Value>,
    /// Slide `i`'s values are `ids[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    ids: Vec<u32>,
}

impl Column {
    fn of(&self, row: usize) -> &[u32] {
        &self.ids[self.starts[row] as usize..self.starts[row + 1] as usize]
    }
}

/// Every field of every slide, by column.
pub struct Columns {
    columns: Vec<Column>,
    rows: usize,
}

/// Builds [`Columns`] a slide at a time.
pub struct ColumnsBuilder {
    columns: Vec<Column>,
    lookup: Vec<HashMap<Value, u32>>,
    group_lookup: Vec<HashMap<Value, u32>>,
    rows: usize,
}

impl Default for ColumnsBuilder {
    fn default() -> Self {
        let n = Field::ALL.len();
        let mut columns: Vec<Column> = (0..n).map(|_| Column::default()).collect();
        for column in &mut columns {
            column.starts.push(0);
        }
        Self {
            columns,
            lookup: vec![HashMap::new(); n],
            group_lookup: vec![HashMap::new(); n],
            rows: 0,
        }
    }
}

fn field_index(field: Field) -> usize {
    Field::ALL
        .iter()
        .position(|f| *f == field)
        .expect("every field is in ALL")
}

impl ColumnsBuilder {
    /// Adds the next slide (its index is the number added before it).
    pub fn push(&mut self, record: &dyn Record) {
        for (at, field) in Field::ALL.iter().enumerate() {
            for value in record.values(*field).iter() {
                let column = &mut self.columns[at];
                let id = match self.lookup[at].get(value) {
                    Some(id) => *id,
                    None => {
                        let id = column.dict.len() as u32;
                        let group = match value {
                            Value::Text(t) => Value::Text(t.to_ascii_uppercase()),
                            n => n.clone(),
                        };
                        let groups = &mut column.groups;
                        let group_id =
                            *self.group_lookup[at]
                                .entry(group.clone())
                                .or_insert_with(|| {
                                    groups.push(group);
                                    groups.len() as u32 - 1
                                });
                        column.dict.push(value.clone());
                        column.group_of.push(group_id);
                        self.lookup[at].insert(value.clone(), id);
                        id
                    }
                };
                column.ids.push(id);
            }
            let column = &mut self.columns[at];
            column.starts.push(column.ids.len() as u32);
        }
        self.rows += 1;
    }

    pub fn finish(self) -> Columns {
        Columns {
            columns: self.columns,
            rows: self.rows,
        }
    }
}

/// One value of one field, as a record (what a value test is decided on).
struct One<'a>(Field, &'a Value);

impl Record for One<'_> {
    fn values(&self, field: Field) -> Cow<'_, [Value]> {
        if field == self.0 {
            Cow::Borrowed(std::slice::from_ref(self.1))
        } else {
            Cow::Borrowed(&[])
        }
    }
}

/// A filter compiled against the dictionaries.
enum Compiled {
    /// A value test: `matches[id]` for each distinct value; a slide matches when any of its
    /// values does, or, for `!=` (the negation of "any value equals"), when all do.
    Test {
        column: usize,
        all: bool,
        matches: Vec<bool>,
    },
    Not(Box<Compiled>),
    And(Vec<Compiled>),
    Or(Vec<Compiled>),
}

impl Columns {
    fn compile(&self, condition: &Condition, is_a: IsA<'_>) -> Compiled {
        let test = |field: Field, all: bool| {
            let column = field_index(field);
            Compiled::Test {
                column,
                all,
                matches: self.columns[column]
                    .dict
                    .iter()
                    .map(|v| condition.matches(&One(field, v), is_a))
                    .collect(),
            }
        };
        match condition {
            Condition::Compare { field, op, .. } => test(*field, *op == Op::Ne),
            Condition::In { field, .. }
            | Condition::Between { field, .. }
            | Condition::Under { field, .. } => test(*field, false),
            Condition::Not(inner) => Compiled::Not(Box::new(self.compile(inner, is_a))),
            Condition::And(all) => {
                Compiled::And(all.iter().map(|c| self.compile(c, is_a)).collect())
            }
            Condition::Or(any) => Compiled::Or(any.iter().map(|c| self.compile(c, is_a)).collect()),
        }
    }

    fn matches(&self, compiled: &Compiled, row: usize) -> bool {
        match compiled {
            Compiled::Test {
                column,
                all,
                matches,
            } => {
                let ids = self.columns[*column].of(row);
                if *all {
                    ids.iter().all(|&id| matches[id as usize])
                } else {
                    ids.iter().any(|&id| matches[id as usize])
                }
            }
            Compiled::Not(inner) => !self.matches(inner, row),
            Compiled::And(all) => all.iter().all(|c| self.matches(c, row)),
            Compiled::Or(any) => any.iter().any(|c| self.matches(c, row)),
        }
    }

    /// Folds the slides `include` admits and the query's filter matches into one value per
    /// group, as [`Query::tally`] would over the same records.
    pub fn tally<A: Default>(
        &self,
        query: &Query,
        is_a: IsA<'_>,
        include: impl Fn(usize) -> bool,
        mut add: impl FnMut(&mut A, usize),
    ) -> BTreeMap<Vec<Option<Value>>, A> {
        let filter = query.filter.as_ref().map(|c| self.compile(c, is_a));
        let by: Vec<usize> = query.group_by.iter().map(|f| field_index(*f)).collect();
        assert!(
            by.len() <= MAX_GROUP_BY,
            "a query groups by at most {MAX_GROUP_BY} fields"
        );
        let mut groups: HashMap<[u32; MAX_GROUP_BY], A> = HashMap::new();
        if by.is_empty() {
            groups.insert([NONE; MAX_GROUP_BY], A::default());
        }
        let mut keys: Vec<[u32; MAX_GROUP_BY]> = Vec::new();
        for row in 0..self.rows {
            if !include(row) || filter.as_ref().is_some_and(|f| !self.matches(f, row)) {
                continue;
            }
            keys.clear();
            keys.push([NONE; MAX_GROUP_BY]);
            for (at, &column) in by.iter().enumerate() {
                let column = &self.columns[column];
                let ids = column.of(row);
                if ids.len() <= 1 {
                    let group = ids.first().map_or(NONE, |&id| column.group_of[id as usize]);
                    for key in &mut keys {
                        key[at] = group;
                    }
                    continue;
                }
                // Several values: the slide counts once under each distinct group.
                let mut choices: Vec<u32> =
                    ids.iter().map(|&id| column.group_of[id as usize]).collect();
                choices.sort_unstable();
                choices.dedup();
                keys = keys
                    .iter()
                    .flat_map(|key| {
                        choices.iter().map(move |&group| {
                            let mut key = *key;
                            key[at] = group;
                            key
                        })
                    })
                    .collect();
            }
            for key in &keys {
                add(groups.entry(*key).or_default(), row);
            }
        }
        groups
            .into_iter()
            .map(|(key, value)| {
                let key = by
                    .iter()
                    .enumerate()
                    .map(|(at, &column)| {
                        (key[at] != NONE)
                            .then(|| self.columns[column].groups[key[at] as usize].clone())
                    })
                    .collect();
                (key, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of plain values, several per field allowed.
    struct Plain(Vec<(Field, Value)>);

    impl Record for Plain {
        fn values(&self, field: Field) -> Cow<'_, [Value]> {
            self.0
                .iter()
                .filter(|(f, _)| *f == field)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
                .into()
        }
    }

    /// A small deterministic generator.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn records(rng: &mut Rng, n: usize) -> Vec<Plain> {
        let stains = ["H&E", "he", "HE", "ER", "PR"];
        let sites = ["Breast", "breast", "Colon"];
        (0..n)
            .map(|_| {
                let mut v = Vec::new();
                if rng.below(10) > 0 {
                    v.push((
                        Field::Stain,
                        Value::Text(stains[rng.below(5) as usize].into()),
                    ));
                }
                v.push((
                    Field::AnatomicSite,
                    Value::Text(sites[rng.below(3) as usize].into()),
                ));
                if rng.below(5) > 0 {
                    v.push((Field::Grade, Value::Number(1 + rng.below(3) as i64)));
                }
                v.push((Field::Year, Value::Number(2018 + rng.below(7) as i64)));
                // Diagnoses: none, one, or several (a case can have two), codes as text.
                for _ in 0..rng.below(3) {
                    let code = ["413448000", "399935008", "9846003"][rng.below(3) as usize];
                    v.push((Field::Diagnosis, Value::Text(code.into())));
                }
                Plain(v)
            })
            .collect()
    }

    fn is_a(code: &str, ancestor: &str) -> bool {
        code == ancestor || (ancestor == "1" && code.starts_with('4'))
    }

    #[test]
    fn counts_exactly_as_the_protocol_counts() {
        let mut rng = Rng(18);
        let records = records(&mut rng, 3000);
        let mut builder = ColumnsBuilder::default();
        for r in &records {
            builder.push(r);
        }
        let columns = builder.finish();
        for text in [
            "count",
            "count by stain",
            "count where stain = he by anatomic_site, grade",
            "count where stain != HE",
            "count where diagnosis != 413448000 by diagnosis",
            "count where diagnosis = 413448000 and not grade in (1, 2) by year, diagnosis",
            "count where year between 2019 and 2021 or grade >= 3 by stain, year",
            "count where diagnosis under 1 by grade",
            "count where not (stain = ER or anatomic_site = colon) by diagnosis, stain",
            "count where grade < 2 and year > 2020",
            "count where year = \"2020\" by anatomic_site",
            "count where stain > \"E\" by stain",
        ] {
            let query: Query = text.parse().unwrap();
            let expected = query.count(&records, &is_a);
            let skip_odd = |row: usize| row.is_multiple_of(2);
            let counted = columns.tally(&query, &is_a, |_| true, |n: &mut u64, _| *n += 1);
            assert_eq!(counted, expected, "{text}");
            // Leaving slides out (the policy's refusals) leaves them out of every group.
            let kept: Vec<&Plain> = records.iter().step_by(2).collect();
            let expected = query.count(kept, &is_a);
            let counted = columns.tally(&query, &is_a, skip_odd, |n: &mut u64, _| *n += 1);
            assert_eq!(counted, expected, "{text}, every other slide");
        }
    }
}
