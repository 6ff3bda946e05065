//! Raw sections to the typed [`Config`]: defaults, ranges, formats and
//! cross-references. Every problem is collected; nothing stops at the first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) mod engine;
mod failures;
mod fleet;
mod models;
mod node;
mod queue;
mod rollout;

use crate::engine::EngineSettings;
use crate::error::Problem;
use crate::model::*;
use crate::path::ConfigPath;
use crate::raw::*;

/// Collects problems while converting; `None` results mean "already reported".
pub(crate) struct Checker<'e> {
    errors: &'e mut Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn error(&mut self, path: ConfigPath, message: impl Into<String>) {
        self.errors.push(Problem::at(path, message));
    }

    /// An integer setting within `min..=max`, or its default when absent.
    pub(crate) fn ranged(
        &mut self,
        path: &ConfigPath,
        field: &str,
        value: Option<i64>,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        let Some(value) = value else { return default };
        self.within(path, field, value, min, max).unwrap_or(default)
    }

    /// A required integer setting within `min..=max`; `None` when it is
    /// missing or out of range (both reported).
    pub(crate) fn required_ranged(
        &mut self,
        path: &ConfigPath,
        field: &str,
        value: Option<i64>,
        min: u32,
        max: u32,
    ) -> Option<u32> {
        let Some(value) = value else {
            self.error(path.key(field), format!("missing required key `{field}`"));
            return None;
        };
        self.within(path, field, value, min, max)
    }

    fn within(
        &mut self,
        path: &ConfigPath,
        field: &str,
        value: i64,
        min: u32,
        max: u32,
    ) -> Option<u32> {
        if value < i64::from(min) || value > i64::from(max) {
            let range = if max == u32::MAX {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.error(
                path.key(field),
                format!("`{field}` is {value}; it must be {range}"),
            );
            return None;
        }
        Some(value as u32)
    }

    pub(crate) fn required<'a>(
        &mut self,
        path: &ConfigPath,
        field: &str,
        value: &'a Option<String>,
    ) -> Option<&'a str> {
        if value.is_none() {
            self.error(path.key(field), format!("missing required key `{field}`"));
        }
        value.as_deref()
    }

    /// A CPU amount in cores (`> 0`, at most 1024) as thousandths of a core.
    pub(crate) fn cores(&mut self, path: &ConfigPath, field: &str, value: f64) -> Option<u32> {
        if value > 0.0 && value <= 1024.0 {
            return Some((value * 1000.0).round() as u32);
        }
        self.error(
            path.key(field),
            format!("`{field}` is {value}; it must be more than 0 and at most 1024 cores"),
        );
        None
    }

    fn socket_addr(&mut self, path: ConfigPath, text: Option<&str>, default: &str) -> SocketAddr {
        let fallback = default.parse().expect("default listener address is valid");
        let Some(text) = text else { return fallback };
        text.parse().unwrap_or_else(|_| {
            self.error(path, format!("`{text}` is not an `ip:port` address"));
            fallback
        })
    }
}

/// The fleet's shared document: a config without a node's sections.
pub(crate) fn validate_shared(mut raw: RawConfig, errors: &mut Vec<Problem>) -> Option<Config> {
    fleet::shared_only(&mut Checker { errors }, &raw);
    raw.fleet = None; // reported; not a node file either
    validate(raw, errors)
}

