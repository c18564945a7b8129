//! `bench consent`: how fast the owner's cedar policy decides, beside the check every
//! request already pays before it (the grant's ed25519 signature), in one run on one core.
//!
//! The requests cycle through every purpose, action and a set of recorded consents (care
//! only, GRU, opted out, HMB+IRB, consent ended), so permits, forbids and default denies
//! are all in the mix. A manifest request costs one decision; a tile batch one, or two when
//! it holds a label or overview tile: that is the latency the policy adds to a batch.
//!
//! The same requests also go through `access::decide`, the one entry point every request
//! now takes: the grant check (signature, roster, time, revocation) and the policy and the
//! built-in label rule, plus the audit entries it hands back. Its cost is shown beside what
//! a request paid before it (a grant signature check and a cedar decision, separately).
//!
//! Since receipts, a served batch also waits for its audit entry to be committed (a redb
//! write transaction on a real file, fsync included) before the receipt is signed: timed
//! here one batch at a time (no other entry to share the commit with, the worst case) and
//! with eight batches at once (the writer commits what queued together).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use slidemesh_node::access;
use slidemesh_node::consent::{ConsentAction, ConsentRequest, DEFAULT_POLICY, Policy};
use slidemesh_node::store::consent::SlideConsent;
use slidemesh_protocol::{
    Action, Grant, Member, NodeKey, Purpose, Roster, SignedGrant, SlideId, TrustCode, UserClaim,
};

use super::load::ratio;

#[derive(Debug, Args)]
pub struct ConsentBench {
    /// Decisions (and signature checks) to time
    #[arg(long, default_value_t = 200_000)]
    iterations: usize,
    /// Receipts to time (each a durable audit commit and a signature)
    #[arg(long, default_value_t = 400)]
    receipts: usize,
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

    // Warm up, then time each decision: for the trust, then for named people (a student
    // and a pathologist in turn: the principal is then a User entity with its role).
    let people = [
        UserClaim::new("akhan", "student")?,
        UserClaim::new("jsmith", "pathologist")?,
    ];
    let decide_as = |i: usize, user: Option<&UserClaim>| {
        let (consent, purpose, action) = requests[i % requests.len()];
        policy.decide(&ConsentRequest {
            requester: &requester,
            user,
            action,
            slide,
            owner: &owner,
            consent,
            purpose: Some(purpose),
            reference: i.is_multiple_of(2).then_some("REC 24/YH/0001"),
            grant_expires: now + 3600,
            now,
        })
    };
    let decide = |i: usize| decide_as(i, None);
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
    let started = Instant::now();
    for i in 0..args.iterations {
        allowed += decide_as(i, Some(&people[i % 2])).allowed as usize;
    }
    let person_secs = started.elapsed().as_secs_f64();

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

    // The same requests through access::decide: under the grant as presented (signature
    // checked each time, as a manifest request is), and under a grant checked once (as a
    // tile batch on a held session is); and this trust's people on its own slide.
    let roster = Roster {
        federation: "bench".into(),
        version: 1,
        quorum: 1,
        members: vec![
            Member {
                trust: owner.clone(),
                name: "owner".into(),
                node: key.public(),
                addrs: vec![],
            },
            Member {
                trust: requester.clone(),
                name: "requester".into(),
                node: NodeKey::generate().public(),
                addrs: vec![],
            },
        ],
        issued_at: now - 10,
    };
    let access_as = |i: usize, subject: access::Subject<'_>, basis: access::Basis<'_>| {
        let (consent, _, action) = requests[i % requests.len()];
        let rules = access::Rules {
            policy: &policy,
            consent,
            owner: &owner,
            roster: Some(&roster),
            listed: None,
        };
        let verdict = access::decide(&rules, subject, basis, slide, &[action], now);
        std::hint::black_box(verdict.entries(access::Side::Served, &requester, "bench", "bench"));
        verdict.allowed()
    };
    let grantee = access::Subject {
        trust: &requester,
        user: None,
    };
    let started = Instant::now();
    for i in 0..args.iterations {
        let basis = access::Basis::Grant {
            signed: &signed,
            revocations: Ok(Vec::new()),
        };
        allowed += access_as(i, grantee, basis) as usize;
    }
    let access_grant_secs = started.elapsed().as_secs_f64();
    let checked = access::check_grant(
        &signed,
        &access::GrantQuestion {
            roster: &roster,
            requester: &requester,
            slide: &slide,
            owner: &owner,
            now,
            revocations: Ok(Vec::new()),
            listed: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("the bench's grant does not check: {e}"))?;
    let started = Instant::now();
    for i in 0..args.iterations {
        allowed += access_as(i, grantee, access::Basis::Checked(&checked)) as usize;
    }
    let access_checked_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..args.iterations {
        let own_person = access::Subject {
            trust: &owner,
            user: Some(&people[i % 2]),
        };
        allowed += access_as(i, own_person, access::Basis::OwnSlide) as usize;
    }
    let access_own_secs = started.elapsed().as_secs_f64();

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
    let per_person = person_secs / args.iterations as f64 * 1e6;
    println!(
        "| cedar policy decision for a named person (User principal with role) | {:.0} | {per_person:.1} | - | - | {} |",
        args.iterations as f64 / person_secs,
        ratio(per_person, per_verify)
    );
    println!(
        "| grant signature check (ed25519, reference) | {:.0} | {per_verify:.1} | - | - | 1.00x |",
        verified as f64 / verify_secs
    );
    println!();
    // What a request paid before the access module: a signature check, then cedar.
    let before = per_verify + per_decision;
    let per = |secs: f64| secs / args.iterations as f64 * 1e6;
    println!("through access::decide (grant, policy, label rule, audit entries), same requests:");
    println!(
        "| path | per second | mean (µs) | / before (signature check + cedar, {before:.1} µs) | / cedar alone |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, secs) in [
        ("a grant as presented (manifest request)", access_grant_secs),
        (
            "a grant checked once (tile batch on a session)",
            access_checked_secs,
        ),
        ("own people on own slide (no grant)", access_own_secs),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {} | {} |",
            args.iterations as f64 / secs,
            per(secs),
            ratio(per(secs), before),
            ratio(per(secs), per_decision)
        );
    }
    println!();
    println!(
        "added latency per tile batch: {per_decision:.1} µs (one decision), {:.1} µs with a label tile (two)",
        2.0 * per_decision
    );

