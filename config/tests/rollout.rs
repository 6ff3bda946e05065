//! Canary rollouts in the config: an environment's persisted `rollout`, its
//! promotion's `rollback` guard, the edits that write them, the lifecycle
//! rules that protect a rollout's deployment, and the synthetic backend's
//! `error_percent` for testing rollbacks.

mod common;

use std::time::Duration;

use config::edit::{
    Changed, ConfigDocument, EditError, EnvironmentPatch, NewEnvironment, PromotionPatch,
    RollbackPatch,
};
use config::{EngineBackend, RollbackGuard, Rollout, SyntheticSettings, load_engine_str, load_str};

use common::*;

/// Each error as `line: path: message`.
fn errors(text: &str) -> Vec<String> {
    load_str(text, "r.toml")
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| {
            let at = e.location.map(|l| l.line).unwrap_or(0);
            format!("{at}: {}: {}", e.path, e.message)
        })
        .collect()
}

/// Model `m` with deployments `a`, `b` and inactive `off` (lines 2-13);
/// production serves `a` and ends with `env` (from line 17).
fn with_production(env: &str) -> String {
    format!(
        r#"[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = {{ source = "static" }}
[[models.deployments]]
id = "b"
replicas = {{ source = "static" }}
[[models.deployments]]
id = "off"
active = false
replicas = {{ source = "static" }}
[[models.environments]]
name = "production"
deployment = "a"
{env}"#
    )
}

/// An edit request, written in TOML (the API's JSON deserializes alike).
fn request<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).unwrap()
}

#[test]
fn a_rollout_is_read_inline_or_as_a_table() {
    let expected = Rollout {
        deployment: "b".into(),
        started_at_ms: 1_767_225_600_000,
        duration: Duration::from_secs(600),
    };
    let inline = with_production(
        "rollout = { deployment = \"b\", started_at_ms = 1767225600000, duration_secs = 600 }\n",
    );
    let table = with_production(
        "[models.environments.rollout]\ndeployment = \"b\"\nstarted_at_ms = 1767225600000\nduration_secs = 600\n",
    );
    for text in [inline, table] {
        let config = load_str(&text, "r.toml").unwrap_or_else(|e| panic!("{e}"));
        let production = config.models[0].environment("production").unwrap();
        assert_eq!(production.rollout.as_ref(), Some(&expected));
    }
    // No table, no rollout; the bounds are accepted.
    let config = load_str(&with_production(""), "r.toml").unwrap();
    assert_eq!(config.models[0].environments[0].rollout, None);
    let bounds = with_production(
        "rollout = { deployment = \"b\", started_at_ms = 0, duration_secs = 86400 }\n",
    );
    let config = load_str(&bounds, "r.toml").unwrap();
    let rollout = config.models[0].environments[0].rollout.clone().unwrap();
    assert_eq!(
        (rollout.started_at_ms, rollout.duration),
        (0, Duration::from_secs(86_400))
    );
}

#[test]
fn rollout_keys_are_required_ranged_and_known() {
    let text = with_production(
        "[models.environments.rollout]\nstarted_at_ms = -1\nduration_secs = 0\nstage = 3\n",
    );
    assert_eq!(
        errors(&text),
        [
            "16: models[0].environments[0].rollout.deployment: missing required key `deployment`",
            "17: models[0].environments[0].rollout.started_at_ms: `started_at_ms` is -1; it must be at least 0 (milliseconds since the Unix epoch)",
            "18: models[0].environments[0].rollout.duration_secs: `duration_secs` is 0; it must be between 1 and 86400",
            "19: models[0].environments[0].rollout.stage: unknown key `stage`",
        ]
    );
    let text = with_production("rollout = { deployment = \"b\" }\n");
    assert_eq!(
        errors(&text),
        [
            "16: models[0].environments[0].rollout.started_at_ms: missing required key `started_at_ms` (milliseconds since the Unix epoch)",
            "16: models[0].environments[0].rollout.duration_secs: missing required key `duration_secs`",
        ]
    );
    let text = with_production(
        "rollout = { deployment = \"b\", started_at_ms = 1, duration_secs = 86401 }\n",
    );
    assert_eq!(
        errors(&text),
        [
            "16: models[0].environments[0].rollout.duration_secs: `duration_secs` is 86401; it must be between 1 and 86400"
        ]
    );
    // A wrong type is one error about the environment, like any section.
    let wrong_type = errors(&with_production("rollout = \"b\"\n"));
    assert_eq!(wrong_type.len(), 1, "{wrong_type:#?}");
    assert!(
        wrong_type[0].contains("models[0].environments[0]"),
        "{wrong_type:#?}"
    );
}

