//! The predict data path end to end, at the HTTP level: upstream connection
//! reuse, stale pooled connections, `Expect: 100-continue`, HEAD, chunked
//! bodies both ways, large and streamed responses, and h2c from clients.
//!
//! The upstream is the recording replica of `testkit::replica` rather than
//! an `engine`: it speaks just enough HTTP/1.1 by hand to answer the way each
//! test needs (close after every response, stream on a signal, ...) and
//! records what reached it (connections, bodies, request heads), so each test
//! can check what the gateway sent as well as what it answered.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use testkit::replica::{
    Behaviour, Conn, Framing, LIMIT, Replica, find_header, read_body, read_head, write_chunk,
};
use testkit::{Gateway, KEY, header};

// ---------------------------------------------------------------------------
// The raw test client
// ---------------------------------------------------------------------------

/// A response read by a raw client.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn status_of(line: &str) -> u16 {
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
}

/// Reads one final response (its body too, unless it answers a HEAD).
async fn read_response(conn: &mut Conn, to_head: bool) -> Response {
    within("a response head", async {
        let head = read_head(conn)
            .await
            .expect("a well-formed response head")
            .expect("a response before the connection closed");
        let status = status_of(&head.line);
        assert!(
            !head.line.starts_with("HTTP/1.1 1"),
            "unexpected interim response {:?}",
            head.line
        );
        let framing = if to_head || status == 204 || status == 304 {
            Framing::None
        } else {
            Framing::declared(&head.headers).unwrap_or(Framing::UntilClose)
        };
        let body = read_body(conn, framing)
            .await
            .expect("a well-formed response body");
        Response {
            status,
            headers: head.headers,
            body,
        }
    })
    .await
}

/// Awaits `fut` for at most [`LIMIT`], naming what did not arrive.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"))
}

/// A raw keep-alive connection to the gateway's predict listener.
async fn connect(gw: &Gateway) -> Conn {
    let stream = within("connect", TcpStream::connect(gw.proc.addr))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

// ---------------------------------------------------------------------------
// Gateway setup and test data
// ---------------------------------------------------------------------------

const PREDICT: &str = "/models/m1/production/predict";
const SYNC_INFO: &str = "/models/m1/production/sync/v1/info";

fn start_gateway(replica: &Replica) -> Gateway {
    testkit::gateway(&replica.config())
}

fn auth() -> String {
    format!("Api-Key {KEY}")
}

/// `len` bytes that are not periodic in any small period, so a lost,
/// repeated or reordered piece changes them.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

fn summary(method: &str, target: &str, body_len: usize) -> String {
    format!(r#"{{"method":"{method}","target":"{target}","body_len":{body_len}}}"#)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Upstream keep-alive: sequential requests reuse pooled replica connections
/// instead of opening one each (which would cost a handshake per request and
/// exhaust ephemeral ports under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_pooled_replica_connections() {
    let replica = Replica::start(Behaviour::Summary).await;
    let gw = start_gateway(&replica);
    let client = testkit::client();
    const N: usize = 1_000;
    within("1000 sequential requests", async {
        for i in 0..N {
            let body = format!(r#"{{"inputs":["request {i}"]}}"#);
            let resp = client
                .post(gw.url(PREDICT))
                .header("authorization", auth())
                .body(body.clone())
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200, "request {i}");
            assert_eq!(header(&resp, "x-deployment-id"), "d1", "request {i}");
            assert_eq!(
                resp.text().await.unwrap(),
                summary("POST", "/predict", body.len()),
                "request {i}"
            );
        }
    })
    .await;
    let received = replica.received().await;
    assert_eq!(received.len(), N, "every request reached the replica once");
    assert!(
        received
            .iter()
            .all(|r| r.method == "POST" && r.target == "/predict")
    );
    assert!(
        replica.data_connections() <= 4,
        "{} upstream connections for {N} sequential requests ({} accepted, probes included)",
        replica.data_connections(),
        replica.accepted()
    );
    replica.assert_never_saw_authorization().await;
}

/// A replica that closes every connection right after answering, without
/// saying so. The gateway sees the close before it reuses the connection
/// (almost always: the close can still race the next request) and takes a
/// new one; no GET fails and no POST runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_replica_closed_cost_no_get_and_repeat_no_post() {
    let replica = Replica::start(Behaviour::SummaryThenCloseAtOnce).await;
    let gw = start_gateway(&replica);
    let answered = gets_and_posts(&gw, 300).await;
    assert_eq!(
        replica_posts(&replica).await,
        answered,
        "the replica ran exactly the POSTs that were answered, each once"
    );
    assert_eq!(
        replica.bodies(),
        answered.len(),
        "no POST body reached it twice"
    );
    replica.assert_never_saw_authorization().await;
}

/// A replica that sometimes closes a connection just as the gateway sends
/// the next request on it, dropping that request unread. Nothing tells the
/// gateway whether the replica ran it, so the rule is: a GET is sent again
/// on a new connection (no GET fails), a POST never is (it may fail with
/// 502, and then the replica never ran it; no POST runs twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_to_a_closing_connection_is_repeated_only_if_idempotent() {
    let replica = Replica::start(Behaviour::SummaryThenClose).await;
    let gw = start_gateway(&replica);
    let answered = gets_and_posts(&gw, 300).await;
    assert_eq!(
        replica_posts(&replica).await,
        answered,
        "the replica ran exactly the POSTs that were answered, each once"
    );
    // Half the connections close late, so many POSTs meet a closing one;
    // the others go through.
    assert!(!answered.is_empty(), "no POST went through");
}

