//! `engine`: one model replica.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use config::{EngineBackend, EngineSettings};
use engine::text::{TextBackend, TextModel};
use engine::watch::{ModelReloads, watch_model};
use engine::{Backend, Loader, ServerSettings, Synthetic};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

/// One model replica: prints `{"event":"ready","addr":...}` once it serves.
///
/// Settings come from `--config FILE` (an `[engine]` table, the same keys
/// as a deployment's `engine` table in the gateway's config) and from the
/// flags below, which override the file.
#[derive(Parser, Debug)]
#[command(name = "engine", version)]
struct Args {
    /// Address to bind; port 0 picks a free port (see the ready line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A TOML file with an `[engine]` table.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Sent back in the `x-replica-id` header, to tell replicas apart.
    #[arg(long)]
    replica_id: Option<String>,
    /// The model's name in the OpenAI (`/v1/models`) and KServe v2
    /// (`/v2/models/{name}`) APIs; default: the model file's directory
    /// name (`synthetic` for the synthetic backend).
    #[arg(long)]
    model_name: Option<String>,
    /// Largest request body in bytes (413 beyond it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// Milliseconds between events of a streamed (`"stream": true`) response.
    #[arg(long, default_value_t = 100)]
    stream_interval_ms: u64,
    /// Seconds a client has to send a whole request head, counted from
    /// the connection's start or the end of its previous response (so
    /// also how long a keep-alive connection may sit idle); then the
    /// connection is closed. Keep it above the gateway's
    /// `upstream_idle_timeout_secs` (20).
    #[arg(
        long,
        default_value_t = ServerSettings::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600),
    )]
    header_read_timeout_secs: u64,
    /// Most connections open at once; further ones wait in the listen
    /// backlog (not refused) until one closes.
    #[arg(
        long,
        default_value_t = ServerSettings::DEFAULT_MAX_CONNECTIONS,
        value_parser = at_least_one,
    )]
    max_connections: usize,
    /// Exit when stdin reaches end of file: a provisioner keeps the write
    /// end open, so the replica dies with it even if it is killed with
    /// SIGKILL.
    #[arg(long)]
    exit_on_stdin_eof: bool,
    #[command(flatten)]
    engine: EngineFlags,
}

/// `[engine]` keys as flags; each overrides the file. Defaults and ranges
/// are the config's (see `examples/replica.toml`).
#[derive(clap::Args, Debug, Default)]
struct EngineFlags {
    /// `onnx`, `tensorrt` or `synthetic` (default without --config: synthetic).
    #[arg(long)]
    backend: Option<String>,
    /// Model file (`.onnx`, or a TensorRT plan).
    #[arg(long)]
    model: Option<PathBuf>,
    /// `tokenizer.json` (default: beside the model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// `libonnxruntime.so` (default: $ORT_DYLIB_PATH, then the system's).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Longest input in tokens (default 256).
    #[arg(long)]
    max_tokens: Option<i64>,
    /// Threads per inference; 0 = one per core (default).
    #[arg(long)]
    threads: Option<i64>,
    /// Predictions run at once (default 1).
    #[arg(long)]
    predict_concurrency: Option<i64>,
    /// Predictions that may wait for a running slot; beyond that, busy: 503 with Retry-After (default 16).
    #[arg(long)]
    queue_size: Option<i64>,
    /// Dynamic batching: most inputs run together; 1 (default) = off.
    #[arg(long)]
    max_batch_size: Option<i64>,
    /// Dynamic batching: ms the first input waits for company (default 2).
    #[arg(long)]
    max_queue_delay_ms: Option<i64>,
    /// Most inputs in one request; more get 400 before they wait for a
    /// slot (default 256).
    #[arg(long)]
    max_inputs: Option<i64>,
    /// onnx, tensorrt: most tokens in one request, all inputs together;
    /// more get 400 before any model run (default 65536; at least
    /// --max-tokens).
    #[arg(long)]
    max_request_tokens: Option<i64>,
    /// Reload the model when its file changes.
    #[arg(long)]
    watch: bool,
    /// Synthetic: ms every batch costs.
    #[arg(long)]
    fixed_ms: Option<i64>,
    /// Synthetic: extra ms per input.
    #[arg(long)]
    per_item_ms: Option<i64>,
    /// Synthetic: up to this many random extra ms per batch.
    #[arg(long)]
    jitter_ms: Option<i64>,
    /// Synthetic: ms of simulated model loading before the replica is ready.
    #[arg(long)]
    load_delay_ms: Option<i64>,
    /// Synthetic: percent of predictions that fail with 500, at random (default 0).
    #[arg(long)]
    error_percent: Option<i64>,
}

