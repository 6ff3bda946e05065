//! Loading and validating whole documents, with the errors they report.

use config::{CleanupStrategy, DeploymentKind, KeyScope, ReplicaSource, load_str};

const EXAMPLE: &str = include_str!("../../examples/gateway.toml");

#[test]
fn the_annotated_example_is_valid_and_means_what_it_says() {
    let config = load_str(EXAMPLE, "examples/gateway.toml").expect("example config is valid");
    assert_eq!(config.listeners.predict.to_string(), "127.0.0.1:8080");
    assert_eq!(config.listeners.admin.to_string(), "127.0.0.1:8081");
    assert_eq!(config.server.threads, Some(1));
    assert_eq!(config.api_keys[0].scope, KeyScope::AllModels);
    assert_eq!(config.api_keys[1].scope, KeyScope::Admin);
    assert_eq!(
        config.api_keys[1].digest,
        config::key_digest("igw_demo_admin_not_secret")
    );
    assert_eq!(
        config.api_keys[0].digest,
        config::key_digest("igw_demo_key_not_secret")
    );

    let model = &config.models[0];
    assert_eq!(
        (model.id.as_str(), model.name.as_str()),
        ("demo1", "text-embedder")
    );
    let v1 = model.deployment("v1").unwrap();
    assert_eq!(v1.name, "deployment-1");
    assert_eq!(v1.autoscaling, config::Autoscaling::default());
    assert_eq!(
        v1.replicas,
        ReplicaSource::Static {
            addresses: vec!["127.0.0.1:9101".parse().unwrap()]
        }
    );
    assert_eq!(model.deployment("v2").unwrap().name, "deployment-2");
    let dev = model.deployment("dev").unwrap();
    assert_eq!(
        (dev.kind, dev.name.as_str()),
        (DeploymentKind::Development, "development")
    );

    let production = model.environment("production").unwrap();
    assert_eq!(production.deployment.as_deref(), Some("v1"));
    assert_eq!(
        production.promotion.cleanup_strategy,
        CleanupStrategy::ScaleToZero
    );
    let staging = model.environment("staging").unwrap();
    assert_eq!(staging.autoscaling.unwrap().max_replica, 2);
}

#[test]
fn defaults_fill_everything_optional_and_production_always_exists() {
    let config = load_str(
        r#"
[[models]]
id = "abc"
[[models.deployments]]
id = "d"
replicas = { source = "static" }
"#,
        "min.toml",
    )
    .unwrap();
    assert_eq!(config.listeners.predict.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.grace_period.as_secs(), 30);
    let model = &config.models[0];
    assert_eq!(model.name, "abc");
    assert_eq!(model.environments.len(), 1);
    assert_eq!(model.environments[0].name, "production");
    assert_eq!(model.environments[0].deployment, None);
    let d = &model.deployments[0];
    assert!(d.active);
    assert_eq!(d.predict_concurrency, 1);
    assert_eq!(d.resources, config::Resources::default());
}

/// Ten distinct mistakes, each reported with its own line.
#[test]
fn ten_mistakes_are_all_reported_with_locations() {
    let text = r#"[listeners]
predict = "127.0.0.1:8080"
colour = "blue"

[[api_keys]]
name = "ci"
sha256 = "not-hex"
scope = ["nosuchmodel"]

[[models]]
id = "m1"

[[models.deployments]]
id = "a"
kind = "development"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }

[[models.deployments]]
id = "b"
kind = "development"
replicas = { source = "static", addresses = ["127.0.0.1:9002"] }

[[models.deployments]]
id = "a"
replicas = { source = "static", addresses = ["127.0.0.1:9003"] }
[models.deployments.autoscaling]
min_replica = 3
max_replica = 2
max_scale_down_rate = 80

[[models.environments]]
name = "production"
deployment = "a"

[[models.environments]]
name = "production"
deployment = "zzz"

