//! The typed, validated configuration. Defaults and ranges follow the hosted
//! platform's deployment settings (see `examples/gateway.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::resources::Resources;

mod failures;
mod fleet;

pub use failures::{OutlierDetection, RetryPolicy};
pub use fleet::{Fleet, NODE_SECTIONS, SHARED_SECTIONS};

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the gateway listens.
    pub listeners: Listeners,
    /// Process and upstream settings.
    pub server: ServerSettings,
    /// API keys, as digests.
    pub api_keys: Vec<ApiKey>,
    /// Models with their deployments and environments.
    pub models: Vec<Model>,
    /// What this machine offers the replicas the gateway starts on it.
    pub node: Node,
    /// What the management API may change (`[admin]`).
    pub admin: AdminSettings,
    /// The fleet this gateway belongs to (`[fleet]`); `None` = the file is
    /// the whole config.
    pub fleet: Option<Fleet>,
}

impl Config {
    /// Makes relative file paths (in deployments' engine settings and
    /// [`Node::engine_binary`]) relative to `base`, the config file's
    /// directory, instead of the process's working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for model in &mut self.models {
            for engine in model
                .deployments
                .iter_mut()
                .filter_map(|d| d.engine.as_mut())
            {
                engine.resolve_paths(base);
            }
        }
        let tls = self.listeners.tls.as_mut();
        let (cert, key) = tls.map_or((None, None), |t| (Some(&mut t.cert), Some(&mut t.key)));
        for path in [
            cert,
            key,
            self.node.engine_binary.as_mut(),
            self.server.access_log.path.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

impl Config {
    /// A fleet node's config: what `shared` (the fleet's document) says,
    /// with this node's own sections (`node`, the config from its file).
    pub fn joined(node: &Config, shared: Config) -> Config {
        Config {
            listeners: node.listeners.clone(),
            server: node.server.clone(),
            node: node.node.clone(),
            fleet: node.fleet.clone(),
            ..shared
        }
    }

    /// The model with this id.
    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }
}

/// What the management API may change (`[admin]`). Read from the file at
/// each API edit, so a hand edit of it applies at once, without a restart;
/// no API call changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    /// Whether API edits may set or change file paths: a deployment
    /// engine's `model`, `tokenizer` and `onnxruntime`. Default false: a
    /// local replica loads what they name (`onnxruntime` is a shared
    /// library it loads into its process), so an admin key could otherwise
    /// run any code on the host. Edits that keep the paths as they are
    /// are always allowed.
    pub api_may_set_paths: bool,
    /// Whether API edits may set or change static replicas' addresses,
    /// which the gateway health-checks and sends predictions to. Default
    /// true; false leaves them to hand edits too.
    pub api_may_set_replica_addresses: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            api_may_set_paths: false,
            api_may_set_replica_addresses: true,
        }
    }
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// Predict traffic. Default `127.0.0.1:8080`.
    pub predict: SocketAddr,
    /// Management API and health. Default `127.0.0.1:8081`.
    pub admin: SocketAddr,
    /// Predict traffic over TLS (`[listeners.tls]`), when configured.
    pub tls: Option<TlsListener>,
}

/// A predict listener that terminates TLS, offering HTTP/2 and HTTP/1.1 by
/// ALPN. The certificate and key are read again when either file changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// Where it listens.
    pub address: SocketAddr,
    /// PEM certificate chain, leaf first (relative to the config file).
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate (relative to the config file).
    pub key: PathBuf,
}

