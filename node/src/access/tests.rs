//! Decisions as tables of plain values: no store, no process, no clock.

use slidemesh_protocol::{Action, Grant, NodeKey, Purpose, Revocation, SignedGrant};

use super::*;
use crate::consent::DEFAULT_POLICY;
use crate::testing::member;

const NOW: u64 = 1_800_000_100;

fn trust(code: &str) -> TrustCode {
    code.parse().unwrap()
}

fn grant(owner: &str, grantee: &str, slide: SlideId, purpose: Purpose) -> Grant {
    Grant {
        slide,
        owner: owner.parse().unwrap(),
        grantee: grantee.parse().unwrap(),
        action: Action::View,
        purpose,
        reference: None,
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
    }
}

/// Signs without `SignedGrant::sign`'s own checks, as a dishonest member could.
fn forged(grant: &Grant, key: &NodeKey) -> SignedGrant {
    let bytes = slidemesh_protocol::canonical::encode(grant);
    let signature = key
        .sign(
            slidemesh_protocol::grant::GRANT_DOMAIN,
            slidemesh_protocol::GrantId::of(&bytes).as_bytes(),
        )
        .to_vec();
    SignedGrant {
        bytes,
        signer: key.public(),
        signature,
    }
}

/// `signer`'s revocation of `signed`, made in the name of `owner`.
fn revocation(signed: &SignedGrant, owner: &str, signer: &NodeKey) -> SignedRevocation {
    SignedRevocation::sign(
        &Revocation {
            grant: signed.id(),
            owner: owner.parse().unwrap(),
            revoked_at: NOW - 10,
        },
        signer,
    )
}

struct World {
    leeds: NodeKey,
    bradford: NodeKey,
    roster: Roster,
    policy: Policy,
    slide: SlideId,
}

impl World {
    /// The slide's rules under the default policy and this world's roster.
    fn rules<'a>(&'a self, consent: &'a SlideConsent, owner: &'a TrustCode) -> Rules<'a> {
        Rules {
            policy: &self.policy,
            consent,
            owner,
            roster: Some(&self.roster),
            listed: None,
        }
    }
}

fn world() -> World {
    let (leeds, bradford) = (NodeKey::generate(), NodeKey::generate());
    let roster = Roster {
        federation: "test".into(),
        version: 1,
        quorum: 1,
        members: vec![member("RAE", &bradford), member("RR8", &leeds)],
        issued_at: 1_800_000_000,
    };
    World {
        leeds,
        bradford,
        roster,
        policy: Policy::from_text(DEFAULT_POLICY).unwrap(),
        slide: SlideId::of(b"a slide of Leeds"),
    }
}

fn consent(codes: &[&str], opted_out: bool) -> SlideConsent {
    SlideConsent {
        codes: codes.iter().map(|c| c.to_string()).collect(),
        opted_out,
        expires: None,
    }
}

fn person(id: &str, role: &str) -> UserClaim {
    UserClaim::new(id, role).unwrap()
}

#[test]
fn only_the_slides_owner_grants_and_never_to_itself() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let care = consent(&[], false);
    let rules = w.rules(&care, &leeds);
    let ask = |who: &TrustCode, signed: &SignedGrant| {
        decide(
            &rules,
            Subject {
                trust: who,
                user: None,
            },
            Basis::Grant {
                signed,
                revocations: Ok(vec![]),
            },
            w.slide,
            &[ConsentAction::View],
            NOW,
        )
    };
    let honest = SignedGrant::sign(
        &grant("RR8", "RAE", w.slide, Purpose::SecondOpinion),
        &w.leeds,
    )
    .unwrap();
    assert!(ask(&bradford, &honest).allowed());
    // Bradford granting itself Leeds's slide, as owner, is refused.
    let own = forged(
        &grant("RAE", "RAE", w.slide, Purpose::DirectCare),
        &w.bradford,
    );
    let reason = ask(&bradford, &own).outcome.unwrap_err().to_string();
    assert!(reason.contains("belongs to RR8"), "{reason}");
    // So is Leeds "granting" a slide to itself.
    let to_itself = forged(&grant("RR8", "RR8", w.slide, Purpose::DirectCare), &w.leeds);
    let reason = ask(&leeds, &to_itself).outcome.unwrap_err().to_string();
    assert!(reason.contains("to itself"), "{reason}");
    // A grant for Bradford does not let Leeds's other peers in, and is not for ever.
    let verdict = ask(&trust("RCF"), &honest);
    assert!(!verdict.allowed());
    assert_eq!(verdict.decisions.len(), 1, "a grant refusal is one entry");
    assert!(verdict.decisions[0].rules[0].starts_with("grant: "));
}