/// `n` rounds of a GET (which must succeed) and a POST (200 or 502) on one
/// client; the bodies of the POSTs answered 200, in order.
async fn gets_and_posts(gw: &testkit::Gateway, n: usize) -> Vec<String> {
    let client = testkit::client();
    let mut answered = Vec::new();
    within("GETs and POSTs", async {
        for i in 0..n {
            let resp = client
                .get(gw.url(SYNC_INFO))
                .header("authorization", auth())
                .send()
                .await
                .expect("GET");
            assert_eq!(resp.status(), 200, "GET {i}");
            assert_eq!(header(&resp, "x-deployment-id"), "d1");
            assert_eq!(resp.text().await.unwrap(), summary("GET", "/v1/info", 0));

            let body = format!("post {i}");
            let resp = client
                .post(gw.url(PREDICT))
                .header("authorization", auth())
                .body(body.clone())
                .send()
                .await
                .expect("POST");
            match resp.status().as_u16() {
                200 => {
                    assert_eq!(
                        resp.text().await.unwrap(),
                        summary("POST", "/predict", body.len())
                    );
                    answered.push(body);
                }
                502 => {}
                other => panic!("POST {i}: {other}"),
            }
        }
    })
    .await;
    answered
}

/// The bodies of the POSTs the replica received, in order.
async fn replica_posts(replica: &Replica) -> Vec<String> {
    replica
        .received()
        .await
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| String::from_utf8(r.body).unwrap())
        .collect()
}

/// `Expect: 100-continue`: the client holds its 1 MiB body until it is told
/// to go on, and the body then reaches the replica whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_a_continue_and_the_body_arrives_whole() {
    let replica = Replica::start(Behaviour::Summary).await;
    let gw = testkit::gateway_with("max_request_body_bytes = 4194304", &replica.config());
    let body = pattern(1 << 20, 7);
    let mut conn = connect(&gw).await;
    let head = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        auth(),
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    // Nothing of the body is sent until the interim response arrives.
    let interim = within("100 Continue", read_head(&mut conn))
        .await
        .unwrap()
        .expect("an answer to the head");
    assert!(
        interim.line.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {:?}",
        interim.line
    );
    within("sending the body", conn.get_mut().write_all(&body))
        .await
        .unwrap();
    let resp = read_response(&mut conn, false).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("x-deployment-id"), Some("d1"));
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        summary("POST", "/predict", body.len())
    );
    let received = replica.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body.len(), body.len());
    assert!(received[0].body == body, "the body arrived unaltered");
    replica.assert_never_saw_authorization().await;
}