/// Process-wide settings of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Worker threads of the predict service; `None` = one per CPU.
    pub threads: Option<u32>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub grace_period: Duration,
    /// Idle keep-alive connections kept to each replica.
    pub upstream_keepalive_pool_size: usize,
    /// How long an idle connection to a replica is kept for reuse.
    pub upstream_idle_timeout: Duration,
    /// Timeout for opening a connection to a replica.
    pub upstream_connect_timeout: Duration,
    /// Longest silence allowed while reading a replica's response.
    pub upstream_read_timeout: Duration,
    /// Largest request body accepted (413 beyond it).
    pub max_request_body_bytes: u64,
    /// How long a client connection may wait for its next request (or a
    /// new one for its first) before it is closed.
    pub keepalive_timeout: Duration,
    /// How long a request head may take once its first byte came (408).
    pub client_header_timeout: Duration,
    /// Longest silence while a request body is read (408).
    pub client_body_timeout: Duration,
    /// Largest request head, request line and fields (431 beyond it).
    pub max_request_head_bytes: usize,
    /// Longest request target (414 beyond it).
    pub max_uri_bytes: usize,
    /// Longest a write to a client may stall: then the connection is
    /// closed (a client that stopped reading).
    pub client_send_timeout: Duration,
    /// Replica response bytes held for a client that reads slower than
    /// the replica sends, so that the replica's slot frees once its response
    /// is read; beyond it the gateway waits for the client.
    pub response_buffer_bytes: usize,
    /// Longest a request may take from its head to the end of its response
    /// (504 before the response began; cut after).
    pub request_timeout: Duration,
    /// Longest wait for a replica's response head once the request is sent.
    pub upstream_first_byte_timeout: Duration,
    /// Most client connections per listener. At the cap, the connection
    /// idle longest (between requests, or still waiting for its first head)
    /// is closed to admit a new one; requests in progress are never cut.
    pub max_connections: usize,
    /// Most predict requests the process holds at once, parked ones
    /// included (each holds memory); beyond it a request gets 503 with
    /// `Retry-After` before its body is read.
    pub max_in_flight: usize,
    /// TCP keepalive idle time on accepted connections; `None` = off.
    pub tcp_keepalive: Option<Duration>,
    /// What replicas get in `X-Forwarded-For`.
    pub forwarded_for: ForwardedFor,
    /// Pass the replica's `x-replica-id` response header to clients
    /// (default false: it names internals; on for debugging).
    pub expose_replica_id: bool,
    /// Consecutive failed starts (a replica that exits before it is ready)
    /// after which a local deployment is marked failed: it stops starting
    /// replicas and refuses requests at once, until its config changes.
    pub max_failed_starts: u32,
    /// How often usage records are appended beside the config file.
    pub usage_interval: Duration,
    /// The Unix socket a new gateway process (`gateway serve --upgrade`)
    /// takes the listening sockets over on; its local replicas go over the
    /// same path plus `.replicas`. Relative to the config file's directory;
    /// `None` = `<config file>.upgrade.sock` beside it.
    pub upgrade_socket: Option<PathBuf>,
    /// Global cap on the bytes (request head plus declared body) of all
    /// parked requests, across every deployment's activation queue; beyond
    /// it, new requests that would park get 429. Default 64 MiB, at least 1.
    pub max_parked_bytes: u64,
    /// Whether requests are counted in metrics and the recent-window
    /// summaries (default true; off only to measure what counting costs).
    pub request_metrics: bool,
    /// One JSON line per request (`[server.access_log]`).
    pub access_log: AccessLog,
}

/// What the gateway tells replicas about the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedFor {
    /// `replace` (default): `X-Forwarded-For` is the client's address alone;
    /// what the client sent in it (or in `Forwarded`) is dropped. For a
    /// gateway that clients reach directly.
    #[default]
    Replace,
    /// `append`: the client's address is appended to the `X-Forwarded-For`
    /// it sent. Only behind a proxy that sets the header itself.
    Append,
    /// `off`: neither the client's headers nor its address are passed.
    Off,
}

/// Which requests get an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogMode {
    /// `off` (default): none.
    #[default]
    Off,
    /// `sampled`: each request with probability `sample_rate`.
    Sampled,
    /// `all`: every request.
    All,
}

/// The access log: where it goes and which requests it records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessLog {
    /// Off, sampled or all.
    pub mode: AccessLogMode,
    /// Sampled mode: requests logged per million (from `sample_rate`, a
    /// fraction in (0, 1], default 0.01).
    pub sample_per_million: u32,
    /// The file lines are appended to (relative to the config file's
    /// directory); `None` = standard output.
    pub path: Option<PathBuf>,
}

