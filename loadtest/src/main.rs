//! `loadtest`: load over keep-alive HTTP/1.1 connections, in named
//! scenarios.
//!
//! - `steady` (default): closed loop for capacity, or open loop at
//!   `--rate` with latency from each request's scheduled time (see `load`).
//! - `burst`: open loop stepping from `--rate` to `--burst-rate`; each
//!   phase reported on its own.
//! - `scale-from-zero`: `--requests` fired at once, time to first byte of
//!   each.
//! - `canary`: steady load, responses counted per value of a header.
//! - `reload`: steady load while the gateway's config file is rewritten;
//!   exits nonzero if any request failed.
//!
//! Any status other than 2xx is a failure. Module map: `schedule` (the
//! timeline), `client` (one exchange), `load` (closed and open loop),
//! `stats`, `report`, and one module per scenario that needs more.

mod client;
mod load;
mod reload;
mod report;
mod scale_from_zero;
mod scenario;
mod schedule;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{Method, Uri};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "HTTP/1.1 load generator: closed or open loop, in named scenarios"
)]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/models/m/production/predict;
    /// https:// speaks HTTP/1.1 over TLS (ALPN http/1.1).
    #[arg(long)]
    url: Uri,
    /// PEM certificates to trust for https:// (e.g. a test certificate);
    /// without it, the system's.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// What to run.
    #[arg(long, value_enum, default_value = "steady")]
    scenario: scenario::Scenario,
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
    /// Concurrent keep-alive connections (open loop: a pool, each free one
    /// takes the next request; the most requests in flight, so size it
    /// above rate x expected latency).
    #[arg(long, short, default_value_t = 32)]
    connections: usize,
    /// Open loop: requests per second on a fixed timetable, latency from
    /// each request's scheduled time. Without it: closed loop. `burst`:
    /// the rate before the step.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts (`burst`: at `--rate`).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: seconds after the last scheduled request that answers may
    /// still arrive; requests unanswered then count as `unfinished` errors.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// `burst`: requests per second after the step.
    #[arg(long)]
    burst_rate: Option<f64>,
    /// `burst`: measured seconds at `--rate` before the step (default: half
    /// of `--duration`).
    #[arg(long)]
    burst_at: Option<f64>,
    /// `scale-from-zero`: requests fired at once, one connection each.
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// `scale-from-zero`: seconds to wait for the answers.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// `canary`: count responses per value of this header.
    #[arg(long, default_value = "x-deployment-id")]
    count_header: http::HeaderName,
    /// `reload`: the config file the gateway under load is serving.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `reload`: what each rewrite changes: `model` (a model added and
    /// removed in turn: the gateway swaps in a new routing snapshot every
    /// time) or `comment` (a trailing comment line only: the gateway
    /// re-reads the file and finds nothing to apply).
    #[arg(long, value_enum, default_value = "model")]
    reload_edit: reload::Edit,
    /// `reload`: seconds between two rewrites of `--config`.
    #[arg(long, default_value_t = 0.5)]
    reload_every: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn body(&self) -> anyhow::Result<Bytes> {
        Ok(match (&self.body, &self.body_file) {
            (Some(b), _) => Bytes::from(b.clone()),
            (None, Some(path)) => Bytes::from(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            ),
            (None, None) => Bytes::new(),
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let target = client::Target::new(&args.url, args.method.clone(), &args.headers, args.body()?)?
        .with_tls(&args.url, args.cacert.as_deref())?;
    let outcome = scenario::run(&args, target).await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcome.json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if outcome.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
