//! Helpers of the rollout tests: a model with a production environment,
//! and edit requests written in TOML.

/// Model `m` with deployments `a`, `b` and inactive `off` (lines 2-13);
/// production serves `a` and ends with `env` (from line 17).
pub fn with_production(env: &str) -> String {
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
pub fn request<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).unwrap()
}
