//! Hot reload: editing the config file re-routes traffic; a broken edit is
//! rejected and the previous routes keep serving.

use std::time::Duration;

use testkit::fixture::{Deployment, Model};
use testkit::{KEY, Proc, client, engine, gateway, header, post};

fn models(a: &Proc, b: &Proc, production: &str, staging: bool) -> String {
    let model = Model::new("m")
        .deployment(Deployment::fixed("a", &[a.addr]))
        .deployment(Deployment::fixed("b", &[b.addr]))
        .environment("production", production);
    if staging {
        model.environment("staging", "b").toml()
    } else {
        model.toml()
    }
}

/// (status, x-deployment-id) of one predict call.
async fn call(gw: &testkit::Gateway, target: &str) -> (u16, String) {
    let url = gw.url(&format!("/models/m/{target}/predict"));
    let resp = post(&url, None, Some(KEY), r#"{"text":"x"}"#).await;
    (
        resp.status().as_u16(),
        header(&resp, "x-deployment-id").to_owned(),
    )
}

/// Polls until `target` answers `expected`, for at most 5 s.
async fn eventually(gw: &testkit::Gateway, target: &str, expected: (u16, &str)) {
    let mut last = (0, String::new());
    for _ in 0..100 {
        last = call(gw, target).await;
        if (last.0, last.1.as_str()) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{target}: expected {expected:?}, still {last:?}");
}

/// Rewrites the config the way editors do: a new file renamed over the old.
fn replace_config(gw: &testkit::Gateway, text: &str) {
    let path = gw.config.path();
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn header_of(gw: &testkit::Gateway) -> String {
    let text = std::fs::read_to_string(gw.config.path()).unwrap();
    text[..text.find("\n[[models]]").unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reroute_traffic_and_broken_edits_are_rejected() {
    let (a, b) = (engine("ra", &[]), engine("rb", &[]));
    let gw = gateway(&models(&a, &b, "a", false));
    assert_eq!(call(&gw, "production").await, (200, "a".into()));
    assert_eq!(call(&gw, "environments/staging").await.0, 404);
    let header = header_of(&gw);

    // An in-place write (truncate + write) adds an environment.
    std::fs::write(
        gw.config.path(),
        format!("{header}{}", models(&a, &b, "a", true)),
    )
    .unwrap();
    eventually(&gw, "environments/staging", (200, "b")).await;

    // A broken edit is rejected; both routes keep serving.
    replace_config(
        &gw,
        &format!(
            "{header}{}\n[[models.deployments]\n",
            models(&a, &b, "b", true)
        ),
    );
    testkit::eventually_async("the broken edit is rejected", || async {
        gw.log()
            .contains("config rejected, previous config keeps serving")
    })
    .await;
    assert_eq!(call(&gw, "production").await, (200, "a".into()));
    assert_eq!(call(&gw, "environments/staging").await, (200, "b".into()));

    // A valid rename-over edit then repoints production.
    replace_config(&gw, &format!("{header}{}", models(&a, &b, "b", true)));
    eventually(&gw, "production", (200, "b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_sees_no_failure_across_reloads() {
    let (a, b) = (engine("ra", &[]), engine("rb", &[]));
    let gw = gateway(&models(&a, &b, "a", true));
    let header = header_of(&gw);
    let url = gw.url("/models/m/environments/staging/predict");
    let stream = tokio::spawn(async move {
        let http = client();
        let mut statuses = Vec::new();
        for _ in 0..300 {
            let resp = http
                .post(&url)
                .header("authorization", format!("Api-Key {KEY}"))
                .body(r#"{"text":"x"}"#)
                .send()
                .await
                .unwrap();
            statuses.push(resp.status().as_u16());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        statuses
    });
    for i in 0..10 {
        let production = if i % 2 == 0 { "b" } else { "a" };
        replace_config(
            &gw,
            &format!("{header}{}", models(&a, &b, production, true)),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let statuses = stream.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

/// A key removed by a reload stops working at once, also on a keep-alive
/// connection that used it before (the gateway remembers the key's digest
/// per connection, not its verdict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_is_refused_on_a_connection_that_used_it() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    const SECOND: &str = "igw_second_key";
    let (a, b) = (engine("ra", &[]), engine("rb", &[]));
    let entry = testkit::key_entry(SECOND, "second", "\"all\"");
    let gw = gateway(&format!("{entry}{}", models(&a, &b, "a", false)));
    let header = header_of(&gw);
    assert!(header.contains(&entry), "{header}");

    let mut conn = BufReader::new(tokio::net::TcpStream::connect(gw.proc.addr).await.unwrap());
    // One request on the connection; its status.
    async fn status(conn: &mut BufReader<tokio::net::TcpStream>) -> u16 {
        let body = r#"{"text":"x"}"#;
        let request = format!(
            "POST /models/m/production/predict HTTP/1.1\r\nHost: gw\r\n\
             Authorization: Api-Key {SECOND}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            conn.read_line(&mut header).await.unwrap();
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        status
    }
    assert_eq!(status(&mut conn).await, 200);
    assert_eq!(status(&mut conn).await, 200);

    replace_config(
        &gw,
        &format!(
            "{}{}",
            header.replace(&entry, ""),
            models(&a, &b, "a", false)
        ),
    );
    let mut last = 0;
    for _ in 0..100 {
        last = status(&mut conn).await;
        if last == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, 401, "the removed key still works on its connection");
    // The key that stayed still works.
    assert_eq!(call(&gw, "production").await, (200, "a".into()));
}