impl EngineFlags {
    /// The flags that were given, as `[engine]` keys (checked, with their
    /// ranges, by the config's `[engine]` validation).
    fn table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
        let mut put = |key: &str, value: Option<toml::Value>| {
            if let Some(v) = value {
                t.insert(key.to_owned(), v);
            }
        };
        put("backend", self.backend.clone().map(toml::Value::String));
        put("model", self.model.as_ref().map(path));
        put("tokenizer", self.tokenizer.as_ref().map(path));
        put("onnxruntime", self.onnxruntime.as_ref().map(path));
        for (key, value) in [
            ("max_tokens", self.max_tokens),
            ("threads", self.threads),
            ("predict_concurrency", self.predict_concurrency),
            ("queue_size", self.queue_size),
            ("max_batch_size", self.max_batch_size),
            ("max_queue_delay_ms", self.max_queue_delay_ms),
            ("max_inputs", self.max_inputs),
            ("max_request_tokens", self.max_request_tokens),
            ("fixed_ms", self.fixed_ms),
            ("per_item_ms", self.per_item_ms),
            ("jitter_ms", self.jitter_ms),
            ("load_delay_ms", self.load_delay_ms),
            ("error_percent", self.error_percent),
        ] {
            put(key, value.map(toml::Value::Integer));
        }
        put("watch", self.watch.then_some(toml::Value::Boolean(true)));
        t
    }
}

