//! Observability end to end: a scripted mix of requests against a real
//! gateway and engine replicas, then `/metrics` (and promtool), the JSON
//! summaries and the access log must say exactly what was sent, and never
//! a key, a body or a label a client made up.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use testkit::admin::{ADMIN, api, eventually};
use testkit::fixture::{Deployment, Model, static_model};
use testkit::metric_sum as sum;
use testkit::{Gateway, KEY, Proc, client, engine, gateway_with, key_entry, post};

/// A body whose text must never show up in metrics or logs.
const BODY: &str = r#"{"text":"do-not-log-this-body"}"#;

/// Model `m`: deployment `d` (production; one slot, 300 ms per call).
/// Model `s`: deployment `slow` (production; one slot, 3 s per call,
/// requests give up after 1 s in the queue).
fn mix_gateway(server: &str) -> (Gateway, Proc, Proc) {
    let d = engine("m/d", &["--fixed-ms", "300"]);
    let slow = engine("s/slow", &["--fixed-ms", "3000"]);
    let slow_model = Model::new("s")
        .deployment(
            Deployment::fixed("slow", &[slow.addr])
                .set("predict_concurrency", "1")
                .set("queue", "{ timeout_secs = 1 }"),
        )
        .environment("production", "slow");
    let body = format!(
        "{}{}{}",
        key_entry(ADMIN, "ops", "\"admin\""),
        static_model("m", "d", &[d.addr], 1),
        slow_model.toml()
    );
    (gateway_with(server, &body), d, slow)
}

async fn scrape(gw: &Gateway) -> String {
    let resp = client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().await.unwrap()
}

