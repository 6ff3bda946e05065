//! Open loop against a server with a known delay and an injected stall: the
//! stall must show in open-loop percentiles (latency from the scheduled
//! time), where closed loop hides it in a single sample.

#![allow(clippy::disallowed_methods)] // a test server on its own thread, wall-clock stall window

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request after `delay`; requests arriving from 1 s after
/// the first one until 2 s after it wait for the stall to end.
fn server(delay: Duration, stall: bool) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let first = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let first = std::sync::Arc::clone(&first);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: head, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + length {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let t0 = *first.get_or_init(Instant::now);
                        let now = Instant::now();
                        let (from, to) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
                        if stall && now >= from && now < to {
                            tokio::time::sleep(to - now).await;
                        }
                        tokio::time::sleep(delay).await;
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
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
    let requests = result["requests"].as_u64().unwrap();
    // 3 s at 100/s, give or take the requests in flight at the end.
    assert!((280..=300).contains(&requests), "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    let p50 = ms(&result, "p50");
    assert!(
        (5.0..50.0).contains(&p50),
        "a 5 ms server: p50 {p50} ms, {result}"
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
