//! Raw sections to the typed [`Config`]: defaults, ranges, formats and
//! cross-references. Every problem is collected; nothing stops at the first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Problem;
use crate::model::*;
use crate::path::ConfigPath;
use crate::raw::*;
use crate::resources::Resources;

/// Collects problems while converting; `None` results mean "already reported".
struct Checker<'e> {
    errors: &'e mut Vec<Problem>,
}

impl Checker<'_> {
    fn error(&mut self, path: ConfigPath, message: impl Into<String>) {
        self.errors.push(Problem::at(path, message));
    }

    /// An integer setting within `min..=max`, or its default when absent.
    fn ranged(
        &mut self,
        path: &ConfigPath,
        field: &str,
        value: Option<i64>,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        let Some(value) = value else { return default };
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
            return default;
        }
        value as u32
    }

    fn required<'a>(
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

    fn socket_addr(&mut self, path: ConfigPath, text: Option<&str>, default: &str) -> SocketAddr {
        let fallback = default.parse().expect("default listener address is valid");
        let Some(text) = text else { return fallback };
        text.parse().unwrap_or_else(|_| {
            self.error(path, format!("`{text}` is not an `ip:port` address"));
            fallback
        })
    }
}

pub(crate) fn validate(raw: RawConfig, errors: &mut Vec<Problem>) -> Option<Config> {
    let mut c = Checker { errors };
    let root = ConfigPath::root();

    let listeners = listeners(
        &mut c,
        &root.key("listeners"),
        raw.listeners.unwrap_or_default(),
    );
    let server = server(&mut c, &root.key("server"), raw.server.unwrap_or_default());

    let models_path = root.key("models");
    let mut models = Vec::with_capacity(raw.models.len());
    let mut model_ids: HashMap<String, usize> = HashMap::with_capacity(raw.models.len());
    for (i, raw_model) in raw.models.into_iter().enumerate() {
        let path = models_path.index(i);
        let Some(model) = model(&mut c, &path, raw_model) else {
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
    })
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
    Listeners { predict, admin }
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
        max_request_body_bytes: raw.max_request_body_bytes.unwrap_or(32 * 1024 * 1024),
    }
}

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

fn model(c: &mut Checker<'_>, path: &ConfigPath, raw: RawModel) -> Option<Model> {
    let header = raw.header?;
    let id = c.required(path, "id", &header.id).map(str::to_owned);
    if let Some(id) = &id
        && !is_model_id(id)
    {
        c.error(path.key("id"), format!("model id `{id}` must be 1-57 lowercase letters or digits (it is used in the host name `model-{{id}}`)"));
    }
    let name = header
        .name
        .clone()
        .or_else(|| id.clone())
        .unwrap_or_default();

    let mut deployments = Vec::with_capacity(raw.deployments.len());
    let mut deployment_ids = HashSet::new();
    let mut development: Option<usize> = None;
    for (i, raw_deployment) in raw.deployments.into_iter().enumerate() {
        let path = path.key("deployments").index(i);
        let Some(d) = raw_deployment.and_then(|d| deployment(c, &path, i, d)) else {
            continue;
        };
        if !deployment_ids.insert(d.id.clone()) {
            c.error(
                path.key("id"),
                format!("duplicate deployment id `{}` in this model", d.id),
            );
        }
        if d.kind == DeploymentKind::Development {
            if let Some(first) = development {
                c.error(
                    path.key("kind"),
                    format!("a model has at most one development deployment (deployments[{first}] is one)"),
                );
            }
            development = Some(i);
        }
        deployments.push(d);
    }

    let mut environments: Vec<Environment> = Vec::with_capacity(raw.environments.len() + 1);
    for (i, raw_env) in raw.environments.into_iter().enumerate() {
        let path = path.key("environments").index(i);
        let Some(env) = raw_env.and_then(|e| environment(c, &path, e)) else {
            continue;
        };
        if environments.iter().any(|e| e.name == env.name) {
            let message = if env.name == PRODUCTION {
                "only the production environment may be named `production`".to_owned()
            } else {
                format!("duplicate environment name `{}`", env.name)
            };
            c.error(path.key("name"), message);
        }
        if let Some(target) = &env.deployment
            && !deployments.iter().any(|d| &d.id == target)
            && !deployment_ids.contains(target)
        {
            c.error(
                path.key("deployment"),
                format!(
                    "environment `{}` points at unknown deployment `{target}`",
                    env.name
                ),
            );
        }
        environments.push(env);
    }
    if !environments.iter().any(|e| e.name == PRODUCTION) {
        environments.insert(
            0,
            Environment {
                name: PRODUCTION.to_owned(),
                deployment: None,
                autoscaling: None,
                promotion: Promotion::default(),
            },
        );
    }
    Some(Model {
        id: id?,
        name,
        deployments,
        environments,
    })
}

