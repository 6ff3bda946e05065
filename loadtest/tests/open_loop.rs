//! Open loop against a server with a known delay and an injected stall: the
//! stall must show in open-loop percentiles (latency from the scheduled
//! time), where closed loop hides it in a single sample.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::server::{Reply, serve};
use tokio::time::Instant;

/// Answers every request after `delay`; with `stall`, requests arriving
/// from 1 s after the first one until 2 s after it also wait for the stall
/// to end.
fn server(delay: Duration, stall: bool) -> String {
    let first = Arc::new(OnceLock::<Instant>::new());
    serve(move |_| {
        let first = Arc::clone(&first);
        async move {
            let t0 = *first.get_or_init(Instant::now);
            let now = Instant::now();
            let (from, to) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
            if stall && now >= from && now < to {
                tokio::time::sleep_until(to).await;
            }
            tokio::time::sleep(delay).await;
            Reply::ok()
        }
    })
}

fn run(addr: &str, extra: &[&str]) -> serde_json::Value {
    let url = format!("http://{addr}/");
    let mut args = vec![
        "--url",
        &url,
        "--method",
        "GET",
        "--duration",
        "3",
        "--warmup",
        "0",
    ];
    args.extend_from_slice(extra);
    support::run_loadtest(&args)
}

fn ms(result: &serde_json::Value, q: &str) -> f64 {
    result["latency_us"][q].as_u64().unwrap() as f64 / 1000.0
}

#[test]
fn open_loop_keeps_its_rate_and_reports_the_servers_delay() {
    let addr = server(Duration::from_millis(5), false);
    let result = run(&addr, &["--connections", "2", "--rate", "100"]);
    assert_eq!(result["mode"], "open");
    // 3 s at 100/s: every scheduled request is sent and answered, the
    // last ones after the measured window if need be.
    assert_eq!(result["scheduled"], 300, "{result}");
    assert_eq!(result["requests"], 300, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    let p50 = ms(&result, "p50");
    assert!(
        (5.0..50.0).contains(&p50),
        "a 5 ms server: p50 {p50} ms, {result}"
    );
    // Every request's send lag is reported; an idle client sends on time
    // but for the timer's slop (1 ms ticks).
    assert_eq!(result["send_lag_us"].as_object().unwrap().len(), 5);
    assert!(
        result["send_lag_us"]["p50"].as_u64().unwrap() < 20_000,
        "{result}"
    );
}

#[test]
fn a_stall_shows_in_open_loop_percentiles_but_hides_in_closed_loop() {
    let closed = run(
        &server(Duration::from_millis(5), true),
        &["--connections", "1"],
    );
    let open = run(
        &server(Duration::from_millis(5), true),
        &["--connections", "1", "--rate", "100"],
    );
    // Closed loop: the connection waited out the stall in one request; the
    // other few hundred were fast, so the stall is one sample (the max).
    assert!(ms(&closed, "max") >= 900.0, "{closed}");
    assert!(ms(&closed, "p99") < 100.0, "{closed}");
    // Open loop: the ~100 requests due during the stall were late, and
    // their lateness counts.
    assert!(ms(&open, "p99") >= 500.0, "{open}");
    assert!(ms(&open, "p90") >= 200.0, "{open}");
}

#[test]
fn one_slow_answer_does_not_hold_up_the_requests_due_after_it() {
    // Request #10 takes 1 s; the other connections take the requests due
    // meanwhile, so only that one is slow (fixed round-robin connections
    // would have made a quarter of the next second's requests wait).
    let addr = serve(|n| async move {
        if n == 10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Reply::ok()
    });
    let result = run(&addr, &["--connections", "4", "--rate", "100"]);
    assert_eq!(result["requests"], 300, "{result}");
    assert!(ms(&result, "max") >= 1000.0, "{result}");
    assert!(ms(&result, "p99") < 100.0, "{result}");
}
