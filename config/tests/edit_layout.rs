//! `config::edit` keeps the operator's file: every comment, each table in
//! the form it was written, new entries where they belong.

mod common;

use config::edit::{
    AutoscalingPatch, AutoscalingScope, Changed, ConfigDocument, DeploymentPatch, EditError,
    EnvironmentPatch, NewDeployment, NewEnvironment, PromotionPatch, ReplicasSpec, ResourcesSpec,
};
use config::{CleanupStrategy, DeploymentKind, ReplicaSource, load_str};

use common::*;

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
    let ReplicaSource::Static { addresses } = &v2.replicas else {
        panic!("expected static replicas, got {:?}", v2.replicas)
    };
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
