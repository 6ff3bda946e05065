use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A connection on one end of a pipe, the client on the other.
fn pipe() -> (ServerConn<DuplexStream>, DuplexStream) {
    let (server, client) = tokio::io::duplex(64 * 1024);
    (ServerConn::new(server, Limits::default()), client)
}

async fn respond(conn: &mut ServerConn<DuplexStream>, body: &'static [u8], length: bool) -> bool {
    let len = body.len().to_string();
    let mut fields = vec![(&b"content-type"[..], &b"application/json"[..])];
    if length {
        fields.push((b"content-length", len.as_bytes()));
    }
    conn.write_head(StatusCode::OK, fields.into_iter())
        .await
        .unwrap();
    conn.write_body(body).await.unwrap();
    conn.finish().await.unwrap()
}

/// Everything the client got, each `date` line (the clock's) as `DATE`.
async fn read_all(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<&str> = text.split("\r\n").collect();
    for line in &mut lines {
        if let Some(date) = line.strip_prefix("date: ") {
            assert!(date.ends_with(" GMT"), "{date}");
            *line = "DATE";
        }
    }
    lines.join("\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_turn() {
    let (mut conn, mut client) = pipe();
    client
        .write_all(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    assert_eq!(conn.head().path(), "/a");
    assert_eq!(
        conn.read_body().await.unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(conn.read_body().await.unwrap(), None);
    assert!(respond(&mut conn, b"{}", true).await);
    assert!(conn.read_request().await.unwrap());
    assert_eq!(conn.head().path(), "/b");
    assert!(respond(&mut conn, b"{}", true).await);
    drop(client.shutdown().await);
    assert!(!conn.read_request().await.unwrap(), "the client closed");
    drop(conn);
    let text = read_all(&mut client).await;
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nDATE\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n{}"
            .repeat(2)
    );
}

#[tokio::test]
async fn without_a_length_the_body_is_chunked_or_ends_with_the_connection() {
    let (mut conn, mut client) = pipe();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    assert!(respond(&mut conn, b"data", false).await);
    drop(conn);
    assert_eq!(
        read_all(&mut client).await,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nDATE\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n4\r\ndata\r\n0\r\n\r\n"
    );

    let (mut conn, mut client) = pipe();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    assert!(conn.read_request().await.unwrap());
    assert!(!respond(&mut conn, b"data", false).await, "closed after");
    drop(conn);
    assert_eq!(
        read_all(&mut client).await,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nDATE\r\nconnection: close\r\n\r\ndata"
    );
}

#[tokio::test]
async fn framing_fields_are_the_connections_own() {
    let (mut conn, mut client) = pipe();
    client
        .write_all(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    let fields = [
        (&b"Transfer-Encoding"[..], &b"chunked"[..]),
        (b"Content-Length", b"10"),
    ];
    conn.write_head(StatusCode::OK, fields.into_iter())
        .await
        .unwrap();
    conn.write_body(b"ignored").await.unwrap();
    assert!(conn.finish().await.unwrap());
    assert_eq!(conn.body_bytes_sent(), 0);
    drop(conn);
    assert_eq!(
        read_all(&mut client).await,
        "HTTP/1.1 200 OK\r\nDATE\r\ncontent-length: 10\r\nconnection: keep-alive\r\n\r\n"
    );
}

#[tokio::test]
async fn an_unread_body_closes_the_connection_unless_it_is_all_here() {
    let (mut conn, mut client) = pipe();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    assert!(respond(&mut conn, b"no", true).await, "the body was here");

    let (mut conn, mut client) = pipe();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n{}")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    assert!(!respond(&mut conn, b"no", true).await, "most of it was not");
}

#[tokio::test]
async fn bad_heads_and_bodies_are_errors() {
    let (mut conn, mut client) = pipe();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_request().await, Err(HeadError::Malformed));

    let (mut conn, mut client) = pipe();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    assert!(matches!(
        conn.read_body().await,
        Err(BodyReadError::Framing(BodyError::ChunkSize))
    ));

    let (mut conn, mut client) = pipe();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(conn.read_request().await, Err(HeadError::Cut));
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_ends_and_a_slow_head_times_out() {
    let (mut conn, _client) = pipe();
    assert!(!conn.read_request().await.unwrap());

    let (mut conn, mut client) = pipe();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_request().await, Err(HeadError::Timeout));
}

#[tokio::test]
async fn closed_keeps_what_the_client_pipelines() {
    let (mut conn, mut client) = pipe();
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(conn.read_request().await.unwrap());
    client
        .write_all(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    conn.closed().await;
    assert!(respond(&mut conn, b"{}", true).await);
    assert!(conn.read_request().await.unwrap());
    assert_eq!(conn.head().path(), "/b");
}

#[test]
fn chunk_lines() {
    let mut buf = [0; 18];
    assert_eq!(chunk_line(&mut buf, 0), b"0\r\n");
    assert_eq!(chunk_line(&mut buf, 255), b"ff\r\n");
    assert_eq!(chunk_line(&mut buf, 0x10000), b"10000\r\n");
}
