//! The management REST API (JSON over HTTP on the admin listener, admin
//! keys only). Framework-free: [`Api::handle`] takes and returns `http`
//! types, so the gateway mounts it on Pingora and tests call it directly.
//!
//! Reads answer from the config file and the routing snapshot (replica
//! readiness), with the file's revision as `ETag`. Mutations go through
//! [`ConfigStore::edit`] (honouring `If-Match`), so the API and hand edits
//! change the same file and reach routing the same way.

use std::sync::Arc;

use bytes::Bytes;
use config::edit::{
    AutoscalingPatch, AutoscalingScope, Changed, ConfigDocument, DeploymentPatch, EditError,
    EnvironmentPatch, NewDeployment, NewEnvironment,
};
use config::{Config, Deployment, DeploymentKind, Environment, Model};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod views;

use tokio::time::Instant;
use views::{deployment_view, environment_view, metrics_view, model_view};

use crate::promotion::{PromotionError, Promotions};
use crate::store::{ConfigStore, Revision, StoreError};
use crate::usage::UsageLedger;
use routing::ReplicaCounts;
use routing::Routing;
use routing::snapshot::Snapshot;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The management API.
#[derive(Debug)]
pub struct Api {
    routing: Arc<Routing>,
    store: Arc<ConfigStore>,
    promotions: Arc<Promotions>,
    usage: Arc<UsageLedger>,
}

/// An error answer: status and message.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Stale { .. } => StatusCode::PRECONDITION_FAILED,
            StoreError::FileInvalid(_) | StoreError::Busy => StatusCode::CONFLICT,
            StoreError::Edit(edit) => return edit_failure(edit),
            StoreError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            StoreError::Fleet(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self(status, e.to_string())
    }
}

impl From<PromotionError> for Failure {
    fn from(e: PromotionError) -> Self {
        let status = match e {
            PromotionError::NoneInProgress(_) => StatusCode::NOT_FOUND,
            PromotionError::InProgress { .. } | PromotionError::Completing(_) => {
                StatusCode::CONFLICT
            }
        };
        Self(status, e.to_string())
    }
}

fn edit_failure(e: &EditError) -> Failure {
    let status = match e {
        EditError::NotFound(_) => StatusCode::NOT_FOUND,
        EditError::Conflict(_) => StatusCode::CONFLICT,
        EditError::Invalid(_) | EditError::BadRequest(_) | EditError::Protected(_) => {
            StatusCode::BAD_REQUEST
        }
    };
    Failure(status, e.to_string())
}

type Answer = Result<(StatusCode, Value, Option<Revision>), Failure>;

impl Api {
    /// An API over `store`'s file, reporting readiness from `routing` and
    /// usage from `usage`, starting `promotions`. Resumes the rollouts the
    /// config has in progress.
    pub fn new(
        routing: Arc<Routing>,
        store: Arc<ConfigStore>,
        usage: Arc<UsageLedger>,
        promotions: Arc<Promotions>,
    ) -> Self {
        promotions.resume(routing.load().config());
        Self {
            routing,
            store,
            promotions,
            usage,
        }
    }

