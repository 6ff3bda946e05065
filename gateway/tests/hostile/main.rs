//! A corpus of hostile requests, sent as raw bytes to the real gateway in
//! front of the recording replica, one table: each case is a name (with the
//! reason for its expectation where the right answer is a judgement call),
//! the exact bytes sent (in pieces where a client is slow), the responses it
//! must get in order (none: the connection just closes), and whether the
//! connection must then close or stay usable (a `GET /healthz` probe must
//! then get its own answer, so that no byte of a refused or smuggled request
//! was taken for a request). Every case also says what the replica must have
//! received from it, and after every case the replica's record is searched
//! for what must never reach a replica: the client's key, the gateway's own
//! headers, two framings, any byte of a smuggled request, `/info`,
//! `/metrics` or `/health` through `/sync/`.
//!
//! The cases run one after another and every failure is collected: the test
//! reports them all at once. No case asserts on time: slow clients are
//! answered by the gateway's timeouts (set low in `[server]`), and the raw
//! client waits for the answer, or for the close.
//!
//! This file holds the case types, the runner and the test; the cases
//! themselves are in one module per category ([`smuggling`], [`sizes`],
//! [`slow`], [`pipelining`], [`paths`], [`auth`], [`methods`],
//! [`versions`]), built with the request helpers of [`requests`], and
//! the checks of what must never reach a replica are in [`record`].

mod auth;
mod methods;
mod paths;
mod pipelining;
mod record;
mod requests;
mod sizes;
mod slow;
mod smuggling;
mod versions;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::raw::{Client, IO_TIMEOUT, Response};
use testkit::replica::{Behaviour, Received};
use testkit::wire::*;

use record::never_at_a_replica;

/// The main gateway: a small body limit, and head and body timeouts short
/// enough for slow clients to be answered within the raw client's waits.
/// The keep-alive timeout stays at its default (60 s), so that a connection
/// that must close is seen closing because of the case, not of idleness.
const MAIN_SERVER: &str =
    "max_request_body_bytes = 1000\nclient_header_timeout_secs = 1\nclient_body_timeout_secs = 1";
/// A second gateway for the idle keep-alive cases.
const IDLE_SERVER: &str = "keepalive_timeout_secs = 1";
const BODY_LIMIT: usize = 1000;
const MAX_URI: usize = 8 * 1024;
const MAX_HEAD: usize = 64 * 1024;
/// How long a trickling client waits for an answer before its next byte.
const TRICKLE_PAUSE: Duration = Duration::from_millis(250);
/// Sent on every connection that must stay usable: its answer must be the
/// next response.
const PROBE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
/// In every smuggled request: never to be seen at the replica.
const MARKER: &str = "SMUGGLED";
const SYNC: &str = "/models/m1/production/sync";

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Smuggling,
    Sizes,
    Slow,
    Pipelining,
    Paths,
    Auth,
    Methods,
    Versions,
}

const CATEGORIES: [Category; 8] = [
    Category::Smuggling,
    Category::Sizes,
    Category::Slow,
    Category::Pipelining,
    Category::Paths,
    Category::Auth,
    Category::Methods,
    Category::Versions,
];

/// Which gateway a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gw {
    Main,
    /// `keepalive_timeout_secs = 1`.
    Idle,
}

#[derive(Debug)]
enum Step {
    /// Written whole (a write the gateway refuses by closing is noted, and
    /// nothing more is sent).
    Send(Vec<u8>),
    /// Written a byte at a time, each after waiting [`TRICKLE_PAUSE`] for
    /// an answer: stops as soon as one begins.
    Trickle(Vec<u8>),
    /// The next response has this status (and this header, if given).
    Expect {
        status: u16,
        header: Option<(&'static str, &'static str)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The connection takes another request: the probe is answered.
    Open,
    /// The gateway closes the connection, with nothing more sent.
    Closed,
}

/// One request the replica received, as the cases state them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

impl Seen {
    fn of(r: &Received) -> Self {
        Self {
            method: r.method.clone(),
            target: r.target.clone(),
            body: r.body.clone(),
        }
    }

