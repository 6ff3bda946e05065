//! `loadtest`: load over keep-alive HTTP/1.1 connections, closed or open loop.
//!
//! Closed loop (the default): each connection sends a request, reads the
//! whole response, and sends the next: the rate is whatever the server
//! sustains (capacity), and latency runs from each send.
//!
//! Open loop (`--rate R`): requests follow a timetable, request n due at
//! `start + n / R`, dealt round-robin to the connections, and latency runs
//! from the *scheduled* time. A connection still waiting for an answer
//! sends its next request late, and that lateness counts: a server that
//! stalls cannot hide the queue it causes (no coordinated omission).
//!
//! Latency goes into an HdrHistogram per connection; requests that end
//! during the warm-up are not recorded. Any status other than 2xx counts as
//! a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadtest",
    version,
    about = "HTTP/1.1 load generator: closed loop, or open loop at a fixed rate"
)]
struct Args {
    /// Target URL (http only), e.g. http://127.0.0.1:8080/models/m/production/predict
    #[arg(long)]
    url: Uri,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: Method,
    /// Extra header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Concurrent keep-alive connections (open loop: the most requests in
    /// flight; size it above rate x expected latency).
    #[arg(long, short, default_value_t = 32)]
    connections: usize,
    /// Open loop: requests per second on a fixed timetable, latency from
    /// each request's scheduled time. Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one connection saw.
struct Tally {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    response_bytes: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            response_bytes: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(other.latency_us)
            .expect("same histogram bounds");
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.response_bytes += other.response_bytes;
    }
}

struct Plan {
    uri: Uri,
    authority: String,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Open loop: time between two requests of one connection.
    interval: Option<Duration>,
    connections: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.url.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported");
    }
    let authority = args
        .url
        .authority()
        .context("the URL needs a host")?
        .to_string();
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `Name: value`"))?;
        headers.push((
            name.trim().parse::<HeaderName>()?,
            value.trim().parse::<HeaderValue>()?,
        ));
    }
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => {
            Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let interval = match args.rate {
        Some(rate) if rate.is_finite() && rate > 0.0 => {
            Some(Duration::from_secs_f64(args.connections as f64 / rate))
        }
        Some(rate) => bail!("--rate must be a positive number of requests per second, not {rate}"),
        None => None,
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let plan = std::sync::Arc::new(Plan {
        uri: args.url.clone(),
        authority,
        method: args.method.clone(),
        headers,
        body,
        start,
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
        interval,
        connections: args.connections,
    });
    let tasks: Vec<_> = (0..args.connections)
        .map(|j| tokio::spawn(connection(std::sync::Arc::clone(&plan), j)))
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        total.merge(task.await?);
    }
    report(&args, &total)
}

/// One connection's requests; `index` places its share of an open-loop
/// timetable (request n goes to connection n mod connections).
async fn connection(plan: std::sync::Arc<Plan>, index: usize) -> Tally {
    let mut tally = Tally::new();
    // Open loop: when this connection's next request is due.
    let mut due = plan
        .interval
        .map(|i| plan.start + i.mul_f64(index as f64 / plan.connections as f64));
    let path = plan
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    'connect: while Instant::now() < plan.end {
        let stream = match TcpStream::connect(&plan.authority).await {
            Ok(s) => s,
            Err(_) => {
                count(&mut tally, &plan, "connect");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            count(&mut tally, &plan, "handshake");
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < plan.end {
            let mut req = Request::builder()
                .method(plan.method.clone())
                .uri(path.as_str())
                .header(http::header::HOST, plan.authority.as_str());
            for (name, value) in &plan.headers {
                req = req.header(name, value);
            }
            let req = req
                .body(Full::new(plan.body.clone()))
                .expect("valid request parts");
            if let (Some(at), Some(interval)) = (due.as_mut(), plan.interval) {
                if *at >= plan.end {
                    break 'connect;
                }
                tokio::time::sleep_until(*at).await;
                *at += interval;
            }
            // Open loop: from when it was due, late or not.
            let sent = due.map_or_else(Instant::now, |next| {
                next - plan.interval.unwrap_or_default()
            });
            let response = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    count(&mut tally, &plan, "send");
                    continue 'connect;
                }
            };
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => {
                        count(&mut tally, &plan, "body");
                        continue 'connect;
                    }
                }
            }
            let done = Instant::now();
            if done >= plan.measure_from && done < plan.end {
                let us = (done - sent).as_micros().max(1) as u64;
                tally.latency_us.saturating_record(us);
                *tally.statuses.entry(status).or_default() += 1;
                tally.response_bytes += bytes;
            }
        }
    }
    tally
}

fn count(tally: &mut Tally, plan: &Plan, kind: &'static str) {
    let now = Instant::now();
    if now >= plan.measure_from && now < plan.end {
        *tally.errors.entry(kind).or_default() += 1;
    }
}

fn report(args: &Args, t: &Tally) -> anyhow::Result<()> {
    let requests: u64 = t.statuses.values().sum();
    let ok: u64 = t
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let rate = requests as f64 / args.duration;
    let h = &t.latency_us;
    let pct = |q: f64| h.value_at_quantile(q);
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_owned(),
    };
    println!(
        "{} {} x {} connections, {mode}, {:.1} s (+{:.1} s warm-up)",
        args.method, args.url, args.connections, args.duration, args.warmup
    );
    println!(
        "  requests   {requests} ({rate:.0}/s), 2xx {ok}, failed {}",
        requests - ok
    );
    println!(
        "  latency    p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        h.max()
    );
    println!("  statuses   {:?}", t.statuses);
    if !t.errors.is_empty() {
        println!("  errors     {:?}", t.errors);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "url": args.url.to_string(),
            "mode": if args.rate.is_some() { "open" } else { "closed" },
            "target_rate": args.rate,
            "connections": args.connections,
            "duration_s": args.duration,
            "requests": requests,
            "requests_per_s": rate,
            "ok": ok,
            "failed": requests - ok,
            "latency_us": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "p999": pct(0.999), "max": h.max()},
            "statuses": t.statuses,
            "errors": t.errors,
            "response_bytes": t.response_bytes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
