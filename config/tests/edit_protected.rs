//! API edits may not set or change file paths (a deployment engine's
//! `model`, `tokenizer`, `onnxruntime`) unless `[admin] api_may_set_paths`
//! says so, nor static replica addresses when `[admin]
//! api_may_set_replica_addresses = false`; edits that keep them pass.

use config::edit::{
    AutoscalingPatch, AutoscalingScope, ConfigDocument, DeploymentPatch, EditError, NewDeployment,
    Protected,
};
use config::{AdminSettings, EngineBackend, load_str};

/// A model with a hand-written local deployment `p` that has paths, and a
/// static one `s`; `admin` is the `[admin]` table's body.
fn doc(admin: &str) -> ConfigDocument {
    let text = format!(
        r#"[admin]
{admin}

[[models]]
id = "m"

[[models.deployments]]
id = "p"
replicas = {{ source = "local" }}
[models.deployments.engine]
backend = "onnx"
model = "models/m.onnx"
onnxruntime = "models/libonnxruntime.so"

[[models.deployments]]
id = "s"
replicas = {{ source = "static", addresses = ["127.0.0.1:9001"] }}
"#
    );
    ConfigDocument::parse(&text, "t.toml").expect("valid")
}

/// A request body, as the API would deserialize it (TOML here).
fn request<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).expect("a valid request")
}

/// The refusal's fields and setting; the document must be as it was.
fn refused(
    doc: &mut ConfigDocument,
    edit: impl FnOnce(&mut ConfigDocument) -> Result<(), EditError>,
) -> Protected {
    let before = doc.text();
    let err = edit(doc).expect_err("refused");
    assert_eq!(doc.text(), before, "a refused edit leaves the document");
    match err {
        EditError::Protected(p) => p,
        other => panic!("not a protected-field refusal: {other:?}"),
    }
}

const WITH_PATHS: &str = r#"id = "q"
replicas = { source = "local" }
engine = { backend = "onnx", model = "/tmp/x.onnx", onnxruntime = "/tmp/x.so" }"#;

#[test]
fn the_defaults_lock_paths_and_leave_addresses_to_the_api() {
    assert_eq!(
        load_str("", "t").unwrap().admin,
        AdminSettings {
            api_may_set_paths: false,
            api_may_set_replica_addresses: true,
        }
    );
    // Validated like every section: its line, what is wrong.
    let errors = load_str("[admin]\napi_may_set_paths = \"yes\"\n", "t.toml").unwrap_err();
    let message = errors.to_string();
    assert!(
        message.contains("t.toml:2:") && message.contains("expected a boolean"),
        "{message}"
    );
    let errors = load_str("[admin]\napi_may_set_path = true\n", "t.toml").unwrap_err();
    let message = errors.to_string();
    assert!(
        message.contains("t.toml:2:") && message.contains("admin.api_may_set_path"),
        "{message}"
    );
}

#[test]
fn a_new_deployment_with_file_paths_is_refused_naming_them() {
    let mut doc = doc("");
    let p = refused(&mut doc, |d| {
        d.add_deployment("m", request(WITH_PATHS)).map(drop)
    });
    assert_eq!(
        (p.deployment.as_str(), p.fields.as_str(), p.setting),
        (
            "q",
            "`engine.model`, `engine.tokenizer`, `engine.onnxruntime`",
            "api_may_set_paths"
        )
    );
    let message = EditError::Protected(p).to_string();
    assert!(message.contains("`engine.onnxruntime`"), "{message}");
    assert!(message.contains("api_may_set_paths = true"), "{message}");

    // Without paths (the synthetic backend), a local deployment is fine.
    let synthetic: NewDeployment = request(
        "id = \"y\"\nreplicas = { source = \"local\" }\nengine = { backend = \"synthetic\" }",
    );
    doc.add_deployment("m", synthetic).unwrap();
}

