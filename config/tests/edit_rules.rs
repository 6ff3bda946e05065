//! `config::edit` enforces the lifecycle rules: names and ids, what may be
//! deleted, production, development, promotion, invalid results.

mod common;

use config::edit::{
    AutoscalingPatch, Changed, ConfigDocument, DeploymentPatch, EditError, EnvironmentPatch,
    NewDeployment, NewEnvironment, PromotionPatch, ResourcesSpec,
};
use config::{Autoscaling, CleanupStrategy, DeploymentKind, load_str};

use common::*;

#[test]
fn new_deployments_get_the_next_name_and_a_fresh_random_id() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
name = "deployment-7"
replicas = { source = "static" }
[[models.deployments]]
id = "b"
name = "deployment-x2"
replicas = { source = "static" }
[[models.deployments]]
id = "c"
replicas = { source = "static" }
"#;
    let mut doc = ConfigDocument::parse(text, "t").unwrap();
    let mut ids = Vec::new();
    for expected in ["deployment-8", "deployment-9", "deployment-10"] {
        let id = doc
            .add_deployment("m", new_deployment("127.0.0.1:9000"))
            .unwrap();
        assert_eq!(id.len(), 8, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{id}"
        );
        assert!(!ids.contains(&id));
        assert_eq!(model(&doc).deployment(&id).unwrap().name, expected);
        ids.push(id);
    }

    // Given ids and names are kept; a taken id is a conflict.
    let mut given = new_deployment("127.0.0.1:9000");
    given.id = Some("z9".into());
    given.name = Some("blue".into());
    assert_eq!(doc.add_deployment("m", given.clone()).unwrap(), "z9");
    assert_eq!(model(&doc).deployment("z9").unwrap().name, "blue");
    let before = doc.text();
    assert!(
        matches!(doc.add_deployment("m", given), Err(EditError::Conflict(m)) if m.contains("`z9`"))
    );
    assert_eq!(doc.text(), before);

    // No `deployment-N` yet: deployment-1.
    let mut doc = ConfigDocument::parse("[[models]]\nid = \"m\"\n", "t").unwrap();
    let id = doc
        .add_deployment("m", new_deployment("127.0.0.1:9000"))
        .unwrap();
    assert_eq!(model(&doc).deployment(&id).unwrap().name, "deployment-1");
    assert!(matches!(
        doc.add_deployment("nope", new_deployment("127.0.0.1:9000")),
        Err(EditError::NotFound(m)) if m == "model `nope`"
    ));
}

#[test]
fn a_new_deployment_takes_every_setting_given() {
    let mut doc = example();
    let mut new = new_deployment("127.0.0.1:9200");
    new.active = Some(false);
    new.resources = Some(ResourcesSpec {
        cpu: Some(2.0),
        memory: Some("4Gi".into()),
        accelerator: None,
    });
    new.predict_concurrency = Some(8);
    new.autoscaling = Some(AutoscalingPatch {
        max_replica: Some(4),
        concurrency_target: Some(6),
        ..Default::default()
    });
    new.engine =
        Some(toml::from_str("backend = \"synthetic\"\nfixed_ms = 5\nmax_batch_size = 4").unwrap());
    let id = doc.add_deployment(MODEL, new).unwrap();
    let d = model(&doc).deployment(&id).unwrap().clone();
    assert!(!d.active);
    assert_eq!(
        (d.resources.cpu_millis, d.resources.memory_mib),
        (2000, 4096)
    );
    assert_eq!(d.predict_concurrency, 8);
    assert_eq!(d.autoscaling.max_replica, 4);
    assert_eq!(d.autoscaling.concurrency_target, 6);
    assert_eq!(d.engine.unwrap().max_batch_size, 4);
    let text = doc.text();
    assert!(
        text.contains(
            "\n[models.deployments.autoscaling]\nmax_replica = 4\nconcurrency_target = 6\n"
        )
    );
    assert!(text.contains("\n[models.deployments.engine]\nbackend = \"synthetic\"\n"));

    let mut both = new_deployment("127.0.0.1:9200");
    both.instance_type = Some("1x2".into());
    both.resources = Some(ResourcesSpec::default());
    assert!(matches!(
        doc.add_deployment(MODEL, both),
        Err(EditError::BadRequest(_))
    ));
}