    /// Answers one request. Authentication: an admin-scoped key.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Vec<u8>> {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match self.refusal(auth) {
            Some(refusal) => refusal,
            None => respond(self.route(&req).await),
        }
    }

    /// The answer (401, 403) to a request whose `Authorization` value is
    /// `authorization`, if it may not use the API. The listener asks before
    /// it reads a request body, so that no one without a key makes the
    /// gateway read (or wait for) one.
    pub fn refusal(&self, authorization: Option<&[u8]>) -> Option<Response<Vec<u8>>> {
        // Not async: the snapshot guard must not live across an await.
        let snapshot = self.routing.load();
        let refusal = match snapshot.keys().authenticate(authorization) {
            Err(e) => Failure::new(StatusCode::UNAUTHORIZED, e.to_string()),
            Ok(p) if !p.is_admin() => Failure::new(
                StatusCode::FORBIDDEN,
                "the management API needs an admin-scoped key",
            ),
            Ok(_) => return None,
        };
        Some(respond(Err(refusal)))
    }

    async fn route(&self, req: &Request<Bytes>) -> Answer {
        let path = req.uri().path().trim_end_matches('/');
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let if_match = req
            .headers()
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = req.body();
        let m = req.method();
        match parts.as_slice() {
            ["v1", "config"] if m == Method::GET => {
                let store = Arc::clone(&self.store);
                let (revision, errors) = blocking(move || store.status()).await??;
                let reloader = self.store.reloader();
                Ok((StatusCode::OK, json!({
                    "source": self.store.origin(),
                    "stale": self.store.stale(),
                    "leader": self.store.leader(),
                    "revision": revision.to_string(),
                    "file_errors": errors.map(|e| e.to_string()),
                    "applied_revisions": reloader.revision(),
                    "rejected_reloads": reloader.rejected(),
                }), Some(revision)))
            }
            ["v1", "usage"] if m == Method::GET => {
                let model = req.uri().query().and_then(|q| {
                    q.split('&').find_map(|kv| kv.strip_prefix("model=")).map(str::to_owned)
                });
                let usage = Arc::clone(&self.usage);
                let totals = blocking(move || usage.totals(model.as_deref())).await?
                    .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading usage records: {e}")))?;
                Ok((StatusCode::OK, json!({ "usage": totals }), None))
            }
            ["v1", "models"] if m == Method::GET => self.read(|doc, snap| {
                Ok(json!({ "models": doc.config().models.iter().map(|m| model_view(m, snap)).collect::<Vec<_>>() }))
            }).await,
            ["v1", "models", model] if m == Method::GET => {
                let model = model.to_string();
                self.read(move |doc, snap| Ok(model_view(find_model(doc.config(), &model)?, snap))).await
            }
            ["v1", "models", model, "deployments"] => match *m {
                Method::GET => {
                    let model = model.to_string();
                    self.read(move |doc, snap| {
                        let m = find_model(doc.config(), &model)?;
                        Ok(json!({ "deployments": m.deployments.iter().map(|d| deployment_view(m, d, snap)).collect::<Vec<_>>() }))
                    }).await
                }
                Method::POST => {
                    let new: NewDeployment = parse(body)?;
                    let model_id = model.to_string();
                    let ((id, m), rev) = self.edit_model(if_match, model, move |doc| doc.add_deployment(&model_id, new.clone())).await?;
                    Ok((StatusCode::CREATED, self.deployment_view(&m, &id)?, Some(rev)))
                }
                _ => Err(not_allowed()),
            },
            ["v1", "models", model, "deployments", dep] => match *m {
                Method::GET => {
                    let (model, dep) = (model.to_string(), dep.to_string());
                    self.read(move |doc, snap| {
                        let m = find_model(doc.config(), &model)?;
                        Ok(deployment_view(m, find_deployment(doc, m, &dep)?, snap))
                    }).await
                }
                Method::PATCH => {
                    let patch: DeploymentPatch = parse(body)?;
                    let (model_id, dep) = (model.to_string(), dep.to_string());
                    let (((id, changed), m), rev) = self.edit_model(if_match, model, move |doc| {
                        let id = doc.resolve_deployment(&model_id, &dep)?;
                        let changed = doc.update_deployment(&model_id, &id, patch.clone())?;
                        Ok((id, changed))
                    }).await?;
                    let view = json!({ "status": accepted(changed), "deployment": self.deployment_view(&m, &id)? });
                    Ok((StatusCode::OK, view, Some(rev)))
                }
                Method::DELETE => {
                    let (model, dep) = (model.to_string(), dep.to_string());
                    let ((), rev) = self.edit(if_match, move |doc| doc.delete_deployment(&model, &dep)).await?;
                    Ok((StatusCode::OK, json!({ "deleted": parts[4] }), Some(rev)))
                }
                _ => Err(not_allowed()),
            },
            ["v1", "models", model, "deployments", dep, "metrics"] if m == Method::GET => {
                Ok((StatusCode::OK, self.deployment_metrics(model, dep)?, None))
            }
            ["v1", "models", model, "environments", env, "metrics"] if m == Method::GET => {
                Ok((StatusCode::OK, self.environment_metrics(model, env)?, None))
            }
            ["v1", "models", model, "deployments", dep, action] if m == Method::PATCH || m == Method::POST => {
                self.deployment_action(req, model, dep, action, if_match).await
            }
            ["v1", "models", model, "environments"] => match *m {
                Method::GET => {
                    let model = model.to_string();
                    self.read(move |doc, snap| {
                        let m = find_model(doc.config(), &model)?;
                        Ok(json!({ "environments": m.environments.iter().map(|e| environment_view(m, e, snap)).collect::<Vec<_>>() }))
                    }).await.map(|(s, v, r)| (s, self.with_promotions(parts[2], v), r))
                }
                Method::POST => {
                    let new: NewEnvironment = parse(body)?;
                    let name = new.name.clone();
                    let model_id = model.to_string();
                    let (((), m), rev) = self.edit_model(if_match, model, move |doc| doc.add_environment(&model_id, new.clone())).await?;
                    Ok((StatusCode::CREATED, self.environment_view(&m, &name)?, Some(rev)))
                }
                _ => Err(not_allowed()),
            },
            ["v1", "models", model, "environments", env] => match *m {
                Method::GET => {
                    self.read(|doc, _| self.environment_view(find_model(doc.config(), model)?, env)).await
                }
                Method::PATCH => {
                    let patch: EnvironmentPatch = parse(body)?;
                    let (model_id, env_name) = (model.to_string(), env.to_string());
                    let ((changed, m), rev) = self.edit_model(if_match, model, move |doc| doc.update_environment(&model_id, &env_name, patch.clone())).await?;
                    let view = json!({ "status": accepted(changed), "environment": self.environment_view(&m, env)? });
                    Ok((StatusCode::OK, view, Some(rev)))
                }
                Method::DELETE => {
                    // Its deployment scales to zero (unless another serves it).
                    let (model_id, env_name) = (model.to_string(), env.to_string());
                    let (previous, rev) = self.edit(if_match, move |doc| delete_environment(doc, &model_id, &env_name)).await?;
                    // Only once the environment is gone: a refused delete
                    // (409 for production, 412 on a stale If-Match) leaves
                    // its promotion or rollout running.
                    self.promotions.cancel_if_running(model, env);
                    Ok((StatusCode::OK, json!({ "deleted": env, "deployment_scaled_to_zero": previous }), Some(rev)))
                }
                _ => Err(not_allowed()),
            },
            ["v1", "models", model, "environments", env, "promote"] if m == Method::POST => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    deployment_id: String,
                }
                let b: Body = parse(body)?;
                self.promote(model, env, &b.deployment_id, if_match).await
            }
            ["v1", "models", model, "environments", env, "cancel_promotion"] if m == Method::POST => {
                self.promotions.cancel(model, env)?;
                Ok((StatusCode::OK, json!({ "environment": env, "promotion": self.promotions.describe(model, env, None) }), None))
            }
            ["v1", ..] => Err(Failure::new(StatusCode::NOT_FOUND, format!("no such endpoint: {} {path}", req.method()))),
            _ => Err(Failure::new(StatusCode::NOT_FOUND, "not found")),
        }
    }

    async fn deployment_action(
        &self,
        req: &Request<Bytes>,
        model: &str,
        dep: &str,
        action: &str,
        if_match: Option<String>,
    ) -> Answer {
        let (model_id, dep_id) = (model.to_owned(), dep.to_owned());
        match (req.method(), action) {
            (&Method::PATCH, "autoscaling_settings") => {
                let patch: AutoscalingPatch = parse(req.body())?;
                let (changed, rev) = self
                    .edit(if_match, move |doc| {
                        let id = doc.resolve_deployment(&model_id, &dep_id)?;
                        doc.set_autoscaling(&model_id, AutoscalingScope::Deployment(id), patch)
                    })
                    .await?;
                Ok((
                    StatusCode::OK,
                    json!({ "status": accepted(changed) }),
                    Some(rev),
                ))
            }
            (&Method::POST, "activate" | "deactivate") => {
                let active = action == "activate";
                let (((id, changed), m), rev) = self
                    .edit_model(if_match, model, move |doc| {
                        let id = doc.resolve_deployment(&model_id, &dep_id)?;
                        let changed = doc.set_deployment_active(&model_id, &id, active)?;
                        Ok((id, changed))
                    })
                    .await?;
                let view = self.deployment_view(&m, &id)?;
                Ok((
                    StatusCode::OK,
                    json!({ "status": accepted(changed), "deployment": view }),
                    Some(rev),
                ))
            }
            (&Method::POST, "promote") => {
                #[derive(serde::Deserialize, Default)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    environment: Option<String>,
                }
                let b: Body = if req.body().is_empty() {
                    Body::default()
                } else {
                    parse(req.body())?
                };
                let env = b.environment.unwrap_or_else(|| "production".to_owned());
                self.promote(model, &env, dep, if_match).await
            }
            _ => Err(Failure::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {} .../{action}", req.method()),
            )),
        }
    }

    /// Starts a promotion; a development deployment first becomes a new
    /// persistent deployment, which is what gets promoted. Every refusal
    /// (409 while a promotion into the environment runs, 412 on a stale
    /// `If-Match`, 404, 409 for an inactive deployment) comes before that
    /// copy is written.
    async fn promote(&self, model: &str, env: &str, dep: &str, if_match: Option<String>) -> Answer {
        let starting = self.promotions.begin(model, env).await?;
        let (model_id, env_name, dep_id) = (model.to_owned(), env.to_owned(), dep.to_owned());
        let (target, rev) = self
            .edit(if_match, move |doc| {
                promotion_target(doc, &model_id, &env_name, &dep_id)
            })
            .await?;
        starting.start(&target);
        Ok((
            StatusCode::ACCEPTED,
            json!({ "environment": env, "promotion": self.promotions.describe(model, env, None) }),
            Some(rev),
        ))
    }

    /// Reads the file and builds an answer from it and the snapshot.
    async fn read(
        &self,
        view: impl FnOnce(&ConfigDocument, &Snapshot) -> Result<Value, Failure>,
    ) -> Answer {
        let store = Arc::clone(&self.store);
        let (doc, rev) = blocking(move || store.read()).await??;
        let snapshot = self.routing.load();
        Ok((StatusCode::OK, view(&doc, &snapshot)?, Some(rev)))
    }

    async fn edit<T: Send + 'static>(
        &self,
        if_match: Option<String>,
        edit: impl FnMut(&mut ConfigDocument) -> Result<T, EditError> + Send + 'static,
    ) -> Result<(T, Revision), Failure> {
        let store = Arc::clone(&self.store);
        Ok(blocking(move || store.edit(if_match.as_deref(), edit)).await??)
    }

    /// [`Self::edit`], also returning `model` as the edit left it: answers
    /// are built from it rather than from a second read of the file, which
    /// could fail (or see a later edit) after this one was written.
    async fn edit_model<T: Send + 'static>(
        &self,
        if_match: Option<String>,
        model: &str,
        mut edit: impl FnMut(&mut ConfigDocument) -> Result<T, EditError> + Send + 'static,
    ) -> Result<((T, Model), Revision), Failure> {
        let model = model.to_owned();
        self.edit(if_match, move |doc| {
            let result = edit(doc)?;
            // Always there after a successful edit of the model; refusing
            // here would still write nothing.
            let m = doc.config().model(&model).cloned();
            let m = m.ok_or_else(|| EditError::NotFound(format!("model `{model}`")))?;
            Ok((result, m))
        })
        .await
    }

    fn deployment_view(&self, model: &Model, id: &str) -> Result<Value, Failure> {
        let d = model
            .deployment(id)
            .ok_or_else(|| deployment_not_found(model, id))?;
        Ok(deployment_view(model, d, &self.routing.load()))
    }

    /// An environment with its promotion (running or last).
    fn environment_view(&self, model: &Model, env: &str) -> Result<Value, Failure> {
        let e = find_environment(model, env)?;
        let mut view = environment_view(model, e, &self.routing.load());
        let current = e.deployment.as_deref();
        view["promotion"] = self.promotions.describe(&model.id, env, current);
        Ok(view)
    }

    /// The last minute of a deployment, as the serving snapshot counted it.
    fn deployment_metrics(&self, model: &str, dep: &str) -> Result<Value, Failure> {
        let snap = self.routing.load();
        let m = find_model(snap.config(), model)?;
        let d = m
            .deployment(dep)
            .ok_or_else(|| deployment_not_found(m, dep))?;
        let route = snap.deployment(model, dep);
        let summary = route.map(|r| r.recent().summary(Instant::now()));
        let replicas = ReplicaCounts::of(d, route.map(|r| &**r.pool()));
        Ok(metrics_view(
            summary.unwrap_or_default(),
            Some((dep, replicas)),
        ))
    }

    /// The last minute of an environment, across its deployments.
    fn environment_metrics(&self, model: &str, env: &str) -> Result<Value, Failure> {
        let snap = self.routing.load();
        let m = find_model(snap.config(), model)?;
        let e = find_environment(m, env)?;
        let route = snap
            .model(model)
            .ok()
            .and_then(|m| m.environment_route(env));
        let summary = route.map(|r| r.recent().summary(Instant::now()));
        let current = e.deployment.as_deref().and_then(|id| {
            let d = m.deployment(id)?;
            let pool = snap.deployment(model, id).map(|r| &**r.pool());
            Some((id, ReplicaCounts::of(d, pool)))
        });
        Ok(metrics_view(summary.unwrap_or_default(), current))
    }

    fn with_promotions(&self, model: &str, mut v: Value) -> Value {
        if let Some(envs) = v["environments"].as_array_mut() {
            for e in envs {
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                let current = e["deployment"]["id"].as_str().map(str::to_owned);
                e["promotion"] = self.promotions.describe(model, &name, current.as_deref());
            }
        }
        v
    }
}