/// A clap parser for a count that must be at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The file's settings (checked on their own first, so their errors name
/// its lines), with the flags laid over them and checked again.
fn settings(args: &Args) -> Result<EngineSettings, String> {
    let flags = args.engine.table();
    let mut engine = toml::Table::new();
    if let Some(file) = &args.config {
        let from_file = config::load_engine_file(file).map_err(|e| e.to_string())?;
        if flags.is_empty() {
            return Ok(from_file);
        }
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        let mut doc: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
        if let Some(toml::Value::Table(t)) = doc.remove("engine") {
            engine = t;
        }
        // The file's paths are relative to the file; the flags' to the cwd.
        let dir = file.parent().unwrap_or(std::path::Path::new("."));
        for key in ["model", "tokenizer", "onnxruntime"] {
            if let Some(toml::Value::String(p)) = engine.get_mut(key) {
                *p = dir.join(&*p).display().to_string();
            }
        }
    } else if !flags.contains_key("backend") {
        engine.insert("backend".into(), toml::Value::String("synthetic".into()));
    }
    engine.extend(flags);
    let mut doc = toml::Table::new();
    doc.insert("engine".into(), toml::Value::Table(engine));
    let origin = match &args.config {
        Some(file) => format!("{} with command-line flags", file.display()),
        None => "command-line flags".to_owned(),
    };
    config::load_engine_str(&doc.to_string(), &origin).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let args = Args::parse();
    let loaded = settings(&args);
    let settings = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(run(args, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connections the kernel queues before the server accepts them. The
/// default (128, as std) overflowed when a gateway released a burst of 200
/// parked requests onto a replica that had just started: the dropped SYNs
/// were retried a second later, adding 1 s to one request in ten.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn run(args: Args, engine: EngineSettings) -> std::io::Result<()> {
    let listener = listen(args.listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {}: {e}", args.listen)))?;
    let metrics = engine::telemetry::install()
        .map_err(|e| std::io::Error::other(format!("installing the metrics recorder: {e}")))?;
    {
        // Fold histogram samples into buckets between scrapes, so memory
        // stays flat when nobody scrapes.
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
    }
    let reloads = Arc::new(ModelReloads::default());
    let info = {
        let reloads = Arc::clone(&reloads);
        let model = match &engine.backend {
            EngineBackend::Onnx(m) | EngineBackend::TensorRt(m) => Some(m.model.clone()),
            EngineBackend::Synthetic(_) => None,
        };
        let watch = engine.watch;
        let settings = engine_info(&engine);
        Arc::new(move || {
            let mut info = json!({ "model": model, "watch": watch, "engine": settings });
            if watch
                && let (Some(info), serde_json::Value::Object(r)) =
                    (info.as_object_mut(), reloads.info())
            {
                info.extend(r);
            }
            info
        })
    };
    let model_name = args
        .model_name
        .unwrap_or_else(|| default_model_name(&engine.backend));
    let settings = ServerSettings {
        model_name,
        replica_id: args.replica_id,
        max_body_bytes: args.max_body_bytes,
        drain: Duration::from_secs(args.drain_secs),
        stream_interval: Duration::from_millis(args.stream_interval_ms),
        predict_concurrency: engine.predict_concurrency as usize,
        queue_size: engine.queue_size as usize,
        batching: (engine.max_batch_size > 1).then_some(engine::BatchSettings {
            max_batch_size: engine.max_batch_size as usize,
            max_queue_delay: engine.max_queue_delay,
        }),
        max_inputs: engine.max_inputs as usize,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        max_connections: args.max_connections,
        metrics: Some(metrics),
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stdin_closed = if args.exit_on_stdin_eof {
        Some(stdin_eof()?)
    } else {
        None
    };
    let stop = async move {
        let stdin_closed = async {
            match stdin_closed {
                // A dropped sender (the reader thread died) counts as closed.
                Some(closed) => {
                    let _ = closed.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            () = stdin_closed => log::info!("stdin closed: stopping"),
        }
    };
    engine::serve(listener, loader(engine, reloads), settings, info, stop).await
}

/// Reads stdin to its end (or a read error) on a thread of its own; the
/// receiver completes then.
fn stdin_eof() -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (closed, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("stdin-eof".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = closed.send(());
        })?;
    Ok(receiver)
}

/// The settings in effect, as `[engine]` keys, for `GET /info`.
fn engine_info(engine: &EngineSettings) -> serde_json::Value {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut info = json!({
        "backend": engine.backend.name(),
        "predict_concurrency": engine.predict_concurrency,
        "queue_size": engine.queue_size,
        "max_batch_size": engine.max_batch_size,
        "max_queue_delay_ms": ms(engine.max_queue_delay),
        "max_inputs": engine.max_inputs,
        "watch": engine.watch,
    });
    let backend = match &engine.backend {
        EngineBackend::Synthetic(p) => json!({
            "fixed_ms": ms(p.fixed),
            "per_item_ms": ms(p.per_item),
            "jitter_ms": ms(p.jitter),
            "load_delay_ms": ms(p.load_delay),
            "error_percent": p.error_percent,
        }),
        EngineBackend::Onnx(m) | EngineBackend::TensorRt(m) => json!({
            "model": m.model,
            "tokenizer": m.tokenizer,
            "onnxruntime": m.runtime_library,
            "max_tokens": m.max_tokens,
            "max_request_tokens": m.max_request_tokens,
            "threads": m.threads,
        }),
    };
    if let (Some(info), serde_json::Value::Object(backend)) = (info.as_object_mut(), backend) {
        info.extend(backend);
    }
    info
}

/// Loads the backend off the event loop (model loading is blocking work)
/// and starts the model watch when asked.
fn loader(engine: EngineSettings, reloads: Arc<ModelReloads>) -> Loader {
    Box::pin(async move {
        let backend = engine.backend.clone();
        if let EngineBackend::Synthetic(profile) = backend {
            tokio::time::sleep(profile.load_delay).await;
            return Ok(Arc::new(Synthetic::new(profile)) as Arc<dyn Backend>);
        }
        let name = backend.name();
        let load = backend.clone();
        let model = tokio::task::spawn_blocking(move || TextModel::load(&load))
            .await
            .map_err(|e| format!("loading panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        log::info!("{name} model loaded on {}", model.runtime());
        let text = Arc::new(
            TextBackend::new(name, model)
                .map_err(|e| format!("cannot start the model threads: {e}"))?,
        );
        if engine.watch {
            watch_model(Arc::clone(&text), backend, reloads).map_err(|e| e.to_string())?;
        }
        Ok(text as Arc<dyn Backend>)
    })
}

/// The model file's directory name (models live one per directory, beside
/// their tokenizer), else its file stem.
fn default_model_name(backend: &EngineBackend) -> String {
    match backend {
        EngineBackend::Onnx(m) | EngineBackend::TensorRt(m) => {
            let dir = m.model.parent().and_then(|d| d.file_name());
            dir.or_else(|| m.model.file_stem())
                .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned())
        }
        EngineBackend::Synthetic(_) => "synthetic".to_owned(),
    }
}
