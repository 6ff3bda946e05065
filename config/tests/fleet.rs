//! `[fleet]`: a node's file and the fleet's shared document, each refused
//! where it holds the other's sections.

use config::{Fleet, load_shared_str, load_str};

const NODE: &str = r#"
[listeners]
predict = "127.0.0.1:8080"

[node]
name = "node-a"
cpus = 2

[fleet]
endpoints = ["http://127.0.0.1:2379"]
"#;

const SHARED: &str = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }
"#;

#[test]
fn a_node_file_names_its_fleet_and_joins_the_shared_document() {
    let node = load_str(NODE, "node.toml").unwrap();
    let fleet = node.fleet.clone().expect("[fleet]");
    assert_eq!(fleet.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(fleet.prefix, Fleet::DEFAULT_PREFIX);
    assert_eq!(fleet.config_key(), "/inference-gateway/config");
    assert_eq!(node.node.name.as_deref(), Some("node-a"));

    let shared = load_shared_str(SHARED, "etcd:/inference-gateway/config").unwrap();
    let joined = config::Config::joined(&node, shared);
    assert_eq!(joined.models[0].id, "m");
    assert_eq!(joined.listeners.predict.to_string(), "127.0.0.1:8080");
    assert_eq!(joined.node.cpu_millis, Some(2000));
    assert_eq!(joined.fleet, Some(fleet));
}

#[test]
fn a_node_file_may_not_hold_the_shared_sections() {
    let text = format!("{NODE}\n[admin]\napi_may_set_paths = true\n{SHARED}");
    let errors = load_str(&text, "node.toml").unwrap_err().to_string();
    assert!(
        errors.contains("node.toml:15:3: models: `models` belongs in the fleet's shared document, not in a node's file"),
        "{errors}"
    );
    assert!(
        errors.contains("node.toml:12:2: admin: `admin` belongs"),
        "{errors}"
    );
    // Without [fleet] the same sections are the whole config, as ever.
    assert!(
        load_str(
            &text.replace("[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]", ""),
            "n.toml"
        )
        .is_ok()
    );
}

#[test]
fn the_shared_document_may_not_hold_a_nodes_sections() {
    let text = format!("[server]\nthreads = 2\n{SHARED}[fleet]\nendpoints = [\"http://e:2379\"]\n");
    let errors = load_shared_str(&text, "shared.toml")
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("shared.toml:1:2: server: `[server]` belongs in each node's own file, not in the fleet's shared document"),
        "{errors}"
    );
    assert!(
        errors.contains("fleet: `[fleet]` belongs in each node's own file"),
        "{errors}"
    );
    assert!(!errors.contains("models"), "{errors}");
}

#[test]
fn bad_endpoints_prefixes_and_node_names_are_located() {
    let text = r#"
[node]
name = "node a"
[fleet]
endpoints = ["127.0.0.1:2379"]
prefix = "gw/"
"#;
    let errors = load_str(text, "n.toml").unwrap_err().to_string();
    for expected in [
        "n.toml:3:1: node.name: `name` is `node a`",
        "n.toml:5:14: fleet.endpoints[0]: `127.0.0.1:2379` is not an etcd client URL",
        "n.toml:6:1: fleet.prefix: `prefix` is `gw/`: it must start with `/`",
    ] {
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
    let empty = load_str("[fleet]\nendpoints = []\n", "n.toml")
        .unwrap_err()
        .to_string();
    assert!(
        empty.contains("fleet.endpoints: `endpoints` lists no etcd endpoint"),
        "{empty}"
    );
}

#[test]
fn the_fleet_examples_are_valid_and_join() {
    let node = load_str(
        include_str!("../../examples/fleet-node.toml"),
        "examples/fleet-node.toml",
    )
    .expect("the node example is valid");
    assert_eq!(node.node.name.as_deref(), Some("gw-1"));
    let shared = load_shared_str(
        include_str!("../../examples/fleet-shared.toml"),
        "examples/fleet-shared.toml",
    )
    .expect("the shared example is valid");
    assert_eq!(shared.api_keys.len(), 2);
    let joined = config::Config::joined(&node, shared);
    assert_eq!(joined.models[0].id, "demo1");
    assert!(joined.fleet.is_some());
}