/// POSTs [`BODY`] to `path` with `key`; returns the status.
async fn call(gw: &Gateway, path: &str, key: Option<&str>) -> u16 {
    post(&gw.url(path), None, key, BODY).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scripted_mix_is_counted_exactly() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = format!(
        "[server.access_log]\nmode = \"all\"\npath = \"{}\"",
        log.path().display()
    );
    let (gw, _d, _slow) = mix_gateway(&server);
    let m_prod = "/models/m/production/predict";

    // m/d through production: 5 one after another, then 2 at once (one
    // parks until the other's slot frees up); 2 naming the deployment.
    for _ in 0..5 {
        assert_eq!(call(&gw, m_prod, Some(KEY)).await, 200);
    }
    let (a, b) = tokio::join!(call(&gw, m_prod, Some(KEY)), call(&gw, m_prod, Some(KEY)));
    assert_eq!((a, b), (200, 200));
    for _ in 0..2 {
        assert_eq!(
            call(&gw, "/models/m/deployment/d/predict", Some(KEY)).await,
            200
        );
    }
    // Refused before any deployment: 3 unknown models, 2 missing keys, 1 wrong key.
    for id in ["nope1", "nope2", "nope3"] {
        let path = format!("/models/{id}/production/predict");
        assert_eq!(call(&gw, &path, Some(KEY)).await, 404);
    }
    assert_eq!(call(&gw, m_prod, None).await, 401);
    assert_eq!(call(&gw, m_prod, None).await, 401);
    assert_eq!(call(&gw, m_prod, Some("igw_wrong_key")).await, 401);

    // s/slow: one call holds the slot for 3 s; a client that gives up
    // after 0.3 s in the queue (499), and one that waits out the 1 s queue
    // timeout (503).
    let s_prod = "/models/s/production/predict";
    let holder = tokio::spawn({
        let url = gw.url(s_prod);
        async move { post(&url, None, Some(KEY), BODY).await.status().as_u16() }
    });
    testkit::until_in_flight(&gw, "slow", 1).await;
    let impatient = client()
        .post(gw.url(s_prod))
        .header("authorization", format!("Api-Key {KEY}"))
        .body(BODY)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err(), "the impatient client gave up");
    assert_eq!(call(&gw, s_prod, Some(KEY)).await, 503);
    assert_eq!(holder.await.unwrap(), 200);

    eventually("the 499 is counted", || async {
        sum(&scrape(&gw).await, "igw_requests_total", &[("code", "499")]) == 1.0
    })
    .await;
    let text = scrape(&gw).await;
    let m_env = [
        ("model", "m"),
        ("environment", "production"),
        ("deployment", "d"),
    ];
    let m_direct = [("model", "m"), ("environment", ""), ("deployment", "d")];
    let s_env = [
        ("model", "s"),
        ("environment", "production"),
        ("deployment", "slow"),
    ];
    let unrouted = [("model", ""), ("environment", ""), ("deployment", "")];
    let with = |base: &[(&'static str, &'static str)], extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.push(extra);
        v
    };
    let expect = [
        ("igw_requests_total", with(&m_env, ("code", "200")), 7.0),
        ("igw_requests_total", with(&m_env, ("class", "2xx")), 7.0),
        ("igw_requests_total", with(&m_direct, ("code", "200")), 2.0),
        ("igw_requests_total", with(&unrouted, ("code", "404")), 3.0),
        ("igw_requests_total", with(&unrouted, ("code", "401")), 3.0),
        ("igw_requests_total", with(&unrouted, ("class", "4xx")), 6.0),
        ("igw_requests_total", with(&s_env, ("code", "200")), 1.0),
        ("igw_requests_total", with(&s_env, ("code", "499")), 1.0),
        ("igw_requests_total", with(&s_env, ("code", "503")), 1.0),
        ("igw_request_duration_seconds_count", m_env.to_vec(), 7.0),
        ("igw_upstream_duration_seconds_count", m_env.to_vec(), 7.0),
        ("igw_time_to_first_byte_seconds_count", m_env.to_vec(), 7.0),
        ("igw_gateway_overhead_seconds_count", m_env.to_vec(), 7.0),
        ("igw_queue_wait_seconds_count", m_env.to_vec(), 1.0),
        ("igw_queue_wait_seconds_count", s_env.to_vec(), 2.0),
        (
            "igw_request_bytes_total",
            m_env.to_vec(),
            7.0 * BODY.len() as f64,
        ),
        ("igw_upstream_duration_seconds_count", s_env.to_vec(), 1.0),
        (
            "igw_queue_parked_total",
            vec![("model", "m"), ("deployment", "d")],
            1.0,
        ),
        (
            "igw_queue_parked_total",
            vec![("model", "s"), ("deployment", "slow")],
            2.0,
        ),
        (
            "igw_queue_timeouts_total",
            vec![("model", "s"), ("deployment", "slow")],
            1.0,
        ),
        (
            "igw_queue_client_closed_total",
            vec![("model", "s"), ("deployment", "slow")],
            1.0,
        ),
        (
            "igw_queue_parked",
            vec![("model", "s"), ("deployment", "slow")],
            0.0,
        ),
        (
            "igw_replicas_ready",
            vec![("model", "m"), ("deployment", "d")],
            1.0,
        ),
        (
            "igw_replicas_desired",
            vec![("model", "m"), ("deployment", "d")],
            1.0,
        ),
        ("igw_config_revision", vec![], 1.0),
    ];
    for (name, labels, want) in &expect {
        assert_eq!(sum(&text, name, labels), *want, "{name} {labels:?}\n{text}");
    }
    // Upstream time is at least the replica's 300 ms per call.
    assert!(sum(&text, "igw_upstream_duration_seconds_sum", &m_env) >= 7.0 * 0.3);
    assert!(sum(&text, "igw_response_bytes_total", &m_env) > 0.0);
    for family in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(sum(&text, family, &[]) > 0.0, "{family}");
    }

    // The JSON summaries agree with the counters.
    let (status, dep, _) = api(&gw, "GET", "/v1/models/m/deployments/d/metrics", None).await;
    assert_eq!(status, 200, "{dep}");
    let all_d = sum(
        &text,
        "igw_requests_total",
        &[("model", "m"), ("deployment", "d")],
    );
    assert_eq!(dep["requests"].as_f64(), Some(all_d), "{dep}");
    assert_eq!(dep["server_errors"], 0);
    assert_eq!(dep["replicas"]["ready"], 1);
    assert!(dep["latency_ms"]["p50"].as_f64().unwrap() >= 300.0, "{dep}");
    assert!(dep["requests_per_sec"].as_f64().unwrap() > 0.0, "{dep}");
    let (_, env, _) = api(
        &gw,
        "GET",
        "/v1/models/m/environments/production/metrics",
        None,
    )
    .await;
    assert_eq!(
        env["requests"].as_f64(),
        Some(sum(&text, "igw_requests_total", &m_env))
    );
    assert_eq!(env["deployment"], "d");
    let (_, slow, _) = api(&gw, "GET", "/v1/models/s/deployments/slow/metrics", None).await;
    let five = sum(&text, "igw_requests_total", &with(&s_env, ("class", "5xx")));
    assert_eq!(slow["server_errors"].as_f64(), Some(five), "{slow}");
    assert_eq!(slow["client_errors"], 1, "{slow}");
    assert_eq!(slow["requests"], 3, "{slow}");
    let (status, _, _) = api(&gw, "GET", "/v1/models/m/deployments/nope/metrics", None).await;
    assert_eq!(status, 404);

    // Neither the key nor the body appears anywhere.
    for secret in [KEY, "do-not-log-this-body", "igw_wrong_key"] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }

    // promtool accepts the exposition (CI installs it).
    config::test_util::promtool_check(&text);

    // One access log line per request, with the route and the timings.
    let lines = eventually_lines(log.path(), 18).await;
    for secret in [KEY, "do-not-log-this-body", "igw_wrong_key"] {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "{secret} in the access log"
        );
    }
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let served_by_m = entries
        .iter()
        .filter(|e| e["model"] == "m" && e["status"] == 200)
        .count();
    assert_eq!(served_by_m, 9);
    let timed_out = entries.iter().find(|e| e["status"] == 503).unwrap();
    assert_eq!(timed_out["deployment"], "slow");
    assert!(
        timed_out["queue_ms"].as_f64().unwrap() >= 1000.0,
        "{timed_out}"
    );
    assert!(timed_out["upstream_ms"].is_null());
    let served = entries.iter().find(|e| e["model"] == "m").unwrap();
    assert!(
        served["replica"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(served["upstream_ms"].as_f64().unwrap() >= 300.0, "{served}");
    assert_eq!(served["request_id"].as_str().unwrap().len(), 32);
    assert!(served["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entries.iter().filter(|e| e["status"] == 401).count(), 3);
}

/// Waits for `n` lines in the access log and returns them.
async fn eventually_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    eventually(&format!("{n} access log lines"), || async {
        read().len() >= n
    })
    .await;
    let lines = read();
    assert_eq!(lines.len(), n, "{lines:#?}");
    lines
}

#[tokio::test]
async fn unknown_model_ids_never_become_label_values() {
    let (gw, _d, _slow) = mix_gateway("");
    assert_eq!(
        call(&gw, "/models/m/production/predict", Some(KEY)).await,
        200
    );
    assert_eq!(
        call(&gw, "/models/known-404/production/predict", Some(KEY)).await,
        404
    );
    let before = scrape(&gw).await;
    let models = |text: &str| {
        let mut ids: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| Some(l.split_once("model=\"")?.1.split_once('"')?.0.to_owned()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    for i in 0..300 {
        let id = format!("flood{:08x}", fastrand_like(i));
        let path = format!("/models/{id}/production/predict");
        assert_eq!(call(&gw, &path, Some(KEY)).await, 404);
        let host = format!("model-{id}.example.com");
        let resp = post(&gw.url("/production/predict"), Some(&host), Some(KEY), BODY).await;
        assert_eq!(resp.status(), 404);
    }
    let after = scrape(&gw).await;
    assert_eq!(models(&before), models(&after));
    assert!(!after.contains("flood"));
    assert_eq!(
        sum(
            &after,
            "igw_requests_total",
            &[("model", ""), ("code", "404")]
        ),
        601.0
    );
    // Not one series more: the 404s all went to the one unrouted counter.
    let series = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    };
    assert_eq!(series(&after), series(&before), "{after}");
}

/// A scrambled, repeatable id for request `i`.
fn fastrand_like(i: u32) -> u32 {
    i.wrapping_mul(0x9E37_79B9).rotate_left(13)
}

/// A replica stand-in that answers every request with the `x-request-id`
/// it received as its body, so the test sees what the gateway passed on.
fn echo_request_id() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let (mut id, mut length, mut line) = (String::new(), 0usize, String::new());
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let trimmed = line.trim_end();
                        if trimmed.is_empty() {
                            break;
                        }
                        let lower = trimmed.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("x-request-id:") {
                            id = trimmed[trimmed.len() - v.len()..].trim().to_owned();
                        } else if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{id}",
                        id.len()
                    );
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn request_ids_reach_the_replica_and_the_log() {
    let (replica, _thread) = echo_request_id();
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = format!(
        "[server.access_log]\nmode = \"all\"\npath = \"{}\"",
        log.path().display()
    );
    let body = static_model("e", "d", &[replica], 1);
    let gw = gateway_with(&server, &body);
    let url = gw.url("/models/e/production/predict");

    let given = client()
        .post(&url)
        .header("authorization", format!("Api-Key {KEY}"))
        .header("x-request-id", "client-chosen-id-42")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(given.status(), 200);
    assert_eq!(given.text().await.unwrap(), "client-chosen-id-42");

    let made = post(&url, None, Some(KEY), BODY).await;
    let echoed_header = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen_by_replica = made.text().await.unwrap();
    assert_eq!(seen_by_replica.len(), 32, "{seen_by_replica}");
    assert_eq!(seen_by_replica, echoed_header);

    let lines = eventually_lines(log.path(), 2).await;
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["client-chosen-id-42".to_owned(), seen_by_replica]);
}

#[tokio::test]
async fn sampled_access_logs_keep_about_their_share() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = format!(
        "[server.access_log]\nmode = \"sampled\"\nsample_rate = 0.5\npath = \"{}\"",
        log.path().display()
    );
    let (gw, _d, _slow) = mix_gateway(&server);
    // 200 cheap 404s: binomial(200, 0.5) is within 60..140 but for odds
    // below one in ten billion.
    for _ in 0..200 {
        assert_eq!(
            call(&gw, "/models/none/production/predict", Some(KEY)).await,
            404
        );
    }
    let text = scrape(&gw).await;
    eventually("the writer caught up", || async {
        let written = sum(&scrape(&gw).await, "igw_access_log_lines_total", &[]);
        let lines = std::fs::read_to_string(log.path()).unwrap().lines().count();
        written == lines as f64 && written > 0.0
    })
    .await;
    let lines = std::fs::read_to_string(log.path()).unwrap().lines().count();
    assert!((60..=140).contains(&lines), "{lines} of 200 sampled");
    assert_eq!(sum(&text, "igw_access_log_dropped_total", &[]), 0.0);
}