#[test]
fn revocation_is_a_refusal_and_an_unreadable_store_is_a_failure() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let care = consent(&[], false);
    let rules = w.rules(&care, &leeds);
    let signed = SignedGrant::sign(&grant("RR8", "RAE", w.slide, Purpose::Mdt), &w.leeds).unwrap();
    let ask = |revocations: Result<Vec<SignedRevocation>, String>| {
        decide(
            &rules,
            Subject {
                trust: &bradford,
                user: None,
            },
            Basis::Grant {
                signed: &signed,
                revocations,
            },
            w.slide,
            &[ConsentAction::FetchTiles],
            NOW,
        )
    };
    let revoked = ask(Ok(vec![revocation(&signed, "RR8", &w.leeds)]));
    assert!(matches!(revoked.outcome, Err(Refusal::Denied(ref r)) if r.contains("revoked")));
    assert_eq!(
        revoked
            .entries(Side::Served, &bradford, "peer", "tiles")
            .len(),
        1
    );
    let failed = ask(Err("disk on fire".into()));
    assert!(matches!(failed.outcome, Err(Refusal::Failed(_))));
    assert!(
        failed.decisions.is_empty(),
        "a failure to decide is not logged as a decision"
    );
    // After the grant's end, nothing.
    let late = decide(
        &rules,
        Subject {
            trust: &bradford,
            user: None,
        },
        Basis::Grant {
            signed: &signed,
            revocations: Ok(vec![]),
        },
        w.slide,
        &[ConsentAction::View],
        1_800_003_601,
    );
    assert!(!late.allowed());
}

/// The access matrix for grantees: purpose x recorded consent x action, through the grant.
#[test]
fn grantees_by_purpose_consent_and_action() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    use ConsentAction::{FetchTiles, SeeLabel, View};
    use Purpose::*;
    // (purpose, consent codes, opted out, action, allowed)
    type Row<'a> = (Purpose, &'a [&'a str], bool, ConsentAction, bool);
    let table: &[Row] = &[
        (SecondOpinion, &[], false, View, true),
        (SecondOpinion, &[], false, SeeLabel, true),
        (Mdt, &[], true, FetchTiles, true),
        (Research, &[], false, View, false),
        (Research, &["GRU"], false, FetchTiles, true),
        (Research, &["GRU"], false, SeeLabel, false),
        (Research, &["GRU"], true, View, false),
        (Education, &["GRU"], false, View, true),
        (Education, &["GRU"], false, SeeLabel, false),
        (Education, &["HMB"], false, View, false),
        (AuditQa, &[], false, View, true),
        (AuditQa, &[], false, SeeLabel, false),
    ];
    for &(purpose, codes, opted_out, action, expected) in table {
        let recorded = consent(codes, opted_out);
        let rules = w.rules(&recorded, &leeds);
        let signed = SignedGrant::sign(&grant("RR8", "RAE", w.slide, purpose), &w.leeds).unwrap();
        let verdict = decide(
            &rules,
            Subject {
                trust: &bradford,
                user: None,
            },
            Basis::Grant {
                signed: &signed,
                revocations: Ok(vec![]),
            },
            w.slide,
            &[action],
            NOW,
        );
        assert_eq!(
            verdict.allowed(),
            expected,
            "{purpose:?} {codes:?} opted_out={opted_out} {action:?}: {:?}",
            verdict.outcome
        );
        assert_eq!(verdict.purpose, purpose.as_str());
        let entries = verdict.entries(Side::Served, &bradford, "p", "what");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].allowed, expected);
        assert_eq!(entries[0].grant, Some(signed.id()));
    }
}

