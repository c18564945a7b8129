//! The SNOMED CT hierarchy a query's `under` reads: which concepts lie below which. A trust
//! gives its node the is-a relationships of the edition it codes with (`[research]
//! snomed_hierarchy`): the release's relationship file as published (RF2
//! `sct2_Relationship_Snapshot_*.txt`: active rows of type 116680003 |Is a|), or a plain file
//! of `child<TAB>parent` lines. Without one, `under` matches the code itself only.
//!
//! `under` is decided once per distinct code in the index (see `columns`), so each test walks
//! the ancestors of one code, breadth first, at most [`MAX_WALK`] concepts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The |Is a| relationship type.
const IS_A: &str = "116680003";
/// Most concepts one ancestor walk visits (SNOMED CT's deepest chains are a few dozen
/// concepts, and a concept has a few hundred ancestors at most).
pub const MAX_WALK: usize = 10_000;

/// Parents by concept id.
#[derive(Debug, Default, Clone)]
pub struct Hierarchy {
    parents: HashMap<u64, Vec<u64>>,
}

impl Hierarchy {
    /// Reads an RF2 relationship file or `child<TAB>parent` lines.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the SNOMED CT hierarchy {}", path.display()))?;
        Self::parse(&text)
            .with_context(|| format!("{} is not a SNOMED CT hierarchy", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines().enumerate().peekable();
        let rf2 = lines
            .peek()
            .is_some_and(|(_, l)| l.starts_with("id\teffectiveTime\tactive"));
        if rf2 {
            lines.next();
        }
        let id = |field: &str, line: usize| -> Result<u64> {
            let field = field.trim();
            if !slidemesh_protocol::referral::is_sctid(field) {
                bail!("line {}: {field:?} is not a SNOMED CT concept id", line + 1);
            }
            Ok(field.parse()?)
        };
        let mut parents: HashMap<u64, Vec<u64>> = HashMap::new();
        for (n, line) in lines {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (child, parent) = if rf2 {
                // id effectiveTime active moduleId sourceId destinationId relationshipGroup
                // typeId characteristicTypeId modifierId
                if fields.len() < 10 {
                    bail!("line {}: an RF2 relationship row has 10 columns", n + 1);
                }
                if fields[2] != "1" || fields[7] != IS_A {
                    continue;
                }
                (id(fields[4], n)?, id(fields[5], n)?)
            } else {
                if fields.len() != 2 {
                    bail!("line {}: expected child<TAB>parent", n + 1);
                }
                (id(fields[0], n)?, id(fields[1], n)?)
            };
            parents.entry(child).or_default().push(parent);
        }
        Ok(Self { parents })
    }

    /// Whether `code` is `ancestor` or lies below it. Codes that are not concept ids match
    /// only themselves.
    pub fn is_a(&self, code: &str, ancestor: &str) -> bool {
        if code == ancestor {
            return true;
        }
        let (Ok(code), Ok(ancestor)) = (code.parse::<u64>(), ancestor.parse::<u64>()) else {
            return false;
        };
        let mut seen = HashSet::new();
        let mut next = VecDeque::from([code]);
        while let Some(concept) = next.pop_front() {
            if concept == ancestor {
                return true;
            }
            if seen.len() >= MAX_WALK || !seen.insert(concept) {
                continue;
            }
            next.extend(self.parents.get(&concept).into_iter().flatten());
        }
        false
    }

    /// The hierarchy `[research] snomed_hierarchy` names (relative to the data directory
    /// `data`), or none.
    pub fn configured(config: &crate::config::ResearchSection, data: &Path) -> Result<Self> {
        if config.snomed_hierarchy.trim().is_empty() {
            return Ok(Self::default());
        }
        Self::from_file(&data.join(config.snomed_hierarchy.trim()))
    }

    /// How many concepts have a parent here.
    pub fn concepts(&self) -> usize {
        self.parents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Concept ids with valid check digits (Verhoeff), standing for a small tree:
    // 10000006 > 20000007 > 30000000, and 40000003 > 30000000 (two parents).
    const ROOT: &str = "10000006";
    const MID: &str = "20000007";
    const LEAF: &str = "30000000";
    const OTHER: &str = "40000003";

    #[test]
    fn ids_here_are_concept_ids() {
        for id in [ROOT, MID, LEAF, OTHER] {
            assert!(slidemesh_protocol::referral::is_sctid(id), "{id}");
        }
    }

    #[test]
    fn a_concept_is_under_its_ancestors_by_either_file_form() {
        let plain = Hierarchy::parse(&format!(
            "# child\tparent\n{MID}\t{ROOT}\n{LEAF}\t{MID}\n{LEAF}\t{OTHER}\n"
        ))
        .unwrap();
        let rf2 = Hierarchy::parse(&format!(
            "id\teffectiveTime\tactive\tmoduleId\tsourceId\tdestinationId\trelationshipGroup\ttypeId\tcharacteristicTypeId\tmodifierId\n\
             1\t20250101\t1\t900000000000207008\t{MID}\t{ROOT}\t0\t116680003\t900000000000011006\t900000000000451002\n\
             2\t20250101\t1\t900000000000207008\t{LEAF}\t{MID}\t0\t116680003\t900000000000011006\t900000000000451002\n\
             3\t20250101\t1\t900000000000207008\t{LEAF}\t{OTHER}\t0\t116680003\t900000000000011006\t900000000000451002\n\
             4\t20250101\t0\t900000000000207008\t{ROOT}\t{LEAF}\t0\t116680003\t900000000000011006\t900000000000451002\n\
             5\t20250101\t1\t900000000000207008\t{ROOT}\t{OTHER}\t0\t363698007\t900000000000011006\t900000000000451002\n"
        ))
        .unwrap();
        for h in [plain, rf2] {
            assert!(h.is_a(LEAF, ROOT) && h.is_a(LEAF, MID) && h.is_a(LEAF, OTHER));
            assert!(h.is_a(MID, MID) && h.is_a(MID, ROOT));
            assert!(!h.is_a(ROOT, LEAF), "an inactive row counts for nothing");
            assert!(!h.is_a(ROOT, OTHER), "nor does another relationship type");
            assert!(!h.is_a("HE", ROOT) && h.is_a("HE", "HE"));
        }
    }

    #[test]
    fn a_cycle_ends_and_a_bad_file_says_where() {
        let h = Hierarchy::parse(&format!("{MID}\t{ROOT}\n{ROOT}\t{MID}\n")).unwrap();
        assert!(!h.is_a(MID, LEAF));
        let e = format!(
            "{:#}",
            Hierarchy::parse("20000007\t10000007\n").unwrap_err()
        );
        assert!(e.contains("line 1") && e.contains("10000007"), "{e}");
        let e = format!("{:#}", Hierarchy::parse("20000007 10000006\n").unwrap_err());
        assert!(e.contains("child<TAB>parent"), "{e}");
    }
}
