//! The named scenarios against in-test servers: burst phases, canary
//! header counts, scale-from-zero time to first byte, reload rewrites.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use support::server::{Reply, serve};
use support::{refused, run, run_status};

#[test]
fn burst_reports_each_phase_with_its_own_requests_and_latency() {
    // 0.5 s warm-up + 1 s at 50/s = the first 75 requests, answered at
    // once; the 200 of the second at 200/s take 50 ms each.
    let addr = serve(|n| async move {
        if n >= 75 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Reply::ok()
    });
    let result = run(&format!(
        "--url http://{addr}/ --method GET --scenario burst --rate 50 --burst-rate 200 \
         --duration 2 --burst-at 1 --warmup 0.5 --connections 32"
    ));
    assert_eq!(result["scenario"], "burst");
    assert_eq!(result["scheduled"], 250, "{result}");
    assert_eq!(result["requests"], 250, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    let phases = result["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{result}");
    let (low, high) = (&phases[0], &phases[1]);
    assert_eq!((&low["name"], &low["rate"]), (&"low".into(), &50.0.into()));
    assert_eq!(
        (&high["name"], &high["rate"]),
        (&"high".into(), &200.0.into())
    );
    // Every request lands in the phase it was due in.
    assert_eq!(
        (&low["scheduled"], &low["requests"]),
        (&50.into(), &50.into()),
        "{low}"
    );
    assert_eq!(
        (&high["scheduled"], &high["requests"]),
        (&200.into(), &200.into()),
        "{high}"
    );
    assert_eq!(low["statuses"]["200"], 50);
    assert_eq!(high["statuses"]["200"], 200);
    // Each phase's latency is its own: the server's 50 ms is a floor for
    // the second phase only.
    let p50 = |p: &serde_json::Value| p["latency_us"]["p50"].as_u64().unwrap();
    assert!(p50(high) >= 50_000, "{high}");
    assert!(p50(low) < 25_000, "{low}");
}

#[test]
fn canary_counts_responses_per_header_value() {
    // Every fourth request goes to "v2".
    let addr = serve(|n| async move {
        Reply::ok().with_header("x-deployment-id", if n % 4 == 3 { "v2" } else { "v1" })
    });
    let result = run(&format!(
        "--url http://{addr}/ --method GET --scenario canary --rate 100 --duration 2 \
         --warmup 0 --connections 4"
    ));
    assert_eq!(result["scenario"], "canary");
    assert_eq!(result["count_header"], "x-deployment-id");
    // No warm-up, so the 200 measured requests are the server's first 200.
    assert_eq!(result["requests"], 200, "{result}");
    assert_eq!(result["counts"], serde_json::json!({"v1": 150, "v2": 50}));
    assert_eq!(
        result["fractions"],
        serde_json::json!({"v1": 0.75, "v2": 0.25})
    );
}

#[test]
fn canary_counts_a_missing_header_and_any_header_name() {
    let addr = serve(|n| async move {
        if n % 2 == 0 {
            Reply::ok().with_header("x-side", "canary")
        } else {
            Reply::ok()
        }
    });
    let result = run(&format!(
        "--url http://{addr}/ --method GET --scenario canary --count-header x-side \
         --rate 50 --duration 1 --warmup 0 --connections 2"
    ));
    assert_eq!(
        result["counts"],
        serde_json::json!({"(missing)": 25, "canary": 25})
    );
}

#[test]
fn scale_from_zero_reports_each_requests_time_to_first_byte() {
    // A deployment waking from zero, in miniature: nothing is answered
    // until 500 ms after the first request arrives, then one request at a
    // time, 20 ms each (a replica with one slot draining the queue).
    let slot = Arc::new(tokio::sync::Mutex::new(None::<tokio::time::Instant>));
    let addr = serve(move |_| {
        let slot = Arc::clone(&slot);
        async move {
            let mut ready = slot.lock().await;
            let at = *ready
                .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_millis(500));
            tokio::time::sleep_until(at).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Reply::ok()
        }
    });
    let result = run(&format!(
        "--url http://{addr}/ --method GET --scenario scale-from-zero --requests 20"
    ));
    assert_eq!(result["scenario"], "scale-from-zero");
    assert_eq!(
        (&result["fired"], &result["requests"]),
        (&20.into(), &20.into()),
        "{result}"
    );
    assert_eq!(result["statuses"]["200"], 20);
    let ttfb: Vec<u64> = result["ttfb_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ttfb.len(), 20, "{result}");
    assert!(ttfb.windows(2).all(|w| w[0] <= w[1]), "sorted: {ttfb:?}");
    // Nobody before the wake-up; then spread by the one-at-a-time release
    // (ideally 520 ms to 900 ms).
    assert!(ttfb[0] >= 500_000, "{ttfb:?}");
    assert!(ttfb[19] - ttfb[0] >= 300_000, "{ttfb:?}");
    let summary = &result["ttfb_summary_us"];
    assert_eq!(summary["max"], ttfb[19]);
    assert_eq!(summary["p50"], ttfb[9]);
    assert_eq!(summary["p90"], ttfb[17]);
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn reload_rewrites_the_config_while_the_load_runs() {
    const ORIGINAL: &str = "[server]\nthreads = 1\n";
    let config = config_file(ORIGINAL);
    // The server reads the file on every request and keeps the distinct
    // contents it saw: proof that the rewrites happened during the load.
    let seen = Arc::new(tokio::sync::Mutex::new(BTreeSet::new()));
    let (path, seen_by_server) = (config.path().to_owned(), Arc::clone(&seen));
    let addr = serve(move |_| {
        let (path, seen) = (path.clone(), Arc::clone(&seen_by_server));
        async move {
            if let Ok(text) = std::fs::read_to_string(&path) {
                seen.lock().await.insert(text);
            }
            Reply::ok()
        }
    });
    let cfg = config.path().display();
    let result = run(&format!(
        "--url http://{addr}/ --method GET --scenario reload --reload-edit comment --config {cfg} \
         --reload-every 0.2 --rate 100 --duration 1.5 --warmup 0.2 --connections 2"
    ));
    assert_eq!(result["scenario"], "reload");
    assert_eq!(result["failed"], 0, "{result}");
    // At 0.2, 0.4, ... 1.4 s into the measured 1.5 s: counted by the
    // timetable, not the clock.
    assert_eq!(result["rewrites"], 7, "{result}");
    let text = std::fs::read_to_string(config.path()).unwrap();
    assert_eq!(text, format!("{ORIGINAL}# loadtest reload 7\n"));
    let seen = seen.blocking_lock();
    assert!(
        seen.len() >= 3,
        "the server saw {} versions: {seen:?}",
        seen.len()
    );
    assert!(seen.iter().all(|t| t.starts_with(ORIGINAL)), "{seen:?}");
}

#[test]
fn reload_exits_nonzero_when_a_request_fails() {
    let config = config_file("x = 1\n");
    let addr = serve(|n| async move {
        if n == 30 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let cfg = config.path().display();
    let (status, result) = run_status(&format!(
        "--url http://{addr}/ --method GET --scenario reload --config {cfg} \
         --reload-every 0.3 --rate 50 --duration 1 --warmup 0 --connections 2"
    ));
    assert!(!status.success(), "{result}");
    assert_eq!(result["failed"], 1, "{result}");
    assert_eq!(result["statuses"]["500"], 1, "{result}");
    assert_eq!(result["requests"], 50, "{result}");
}

#[test]
fn reload_exits_nonzero_when_a_request_gets_no_answer() {
    let config = config_file("x = 1\n");
    // Nothing listens: every request is a transport error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config.path().display();
    let (status, result) = run_status(&format!(
        "--url http://127.0.0.1:{port}/ --scenario reload --config {cfg} --rate 20 \
         --duration 0.5 --warmup 0 --connections 1"
    ));
    assert!(!status.success(), "{result}");
    assert_eq!(result["requests"], 0, "{result}");
    assert_eq!(result["errors"]["connect"], 10, "{result}");
    assert_eq!(result["failed"], 10, "{result}");
}

#[test]
fn flags_of_another_scenario_are_refused_not_ignored() {
    let url = "--url http://127.0.0.1:9/";
    assert!(refused(&format!("{url} --burst-rate 10")).contains("--scenario burst"));
    assert!(refused(&format!("{url} --scenario burst --burst-rate 10")).contains("--rate"));
    assert!(refused(&format!("{url} --config /etc/hostname")).contains("--scenario reload"));
    assert!(refused(&format!("{url} --scenario reload")).contains("--config"));
    assert!(
        refused(&format!(
            "{url} --scenario burst --rate 1 --burst-rate 2 --duration 1 --burst-at 1"
        ))
        .contains("--burst-at")
    );
}