/// This trust's own people and node on its own slides: by role and consent, no grant.
#[test]
fn own_people_by_role_and_consent() {
    let w = world();
    let leeds = trust("RR8");
    use ConsentAction::{FetchTiles, SeeLabel, View};
    // (role or None for the node itself, consent codes, opted out, action, allowed)
    type Row<'a> = (Option<&'a str>, &'a [&'a str], bool, ConsentAction, bool);
    let table: &[Row] = &[
        (None, &[], false, SeeLabel, true),
        (Some("pathologist"), &[], true, SeeLabel, true),
        (Some("biomedical-scientist"), &[], false, FetchTiles, true),
        (Some("student"), &[], false, View, false),
        (Some("student"), &["GRU"], false, FetchTiles, true),
        (Some("student"), &["GRU"], false, SeeLabel, false),
        (Some("student"), &["GRU"], true, View, false),
        (Some("researcher"), &["HMB"], false, View, true),
        (Some("researcher"), &["HMB"], true, View, false),
        (Some("researcher"), &["HMB"], false, SeeLabel, false),
        (Some("porter"), &["GRU"], false, View, false),
    ];
    for &(role, codes, opted_out, action, expected) in table {
        let recorded = consent(codes, opted_out);
        let rules = Rules {
            policy: &w.policy,
            consent: &recorded,
            owner: &leeds,
            roster: None,
            listed: None,
        };
        let user = role.map(|r| person("jsmith", r));
        let verdict = decide(
            &rules,
            Subject {
                trust: &leeds,
                user: user.as_ref(),
            },
            Basis::OwnSlide,
            w.slide,
            &[action],
            NOW,
        );
        assert_eq!(
            verdict.allowed(),
            expected,
            "{role:?} {codes:?} opted_out={opted_out} {action:?}: {:?}",
            verdict.outcome
        );
        assert_eq!(verdict.purpose, OWN_TRUST_PURPOSE);
        let entries = verdict.entries(Side::Gateway, &leeds, "", "slide");
        assert_eq!(entries[0].user, user.map(|u| u.to_string()));
    }
}

#[test]
fn another_trust_needs_a_grant_even_for_a_person_the_policy_would_admit() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let care = consent(&["GRU"], false);
    let rules = w.rules(&care, &leeds);
    let pathologist = person("jsmith", "pathologist");
    let verdict = decide(
        &rules,
        Subject {
            trust: &bradford,
            user: Some(&pathologist),
        },
        Basis::OwnSlide,
        w.slide,
        &[ConsentAction::View],
        NOW,
    );
    assert!(!verdict.allowed());
    assert!(
        verdict
            .outcome
            .unwrap_err()
            .to_string()
            .contains("needs a grant")
    );
}

#[test]
fn a_refusal_ends_the_list_and_names_the_rule() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let recorded = consent(&["GRU"], false);
    let rules = w.rules(&recorded, &leeds);
    let signed = SignedGrant::sign(
        &grant("RR8", "RAE", w.slide, Purpose::SecondOpinion),
        &w.leeds,
    )
    .unwrap();
    let student = person("kjones", "student");
    let checked = check_grant(
        &signed,
        &GrantQuestion {
            roster: &w.roster,
            requester: &bradford,
            slide: &w.slide,
            owner: &leeds,
            now: NOW,
            revocations: Ok(vec![]),
            listed: None,
        },
    )
    .unwrap();
    let verdict = decide(
        &rules,
        Subject {
            trust: &bradford,
            user: Some(&student),
        },
        Basis::Checked(&checked),
        w.slide,
        &[
            ConsentAction::FetchTiles,
            ConsentAction::SeeLabel,
            ConsentAction::View,
        ],
        NOW,
    );
    assert!(!verdict.allowed());
    let decided: Vec<(ConsentAction, bool)> = verdict
        .decisions
        .iter()
        .map(|d| (d.action, d.allowed))
        .collect();
    assert_eq!(
        decided,
        vec![
            (ConsentAction::FetchTiles, true),
            (ConsentAction::SeeLabel, false)
        ]
    );
    assert_eq!(verdict.decisions[1].rules, vec!["label-for-clinical-roles"]);
    assert!(!verdict.decisions[1].policy_hash.is_empty());
}

#[test]
fn metadata_and_tiles_name_their_actions() {
    assert_eq!(metadata_actions(false), vec![ConsentAction::View]);
    assert_eq!(
        metadata_actions(true),
        vec![ConsentAction::View, ConsentAction::SeeLabel]
    );
    assert_eq!(tile_actions(false), vec![ConsentAction::FetchTiles]);
    assert_eq!(
        tile_actions(true),
        vec![ConsentAction::FetchTiles, ConsentAction::SeeLabel]
    );
}

