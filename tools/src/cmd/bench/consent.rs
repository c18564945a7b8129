//! `bench consent`: how fast the owner's cedar policy decides, beside the check every
//! request already pays before it (the grant's ed25519 signature), in one run on one core.
//!
//! The requests cycle through every purpose, action and a set of recorded consents (care
//! only, GRU, opted out, HMB+IRB, consent ended), so permits, forbids and default denies
//! are all in the mix. A manifest request costs one decision; a tile batch one, or two when
//! it holds a label or overview tile: that is the latency the policy adds to a batch.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use slidemesh_node::consent::{ConsentAction, ConsentRequest, DEFAULT_POLICY, Policy};
use slidemesh_node::store::consent::SlideConsent;
use slidemesh_protocol::{Action, Grant, NodeKey, Purpose, SignedGrant, SlideId, TrustCode};

use super::load::ratio;

#[derive(Debug, Args)]
pub struct ConsentBench {
    /// Decisions (and signature checks) to time
    #[arg(long, default_value_t = 200_000)]
    iterations: usize,
}

pub fn run(args: ConsentBench) -> Result<()> {
    let policy = Policy::from_text(DEFAULT_POLICY)?;
    let (requester, owner): (TrustCode, TrustCode) = ("RAE".parse()?, "RR8".parse()?);
    let consents = [
        SlideConsent::default(),
        consent(&["GRU"], false, None),
        consent(&["GRU"], true, None),
        consent(&["HMB", "IRB"], false, None),
        consent(&["GRU"], false, Some(1)),
    ];
    let actions = [
        ConsentAction::View,
        ConsentAction::FetchTiles,
        ConsentAction::SeeLabel,
    ];
    let slide = SlideId::of(b"bench");
    let now = 1_800_000_000;
    let mut requests = Vec::new();
    for c in &consents {
        for &purpose in &Purpose::ALL {
            for &action in &actions {
                requests.push((c, purpose, action));
            }
        }
    }

    // Warm up, then time each decision.
    let decide = |i: usize| {
        let (consent, purpose, action) = requests[i % requests.len()];
        policy.decide(&ConsentRequest {
            requester: &requester,
            action,
            slide,
            owner: &owner,
            consent,
            purpose,
            reference: i.is_multiple_of(2).then_some("REC 24/YH/0001"),
            grant_expires: now + 3600,
            now,
        })
    };
    let mut allowed = 0usize;
    for i in 0..1000 {
        allowed += decide(i).allowed as usize;
    }
    let mut latencies = Vec::with_capacity(args.iterations);
    let started = Instant::now();
    for i in 0..args.iterations {
        let t = Instant::now();
        allowed += decide(i).allowed as usize;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let decision_secs = started.elapsed().as_secs_f64();

    // Reference: verifying a grant's signature (what every request pays first).
    let key = NodeKey::generate();
    let signed = SignedGrant::sign(
        &Grant {
            slide,
            owner: owner.clone(),
            grantee: requester.clone(),
            action: Action::View,
            purpose: Purpose::SecondOpinion,
            reference: None,
            issued_at: now,
            expires_at: now + 3600,
        },
        &key,
    )?;
    let started = Instant::now();
    let mut verified = 0usize;
    for _ in 0..args.iterations {
        verified += signed.verify().is_ok() as usize;
    }
    let verify_secs = started.elapsed().as_secs_f64();

    latencies.sort_by(f64::total_cmp);
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let per_decision = decision_secs / args.iterations as f64 * 1e6;
    let per_verify = verify_secs / args.iterations as f64 * 1e6;
    println!(
        "{} decisions over {} request kinds ({} allowed), one core, same run",
        args.iterations,
        requests.len(),
        allowed
    );
    println!();
    println!(
        "| check | per second | mean (µs) | p50 (µs) | p99 (µs) | cost / grant signature check |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| cedar policy decision (default policy) | {:.0} | {per_decision:.1} | {:.1} | {:.1} | {} |",
        args.iterations as f64 / decision_secs,
        pct(50),
        pct(99),
        ratio(per_decision, per_verify)
    );
    println!(
        "| grant signature check (ed25519, reference) | {:.0} | {per_verify:.1} | - | - | 1.00x |",
        verified as f64 / verify_secs
    );
    println!();
    println!(
        "added latency per tile batch: {per_decision:.1} µs (one decision), {:.1} µs with a label tile (two)",
        2.0 * per_decision
    );
    Ok(())
}

fn consent(codes: &[&str], opted_out: bool, expires: Option<u64>) -> SlideConsent {
    SlideConsent {
        codes: codes.iter().map(|c| c.to_string()).collect(),
        opted_out,
        expires,
    }
}
