//! Comment-preserving edits of the config document (`config::edit`).

use config::edit::{
    AutoscalingPatch, AutoscalingScope, Changed, ConfigDocument, DeploymentPatch, EditError,
    EnvironmentPatch, NewDeployment, NewEnvironment, PromotionPatch, ReplicasSpec, ResourcesSpec,
};
use config::{Autoscaling, CleanupStrategy, DeploymentKind, Model, ReplicaSource, load_str};

const EXAMPLE: &str = include_str!("../../examples/gateway.toml");
const MODEL: &str = "demo1";

fn example() -> ConfigDocument {
    ConfigDocument::parse(EXAMPLE, "examples/gateway.toml").expect("the example is valid")
}

fn model(doc: &ConfigDocument) -> &Model {
    &doc.config().models[0]
}

/// A regular deployment with one static replica and nothing else set.
fn new_deployment(address: &str) -> NewDeployment {
    NewDeployment {
        id: None,
        name: None,
        kind: None,
        active: None,
        instance_type: None,
        resources: None,
        predict_concurrency: None,
        autoscaling: None,
        replicas: ReplicasSpec {
            source: "static".to_owned(),
            addresses: vec![address.to_owned()],
        },
        engine: None,
    }
}

fn new_environment(name: &str, deployment: Option<&str>) -> NewEnvironment {
    NewEnvironment {
        name: name.to_owned(),
        deployment: deployment.map(str::to_owned),
        autoscaling: None,
        promotion: None,
    }
}

fn autoscaling(min: Option<i64>, max: Option<i64>) -> AutoscalingPatch {
    AutoscalingPatch {
        min_replica: min,
        max_replica: max,
        ..Default::default()
    }
}

fn deployment_scope(reference: &str) -> AutoscalingScope {
    AutoscalingScope::Deployment(reference.to_owned())
}

/// The comment of each line (from its `#`); the example has no `#` in strings.
fn comments(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.find('#').map(|i| &line[i..]))
        .collect()
}

/// Every comment of `before` is in `after`, in the same order, except those
/// containing one of `removed` (which must be gone).
fn assert_comments_kept(before: &str, after: &str, removed: &[&str], what: &str) {
    let mut remaining = comments(after).into_iter();
    for comment in comments(before) {
        if removed.iter().any(|r| comment.contains(r)) {
            assert!(
                !after.contains(comment),
                "{what}: `{comment}` should be gone"
            );
            continue;
        }
        assert!(
            remaining.any(|c| c == comment),
            "{what}: lost or moved the comment `{comment}`:\n{after}"
        );
    }
}

/// The 1-based column of the `#` on the first line starting with `start`.
fn comment_column(text: &str, start: &str) -> Option<usize> {
    text.lines().find(|l| l.starts_with(start))?.find('#')
}

/// The 1-based number of the first line starting with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with `{start}`"))
        + 1
}

type Edit = fn(&mut ConfigDocument);
type Check = fn(&Model) -> bool;

#[test]
fn parse_keeps_the_text_byte_for_byte_and_validates_it() {
    let doc = example();
    assert_eq!(doc.text(), EXAMPLE);
    assert_eq!(doc.origin(), "examples/gateway.toml");
    assert_eq!(doc.config(), &load_str(EXAMPLE, "x").unwrap());

    let broken = EXAMPLE.replace("max_replica = 2", "max_replica = 0");
    let from_doc = ConfigDocument::parse(&broken, "g.toml").unwrap_err();
    let from_load = load_str(&broken, "g.toml").unwrap_err();
    assert_eq!(from_doc.errors, from_load.errors);
}