    fn describe(seen: &[Seen]) -> String {
        if seen.is_empty() {
            return "nothing".to_owned();
        }
        seen.iter()
            .map(|s| {
                format!(
                    "{} {} {:?}",
                    s.method,
                    escaped(s.target.as_bytes(), 80),
                    escaped(&s.body, 60)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug)]
struct Case {
    category: Category,
    name: String,
    gw: Gw,
    steps: Vec<Step>,
    end: End,
    /// What the replica receives from this case, in order.
    reaches: Vec<Seen>,
}

fn case(category: Category, name: &str) -> Case {
    Case {
        category,
        name: name.to_owned(),
        gw: Gw::Main,
        steps: Vec::new(),
        end: End::Closed,
        reaches: Vec::new(),
    }
}

impl Case {
    fn send(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Send(bytes.into()));
        self
    }

    fn trickle(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Trickle(bytes.into()));
        self
    }

    fn expect(mut self, status: u16) -> Self {
        self.steps.push(Step::Expect {
            status,
            header: None,
        });
        self
    }

    fn expect_with(mut self, status: u16, name: &'static str, value: &'static str) -> Self {
        self.steps.push(Step::Expect {
            status,
            header: Some((name, value)),
        });
        self
    }

    fn open(mut self) -> Self {
        self.end = End::Open;
        self
    }

    fn closed(mut self) -> Self {
        self.end = End::Closed;
        self
    }

    fn idle_gateway(mut self) -> Self {
        self.gw = Gw::Idle;
        self
    }

    fn reaches(mut self, method: &str, target: &str, body: &[u8]) -> Self {
        self.reaches.push(Seen {
            method: method.to_owned(),
            target: target.to_owned(),
            body: body.to_vec(),
        });
        self
    }

    /// A predict whose body reaches the replica.
    fn predicts(self, body: &[u8]) -> Self {
        self.reaches("POST", "/predict", body)
    }

    /// Everything the case sends, for failure messages.
    fn sent(&self) -> Vec<u8> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) | Step::Trickle(b) => Some(b.as_slice()),
                Step::Expect { .. } => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }

    fn describe(&self) -> String {
        let expected: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Expect { status, .. } => Some(status.to_string()),
                _ => None,
            })
            .collect();
        format!(
            "[{:?}] {}\n    sent: {}\n    expected: {} then {}",
            self.category,
            self.name,
            escaped(&self.sent(), 300),
            if expected.is_empty() {
                "no response".to_owned()
            } else {
                expected.join(", ")
            },
            match self.end {
                End::Open => "the connection kept",
                End::Closed => "the connection closed",
            }
        )
    }
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(smuggling::cases());
    cases.extend(sizes::cases());
    cases.extend(slow::cases());
    cases.extend(pipelining::cases());
    cases.extend(paths::cases());
    cases.extend(auth::cases());
    cases.extend(methods::cases());
    cases.extend(versions::cases());
    cases
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

/// Whether an answer (or a close) began within [`TRICKLE_PAUSE`].
fn answer_began(stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(TRICKLE_PAUSE))
        .expect("set a read timeout");
    let mut byte = [0u8; 1];
    let began = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
        ),
    };
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    began
}

/// What is wrong with `resp` as the answer `status` (and `header`).
fn judge(resp: &Response, status: u16, header: Option<(&str, &str)>) -> Option<String> {
    if resp.status != status {
        let fault = if resp.status >= 500 {
            " (a 5xx for a client's fault)"
        } else {
            ""
        };
        return Some(format!("expected {status}, got {}{fault}", resp.describe()));
    }
    if let Some((name, value)) = header
        && resp.header(name) != Some(value)
    {
        return Some(format!(
            "{status} without `{name}: {value}`: headers {:?}",
            resp.headers
        ));
    }
    if status >= 400 {
        let json: Option<serde_json::Value> = serde_json::from_slice(&resp.body).ok();
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(serde_json::Value::as_str);
        if error.is_none_or(str::is_empty) {
            return Some(format!(
                "{status} without a JSON error: {}",
                resp.describe()
            ));
        }
    }
    None
}