impl AccessLog {
    /// Whether any request is logged.
    pub fn enabled(&self) -> bool {
        self.mode != AccessLogMode::Off
    }
}

/// The machine the gateway runs on, as capacity for the replicas it starts
/// itself (deployments with [`ReplicaSource::Local`]). `None` means: detect
/// it from the machine at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name in its fleet (`[node] name`); `None` = the host name.
    pub name: Option<String>,
    /// The address local replicas listen on and are reached at (`[node]
    /// replica_host`; default 127.0.0.1). In a fleet spanning hosts, an
    /// address the other gateways reach.
    pub replica_host: std::net::IpAddr,
    /// CPU in thousandths of a core; `None` = the machine's CPUs.
    pub cpu_millis: Option<u32>,
    /// Memory in MiB; `None` = the machine's memory.
    pub memory_mib: Option<u64>,
    /// Accelerator types (e.g. `L4`) and how many of each, sorted by name;
    /// empty = none.
    pub accelerators: Vec<(String, u32)>,
    /// The `engine` binary local replicas run (relative paths are relative
    /// to the config file's directory once loaded with
    /// [`load_file`](crate::load_file)); `None` = the `engine` beside the
    /// gateway's own executable.
    pub engine_binary: Option<PathBuf>,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            name: None,
            replica_host: std::net::Ipv4Addr::LOCALHOST.into(),
            cpu_millis: None,
            memory_mib: None,
            accelerators: Vec::new(),
            engine_binary: None,
        }
    }
}

/// An API key, stored only as its SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who holds it; shown in logs instead of the key.
    pub name: String,
    /// SHA-256 of the key text.
    pub digest: [u8; 32],
    /// What it may call.
    pub scope: KeyScope,
}

/// What an API key may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// Predict on every model, and the management API.
    Admin,
    /// Predict on every model.
    AllModels,
    /// Predict on these model ids only.
    Models(Vec<String>),
}

impl KeyScope {
    /// Whether this scope allows predict calls to `model_id`.
    pub fn allows_model(&self, model_id: &str) -> bool {
        match self {
            KeyScope::Admin | KeyScope::AllModels => true,
            KeyScope::Models(ids) => ids.iter().any(|id| id == model_id),
        }
    }
}

/// A model: its deployments and the environments that point at them.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Id used in `model-{id}` host names: lowercase letters and digits.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its deployments, at most one of them a development deployment.
    pub deployments: Vec<Deployment>,
    /// Its environments; `production` is always present.
    pub environments: Vec<Environment>,
}

impl Model {
    /// The deployment with this id.
    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// The environment with this name.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }
}

/// Regular (immutable, autoscaled) or development (one replica at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentKind {
    /// A persistent deployment.
    Regular,
    /// The model's mutable development deployment.
    Development,
}

/// One servable version of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Stable id used by `/deployment/{id}/predict` and the API.
    pub id: String,
    /// Display name; `deployment-N` by default.
    pub name: String,
    /// Regular or development.
    pub kind: DeploymentKind,
    /// Inactive deployments keep their config, run no replica and answer 404.
    pub active: bool,
    /// What one replica needs.
    pub resources: Resources,
    /// Requests one replica runs at once. Default 1.
    pub predict_concurrency: u32,
    /// Replica-count settings.
    pub autoscaling: Autoscaling,
    /// Where replicas come from.
    pub replicas: ReplicaSource,
    /// How a replica of it runs, for provisioners that start replicas;
    /// always set when `replicas` is [`ReplicaSource::Local`].
    pub engine: Option<crate::engine::EngineSettings>,
    /// Its activation queue: where requests wait for replica capacity.
    pub queue: QueueSettings,
    /// Largest request body it accepts (413 beyond it); default the
    /// `[server]` limit.
    pub max_request_body_bytes: Option<u64>,
    /// Replica paths reachable through `/sync/...`. Default `["/v1/*"]`.
    pub sync_routes: SyncRoutes,
    /// When a replica is taken out of routing for what live traffic shows.
    pub outlier_detection: OutlierDetection,
    /// When a failed attempt is tried again on another replica.
    pub retry: RetryPolicy,
}

