//! Hostile and unlucky clients against the real gateway: the connection cap
//! and file-descriptor pressure, slow readers, the request and first-byte
//! deadlines, header hygiene in both directions, truncated replica
//! responses, per-deployment body limits and SIGTERM with parked requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use testkit::raw::Client;
use testkit::replica::{Behaviour, Replica};
use testkit::wire::*;

/// The recording replica behind a gateway whose deployment config is
/// `replica.config()` edited by `edit`, with `server` in `[server]`.
fn setup(server: &str, behaviour: Behaviour, edit: impl Fn(String) -> String) -> Setup {
    Setup::start_edited(server, behaviour, edit)
}

fn metrics(setup: &Setup) -> String {
    let url = format!("http://{}/metrics", setup.gw.admin);
    setup
        .rt
        .block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

// ---------------------------------------------------------------------------
// The connection cap and descriptor pressure
// ---------------------------------------------------------------------------

#[test]
fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let setup = setup("max_connections = 3", Behaviour::Echo, |c| c);
    // One connection serves a request and stays; two more sit idle.
    let mut served = setup.connect();
    served.send(&predict(b"first"));
    assert_echoed(&served.response("first"), b"first", "first");
    let mut idle: Vec<Client> = (0..2).map(|_| setup.connect()).collect();
    // Each connection past the cap closes the one idle longest: the served
    // one fell idle (its response ended) before the other two came.
    let mut newcomer = setup.connect();
    newcomer.send(&predict(b"new"));
    assert_echoed(&newcomer.response("newcomer"), b"new", "newcomer");
    served.assert_closed("the connection idle longest");
    // The next one closes the older of the two idle ones.
    let mut another = setup.connect();
    another.send(&predict(b"another"));
    assert_echoed(&another.response("another"), b"another", "another");
    idle[0].assert_closed("the next connection idle longest");
    let text = metrics(&setup);
    assert_eq!(
        testkit::metric_sum(&text, "igw_client_connections_limit", &[]),
        3.0
    );
    assert!(testkit::metric_sum(&text, "igw_client_connections_evicted_total", &[]) >= 2.0);
    // The newest idle connection is still open, and works.
    idle[1].send(&predict(b"still"));
    assert_echoed(&idle[1].response("the newest idle one"), b"still", "still");
}

#[test]
fn a_request_in_progress_is_never_cut_to_make_room() {
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let behaviour = Behaviour::StreamAfterSignal {
        first: Bytes::from_static(b"first "),
        rest: Bytes::from_static(b"rest"),
        go: go.clone(),
    };
    let setup = setup("max_connections = 1", behaviour, |c| c);
    let mut busy = TcpStream::connect(setup.addr()).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    busy.write_all(&predict(b"x")).unwrap();
    // The response has begun: the request is in progress.
    let mut head = [0u8; 256];
    let n = busy.read(&mut head).unwrap();
    assert!(n > 0);
    // Every connection is busy: the newcomer is closed at once.
    let mut refused = TcpStream::connect(setup.addr()).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(refused.read(&mut buf), Ok(0) | Err(_)),
        "refused at the cap"
    );
    go.notify_one();
    let mut rest = Vec::new();
    // Chunked: the last chunk ends it; the connection stays open.
    while !rest.ends_with(b"0\r\n\r\n") {
        let mut piece = [0u8; 256];
        match busy.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(k) => rest.extend_from_slice(&piece[..k]),
        }
    }
    let all = [&head[..n], &rest[..]].concat();
    assert!(
        String::from_utf8_lossy(&all).contains("rest"),
        "the request in progress completed: {}",
        String::from_utf8_lossy(&all)
    );
    let text = metrics(&setup);
    assert!(testkit::metric_sum(&text, "igw_client_connections_refused_total", &[]) >= 1.0);
}

/// Under `ulimit -n 256`, 300 idle connections do not stop a new keyed
/// request (the cap, lowered to fit the limit, closes idle ones to make
/// room) and the replica is never blamed for the gateway's shortage.
#[test]
fn descriptor_pressure_does_not_stop_requests_or_blame_replicas() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replica = rt.block_on(Replica::start(Behaviour::Echo));
    let gw = testkit::gateway_through(
        &["prlimit", "--nofile=256:256", "--"],
        "",
        &replica.config(),
    );
    let setup = Setup { gw, replica, rt };
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(setup.addr()).expect("connect"))
        .collect();
    for i in 0..5 {
        let mut client = setup.connect();
        let body = format!("under pressure {i}");
        client.send(&predict(body.as_bytes()));
        assert_echoed(
            &client.response("a keyed POST"),
            body.as_bytes(),
            "under pressure",
        );
    }
    let text = metrics(&setup);
    assert_eq!(
        testkit::metric_sum(&text, "igw_replicas_ready", &[("deployment", "d1")]),
        1.0,
        "the replica stayed in routing"
    );
    let limit = testkit::metric_sum(&text, "igw_client_connections_limit", &[]);
    assert!(limit < 128.0, "the cap fits under 256 descriptors: {limit}");
    assert_eq!(testkit::metric_sum(&text, "process_max_fds", &[]), 256.0);
    assert!(testkit::metric_sum(&text, "process_open_fds", &[]) < 256.0);
    drop(idle);
}

