//! `engine`: one model replica.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use engine::{ServerSettings, Synthetic, SyntheticProfile};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendKind {
    /// No model: waits per its latency profile. For load and routing tests.
    Synthetic,
}

/// One model replica: prints `{"event":"ready","addr":...}` once it serves.
#[derive(Parser, Debug)]
#[command(name = "engine", version)]
struct Args {
    /// Address to bind; port 0 picks a free port (see the ready line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Which backend runs predictions.
    #[arg(long, value_enum, default_value = "synthetic")]
    backend: BackendKind,
    /// Sent back in the `x-replica-id` header, to tell replicas apart.
    #[arg(long)]
    replica_id: Option<String>,
    /// Synthetic backend: milliseconds every request costs.
    #[arg(long, default_value_t = 0)]
    fixed_ms: u64,
    /// Synthetic backend: extra milliseconds per input item.
    #[arg(long, default_value_t = 0)]
    per_item_ms: u64,
    /// Milliseconds of simulated model loading before the replica is ready.
    #[arg(long, default_value_t = 0)]
    load_delay_ms: u64,
    /// Milliseconds between events of a streamed (`"stream": true`) response.
    #[arg(long, default_value_t = 100)]
    stream_interval_ms: u64,
    /// Predictions run at once.
    #[arg(long, default_value_t = 1)]
    predict_concurrency: usize,
    /// Predictions that may wait for a running slot; beyond that, 429.
    #[arg(long, default_value_t = 16)]
    queue_size: usize,
    /// Dynamic batching: most inputs run together; 1 turns batching off.
    #[arg(long, default_value_t = 1)]
    max_batch_size: usize,
    /// Dynamic batching: milliseconds the first input waits for company.
    #[arg(long, default_value_t = 2)]
    max_queue_delay_ms: u64,
    /// Largest request body in bytes (413 beyond it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let backend: Arc<dyn engine::Backend> = match args.backend {
        BackendKind::Synthetic => Arc::new(Synthetic::new(SyntheticProfile {
            fixed: Duration::from_millis(args.fixed_ms),
            per_item: Duration::from_millis(args.per_item_ms),
        })),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {}: {e}", args.listen)))?;
    let metrics = engine::telemetry::install()
        .map_err(|e| std::io::Error::other(format!("installing the metrics recorder: {e}")))?;
    let settings = ServerSettings {
        replica_id: args.replica_id,
        max_body_bytes: args.max_body_bytes,
        load_delay: Duration::from_millis(args.load_delay_ms),
        drain: Duration::from_secs(args.drain_secs),
        stream_interval: Duration::from_millis(args.stream_interval_ms),
        predict_concurrency: args.predict_concurrency,
        queue_size: args.queue_size,
        batching: (args.max_batch_size > 1).then(|| engine::BatchSettings {
            max_batch_size: args.max_batch_size,
            max_queue_delay: Duration::from_millis(args.max_queue_delay_ms),
        }),
        metrics: Some(metrics),
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    engine::serve(listener, backend, settings, stop).await
}