#[test]
fn a_rollout_moves_from_the_served_deployment_to_another_active_one() {
    let rollout = |to: &str| {
        format!("rollout = {{ deployment = \"{to}\", started_at_ms = 1, duration_secs = 60 }}\n")
    };
    assert_eq!(
        errors(&with_production(&rollout("a"))),
        [
            "16: models[0].environments[0].rollout.deployment: the rollout's deployment `a` is the one environment `production` already serves"
        ]
    );
    assert_eq!(
        errors(&with_production(&rollout("zz"))),
        [
            "16: models[0].environments[0].rollout.deployment: the rollout of environment `production` names unknown deployment `zz`"
        ]
    );
    assert_eq!(
        errors(&with_production(&rollout("off"))),
        [
            "16: models[0].environments[0].rollout.deployment: the rollout of environment `production` moves traffic to inactive deployment `off`; activate it first"
        ]
    );
    // Nothing served: nothing to roll out from. Located at the table.
    let text = with_production(
        "[[models.environments]]\nname = \"staging\"\n[models.environments.rollout]\ndeployment = \"b\"\nstarted_at_ms = 1\nduration_secs = 60\n",
    );
    assert_eq!(
        errors(&text),
        [
            "18: models[0].environments[1].rollout: environment `staging` serves no deployment to roll out from: set its `deployment` first"
        ]
    );
    // Deployments of another model do not count.
    let other = format!(
        "{}\n[[models]]\nid = \"n\"\n[[models.deployments]]\nid = \"c\"\nreplicas = {{ source = \"static\" }}\n",
        with_production(&rollout("c"))
    );
    assert_eq!(
        errors(&other),
        [
            "16: models[0].environments[0].rollout.deployment: the rollout of environment `production` names unknown deployment `c`"
        ]
    );
}

#[test]
fn the_rollback_guard_has_defaults_and_takes_a_percentage_as_a_fraction() {
    let guard = |promotion: &str| {
        let config =
            load_str(&with_production(promotion), "r.toml").unwrap_or_else(|e| panic!("{e}"));
        config.models[0].environments[0].promotion.rollback
    };
    assert_eq!(guard(""), None);
    assert_eq!(guard("promotion = { ramp_up = true }\n"), None);
    let defaults = RollbackGuard {
        max_error_rate_increase: 0.05,
        max_p99_increase: Duration::from_millis(250),
        min_requests: 50,
    };
    assert_eq!(RollbackGuard::default(), defaults);
    assert_eq!(guard("promotion = { rollback = {} }\n"), Some(defaults));
    assert_eq!(
        guard(
            "[models.environments.promotion.rollback]\nmax_error_rate_increase_pct = 2.5\nmax_p99_increase_ms = 0\nmin_requests = 1000000\n"
        ),
        Some(RollbackGuard {
            max_error_rate_increase: 0.025,
            max_p99_increase: Duration::ZERO,
            min_requests: 1_000_000,
        })
    );
    // An integer percentage, and the bounds.
    let g = guard("promotion = { rollback = { max_error_rate_increase_pct = 100, max_p99_increase_ms = 600000, min_requests = 1 } }\n").unwrap();
    assert_eq!(
        (
            g.max_error_rate_increase,
            g.max_p99_increase,
            g.min_requests
        ),
        (1.0, Duration::from_secs(600), 1)
    );
    let g = guard("promotion = { rollback = { max_error_rate_increase_pct = 0 } }\n").unwrap();
    assert_eq!(g.max_error_rate_increase, 0.0);
    assert_eq!(g.min_requests, 50);
}