// ---------------------------------------------------------------------------
// Slow readers
// ---------------------------------------------------------------------------

/// A response larger than the kernel's socket buffers, so that a client
/// that reads nothing leaves most of it with the gateway.
const LARGE: usize = 16 * 1024 * 1024;

/// A connection whose receive buffer stays small: loopback autotuning
/// would otherwise let the kernel take a whole large response off the
/// gateway's hands, and no client would look slow.
fn stalled_client(setup: &Setup) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(&setup.addr().into()).unwrap();
    socket.into()
}

/// Waits until the replica has received `n` requests: the stalled one
/// holds the slot before the next client comes.
fn replica_has(setup: &Setup, n: usize) {
    setup.rt.block_on(testkit::admin::eventually(
        "the replica's requests",
        || async { setup.replica.received().await.len() >= n },
    ));
}

fn one_slot(config: String) -> String {
    config.replace("predict_concurrency = 256", "predict_concurrency = 1")
}

#[test]
fn a_client_that_never_reads_does_not_hold_the_replica() {
    let body = Bytes::from(vec![b'r'; LARGE]);
    let setup = setup(
        "response_buffer_bytes = 33554432",
        Behaviour::Fixed(body),
        one_slot,
    );
    let mut stalled = stalled_client(&setup);
    stalled.write_all(&predict(b"never read")).unwrap();
    replica_has(&setup, 1);
    // The replica's one slot frees once the gateway holds the response, so
    // a second client is answered while the first still reads nothing.
    let mut second = setup.connect();
    second.send(&predict(b"second"));
    let resp = second.response("the second client");
    assert_status(&resp, 200, "the second client");
    assert_eq!(resp.body.len(), LARGE);
    // The first client still gets its whole response when it reads.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = Client::from_stream(stalled);
    let resp = first.response("the stalled client, reading at last");
    assert_eq!(resp.body.len(), LARGE);
}

#[test]
fn a_client_that_never_reads_beyond_the_buffer_is_cut_by_the_send_timeout() {
    let body = Bytes::from(vec![b'r'; LARGE]);
    let setup = setup(
        "response_buffer_bytes = 0\nclient_send_timeout_secs = 1",
        Behaviour::Fixed(body),
        one_slot,
    );
    let mut stalled = stalled_client(&setup);
    stalled.write_all(&predict(b"never read")).unwrap();
    replica_has(&setup, 1);
    let mut second = setup.connect();
    second.send(&predict(b"second"));
    let resp = second.response("the second client, after the send timeout");
    assert_status(&resp, 200, "the second client");
    // The stalled client's response was cut: a close before its end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(
        got.len() < LARGE,
        "the stalled response was cut short: {} bytes",
        got.len()
    );
}

// ---------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------

#[test]
fn a_replica_that_never_answers_gets_504_at_the_first_byte_timeout() {
    let setup = setup(
        "upstream_first_byte_timeout_secs = 1",
        Behaviour::Silent,
        |c| c,
    );
    let mut client = setup.connect();
    client.send(&predict(b"x"));
    let resp = client.response("the silent replica");
    assert_json_error(&resp, 504, "first byte timeout");
}

