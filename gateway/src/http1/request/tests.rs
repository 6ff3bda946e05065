use super::*;

fn parse(wire: &str) -> Result<RequestHead, HeadError> {
    let mut buf = BytesMut::from(wire.as_bytes());
    let mut head = RequestHead::default();
    assert!(
        head.parse(&mut buf, HeadLimits::default())?,
        "complete head"
    );
    Ok(head)
}

#[test]
fn origin_form_with_fields_by_offset() {
    let mut buf = BytesMut::from(
        &b"POST /models/m/production/predict?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}GET"[..],
    );
    let mut head = RequestHead::default();
    assert!(head.parse(&mut buf, HeadLimits::default()).unwrap());
    assert_eq!(&buf[..], b"{}GET", "the body and what follows stay");
    assert_eq!(head.method(), Method::POST);
    assert_eq!(head.path(), "/models/m/production/predict");
    assert_eq!(head.query(), Some("x=1"));
    assert_eq!(head.host(), Some("gw"));
    assert_eq!(head.field(b"x-a"), Some(&b"b"[..]));
    assert_eq!(head.content_length(), Some(2));
    assert!(head.keep_alive());
    assert_eq!(head.fields().count(), 3);
}

#[test]
fn a_partial_head_waits_and_a_huge_one_is_refused() {
    let limits = HeadLimits::default();
    let mut head = RequestHead::default();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
    assert_eq!(head.parse(&mut buf, limits), Ok(false));
    let mut huge = BytesMut::from(&b"GET / HTTP/1.1\r\nX: "[..]);
    huge.extend_from_slice(&vec![b'a'; limits.max_head_bytes]);
    assert_eq!(head.parse(&mut huge, limits), Err(HeadError::TooLarge));
    let mut whole = BytesMut::from(&b"GET / HTTP/1.1\r\nX: "[..]);
    whole.extend_from_slice(&vec![b'a'; limits.max_head_bytes]);
    whole.extend_from_slice(b"\r\n\r\n");
    assert_eq!(head.parse(&mut whole, limits), Err(HeadError::TooLarge));
    let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(limits.max_uri_bytes));
    assert_eq!(parse(&long_uri).err(), Some(HeadError::UriTooLong));
    let mut line = BytesMut::from(&b"GET /"[..]);
    line.extend_from_slice(&vec![b'a'; limits.max_head_bytes]);
    assert_eq!(head.parse(&mut line, limits), Err(HeadError::UriTooLong));
    let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
        Some(HeadError::TooManyFields)
    );
}

#[test]
fn absolute_form_must_agree_with_host() {
    let head = parse("GET http://gw:8080/a/b?q HTTP/1.1\r\nHost: gw:8080\r\n\r\n").unwrap();
    assert_eq!(head.path(), "/a/b");
    assert_eq!(head.query(), Some("q"));
    assert_eq!(head.host(), Some("gw:8080"));
    let bare = parse("GET HTTPS://gw HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
    assert_eq!(bare.path(), "/");
    for bad in [
        "GET http://gw/a HTTP/1.1\r\nHost: other\r\n\r\n",
        "GET http://u@gw/a HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    ] {
        assert_eq!(parse(bad).err(), Some(HeadError::Host), "{bad:?}");
    }
    for bad in [
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "GET ftp://x/ HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(parse(bad).err(), Some(HeadError::Target), "{bad:?}");
    }
}

#[test]
fn content_length_rules() {
    assert_eq!(
        parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .content_length(),
        Some(5)
    );
    assert_eq!(
        parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .content_length(),
        Some(5)
    );
    for bad in [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
    ] {
        assert_eq!(parse(bad).err(), Some(HeadError::ContentLength), "{bad:?}");
    }
}

#[test]
fn http_1_1_needs_host() {
    assert_eq!(
        parse("GET / HTTP/1.1\r\n\r\n").err(),
        Some(HeadError::NoHost)
    );
    assert!(parse("GET / HTTP/1.0\r\n\r\n").is_ok());
}

#[test]
fn transfer_encoding_rules() {
    assert_eq!(
        parse(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .err(),
        Some(HeadError::TwoFramings)
    );
    let chunked =
        parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert!(chunked.is_chunked());
    assert_eq!(chunked.content_length(), None);
    // Codings the gateway does not decode: 501, not a body passed on coded.
    assert_eq!(
        parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").err(),
        Some(HeadError::CodingNotImplemented)
    );
    for bad in [
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(
            parse(bad).err(),
            Some(HeadError::TransferEncoding),
            "{bad:?}"
        );
    }
}

#[test]
fn one_key_only() {
    assert_eq!(
        parse("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Api-Key a\r\nauthorization: Api-Key b\r\n\r\n")
            .err(),
        Some(HeadError::TwoKeys)
    );
}

#[test]
fn keep_alive_by_version_and_connection() {
    assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
    assert!(
        parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
    assert!(
        !parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: x, close\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
}

#[test]
fn malformed_heads() {
    for bad in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
    ] {
        assert_eq!(parse(bad).err(), Some(HeadError::Malformed), "{bad:?}");
    }
}

#[test]
fn from_h2() {
    let mut req = pingora_http::RequestHeader::build("POST", b"/p?q=1", None).unwrap();
    req.set_uri(http::Uri::from_static("https://gw:443/p?q=1"));
    req.append_header("content-length", "3").unwrap();
    let head = RequestHead::from_h2(&req);
    assert_eq!(head.path(), "/p");
    assert_eq!(head.query(), Some("q=1"));
    assert_eq!(head.host(), Some("gw:443"));
    assert_eq!(head.content_length(), Some(3));
    assert_eq!(head.field(b"Content-Length"), Some(&b"3"[..]));
}

/// Feeds `wire` one byte at a time as a trickling client would, parsing
/// when `HeadScan` says so: the parses made, and the length at which the
/// head was complete.
fn trickle(wire: &[u8]) -> (usize, Option<usize>) {
    let limits = HeadLimits::default();
    let mut scan = HeadScan::default();
    let mut head = RequestHead::default();
    let mut buf = BytesMut::new();
    let mut parses = 0;
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        if scan.should_parse(&buf, limits) {
            parses += 1;
            if head.parse(&mut buf, limits).unwrap() {
                return (parses, Some(i + 1));
            }
        }
    }
    (parses, None)
}

#[test]
fn a_trickled_head_is_parsed_a_logarithmic_number_of_times() {
    let mut wire = b"POST /predict HTTP/1.1\r\nHost: gw\r\n".to_vec();
    for i in 0..100 {
        wire.extend_from_slice(format!("X-Field-{i}: {}\r\n", "v".repeat(600)).as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let (parses, complete_at) = trickle(&wire);
    assert_eq!(complete_at, Some(wire.len()), "complete at its last byte");
    assert!(parses <= 20, "{parses} parses for {} bytes", wire.len());
}

#[test]
fn a_blank_line_split_across_reads_is_found() {
    for wire in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    ] {
        assert_eq!(trickle(wire).1, Some(wire.len()), "{wire:?}");
    }
}

#[test]
fn a_trickled_malformed_head_is_refused_before_its_end() {
    let limits = HeadLimits::default();
    let mut scan = HeadScan::default();
    let mut head = RequestHead::default();
    let mut buf = BytesMut::from(&b"G\x01T / HTTP/1.1\r\n"[..]);
    assert!(
        scan.should_parse(&buf, limits),
        "the first bytes are parsed"
    );
    assert_eq!(head.parse(&mut buf, limits), Err(HeadError::Malformed));
}
