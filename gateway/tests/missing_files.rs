//! A local deployment naming a model, tokenizer or ONNX Runtime library
//! that does not exist (a typo) is an error where the config is checked:
//! `gateway check`, every reload of a hand edit, every API edit. Before,
//! it passed and every replica start failed in a crash loop.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use testkit::admin::{api, eventually, file, predict, setup};
use testkit::{client, metric_sum};

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
}

/// `gateway check --config path`: exit code and stdout.
fn check(path: &Path) -> (Option<i32>, String) {
    let out = gateway()
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_reports_a_missing_model_file_with_its_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        r#"[[models]]
id = "m"

[[models.deployments]]
id = "v1"
[models.deployments.engine]
backend = "onnx"
model = "nope/model.onnx"
tokenizer = "tokenizer.json"
onnxruntime = "ort/libonnxruntime.so"

[[models.deployments]]
id = "elsewhere"
replicas = { source = "static", addresses = ["127.0.0.1:9"] }
engine = { backend = "onnx", model = "also/not/here.onnx" }
"#,
    )
    .unwrap();
    let (code, stdout) = check(&config);
    assert_eq!(code, Some(1), "{stdout}");
    let name = config.display();
    let dir_name = dir.path().display();
    assert_eq!(
        stdout,
        format!(
            "{name}:8:1: models[0].deployments[0].engine.model: model file {dir_name}/nope/model.onnx does not exist\n\
             {name}:9:1: models[0].deployments[0].engine.tokenizer: tokenizer file {dir_name}/tokenizer.json does not exist\n\
             {name}:10:1: models[0].deployments[0].engine.onnxruntime: ONNX Runtime library {dir_name}/ort/libonnxruntime.so does not exist\n\
             3 error(s)\n"
        ),
        "only the local deployment is checked"
    );

    // The files in place (relative to the config's directory): OK.
    for file in ["nope/model.onnx", "tokenizer.json", "ort/libonnxruntime.so"] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }
    assert_eq!(check(&config), (Some(0), "OK\n".to_owned()));
}

/// Rewrites the config the way editors do: a new file renamed over the old.
fn replace_config(gw: &testkit::Gateway, text: &str) {
    let path = gw.config.path();
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// GET /v1/config.
async fn config_status(gw: &testkit::Gateway) -> serde_json::Value {
    let (status, body, _) = api(gw, "GET", "/v1/config", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `igw_config_reloads_total{outcome}` on the admin listener's /metrics.
async fn reloads(gw: &testkit::Gateway, outcome: &str) -> f64 {
    let text = client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_sum(&text, "igw_config_reloads_total", &[("outcome", outcome)])
}

/// `dir` as the config file names it: relative to the config's directory
/// when it is below it (the temp directory holds both), else absolute.
fn relative_to_config(gw: &testkit::Gateway, dir: &Path) -> PathBuf {
    let base = gw.config.path().parent().unwrap();
    dir.strip_prefix(base).unwrap_or(dir).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_api_edits_naming_a_missing_model_are_refused_and_the_old_config_serves() {
    let (gw, _a, _b) = setup();
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("model.onnx");
    let named = relative_to_config(&gw, models.path()).join("model.onnx");
    let expected = |index: usize| {
        format!(
            "models[0].deployments[{index}].engine.model: model file {} does not exist",
            model.display()
        )
    };

    // The API may set paths (a hand edit says so)...
    let original = file(&gw);
    replace_config(
        &gw,
        &format!("{original}\n[admin]\napi_may_set_paths = true\n"),
    );
    eventually("the [admin] edit applied", || async {
        config_status(&gw).await["applied_revisions"] == 2
    })
    .await;

    // ...but not to a file that does not exist: 400, nothing written.
    let before = file(&gw);
    let new = json!({
        "id": "q",
        "replicas": { "source": "local" },
        "engine": { "backend": "onnx", "model": named, "tokenizer": named },
    });
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments", Some(new.clone())).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    let origin = gw.config.path().display().to_string();
    assert!(message.contains(&format!("{origin}:")), "{message}");
    assert!(message.contains(&expected(2)), "{message}");
    assert_eq!(file(&gw), before, "the refused edit wrote nothing");

    // A hand edit with the same typo (and a new environment) is rejected:
    // the previous config keeps serving.
    let typo = format!(
        "{before}\n[[models.deployments]]\nid = \"p\"\n[models.deployments.engine]\nbackend = \"onnx\"\nmodel = \"{}\"\ntokenizer = \"{}\"\n\n[[models.environments]]\nname = \"extra\"\ndeployment = \"b\"\n",
        named.display(),
        named.display(),
    );
    replace_config(&gw, &typo);
    eventually("the reload rejected", || async {
        let body = config_status(&gw).await;
        body["rejected_reloads"] == 1
            && body["file_errors"]
                .as_str()
                .is_some_and(|e| e.contains(&expected(2)))
    })
    .await;
    assert_eq!(reloads(&gw, "rejected").await, 1.0);
    assert_eq!(config_status(&gw).await["applied_revisions"], 2);
    assert_eq!(predict(&gw, "production").await, (200, "a".into()));
    assert_eq!(predict(&gw, "environments/extra").await.0, 404);

    // Meanwhile API edits are refused as for any broken file (409).
    let patch = json!({ "max_replica": 2 });
    let (status, body, _) = api(
        &gw,
        "PATCH",
        "/v1/models/m/deployments/a/autoscaling_settings",
        Some(patch),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&expected(2)),
        "{body}"
    );

    // The file appears; the next save of the config applies it.
    std::fs::write(&model, "").unwrap();
    replace_config(&gw, &format!("{typo}\n# fixed\n"));
    eventually("the fixed edit applied", || async {
        config_status(&gw).await["applied_revisions"] == 3
    })
    .await;
    assert_eq!(predict(&gw, "environments/extra").await, (200, "b".into()));
    assert_eq!(
        config_status(&gw).await["file_errors"],
        serde_json::Value::Null
    );
    // And the API edit that named it is accepted now.
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments", Some(new)).await;
    assert_eq!(status, 201, "{body}");
}
