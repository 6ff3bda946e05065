//! What local provisioning reads: local replica sources, activation queues,
//! the parking budget and the node's capacity.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::errors;
use config::edit::{ConfigDocument, DeploymentPatch, EditError, NewDeployment};
use config::{
    Backpressure, EngineBackend, Node, QueueSettings, ReplicaSource, load_file, load_str,
};

/// One model `m` with one deployment `d` made of `deployment` (its keys
/// after `id`), plus `extra` top-level text.
fn one_deployment(deployment: &str, extra: &str) -> String {
    format!("{extra}\n[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\n{deployment}")
}

/// An edit request, written in TOML.
fn request<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).unwrap()
}

const SYNTHETIC: &str = "[models.deployments.engine]\nbackend = \"synthetic\"\nfixed_ms = 5\n";

#[test]
fn a_deployment_without_replicas_runs_local_replicas_from_its_engine_table() {
    let config = load_str(&one_deployment(SYNTHETIC, ""), "p.toml").unwrap();
    let d = &config.models[0].deployments[0];
    assert_eq!(d.replicas, ReplicaSource::Local);
    assert_eq!(d.engine.as_ref().unwrap().backend.name(), "synthetic");

    let explicit = one_deployment(
        &format!("replicas = {{ source = \"local\" }}\n{SYNTHETIC}"),
        "",
    );
    let config = load_str(&explicit, "p.toml").unwrap();
    assert_eq!(
        config.models[0].deployments[0].replicas,
        ReplicaSource::Local
    );
}

#[test]
fn local_replicas_need_an_engine_table_and_take_no_addresses() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "implicit"
[[models.deployments]]
id = "explicit"
replicas = { source = "local" }
[[models.deployments]]
id = "addressed"
replicas = { source = "local", addresses = ["127.0.0.1:9001"] }
[models.deployments.engine]
backend = "synthetic"
[[models.deployments]]
id = "other"
replicas = { source = "k8s" }
[[models.deployments]]
id = "unsaid"
replicas = { addresses = ["127.0.0.1:9001"] }
"#;
    let errors = errors(text);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let missing_engine = "missing `engine`: a deployment with local replicas needs an `engine` table (how its replicas run), or set `replicas = { source = \"static\", addresses = [...] }`";
    // A missing key is located at the entry it is missing from (its header).
    assert_eq!(
        errors[0],
        format!("4: models[0].deployments[0].engine: {missing_engine}")
    );
    assert_eq!(
        errors[1],
        format!("6: models[0].deployments[1].engine: {missing_engine}")
    );
    assert!(
        errors[2].starts_with("11: models[0].deployments[2].replicas.addresses: `addresses` applies only to source = \"static\""),
        "{errors:#?}"
    );
    assert_eq!(
        errors[3],
        "16: models[0].deployments[3].replicas.source: unknown replica source `k8s`: use \"local\" or \"static\""
    );
    assert_eq!(
        errors[4],
        "19: models[0].deployments[4].replicas.source: missing required key `source` (\"local\" or \"static\")"
    );
}

#[test]
fn static_replicas_need_no_engine_table() {
    let text = one_deployment("replicas = { source = \"static\" }", "");
    let d = &load_str(&text, "p.toml").unwrap().models[0].deployments[0];
    assert_eq!(d.replicas, ReplicaSource::Static { addresses: vec![] });
    assert_eq!(d.engine, None);
}

#[test]
fn the_queue_defaults_to_a_thousand_requests_for_sixty_seconds() {
    let config = load_str(&one_deployment(SYNTHETIC, ""), "p.toml").unwrap();
    let queue = config.models[0].deployments[0].queue;
    assert_eq!(queue, QueueSettings::default());
    assert_eq!(
        queue,
        QueueSettings {
            max_length: 1000,
            timeout: Duration::from_secs(60),
            backpressure: Backpressure::QueueOnFull,
        }
    );
    assert_eq!(config.server.max_parked_bytes, 64 * 1024 * 1024);
    assert_eq!(config.node, Node::default());
}

#[test]
fn queue_settings_inline_or_as_a_section() {
    let inline = one_deployment(
        &format!(
            "queue = {{ max_length = 0, timeout_secs = 3600, backpressure = \"REJECT_ON_FULL\" }}\n{SYNTHETIC}"
        ),
        "",
    );
    let section = one_deployment(
        &format!(
            "{SYNTHETIC}[models.deployments.queue]\nmax_length = 1000000\ntimeout_secs = 1\nbackpressure = \"QUEUE_ON_FULL\"\n"
        ),
        "",
    );
    let q = load_str(&inline, "p.toml").unwrap().models[0].deployments[0].queue;
    assert_eq!(
        q,
        QueueSettings {
            max_length: 0,
            timeout: Duration::from_secs(3600),
            backpressure: Backpressure::RejectOnFull,
        }
    );
    let q = load_str(&section, "p.toml").unwrap().models[0].deployments[0].queue;
    assert_eq!(
        (q.max_length, q.timeout, q.backpressure),
        (1_000_000, Duration::from_secs(1), Backpressure::QueueOnFull)
    );
}

