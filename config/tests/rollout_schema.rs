//! Canary rollouts in the config schema: an environment's persisted
//! `rollout`, its promotion's `rollback` guard, and the synthetic backend's
//! `error_percent` for testing rollbacks. The edits that write them are in
//! `rollout_edits.rs`.

mod common;

use std::time::Duration;

use config::{EngineBackend, RollbackGuard, Rollout, SyntheticSettings, load_engine_str, load_str};

use common::rollout::*;
use common::*;

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