/// HEAD passes through with the replica's status and headers (Content-Length
/// included) and no body, and the connection stays usable: a gateway that
/// sent or awaited a body would desynchronise the next exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_headers_without_a_body_and_the_connection_stays_usable() {
    let body = Bytes::from_static(b"replica info: 29 bytes long!\n");
    let replica = Replica::start(Behaviour::Fixed(body.clone())).await;
    let gw = start_gateway(&replica);
    let mut conn = connect(&gw).await;
    for method in ["HEAD", "GET", "HEAD", "GET"] {
        let head = format!(
            "{method} {SYNC_INFO} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\n\r\n",
            auth()
        );
        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
        let resp = read_response(&mut conn, method == "HEAD").await;
        assert_eq!(resp.status, 200, "{method}");
        assert_eq!(resp.header("x-deployment-id"), Some("d1"), "{method}");
        assert_eq!(resp.header("x-replica"), Some("r1"), "{method}");
        assert_eq!(
            resp.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{method}: the replica's Content-Length"
        );
        if method == "GET" {
            assert_eq!(resp.body, body);
        }
    }
    let seen: Vec<(String, String)> = replica
        .received()
        .await
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    let expected: Vec<(String, String)> = ["HEAD", "GET", "HEAD", "GET"]
        .iter()
        .map(|m| ((*m).to_owned(), "/v1/info".to_owned()))
        .collect();
    assert_eq!(seen, expected, "the replica saw HEAD as HEAD");
    replica.assert_never_saw_authorization().await;
}

/// A chunked request body (several chunks, one larger than Pingora's 64 KiB
/// retry buffer) reaches the replica intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_body_reaches_the_replica_intact() {
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = start_gateway(&replica);
    let chunks: Vec<Vec<u8>> = [1usize, 100, 16_384, 70_000, 5]
        .iter()
        .enumerate()
        .map(|(i, &len)| pattern(len, i as u8))
        .collect();
    let whole: Vec<u8> = chunks.concat();
    let mut conn = connect(&gw).await;
    let head = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        auth()
    );
    within("sending a chunked body", async {
        let out = conn.get_mut();
        out.write_all(head.as_bytes()).await.unwrap();
        for chunk in &chunks {
            write_chunk(out, chunk).await.unwrap();
            out.flush().await.unwrap();
        }
        out.write_all(b"0\r\n\r\n").await.unwrap();
    })
    .await;
    let resp = read_response(&mut conn, false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-deployment-id"), Some("d1"));
    assert!(resp.body == whole, "the echo is the body sent");
    let received = replica.received().await;
    assert_eq!(received.len(), 1);
    assert!(received[0].body == whole, "the replica got the body intact");
    assert!(
        !(received[0].header("transfer-encoding").is_some()
            && received[0].header("content-length").is_some()),
        "never both Transfer-Encoding and Content-Length: {:?}",
        received[0].headers
    );
    replica.assert_never_saw_authorization().await;
}