pub(crate) fn validate(mut raw: RawConfig, errors: &mut Vec<Problem>) -> Option<Config> {
    let mut c = Checker { errors };
    let root = ConfigPath::root();
    let fleet = raw
        .fleet
        .take()
        .map(|f| fleet::fleet(&mut c, &root.key("fleet"), f));
    if fleet.is_some() {
        fleet::node_file_only(&mut c, &raw);
    }

    let listeners = listeners(
        &mut c,
        &root.key("listeners"),
        raw.listeners.unwrap_or_default(),
    );
    let server = server(&mut c, &root.key("server"), raw.server.unwrap_or_default());
    let node = node::node(&mut c, &root.key("node"), raw.node.unwrap_or_default());

    let models_path = root.key("models");
    let mut models = Vec::with_capacity(raw.models.len());
    let mut model_ids: HashMap<String, usize> = HashMap::with_capacity(raw.models.len());
    for (i, raw_model) in raw.models.into_iter().enumerate() {
        let path = models_path.index(i);
        let Some(model) = models::model(&mut c, &path, raw_model) else {
            continue;
        };
        if let Some(first) = model_ids.insert(model.id.clone(), i) {
            c.error(
                path.key("id"),
                format!("duplicate model id `{}` (also models[{first}])", model.id),
            );
        }
        models.push(model);
    }

    let keys_path = root.key("api_keys");
    let mut api_keys = Vec::new();
    let mut key_names = HashSet::new();
    let mut digests = HashSet::new();
    for (i, raw_key) in raw.api_keys.into_iter().enumerate() {
        let path = keys_path.index(i);
        let Some(key) = raw_key.and_then(|k| api_key(&mut c, &path, k, &model_ids)) else {
            continue;
        };
        if !key_names.insert(key.name.clone()) {
            c.error(
                path.key("name"),
                format!("duplicate api key name `{}`", key.name),
            );
        }
        if !digests.insert(key.digest) {
            c.error(path.key("sha256"), "the same key digest is listed twice");
        }
        api_keys.push(key);
    }

    c.errors.is_empty().then_some(Config {
        listeners,
        server,
        api_keys,
        models,
        node,
        admin: admin(raw.admin.unwrap_or_default()),
        fleet,
    })
}

pub(crate) fn validate_engine_file(
    raw: RawEngineFile,
    errors: &mut Vec<Problem>,
) -> Option<EngineSettings> {
    let mut c = Checker { errors };
    let path = ConfigPath::root().key("engine");
    let Some(raw) = raw.engine else {
        c.error(ConfigPath::root(), "missing the [engine] table");
        return None;
    };
    engine::engine(&mut c, &path, raw, None).filter(|_| c.errors.is_empty())
}

/// `[admin]`: two switches, each with its default when absent (serde has
/// already refused anything but a boolean).
fn admin(raw: RawAdmin) -> AdminSettings {
    let defaults = AdminSettings::default();
    AdminSettings {
        api_may_set_paths: raw.api_may_set_paths.unwrap_or(defaults.api_may_set_paths),
        api_may_set_replica_addresses: raw
            .api_may_set_replica_addresses
            .unwrap_or(defaults.api_may_set_replica_addresses),
    }
}

fn listeners(c: &mut Checker<'_>, path: &ConfigPath, raw: RawListeners) -> Listeners {
    let predict = c.socket_addr(
        path.key("predict"),
        raw.predict.as_deref(),
        "127.0.0.1:8080",
    );
    let admin = c.socket_addr(path.key("admin"), raw.admin.as_deref(), "127.0.0.1:8081");
    if predict == admin && predict.port() != 0 {
        c.error(
            path.key("admin"),
            format!("admin and predict both listen on {admin}"),
        );
    }
    let tls = raw
        .tls
        .and_then(|raw| tls_listener(c, &path.key("tls"), raw));
    if let Some(tls) = &tls
        && tls.address.port() != 0
        && (tls.address == predict || tls.address == admin)
    {
        c.error(
            path.key("tls").key("address"),
            format!("another listener already listens on {}", tls.address),
        );
    }
    Listeners {
        predict,
        admin,
        tls,
    }
}

fn tls_listener(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: RawTlsListener,
) -> Option<TlsListener> {
    let address = c.socket_addr(
        path.key("address"),
        raw.address.as_deref(),
        "127.0.0.1:8443",
    );
    let mut file = |key: &str, value: Option<String>| match value {
        Some(p) if !p.is_empty() => Some(std::path::PathBuf::from(p)),
        _ => {
            c.error(
                path.key(key),
                format!("`{key}` is missing: a TLS listener needs a PEM certificate and key"),
            );
            None
        }
    };
    let cert = file("cert", raw.cert);
    let key = file("key", raw.key);
    Some(TlsListener {
        address,
        cert: cert?,
        key: key?,
    })
}