fn deployment(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    index: usize,
    raw: RawDeployment,
) -> Option<Deployment> {
    let id = c.required(path, "id", &raw.id).map(str::to_owned);
    if let Some(id) = &id
        && !is_deployment_id(id)
    {
        c.error(path.key("id"), format!("deployment id `{id}` must be 1-64 letters, digits, `-` or `_`, and not `development` or `production`"));
    }
    let kind = match raw.kind.as_deref() {
        None | Some("regular") => DeploymentKind::Regular,
        Some("development") => DeploymentKind::Development,
        Some(other) => {
            c.error(
                path.key("kind"),
                format!("unknown deployment kind `{other}`: use \"regular\" or \"development\""),
            );
            DeploymentKind::Regular
        }
    };
    let default_name = match kind {
        DeploymentKind::Development => "development".to_owned(),
        DeploymentKind::Regular => format!("deployment-{}", index + 1),
    };
    let resources = resources(c, path, raw.instance_type.as_deref(), raw.resources);
    let predict_concurrency = c.ranged(
        path,
        "predict_concurrency",
        raw.predict_concurrency,
        1,
        1,
        10_000,
    );
    let autoscaling = autoscaling(
        c,
        &path.key("autoscaling"),
        raw.autoscaling.unwrap_or_default(),
    );
    if kind == DeploymentKind::Development && autoscaling.max_replica > 1 {
        c.error(
            path.key("autoscaling").key("max_replica"),
            format!(
                "a development deployment runs at most one replica; `max_replica` is {}",
                autoscaling.max_replica
            ),
        );
    }
    if autoscaling.concurrency_target > predict_concurrency {
        c.error(
            path.key("autoscaling").key("concurrency_target"),
            format!(
                "`concurrency_target` ({}) exceeds `predict_concurrency` ({predict_concurrency}): replicas could never reach it",
                autoscaling.concurrency_target
            ),
        );
    }
    let replicas = replicas(c, &path.key("replicas"), raw.replicas);
    Some(Deployment {
        id: id?,
        name: raw.name.unwrap_or(default_name),
        kind,
        active: raw.active.unwrap_or(true),
        resources: resources?,
        predict_concurrency,
        autoscaling,
        replicas: replicas?,
    })
}

fn resources(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    instance_type: Option<&str>,
    raw: Option<RawResources>,
) -> Option<Resources> {
    match (instance_type, raw) {
        (Some(_), Some(_)) => {
            c.error(
                path.key("resources"),
                "set either `instance_type` or `resources`, not both",
            );
            None
        }
        (Some(text), None) => Resources::from_instance_type(text)
            .map_err(|e| c.error(path.key("instance_type"), e))
            .ok(),
        (None, None) => Some(Resources::default()),
        (None, Some(raw)) => {
            let path = path.key("resources");
            let default = Resources::default();
            let cpu_millis = match raw.cpu {
                None => default.cpu_millis,
                Some(cpu) if cpu > 0.0 && cpu <= 1024.0 => (cpu * 1000.0).round() as u32,
                Some(cpu) => {
                    c.error(
                        path.key("cpu"),
                        format!("`cpu` is {cpu}; it must be more than 0 and at most 1024 cores"),
                    );
                    return None;
                }
            };
            let memory_mib = match raw.memory.as_deref().map(Resources::parse_memory) {
                None => default.memory_mib,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    c.error(path.key("memory"), e);
                    return None;
                }
            };
            let accelerator = match raw.accelerator.as_deref().map(Resources::parse_accelerator) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(e)) => {
                    c.error(path.key("accelerator"), e);
                    return None;
                }
            };
            Some(Resources {
                cpu_millis,
                memory_mib,
                accelerator,
            })
        }
    }
}