/// The replica paths a deployment lets clients reach through
/// `/sync/...`: exact paths, or prefixes ending in `/*` (`/v1/*` matches
/// `/v1/embeddings` and `/v1`). The replica's own surface (`/info`,
/// `/metrics`, `/health` and below) is never reachable, whatever is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRoutes(Vec<String>);

impl Default for SyncRoutes {
    fn default() -> Self {
        Self(vec!["/v1/*".to_owned()])
    }
}

impl SyncRoutes {
    /// Routes as written; each is checked by [`SyncRoutes::problem`] first.
    pub fn new(routes: Vec<String>) -> Self {
        Self(routes)
    }

    /// The routes as written.
    pub fn routes(&self) -> &[String] {
        &self.0
    }

    /// What is wrong with `route` as an entry, if anything.
    pub fn problem(route: &str) -> Option<&'static str> {
        let exact = route.strip_suffix("/*").unwrap_or(route);
        if !route.starts_with('/') {
            Some("must start with `/`")
        } else if exact.contains(['*', '?', '#']) {
            Some("may contain `*` only as a final `/*`")
        } else if exact.split('/').any(|s| s == ".." || s == ".") {
            Some("may not contain `.` or `..` segments")
        } else if is_replica_internal(exact) || (route.ends_with("/*") && exact.is_empty()) {
            Some("would expose the replica's own /info, /metrics or /health routes")
        } else {
            None
        }
    }

    /// Whether a client may reach `path` (the replica path, without the
    /// query) through `/sync/...`.
    pub fn allows(&self, path: &str) -> bool {
        // Matched as the replica's router will see it: servers that decode
        // percent-escapes before routing would take `/%69nfo` for `/info`.
        let decoded = percent_decoded(path);
        let path = decoded.as_deref().unwrap_or(path);
        if is_replica_internal(path) || path.split('/').any(|s| s == ".." || s == ".") {
            return false;
        }
        self.0.iter().any(|route| match route.strip_suffix("/*") {
            Some(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            None => path == route,
        })
    }
}

/// `path` with its percent-escapes decoded, if it has any (`None`: it
/// has none, or they do not decode to UTF-8, which no route matches then:
/// an empty string is returned instead).
fn percent_decoded(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8(out).unwrap_or_default())
}

/// The replica's own routes, never passed through: its identity and
/// files (`/info`), its metrics and its health probes. Compared without
/// regard to case or a trailing slash, so that no spelling slips past.
fn is_replica_internal(path: &str) -> bool {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    ["info", "metrics", "health"]
        .iter()
        .any(|internal| first.eq_ignore_ascii_case(internal))
}

/// A deployment's activation queue. Parked requests wait in a FIFO for a
/// replica with spare concurrency (e.g. while the deployment scales up from
/// zero). Past `max_length` parked requests, the next one gets 429; a
/// request parked longer than `timeout` gets 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Most requests parked at once; 0 = never park. Default 1000, 0-1000000.
    pub max_length: u32,
    /// Longest a request stays parked (then 503). Default 60 s, 1-3600 s.
    pub timeout: Duration,
    /// Whether requests park when every ready replica is busy.
    pub backpressure: Backpressure,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_length: 1000,
            timeout: Duration::from_secs(60),
            backpressure: Backpressure::QueueOnFull,
        }
    }
}

/// What happens to a request when every ready replica of its deployment is
/// at its concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// `QUEUE_ON_FULL` (default): park it until a replica has a free slot.
    #[default]
    QueueOnFull,
    /// `REJECT_ON_FULL`: answer 429 at once, instead of parking, when
    /// every ready replica is at its concurrency limit.
    RejectOnFull,
}

