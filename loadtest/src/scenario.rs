//! The named scenarios: how each one shapes the run (its phases, what it
//! counts, what runs beside the load) and what it adds to the report.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::ValueEnum;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Args;
use crate::client::Target;
use crate::load::{self, Load};
use crate::schedule::{Phase, Schedule};
use crate::stats::Stats;
use crate::{reload, report, scale_from_zero};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Closed loop, or open loop at `--rate`.
    Steady,
    /// Open loop at `--rate`, then at `--burst-rate`.
    Burst,
    /// `--requests` at once; time to first byte of each.
    ScaleFromZero,
    /// Steady load; responses per value of `--count-header`.
    Canary,
    /// Steady load while `--config` is rewritten; fails on any failure.
    Reload,
}

impl Scenario {
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// The results, and whether the run passes (its exit status).
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) json: Value,
    pub(crate) pass: bool,
}

fn positive(what: &str, value: f64) -> anyhow::Result<f64> {
    ensure!(
        value.is_finite() && value > 0.0,
        "{what} must be a positive number, not {value}"
    );
    Ok(value)
}

/// The warm-up, then the measured phases.
fn phases(args: &Args) -> anyhow::Result<Vec<Phase>> {
    positive("--duration", args.duration)?;
    ensure!(
        args.warmup >= 0.0,
        "--warmup must not be negative, not {}",
        args.warmup
    );
    let rate = args.rate.map(|r| positive("--rate", r)).transpose()?;
    let phase = |name, rate, secs, measured| Phase {
        name,
        rate,
        secs,
        measured,
    };
    let mut phases = vec![phase("warmup", rate, args.warmup, false)];
    let burst_flags = args.burst_rate.is_some() || args.burst_at.is_some();
    ensure!(
        args.scenario == Scenario::Burst || !burst_flags,
        "--burst-rate and --burst-at need --scenario burst"
    );
    if args.scenario == Scenario::Burst {
        let low = rate.context("burst needs --rate (before the step)")?;
        let high = positive(
            "--burst-rate",
            args.burst_rate.context("burst needs --burst-rate")?,
        )?;
        let at = args.burst_at.unwrap_or(args.duration / 2.0);
        ensure!(
            at > 0.0 && at < args.duration,
            "--burst-at must be within the duration (0 < {at} < {})",
            args.duration
        );
        phases.push(phase("low", Some(low), at, true));
        phases.push(phase("high", Some(high), args.duration - at, true));
    } else {
        phases.push(phase("steady", rate, args.duration, true));
    }
    Ok(phases)
}

pub(crate) async fn run(args: &Args, target: Target) -> anyhow::Result<Outcome> {
    ensure!(args.connections > 0, "--connections must be at least 1");
    if args.scenario == Scenario::ScaleFromZero {
        return fire(args, target).await;
    }
    let config = match (args.scenario, &args.config) {
        (Scenario::Reload, Some(path)) => {
            ensure!(path.is_file(), "--config {} is not a file", path.display());
            Some(path.clone())
        }
        (Scenario::Reload, None) => bail!("reload needs --config (the gateway's config file)"),
        (_, Some(_)) => bail!("--config needs --scenario reload"),
        (_, None) => None,
    };
    let load = Arc::new(Load {
        target,
        schedule: Schedule::new(phases(args)?),
        connections: args.connections,
        grace: Duration::from_secs_f64(positive("--grace", args.grace)?),
        count_header: (args.scenario == Scenario::Canary).then(|| args.count_header.clone()),
        start: Instant::now(),
        next: AtomicU64::new(0),
    });
    let rewriter = match config {
        Some(path) => {
            let every = Duration::from_secs_f64(positive("--reload-every", args.reload_every)?);
            Some(tokio::spawn(reload::rewrite_every(
                path,
                args.reload_edit,
                every,
                load.start + load.schedule.measure_from(),
                load.start + load.schedule.end(),
            )))
        }
        None => None,
    };
    let per_phase = load::run(Arc::clone(&load)).await?;
    let rewrites = match rewriter {
        Some(task) => Some(task.await??),
        None => None,
    };
    Ok(report_load(args, &load.schedule, &per_phase, rewrites))
}