/// Runs `case` on a new connection: what went wrong, if anything, and how
/// many requests the replica received meanwhile.
fn run(setup: &Setup, case: &Case) -> (Vec<String>, usize) {
    let before = setup.received().len();
    let mut problems = Vec::new();
    let stream = TcpStream::connect(setup.addr()).expect("connect to the gateway");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set a write timeout");
    let mut writer = stream.try_clone().expect("a second handle on the socket");
    let mut client = Client::from_stream(stream);
    // A refused request may be closed on before all of it is written: said
    // in the report, not a failure by itself.
    let mut write_failed: Option<String> = None;
    let mut answered = 0;
    let mut as_expected = true;
    for step in &case.steps {
        match step {
            Step::Send(bytes) => {
                if write_failed.is_none()
                    && let Err(e) = writer.write_all(bytes).and_then(|()| writer.flush())
                {
                    write_failed = Some(e.to_string());
                }
            }
            Step::Trickle(bytes) => {
                for byte in bytes {
                    if write_failed.is_some() || answer_began(&writer) {
                        break;
                    }
                    if let Err(e) = writer.write_all(std::slice::from_ref(byte)) {
                        write_failed = Some(e.to_string());
                    }
                }
            }
            Step::Expect { status, header } => {
                answered += 1;
                let problem = match client.try_response(false) {
                    Ok(resp) => judge(&resp, *status, *header),
                    Err(e) => Some(format!("expected {status}, but {e}")),
                };
                if let Some(problem) = problem {
                    let note = write_failed
                        .as_ref()
                        .map(|e| format!(" (a write had failed: {e})"))
                        .unwrap_or_default();
                    problems.push(format!("response {answered}: {problem}{note}"));
                    as_expected = false;
                    break;
                }
            }
        }
    }
    if as_expected {
        match case.end {
            End::Closed => {
                if let Err(e) = client.closed() {
                    problems.push(format!("expected the connection closed, but {e}"));
                }
            }
            End::Open => {
                let probe = match writer.write_all(PROBE) {
                    Err(e) => Err(format!("the probe could not be written: {e}")),
                    Ok(()) => client.try_response(false),
                };
                match probe {
                    Ok(resp) if resp.status == 200 && resp.body == br#"{"status":"ok"}"# => {}
                    Ok(resp) => problems.push(format!(
                        "the connection was not left clean: the probe GET /healthz got {}",
                        resp.describe()
                    )),
                    Err(e) => problems.push(format!(
                        "the connection was not kept: the probe GET /healthz: {e}"
                    )),
                }
            }
        }
    }
    drop(client);
    let received = setup.received();
    let new = &received[before.min(received.len())..];
    let seen: Vec<Seen> = new.iter().map(Seen::of).collect();
    if seen != case.reaches {
        problems.push(format!(
            "the replica received {} (expected {})",
            Seen::describe(&seen),
            Seen::describe(&case.reaches)
        ));
    }
    problems.extend(never_at_a_replica(new));
    (problems, new.len())
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn hostile_requests_are_answered_as_they_should_and_nothing_smuggled_reaches_a_replica() {
    let cases = corpus();
    let counts: Vec<String> = CATEGORIES
        .iter()
        .map(|c| {
            let n = cases.iter().filter(|case| case.category == *c).count();
            format!("{c:?} {n}")
        })
        .collect();
    let counts = format!("{} cases: {}", cases.len(), counts.join(", "));
    println!("hostile corpus: {counts}");
    assert!(cases.len() >= 40, "a corpus of at least 40 cases: {counts}");

    let main = Setup::start_with(MAIN_SERVER, Behaviour::Echo);
    let idle = Setup::start_with(IDLE_SERVER, Behaviour::Echo);
    let mut failures = Vec::new();
    let mut accounted = [0, 0];
    for case in &cases {
        let (setup, gw) = match case.gw {
            Gw::Main => (&main, 0),
            Gw::Idle => (&idle, 1),
        };
        let (problems, seen) = run(setup, case);
        accounted[gw] += seen;
        if !problems.is_empty() {
            failures.push(format!(
                "{}\n    got: {}",
                case.describe(),
                problems.join("\n         ")
            ));
        }
    }

    // The replicas' whole records: exactly as many requests, to the same
    // targets, as the cases let through, and nothing that must never reach
    // a replica among those that came after their case was judged.
    for (i, (gw, setup)) in [(Gw::Main, &main), (Gw::Idle, &idle)]
        .into_iter()
        .enumerate()
    {
        let expected: Vec<(String, String)> = cases
            .iter()
            .filter(|c| c.gw == gw)
            .flat_map(|c| {
                c.reaches
                    .iter()
                    .map(|s| (s.method.clone(), s.target.clone()))
            })
            .collect();
        let received = setup.received();
        let seen: Vec<(String, String)> = received
            .iter()
            .map(|r| (r.method.clone(), r.target.clone()))
            .collect();
        if seen != expected {
            failures.push(format!(
                "the {gw:?} gateway's replica received {} requests, the cases let through {} (the cases above say which)",
                seen.len(),
                expected.len()
            ));
        }
        let late = &received[accounted[i].min(received.len())..];
        if !late.is_empty() {
            failures.push(format!(
                "the {gw:?} gateway's replica received {} after the last case: {}",
                late.len(),
                Seen::describe(&late.iter().map(Seen::of).collect::<Vec<_>>())
            ));
        }
        for problem in never_at_a_replica(late) {
            failures.push(format!("the {gw:?} gateway's replica: {problem}"));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of the {counts} failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