#[test]
fn rollback_guard_mistakes_are_located() {
    let text = with_production(
        "[models.environments.promotion]\nramp_up = true\n[models.environments.promotion.rollback]\nmax_error_rate_increase_pct = 100.5\nmax_p99_increase_ms = 600001\nmin_requests = 0\nmin_request = 5\n",
    );
    assert_eq!(
        errors(&text),
        [
            "19: models[0].environments[0].promotion.rollback.max_error_rate_increase_pct: `max_error_rate_increase_pct` is 100.5; it must be between 0 and 100",
            "20: models[0].environments[0].promotion.rollback.max_p99_increase_ms: `max_p99_increase_ms` is 600001; it must be between 0 and 600000",
            "21: models[0].environments[0].promotion.rollback.min_requests: `min_requests` is 0; it must be between 1 and 1000000",
            "22: models[0].environments[0].promotion.rollback.min_request: unknown key `min_request`",
        ]
    );
    let text = with_production(
        "promotion = { rollback = { max_error_rate_increase_pct = -1, max_p99_increase_ms = -5 } }\n",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("`max_error_rate_increase_pct` is -1;"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("`max_p99_increase_ms` is -5;"),
        "{errors:#?}"
    );
    let nan = self::errors(&with_production(
        "promotion = { rollback = { max_error_rate_increase_pct = nan } }\n",
    ));
    assert_eq!(nan.len(), 1, "{nan:#?}");
    assert!(nan[0].contains("it must be between 0 and 100"), "{nan:#?}");
}

#[test]
fn the_example_documents_valid_rollout_and_rollback_keys() {
    let mut text = EXAMPLE.to_owned();
    for key in ["rollout = {", "rollback = {"] {
        let commented = format!("\n# {key}");
        assert_eq!(text.matches(&commented).count(), 1, "{key}");
        text = text.replace(&commented, &format!("\n{key}"));
    }
    let config = load_str(&text, "uncommented").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let production = config.models[0].environment("production").unwrap();
    assert_eq!(
        production.rollout,
        Some(Rollout {
            deployment: "v2".into(),
            started_at_ms: 1_767_225_600_000,
            duration: Duration::from_secs(600),
        })
    );
    assert_eq!(
        production.promotion.rollback,
        Some(RollbackGuard::default())
    );
    // Commented out, they change nothing.
    let example = load_str(EXAMPLE, "example").unwrap();
    let production = example.models[0].environment("production").unwrap();
    assert_eq!(
        (&production.rollout, production.promotion.rollback),
        (&None, None)
    );
}

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

#[test]
fn synthetic_failures_are_a_percentage_of_synthetic_replicas() {
    let settings = load_engine_str(
        "[engine]\nbackend = \"synthetic\"\nerror_percent = 100\n",
        "replica.toml",
    )
    .unwrap();
    let EngineBackend::Synthetic(profile) = &settings.backend else {
        panic!("expected synthetic")
    };
    assert_eq!(profile.error_percent, 100);
    let args: Vec<String> = settings
        .to_args()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    let at = args.iter().position(|a| a == "--error-percent").unwrap();
    assert_eq!(args[at + 1], "100");

    let default = load_engine_str("[engine]\nbackend = \"synthetic\"\n", "replica.toml").unwrap();
    assert_eq!(
        default.backend,
        EngineBackend::Synthetic(SyntheticSettings::default())
    );
    assert!(
        default
            .to_args()
            .windows(2)
            .any(|w| w[0] == "--error-percent" && w[1] == "0")
    );

    let messages = |text: &str| -> Vec<String> {
        load_engine_str(text, "replica.toml")
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| format!("{}: {}: {}", e.location.unwrap().line, e.path, e.message))
            .collect()
    };
    assert_eq!(
        messages("[engine]\nbackend = \"synthetic\"\nerror_percent = 101\n"),
        ["3: engine.error_percent: `error_percent` is 101; it must be between 0 and 100"]
    );
    assert_eq!(
        messages("[engine]\nbackend = \"synthetic\"\nerror_percent = -1\n"),
        ["3: engine.error_percent: `error_percent` is -1; it must be between 0 and 100"]
    );
    assert_eq!(
        messages("[engine]\nbackend = \"onnx\"\nmodel = \"m.onnx\"\nerror_percent = 5\n"),
        ["4: engine.error_percent: `error_percent` does not apply to backend = \"onnx\""]
    );

    // In a deployment's engine table too.
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
engine = { backend = "synthetic", error_percent = 25 }
"#;
    let config = load_str(text, "gateway.toml").unwrap();
    let engine = config.models[0].deployments[0].engine.clone().unwrap();
    assert_eq!(
        engine.backend,
        EngineBackend::Synthetic(SyntheticSettings {
            error_percent: 25,
            ..Default::default()
        })
    );
}
