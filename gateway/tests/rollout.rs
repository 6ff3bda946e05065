//! Canary rollouts end to end: a real gateway in front of real engine
//! replicas, promoting with ramp-up, persisted rollouts after a restart,
//! cancel, the rollback guard, sticky sessions and pinning.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::admin::{ADMIN, api, eventually};
use testkit::fixture::{Deployment, Model};
use testkit::{Gateway, KEY, Proc, client, engine, gateway_with, header, key_entry};

const BODY: &str = r#"{"text":"x"}"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Model `m`: deployment `a` (production) on `old`, `b` on `new`; `env` is
/// extra TOML for the production environment (after its `deployment`).
fn two_deployments(old: &[&Proc], new: &[&Proc], env: &str) -> String {
    let addrs = |ps: &[&Proc]| ps.iter().map(|p| p.addr).collect::<Vec<_>>();
    let deployment = |id, ps| Deployment::fixed(id, &addrs(ps)).set("predict_concurrency", "64");
    let model = Model::new("m")
        .deployment(deployment("a", old))
        .deployment(deployment("b", new))
        .environment("production", "a");
    // The environments come last: `env` lands in production's table.
    format!(
        "{}{}{env}\n",
        key_entry(ADMIN, "ops", "\"admin\""),
        model.toml()
    )
}

/// One predict call to production: (status, deployment, replica).
async fn call(gw: &Gateway, headers: &[(&str, &str)], key: &str) -> (u16, String, String) {
    let mut req = client()
        .post(gw.url("/models/m/production/predict"))
        .header("authorization", format!("Api-Key {key}"))
        .body(BODY);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        header(&resp, "x-deployment-id").to_owned(),
        header(&resp, "x-replica-id").to_owned(),
    )
}