#[test]
fn every_edit_of_the_example_keeps_its_comments_and_validates() {
    let edits: Vec<(&str, Edit, &[&str], Check)> = vec![
        (
            "add_deployment",
            |d| {
                drop(
                    d.add_deployment(MODEL, new_deployment("127.0.0.1:9200"))
                        .unwrap(),
                )
            },
            &[],
            |m| m.deployments.len() == 4 && m.deployments[3].name == "deployment-3",
        ),
        (
            "update_deployment",
            |d| {
                let patch = DeploymentPatch {
                    name: Some("first".into()),
                    predict_concurrency: Some(4),
                    ..Default::default()
                };
                d.update_deployment(MODEL, "v1", patch).unwrap();
            },
            &[],
            |m| m.deployments[0].name == "first" && m.deployments[0].predict_concurrency == 4,
        ),
        (
            "set_deployment_active",
            |d| {
                assert_eq!(
                    d.set_deployment_active(MODEL, "v2", false).unwrap(),
                    Changed::Changed
                )
            },
            &[],
            |m| !m.deployments[1].active,
        ),
        (
            "delete_deployment",
            |d| d.delete_deployment(MODEL, "dev").unwrap(),
            &["named \"development\" by default"],
            |m| m.deployments.len() == 2,
        ),
        (
            "set_autoscaling of a deployment with a table",
            |d| {
                assert_eq!(
                    d.set_autoscaling(MODEL, deployment_scope("v1"), autoscaling(Some(1), Some(3)))
                        .unwrap(),
                    Changed::Changed
                )
            },
            &[],
            |m| {
                (
                    m.deployments[0].autoscaling.min_replica,
                    m.deployments[0].autoscaling.max_replica,
                ) == (1, 3)
            },
        ),
        (
            "set_autoscaling of a deployment without one",
            |d| {
                assert_eq!(
                    d.set_autoscaling(MODEL, deployment_scope("v2"), autoscaling(None, Some(3)))
                        .unwrap(),
                    Changed::Changed
                )
            },
            &[],
            |m| m.deployments[1].autoscaling.max_replica == 3,
        ),
        (
            "set_autoscaling of an environment",
            |d| {
                let scope = AutoscalingScope::Environment("staging".into());
                d.set_autoscaling(MODEL, scope, autoscaling(Some(1), None))
                    .unwrap();
            },
            &[],
            |m| m.environments[1].autoscaling.unwrap().min_replica == 1,
        ),
        (
            "add_environment",
            |d| {
                d.add_environment(MODEL, new_environment("canary", Some("v2")))
                    .unwrap()
            },
            &[],
            |m| m.environment("canary").unwrap().deployment.as_deref() == Some("v2"),
        ),
        (
            "update_environment",
            |d| {
                let patch = EnvironmentPatch {
                    promotion: Some(PromotionPatch {
                        ramp_up: Some(true),
                        cleanup_strategy: Some(CleanupStrategy::Keep),
                        ..Default::default()
                    }),
                    autoscaling: Some(autoscaling(None, Some(5))),
                };
                d.update_environment(MODEL, "production", patch).unwrap();
            },
            &[],
            |m| {
                let p = m.environment("production").unwrap();
                p.promotion.ramp_up
                    && p.promotion.cleanup_strategy == CleanupStrategy::Keep
                    && p.autoscaling.unwrap().max_replica == 5
            },
        ),
        (
            "delete_environment",
            |d| {
                assert_eq!(
                    d.delete_environment(MODEL, "staging").unwrap().as_deref(),
                    Some("v2")
                )
            },
            &[
                "Autoscaling settings the deployment takes on",
                "and defaults as a deployment's",
            ],
            |m| m.environments.len() == 1,
        ),
        (
            "point_environment",
            |d| {
                assert_eq!(
                    d.point_environment(MODEL, "staging", "v1").unwrap(),
                    Changed::Changed
                )
            },
            &[],
            |m| m.environment("staging").unwrap().deployment.as_deref() == Some("v1"),
        ),
        (
            "promote_development",
            |d| drop(d.promote_development(MODEL).unwrap()),
            &[],
            |m| m.deployments.len() == 4 && m.deployments[3].kind == DeploymentKind::Regular,
        ),
    ];
    for (what, edit, removed, check) in edits {
        let mut doc = example();
        edit(&mut doc);
        let text = doc.text();
        let config = load_str(&text, what).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
        assert_eq!(&config, doc.config(), "{what}");
        assert!(
            check(&config.models[0]),
            "{what} did not do its job:\n{text}"
        );
        assert_comments_kept(EXAMPLE, &text, removed, what);
    }
}

