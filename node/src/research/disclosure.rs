//! Disclosure control at the answering site: what of a query's true counts leaves it.
//!
//! - Small cells: a count below the site's `min_cell` is released as "fewer than
//!   `min_cell`", never as itself.
//! - Seeded noise: every other count is moved by an amount in `-noise..=noise` (the
//!   difference of two uniform draws, so small moves are likelier), drawn from a keyed
//!   BLAKE3 of the query's id and the group under a secret derived from this node's key. The
//!   same query gets the same answer every time, after restarts too, so asking it again and
//!   again does not average the noise away; a released count is never below `min_cell`
//!   (that would say a suppressed cell's count).
//!
//! The per-requester budget (how many distinct queries one requester is answered) is kept
//! in the store (`store::research`); opted-out patients are left out before counting
//! (`access`). Not done: complementary suppression (a total and all but one of its groups
//! released can bound the suppressed one; the noise blurs, but does not prevent, that).

use std::collections::BTreeMap;

use slidemesh_protocol::NodeKey;
use slidemesh_protocol::query::{Released, ReleasedCell, ReleasedCounts, Value};

/// The key derivation context of the noise secret.
const NOISE_CONTEXT: &str = "slidemesh research query noise 2026-12 v1";

/// A site's disclosure rules with its noise secret.
#[derive(Clone)]
pub struct Disclosure {
    pub min_cell: u64,
    pub noise: u64,
    secret: [u8; 32],
}

impl Disclosure {
    /// The rules of `[research]`, with the noise keyed by this node's key.
    pub fn new(min_cell: u64, noise: u64, key: &NodeKey) -> Self {
        Self::with_secret(min_cell, noise, key.derive_secret(NOISE_CONTEXT))
    }

    pub fn with_secret(min_cell: u64, noise: u64, secret: [u8; 32]) -> Self {
        Self {
            min_cell,
            noise,
            secret,
        }
    }

    /// The counts of query `query_id` as this site releases them.
    pub fn release(
        &self,
        query_id: &str,
        counts: &BTreeMap<Vec<Option<Value>>, u64>,
    ) -> ReleasedCounts {
        let cells = counts
            .iter()
            .map(|(key, &n)| {
                let key: Vec<Option<String>> = key
                    .iter()
                    .map(|v| {
                        v.as_ref().map(|v| match v {
                            Value::Text(t) => t.clone(),
                            Value::Number(n) => n.to_string(),
                        })
                    })
                    .collect();
                let count = if n < self.min_cell {
                    Released::Below(self.min_cell)
                } else {
                    let moved = n.saturating_add_signed(self.offset(query_id, &key));
                    Released::Count(moved.max(self.min_cell))
                };
                ReleasedCell { key, count }
            })
            .collect();
        ReleasedCounts {
            cells,
            min_cell: self.min_cell,
            noise: self.noise,
        }
    }

    /// The seeded move of one group's count: in `-noise..=noise`.
    fn offset(&self, query_id: &str, key: &[Option<String>]) -> i64 {
        if self.noise == 0 {
            return 0;
        }
        let mut hasher = blake3::Hasher::new_keyed(&self.secret);
        hasher.update(query_id.as_bytes());
        for value in key {
            // Length-prefixed, so no two keys hash the same input.
            match value {
                None => hasher.update(&[0]),
                Some(v) => hasher
                    .update(&[1])
                    .update(&(v.len() as u64).to_le_bytes())
                    .update(v.as_bytes()),
            };
        }
        let hash = hasher.finalize();
        let bytes = hash.as_bytes();
        let draw = |at: usize| {
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            (word % (self.noise + 1)) as i64
        };
        draw(0) - draw(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cells: &[(&str, u64)]) -> BTreeMap<Vec<Option<Value>>, u64> {
        cells
            .iter()
            .map(|(k, n)| (vec![Some(Value::Text(k.to_string()))], *n))
            .collect()
    }

    #[test]
    fn small_cells_are_suppressed_and_no_count_shows_below_the_threshold() {
        let rules = Disclosure::with_secret(10, 3, [1; 32]);
        let released = rules.release("q", &counts(&[("A", 0), ("B", 9), ("C", 10), ("D", 500)]));
        let by_key: Vec<Released> = released.cells.iter().map(|c| c.count).collect();
        assert_eq!(by_key[0], Released::Below(10));
        assert_eq!(by_key[1], Released::Below(10));
        let Released::Count(c) = by_key[2] else {
            panic!("10 is shown")
        };
        assert!((10..=13).contains(&c), "{c}");
        let Released::Count(d) = by_key[3] else {
            panic!("500 is shown")
        };
        assert!((497..=503).contains(&d), "{d}");
    }

    #[test]
    fn noise_is_the_same_for_the_same_query_and_differs_between_queries_and_sites() {
        let site = Disclosure::with_secret(0, 5, [2; 32]);
        let many: Vec<(String, u64)> = (0..200).map(|i| (format!("g{i}"), 1000)).collect();
        let cells: Vec<(&str, u64)> = many.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let once = site.release("q1", &counts(&cells));
        assert_eq!(once, site.release("q1", &counts(&cells)), "repeatable");
        let other_query = site.release("q2", &counts(&cells));
        let other_site = Disclosure::with_secret(0, 5, [3; 32]).release("q1", &counts(&cells));
        assert_ne!(once, other_query);
        assert_ne!(once, other_site);
        // Every move within the bound, and the moves average out near zero over many groups
        // (they are not all one way), using the whole range.
        let moves: Vec<i64> = once
            .cells
            .iter()
            .map(|c| match c.count {
                Released::Count(n) => n as i64 - 1000,
                Released::Below(_) => panic!("nothing is small here"),
            })
            .collect();
        assert!(moves.iter().all(|m| m.abs() <= 5));
        assert!(moves.contains(&5) && moves.contains(&-5));
        let mean = moves.iter().sum::<i64>() as f64 / moves.len() as f64;
        assert!(mean.abs() < 1.0, "mean move {mean}");
    }

    #[test]
    fn without_noise_counts_are_exact() {
        let site = Disclosure::with_secret(0, 0, [4; 32]);
        let released = site.release("q", &counts(&[("A", 0), ("B", 7)]));
        assert_eq!(released.cells[0].count, Released::Count(0));
        assert_eq!(released.cells[1].count, Released::Count(7));
    }
}