/// A response of more than 1 MiB with a Content-Length arrives byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_arrives_byte_exact() {
    let big = Bytes::from(pattern((3 << 20) + 12_345, 42));
    let replica = Replica::start(Behaviour::Fixed(big.clone())).await;
    let gw = start_gateway(&replica);
    let resp = within(
        "the large response",
        testkit::post(&gw.url(PREDICT), None, Some(KEY), "{}"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-deployment-id"), "d1");
    assert_eq!(header(&resp, "content-length"), big.len().to_string());
    let got = within("the large body", resp.bytes()).await.unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the body arrived byte-exact");
    replica.assert_never_saw_authorization().await;
}

/// A chunked response is relayed as it arrives: the replica sends its second
/// part only after the test has received the first through the gateway, so a
/// gateway that buffered the response would never deliver it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_response_is_relayed_as_it_arrives() {
    let go = Arc::new(Notify::new());
    let first = Bytes::from_static(b"data: first event\n\n");
    let rest = Bytes::from(pattern(200_000, 3));
    let replica = Replica::start(Behaviour::StreamAfterSignal {
        first: first.clone(),
        rest: rest.clone(),
        go: Arc::clone(&go),
    })
    .await;
    let gw = start_gateway(&replica);
    let mut resp = within(
        "the response head",
        testkit::post(&gw.url(PREDICT), None, Some(KEY), r#"{"stream":true}"#),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-deployment-id"), "d1");
    let mut got = Vec::new();
    within(
        "the first chunk, before the replica sends the rest",
        async {
            // The first part may come in pieces; it is all that can come yet.
            for _ in 0..first.len() {
                if got.len() >= first.len() {
                    break;
                }
                let piece = resp
                    .chunk()
                    .await
                    .unwrap()
                    .expect("more of the first chunk");
                got.extend_from_slice(&piece);
            }
        },
    )
    .await;
    assert_eq!(got, first, "the first chunk alone");
    go.notify_one();
    let mut tail = Vec::new();
    within("the rest of the stream", async {
        while let Some(piece) = resp.chunk().await.unwrap() {
            tail.extend_from_slice(&piece);
        }
    })
    .await;
    assert_eq!(tail.len(), rest.len());
    assert!(tail == rest, "the rest arrived intact");
    replica.assert_never_saw_authorization().await;
}

/// h2c with prior knowledge: 100 concurrent streams on one cleartext HTTP/2
/// connection each get their own answer (the replica echoes the body), and
/// each reached the replica as `POST /predict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_multiplexes_100_streams_on_one_connection() {
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = start_gateway(&replica);
    let tcp = within("connect", TcpStream::connect(gw.proc.addr))
        .await
        .unwrap();
    let (client, connection) = within("the h2 handshake", h2::client::handshake(tcp))
        .await
        .expect("h2 handshake");
    // Drives the connection; aborted below (and dropped with the test).
    let driver = tokio::spawn(connection);
    const N: usize = 100;
    let mut streams = JoinSet::new();
    for i in 0..N {
        let client = client.clone();
        let uri = gw.url(PREDICT);
        streams.spawn(async move {
            let body = Bytes::from(format!("stream {i}: {}", "x".repeat(i)));
            let request = http::Request::post(uri)
                .header("authorization", auth())
                .header("content-length", body.len())
                .body(())
                .unwrap();
            let mut client = client
                .ready()
                .await
                .map_err(|e| format!("stream {i}: ready: {e}"))?;
            let (response, mut send) = client
                .send_request(request, false)
                .map_err(|e| format!("stream {i}: send: {e}"))?;
            send.send_data(body.clone(), true)
                .map_err(|e| format!("stream {i}: send body: {e}"))?;
            let response = response
                .await
                .map_err(|e| format!("stream {i}: response (h2c not spoken?): {e}"))?;
            let (parts, mut recv) = response.into_parts();
            let mut echoed = Vec::new();
            while let Some(data) = recv.data().await {
                let data = data.map_err(|e| format!("stream {i}: body: {e}"))?;
                let _ = recv.flow_control().release_capacity(data.len());
                echoed.extend_from_slice(&data);
            }
            Ok::<_, String>((i, body, parts, echoed))
        });
    }
    let mut answered = 0;
    within("100 h2 streams", async {
        while let Some(joined) = streams.join_next().await {
            let (i, body, parts, echoed) = joined.unwrap().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parts.status, 200, "stream {i}");
            assert_eq!(
                parts
                    .headers
                    .get("x-deployment-id")
                    .and_then(|v| v.to_str().ok()),
                Some("d1"),
                "stream {i}"
            );
            assert_eq!(echoed, body, "stream {i} got its own body back");
            answered += 1;
        }
    })
    .await;
    assert_eq!(answered, N);
    driver.abort();
    let received = replica.received().await;
    assert_eq!(received.len(), N);
    assert!(
        received
            .iter()
            .all(|r| r.method == "POST" && r.target == "/predict")
    );
    let mut bodies: Vec<Vec<u8>> = received.into_iter().map(|r| r.body).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        N,
        "each stream's body reached the replica once"
    );
    replica.assert_never_saw_authorization().await;
}

/// An HTTP/2 stream whose body keeps trickling is held to the request
/// deadline like an HTTP/1 one: 408 once `request_timeout_secs` has passed,
/// though no read waited for the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_body_that_trickles_past_the_request_deadline_gets_408() {
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = testkit::gateway_with("request_timeout_secs = 1", &replica.config());
    let tcp = within("connect", TcpStream::connect(gw.proc.addr))
        .await
        .unwrap();
    let (client, connection) = within("the h2 handshake", h2::client::handshake(tcp))
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::post(gw.url(PREDICT))
        .header("authorization", auth())
        // Small enough to be read whole before the replica is contacted.
        .header("content-length", 10_000)
        .body(())
        .unwrap();
    let mut client = within("ready", client.ready()).await.unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    // A byte every 100 ms, far below the body timeout (60 s), until the
    // gateway answers.
    let trickle = tokio::spawn(async move {
        for _ in 0..300 {
            if send.send_data(Bytes::from_static(b"x"), false).is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let response = within("the answer", response).await.expect("a response");
    assert_eq!(response.status(), 408);
    trickle.abort();
    driver.abort();
    assert_eq!(replica.data_connections(), 0, "nothing reached the replica");
}