/// Which revocations count and which grants hold away from the owner, as a table: a
/// revocation only by the grant's issuer (Leeds), and, where a copy or a grantee decides
/// with the owner's signed statement, only a grant that statement lists.
#[test]
fn revocations_by_the_issuer_and_the_owners_list_of_grants() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let harrogate = NodeKey::generate();
    let mut roster = w.roster.clone();
    roster.members.push(member("RCD", &harrogate));
    let care = consent(&[], false);
    let signed = SignedGrant::sign(
        &grant("RR8", "RAE", w.slide, Purpose::SecondOpinion),
        &w.leeds,
    )
    .unwrap();
    let other = SignedGrant::sign(
        &grant("RR8", "RCD", w.slide, Purpose::SecondOpinion),
        &w.leeds,
    )
    .unwrap();
    let by_leeds = revocation(&signed, "RR8", &w.leeds);
    let by_bradford_as_leeds = revocation(&signed, "RR8", &w.bradford);
    let by_harrogate = revocation(&signed, "RCD", &harrogate);
    let of_another_grant = revocation(&other, "RR8", &w.leeds);
    let listed_both = [signed.id(), other.id()];
    let listed_other = [other.id()];
    // (revocations held, the owner's list (None: this node is the owner), allowed)
    type Row<'a> = (Vec<&'a SignedRevocation>, Option<&'a [GrantId]>, bool);
    let table: Vec<Row> = vec![
        (vec![], None, true),
        (vec![&by_leeds], None, false),
        // Another member's revocation, in its own name or the owner's, revokes nothing.
        (vec![&by_bradford_as_leeds], None, true),
        (vec![&by_harrogate], None, true),
        (vec![&of_another_grant], None, true),
        // Kept beside a forged one, the issuer's still counts.
        (vec![&by_harrogate, &by_leeds], None, false),
        // Away from the owner: listed and unrevoked holds; unlisted is refused even though
        // no revocation ever arrived; listed but revoked by the issuer is refused.
        (vec![], Some(&listed_both[..]), true),
        (vec![], Some(&listed_other[..]), false),
        (vec![], Some(&[][..]), false),
        (vec![&by_leeds], Some(&listed_both[..]), false),
        (vec![&by_harrogate], Some(&listed_both[..]), true),
    ];
    for (held, listed, expected) in table {
        let rules = Rules {
            policy: &w.policy,
            consent: &care,
            owner: &leeds,
            roster: Some(&roster),
            listed: listed.map(|grants| OwnersList {
                grants,
                issued_at: NOW - 60,
            }),
        };
        let described: Vec<String> = held
            .iter()
            .map(|r| format!("{} as {}", r.signer, r.verify().unwrap().owner))
            .collect();
        let verdict = decide(
            &rules,
            Subject {
                trust: &bradford,
                user: None,
            },
            Basis::Grant {
                signed: &signed,
                revocations: Ok(held.into_iter().cloned().collect()),
            },
            w.slide,
            &[ConsentAction::View],
            NOW,
        );
        assert_eq!(
            verdict.allowed(),
            expected,
            "revocations {described:?}, listed {listed:?}: {:?}",
            verdict.outcome
        );
        if let (Some(list), false) = (listed, expected)
            && !list.contains(&signed.id())
        {
            let reason = verdict.outcome.unwrap_err().to_string();
            assert!(reason.contains("not among the grants"), "{reason}");
            assert_eq!(verdict.decisions.len(), 1);
            assert!(verdict.decisions[0].rules[0].starts_with("grant: "));
        }
    }
    // A grant checked a moment ago is refused once the owner's newer list leaves it out.
    let checked = check_grant(
        &signed,
        &GrantQuestion {
            roster: &roster,
            requester: &bradford,
            slide: &w.slide,
            owner: &leeds,
            now: NOW,
            revocations: Ok(vec![]),
            listed: Some(OwnersList {
                grants: &listed_both,
                issued_at: NOW - 60,
            }),
        },
    )
    .unwrap();
    let newer = Rules {
        policy: &w.policy,
        consent: &care,
        owner: &leeds,
        roster: Some(&roster),
        listed: Some(OwnersList {
            grants: &listed_other,
            issued_at: NOW,
        }),
    };
    let verdict = decide(
        &newer,
        Subject {
            trust: &bradford,
            user: None,
        },
        Basis::Checked(&checked),
        w.slide,
        &[ConsentAction::FetchTiles],
        NOW,
    );
    assert!(!verdict.allowed());
    assert_eq!(verdict.grant, Some(signed.id()));
    assert_eq!(verdict.purpose, "second-opinion");
    // An unreadable store is a failure to decide, not a refusal.
    let failed = decide(
        &newer,
        Subject {
            trust: &bradford,
            user: None,
        },
        Basis::Grant {
            signed: &signed,
            revocations: Err("disk on fire".into()),
        },
        w.slide,
        &[ConsentAction::View],
        NOW,
    );
    assert!(matches!(failed.outcome, Err(Refusal::Failed(_))));
}