/// Autoscaling settings (units: replicas, seconds, percent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscaling {
    /// Lowest replica count; 0 scales to zero. Default 0.
    pub min_replica: u32,
    /// Highest replica count. Default 1.
    pub max_replica: u32,
    /// Seconds over which in-flight requests are averaged. Default 60, 10-3600.
    pub autoscaling_window: u32,
    /// Seconds load must stay low before each scale-down. Default 900, 0-3600.
    pub scale_down_delay: u32,
    /// Most percent of replicas removed per scale-down step. Default 50, 1-50.
    pub max_scale_down_rate: u32,
    /// In-flight requests per replica the autoscaler aims for. Default 1.
    pub concurrency_target: u32,
    /// Share of `concurrency_target` to use before scaling up. Default 70, 1-100.
    pub target_utilization_percentage: u32,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Self {
            min_replica: 0,
            max_replica: 1,
            autoscaling_window: 60,
            scale_down_delay: 900,
            max_scale_down_rate: 50,
            concurrency_target: 1,
            target_utilization_percentage: 70,
        }
    }
}

/// Where a deployment's replicas come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaSource {
    /// Replicas are engine processes the gateway starts on this machine,
    /// from the deployment's `engine` table (the default when a deployment
    /// has no `replicas` key).
    Local,
    /// Fixed, externally run replicas.
    Static {
        /// `host:port` of each replica.
        addresses: Vec<SocketAddr>,
    },
}

/// What happens to an environment's previous deployment after a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupStrategy {
    /// Scale it to zero replicas (default).
    ScaleToZero,
    /// Leave it as it is.
    Keep,
    /// Deactivate it.
    Deactivate,
}

/// How promotions into an environment behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Promotion {
    /// What happens to the previous deployment. Default SCALE_TO_ZERO.
    pub cleanup_strategy: CleanupStrategy,
    /// Move traffic gradually (canary) instead of at once. Default false.
    pub ramp_up: bool,
    /// Seconds over which a ramp-up moves traffic, in 10 stages. Default 600.
    pub ramp_up_duration: u32,
    /// Cancels a rollout into this environment when the new deployment does
    /// worse than the old one; `None` (default) = no automatic rollback.
    pub rollback: Option<RollbackGuard>,
}

impl Default for Promotion {
    fn default() -> Self {
        Self {
            cleanup_strategy: CleanupStrategy::ScaleToZero,
            ramp_up: false,
            ramp_up_duration: 600,
            rollback: None,
        }
    }
}

/// Cancels a rollout automatically when the new deployment does worse than the old one over the current stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollbackGuard {
    /// Most the new deployment's error rate may exceed the old one's, as a
    /// fraction (0.05 = 5 percentage points). Default 0.05, 0-1 (written
    /// `max_error_rate_increase_pct`, 0-100).
    pub max_error_rate_increase: f64,
    /// Most the new deployment's p99 latency may exceed the old one's.
    /// Default 250 ms, 0-600000 ms.
    pub max_p99_increase: Duration,
    /// Requests each side must have answered in the stage before they are
    /// compared. Default 50, 1-1000000.
    pub min_requests: u32,
}

impl Default for RollbackGuard {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.05,
            max_p99_increase: Duration::from_millis(250),
            min_requests: 50,
        }
    }
}

/// A canary rollout in progress: traffic moves from the environment's
/// deployment to `deployment` in 10 equal stages over `duration`, starting at `started_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The deployment traffic moves to: active, of the same model, not the
    /// one the environment serves.
    pub deployment: String,
    /// When the rollout started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// How long the whole rollout takes; 1 s to 24 h, whole seconds.
    pub duration: Duration,
}

/// A stable endpoint pointing at one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// `production` or a custom name.
    pub name: String,
    /// The deployment it serves; `None` until one is promoted into it.
    pub deployment: Option<String>,
    /// Settings applied to the deployment it serves, once promoted.
    pub autoscaling: Option<Autoscaling>,
    /// Promotion behaviour.
    pub promotion: Promotion,
    /// A canary rollout from `deployment` to another deployment, in progress.
    pub rollout: Option<Rollout>,
}

/// The environment every model has.
pub const PRODUCTION: &str = "production";
