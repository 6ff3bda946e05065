//! A fleet of three gateways on one real etcd: the shared document (keys,
//! models, deployments, environments) lives under one key; an API edit on
//! any gateway, or a hand edit pushed with `gateway config push`, is
//! applied by all three; writes are compare-and-swap on the key's
//! revision, which the API shows as its ETag.

use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;
use testkit::admin::api;
use testkit::etcd::{Etcd, node, pull, push, shared_text};
use testkit::fixture::static_model;
use testkit::wait::eventually_async_within;
use testkit::{Gateway, KEY, client};

const PREFIX: &str = "/fleet-test";

/// How long a change may take to reach every gateway here. The target is
/// a second (`benches/fleet_propagation.py` measures it); the limit is
/// wider so a loaded CI machine does not fail the test.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(5);

async fn status(gw: &Gateway, path: &str) -> u16 {
    let resp = testkit::post(&gw.url(path), None, Some(KEY), r#"{"text":"x"}"#).await;
    resp.status().as_u16()
}

/// An etcd, one replica, and fleet nodes named `names` on it (serving
/// nothing yet); the document to push, one model served by the replica.
fn fleet(names: &[&str]) -> (Etcd, testkit::Proc, Vec<Gateway>, String) {
    let etcd = Etcd::start();
    let table = etcd.fleet_table(PREFIX);
    let replica = testkit::engine("r1", &[]);
    let gateways = names.iter().map(|name| node(name, &table)).collect();
    let document = shared_text(&static_model("m1", "d1", &[replica.addr], 4));
    (etcd, replica, gateways, document)
}

/// Waits until `path` answers `expected` through every gateway; the time
/// it took.
async fn on_all(gateways: &[Gateway], path: &str, expected: u16, what: &str) -> Duration {
    let start = Instant::now();
    for gw in gateways {
        eventually_async_within(what, PROPAGATION_LIMIT, || async {
            status(gw, path).await == expected
        })
        .await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_edits_and_pushes_reach_every_gateway() {
    // The gateways start before there is a document: they serve nothing
    // until one is pushed.
    let (_etcd, _replica, gateways, document) = fleet(&["a", "b", "c"]);
    // No keys yet either: every predict call is unauthorized.
    assert_eq!(
        status(&gateways[0], "/models/m1/production/predict").await,
        401
    );
    assert!(
        pull(gateways[0].config.path())
            .unwrap_err()
            .contains("no shared document")
    );

    let (pushed, out) = push(gateways[1].config.path(), &document, &[]);
    assert!(pushed, "{out}");
    assert!(
        out.contains(&format!("pushed etcd:{PREFIX}/config as etcd revision")),
        "{out}"
    );
    on_all(
        &gateways,
        "/models/m1/production/predict",
        200,
        "the pushed document serves",
    )
    .await;
    assert_eq!(pull(gateways[2].config.path()).unwrap(), document);

    // The API on any node edits the shared document: its ETag is the etcd
    // revision, and a stale one is refused.
    let (code, config, etag) = api(&gateways[0], "GET", "/v1/config", None).await;
    assert_eq!(code, 200);
    assert_eq!(config["source"], format!("etcd:{PREFIX}/config"));
    assert_eq!(config["stale"], false);
    assert_eq!(
        etag,
        format!("\"{}\"", config["revision"].as_str().unwrap())
    );
    let staging = json!({ "name": "staging", "deployment": "d1" });
    let (code, _, new_etag) = testkit::admin::call(
        &gateways[2],
        "POST",
        "/v1/models/m1/environments",
        Some(staging.clone()),
        Some(testkit::admin::ADMIN),
        Some(&etag),
    )
    .await;
    assert_eq!(code, 201);
    assert_ne!(new_etag, etag);
    let took = on_all(
        &gateways,
        "/models/m1/environments/staging/predict",
        200,
        "the API edit is applied everywhere",
    )
    .await;
    println!("API edit on c applied on all three within {took:?}");
    // The same revision again is stale now, on any node.
    let (code, body, _) = testkit::admin::call(
        &gateways[1],
        "DELETE",
        "/v1/models/m1/environments/staging",
        None,
        Some(testkit::admin::ADMIN),
        Some(&etag),
    )
    .await;
    assert_eq!(code, 412, "{body}");
    let (_, _, etag_b) = api(&gateways[1], "GET", "/v1/config", None).await;
    assert_eq!(etag_b, new_etag, "every node reads the same revision");

    // Edits racing on two nodes both land: the loser of the compare-and-
    // swap redoes its edit on top of the winner's.
    let (first, second) = tokio::join!(
        api(
            &gateways[0],
            "POST",
            "/v1/models/m1/environments",
            Some(json!({ "name": "qa", "deployment": "d1" }))
        ),
        api(
            &gateways[1],
            "POST",
            "/v1/models/m1/environments",
            Some(json!({ "name": "dev", "deployment": "d1" }))
        ),
    );
    assert_eq!((first.0, second.0), (201, 201), "{first:?} {second:?}");
    for env in ["qa", "dev"] {
        on_all(
            &gateways,
            &format!("/models/m1/environments/{env}/predict"),
            200,
            "both racing edits are applied",
        )
        .await;
    }

    // A hand edit, pulled and pushed back: applied everywhere.
    let pulled = pull(gateways[0].config.path()).unwrap();
    assert!(
        pulled.contains("name = \"qa\"") && pulled.contains("name = \"dev\""),
        "{pulled}"
    );
    let edited = pulled.replace("name = \"qa\"", "name = \"canary-qa\"");
    let (pushed, out) = push(gateways[0].config.path(), &edited, &[]);
    assert!(pushed, "{out}");
    on_all(
        &gateways,
        "/models/m1/environments/canary-qa/predict",
        200,
        "the pushed hand edit is applied",
    )
    .await;
    on_all(
        &gateways,
        "/models/m1/environments/qa/predict",
        404,
        "the renamed environment is gone",
    )
    .await;

    // A push naming a stale revision is refused, and so is an invalid
    // document: located in the pushed file, nothing written.
    let (pushed, out) = push(gateways[0].config.path(), &edited, &["--if-revision", "1"]);
    assert!(!pushed && out.contains("pull it again"), "{out}");
    let broken = format!("{edited}\n[server]\nthreads = 4\n[[models]]\nid = \"m1\"\n");
    let (pushed, out) = push(gateways[0].config.path(), &broken, &[]);
    assert!(!pushed, "{out}");
    assert!(
        out.contains("server: `[server]` belongs in each node's own file"),
        "{out}"
    );
    assert!(out.contains("duplicate model id `m1`"), "{out}");
    assert_eq!(pull(gateways[0].config.path()).unwrap(), edited);
    for gw in &gateways {
        assert_eq!(
            status(gw, "/models/m1/environments/canary-qa/predict").await,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_serves_its_last_config_and_catches_up() {
    let (etcd, _replica, gateways, document) = fleet(&["a", "b"]);
    let (pushed, out) = push(gateways[0].config.path(), &document, &[]);
    assert!(pushed, "{out}");
    on_all(
        &gateways,
        "/models/m1/production/predict",
        200,
        "the document serves",
    )
    .await;

    let stopped = etcd.stop();
    for gw in &gateways {
        eventually_async_within(
            "the node reports itself stale",
            PROPAGATION_LIMIT * 2,
            || async { readyz(gw).await.contains(r#""config":"stale""#) },
        )
        .await;
        // It keeps serving what it knew.
        assert_eq!(status(gw, "/models/m1/production/predict").await, 200);
    }
    // API reads answer from the document the node serves; writes need etcd.
    let (code, body, _) = api(&gateways[0], "GET", "/v1/models", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["models"][0]["id"], "m1");
    let (code, body, _) = api(&gateways[0], "GET", "/v1/config", None).await;
    assert_eq!((code, &body["stale"]), (200, &json!(true)), "{body}");
    let env = json!({ "name": "qa", "deployment": "d1" });
    let (code, body, _) = api(
        &gateways[0],
        "POST",
        "/v1/models/m1/environments",
        Some(env),
    )
    .await;
    assert_eq!(code, 503, "a write needs etcd: {body}");
    let metrics = testkit::get_text(&gateways[1].admin_url("/metrics")).await;
    assert_eq!(testkit::metric_sum(&metrics, "igw_config_stale", &[]), 1.0);

    // etcd returns with a change made meanwhile by another writer: each
    // node catches up.
    let etcd = stopped.resume();
    let edited =
        format!("{document}\n[[models.environments]]\nname = \"live\"\ndeployment = \"d1\"\n");
    let (pushed, out) = push(gateways[0].config.path(), &edited, &[]);
    assert!(pushed, "{out}");
    for gw in &gateways {
        eventually_async_within("the node catches up", PROPAGATION_LIMIT * 2, || async {
            !readyz(gw).await.contains("stale")
        })
        .await;
    }
    on_all(
        &gateways,
        "/models/m1/environments/live/predict",
        200,
        "the change made after the cut is applied",
    )
    .await;
    drop(etcd);
}

async fn readyz(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/readyz"))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .unwrap()
}

/// One predict call to model `m`'s production environment.
async fn production(gw: &Gateway) -> reqwest::Response {
    testkit::post(
        &gw.url("/models/m/production/predict"),
        None,
        Some(KEY),
        r#"{"text":"x"}"#,
    )
    .await
}

/// Model `m`: production on deployment `a` (replica `a`), 35% into a
/// 1000 s rollout to `b` (replica `b`): stage 4, 40% to `b`. `env` is more
/// of production's table.
fn rollout_document(a: &testkit::Proc, b: &testkit::Proc, env: &str) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 350_000;
    let model = testkit::fixture::Model::new("m")
        .deployment(testkit::fixture::Deployment::fixed("a", &[a.addr]))
        .deployment(testkit::fixture::Deployment::fixed("b", &[b.addr]))
        .environment("production", "a")
        .toml();
    shared_text(&format!(
        "{model}{env}[models.environments.rollout]\ndeployment = \"b\"\nstarted_at_ms = {started}\nduration_secs = 1000\n"
    ))
}

/// A canary rollout in the shared document splits alike on every gateway:
/// the stage is a function of the persisted start, the split exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_splits_the_same_on_every_gateway() {
    let (a, b) = (testkit::engine("a", &[]), testkit::engine("b", &[]));
    let (_etcd, _replica, gateways, _) = fleet(&["a", "b", "c"]);
    let document = rollout_document(&a, &b, "");
    let (pushed, out) = push(gateways[0].config.path(), &document, &[]);
    assert!(pushed, "{out}");
    on_all(
        &gateways,
        "/models/m/production/predict",
        200,
        "the rollout serves",
    )
    .await;
    for gw in &gateways {
        let (_, env, _) = api(gw, "GET", "/v1/models/m/environments/production", None).await;
        assert_eq!(
            (&env["rollout"]["stage"], &env["rollout"]["percent_to_new"]),
            (&json!(4), &json!(40)),
            "{env}"
        );
        let mut to_b = 0;
        for _ in 0..100 {
            let resp = production(gw).await;
            assert_eq!(resp.status(), 200);
            to_b += usize::from(testkit::header(&resp, "x-deployment-id") == "b");
        }
        assert!((39..=41).contains(&to_b), "{to_b} of 100 to b at 40%");
    }
}

/// Only the leader makes a rollout's decisions, from the fleet's traffic:
/// a failing canary seen only through a follower is rolled back by the
/// leader, once, for every gateway; the follower sees it removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rolls_back_a_canary_failing_through_a_follower() {
    let (a, b) = (
        testkit::engine("a", &[]),
        testkit::engine("b", &["--error-percent", "100"]),
    );
    let (_etcd, _replica, gateways, _) = fleet(&["a", "b", "c"]);
    let guard = "promotion = { ramp_up = true, ramp_up_duration = 1000, rollback = { max_error_rate_increase_pct = 5, min_requests = 20 } }\n";
    let document = rollout_document(&a, &b, guard);
    let (pushed, out) = push(gateways[0].config.path(), &document, &[]);
    assert!(pushed, "{out}");
    for gw in &gateways {
        eventually_async_within(
            "every gateway follows the rollout",
            PROPAGATION_LIMIT,
            || async {
                let (_, env, _) =
                    api(gw, "GET", "/v1/models/m/environments/production", None).await;
                env["promotion"]["state"] == "RAMPING"
            },
        )
        .await;
    }
    let leader = testkit::wait::eventually_some_within("a leader", PROPAGATION_LIMIT, || async {
        let (_, config, _) = api(&gateways[0], "GET", "/v1/config", None).await;
        config["leader"].as_str().map(str::to_owned)
    })
    .await;
    let names = ["a", "b", "c"];
    let leading = &gateways[names.iter().position(|n| *n == leader).unwrap()];
    let follower = &gateways[names.iter().position(|n| *n != leader).unwrap()];
    let send = |gw: &Gateway| {
        let url = gw.url("/models/m/production/predict");
        async move {
            let mut failed = 0;
            for _ in 0..100 {
                let resp = testkit::post(&url, None, Some(KEY), r#"{"text":"x"}"#).await;
                failed += usize::from(resp.status() == 500);
            }
            failed
        }
    };
    // The canary fails 100%, through the follower only: the leader
    // routes none of it, and judges the fleet's counts.
    let failed = send(follower).await;
    assert!(failed >= 30, "{failed} of 100 failed through the follower");
    eventually_async_within("the leader rolls back", PROPAGATION_LIMIT, || async {
        !pull(gateways[0].config.path())
            .unwrap()
            .contains("[models.environments.rollout]")
    })
    .await;
    // The leader decided; the follower saw the rollout go.
    eventually_async_within("the follower sees it go", PROPAGATION_LIMIT, || async {
        let (_, env, _) = api(
            follower,
            "GET",
            "/v1/models/m/environments/production",
            None,
        )
        .await;
        env["promotion"]["state"] == "CANCELLED"
    })
    .await;
    let (_, env, _) = api(leading, "GET", "/v1/models/m/environments/production", None).await;
    assert_eq!(env["promotion"]["state"], "ROLLED_BACK", "{env}");
    for gw in &gateways {
        eventually_async_within("all traffic back on a", PROPAGATION_LIMIT, || async {
            let resp = production(gw).await;
            testkit::header(&resp, "x-deployment-id") == "a" && {
                let (_, env, _) =
                    api(gw, "GET", "/v1/models/m/environments/production", None).await;
                env["rollout"].is_null()
            }
        })
        .await;
    }
}
