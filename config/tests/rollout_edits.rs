//! The edits that write canary rollouts (`start_rollout`, `clear_rollout`,
//! the rollback guard in environment settings) and the lifecycle rules that
//! protect a rollout's deployment.

mod common;

use std::time::Duration;

use config::edit::{
    Changed, ConfigDocument, EditError, EnvironmentPatch, NewEnvironment, PromotionPatch,
    RollbackPatch,
};
use config::{RollbackGuard, Rollout};

use common::rollout::*;
use common::*;

#[test]
fn start_and_clear_rollout_keep_the_file_around_them() {
    let mut doc = example();
    assert_eq!(
        doc.start_rollout(MODEL, "production", "v2", 1_000, Duration::from_secs(600))
            .unwrap(),
        Changed::Changed
    );
    let text = doc.text();
    let table = "ramp_up_duration = 600              # seconds a ramp-up takes, in 10 equal stages (default 600, 1-86400)\n\n\
                 [models.environments.rollout]\ndeployment = \"v2\"\nstarted_at_ms = 1000\nduration_secs = 600\n\n\
                 [[models.environments]]\nname = \"staging\"\n";
    assert!(text.contains(table), "{text}");
    assert_comments_kept(EXAMPLE, &text, &[], "start_rollout");
    assert_eq!(
        doc.config().models[0]
            .environment("production")
            .unwrap()
            .rollout,
        Some(Rollout {
            deployment: "v2".into(),
            started_at_ms: 1_000,
            duration: Duration::from_secs(600),
        })
    );

    // The same again changes nothing; a new one replaces it in place.
    assert_eq!(
        doc.start_rollout(MODEL, "production", "v2", 1_000, Duration::from_secs(600))
            .unwrap(),
        Changed::Unchanged
    );
    assert_eq!(doc.text(), text);
    doc.start_rollout(MODEL, "production", "dev", 2_000, Duration::from_secs(60))
        .unwrap();
    assert!(doc.text().contains(
        "[models.environments.rollout]\ndeployment = \"dev\"\nstarted_at_ms = 2000\nduration_secs = 60\n\n"
    ));

    // Cleared, the file is what it was, byte for byte.
    assert_eq!(
        doc.clear_rollout(MODEL, "production").unwrap(),
        Changed::Changed
    );
    assert_eq!(doc.text(), EXAMPLE);
    assert_eq!(model(&doc).environment("production").unwrap().rollout, None);
    assert_eq!(
        doc.clear_rollout(MODEL, "production").unwrap(),
        Changed::Unchanged
    );
    assert_eq!(
        doc.clear_rollout(MODEL, "staging").unwrap(),
        Changed::Unchanged
    );
    assert_eq!(doc.text(), EXAMPLE);
    assert!(matches!(
        doc.clear_rollout(MODEL, "qa"),
        Err(EditError::NotFound(m)) if m == "environment `qa` of model `demo1`"
    ));
    assert!(matches!(
        doc.clear_rollout("nope", "production"),
        Err(EditError::NotFound(m)) if m == "model `nope`"
    ));
}

#[test]
fn an_inline_rollout_stays_inline_with_the_comments_around_it() {
    let text = with_production(
        "# Rolling out b.\nrollout = { deployment = \"b\", started_at_ms = 5, duration_secs = 60 }   # since 5\nautoscaling = { max_replica = 2 }\n",
    );
    let mut doc = ConfigDocument::parse(&text, "r.toml").unwrap();
    doc.start_rollout("m", "production", "b", 7, Duration::from_secs(120))
        .unwrap();
    assert_eq!(
        doc.text(),
        text.replace(
            "started_at_ms = 5, duration_secs = 60 }   # since 5",
            // Keys change inside the inline table; its comment stays put.
            "started_at_ms = 7, duration_secs = 120 }   # since 5"
        )
    );
    doc.clear_rollout("m", "production").unwrap();
    assert_eq!(
        doc.text(),
        with_production("autoscaling = { max_replica = 2 }\n")
    );
}