#[test]
fn the_request_timeout_bounds_the_whole_request() {
    let setup = setup("request_timeout_secs = 1", Behaviour::Silent, |c| c);
    let mut client = setup.connect();
    client.send(&predict(b"x"));
    assert_json_error(
        &client.response("the silent replica"),
        504,
        "request timeout",
    );
    // A client that sends its body too slowly is the one at fault: 408.
    let mut slow = setup.connect();
    slow.send(&predict_with("Content-Length: 100\r\n", b"only ten.."));
    let resp = slow.response("a body that stops");
    assert_json_error(&resp, 408, "slow body");
    slow.assert_closed("after a 408");
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

#[test]
fn client_sent_internal_headers_do_not_reach_the_replica() {
    let setup = setup("", Behaviour::Echo, |c| c);
    let mut client = setup.connect();
    let long_id = "a".repeat(200);
    client.send(&predict_with(
        &format!(
            "Content-Length: 2\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\nx-deployment-id: evil\r\nx-request-id: {long_id}\r\n"
        ),
        b"hi",
    ));
    assert_echoed(&client.response("headers"), b"hi", "headers");
    let received = setup.received();
    let seen = &received[0];
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-deployment-id"), None);
    assert_eq!(
        seen.header("x-request-id"),
        None,
        "an invalid id is dropped"
    );
    // A valid id passes.
    client.send(&predict_with(
        "Content-Length: 2\r\nx-request-id: abc-123\r\n",
        b"hi",
    ));
    assert_echoed(&client.response("valid id"), b"hi", "valid id");
    assert_eq!(setup.received()[1].header("x-request-id"), Some("abc-123"));
}

#[test]
fn behind_a_trusted_proxy_the_client_address_is_appended() {
    let setup = setup("forwarded_for = \"append\"", Behaviour::Echo, |c| c);
    let mut client = setup.connect();
    client.send(&predict_with(
        "Content-Length: 2\r\nX-Forwarded-For: 1.2.3.4\r\n",
        b"hi",
    ));
    assert_echoed(&client.response("append"), b"hi", "append");
    assert_eq!(
        setup.received()[0].header("x-forwarded-for"),
        Some("1.2.3.4, 127.0.0.1")
    );
}

#[test]
fn replica_internals_do_not_reach_the_client() {
    let setup = setup("expose_replica_id = false", Behaviour::Leaky, |c| c);
    let mut client = setup.connect();
    client.send(&predict(b"x"));
    let resp = client.response("leaky replica");
    assert_status(&resp, 200, "leaky replica");
    assert_eq!(resp.body, b"ok");
    for hidden in [
        "server",
        "x-replica-id",
        "x-secret",
        "keep-alive",
        "x-gateway-attempts",
    ] {
        assert_eq!(resp.header(hidden), None, "{hidden}: {:?}", resp.headers);
    }
    let deployment: Vec<_> = resp
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-deployment-id"))
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(deployment, ["d1"], "the gateway's, once");
}

// ---------------------------------------------------------------------------
// Failures and limits
// ---------------------------------------------------------------------------

#[test]
fn a_truncated_response_is_counted_as_an_error() {
    let setup = setup("", Behaviour::Truncated, |c| c);
    let mut client = setup.connect();
    client.send(&predict(b"x"));
    // The client sees the head, part of the body, and a close.
    assert!(client.try_response(false).is_err(), "the body is cut short");
    let text = metrics(&setup);
    assert_eq!(
        testkit::metric_sum(&text, "igw_requests_total", &[("code", "502")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        testkit::metric_sum(&text, "igw_requests_total", &[("code", "200")]),
        0.0
    );
}

#[test]
fn a_deployment_sets_its_own_body_limit() {
    let setup = setup("", Behaviour::Echo, |c| {
        c.replace(
            "predict_concurrency = 256",
            "predict_concurrency = 256\nmax_request_body_bytes = 10",
        )
    });
    let mut client = setup.connect();
    client.send(&predict(b"ten bytes!"));
    assert_echoed(
        &client.response("at the limit"),
        b"ten bytes!",
        "at the limit",
    );
    let mut over = setup.connect();
    over.send(&predict(b"eleven byte"));
    assert_json_error(&over.response("over the limit"), 413, "declared length");
    // A chunked body is stopped while it streams.
    let mut chunks = setup.connect();
    chunks.send(&predict_with(
        "Transfer-Encoding: chunked\r\n",
        &chunked(&[b"123456", b"789012"]),
    ));
    assert_json_error(&chunks.response("chunked over the limit"), 413, "chunked");
    assert_eq!(
        setup.received().len(),
        1,
        "only the request within the limit"
    );
}

/// A deployment whose one replica never becomes ready: requests park.
fn never_ready() -> String {
    testkit::fixture::static_model("m1", "d1", &[testkit::dead_addr()], 1)
}

#[test]
fn the_request_timeout_bounds_a_parked_request_too() {
    // The queue would wait 60 s; the request may take 1.
    let gw = testkit::gateway_with("request_timeout_secs = 1", &never_ready());
    let mut client = Client::connect(gw.proc.addr);
    client.send(&predict(b"parked"));
    assert_json_error(
        &client.response("a parked request"),
        504,
        "parked past the deadline",
    );
}

#[test]
fn sigterm_answers_parked_requests_with_503() {
    let mut gw = testkit::gateway(&never_ready());
    let mut client = Client::connect(gw.proc.addr);
    client.send(&predict(b"parked"));
    // Parked once the gateway counts it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://{}/metrics", gw.admin);
    rt.block_on(testkit::admin::eventually("the request parked", || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        testkit::metric_sum(&text, "igw_queue_parked", &[]) >= 1.0
    }));
    gw.proc.signal("TERM");
    let resp = client.response("a parked request at SIGTERM");
    assert_json_error(&resp, 503, "parked at SIGTERM");
    assert!(resp.header("retry-after").is_some());
    assert!(gw.proc.wait_exit(Duration::from_secs(20)).is_some());
}