    let (alone, together) = time_receipts(args.receipts, &key, &owner, &requester, slide)?;
    println!();
    println!(
        "receipts ({} batches each way; audit entry committed to a redb file, then signed):",
        args.receipts
    );
    println!("| receipt wait | p50 (µs) | p99 (µs) | p50 / grant signature check |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, mut waits) in [
        ("one batch at a time", alone),
        ("eight batches at once", together),
    ] {
        waits.sort_by(f64::total_cmp);
        let at = |p: usize| waits[(waits.len() * p / 100).min(waits.len() - 1)];
        println!(
            "| {name} | {:.0} | {:.0} | {} |",
            at(50),
            at(99),
            ratio(at(50), per_verify)
        );
    }
    Ok(())
}

/// How long a served batch waits for its receipt: from appending the decision until the
/// receipt is signed. Returns the waits (µs) with batches one at a time, then eight at once.
fn time_receipts(
    count: usize,
    key: &NodeKey,
    log: &TrustCode,
    requester: &TrustCode,
    slide: SlideId,
) -> Result<(Vec<f64>, Vec<f64>)> {
    use slidemesh_node::audit::{AuditEntry, AuditLog, Side};
    use slidemesh_protocol::audit::{Receipt, SignedReceipt};

    let dir = std::env::temp_dir().join(format!("slidemesh-bench-receipts-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = std::sync::Arc::new(slidemesh_node::store::Store::open(&dir.join("store.redb"))?);
    let audit = AuditLog::start(store)?;
    let entry = AuditEntry {
        time: 1_800_000_000,
        side: Side::Served,
        peer: requester.clone(),
        peer_id: "12D3KooWbench".into(),
        user: None,
        purpose: "second-opinion".into(),
        slide,
        action: "fetch_tiles".into(),
        what: "40 tiles".into(),
        allowed: true,
        rules: vec!["care-purposes".into()],
        policy_hash: "00".repeat(32),
        grant: None,
    };
    let one = || -> Option<f64> {
        let t = Instant::now();
        let committed = audit
            .record_pending(entry.clone())
            .wait(std::time::Duration::from_secs(10))?;
        let receipt = Receipt {
            log: log.clone(),
            entries: vec![committed],
        };
        std::hint::black_box(SignedReceipt::sign(&receipt, key));
        Some(t.elapsed().as_secs_f64() * 1e6)
    };
    let alone: Vec<f64> = (0..count).filter_map(|_| one()).collect();
    let together: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..count / 8).filter_map(|_| one()).collect::<Vec<f64>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        alone.len() == count && !together.is_empty(),
        "the audit writer did not commit every entry"
    );
    Ok((alone, together))
}

fn consent(codes: &[&str], opted_out: bool, expires: Option<u64>) -> SlideConsent {
    SlideConsent {
        codes: codes.iter().map(|c| c.to_string()).collect(),
        opted_out,
        expires,
    }
}