#[test]
fn a_rollout_needs_a_served_deployment_and_an_active_other_one() {
    let mut doc = example();
    doc.set_deployment_active(MODEL, "dev", false).unwrap();
    doc.add_environment(MODEL, new_environment("qa", None))
        .unwrap();
    let before = doc.text();
    let start = |doc: &mut ConfigDocument, env: &str, to: &str| {
        doc.start_rollout(MODEL, env, to, 1, Duration::from_secs(60))
    };
    assert!(matches!(
        start(&mut doc, "production", "v1"),
        Err(EditError::Conflict(m)) if m == "environment `production` of model `demo1` already serves deployment `v1`"
    ));
    // Aliases resolve: production is v1.
    assert!(matches!(
        start(&mut doc, "production", "production"),
        Err(EditError::Conflict(m)) if m.contains("already serves deployment `v1`")
    ));
    assert!(matches!(
        start(&mut doc, "production", "dev"),
        Err(EditError::Conflict(m)) if m.contains("inactive")
    ));
    assert!(matches!(
        start(&mut doc, "qa", "v2"),
        Err(EditError::Conflict(m)) if m.contains("serves no deployment to roll out from")
    ));
    assert!(matches!(
        start(&mut doc, "production", "v9"),
        Err(EditError::NotFound(m)) if m == "deployment `v9` of model `demo1`"
    ));
    assert!(matches!(
        start(&mut doc, "canary", "v2"),
        Err(EditError::NotFound(m)) if m == "environment `canary` of model `demo1`"
    ));
    assert!(matches!(
        doc.start_rollout(MODEL, "production", "v2", 1, Duration::from_millis(1500)),
        Err(EditError::BadRequest(m)) if m.contains("whole seconds")
    ));
    assert!(matches!(
        doc.start_rollout(MODEL, "production", "v2", u64::MAX, Duration::from_secs(60)),
        Err(EditError::BadRequest(_))
    ));
    // Ranges are validation's: a located error in the edited text.
    let err = doc
        .start_rollout(MODEL, "production", "v2", 1, Duration::ZERO)
        .unwrap_err();
    let EditError::Invalid(errors) = &err else {
        panic!("expected Invalid, got {err:?}")
    };
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert_eq!(
        errors.errors[0].path,
        "models[0].environments[0].rollout.duration_secs"
    );
    assert!(errors.errors[0].location.is_some());
    assert_eq!(doc.text(), before);

    // From a deployment served elsewhere is fine.
    doc.start_rollout(MODEL, "staging", "v1", 1, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        model(&doc)
            .environment("staging")
            .unwrap()
            .rollout
            .as_ref()
            .unwrap()
            .deployment,
        "v1"
    );
}

