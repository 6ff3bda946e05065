//! Overload against the real gateway: the global in-flight cap
//! (`[server] max_in_flight`) answers 503 with `Retry-After` at once and
//! frees with the requests that hold it; the admin listener answers during
//! a predict flood beyond the cap; and a chaos run at twice a deployment's
//! capacity for 30 s, answered only with 200, 429 or 503 in bounded memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use testkit::fixture::{Deployment, Model};
use testkit::replica::{Behaviour, LIMIT};
use testkit::wire::{Setup, assert_json_error, assert_status, auth, predict};
use testkit::{KEY, engine, gateway_with, metric_sum, scrape};
use tokio::sync::Notify;

const BODY: &[u8] = br#"{"text":"x"}"#;

/// A gateway capped at `cap` requests in flight, before a replica that
/// answers each request with a head and a first chunk, then waits for `go`.
fn capped_before_held_streams(cap: usize, go: &Arc<Notify>) -> Setup {
    Setup::start_with(
        &format!("max_in_flight = {cap}"),
        Behaviour::StreamAfterSignal {
            first: Bytes::from_static(b"first"),
            rest: Bytes::from_static(b"rest"),
            go: Arc::clone(go),
        },
    )
}

/// Fills the cap: `n` predicts whose first chunk has arrived, so each one
/// is in flight at the gateway until `go`.
fn hold(setup: &Setup, n: usize) -> Vec<reqwest::Response> {
    let url = setup.gw.url(testkit::wire::PREDICT);
    setup.rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..n {
            let mut resp = testkit::post(&url, None, Some(KEY), "{}").await;
            assert_eq!(resp.status(), 200, "a request under the cap");
            let first = resp.chunk().await.expect("the first chunk");
            assert_eq!(first.as_deref(), Some(&b"first"[..]));
            held.push(resp);
        }
        held
    })
}