#[test]
fn replaced_values_keep_their_comment_in_its_column() {
    let mut doc = example();
    let patch = DeploymentPatch {
        name: Some("the-first-one-with-a-long-name".into()),
        ..Default::default()
    };
    doc.update_deployment(MODEL, "v1", patch).unwrap();
    let patch = AutoscalingPatch {
        max_replica: Some(12),
        ..Default::default()
    };
    doc.set_autoscaling(MODEL, deployment_scope("v1"), patch)
        .unwrap();
    let text = doc.text();
    assert_eq!(
        comment_column(&text, "max_replica = 12"),
        comment_column(EXAMPLE, "max_replica = 1 ")
    );
    // Too long to keep the column: one space before the comment.
    assert!(text.contains("name = \"the-first-one-with-a-long-name\" # display name"));
}

#[test]
fn new_entries_land_inside_their_model() {
    let mut doc = example();
    let id = doc
        .add_deployment(MODEL, new_deployment("127.0.0.1:9200"))
        .unwrap();
    doc.add_environment(MODEL, new_environment("canary", Some(&id)))
        .unwrap();
    doc.set_autoscaling(MODEL, deployment_scope("v2"), autoscaling(None, Some(3)))
        .unwrap();
    let text = doc.text();
    let new_deployment = line_of(&text, &format!("id = \"{id}\""));
    assert!(line_of(&text, "id = \"dev\"") < new_deployment);
    assert!(new_deployment < line_of(&text, "# Environments: stable endpoints"));
    assert!(line_of(&text, "max_replica = 2") < line_of(&text, "name = \"canary\""));
    // v2's new autoscaling table follows v2, before the next deployment.
    let v2_table = line_of(&text, "max_replica = 3");
    assert!(line_of(&text, "id = \"v2\"") < v2_table && v2_table < line_of(&text, "id = \"dev\""));
    let m = model(&doc);
    assert_eq!(m.deployment("v2").unwrap().autoscaling.max_replica, 3);
    assert_eq!(
        m.deployments
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["v1", "v2", "dev", id.as_str()]
    );
}

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

#[test]
fn resources_replicas_and_engine_are_replaced_in_the_form_the_file_uses() {
    let mut doc = example();
    let patch = DeploymentPatch {
        instance_type: Some("2x4".into()),
        replicas: Some(ReplicasSpec {
            source: "static".into(),
            addresses: vec!["127.0.0.1:9103".into(), "127.0.0.1:9104".into()],
        }),
        ..Default::default()
    };
    doc.update_deployment(MODEL, "v2", patch).unwrap();
    let text = doc.text();
    assert!(
        text.contains(
            "id = \"v2\"\n# name defaults to \"deployment-2\"\n\
         replicas = { source = \"static\", addresses = [\"127.0.0.1:9103\", \"127.0.0.1:9104\"] }\n\
         instance_type = \"2x4\"\n"
        ),
        "{text}"
    );
    let v2 = model(&doc).deployment("v2").unwrap();
    assert_eq!(v2.resources.cpu_millis, 2000);
    let ReplicaSource::Static { addresses } = &v2.replicas;
    assert_eq!(addresses.len(), 2);

    // Back to resources: `instance_type` goes, the inline table comes back.
    let patch = DeploymentPatch {
        resources: Some(ResourcesSpec {
            cpu: Some(0.5),
            ..Default::default()
        }),
        ..Default::default()
    };
    doc.update_deployment(MODEL, "v2", patch).unwrap();
    assert!(doc.text().contains("resources = { cpu = 0.5 }\n"));
    assert!(!doc.text().contains("instance_type = \"2x4\""));
    assert_eq!(
        model(&doc).deployment("v2").unwrap().resources.cpu_millis,
        500
    );

    let both = DeploymentPatch {
        instance_type: Some("1x2".into()),
        resources: Some(ResourcesSpec::default()),
        ..Default::default()
    };
    assert!(matches!(
        doc.update_deployment(MODEL, "v2", both),
        Err(EditError::BadRequest(_))
    ));
    let empty_name = DeploymentPatch {
        name: Some(" ".into()),
        ..Default::default()
    };
    assert!(matches!(
        doc.update_deployment(MODEL, "v2", empty_name),
        Err(EditError::BadRequest(_))
    ));
}