/// The deployment a promotion of `dep` into `env` moves to: `dep` itself,
/// or for a development deployment a new persistent copy of it (the one
/// change this edit makes, after every check).
fn promotion_target(
    doc: &mut ConfigDocument,
    model: &str,
    env: &str,
    dep: &str,
) -> Result<String, EditError> {
    let m = doc
        .config()
        .model(model)
        .ok_or_else(|| EditError::NotFound(format!("model `{model}`")))?;
    if m.environment(env).is_none() {
        return Err(EditError::NotFound(format!(
            "environment `{env}` of model `{model}`"
        )));
    }
    let id = doc.resolve_deployment(model, dep)?;
    let d = doc.config().model(model).and_then(|m| m.deployment(&id));
    match d {
        Some(d) if !d.active => Err(EditError::Conflict(format!(
            "deployment `{id}` is inactive; activate it first"
        ))),
        Some(d) if d.kind == DeploymentKind::Development => doc.promote_development(model),
        Some(_) => Ok(id),
        None => Err(EditError::NotFound(format!("deployment `{dep}`"))),
    }
}

/// Deletes the environment and scales the deployment it served to zero,
/// unless another environment still serves it.
fn delete_environment(
    doc: &mut ConfigDocument,
    model: &str,
    env: &str,
) -> Result<Option<String>, EditError> {
    let previous = doc.delete_environment(model, env)?;
    let Some(dep) = previous else { return Ok(None) };
    let still_served = doc.config().model(model).is_some_and(|m| {
        m.environments
            .iter()
            .any(|e| e.deployment.as_deref() == Some(dep.as_str()))
    });
    if still_served {
        return Ok(None);
    }
    let to_zero = AutoscalingPatch {
        min_replica: Some(0),
        ..Default::default()
    };
    doc.set_autoscaling(model, AutoscalingScope::Deployment(dep.clone()), to_zero)?;
    Ok(Some(dep))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the API task failed: {e}"),
        )
    })
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn accepted(changed: Changed) -> &'static str {
    match changed {
        Changed::Changed => "ACCEPTED",
        Changed::Unchanged => "UNCHANGED",
    }
}