/// Lets the held streams finish, and every stream from now on, and reads
/// the held ones to their end. `go` is notified every 20 ms until the
/// runtime ends: a stream that had not begun its wait would miss a single
/// notification.
fn release(setup: &Setup, held: Vec<reqwest::Response>, go: &Arc<Notify>) {
    let go = Arc::clone(go);
    setup.rt.spawn(async move {
        loop {
            go.notify_waiters();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    setup.rt.block_on(async {
        for resp in held {
            let rest = tokio::time::timeout(LIMIT, resp.bytes())
                .await
                .expect("the held stream ends")
                .expect("the held stream's body");
            assert_eq!(&rest[..], b"rest");
        }
    });
}

/// Waits until the gateway holds `n` requests (by its own gauge).
fn wait_held(setup: &Setup, n: f64) {
    let gw = &setup.gw;
    setup.rt.block_on(testkit::admin::eventually(
        &format!("{n} request(s) in flight"),
        || async move { metric_sum(&scrape(gw).await, "igw_client_requests_admitted", &[]) == n },
    ));
}

#[test]
fn at_the_cap_a_request_gets_503_with_retry_after_and_passes_once_the_cap_frees() {
    let go = Arc::new(Notify::new());
    let setup = capped_before_held_streams(2, &go);
    let held = hold(&setup, 2);

    let mut client = setup.connect();
    client.send(&predict(BODY));
    let refused = client.response("a request over the cap");
    assert_json_error(&refused, 503, "over the cap");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(
        setup.received().len(),
        2,
        "the refused request never reached the replica"
    );
    // Health checks pass the cap: an overloaded gateway is alive.
    client.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_status(&client.response("/healthz at the cap"), 200, "/healthz");

    release(&setup, held, &go);
    wait_held(&setup, 0.0);
    // The same connection: a refusal at the cap keeps it.
    client.send(&predict(BODY));
    let passed = client.response("a request once the cap freed");
    assert_status(&passed, 200, "after the load");
    assert_eq!(passed.body, b"firstrest");

    let text = setup.rt.block_on(scrape(&setup.gw));
    assert_eq!(
        metric_sum(&text, "igw_client_requests_refused_total", &[]),
        1.0
    );
    assert_eq!(metric_sum(&text, "igw_client_requests_limit", &[]), 2.0);
    // Counted as a 503 of no deployment: it came before one was chosen.
    assert_eq!(
        metric_sum(
            &text,
            "igw_requests_total",
            &[("code", "503"), ("model", "")]
        ),
        1.0,
        "{text}"
    );
}

#[test]
fn the_admin_listener_answers_during_a_predict_flood_beyond_the_cap() {
    const FLOODERS: usize = 32;
    let go = Arc::new(Notify::new());
    let setup = capped_before_held_streams(2, &go);
    let held = hold(&setup, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let url = setup.gw.url(testkit::wire::PREDICT);
    let admin = setup.gw.admin;

    let (flood, admin_answers) = setup.rt.block_on(async {
        // Each flooder sends predicts back to back on its own keep-alive
        // connection until the admin checks are done, so they overlap.
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let client = testkit::client();
                    let mut statuses = BTreeMap::<u16, usize>::new();
                    while !stop.load(Ordering::SeqCst) {
                        let status = one_predict(client.clone(), url.clone())
                            .await
                            .unwrap_or_else(|e| panic!("a predict during the flood: {e}"));
                        *statuses.entry(status).or_default() += 1;
                    }
                    statuses
                })
            })
            .collect();
        let client = testkit::client();
        let mut admin_answers = 0;
        for _ in 0..20 {
            for path in ["/healthz", "/metrics"] {
                let resp = client
                    .get(format!("http://{admin}{path}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("admin {path} during the flood: {e}"));
                assert_eq!(resp.status(), 200, "admin {path} during the flood");
                resp.bytes().await.unwrap();
                admin_answers += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut flood = BTreeMap::<u16, usize>::new();
        for flooder in flooders {
            for (status, n) in flooder.await.unwrap() {
                *flood.entry(status).or_default() += n;
            }
        }
        (flood, admin_answers)
    });
    println!("flood statuses: {flood:?}; admin answers during it: {admin_answers}");
    assert_eq!(
        flood.keys().copied().collect::<Vec<_>>(),
        [503],
        "every predict beyond the cap got 503"
    );
    release(&setup, held, &go);
}

/// The gateway's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// What the open-loop client saw: statuses, and errors by kind.
#[derive(Debug, Default)]
struct Seen {
    statuses: BTreeMap<u16, usize>,
    errors: BTreeMap<String, usize>,
}

/// One predict, to the end of its response.
async fn one_predict(client: reqwest::Client, url: String) -> Result<u16, String> {
    let resp = client
        .post(&url)
        .header("authorization", auth())
        .body(BODY)
        .send()
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    let status = resp.status().as_u16();
    resp.bytes()
        .await
        .map_err(|e| format!("body after {status}: {e:?}"))?;
    Ok(status)
}

/// Predicts at `per_second` (spread over `urls` in turn) for `duration`,
/// each on time whether or not earlier ones were answered (open loop).
async fn open_loop(urls: &[String], per_second: u32, duration: Duration) -> Seen {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    let total = (duration.as_secs_f64() * f64::from(per_second)) as usize;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        ticks.tick().await;
        requests.spawn(one_predict(client.clone(), urls[i % urls.len()].clone()));
    }
    let mut seen = Seen::default();
    while let Some(outcome) = requests.join_next().await {
        match outcome.expect("a request task") {
            Ok(status) => *seen.statuses.entry(status).or_default() += 1,
            Err(kind) => *seen.errors.entry(kind).or_default() += 1,
        }
    }
    seen
}

/// Health checks and scrapes on the admin listener every 200 ms until
/// `stop`: how many answered 200, and what else came.
async fn watch_admin(admin: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let client = testkit::client();
    let (mut ok, mut other) = (0, Vec::new());
    while !stop.load(Ordering::SeqCst) {
        for path in ["/healthz", "/metrics"] {
            match client.get(format!("http://{admin}{path}")).send().await {
                Ok(resp) if resp.status() == 200 => ok += 1,
                Ok(resp) => other.push(format!("{path}: {}", resp.status())),
                Err(e) => other.push(format!("{path}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (ok, other)
}

/// Twice the capacity for 30 s. One synthetic engine, 50 ms per
/// prediction, serves two deployments of 2 slots each (80 predictions/s in
/// all); each gets 80 requests/s. `short` parks at most one request, so it
/// answers 429 when that one is taken; `deep` parks up to its default
/// 1000, so its parked requests fill the in-flight cap (12), and what
/// arrives then gets 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_capacity_for_30s_is_answered_200_429_or_503_in_bounded_memory() {
    const RATE: u32 = 160;
    const DURATION: Duration = Duration::from_secs(30);
    const PEAK_RSS_LIMIT_KIB: u64 = 200 * 1024;
    let replica = engine(
        "r",
        &[
            "--fixed-ms",
            "50",
            "--predict-concurrency",
            "4",
            "--queue-size",
            "16",
        ],
    );
    let deployment = |id| Deployment::fixed(id, &[replica.addr]).set("predict_concurrency", "2");
    let config = Model::new("m")
        .deployment(deployment("short").set("queue", "{ max_length = 1 }"))
        .deployment(deployment("deep"))
        .environment("production", "short")
        .toml();
    let gw = gateway_with("max_in_flight = 12", &config);
    let urls = [
        gw.url("/models/m/deployment/short/predict"),
        gw.url("/models/m/deployment/deep/predict"),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let admin = tokio::spawn(watch_admin(gw.admin, Arc::clone(&stop)));
    let seen = open_loop(&urls, RATE, DURATION).await;
    stop.store(true, Ordering::SeqCst);
    let (admin_ok, admin_other) = admin.await.unwrap();
    let peak_kib = peak_rss_kib(gw.proc.pid());
    let text = scrape(&gw).await;

    println!(
        "{} requests at {RATE}/s for {DURATION:?}: statuses {:?}, errors {:?}; gateway peak RSS {:.1} MiB; admin answered 200 {admin_ok} times during the load",
        seen.statuses.values().sum::<usize>() + seen.errors.values().sum::<usize>(),
        seen.statuses,
        seen.errors,
        peak_kib as f64 / 1024.0,
    );
    assert!(seen.errors.is_empty(), "no reset, no connection error");
    assert!(
        seen.statuses
            .keys()
            .all(|status| [200, 429, 503].contains(status)),
        "only 200, 429 or 503: {:?}",
        seen.statuses
    );
    let count = |status| seen.statuses.get(&status).copied().unwrap_or(0);
    assert!(count(200) > 0, "requests were served");
    assert!(count(503) > 0, "the deep queue filled the in-flight cap");
    // Every 503 was the cap's, every 429 a full queue's.
    assert_eq!(
        metric_sum(&text, "igw_client_requests_refused_total", &[]),
        count(503) as f64
    );
    assert_eq!(
        metric_sum(&text, "igw_queue_rejections_total", &[]),
        count(429) as f64
    );
    assert!(admin_ok > 0 && admin_other.is_empty(), "{admin_other:?}");
    assert!(
        peak_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak_kib} KiB over {PEAK_RSS_LIMIT_KIB} KiB"
    );
    // No crash: the gateway still answers.
    let resp = testkit::client()
        .get(format!("http://{}/healthz", gw.admin))
        .send()
        .await
        .expect("the gateway is alive");
    assert_eq!(resp.status(), 200);
}
