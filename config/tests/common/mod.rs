//! What the `config::edit` tests share: the annotated example, request
//! builders and comment checks.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of this

use config::Model;
use config::edit::{
    AutoscalingPatch, AutoscalingScope, ConfigDocument, NewDeployment, NewEnvironment, ReplicasSpec,
};

pub mod rollout;

pub const EXAMPLE: &str = include_str!("../../../examples/gateway.toml");
pub const MODEL: &str = "demo1";

/// The errors of an invalid config, each as `line: path: message`.
pub fn errors(text: &str) -> Vec<String> {
    located(config::load_str(text, "test.toml").unwrap_err())
}

/// Each error as `line: path: message` (line 0 when it has none).
pub fn located(errors: config::ConfigErrors) -> Vec<String> {
    errors
        .errors
        .into_iter()
        .map(|e| {
            let at = e.location.map(|l| l.line).unwrap_or(0);
            format!("{at}: {}: {}", e.path, e.message)
        })
        .collect()
}

pub fn example() -> ConfigDocument {
    ConfigDocument::parse(EXAMPLE, "examples/gateway.toml").expect("the example is valid")
}

pub fn model(doc: &ConfigDocument) -> &Model {
    &doc.config().models[0]
}

/// A regular deployment with one static replica and nothing else set.
pub fn new_deployment(address: &str) -> NewDeployment {
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
        queue: None,
    }
}

pub fn new_environment(name: &str, deployment: Option<&str>) -> NewEnvironment {
    NewEnvironment {
        name: name.to_owned(),
        deployment: deployment.map(str::to_owned),
        autoscaling: None,
        promotion: None,
    }
}

pub fn autoscaling(min: Option<i64>, max: Option<i64>) -> AutoscalingPatch {
    AutoscalingPatch {
        min_replica: min,
        max_replica: max,
        ..Default::default()
    }
}

pub fn deployment_scope(reference: &str) -> AutoscalingScope {
    AutoscalingScope::Deployment(reference.to_owned())
}

/// The comment of each line (from its `#`); the example has no `#` in strings.
pub fn comments(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.find('#').map(|i| &line[i..]))
        .collect()
}

/// Every comment of `before` is in `after`, in the same order, except those
/// containing one of `removed` (which must be gone).
pub fn assert_comments_kept(before: &str, after: &str, removed: &[&str], what: &str) {
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
pub fn comment_column(text: &str, start: &str) -> Option<usize> {
    text.lines().find(|l| l.starts_with(start))?.find('#')
}

/// The 1-based number of the first line starting with `start`.
pub fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with `{start}`"))
        + 1
}

pub type Edit = fn(&mut ConfigDocument);
pub type Check = fn(&Model) -> bool;
