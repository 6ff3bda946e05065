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
use crate::routing::Routing;
use crate::scaling::ReplicaCounts;
use crate::snapshot::Snapshot;
use crate::store::{ConfigStore, Revision, StoreError};
use crate::usage::UsageLedger;

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
        EditError::Invalid(_) | EditError::BadRequest(_) => StatusCode::BAD_REQUEST,
    };
    Failure(status, e.to_string())
}

type Answer = Result<(StatusCode, Value, Option<Revision>), Failure>;

impl Api {
    /// An API over `store`'s file, reporting readiness from `routing` and
    /// usage from `usage`. Resumes the rollouts the config has in progress;
    /// fails if the promotions' thread cannot start.
    pub fn new(
        routing: Arc<Routing>,
        store: Arc<ConfigStore>,
        usage: Arc<UsageLedger>,
    ) -> std::io::Result<Self> {
        let promotions = Promotions::new(Arc::clone(&routing), Arc::clone(&store))?;
        promotions.resume(routing.load().config());
        Ok(Self {
            routing,
            store,
            promotions,
            usage,
        })
    }

    /// Answers one request. Authentication: an admin-scoped key.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Vec<u8>> {
        // Decide access first: the snapshot guard must not live across the
        // awaits below.
        let denied = {
            let snapshot = self.routing.load();
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            match snapshot.keys().authenticate(auth) {
                Err(e) => Some(Failure::new(StatusCode::UNAUTHORIZED, e.to_string())),
                Ok(p) if !p.is_admin() => Some(Failure::new(
                    StatusCode::FORBIDDEN,
                    "the management API needs an admin-scoped key",
                )),
                Ok(_) => None,
            }
        };
        let answer = match denied {
            Some(failure) => Err(failure),
            None => self.route(&req).await,
        };
        respond(answer)
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
                    let model = model.to_string();
                    let (id, rev) = self.edit(if_match, move |doc| doc.add_deployment(&model, new.clone())).await?;
                    let view = self.deployment_json(parts[2], &id)?;
                    Ok((StatusCode::CREATED, view, Some(rev)))
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
                    let (model, dep) = (model.to_string(), dep.to_string());
                    let (changed, rev) = self.edit(if_match, move |doc| doc.update_deployment(&model, &dep, patch.clone())).await?;
                    self.after_edit(&parts, changed, rev)
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
                    let model = model.to_string();
                    let ((), rev) = self.edit(if_match, move |doc| doc.add_environment(&model, new.clone())).await?;
                    let view = self.environment_json(parts[2], &name)?;
                    Ok((StatusCode::CREATED, view, Some(rev)))
                }
                _ => Err(not_allowed()),
            },
            ["v1", "models", model, "environments", env] => match *m {
                Method::GET => {
                    let view = self.environment_json(model, env)?;
                    Ok((StatusCode::OK, view, Some(self.store_revision().await?)))
                }
                Method::PATCH => {
                    let patch: EnvironmentPatch = parse(body)?;
                    let (model, env) = (model.to_string(), env.to_string());
                    let (changed, rev) = self.edit(if_match, move |doc| doc.update_environment(&model, &env, patch.clone())).await?;
                    self.after_edit(&parts, changed, rev)
                }
                Method::DELETE => {
                    // Deleting an environment cancels its promotion, and its
                    // deployment scales to zero (unless another serves it).
                    self.promotions.cancel_if_running(model, env);
                    let (model_id, env_name) = (model.to_string(), env.to_string());
                    let (previous, rev) = self.edit(if_match, move |doc| delete_environment(doc, &model_id, &env_name)).await?;
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
                self.promote(model, env, &b.deployment_id).await
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
                let (changed, rev) = self
                    .edit(if_match, move |doc| {
                        doc.set_deployment_active(&model_id, &dep_id, active)
                    })
                    .await?;
                let view = self.deployment_json(model, dep)?;
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
                self.promote(model, &env, dep).await
            }
            _ => Err(Failure::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {} .../{action}", req.method()),
            )),
        }
    }

    /// Starts a promotion; a development deployment first becomes a new
    /// persistent deployment, which is what gets promoted.
    async fn promote(&self, model: &str, env: &str, dep: &str) -> Answer {
        let (model_id, env_name, dep_id) = (model.to_owned(), env.to_owned(), dep.to_owned());
        let (target, rev) = self
            .edit(None, move |doc| {
                let m = doc
                    .config()
                    .model(&model_id)
                    .ok_or_else(|| EditError::NotFound(format!("model `{model_id}`")))?;
                if m.environment(&env_name).is_none() {
                    return Err(EditError::NotFound(format!(
                        "environment `{env_name}` of model `{model_id}`"
                    )));
                }
                let id = doc.resolve_deployment(&model_id, &dep_id)?;
                let d = doc
                    .config()
                    .model(&model_id)
                    .and_then(|m| m.deployment(&id))
                    .cloned();
                match d {
                    Some(d) if !d.active => Err(EditError::Conflict(format!(
                        "deployment `{id}` is inactive; activate it first"
                    ))),
                    Some(d) if d.kind == DeploymentKind::Development => {
                        doc.promote_development(&model_id)
                    }
                    Some(_) => Ok(id),
                    None => Err(EditError::NotFound(format!("deployment `{dep_id}`"))),
                }
            })
            .await?;
        self.promotions.start(model, env, &target)?;
        Ok((
            StatusCode::ACCEPTED,
            json!({ "environment": env, "promotion": self.promotions.describe(model, env, None) }),
            Some(rev),
        ))
    }

    /// `{"status": "ACCEPTED" | "UNCHANGED"}` and the object as it is now.
    fn after_edit(&self, parts: &[&str], changed: Changed, rev: Revision) -> Answer {
        let mut v = json!({ "status": accepted(changed) });
        match parts {
            ["v1", "models", model, "deployments", dep] => {
                v["deployment"] = self.deployment_json(model, dep)?
            }
            ["v1", "models", model, "environments", env] => {
                v["environment"] = self.environment_json(model, env)?
            }
            _ => {}
        }
        Ok((StatusCode::OK, v, Some(rev)))
    }

    /// Reads the file and builds an answer from it and the snapshot.
    async fn read(
        &self,
        view: impl FnOnce(&ConfigDocument, &Snapshot) -> Result<Value, Failure> + Send + 'static,
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

    async fn store_revision(&self) -> Result<Revision, Failure> {
        let store = Arc::clone(&self.store);
        Ok(blocking(move || store.read()).await??.1)
    }

    fn deployment_json(&self, model: &str, dep: &str) -> Result<Value, Failure> {
        let (doc, _) = self.store.read()?;
        let m = find_model(doc.config(), model)?;
        Ok(deployment_view(
            m,
            find_deployment(&doc, m, dep)?,
            &self.routing.load(),
        ))
    }

    fn environment_json(&self, model: &str, env: &str) -> Result<Value, Failure> {
        let (doc, _) = self.store.read()?;
        let m = find_model(doc.config(), model)?;
        let e = find_environment(m, env)?;
        let mut view = environment_view(m, e, &self.routing.load());
        let current = e.deployment.as_deref();
        view["promotion"] = self.promotions.describe(model, env, current);
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
