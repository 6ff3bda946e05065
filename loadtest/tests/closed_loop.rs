//! The load generator against a real engine replica with a known latency.

mod support;

fn engine(fixed_ms: u64) -> testkit::Proc {
    testkit::engine("r1", &["--fixed-ms", &fixed_ms.to_string()])
}

fn run(url: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--url",
        url,
        "--connections",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--body",
        r#"{"text":"hi"}"#,
    ];
    args.extend_from_slice(extra);
    support::run_loadtest(&args)
}

#[test]
fn measures_latency_no_lower_than_the_servers_own_delay_and_counts_statuses() {
    let e = engine(20);
    let result = run(&format!("http://{}/predict", e.addr), &[]);
    let requests = result["requests"].as_u64().unwrap();
    // 4 connections x 1 s / 20 ms each: about 200; well above zero.
    assert!(requests > 20, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(result["statuses"]["200"].as_u64(), Some(requests));
    let p50 = result["latency_us"]["p50"].as_u64().unwrap();
    assert!(
        p50 >= 20_000,
        "a 20 ms server cannot answer faster: {result}"
    );
}

#[test]
fn non_2xx_answers_count_as_failures() {
    let e = engine(0);
    let result = run(&format!("http://{}/nowhere", e.addr), &[]);
    let requests = result["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(result["failed"].as_u64(), Some(requests), "{result}");
    assert_eq!(result["statuses"]["404"].as_u64(), Some(requests));
}

#[test]
fn a_dead_target_is_reported_as_connect_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let result = run(&format!("http://127.0.0.1:{port}/"), &[]);
    assert_eq!(result["requests"], 0);
    assert!(
        result["errors"]["connect"].as_u64().unwrap() > 0,
        "{result}"
    );
}
