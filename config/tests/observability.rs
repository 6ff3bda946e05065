//! `[server]` observability settings: request metrics and the access log.

mod common;

use std::path::Path;

use common::errors;
use config::{AccessLogMode, load_str};

const MODEL: &str = "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = { source = \"static\", addresses = [\"127.0.0.1:9\"] }\n";

fn server(lines: &str) -> String {
    format!("[server]\n{lines}\n{MODEL}")
}

#[test]
fn by_default_requests_are_counted_and_nothing_is_logged() {
    let config = load_str(MODEL, "o.toml").unwrap();
    assert!(config.server.request_metrics);
    let log = &config.server.access_log;
    assert_eq!(log.mode, AccessLogMode::Off);
    assert!(!log.enabled());
    assert_eq!(log.path, None);
}

#[test]
fn a_sampled_log_to_a_file_beside_the_config() {
    let text = server(
        "request_metrics = false\n[server.access_log]\nmode = \"sampled\"\nsample_rate = 0.25\npath = \"logs/access.jsonl\"",
    );
    let mut config = load_str(&text, "o.toml").unwrap();
    assert!(!config.server.request_metrics);
    config.resolve_paths(Path::new("/etc/igw"));
    let log = &config.server.access_log;
    assert_eq!(log.mode, AccessLogMode::Sampled);
    assert_eq!(log.sample_per_million, 250_000);
    assert_eq!(
        log.path.as_deref(),
        Some(Path::new("/etc/igw/logs/access.jsonl"))
    );
}

#[test]
fn bad_modes_and_rates_are_located() {
    let text = server("[server.access_log]\nmode = \"verbose\"\nsample_rate = 1.5");
    assert_eq!(
        errors(&text),
        [
            "3: server.access_log.mode: unknown access log mode `verbose`: use off, sampled or all",
            "4: server.access_log.sample_rate: `sample_rate` is 1.5; it must be a fraction above 0 and at most 1",
        ]
    );
    let zero = errors(&server(
        "[server.access_log]\nmode = \"all\"\nsample_rate = 0",
    ));
    assert_eq!(zero.len(), 1, "{zero:#?}");
    let unknown = errors(&server("[server.access_log]\nmod = \"all\""));
    assert_eq!(unknown.len(), 1, "{unknown:#?}");
    assert!(unknown[0].contains("mod"), "{unknown:#?}");
}