fn autoscaling(c: &mut Checker<'_>, path: &ConfigPath, raw: RawAutoscaling) -> Autoscaling {
    let d = Autoscaling::default();
    let max = u32::MAX;
    let a = Autoscaling {
        min_replica: c.ranged(
            path,
            "min_replica",
            raw.min_replica,
            d.min_replica,
            0,
            10_000,
        ),
        max_replica: c.ranged(
            path,
            "max_replica",
            raw.max_replica,
            d.max_replica,
            1,
            10_000,
        ),
        autoscaling_window: c.ranged(
            path,
            "autoscaling_window",
            raw.autoscaling_window,
            d.autoscaling_window,
            10,
            3600,
        ),
        scale_down_delay: c.ranged(
            path,
            "scale_down_delay",
            raw.scale_down_delay,
            d.scale_down_delay,
            0,
            3600,
        ),
        max_scale_down_rate: c.ranged(
            path,
            "max_scale_down_rate",
            raw.max_scale_down_rate,
            d.max_scale_down_rate,
            1,
            50,
        ),
        concurrency_target: c.ranged(
            path,
            "concurrency_target",
            raw.concurrency_target,
            d.concurrency_target,
            1,
            max,
        ),
        target_utilization_percentage: c.ranged(
            path,
            "target_utilization_percentage",
            raw.target_utilization_percentage,
            d.target_utilization_percentage,
            1,
            100,
        ),
    };
    if a.min_replica > a.max_replica {
        c.error(
            path.key("min_replica"),
            format!(
                "`min_replica` ({}) is greater than `max_replica` ({})",
                a.min_replica, a.max_replica
            ),
        );
    }
    a
}

fn replicas(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: Option<RawReplicas>,
) -> Option<ReplicaSource> {
    let Some(raw) = raw else {
        c.error(path.clone(), "missing `replicas` (e.g. `replicas = { source = \"static\", addresses = [\"127.0.0.1:9001\"] }`)");
        return None;
    };
    match raw.source.as_deref() {
        Some("static") => {}
        Some(other) => {
            c.error(
                path.key("source"),
                format!("unknown replica source `{other}`: use \"static\""),
            );
            return None;
        }
        None => {
            c.error(
                path.key("source"),
                "missing required key `source` (\"static\")",
            );
            return None;
        }
    }
    let mut addresses = Vec::new();
    for (i, text) in raw.addresses.unwrap_or_default().iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => addresses.push(addr),
            _ => c.error(
                path.key("addresses").index(i),
                format!("`{text}` is not an `ip:port` address"),
            ),
        }
    }
    Some(ReplicaSource::Static { addresses })
}

fn environment(c: &mut Checker<'_>, path: &ConfigPath, raw: RawEnvironment) -> Option<Environment> {
    let name = c.required(path, "name", &raw.name).map(str::to_owned);
    if let Some(name) = &name
        && !is_environment_name(name)
    {
        c.error(
            path.key("name"),
            format!("environment name `{name}` must be 1-64 lowercase letters, digits, `-` or `_`"),
        );
    }
    let autoscaling = raw
        .autoscaling
        .map(|a| autoscaling(c, &path.key("autoscaling"), a));
    let promotion = raw.promotion.unwrap_or_default();
    let promotion_path = path.key("promotion");
    let d = Promotion::default();
    let cleanup_strategy = match promotion.cleanup_strategy.as_deref() {
        None | Some("SCALE_TO_ZERO") => CleanupStrategy::ScaleToZero,
        Some("KEEP") => CleanupStrategy::Keep,
        Some("DEACTIVATE") => CleanupStrategy::Deactivate,
        Some(other) => {
            c.error(
                promotion_path.key("cleanup_strategy"),
                format!(
                    "unknown cleanup strategy `{other}`: use SCALE_TO_ZERO, KEEP or DEACTIVATE"
                ),
            );
            d.cleanup_strategy
        }
    };
    let promotion = Promotion {
        cleanup_strategy,
        ramp_up: promotion.ramp_up.unwrap_or(d.ramp_up),
        ramp_up_duration: c.ranged(
            &promotion_path,
            "ramp_up_duration",
            promotion.ramp_up_duration,
            d.ramp_up_duration,
            1,
            86_400,
        ),
    };
    Some(Environment {
        name: name?,
        deployment: raw.deployment,
        autoscaling,
        promotion,
    })
}

fn is_model_id(id: &str) -> bool {
    (1..=57).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_deployment_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && id != "development"
        && id != PRODUCTION
}

fn is_environment_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