#[test]
fn a_rollout_target_is_neither_deleted_nor_deactivated() {
    let mut doc = example();
    doc.start_rollout(
        MODEL,
        "production",
        "development",
        1,
        Duration::from_secs(60),
    )
    .unwrap();
    let before = doc.text();
    match doc.delete_deployment(MODEL, "dev") {
        Err(EditError::Conflict(m)) => assert_eq!(
            m,
            "deployment `dev` of model `demo1` is being rolled out in environment `production`; clear the rollout first"
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match doc.set_deployment_active(MODEL, "development", false) {
        Err(EditError::Conflict(m)) => {
            assert!(m.contains("`dev`") && m.contains("`production`"), "{m}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(doc.text(), before);
    // Activating it, or touching the other deployments, is still fine.
    assert_eq!(
        doc.set_deployment_active(MODEL, "dev", true).unwrap(),
        Changed::Unchanged
    );
    // The old side stays protected as the deployment production serves.
    assert!(matches!(
        doc.delete_deployment(MODEL, "v1"),
        Err(EditError::Conflict(m)) if m.contains("serves environment `production`")
    ));

    doc.clear_rollout(MODEL, "production").unwrap();
    doc.set_deployment_active(MODEL, "dev", false).unwrap();
    doc.delete_deployment(MODEL, "dev").unwrap();
    assert!(model(&doc).deployment("dev").is_none());
}

#[test]
fn completing_a_rollout_is_clearing_it_then_pointing_the_environment() {
    let mut doc = example();
    doc.start_rollout(MODEL, "production", "v2", 1, Duration::from_secs(60))
        .unwrap();
    // The other order would roll out to the deployment served: refused.
    assert!(matches!(
        doc.clone().point_environment(MODEL, "production", "v2"),
        Err(EditError::Invalid(_))
    ));
    doc.clear_rollout(MODEL, "production").unwrap();
    doc.point_environment(MODEL, "production", "v2").unwrap();
    let production = model(&doc).environment("production").unwrap();
    assert_eq!(
        (production.deployment.as_deref(), &production.rollout),
        (Some("v2"), &None)
    );
}

#[test]
fn the_rollback_guard_is_merged_into_an_inline_table() {
    let mut doc = example();
    let patch: EnvironmentPatch = request(
        "promotion = { rollback = { max_error_rate_increase_pct = 2.5, min_requests = 20 } }",
    );
    assert_eq!(
        doc.update_environment(MODEL, "production", patch).unwrap(),
        Changed::Changed
    );
    let text = doc.text();
    assert!(
        text.contains("ramp_up_duration = 600              # seconds a ramp-up takes, in 10 equal stages (default 600, 1-86400)\nrollback = { max_error_rate_increase_pct = 2.5, min_requests = 20 }\n"),
        "{text}"
    );
    assert_comments_kept(EXAMPLE, &text, &[], "rollback");
    // Merged: the other keys stay.
    let patch: EnvironmentPatch =
        request("promotion = { rollback = { max_p99_increase_ms = 100 } }");
    doc.update_environment(MODEL, "production", patch).unwrap();
    assert!(doc.text().contains(
        "rollback = { max_error_rate_increase_pct = 2.5, min_requests = 20, max_p99_increase_ms = 100 }\n"
    ));
    assert_eq!(
        model(&doc)
            .environment("production")
            .unwrap()
            .promotion
            .rollback,
        Some(RollbackGuard {
            max_error_rate_increase: 0.025,
            max_p99_increase: Duration::from_millis(100),
            min_requests: 20,
        })
    );
    // An empty guard where there is one, or the values it has: unchanged.
    for same in [
        "promotion = { rollback = {} }",
        "promotion = { rollback = { min_requests = 20 } }",
    ] {
        let patch: EnvironmentPatch = request(same);
        let before = doc.text();
        assert_eq!(
            doc.update_environment(MODEL, "production", patch).unwrap(),
            Changed::Unchanged,
            "{same}"
        );
        assert_eq!(doc.text(), before);
    }

    // An environment without promotion settings gets the table; an empty
    // guard is the defaults.
    let patch = EnvironmentPatch {
        promotion: Some(PromotionPatch {
            rollback: Some(RollbackPatch::default()),
            ..Default::default()
        }),
        autoscaling: None,
    };
    doc.update_environment(MODEL, "staging", patch).unwrap();
    assert!(
        doc.text()
            .ends_with("max_replica = 2\n\n[models.environments.promotion]\nrollback = {}\n"),
        "{}",
        doc.text()
    );
    assert_eq!(
        model(&doc)
            .environment("staging")
            .unwrap()
            .promotion
            .rollback,
        Some(RollbackGuard::default())
    );

    // Out of range: refused with its location, nothing written.
    let before = doc.text();
    let patch: EnvironmentPatch = request("promotion = { rollback = { min_requests = 0 } }");
    let err = doc.update_environment(MODEL, "staging", patch).unwrap_err();
    assert!(
        matches!(&err, EditError::Invalid(e) if e.errors[0].path == "models[0].environments[1].promotion.rollback.min_requests"),
        "{err:?}"
    );
    assert_eq!(doc.text(), before);
    // Unknown fields are refused when the request is read.
    assert!(
        toml::from_str::<EnvironmentPatch>("promotion = { rollback = { min_request = 1 } }")
            .is_err()
    );
    assert!(toml::from_str::<EnvironmentPatch>("promotion = { rollback = 5 }").is_err());
}

#[test]
fn a_section_rollback_guard_keeps_its_form() {
    let text = with_production(
        "[models.environments.promotion.rollback]\nmin_requests = 10   # small traffic\n",
    );
    let mut doc = ConfigDocument::parse(&text, "r.toml").unwrap();
    let patch: EnvironmentPatch = request("promotion = { rollback = { min_requests = 30 } }");
    doc.update_environment("m", "production", patch).unwrap();
    assert_eq!(
        doc.text(),
        text.replace("min_requests = 10   #", "min_requests = 30   #")
    );
}

#[test]
fn a_new_environment_takes_a_rollback_guard() {
    let mut doc = example();
    let new: NewEnvironment = request(
        "name = \"canary\"\ndeployment = \"v2\"\npromotion = { ramp_up = true, rollback = { min_requests = 5 } }",
    );
    doc.add_environment(MODEL, new).unwrap();
    assert!(doc.text().ends_with(
        "\n[[models.environments]]\nname = \"canary\"\ndeployment = \"v2\"\n\n\
         [models.environments.promotion]\nramp_up = true\nrollback = { min_requests = 5 }\n"
    ));
    let canary = model(&doc).environment("canary").unwrap();
    assert_eq!(canary.promotion.rollback.unwrap().min_requests, 5);
    assert_eq!(canary.rollout, None);

    // Only a guard is still promotion settings.
    let new: NewEnvironment = request("name = \"guarded\"\npromotion = { rollback = {} }");
    doc.add_environment(MODEL, new).unwrap();
    assert_eq!(
        model(&doc)
            .environment("guarded")
            .unwrap()
            .promotion
            .rollback,
        Some(RollbackGuard::default())
    );
}