[[models]]
id = "m1"
"#;
    let errors = load_str(text, "bad.toml").unwrap_err();
    let rendered = errors.to_string();
    let expect = [
        (3, "listeners.colour", "unknown key `colour`"),
        (7, "api_keys[0].sha256", "64 hex digits"),
        (8, "api_keys[0].scope[0]", "unknown model `nosuchmodel`"),
        (
            20,
            "models[0].deployments[1].kind",
            "at most one development deployment",
        ),
        (
            24,
            "models[0].deployments[2].id",
            "duplicate deployment id `a`",
        ),
        (
            27,
            "models[0].deployments[2].autoscaling.min_replica",
            "greater than `max_replica`",
        ),
        (
            29,
            "models[0].deployments[2].autoscaling.max_scale_down_rate",
            "must be between 1 and 50",
        ),
        (
            36,
            "models[0].environments[1].name",
            "only the production environment",
        ),
        (
            37,
            "models[0].environments[1].deployment",
            "unknown deployment `zzz`",
        ),
        (40, "models[1].id", "duplicate model id `m1`"),
    ];
    assert_eq!(errors.errors.len(), expect.len(), "{rendered}");
    for (error, (line, path, message)) in errors.errors.iter().zip(expect) {
        assert_eq!(error.path, path, "{rendered}");
        assert_eq!(
            error.location.map(|l| l.line),
            Some(line),
            "{path}: {rendered}"
        );
        assert!(error.message.contains(message), "{path}: {}", error.message);
    }
    assert!(
        rendered.starts_with("bad.toml:3:1: listeners.colour: unknown key"),
        "{rendered}"
    );
}

#[test]
fn type_errors_in_separate_sections_are_all_reported() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
active = "yes"
replicas = { source = "static" }
[[models.deployments]]
id = "b"
predict_concurrency = "four"
replicas = { source = "static" }
"#;
    let errors = load_str(text, "t.toml").unwrap_err();
    let lines: Vec<_> = errors
        .errors
        .iter()
        .map(|e| e.location.unwrap().line)
        .collect();
    assert_eq!(lines, vec![6, 10], "{errors}");
}

#[test]
fn syntax_errors_name_the_line() {
    let errors = load_str("[listeners]\npredict = \n", "s.toml").unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].location.unwrap().line, 2, "{errors}");
    assert!(errors.to_string().starts_with("s.toml:2:"), "{errors}");
}

#[test]
fn out_of_range_and_malformed_values() {
    let text = r#"
[listeners]
predict = "localhost"
[[models]]
id = "Has-Caps"
[[models.deployments]]
id = "production"
instance_type = "big"
replicas = { source = "k8s" }
[models.deployments.autoscaling]
autoscaling_window = 5
target_utilization_percentage = 0
concurrency_target = 2
[[models.environments]]
name = "staging"
[models.environments.promotion]
cleanup_strategy = "BURN"
"#;
    let errors = load_str(text, "r.toml").unwrap_err();
    let paths: Vec<_> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "listeners.predict",
            "models[0].id",
            "models[0].deployments[0].id",
            "models[0].deployments[0].instance_type",
            "models[0].deployments[0].replicas.source",
            "models[0].deployments[0].autoscaling.autoscaling_window",
            "models[0].deployments[0].autoscaling.target_utilization_percentage",
            "models[0].deployments[0].autoscaling.concurrency_target",
            "models[0].environments[0].promotion.cleanup_strategy",
        ],
        "{errors}"
    );
}

#[test]
fn development_deployments_run_at_most_one_replica() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "dev"
kind = "development"
replicas = { source = "static" }
autoscaling = { max_replica = 2 }
"#;
    let errors = load_str(text, "d.toml").unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert!(
        errors.errors[0].message.contains("at most one replica"),
        "{errors}"
    );
}

#[test]
fn ten_thousand_models_load() {
    let text = config::test_util::many_models_toml(10_000, "127.0.0.1:9");
    let config = load_str(&text, "big.toml").unwrap();
    assert_eq!(config.models.len(), 10_000);
    assert_eq!(config.models[9_999].environments.len(), 2);
}

#[test]
fn the_quick_start_config_is_valid_and_runs_local_replicas_from_zero() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.toml");
    let config = config::load_file(std::path::Path::new(path)).expect("quickstart.toml is valid");
    let d = &config.models[0].deployments[0];
    assert_eq!(d.replicas, config::ReplicaSource::Local);
    assert_eq!(d.autoscaling.min_replica, 0);
    let engine = d.engine.as_ref().expect("an engine table");
    assert_eq!(engine.backend.name(), "onnx");
    assert_eq!(engine.predict_concurrency, d.predict_concurrency);
}