#[test]
fn a_deployment_is_deleted_only_once_no_environment_serves_it() {
    let mut doc = example();
    let before = doc.text();
    match doc.delete_deployment(MODEL, "v2") {
        Err(EditError::Conflict(m)) => {
            assert!(m.contains("`v2`") && m.contains("`staging`"), "{m}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(doc.text(), before);

    assert_eq!(
        doc.point_environment(MODEL, "staging", "v1").unwrap(),
        Changed::Changed
    );
    doc.delete_deployment(MODEL, "v2").unwrap();
    assert!(model(&doc).deployment("v2").is_none());
    assert!(matches!(
        doc.delete_deployment(MODEL, "v2"),
        Err(EditError::NotFound(m)) if m == "deployment `v2` of model `demo1`"
    ));
    assert_comments_kept(
        EXAMPLE,
        &doc.text(),
        &[
            "name defaults to \"deployment-2\"",
            "Instead of instance_type",
            "accelerator as \"L4\"",
        ],
        "delete v2",
    );
}

#[test]
fn deleting_a_deployment_does_not_rename_the_next_ones() {
    let text = r#"[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = { source = "static" }
[[models.deployments]]
id = "b"
replicas = { source = "static" }
[[models.deployments]]
id = "c"
name = "custom"
replicas = { source = "static" }
[[models.deployments]]
id = "d"
replicas = { source = "static" }
"#;
    let mut doc = ConfigDocument::parse(text, "t").unwrap();
    let names = |doc: &ConfigDocument| {
        model(doc)
            .deployments
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>()
    };
    doc.delete_deployment("m", "a").unwrap();
    assert_eq!(names(&doc), ["deployment-2", "custom", "deployment-4"]);
    assert!(
        doc.text()
            .contains("id = \"b\"\nreplicas = { source = \"static\" }\nname = \"deployment-2\"\n")
    );
}

#[test]
fn production_always_exists_and_cannot_be_deleted() {
    let mut doc = example();
    let before = doc.text();
    assert!(matches!(
        doc.delete_environment(MODEL, "production"),
        Err(EditError::Conflict(_))
    ));
    assert!(matches!(
        doc.add_environment(MODEL, new_environment("production", None)),
        Err(EditError::Conflict(m)) if m.contains("already exists")
    ));
    assert!(matches!(
        doc.add_environment(MODEL, new_environment("staging", None)),
        Err(EditError::Conflict(_))
    ));
    assert!(matches!(
        doc.delete_environment(MODEL, "qa"),
        Err(EditError::NotFound(m)) if m == "environment `qa` of model `demo1`"
    ));
    assert_eq!(doc.text(), before);
    assert_eq!(
        doc.delete_environment(MODEL, "staging").unwrap().as_deref(),
        Some("v2")
    );
    assert!(model(&doc).environment("staging").is_none());
}

#[test]
fn an_implicit_production_environment_is_written_when_edited() {
    let text = r#"[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = { source = "static" }

# Staging: for the QA team.
[[models.environments]]
name = "staging"
"#;
    let mut doc = ConfigDocument::parse(text, "t").unwrap();
    assert_eq!(model(&doc).environments[0].name, "production");
    // Nothing to write: the implicit entry already means this.
    let same = EnvironmentPatch {
        promotion: Some(PromotionPatch {
            ramp_up: Some(false),
            ..Default::default()
        }),
        autoscaling: None,
    };
    assert_eq!(
        doc.update_environment("m", "production", same).unwrap(),
        Changed::Unchanged
    );
    assert_eq!(doc.text(), text);

    assert_eq!(
        doc.point_environment("m", "production", "a").unwrap(),
        Changed::Changed
    );
    let expected = text.replace(
        "\n# Staging",
        "\n[[models.environments]]\nname = \"production\"\ndeployment = \"a\"\n\n# Staging",
    );
    assert_eq!(doc.text(), expected);
    let names: Vec<_> = model(&doc)
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["production", "staging"]);
}

#[test]
fn a_second_development_deployment_is_refused() {
    let mut doc = example();
    let mut dev = new_deployment("127.0.0.1:9300");
    dev.kind = Some(DeploymentKind::Development);
    match doc.add_deployment(MODEL, dev.clone()) {
        Err(EditError::Conflict(m)) => assert!(m.contains("`dev`"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    doc.delete_deployment(MODEL, "development").unwrap();
    let id = doc.add_deployment(MODEL, dev).unwrap();
    let d = model(&doc).deployment(&id).unwrap();
    assert_eq!(
        (d.kind, d.name.as_str()),
        (DeploymentKind::Development, "development")
    );
}

#[test]
fn promoting_development_copies_it_into_a_new_regular_deployment() {
    let text = r#"[[models]]
id = "m"

[[models.deployments]]
id = "a"
replicas = { source = "static" }

# The one we iterate on.
[[models.deployments]]
id = "dev"
kind = "development"   # served at /development/predict
active = false
resources = { cpu = 2, memory = "4Gi" }
predict_concurrency = 4     # four at once
replicas = { source = "static", addresses = ["127.0.0.1:9102"] }

[models.deployments.autoscaling]
max_replica = 1   # development: one at most

[models.deployments.engine]
backend = "synthetic"   # no model
max_batch_size = 2

[[models.environments]]
name = "production"
deployment = "a"
"#;
    let mut doc = ConfigDocument::parse(text, "t").unwrap();
    let id = doc.promote_development("m").unwrap();
    let m = model(&doc);
    let (dev, new) = (m.deployment("dev").unwrap(), m.deployment(&id).unwrap());
    assert_ne!(id, "dev");
    assert_eq!(new.kind, DeploymentKind::Regular);
    assert_eq!(new.name, "deployment-2");
    assert!(new.active, "the copy starts active");
    assert_eq!(new.resources, dev.resources);
    assert_eq!(new.predict_concurrency, 4);
    assert_eq!(new.replicas, dev.replicas);
    assert_eq!(new.engine, dev.engine);
    assert_eq!(new.autoscaling, Autoscaling::default());
    // Appended after the last deployment, before the environments, without
    // the development deployment's comments.
    let copy = format!(
        r#"
[[models.deployments]]
id = "{id}"
name = "deployment-2"
resources = {{ cpu = 2, memory = "4Gi" }}
predict_concurrency = 4
replicas = {{ source = "static", addresses = ["127.0.0.1:9102"] }}

[models.deployments.engine]
backend = "synthetic"
max_batch_size = 2
"#
    );
    let environments = "\n[[models.environments]]";
    let expected = text.replace(environments, &format!("{copy}{environments}"));
    assert_eq!(doc.text(), expected);

    doc.delete_deployment("m", "dev").unwrap();
    assert!(matches!(
        doc.promote_development("m"),
        Err(EditError::NotFound(m)) if m == "development deployment of model `m`"
    ));
}

#[test]
fn an_invalid_result_is_refused_with_located_errors_and_changes_nothing() {
    let mut doc = example();
    let err = doc
        .set_autoscaling(MODEL, deployment_scope("v1"), autoscaling(Some(5), None))
        .unwrap_err();
    let EditError::Invalid(errors) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    let e = &errors.errors[0];
    assert_eq!(e.path, "models[0].deployments[0].autoscaling.min_replica");
    assert!(
        e.message.contains("greater than `max_replica`"),
        "{}",
        e.message
    );
    let location = e.location.unwrap();
    assert_eq!(
        (location.line, location.column),
        (line_of(EXAMPLE, "min_replica = 0"), 1)
    );
    assert!(err.to_string().contains("examples/gateway.toml:"), "{err}");
    assert_eq!(doc.text(), EXAMPLE);
    assert_eq!(doc.config(), &load_str(EXAMPLE, "x").unwrap());

    // A development deployment runs one replica at most.
    let err = doc
        .set_autoscaling(
            MODEL,
            deployment_scope("development"),
            autoscaling(None, Some(2)),
        )
        .unwrap_err();
    assert!(matches!(err, EditError::Invalid(_)), "{err:?}");
    let bad_id = NewDeployment {
        id: Some("production".into()),
        ..new_deployment("127.0.0.1:9000")
    };
    assert!(matches!(
        doc.add_deployment(MODEL, bad_id),
        Err(EditError::Invalid(_))
    ));
    assert_eq!(doc.text(), EXAMPLE);
}

#[test]
fn edits_that_change_nothing_report_unchanged_and_leave_the_text() {
    let mut doc = example();
    let v1_defaults = autoscaling(Some(0), Some(1));
    let unchanged = [
        doc.set_autoscaling(MODEL, deployment_scope("v1"), v1_defaults)
            .unwrap(),
        // v2 has no table: writing the defaults would change nothing.
        doc.set_autoscaling(MODEL, deployment_scope("v2"), v1_defaults)
            .unwrap(),
        doc.set_autoscaling(MODEL, deployment_scope("v2"), AutoscalingPatch::default())
            .unwrap(),
        doc.set_deployment_active(MODEL, "v1", true).unwrap(),
        doc.point_environment(MODEL, "production", "v1").unwrap(),
        doc.update_deployment(MODEL, "v2", DeploymentPatch::default())
            .unwrap(),
        doc.update_deployment(
            MODEL,
            "v2",
            DeploymentPatch {
                name: Some("deployment-2".into()),
                instance_type: Some("1x2".into()),
                ..Default::default()
            },
        )
        .unwrap(),
        doc.update_environment(MODEL, "staging", EnvironmentPatch::default())
            .unwrap(),
        doc.update_environment(
            MODEL,
            "production",
            EnvironmentPatch {
                promotion: Some(PromotionPatch {
                    cleanup_strategy: Some(CleanupStrategy::ScaleToZero),
                    ramp_up_duration: Some(600),
                    ramp_up: None,
                    rollback: None,
                }),
                autoscaling: None,
            },
        )
        .unwrap(),
    ];
    assert!(
        unchanged.iter().all(|c| *c == Changed::Unchanged),
        "{unchanged:?}"
    );
    assert_eq!(doc.text(), EXAMPLE);
    assert!(!Changed::Unchanged.is_changed());

    let changed = doc.set_deployment_active(MODEL, "v2", false).unwrap();
    assert!(changed.is_changed());
    assert_eq!(
        doc.set_deployment_active(MODEL, "v2", false).unwrap(),
        Changed::Unchanged
    );
}

#[test]
fn development_and_production_name_deployments() {
    let mut doc = example();
    assert_eq!(doc.resolve_deployment(MODEL, "production").unwrap(), "v1");
    assert_eq!(doc.resolve_deployment(MODEL, "development").unwrap(), "dev");
    assert_eq!(doc.resolve_deployment(MODEL, "v2").unwrap(), "v2");

    doc.set_autoscaling(
        MODEL,
        deployment_scope("production"),
        autoscaling(None, Some(4)),
    )
    .unwrap();
    assert_eq!(
        model(&doc)
            .deployment("v1")
            .unwrap()
            .autoscaling
            .max_replica,
        4
    );
    let rename = DeploymentPatch {
        name: Some("sandbox".into()),
        ..Default::default()
    };
    doc.update_deployment(MODEL, "development", rename).unwrap();
    assert_eq!(model(&doc).deployment("dev").unwrap().name, "sandbox");
    doc.point_environment(MODEL, "staging", "development")
        .unwrap();
    assert_eq!(
        model(&doc)
            .environment("staging")
            .unwrap()
            .deployment
            .as_deref(),
        Some("dev")
    );
    assert!(matches!(
        doc.delete_deployment(MODEL, "production"),
        Err(EditError::Conflict(_))
    ));

    let mut bare = ConfigDocument::parse("[[models]]\nid = \"m\"\n", "t").unwrap();
    assert!(matches!(
        bare.resolve_deployment("m", "development"),
        Err(EditError::NotFound(m)) if m == "development deployment of model `m`"
    ));
    assert!(matches!(
        bare.set_deployment_active("m", "production", true),
        Err(EditError::NotFound(m)) if m.contains("production environment")
    ));
}

#[test]
fn environments_point_only_at_existing_active_deployments() {
    let mut doc = example();
    doc.set_deployment_active(MODEL, "dev", false).unwrap();
    let before = doc.text();
    assert!(matches!(
        doc.point_environment(MODEL, "staging", "dev"),
        Err(EditError::Conflict(m)) if m.contains("inactive")
    ));
    assert!(matches!(
        doc.add_environment(MODEL, new_environment("qa", Some("development"))),
        Err(EditError::Conflict(_))
    ));
    assert!(matches!(
        doc.point_environment(MODEL, "staging", "v9"),
        Err(EditError::NotFound(m)) if m == "deployment `v9` of model `demo1`"
    ));
    assert!(matches!(
        doc.point_environment(MODEL, "qa", "v1"),
        Err(EditError::NotFound(m)) if m == "environment `qa` of model `demo1`"
    ));
    assert_eq!(doc.text(), before);

    // Deactivating a served deployment is allowed: the environment answers 404.
    doc.set_deployment_active(MODEL, "v2", false).unwrap();
    assert_eq!(
        model(&doc)
            .environment("staging")
            .unwrap()
            .deployment
            .as_deref(),
        Some("v2")
    );
}

#[test]
fn new_environments_take_their_settings() {
    let mut doc = example();
    let new = NewEnvironment {
        autoscaling: Some(autoscaling(Some(1), Some(3))),
        promotion: Some(PromotionPatch {
            cleanup_strategy: Some(CleanupStrategy::Deactivate),
            ramp_up: Some(true),
            ramp_up_duration: Some(120),
            rollback: None,
        }),
        ..new_environment("canary", Some("production"))
    };
    doc.add_environment(MODEL, new).unwrap();
    let canary = model(&doc).environment("canary").unwrap();
    assert_eq!(canary.deployment.as_deref(), Some("v1"));
    assert_eq!(canary.autoscaling.unwrap().max_replica, 3);
    assert_eq!(
        canary.promotion.cleanup_strategy,
        CleanupStrategy::Deactivate
    );
    assert_eq!(canary.promotion.ramp_up_duration, 120);
    assert!(doc.text().ends_with(
        "\n[[models.environments]]\nname = \"canary\"\ndeployment = \"v1\"\n\n\
         [models.environments.autoscaling]\nmin_replica = 1\nmax_replica = 3\n\n\
         [models.environments.promotion]\ncleanup_strategy = \"DEACTIVATE\"\nramp_up = true\nramp_up_duration = 120\n"
    ));

    let bad_name = new_environment("Canary!", None);
    assert!(matches!(
        doc.add_environment(MODEL, bad_name),
        Err(EditError::Invalid(_))
    ));
}