/// The summary of a sustained-load scenario, and its extras.
fn report_load(
    args: &Args,
    schedule: &Schedule,
    per_phase: &[Stats],
    rewrites: Option<u64>,
) -> Outcome {
    let measured: Vec<(usize, &Phase)> = schedule
        .phases()
        .enumerate()
        .filter(|(_, p)| p.measured)
        .collect();
    let mut total = Stats::default();
    for (i, _) in &measured {
        total.merge(&per_phase[*i]);
    }

    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_owned(),
    };
    println!(
        "{} {} x {} connections, {mode}, {:.1} s (+{:.1} s warm-up), scenario {}",
        args.method,
        args.url,
        args.connections,
        args.duration,
        args.warmup,
        args.scenario.name()
    );
    report::print_stats("total", &total, args.duration);
    let mut json = report::stats_json(&total, args.duration);
    json.insert("url".into(), json!(args.url.to_string()));
    json.insert("scenario".into(), json!(args.scenario.name()));
    json.insert(
        "mode".into(),
        json!(if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }),
    );
    json.insert("target_rate".into(), json!(args.rate));
    json.insert("connections".into(), json!(args.connections));
    json.insert("duration_s".into(), json!(args.duration));
    if args.rate.is_some() {
        let scheduled: u64 = measured.iter().map(|(i, _)| schedule.count(*i)).sum();
        json.insert("scheduled".into(), json!(scheduled));
    }
    let mut pass = true;
    match args.scenario {
        Scenario::Burst => {
            let phases = measured
                .iter()
                .map(|(i, phase)| phase_report(phase, &per_phase[*i], schedule.count(*i)))
                .collect();
            json.insert("burst_rate".into(), json!(args.burst_rate));
            json.insert("phases".into(), Value::Array(phases));
        }
        Scenario::Canary => {
            report::print_counts(args.count_header.as_str(), &total.header_values);
            let (counts, fractions) = report::counts_json(&total.header_values);
            json.insert("count_header".into(), json!(args.count_header.as_str()));
            json.insert("counts".into(), counts);
            json.insert("fractions".into(), fractions);
        }
        Scenario::Reload => {
            let rewrites = rewrites.unwrap_or(0);
            println!(
                "reload     {rewrites} rewrites ({:?}) of {} every {} s",
                args.reload_edit,
                args.config
                    .as_deref()
                    .unwrap_or_else(|| "".as_ref())
                    .display(),
                args.reload_every
            );
            json.insert("config".into(), json!(args.config));
            json.insert("reload_every_s".into(), json!(args.reload_every));
            json.insert(
                "reload_edit".into(),
                json!(format!("{:?}", args.reload_edit).to_lowercase()),
            );
            json.insert("rewrites".into(), json!(rewrites));
            pass = total.failed() == 0;
            if !pass {
                eprintln!(
                    "loadtest: {} requests failed while the config was reloaded",
                    total.failed()
                );
            }
        }
        Scenario::Steady | Scenario::ScaleFromZero => {}
    }
    Outcome {
        json: Value::Object(json),
        pass,
    }
}

/// Prints one phase's summary; its JSON.
fn phase_report(phase: &Phase, stats: &Stats, scheduled: u64) -> Value {
    let label = format!("{} {}/s", phase.name, phase.rate.unwrap_or_default());
    report::print_stats(&label, stats, phase.secs);
    let mut json = report::stats_json(stats, phase.secs);
    json.insert("name".into(), json!(phase.name));
    json.insert("rate".into(), json!(phase.rate));
    json.insert("duration_s".into(), json!(phase.secs));
    json.insert("scheduled".into(), json!(scheduled));
    Value::Object(json)
}

async fn fire(args: &Args, target: Target) -> anyhow::Result<Outcome> {
    ensure!(args.requests > 0, "--requests must be at least 1");
    let limit = Duration::from_secs_f64(positive("--timeout", args.timeout)?);
    let fired = scale_from_zero::fire(Arc::new(target), args.requests, limit).await;
    let ttfb_summary = report::sorted_summary_us(&fired.ttfb);
    let s = &fired.stats;
    println!(
        "{} {}: {} requests fired at once, scenario scale-from-zero",
        args.method, args.url, args.requests
    );
    println!(
        "answered   {} of {}, 2xx {}, failed {}",
        s.responses(),
        args.requests,
        s.ok(),
        s.failed()
    );
    println!(
        "ttfb       first {} us  p50 {} us  p90 {} us  max {} us",
        fired.ttfb.first().map_or(0, |d| d.as_micros()),
        ttfb_summary["p50"],
        ttfb_summary["p90"],
        ttfb_summary["max"]
    );
    println!("statuses   {:?}", s.statuses);
    if !s.errors.is_empty() {
        println!("errors     {:?}", s.errors);
    }
    let json = json!({
        "url": args.url.to_string(),
        "scenario": args.scenario.name(),
        "requests": s.responses(),
        "fired": args.requests,
        "ok": s.ok(),
        "failed": s.failed(),
        "statuses": s.statuses,
        "errors": s.errors,
        "ttfb_us": fired.ttfb.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(),
        "ttfb_summary_us": ttfb_summary,
        "latency_us": {
            "p50": s.latency_us.value_at_quantile(0.5),
            "p90": s.latency_us.value_at_quantile(0.9),
            "max": s.latency_us.max(),
        },
    });
    Ok(Outcome { json, pass: true })
}
