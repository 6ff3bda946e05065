//! The reload scenario against the real gateway: its config file is
//! rewritten every 250 ms under load, a model added and removed in turn,
//! the gateway applies each version (a new routing snapshot), and no
//! request fails.

// Plain threads and wall-clock deadlines: this harness runs outside any runtime.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use testkit::eventually;
use testkit::fixture::{key_entry, static_model};
use testkit::gateway::{Launch, port_zero, start_text};

const KEY: &str = "igw_loadtest_key";
const PREDICT: &str = "/models/m/production/predict";
const BODY: &str = r#"{"text":"hi"}"#;

/// `GET path` with the key; the status line and body, or `None` if the
/// connection failed.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Api-Key {KEY}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn applied_revisions(admin: &str) -> u64 {
    let response = get(admin, "/v1/config").expect("admin answers");
    let body = response.split_once("\r\n\r\n").expect("a body").1;
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(json["rejected_reloads"], 0, "{json}");
    json["applied_revisions"].as_u64().expect("a count")
}

#[test]
fn no_request_fails_while_the_gateway_reloads_its_config() {
    let engine = testkit::engine("r1", &["--fixed-ms", "0"]);
    let text = format!(
        "[listeners]\npredict = \"{zero}\"\nadmin = \"{zero}\"\n[server]\nthreads = 1\n{}{}",
        key_entry(KEY, "loadtest", "\"admin\""),
        static_model("m", "d1", &[engine.addr], 64),
        zero = port_zero(),
    );
    let gateway = start_text(&text, &Launch::default());
    let (predict, admin) = (gateway.predict().to_string(), gateway.admin.to_string());
    let config = gateway.config.path();
    eventually("a first prediction through the gateway", || {
        post_ok(&predict)
    });
    let before = applied_revisions(&admin);

    let line = format!(
        "--url http://{predict}{PREDICT} --body {BODY} --scenario reload --reload-edit model \
         --config {} --reload-every 0.25 --rate 200 --duration 2 --warmup 0.3 --connections 8",
        config.display()
    );
    let auth = format!("Authorization: Api-Key {KEY}");
    let mut args: Vec<&str> = line.split_whitespace().collect();
    args.extend(["-H", &auth]);
    let (status, result) = support::run_loadtest_status(&args);
    assert!(status.success(), "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(result["requests"], 400, "{result}");
    assert_eq!(result["rewrites"], 7, "{result}");
    // The gateway applied the versions (each 250 ms apart, past its 150 ms
    // debounce); generous: at least 4 of the 7.
    eventually("the reloads to be applied", || {
        applied_revisions(&admin) >= before + 4
    });
}

fn post_ok(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let request = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost: x\r\nAuthorization: Api-Key {KEY}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}