async fn environment(gw: &Gateway) -> Value {
    let (status, body, _) = api(gw, "GET", "/v1/models/m/environments/production", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn promote(gw: &Gateway) {
    let (status, body, _) = api(
        gw,
        "POST",
        "/v1/models/m/environments/production/promote",
        Some(json!({ "deployment_id": "b" })),
    )
    .await;
    assert!(status == 200 || status == 202, "{status} {body}");
}

/// Promotes `b` and waits until traffic starts moving.
async fn promote_until_ramping(gw: &Gateway) {
    promote(gw).await;
    eventually("ramping", || async {
        environment(gw).await["promotion"]["state"] == "RAMPING"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rollout_moves_traffic_in_stages_and_drops_nothing() {
    let (a, b) = (engine("a", &[]), engine("b", &[]));
    let gw = gateway_with(
        "",
        &two_deployments(
            &[&a],
            &[&b],
            "promotion = { ramp_up = true, ramp_up_duration = 10 }",
        ),
    );
    promote_until_ramping(&gw).await;
    // A steady stream until the rollout completes: every request succeeds,
    // and the share going to `b` grows.
    let mut shares = Vec::new();
    let mut failures = 0;
    loop {
        let mut to_b = 0;
        for _ in 0..50 {
            let (status, deployment, _) = call(&gw, &[], KEY).await;
            failures += usize::from(status != 200);
            to_b += usize::from(deployment == "b");
        }
        shares.push(to_b);
        let env = environment(&gw).await;
        if env["deployment"]["id"] == "b" {
            assert_eq!(env["promotion"]["state"], "COMPLETED", "{env}");
            assert!(env["rollout"].is_null(), "{env}");
            break;
        }
        assert!(
            shares.len() < 400,
            "the rollout never completed: {shares:?}"
        );
    }
    assert_eq!(failures, 0, "{shares:?}");
    assert!(shares.first() < shares.last(), "{shares:?}");
    // After completion, everything goes to `b`.
    for _ in 0..20 {
        assert_eq!(call(&gw, &[], KEY).await.1, "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_rollout_splits_exactly_and_survives_a_restart() {
    let (a, b) = (engine("a", &[]), engine("b", &[]));
    // 35% of a 1000 s rollout has passed: stage 4, 40% to `b`.
    let started = now_ms() - 350_000;
    let text = two_deployments(
        &[&a],
        &[&b],
        &format!(
            "[models.environments.rollout]\ndeployment = \"b\"\nstarted_at_ms = {started}\nduration_secs = 1000"
        ),
    );
    let mut gw = gateway_with("", &text);
    let env = environment(&gw).await;
    assert_eq!(
        (&env["rollout"]["stage"], &env["rollout"]["percent_to_new"]),
        (&json!(4), &json!(40)),
        "{env}"
    );
    let count = |gw: &Gateway| {
        let url = gw.url("/models/m/production/predict");
        async move {
            let mut to_b = 0;
            for _ in 0..100 {
                let resp = testkit::post(&url, None, Some(KEY), BODY).await;
                assert_eq!(resp.status(), 200);
                to_b += usize::from(header(&resp, "x-deployment-id") == "b");
            }
            to_b
        }
    };
    let first = count(&gw).await;
    assert!((39..=41).contains(&first), "{first} of 100 to b at 40%");
    // /metrics: the stage, the share, and each side's requests.
    let text = testkit::scrape(&gw).await;
    let env = [("model", "m"), ("environment", "production")];
    assert_eq!(sample(&text, "igw_canary_stage", &env), 4.0);
    assert_eq!(sample(&text, "igw_canary_percent", &env), 40.0);
    let served = |d: &'static str| {
        let labels = [env[0], env[1], ("deployment", d), ("code", "200")];
        sample(&text, "igw_requests_total", &labels)
    };
    assert_eq!(
        (served("a"), served("b")),
        ((100 - first) as f64, first as f64)
    );

    // Restart on the same file: the stage comes from the persisted start.
    gw.proc.signal("KILL");
    assert!(gw.proc.wait_exit(Duration::from_secs(10)).is_some());
    testkit::restart(&mut gw);
    let env = environment(&gw).await;
    assert_eq!(env["rollout"]["stage"], 4, "{env}");
    assert_eq!(env["promotion"]["state"], "RAMPING", "resumed: {env}");
    let second = count(&gw).await;
    assert!(
        (39..=41).contains(&second),
        "{second} of 100 to b after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_returns_all_traffic_at_once() {
    let (a, b) = (engine("a", &[]), engine("b", &[]));
    let gw = gateway_with(
        "",
        &two_deployments(
            &[&a],
            &[&b],
            "promotion = { ramp_up = true, ramp_up_duration = 600 }",
        ),
    );
    promote_until_ramping(&gw).await;
    let mut seen_b = false;
    for _ in 0..20 {
        seen_b |= call(&gw, &[], KEY).await.1 == "b";
    }
    assert!(seen_b, "10% goes to b");
    let (status, body, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/production/cancel_promotion",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("rollout removed", || async {
        environment(&gw).await["rollout"].is_null()
    })
    .await;
    // The API reads the config file, which is written before the routing
    // snapshot built from it is published: wait for the snapshot too.
    let env = [("model", "m"), ("environment", "production")];
    eventually("the split gone from routing", || async {
        sample(&testkit::scrape(&gw).await, "igw_canary_percent", &env) == 0.0
    })
    .await;
    for _ in 0..50 {
        assert_eq!(call(&gw, &[], KEY).await.1, "a");
    }
    let env = environment(&gw).await;
    assert_eq!(
        (
            env["promotion"]["state"].as_str(),
            env["deployment"]["id"].as_str()
        ),
        (Some("CANCELLED"), Some("a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_rolls_back_a_failing_canary_but_not_a_healthy_one() {
    let guard = "promotion = { ramp_up = true, ramp_up_duration = 600, rollback = { max_error_rate_increase_pct = 5, min_requests = 20 } }";
    for (failing, extra) in [(true, &["--error-percent", "100"][..]), (false, &[][..])] {
        let (a, b) = (engine("a", &[]), engine("b", extra));
        let gw = gateway_with("", &two_deployments(&[&a], &[&b], guard));
        promote_until_ramping(&gw).await;
        // 300 requests: 30 reach `b` at 10%, more than min_requests.
        let mut failures = 0;
        for _ in 0..300 {
            let (status, _, _) = call(&gw, &[], KEY).await;
            failures += usize::from(status == 500);
        }
        if failing {
            assert!(failures >= 20, "{failures}");
            eventually("rolled back", || async {
                environment(&gw).await["promotion"]["state"] == "ROLLED_BACK"
            })
            .await;
            let env = environment(&gw).await;
            let reason = env["promotion"]["reason"].as_str().unwrap();
            assert!(reason.contains("error rate"), "{reason}");
            let rollbacks = [("environment", "production"), ("reason", "error_rate")];
            assert!(env["rollout"].is_null(), "{env}");
            // The state above is the config file's; routing publishes the
            // snapshot built from it a moment later.
            eventually("the split gone from routing", || async {
                sample(
                    &testkit::scrape(&gw).await,
                    "igw_canary_stage",
                    &rollbacks[..1],
                ) == 0.0
            })
            .await;
            let text = testkit::scrape(&gw).await;
            assert_eq!(sample(&text, "igw_canary_rollbacks_total", &rollbacks), 1.0);
            for _ in 0..30 {
                assert_eq!(call(&gw, &[], KEY).await, (200, "a".into(), "a".into()));
            }
        } else {
            assert_eq!(failures, 0);
            // The guard runs every 200 ms: give it time to (wrongly) act.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(environment(&gw).await["promotion"]["state"], "RAMPING");
        }
    }
}

/// Client faults on the canary (a broken chunk: 400; a body that stops:
/// 408; a client that leaves mid-body: 499) are no one's failure: enough
/// of them to trip the guard, were they counted, leave the rollout ramping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_never_roll_a_canary_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let guard = "promotion = { ramp_up = true, ramp_up_duration = 600, rollback = { max_error_rate_increase_pct = 5, min_requests = 20 } }";
    let (a, b) = (engine("a", &[]), engine("b", &[]));
    let gw = gateway_with(
        "client_body_timeout_secs = 1",
        &two_deployments(&[&a], &[&b], guard),
    );
    promote_until_ramping(&gw).await;
    let head = |framing: &str| {
        format!(
            "POST /models/m/production/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: Api-Key {ADMIN}\r\nx-rollout-side: canary\r\n{framing}\r\n"
        )
    };
    let faults = [
        (
            head("Transfer-Encoding: chunked\r\n") + "zz\r\n",
            false,
            "400",
        ),
        (head("Content-Length: 100\r\n") + "{\"text\"", false, "408"),
        (head("Content-Length: 100\r\n") + "{\"text\"", true, "499"),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (request, leave, expected) in faults {
        for _ in 0..25 {
            let (addr, request) = (gw.proc.addr, request.clone());
            tasks.spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
                conn.write_all(request.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                if !leave {
                    // The gateway answers, then closes.
                    let _ = conn.read_to_end(&mut answer).await;
                }
                let status = String::from_utf8_lossy(&answer)
                    .chars()
                    .skip(9)
                    .take(3)
                    .collect::<String>();
                (status, expected)
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (status, expected) = done.unwrap();
        if expected != "499" {
            assert_eq!(status, expected);
        }
    }
    // Healthy traffic on both sides too.
    for _ in 0..100 {
        assert_eq!(call(&gw, &[], KEY).await.0, 200);
    }
    // The guard runs every 200 ms: give it time to (wrongly) act.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(environment(&gw).await["promotion"]["state"], "RAMPING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_and_admins_can_pin_a_side() {
    let (a, b1, b2) = (engine("a", &[]), engine("b1", &[]), engine("b2", &[]));
    let started = now_ms() - 450_000; // stage 5 of a 1000 s rollout: 50%
    let gw = gateway_with(
        "",
        &two_deployments(
            &[&a],
            &[&b1, &b2],
            &format!(
                "[models.environments.rollout]\ndeployment = \"b\"\nstarted_at_ms = {started}\nduration_secs = 1000"
            ),
        ),
    );
    let mut sides = std::collections::HashSet::new();
    for s in 0..40 {
        let session = format!("session-{s}");
        let first = call(&gw, &[("x-session-id", &session)], KEY).await;
        for _ in 0..5 {
            let again = call(&gw, &[("x-session-id", &session)], KEY).await;
            assert_eq!(again, first, "session {session} moved");
        }
        sides.insert(first.1);
    }
    assert_eq!(sides.len(), 2, "sessions spread over both sides: {sides:?}");

    for _ in 0..10 {
        assert_eq!(
            call(&gw, &[("x-rollout-side", "canary")], ADMIN).await.1,
            "b"
        );
        assert_eq!(
            call(&gw, &[("x-rollout-side", "stable")], ADMIN).await.1,
            "a"
        );
    }
    assert_eq!(call(&gw, &[("x-rollout-side", "canary")], KEY).await.0, 403);
    assert_eq!(
        call(&gw, &[("x-rollout-side", "sideways")], ADMIN).await.0,
        400
    );
    // A deployment URL never splits.
    for _ in 0..20 {
        let resp = testkit::post(
            &gw.url("/models/m/deployment/a/predict"),
            None,
            Some(KEY),
            BODY,
        )
        .await;
        assert_eq!(header(&resp, "x-deployment-id"), "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_only_once_the_new_deployment_is_ready() {
    let a = engine("a", &[]);
    let port = testkit::dead_addr().port();
    let text = two_deployments(
        &[&a],
        &[],
        "promotion = { ramp_up = true, ramp_up_duration = 600 }",
    )
    .replace(
        "addresses = [] }",
        &format!("addresses = [\"127.0.0.1:{port}\"] }}"),
    );
    let gw = gateway_with("", &text);
    promote(&gw).await;
    // Nothing listens for `b` yet: the rollout waits, all traffic stays on `a`.
    for _ in 0..10 {
        let env = environment(&gw).await;
        assert_eq!(env["promotion"]["state"], "WAITING_FOR_REPLICAS", "{env}");
        assert!(env["rollout"].is_null(), "{env}");
        assert_eq!(call(&gw, &[], KEY).await.1, "a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _b = engine("b", &["--listen", &format!("127.0.0.1:{port}")]);
    eventually("ramping once b is ready", || async {
        environment(&gw).await["promotion"]["state"] == "RAMPING"
    })
    .await;
    assert_eq!(environment(&gw).await["rollout"]["percent_to_new"], 10);
}

/// The sample of `name` whose labels include `labels` (0 if none).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    testkit::metric_sum(text, name, labels)
}