#[test]
fn an_offered_case_may_be_claimed_by_a_members_pathologist_and_nothing_else() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let care = consent(&["CC"], false);
    let rules = w.rules(&care, &leeds);
    let offered = Basis::Offered {
        offer: "an offer",
        expires_at: NOW + 60,
    };
    let ask = |user: Option<&UserClaim>, actions: &[ConsentAction], basis| {
        decide(
            &rules,
            Subject {
                trust: &bradford,
                user,
            },
            basis,
            w.slide,
            actions,
            NOW,
        )
    };
    let pathologist = person("apatel", "pathologist");
    let verdict = ask(Some(&pathologist), &[ConsentAction::Claim], offered);
    assert!(verdict.allowed(), "{:?}", verdict.outcome);
    assert_eq!(verdict.purpose, "direct-care");
    assert_eq!(verdict.decisions[0].rules, ["claim-offered-cases"]);
    // The trust's node itself may claim (on loopback); a student may not.
    assert!(
        ask(
            None,
            &[ConsentAction::Claim],
            Basis::Offered {
                offer: "x",
                expires_at: NOW + 60
            }
        )
        .allowed()
    );
    let student = person("bjones", "student");
    let refused = ask(
        Some(&student),
        &[ConsentAction::Claim],
        Basis::Offered {
            offer: "x",
            expires_at: NOW + 60,
        },
    );
    assert!(!refused.allowed());
    assert_eq!(refused.decisions[0].rules, ["claim-by-pathologists-only"]);
    // An offer is no grant: viewing needs the grant the claim brings.
    let viewing = ask(
        Some(&pathologist),
        &[ConsentAction::View],
        Basis::Offered {
            offer: "x",
            expires_at: NOW + 60,
        },
    );
    assert!(
        viewing
            .outcome
            .unwrap_err()
            .to_string()
            .contains("nothing else")
    );
    // Nor does an ended offer hold.
    let ended = ask(
        Some(&pathologist),
        &[ConsentAction::Claim],
        Basis::Offered {
            offer: "x",
            expires_at: NOW,
        },
    );
    assert!(ended.outcome.unwrap_err().to_string().contains("ended"));
}

#[test]
fn research_without_a_grant_may_count_consented_slides_and_nothing_else() {
    let w = world();
    let leeds = trust("RR8");
    let ask = |consent: &SlideConsent, user: Option<&UserClaim>, actions: &[_]| {
        decide(
            &w.rules(consent, &leeds),
            Subject {
                trust: &trust("RAE"),
                user,
            },
            Basis::Research,
            w.slide,
            actions,
            NOW,
        )
    };
    let query = [ConsentAction::Query];
    let consented = consent(&["GRU"], false);
    let verdict = ask(&consented, None, &query);
    assert!(verdict.allowed(), "{:?}", verdict.outcome);
    assert_eq!(verdict.purpose, "research");
    assert_eq!(verdict.decisions[0].rules, ["research-with-consent"]);
    let researcher = person("amy", "researcher");
    assert!(ask(&consented, Some(&researcher), &query).allowed());
    // Clinical care only: the policy has no rule for it (default deny).
    assert!(!ask(&consent(&["CC"], false), None, &query).allowed());
    // IRB: an ethics approval must be in a grant the owner signed, so never without one.
    assert!(!ask(&consent(&["GRU", "IRB"], false), None, &query).allowed());
    // An opted-out patient is never counted, whatever the policy says: built in.
    let opted_out = ask(&consent(&["GRU"], true), None, &query);
    assert!(!opted_out.allowed());
    assert!(opted_out.decisions[0].rules[0].starts_with("built-in: "));
    // Without a grant, research reaches no slide's content.
    for action in [ConsentAction::View, ConsentAction::FetchTiles] {
        let verdict = ask(&consented, None, &[action]);
        let reason = verdict.outcome.unwrap_err().to_string();
        assert!(reason.contains("nothing else"), "{reason}");
    }
}

