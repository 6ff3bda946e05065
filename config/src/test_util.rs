//! Config fixtures shared by tests and benchmarks (feature `test-util`).

use std::fmt::Write;

/// `[[models]]` entries for `models` models `m0`, `m1`, ..., each with two
/// deployments `a` and `b` (both served by `replica`) and the environments
/// `production` (-> `a`) and `staging` (-> `b`).
pub fn many_models_toml(models: usize, replica: &str) -> String {
    let mut text = String::with_capacity(models * 400);
    for i in 0..models {
        let _ = write!(
            text,
            r#"
[[models]]
id = "m{i}"
[[models.deployments]]
id = "a"
replicas = {{ source = "static", addresses = ["{replica}"] }}
[[models.deployments]]
id = "b"
replicas = {{ source = "static", addresses = ["{replica}"] }}
[[models.environments]]
name = "production"
deployment = "a"
[[models.environments]]
name = "staging"
deployment = "b"
"#
        );
    }
    text
}
