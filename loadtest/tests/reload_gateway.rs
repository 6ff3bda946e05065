//! The reload scenario against the real gateway: its config file is
//! rewritten every 250 ms under load, a model added and removed in turn,
//! the gateway applies each version (a new routing snapshot), and no
//! request fails.

// Plain threads and wall-clock deadlines: this harness runs outside any runtime.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "igw_loadtest_key";
const PREDICT: &str = "/models/m/production/predict";
const BODY: &str = r#"{"text":"hi"}"#;

/// A child process killed (by its pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let mut engine = Command::new(support::workspace_binary("engine"))
        .args(["--listen", "127.0.0.1:0", "--fixed-ms", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ready =
        engine::ReadyLine::read_from(BufReader::new(engine.stdout.take().unwrap())).unwrap();
    let _engine = Proc(engine);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (predict, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let digest: String = config::key_digest(KEY)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            r#"[listeners]
predict = "{predict}"
admin = "{admin}"
[server]
threads = 1
[[api_keys]]
name = "loadtest"
sha256 = "{digest}"
scope = "admin"
[[models]]
id = "m"
[[models.deployments]]
id = "d1"
predict_concurrency = 64
replicas = {{ source = "static", addresses = ["{}"] }}
[[models.environments]]
name = "production"
deployment = "d1"
"#,
            ready.addr
        ),
    )
    .unwrap();
    let _gateway = Proc(
        Command::new(support::workspace_binary("gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("a first prediction through the gateway", || {
        post_ok(&predict)
    });
    // The admin listener is a service of its own: it may start a moment later.
    wait_for("the admin API", || {
        get(&admin, "/v1/config").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
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
    wait_for("the reloads to be applied", || {
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
