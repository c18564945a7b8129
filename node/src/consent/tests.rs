//! The default consent policy decides as its comments say, and mistakes in a policy are
//! refused at load naming the rule.

use super::*;

fn trust(code: &str) -> TrustCode {
    code.parse().unwrap()
}

fn decide(
    policy: &Policy,
    action: ConsentAction,
    purpose: Purpose,
    consent: &SlideConsent,
    reference: Option<&str>,
) -> Decision {
    let (requester, owner) = (trust("RAE"), trust("RR8"));
    policy.decide(&ConsentRequest {
        requester: &requester,
        user: None,
        action,
        slide: SlideId::of(b"slide"),
        owner: &owner,
        consent,
        purpose: Some(purpose),
        reference,
        grant_expires: 2_000_000_000,
        now: 1_800_000_000,
    })
}

fn consent(codes: &[&str], opted_out: bool, expires: Option<u64>) -> SlideConsent {
    SlideConsent {
        codes: codes.iter().map(|c| c.to_string()).collect(),
        opted_out,
        expires,
    }
}

#[test]
fn the_default_policy_fits_the_schema() {
    let policy = Policy::from_text(DEFAULT_POLICY).unwrap();
    assert_eq!(policy.hash().len(), 64);
}

#[test]
fn care_is_allowed_whatever_the_consent_for_research() {
    let policy = Policy::from_text(DEFAULT_POLICY).unwrap();
    let opted_out = consent(&["CC"], true, Some(1));
    for purpose in [Purpose::DirectCare, Purpose::SecondOpinion, Purpose::Mdt] {
        for action in [
            ConsentAction::View,
            ConsentAction::FetchTiles,
            ConsentAction::SeeLabel,
        ] {
            let d = decide(&policy, action, purpose, &opted_out, None);
            assert!(d.allowed, "{purpose:?} {action:?}: {}", d.explain());
            assert_eq!(d.rules, vec!["care"]);
        }
    }
}

#[test]
fn research_needs_consent_and_respects_the_opt_out() {
    let policy = Policy::from_text(DEFAULT_POLICY).unwrap();
    let view = ConsentAction::View;
    let d = decide(
        &policy,
        view,
        Purpose::Research,
        &SlideConsent::default(),
        None,
    );
    assert!(!d.allowed);
    assert!(
        d.rules.is_empty(),
        "default deny names no rule: {:?}",
        d.rules
    );
    let gru = consent(&["GRU"], false, None);
    assert!(decide(&policy, view, Purpose::Research, &gru, None).allowed);
    let opted_out = consent(&["GRU"], true, None);
    let d = decide(&policy, view, Purpose::Research, &opted_out, None);
    assert!(!d.allowed);
    assert_eq!(d.rules, vec!["national-data-opt-out"]);
    let irb = consent(&["HMB", "IRB"], false, None);
    assert!(!decide(&policy, view, Purpose::Research, &irb, None).allowed);
    assert!(
        decide(
            &policy,
            view,
            Purpose::Research,
            &irb,
            Some("REC 24/YH/0001")
        )
        .allowed
    );
    let expired = consent(&["GRU"], false, Some(1_700_000_000));
    let d = decide(&policy, view, Purpose::Research, &expired, None);
    assert_eq!(d.rules, vec!["consent-expired"]);
}

#[test]
fn labels_are_for_care_only() {
    let policy = Policy::from_text(DEFAULT_POLICY).unwrap();
    let gru = consent(&["GRU"], false, None);
    for purpose in [Purpose::Research, Purpose::Education, Purpose::AuditQa] {
        let d = decide(&policy, ConsentAction::SeeLabel, purpose, &gru, None);
        assert!(!d.allowed, "{purpose:?}");
    }
}

