//! Disclosure control at the answering site: what of a query's true counts leaves it.
//!
//! - Small cells: a count below the site's `min_cell` is released as "fewer than
//!   `min_cell`", never as itself.
//! - Seeded noise (the cell-key method): every other count is moved by an amount in
//!   `-noise..=noise` (the difference of two uniform draws, so small moves are likelier)
//!   drawn from the cell's key, the sum of its slides' record keys (each a keyed BLAKE3 of
//!   the slide id under a secret derived from this node's key). The same slides get the same
//!   noise whatever query selected them and however it was written, after restarts too, so
//!   rephrasing or repeating a query does not average the noise away; a cell whose slides
//!   changed gets fresh noise. A released count is never below `min_cell` (that would say a
//!   suppressed cell's count).
//! - Grouped answers list no group below `min_cell` (a listed "<10" would say that someone
//!   with that combination exists); an ungrouped count below it is "<min_cell", 0 included.
//!
//! The per-requester budget (how many distinct queries one requester is answered) is kept
//! in the store (`store::research`); opted-out patients are left out before counting
//! (`access`). Not done: complementary suppression (a total and all but one of its groups
//! released can bound the suppressed one; the noise blurs, but does not prevent, that).

use std::collections::BTreeMap;

use slidemesh_protocol::query::{Released, ReleasedCell, ReleasedCounts, Value};
use slidemesh_protocol::{NodeKey, SlideId};

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

    /// A slide's record key: what its cells' keys are summed from.
    pub fn record_key(&self, slide: &SlideId) -> u64 {
        let mut hasher = blake3::Hasher::new_keyed(&self.secret);
        hasher.update(b"record").update(slide.as_bytes());
        u64::from_le_bytes(
            hasher.finalize().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        )
    }

    /// The cells of a query as this site releases them: each group's count and cell key (the
    /// wrapping sum of its slides' record keys, see [`Disclosure::record_key`]).
    pub fn release(
        &self,
        grouped: bool,
        cells: &BTreeMap<Vec<Option<Value>>, Cell>,
    ) -> ReleasedCounts {
        let cells = cells
            .iter()
            .filter(|(_, cell)| !grouped || cell.count >= self.min_cell)
            .map(|(key, cell)| {
                let n = cell.count;
                let key = super::key_text(key);
                let count = if n < self.min_cell {
                    Released::Below(self.min_cell)
                } else {
                    let moved = n.saturating_add_signed(self.offset(cell.key));
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

    /// The seeded move of a cell's count: in `-noise..=noise`.
    fn offset(&self, cell_key: u64) -> i64 {
        if self.noise == 0 {
            return 0;
        }
        let mut hasher = blake3::Hasher::new_keyed(&self.secret);
        hasher.update(b"cell").update(&cell_key.to_le_bytes());
        let hash = hasher.finalize();
        let bytes = hash.as_bytes();
        let draw = |at: usize| {
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            (word % (self.noise + 1)) as i64
        };
        draw(0) - draw(8)
    }
}

/// One group of a query at this site: how many slides, and their cell key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    pub count: u64,
    pub key: u64,
}

impl Cell {
    /// Adds one slide with record key `key`.
    pub fn add(&mut self, key: u64) {
        self.count += 1;
        self.key = self.key.wrapping_add(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slide(i: u32) -> SlideId {
        SlideId::of(&i.to_le_bytes())
    }

    /// Groups named by `cells`, each of the slides numbered in its range.
    fn cells(
        rules: &Disclosure,
        cells: &[(&str, std::ops::Range<u32>)],
    ) -> BTreeMap<Vec<Option<Value>>, Cell> {
        cells
            .iter()
            .map(|(k, slides)| {
                let mut cell = Cell::default();
                for i in slides.clone() {
                    cell.add(rules.record_key(&slide(i)));
                }
                (vec![Some(Value::Text(k.to_string()))], cell)
            })
            .collect()
    }

    fn count(c: &ReleasedCell) -> u64 {
        match c.count {
            Released::Count(n) => n,
            Released::Below(_) => panic!("suppressed: {c:?}"),
        }
    }

    #[test]
    fn small_cells_are_suppressed_and_no_count_shows_below_the_threshold() {
        let rules = Disclosure::with_secret(10, 3, [1; 32]);
        let grouped = cells(
            &rules,
            &[("A", 0..0), ("B", 0..9), ("C", 0..10), ("D", 0..500)],
        );
        // Ungrouped, a small count is "below 10", 0 included.
        let total = rules.release(false, &grouped);
        assert_eq!(total.cells[0].count, Released::Below(10));
        assert_eq!(total.cells[1].count, Released::Below(10));
        assert!((10..=13).contains(&count(&total.cells[2])));
        assert!((497..=503).contains(&count(&total.cells[3])));
        // Grouped, small groups are not listed at all.
        let listed = rules.release(true, &grouped);
        let keys: Vec<_> = listed
            .cells
            .iter()
            .map(|c| c.key[0].clone().unwrap())
            .collect();
        assert_eq!(keys, ["C", "D"]);
    }

    #[test]
    fn noise_follows_the_slides_counted_not_the_query() {
        let site = Disclosure::with_secret(0, 5, [2; 32]);
        // 200 groups of 1000 slides each, all different.
        let many: Vec<(String, std::ops::Range<u32>)> = (0..200)
            .map(|i| (format!("g{i}"), i * 1000..(i + 1) * 1000))
            .collect();
        let named: Vec<(&str, std::ops::Range<u32>)> =
            many.iter().map(|(k, r)| (k.as_str(), r.clone())).collect();
        let once = site.release(false, &cells(&site, &named));
        assert_eq!(
            once,
            site.release(false, &cells(&site, &named)),
            "repeatable"
        );
        // The same slides under another name (another query, another group) move alike.
        let renamed: Vec<(String, std::ops::Range<u32>)> = many
            .iter()
            .map(|(k, r)| (format!("other {k}"), r.clone()))
            .collect();
        let renamed: Vec<(&str, std::ops::Range<u32>)> = renamed
            .iter()
            .map(|(k, r)| (k.as_str(), r.clone()))
            .collect();
        let again: Vec<u64> = site
            .release(false, &cells(&site, &renamed))
            .cells
            .iter()
            .map(count)
            .collect();
        let mut first: Vec<(String, u64)> = once
            .cells
            .iter()
            .map(|c| (format!("other {}", c.key[0].clone().unwrap()), count(c)))
            .collect();
        first.sort();
        assert_eq!(first.iter().map(|(_, n)| *n).collect::<Vec<_>>(), again);
        // One slide more or less, or another site's key: fresh noise.
        let shifted: Vec<(&str, std::ops::Range<u32>)> = named
            .iter()
            .map(|(k, r)| (*k, r.start..r.end + 1))
            .collect();
        assert_ne!(
            once.cells.iter().map(count).collect::<Vec<_>>(),
            site.release(false, &cells(&site, &shifted))
                .cells
                .iter()
                .map(|c| count(c) - 1)
                .collect::<Vec<_>>()
        );
        let other_site = Disclosure::with_secret(0, 5, [3; 32]);
        assert_ne!(once, other_site.release(false, &cells(&other_site, &named)));
        // Every move within the bound, both ways, averaging near zero.
        let moves: Vec<i64> = once.cells.iter().map(|c| count(c) as i64 - 1000).collect();
        assert!(moves.iter().all(|m| m.abs() <= 5));
        assert!(moves.contains(&5) && moves.contains(&-5));
        let mean = moves.iter().sum::<i64>() as f64 / moves.len() as f64;
        assert!(mean.abs() < 1.0, "mean move {mean}");
    }

    #[test]
    fn without_noise_counts_are_exact() {
        let site = Disclosure::with_secret(0, 0, [4; 32]);
        let released = site.release(false, &cells(&site, &[("A", 0..0), ("B", 0..7)]));
        assert_eq!(released.cells[0].count, Released::Count(0));
        assert_eq!(released.cells[1].count, Released::Count(7));
    }
}
