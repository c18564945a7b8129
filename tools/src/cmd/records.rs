//! `slidemesh-tools records`: adds synthetic slide records to a node's store for research
//! queries (demos and `bench research`): each record is what ingest indexes of a slide (stain,
//! site, year, age band, sex, scanner, accession number) and what `annotate-lims` records of
//! its case (diagnosis, grade, specimen, consent, opt-out), with realistic mixes and
//! deterministic from the trust. Records only: no images, so the slide list does not show
//! them, but research queries count them like any slide, also for other trusts: they are for
//! demo and benchmark nodes only, so the command wants `--demo-node`. Their accession
//! numbers start `SYNTH-` and their series UIDs `2.25.0.`, and the command refuses a store
//! that already has LIMS entries of its own (it never overwrites a real case's entry). A
//! running node sees them at its next query (the write moves the research generation).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use slidemesh_node::context::NodeContext;
use slidemesh_node::datadir::DataDir;
use slidemesh_node::store::lims::LimsEntry;
use slidemesh_node::store::research::SlideFacts;

#[derive(Debug, Args)]
pub struct RecordsArgs {
    /// The node's data directory
    #[arg(long)]
    data: PathBuf,
    /// How many records to add
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Confirms the node is a demo or benchmark node: the records are counted by research
    /// queries from every member like real slides
    #[arg(long)]
    demo_node: bool,
}

pub fn run(args: RecordsArgs) -> Result<()> {
    if !args.demo_node {
        anyhow::bail!(
            "synthetic records are counted by research queries like real slides: add them to a \
             demo or benchmark node only, and say so with --demo-node"
        );
    }
    let node = NodeContext::open(DataDir::new(&args.data))?;
    let trust = node.config.node.trust.to_string();
    let made = records(&trust, args.count);
    store_records(&node.store, &made)?;
    drop(node);
    eprintln!(
        "{} synthetic slide records added to {trust}'s store",
        made.len()
    );
    Ok(())
}

/// splitmix64: a small deterministic generator (the records must be the same every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One of `choices`, weighted.
    fn pick<'a>(&mut self, choices: &[(&'a str, u64)]) -> &'a str {
        let total: u64 = choices.iter().map(|(_, w)| w).sum();
        let mut at = self.next() % total;
        for (choice, weight) in choices {
            if at < *weight {
                return choice;
            }
            at -= weight;
        }
        choices[0].0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One record: its facts and its LIMS entry.
pub struct Record {
    pub facts: SlideFacts,
    pub lims: LimsEntry,
}

/// `n` records of `trust`, the same every time.
pub fn records(trust: &str, n: usize) -> Vec<Record> {
    let mut rng = Rng(u64::from_le_bytes(
        blake3::hash(trust.as_bytes()).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    ));
    (0..n)
        .map(|i| {
            let site = rng.pick(&[
                ("Breast", 40),
                ("Colon", 15),
                ("Prostate", 15),
                ("Lung", 10),
                ("Skin", 20),
            ]);
            let sex = match site {
                "Breast" => rng.pick(&[("F", 99), ("M", 1)]),
                "Prostate" => "M",
                _ => rng.pick(&[("F", 50), ("M", 50)]),
            };
            let diagnosis = match site {
                "Breast" => rng.pick(&[("413448000", 60), ("399935008", 25), ("9846003", 15)]),
                // Adenocarcinoma (no subtype) for the other sites.
                _ => "35917007",
            };
            let grade = (diagnosis == "413448000").then(|| 1 + rng.below(3) as i64);
            let consent = rng.pick(&[("GRU", 70), ("HMB", 15), ("CC", 15)]);
            let accession = format!("SYNTH-{trust}-{i:08}");
            Record {
                facts: SlideFacts {
                    trust: Some(trust.parse().expect("an ODS code")),
                    stain: Some(
                        rng.pick(&[("H&E", 85), ("ER", 5), ("PR", 4), ("HER2", 4), ("Ki-67", 2)])
                            .into(),
                    ),
                    anatomic_site: Some(site.into()),
                    year: Some(2015 + rng.below(11) as i64),
                    age_band: Some(20 + 10 * rng.below(8) as i64),
                    sex: Some(sex.into()),
                    scanner: Some(
                        rng.pick(&[
                            ("Leica GT450", 40),
                            ("Philips UFS", 30),
                            ("Hamamatsu S360", 20),
                            ("3DHISTECH P1000", 10),
                        ])
                        .into(),
                    ),
                    accession: Some(accession),
                    series_uid: format!("2.25.0.{}.{i}", trust.bytes().map(u64::from).sum::<u64>()),
                },
                lims: LimsEntry {
                    diagnoses: vec![diagnosis.into()],
                    grade,
                    specimen: Some(rng.pick(&[("core biopsy", 60), ("excision", 40)]).into()),
                    consent: vec![consent.into()],
                    opted_out: rng.below(100) < 3,
                },
            }
        })
        .collect()
}

/// Writes records into a store in two transactions (their facts, their LIMS entries); refuses
/// a store whose LIMS already lists cases (a real node's, or records added before).
pub fn store_records(store: &slidemesh_node::store::Store, records: &[Record]) -> Result<()> {
    if !store.lims()?.is_empty() {
        anyhow::bail!(
            "this node's store already has LIMS entries; synthetic records go only into a \
             store without any (they would sit beside, or replace, real cases)"
        );
    }
    let facts: Vec<_> = records
        .iter()
        .map(|r| {
            let id = slidemesh_protocol::SlideId::of(r.facts.series_uid.as_bytes());
            (id, r.facts.clone())
        })
        .collect();
    store
        .create_research_index(&facts)
        .context("write the records' facts")?;
    let lims: Vec<(String, LimsEntry)> = records
        .iter()
        .map(|r| {
            (
                r.facts.accession.clone().unwrap_or_default(),
                r.lims.clone(),
            )
        })
        .collect();
    store
        .put_lims(&lims)
        .context("write the records' LIMS entries")?;
    Ok(())
}

/// Opens a node's data directory and adds `records` (see [`store_records`]).
pub fn add_to_node(data: &Path, records: &[Record]) -> Result<()> {
    let node = NodeContext::open(DataDir::new(data))?;
    store_records(&node.store, records)
}