#[test]
fn queue_mistakes_are_located() {
    let text = one_deployment(
        &format!(
            "{SYNTHETIC}[models.deployments.queue]\nmax_length = 1000001\ntimeout_secs = 0\nbackpressure = \"DROP\"\nlength = 3\n"
        ),
        "",
    );
    assert_eq!(
        errors(&text),
        [
            "10: models[0].deployments[0].queue.max_length: `max_length` is 1000001; it must be between 0 and 1000000",
            "11: models[0].deployments[0].queue.timeout_secs: `timeout_secs` is 0; it must be between 1 and 3600",
            "12: models[0].deployments[0].queue.backpressure: unknown backpressure `DROP`: use QUEUE_ON_FULL or REJECT_ON_FULL",
            "13: models[0].deployments[0].queue.length: unknown key `length`",
        ]
    );
    let text = one_deployment(
        &format!("queue = {{ timeout_secs = 3601, max_length = -1 }}\n{SYNTHETIC}"),
        "",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("queue.timeout_secs: `timeout_secs` is 3601"));
    assert!(errors[1].contains("queue.max_length: `max_length` is -1"));
}

#[test]
fn max_parked_bytes_is_at_least_one() {
    let text =
        |bytes: &str| one_deployment(SYNTHETIC, &format!("[server]\nmax_parked_bytes = {bytes}"));
    let config = load_str(&text("1"), "p.toml").unwrap();
    assert_eq!(config.server.max_parked_bytes, 1);
    assert_eq!(
        errors(&text("0")),
        ["2: server.max_parked_bytes: `max_parked_bytes` is 0; it must be at least 1"]
    );
    let negative = errors(&text("-5"));
    assert_eq!(negative.len(), 1, "{negative:#?}");
    assert!(negative[0].starts_with("2: server"), "{negative:#?}");
}

#[test]
fn the_node_section_gives_capacity_and_the_engine_binary() {
    let text = r#"
[node]
cpus = 2
memory = "8Gi"
accelerators = { L4 = 2, A100 = 1 }
engine = "target/release/engine"
"#;
    let node = load_str(text, "p.toml").unwrap().node;
    assert_eq!(
        node,
        Node {
            name: None,
            replica_host: std::net::Ipv4Addr::LOCALHOST.into(),
            cpu_millis: Some(2000),
            memory_mib: Some(8192),
            accelerators: vec![("A100".into(), 1), ("L4".into(), 2)],
            engine_binary: Some(PathBuf::from("target/release/engine")),
        }
    );
    let fractional = load_str("[node]\ncpus = 1.5\nmemory = \"512Mi\"\n", "p.toml")
        .unwrap()
        .node;
    assert_eq!(
        (
            fractional.cpu_millis,
            fractional.memory_mib,
            fractional.engine_binary
        ),
        (Some(1500), Some(512), None)
    );
    assert!(fractional.accelerators.is_empty());
}

#[test]
fn node_mistakes_are_located() {
    let text = r#"[node]
cpus = 0
memory = "lots"
accelerators = { l4 = 1, H100 = 0 }
engine = ""
disk = "1Ti"
"#;
    assert_eq!(
        errors(text),
        [
            "2: node.cpus: `cpus` is 0; it must be more than 0 and at most 1024 cores",
            "3: node.memory: invalid memory `lots`: expected e.g. `512Mi` or `16Gi`",
            "4: node.accelerators.l4: invalid accelerator name `l4`: expected an uppercase letter then letters or digits, e.g. `L4` or `H100`",
            "4: node.accelerators.H100: `H100` is 0; it must be at least 1",
            "5: node.engine: `engine` is empty: give the path of the engine binary, or leave it out to use the one beside the gateway",
            "6: node.disk: unknown key `disk`",
        ]
    );
    let wrong_type = errors("[node]\naccelerators = [\"L4\"]\n");
    assert_eq!(wrong_type.len(), 1, "{wrong_type:#?}");
    assert!(wrong_type[0].starts_with("2: node"), "{wrong_type:#?}");
}

#[test]
fn load_file_resolves_engine_and_binary_paths_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        r#"
[node]
engine = "bin/engine"

