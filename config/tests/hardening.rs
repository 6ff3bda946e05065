//! The `[server]` limits against hostile clients and the per-deployment
//! `sync_routes` and body limit: defaults, accepted values, and the errors
//! bad values get.

use config::{ForwardedFor, SyncRoutes, load_str};
use std::time::Duration;

fn with(server: &str, deployment: &str) -> Result<config::Config, String> {
    let text = format!(
        "[server]\n{server}\n[[models]]\nid = \"m1\"\n[[models.deployments]]\nid = \"d1\"\nreplicas = {{ source = \"static\", addresses = [\"127.0.0.1:9\"] }}\n{deployment}\n[[models.environments]]\nname = \"production\"\ndeployment = \"d1\"\n"
    );
    load_str(&text, "gateway.toml").map_err(|e| e.to_string())
}

#[test]
fn defaults_are_safe() {
    let config = with("", "").unwrap();
    let s = &config.server;
    assert_eq!(s.client_send_timeout, Duration::from_secs(60));
    assert_eq!(s.request_timeout, Duration::from_secs(1200));
    assert_eq!(s.upstream_first_byte_timeout, Duration::from_secs(600));
    assert_eq!(s.response_buffer_bytes, 1024 * 1024);
    assert_eq!(s.max_connections, 10_000);
    assert_eq!(s.max_in_flight, 10_000);
    assert_eq!(s.tcp_keepalive, Some(Duration::from_secs(60)));
    assert_eq!(s.forwarded_for, ForwardedFor::Replace);
    assert!(!s.expose_replica_id);
    let d = config.models[0].deployment("d1").unwrap();
    assert_eq!(d.max_request_body_bytes, None);
    assert_eq!(d.sync_routes, SyncRoutes::default());
}

#[test]
fn settings_are_read() {
    let config = with(
        "client_send_timeout_secs = 5\nrequest_timeout_secs = 30\nmax_connections = 100\nmax_in_flight = 50\ntcp_keepalive_secs = 0\nforwarded_for = \"append\"\nexpose_replica_id = true\nresponse_buffer_bytes = 0",
        "max_request_body_bytes = 1024\nsync_routes = [\"/v1/*\", \"/generate\"]",
    )
    .unwrap();
    let s = &config.server;
    assert_eq!(s.client_send_timeout, Duration::from_secs(5));
    assert_eq!(s.request_timeout, Duration::from_secs(30));
    assert_eq!(s.max_connections, 100);
    assert_eq!(s.max_in_flight, 50);
    assert_eq!(s.tcp_keepalive, None);
    assert_eq!(s.forwarded_for, ForwardedFor::Append);
    assert!(s.expose_replica_id);
    assert_eq!(s.response_buffer_bytes, 0);
    let d = config.models[0].deployment("d1").unwrap();
    assert_eq!(d.max_request_body_bytes, Some(1024));
    assert!(d.sync_routes.allows("/generate") && d.sync_routes.allows("/v1/embeddings"));
}

#[test]
fn bad_values_name_the_field() {
    for (server, field) in [
        ("max_connections = 0", "max_connections"),
        ("max_in_flight = 0", "max_in_flight"),
        ("forwarded_for = \"trust\"", "forwarded_for"),
        ("client_send_timeout_secs = 0", "client_send_timeout_secs"),
        (
            "response_buffer_bytes = 2000000000",
            "response_buffer_bytes",
        ),
    ] {
        let e = with(server, "").unwrap_err();
        assert!(e.contains(field), "{server}: {e}");
    }
    for route in [
        "\"/info\"",
        "\"/*\"",
        "\"v1/*\"",
        "\"/health/*\"",
        "\"/a/*/b\"",
        "\"/METRICS\"",
        "\"/v1/../info\"",
    ] {
        let e = with("", &format!("sync_routes = [{route}]")).unwrap_err();
        assert!(e.contains("sync_routes"), "{route}: {e}");
    }
}

#[test]
fn sync_routes_never_reach_the_replicas_own_routes() {
    let routes = SyncRoutes::new(vec!["/v1/*".into(), "/generate".into()]);
    for allowed in ["/v1", "/v1/embeddings", "/v1/chat/completions", "/generate"] {
        assert!(routes.allows(allowed), "{allowed}");
    }
    for refused in [
        "/info",
        "/metrics",
        "/health/ready",
        "//info",
        "/INFO",
        "/%69nfo",
        "/v1/../info",
        "/v1x",
        "/generate/x",
        "/v1/%2e%2e/metrics",
        "/",
        "",
        "/%ff",
    ] {
        assert!(!routes.allows(refused), "{refused}");
    }
}