#[test]
fn mistakes_in_a_policy_are_refused_naming_the_rule() {
    let misspelt = DEFAULT_POLICY.replace("resource.opted_out", "resource.opted_uot");
    let err = Policy::from_text(&misspelt).unwrap_err().to_string();
    assert!(err.contains("national-data-opt-out"), "{err}");
    assert!(err.contains("opted_uot"), "{err}");
    let type_error =
        r#"@id("bad") permit (principal, action, resource) when { context.purpose > 3 };"#;
    assert!(matches!(
        Policy::from_text(type_error),
        Err(PolicyError::Invalid(_))
    ));
    let unknown_action =
        r#"@id("x") permit (principal, action == Slidemesh::Action::"delete", resource);"#;
    assert!(Policy::from_text(unknown_action).is_err());
    let no_id = r#"permit (principal, action, resource);"#;
    assert!(
        Policy::from_text(no_id)
            .unwrap_err()
            .to_string()
            .contains("@id")
    );
    assert!(matches!(
        Policy::from_text("permit ("),
        Err(PolicyError::Parse(_))
    ));
}

#[test]
fn requests_are_built_as_the_schema_says() {
    // Decisions skip the per-request schema check; this keeps the request building and the
    // schema in step for every action, purpose and kind of consent.
    let policy = Policy::from_text(DEFAULT_POLICY).unwrap();
    let (requester, owner) = (trust("RAE"), trust("RR8"));
    let user = UserClaim::new("jsmith", "pathologist").unwrap();
    let consents = [
        SlideConsent::default(),
        consent(&["GRU", "IRB"], true, Some(1_900_000_000)),
    ];
    for c in &consents {
        for purpose in Purpose::ALL.map(Some).into_iter().chain([None]) {
            for action in [
                ConsentAction::View,
                ConsentAction::FetchTiles,
                ConsentAction::SeeLabel,
                ConsentAction::Query,
                ConsentAction::ReceiveCohort,
                ConsentAction::Replicate,
                ConsentAction::Export,
            ] {
                for (reference, user) in [(None, None), (Some("REF-1"), Some(&user))] {
                    let request = ConsentRequest {
                        requester: &requester,
                        user,
                        action,
                        slide: SlideId::of(b"slide"),
                        owner: &owner,
                        consent: c,
                        purpose,
                        reference,
                        grant_expires: 2_000_000_000,
                        now: 1_800_000_000,
                    };
                    policy
                        .build(&request, true)
                        .unwrap_or_else(|e| panic!("{action:?} {purpose:?} {reference:?}: {e}"));
                }
            }
        }
    }
}

fn decide_as(
    policy: &Policy,
    user: Option<&UserClaim>,
    action: ConsentAction,
    purpose: Purpose,
) -> Decision {
    let (requester, owner) = (trust("RAE"), trust("RR8"));
    policy.decide(&ConsentRequest {
        requester: &requester,
        user,
        action,
        slide: SlideId::of(b"slide"),
        owner: &owner,
        consent: &consent(&["CC", "GRU"], false, None),
        purpose: Some(purpose),
        reference: None,
        grant_expires: 2_000_000_000,
        now: 1_800_000_000,
    })
}

#[test]
fn a_named_person_sees_the_label_only_in_a_clinical_role() {
    let policy = Policy::from_text(DEFAULT_POLICY).unwrap();
    let pathologist = UserClaim::new("jsmith", "pathologist").unwrap();
    let student = UserClaim::new("akhan", "student").unwrap();
    for user in [None, Some(&pathologist)] {
        let d = decide_as(
            &policy,
            user,
            ConsentAction::SeeLabel,
            Purpose::SecondOpinion,
        );
        assert!(d.allowed, "{user:?}: {}", d.explain());
    }
    let d = decide_as(
        &policy,
        Some(&student),
        ConsentAction::SeeLabel,
        Purpose::SecondOpinion,
    );
    assert!(!d.allowed);
    assert_eq!(d.rules, vec!["label-for-clinical-roles"]);
    // The same student may still view the slide and its tiles.
    for action in [ConsentAction::View, ConsentAction::FetchTiles] {
        let d = decide_as(&policy, Some(&student), action, Purpose::SecondOpinion);
        assert!(d.allowed, "{action:?}: {}", d.explain());
    }
}