[[models]]
id = "m"
[[models.deployments]]
id = "relative"
[models.deployments.engine]
backend = "onnx"
model = "models/e5/model.onnx"
onnxruntime = "/opt/ort/libonnxruntime.so"
[[models.deployments]]
id = "static"
replicas = { source = "static" }
"#,
    )
    .unwrap();
    let config = load_file(&file).unwrap();
    assert_eq!(
        config.node.engine_binary,
        Some(dir.path().join("bin/engine"))
    );
    let Some(EngineBackend::Onnx(m)) = config.models[0].deployments[0]
        .engine
        .as_ref()
        .map(|e| &e.backend)
    else {
        panic!("expected onnx")
    };
    assert_eq!(m.model, dir.path().join("models/e5/model.onnx"));
    assert_eq!(m.tokenizer, dir.path().join("models/e5/tokenizer.json"));
    assert_eq!(
        m.runtime_library.as_deref(),
        Some(Path::new("/opt/ort/libonnxruntime.so"))
    );
    assert_eq!(config.models[0].deployments[1].engine, None);

    // Absolute paths stay as written; load_str leaves every path alone.
    std::fs::write(&file, "[node]\nengine = \"/usr/local/bin/engine\"\n").unwrap();
    assert_eq!(
        load_file(&file).unwrap().node.engine_binary,
        Some(PathBuf::from("/usr/local/bin/engine"))
    );
    let unresolved = load_str("[node]\nengine = \"bin/engine\"\n", "p.toml").unwrap();
    assert_eq!(
        unresolved.node.engine_binary,
        Some(PathBuf::from("bin/engine"))
    );
}

#[test]
fn the_edit_api_adds_local_deployments_with_queues_and_switches_sources() {
    let text = one_deployment(
        "replicas = { source = \"static\", addresses = [\"127.0.0.1:9001\"] }\n",
        "",
    );
    let mut doc = ConfigDocument::parse(&text, "p.toml").unwrap();
    // The API's JSON bodies deserialize the same way; TOML spares a dependency.
    let new: NewDeployment = request(
        r#"id = "l"
replicas = { source = "local" }
engine = { backend = "synthetic", fixed_ms = 5 }
queue = { max_length = 10, backpressure = "REJECT_ON_FULL" }"#,
    );
    doc.add_deployment("m", new).unwrap();
    let text = doc.text();
    assert!(
        text.contains("replicas = { source = \"local\" }\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "[models.deployments.queue]\nbackpressure = \"REJECT_ON_FULL\"\nmax_length = 10\n"
        ),
        "{text}"
    );
    let l = doc.config().models[0].deployment("l").unwrap();
    assert_eq!(l.replicas, ReplicaSource::Local);
    assert_eq!(
        (l.queue.max_length, l.queue.backpressure, l.queue.timeout),
        (10, Backpressure::RejectOnFull, Duration::from_secs(60))
    );

    // Local without an engine table is refused, and the document stays.
    let before = doc.text();
    let engineless: NewDeployment = request(r#"replicas = { source = "local" }"#);
    let err = doc.add_deployment("m", engineless).unwrap_err();
    assert!(err.to_string().contains("missing `engine`"), "{err}");
    // Addresses with local replicas are written, then refused.
    let addressed: NewDeployment = request(
        r#"replicas = { source = "local", addresses = ["127.0.0.1:9002"] }
engine = { backend = "synthetic" }"#,
    );
    let err = doc.add_deployment("m", addressed).unwrap_err();
    assert!(
        matches!(&err, EditError::Invalid(e) if e.errors[0].path.ends_with("replicas.addresses")),
        "{err:?}"
    );
    assert_eq!(doc.text(), before);

    // A static deployment becomes local: its addresses go, an engine comes.
    let patch: DeploymentPatch = request(
        r#"replicas = { source = "local" }
engine = { backend = "synthetic" }
queue = { timeout_secs = 5 }"#,
    );
    doc.update_deployment("m", "d", patch).unwrap();
    let d = doc.config().models[0].deployment("d").unwrap();
    assert_eq!(d.replicas, ReplicaSource::Local);
    assert_eq!(d.queue.timeout, Duration::from_secs(5));
    assert!(!doc.text().contains("127.0.0.1:9001"), "{}", doc.text());

    // A bad queue value is refused with its location.
    let patch = DeploymentPatch {
        queue: Some(toml::toml! { backpressure = "SOMETIMES" }),
        ..Default::default()
    };
    let err = doc.update_deployment("m", "d", patch).unwrap_err();
    assert!(err.to_string().contains("unknown backpressure"), "{err}");
}

#[test]
fn the_example_documents_valid_node_and_parking_keys() {
    let mut text = include_str!("../../examples/gateway.toml").to_owned();
    for key in [
        "max_parked_bytes",
        "[node]",
        "cpus",
        "memory",
        "accelerators",
        "engine =",
    ] {
        let commented = format!("\n# {key}");
        assert_eq!(text.matches(&commented).count(), 1, "{key}");
        text = text.replace(&commented, &format!("\n{key}"));
    }
    let config = load_str(&text, "uncommented").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.server.max_parked_bytes, 64 * 1024 * 1024);
    assert_eq!(
        config.node,
        Node {
            name: None,
            replica_host: std::net::Ipv4Addr::LOCALHOST.into(),
            cpu_millis: Some(2000),
            memory_mib: Some(8192),
            accelerators: vec![("L4".into(), 2)],
            engine_binary: Some(PathBuf::from("target/release/engine")),
        }
    );
}