#[test]
fn edits_that_keep_the_paths_pass_and_changes_are_refused() {
    let mut doc = doc("");
    // Autoscaling, a rename, the engine table again with the same paths and
    // another setting: the paths stay, so each is accepted.
    let patch = AutoscalingPatch {
        max_replica: Some(2),
        ..Default::default()
    };
    doc.set_autoscaling("m", AutoscalingScope::Deployment("p".into()), patch)
        .unwrap();
    let same: DeploymentPatch = request(
        "name = \"renamed\"\nengine = { backend = \"onnx\", model = \"models/m.onnx\", tokenizer = \"models/tokenizer.json\", onnxruntime = \"models/libonnxruntime.so\", threads = 2 }",
    );
    assert!(doc.update_deployment("m", "p", same).unwrap().is_changed());
    doc.set_deployment_active("m", "p", false).unwrap();

    // Another runtime library: refused, naming that field only.
    let other: DeploymentPatch = request(
        "engine = { backend = \"onnx\", model = \"models/m.onnx\", onnxruntime = \"/tmp/evil.so\" }",
    );
    let p = refused(&mut doc, |d| d.update_deployment("m", "p", other).map(drop));
    assert_eq!(p.fields, "`engine.onnxruntime`");
    // Dropping it changes it too (the replica would load another library).
    let dropped: DeploymentPatch =
        request("engine = { backend = \"onnx\", model = \"models/m.onnx\" }");
    let p = refused(&mut doc, |d| {
        d.update_deployment("m", "p", dropped).map(drop)
    });
    assert_eq!(p.fields, "`engine.onnxruntime`");
    // A synthetic deployment given a model backend gets paths: refused.
    let onnx: DeploymentPatch = request(
        "replicas = { source = \"local\" }\nengine = { backend = \"onnx\", model = \"/tmp/x.onnx\" }",
    );
    let p = refused(&mut doc, |d| d.update_deployment("m", "s", onnx).map(drop));
    assert_eq!(p.fields, "`engine.model`, `engine.tokenizer`");
}

#[test]
fn a_promoted_development_copy_keeps_its_paths() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "dev"
kind = "development"
replicas = { source = "local" }
engine = { backend = "onnx", model = "models/m.onnx" }
"#;
    let mut doc = ConfigDocument::parse(text, "t.toml").unwrap();
    let id = doc.promote_development("m").unwrap();
    let copy = doc.config().models[0].deployment(&id).unwrap();
    assert_eq!(
        copy.engine,
        doc.config().models[0].deployment("dev").unwrap().engine
    );
}

#[test]
fn api_may_set_paths_lets_the_api_set_and_change_them() {
    let mut doc = doc("api_may_set_paths = true");
    doc.add_deployment("m", request(WITH_PATHS)).unwrap();
    let other: DeploymentPatch = request(
        "engine = { backend = \"onnx\", model = \"/tmp/y.onnx\", onnxruntime = \"/tmp/y.so\" }",
    );
    doc.update_deployment("m", "q", other).unwrap();
    let q = doc.config().models[0].deployment("q").unwrap();
    match &q.engine.as_ref().unwrap().backend {
        EngineBackend::Onnx(m) => assert_eq!(m.model, std::path::Path::new("/tmp/y.onnx")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn locked_replica_addresses_are_left_to_hand_edits() {
    let mut doc = doc("api_may_set_replica_addresses = false");
    let new: NewDeployment =
        request("id = \"t\"\nreplicas = { source = \"static\", addresses = [\"10.0.0.1:80\"] }");
    let p = refused(&mut doc, |d| d.add_deployment("m", new).map(drop));
    assert_eq!(
        (p.fields.as_str(), p.setting),
        ("`replicas.addresses`", "api_may_set_replica_addresses")
    );
    let moved: DeploymentPatch =
        request("replicas = { source = \"static\", addresses = [\"10.0.0.1:80\"] }");
    refused(&mut doc, |d| d.update_deployment("m", "s", moved).map(drop));
    // The same addresses (in any order) and other settings pass; a static
    // deployment without addresses is fine.
    let same: DeploymentPatch =
        request("replicas = { source = \"static\", addresses = [\"127.0.0.1:9001\"] }");
    doc.update_deployment("m", "s", same).unwrap();
    let empty: NewDeployment = request("id = \"e\"\nreplicas = { source = \"static\" }");
    doc.add_deployment("m", empty).unwrap();
}

#[test]
fn by_default_the_api_may_set_replica_addresses() {
    let mut doc = doc("");
    let new: NewDeployment =
        request("id = \"t\"\nreplicas = { source = \"static\", addresses = [\"10.0.0.1:80\"] }");
    doc.add_deployment("m", new).unwrap();
}