#[test]
fn policies_decide_by_person_role_and_their_trust() {
    // A trust that lets only named pathologists at RAE view its slides.
    let text = r#"
@id("rae-pathologists")
permit (principal in Slidemesh::Trust::"RAE", action == Slidemesh::Action::"view", resource)
when { principal is Slidemesh::User && principal.role == "pathologist" };
"#;
    let policy = Policy::from_text(text).unwrap();
    let pathologist = UserClaim::new("jsmith", "pathologist").unwrap();
    let researcher = UserClaim::new("jsmith", "researcher").unwrap();
    let view = |user| decide_as(&policy, user, ConsentAction::View, Purpose::DirectCare);
    let d = view(Some(&pathologist));
    assert!(d.allowed, "{}", d.explain());
    assert_eq!(d.rules, vec!["rae-pathologists"]);
    assert!(!view(Some(&researcher)).allowed);
    // The trust's node asking on its own behalf names no pathologist.
    assert!(!view(None).allowed);
    // A misspelt attribute of a person is refused at load.
    let typo = text.replace("principal.role", "principal.rol");
    assert!(Policy::from_text(&typo).is_err());
}

/// Policies also arrive from peers (in owners' consent statements): text nested too deeply
/// for cedar's recursive parser, or too large, is refused before it is parsed, instead of
/// overflowing the stack and ending the node.
#[test]
fn a_policy_built_to_overflow_the_parser_is_refused_before_parsing() {
    let rule = |body: &str| {
        format!("@id(\"deep\") permit (principal, action, resource) when {{ {body} }};")
    };
    for depth in [MAX_POLICY_NESTING, 1_000, 100_000] {
        let nested = rule(&format!("{}true{}", "(".repeat(depth), ")".repeat(depth)));
        let listed = rule(&format!("{}1{} == 1", "[".repeat(depth), "]".repeat(depth)));
        let ifs = rule(&format!(
            "{}true{}",
            "if true then ".repeat(depth),
            " else false".repeat(depth)
        ));
        // A comment ended by a carriage return, as cedar's lexer ends it, hides nothing.
        let hidden = format!(
            "//\r@id(\"deep\") permit (principal, action, resource) when {{ {}true{} }};",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        for text in [nested, listed, ifs, hidden] {
            match Policy::from_text(&text) {
                // The deepest are also over the size limit, which is checked first.
                Err(PolicyError::Shape(why)) => assert!(
                    why.contains("nested") || text.len() > MAX_POLICY_BYTES,
                    "{why}"
                ),
                other => panic!("{depth} levels: expected a refusal of its shape, got {other:?}"),
            }
        }
    }
    let huge = format!("{}\n// {}\n", DEFAULT_POLICY, "x".repeat(MAX_POLICY_BYTES));
    assert!(matches!(
        Policy::from_text(&huge),
        Err(PolicyError::Shape(_))
    ));
    let chained = rule(&format!("context{} == 1", ".a".repeat(60_000)));
    assert!(matches!(
        Policy::from_text(&chained),
        Err(PolicyError::Shape(why)) if why.contains("accesses")
    ));
    // Brackets in strings and comments do not count: the default policy with a long
    // bracketed comment and a role string full of brackets still loads.
    let commented = format!(
        "{DEFAULT_POLICY}\n// {}\n@id(\"odd-role\") forbid (principal is Slidemesh::User, action, resource) when {{ principal.role == \"{}\" }};\n",
        "(".repeat(500),
        "[".repeat(500)
    );
    Policy::from_text(&commented).expect("brackets in comments and strings are text");
}

#[test]
fn a_rule_naming_a_slide_is_found_however_it_is_written() {
    assert!(!Policy::from_text(DEFAULT_POLICY).unwrap().names_slides());
    let slide = SlideId::of(b"one slide").to_string();
    for written in [
        format!("resource == Slidemesh::Slide::\"{slide}\""),
        format!("resource == Slidemesh::Slide :: \"{slide}\""),
        format!("resource == Slidemesh::Slide // a comment\n :: \"{slide}\""),
    ] {
        let text = format!(
            "{DEFAULT_POLICY}\n@id(\"one-slide\")\nforbid (principal, action, {written});\n"
        );
        let policy = Policy::from_text(&text).unwrap();
        assert!(policy.names_slides(), "{written}");
    }
    // A type test names no slide.
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"slides\")\nforbid (principal, action, resource is \
         Slidemesh::Slide) when {{ resource.opted_out }};\n"
    );
    assert!(!Policy::from_text(&text).unwrap().names_slides());
}