#[test]
fn inline_arrays_and_inline_tables_stay_inline() {
    let text = r#"[[models]]
id = "m"
deployments = [
  { id = "a", replicas = { source = "static" } },  # the first
  { id = "b", replicas = { source = "static" }, autoscaling = { max_replica = 2 } },
]
environments = [{ name = "production", deployment = "a" }]

[[models]]
id = "n"

[[models.deployments]]
id = "x"
replicas = { source = "static" }
autoscaling = { max_replica = 2 }   # inline here
"#;
    let mut doc = ConfigDocument::parse(text, "t").unwrap();
    doc.set_autoscaling("m", deployment_scope("a"), autoscaling(None, Some(3)))
        .unwrap();
    doc.set_autoscaling("m", deployment_scope("b"), autoscaling(Some(1), None))
        .unwrap();
    doc.set_autoscaling("n", deployment_scope("x"), autoscaling(Some(1), None))
        .unwrap();
    let mut c = new_deployment("127.0.0.1:9000");
    c.id = Some("c".into());
    doc.add_deployment("m", c).unwrap();
    doc.add_environment("m", new_environment("staging", Some("b")))
        .unwrap();
    let expected = r#"[[models]]
id = "m"
deployments = [
  { id = "a", replicas = { source = "static" }, autoscaling = { max_replica = 3 } },  # the first
  { id = "b", replicas = { source = "static" }, autoscaling = { max_replica = 2, min_replica = 1 } },
  { id = "c", name = "deployment-3", replicas = { source = "static", addresses = ["127.0.0.1:9000"] } },
]
environments = [{ name = "production", deployment = "a" }, { name = "staging", deployment = "b" }]

[[models]]
id = "n"

[[models.deployments]]
id = "x"
replicas = { source = "static" }
autoscaling = { max_replica = 2, min_replica = 1 }   # inline here
"#;
    assert_eq!(doc.text(), expected);

    doc.delete_environment("m", "staging").unwrap();
    doc.delete_deployment("m", "c").unwrap();
    let patch = DeploymentPatch {
        resources: Some(ResourcesSpec {
            memory: Some("1Gi".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    doc.update_deployment("m", "b", patch).unwrap();
    assert!(doc.text().contains(
        "  { id = \"b\", replicas = { source = \"static\" }, autoscaling = { max_replica = 2, min_replica = 1 }, resources = { memory = \"1Gi\" } },\n]\n\
         environments = [{ name = \"production\", deployment = \"a\" }]\n"
    ), "{}", doc.text());
}

#[test]
fn request_bodies_deserialize_strictly() {
    // The HTTP layer feeds JSON; any serde format exercises the same derive.
    let patch: AutoscalingPatch = toml::from_str("min_replica = 1\nmax_replica = 3").unwrap();
    assert_eq!(patch, autoscaling(Some(1), Some(3)));
    assert!(toml::from_str::<AutoscalingPatch>("min_replicas = 1").is_err());

    let new: NewDeployment = toml::from_str(
        "kind = \"development\"\nreplicas = { source = \"static\", addresses = [\"127.0.0.1:1\"] }\n\
         engine = { backend = \"synthetic\", fixed_ms = 3 }",
    )
    .unwrap();
    assert_eq!(new.kind, Some(DeploymentKind::Development));
    assert_eq!(new.engine.unwrap()["fixed_ms"].as_integer(), Some(3));
    assert!(
        toml::from_str::<NewDeployment>("kind = \"dev\"\nreplicas = { source = \"static\" }")
            .is_err()
    );
    assert!(
        toml::from_str::<NewDeployment>("id = \"x\"").is_err(),
        "replicas are required"
    );

    let env: NewEnvironment =
        toml::from_str("name = \"qa\"\npromotion = { cleanup_strategy = \"KEEP\" }").unwrap();
    assert_eq!(
        env.promotion.unwrap().cleanup_strategy,
        Some(CleanupStrategy::Keep)
    );
    assert!(toml::from_str::<EnvironmentPatch>("deployment = \"v1\"").is_err());
    assert!(toml::from_str::<PromotionPatch>("cleanup_strategy = \"keep\"").is_err());
}

#[test]
fn documents_and_errors_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ConfigDocument>();
    send_sync::<EditError>();
    send_sync::<NewDeployment>();
}