#[test]
fn an_approved_project_receives_consented_slides_as_a_cohort_and_nothing_else() {
    let w = world();
    let leeds = trust("RR8");
    let ask = |consent: &SlideConsent, actions: &[_], expires_at: u64| {
        decide(
            &w.rules(consent, &leeds),
            Subject {
                trust: &trust("RAE"),
                user: None,
            },
            Basis::Project {
                reference: "REC 26/YH/0042",
                expires_at,
            },
            w.slide,
            actions,
            NOW,
        )
    };
    let cohort = [ConsentAction::ReceiveCohort];
    let later = NOW + 3600;
    let verdict = ask(&consent(&["GRU"], false), &cohort, later);
    assert!(verdict.allowed(), "{:?}", verdict.outcome);
    assert_eq!(verdict.purpose, "research");
    // The owner's recorded approval is the ethics approval IRB consent asks for.
    assert!(ask(&consent(&["GRU", "IRB"], false), &cohort, later).allowed());
    // Clinical care only: default deny. Opted out: built in.
    assert!(!ask(&consent(&["CC"], false), &cohort, later).allowed());
    let opted_out = ask(&consent(&["GRU"], true), &cohort, later);
    assert!(opted_out.decisions[0].rules[0].starts_with("built-in: "));
    // An ended approval holds for nothing; nor does it reach content without a grant.
    let ended = ask(&consent(&["GRU"], false), &cohort, NOW);
    assert!(ended.outcome.unwrap_err().to_string().contains("ended"));
    for action in [ConsentAction::View, ConsentAction::Query] {
        let verdict = ask(&consent(&["GRU"], false), &[action], later);
        let reason = verdict.outcome.unwrap_err().to_string();
        assert!(reason.contains("nothing else"), "{reason}");
    }
}

/// A replicate grant lets the replica's node hold the slide for care, and lets no one at
/// the replica view it; a view grant never replicates.
#[test]
fn a_replicate_grant_replicates_for_care_and_shows_nothing() {
    let w = world();
    let (leeds, bradford) = (trust("RR8"), trust("RAE"));
    let recorded = consent(&[], false);
    let rules = w.rules(&recorded, &leeds);
    let replicate = |purpose| {
        let mut g = grant("RR8", "RAE", w.slide, purpose);
        g.action = Action::Replicate;
        SignedGrant::sign(&g, &w.leeds).unwrap()
    };
    let view = SignedGrant::sign(&grant("RR8", "RAE", w.slide, Purpose::Mdt), &w.leeds).unwrap();
    let pathologist = person("RAE/jsmith", "pathologist");
    use ConsentAction::{FetchTiles, Replicate, SeeLabel, View};
    // (grant, person named, actions, allowed, reason contains)
    type Row<'a> = (&'a SignedGrant, bool, &'a [ConsentAction], bool, &'a str);
    let care = replicate(Purpose::DirectCare);
    let research = replicate(Purpose::Research);
    let table: &[Row] = &[
        (&care, false, &[Replicate], true, ""),
        (&care, true, &[Replicate], false, "never for a person"),
        (&care, false, &[FetchTiles], false, "not fetch_tiles it"),
        (&care, true, &[View, SeeLabel], false, "not view it"),
        (&care, false, &[Replicate, View], false, "on its own"),
        (&research, false, &[Replicate], false, "never for research"),
        (
            &view,
            false,
            &[Replicate],
            false,
            "holds no replicate grant",
        ),
        (&view, false, &[FetchTiles], true, ""),
    ];
    for &(signed, named, actions, allowed, reason) in table {
        let verdict = decide(
            &rules,
            Subject {
                trust: &bradford,
                user: named.then_some(&pathologist),
            },
            Basis::Grant {
                signed,
                revocations: Ok(vec![]),
            },
            w.slide,
            actions,
            NOW,
        );
        assert_eq!(
            verdict.allowed(),
            allowed,
            "{actions:?} named={named}: {:?}",
            verdict.outcome
        );
        if !allowed {
            let said = verdict.outcome.unwrap_err().to_string();
            assert!(said.contains(reason), "{actions:?}: {said}");
            assert!(!verdict.decisions.is_empty(), "a refusal is logged");
        } else if actions == [Replicate] {
            assert_eq!(
                verdict.decisions[0].rules,
                vec!["replicas-for-care".to_string()]
            );
        }
    }
    // The mapping the answering side uses: a replicate grant's batch or manifest is
    // `replicate`, whatever it holds.
    assert_eq!(peer_tile_actions(Action::Replicate, true), vec![Replicate]);
    assert_eq!(
        peer_tile_actions(Action::View, true),
        vec![FetchTiles, SeeLabel]
    );
    assert_eq!(peer_manifest_actions(Action::Replicate), vec![Replicate]);
}