fn server(c: &mut Checker<'_>, path: &ConfigPath, raw: RawServer) -> ServerSettings {
    let int = |v: Option<u32>| v.map(i64::from);
    let threads = raw
        .threads
        .map(|t| c.ranged(path, "threads", Some(i64::from(t)), 1, 1, 256));
    ServerSettings {
        threads,
        grace_period: secs(c.ranged(
            path,
            "grace_period_secs",
            int(raw.grace_period_secs),
            30,
            0,
            3600,
        )),
        upstream_keepalive_pool_size: c.ranged(
            path,
            "upstream_keepalive_pool_size",
            int(raw.upstream_keepalive_pool_size),
            128,
            0,
            65536,
        ) as usize,
        upstream_connect_timeout: Duration::from_millis(u64::from(c.ranged(
            path,
            "upstream_connect_timeout_ms",
            int(raw.upstream_connect_timeout_ms),
            2000,
            1,
            600_000,
        ))),
        upstream_read_timeout: secs(c.ranged(
            path,
            "upstream_read_timeout_secs",
            int(raw.upstream_read_timeout_secs),
            600,
            1,
            86_400,
        )),
        upstream_idle_timeout: secs(c.ranged(
            path,
            "upstream_idle_timeout_secs",
            int(raw.upstream_idle_timeout_secs),
            20,
            1,
            3600,
        )),
        max_request_body_bytes: raw.max_request_body_bytes.unwrap_or(32 * 1024 * 1024),
        keepalive_timeout: secs(c.ranged(
            path,
            "keepalive_timeout_secs",
            int(raw.keepalive_timeout_secs),
            60,
            1,
            3600,
        )),
        client_header_timeout: secs(c.ranged(
            path,
            "client_header_timeout_secs",
            int(raw.client_header_timeout_secs),
            60,
            1,
            3600,
        )),
        client_body_timeout: secs(c.ranged(
            path,
            "client_body_timeout_secs",
            int(raw.client_body_timeout_secs),
            60,
            1,
            3600,
        )),
        max_request_head_bytes: c.ranged(
            path,
            "max_request_head_bytes",
            int(raw.max_request_head_bytes),
            65_536,
            1024,
            1_048_576,
        ) as usize,
        max_uri_bytes: c.ranged(
            path,
            "max_uri_bytes",
            int(raw.max_uri_bytes),
            8192,
            256,
            1_048_576,
        ) as usize,
        client_send_timeout: secs(c.ranged(
            path,
            "client_send_timeout_secs",
            int(raw.client_send_timeout_secs),
            60,
            1,
            3600,
        )),
        response_buffer_bytes: match raw.response_buffer_bytes {
            None => 1024 * 1024,
            Some(n) if n <= MAX_RESPONSE_BUFFER_BYTES => n as usize,
            Some(n) => {
                c.error(
                    path.key("response_buffer_bytes"),
                    format!("`response_buffer_bytes` is {n}; it must be at most {MAX_RESPONSE_BUFFER_BYTES} (1 GiB)"),
                );
                1024 * 1024
            }
        },
        request_timeout: secs(c.ranged(
            path,
            "request_timeout_secs",
            int(raw.request_timeout_secs),
            1200,
            1,
            86_400,
        )),
        upstream_first_byte_timeout: secs(c.ranged(
            path,
            "upstream_first_byte_timeout_secs",
            int(raw.upstream_first_byte_timeout_secs),
            600,
            1,
            86_400,
        )),
        max_connections: c.ranged(
            path,
            "max_connections",
            int(raw.max_connections),
            10_000,
            1,
            1_000_000,
        ) as usize,
        max_in_flight: c.ranged(
            path,
            "max_in_flight",
            int(raw.max_in_flight),
            10_000,
            1,
            1_000_000,
        ) as usize,
        tcp_keepalive: match c.ranged(
            path,
            "tcp_keepalive_secs",
            int(raw.tcp_keepalive_secs),
            60,
            0,
            7200,
        ) {
            0 => None,
            s => Some(secs(s)),
        },
        forwarded_for: match raw.forwarded_for.as_deref() {
            None | Some("replace") => ForwardedFor::Replace,
            Some("append") => ForwardedFor::Append,
            Some("off") => ForwardedFor::Off,
            Some(other) => {
                c.error(
                    path.key("forwarded_for"),
                    format!("unknown `forwarded_for` `{other}`: use replace, append or off"),
                );
                ForwardedFor::Replace
            }
        },
        expose_replica_id: raw.expose_replica_id.unwrap_or(false),
        max_failed_starts: c.ranged(
            path,
            "max_failed_starts",
            int(raw.max_failed_starts),
            5,
            1,
            1000,
        ),
        usage_interval: secs(c.ranged(
            path,
            "usage_interval_secs",
            int(raw.usage_interval_secs),
            60,
            1,
            3600,
        )),
        max_parked_bytes: match raw.max_parked_bytes {
            None => DEFAULT_MAX_PARKED_BYTES,
            Some(0) => {
                c.error(
                    path.key("max_parked_bytes"),
                    "`max_parked_bytes` is 0; it must be at least 1",
                );
                DEFAULT_MAX_PARKED_BYTES
            }
            Some(bytes) => bytes,
        },
        request_metrics: raw.request_metrics.unwrap_or(true),
        upgrade_socket: raw.upgrade_socket.map(std::path::PathBuf::from),
        access_log: access_log(
            c,
            &path.key("access_log"),
            raw.access_log.unwrap_or_default(),
        ),
    }
}

