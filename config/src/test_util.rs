//! Config fixtures shared by tests and benchmarks (feature `test-util`).

use std::fmt::Write;

/// A config with `models` models, each with two deployments (both served by
/// `replica`), a production and a staging environment, and one key
/// `igw_test_key` with scope "all".
pub fn many_models_toml(models: usize, replica: &str) -> String {
    let mut text = String::with_capacity(models * 400);
    text.push_str(
        "[[api_keys]]\nname = \"test\"\nsha256 = \"",
    );
    text.push_str(&hex::encode(crate::key_digest("igw_test_key")));
    text.push_str("\"\nscope = \"all\"\n");
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