fn not_allowed() -> Failure {
    Failure::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

fn find_model<'a>(config: &'a Config, id: &str) -> Result<&'a Model, Failure> {
    config
        .model(id)
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, format!("model `{id}` not found")))
}

/// A deployment by id, or by the aliases `development` and `production`
/// (resolved as every edit resolves them).
fn find_deployment<'a>(
    doc: &ConfigDocument,
    model: &'a Model,
    reference: &str,
) -> Result<&'a Deployment, Failure> {
    let id = doc
        .resolve_deployment(&model.id, reference)
        .map_err(|e| edit_failure(&e))?;
    model
        .deployment(&id)
        .ok_or_else(|| deployment_not_found(model, &id))
}

fn deployment_not_found(model: &Model, id: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("deployment `{id}` of model `{}` not found", model.id),
    )
}

fn find_environment<'a>(model: &'a Model, name: &str) -> Result<&'a Environment, Failure> {
    model.environment(name).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("environment `{name}` of model `{}` not found", model.id),
        )
    })
}

fn respond(answer: Answer) -> Response<Vec<u8>> {
    let (status, body, revision) = match answer {
        Ok(ok) => ok,
        Err(Failure(status, message)) => (status, json!({ "error": message }), None),
    };
    let body = body.to_string().into_bytes();
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(rev) = revision {
        response = response.header(header::ETAG, rev.etag());
    }
    response.body(body).expect("valid response parts")
}