fn access_log(c: &mut Checker<'_>, path: &ConfigPath, raw: RawAccessLog) -> AccessLog {
    let mode = match raw.mode.as_deref() {
        None | Some("off") => AccessLogMode::Off,
        Some("sampled") => AccessLogMode::Sampled,
        Some("all") => AccessLogMode::All,
        Some(other) => {
            c.error(
                path.key("mode"),
                format!("unknown access log mode `{other}`: use off, sampled or all"),
            );
            AccessLogMode::Off
        }
    };
    let rate = raw.sample_rate.unwrap_or(0.01);
    let sample_per_million = if rate > 0.0 && rate <= 1.0 {
        ((rate * 1e6).round() as u32).max(1)
    } else {
        c.error(
            path.key("sample_rate"),
            format!("`sample_rate` is {rate}; it must be a fraction above 0 and at most 1"),
        );
        10_000
    };
    AccessLog {
        mode,
        sample_per_million,
        path: raw.path.map(std::path::PathBuf::from),
    }
}

/// 1 GiB.
const MAX_RESPONSE_BUFFER_BYTES: u64 = 1 << 30;

/// 64 MiB.
const DEFAULT_MAX_PARKED_BYTES: u64 = 64 * 1024 * 1024;

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn api_key(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: RawApiKey,
    model_ids: &HashMap<String, usize>,
) -> Option<ApiKey> {
    let name = c.required(path, "name", &raw.name);
    let digest = c
        .required(path, "sha256", &raw.sha256)
        .and_then(|hex_text| {
            let mut digest = [0u8; 32];
            match hex::decode_to_slice(hex_text, &mut digest) {
                Ok(()) => Some(digest),
                Err(_) => {
                    c.error(
                        path.key("sha256"),
                        "`sha256` must be 64 hex digits (see `gateway keys new`)",
                    );
                    None
                }
            }
        });
    let scope = match raw.scope {
        None => {
            c.error(
                path.key("scope"),
                "missing required key `scope` (\"all\", \"admin\" or a list of model ids)",
            );
            None
        }
        Some(RawScope::Word(w)) if w == "all" => Some(KeyScope::AllModels),
        Some(RawScope::Word(w)) if w == "admin" => Some(KeyScope::Admin),
        Some(RawScope::Word(w)) => {
            c.error(
                path.key("scope"),
                format!("unknown scope `{w}`: use \"all\", \"admin\" or a list of model ids"),
            );
            None
        }
        Some(RawScope::Models(ids)) => {
            for (i, id) in ids.iter().enumerate() {
                if !model_ids.contains_key(id) {
                    c.error(
                        path.key("scope").index(i),
                        format!("scope names unknown model `{id}`"),
                    );
                }
            }
            Some(KeyScope::Models(ids))
        }
    };
    Some(ApiKey {
        name: name?.to_owned(),
        digest: digest?,
        scope: scope?,
    })
}
