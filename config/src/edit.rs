//! Comment-preserving edits of the config document, for the management API.
//!
//! [`ConfigDocument`] holds the file as a `toml_edit` tree beside its
//! validated [`Config`]. An edit checks the lifecycle rules against the
//! config (missing things are [`EditError::NotFound`], refused transitions
//! [`EditError::Conflict`]), changes a copy of the tree, and validates the
//! whole result with [`load_str`](crate::load_str): an edit never produces a
//! file the gateway would refuse, and on any error the document stays as it
//! was. Untouched parts of the file stay byte-identical, comments included;
//! a replaced value keeps the comment on its line.
//!
//! Some values only a hand edit may set or change ([`Protected`]): a
//! deployment engine's file paths, unless the config's `[admin]` section
//! has `api_may_set_paths = true`, and static replica addresses when it has
//! `api_may_set_replica_addresses = false`. Edits that keep them pass.
//!
//! `{deployment}` arguments take a deployment id or the aliases
//! `development` (the model's development deployment) and `production`
//! (the deployment the production environment serves).
//!
//! ```
//! use config::edit::{AutoscalingPatch, AutoscalingScope, Changed, ConfigDocument};
//!
//! let text = "[[models]]\nid = \"m\"\n\n[[models.deployments]]\nid = \"a\"   # the first one\n\
//!             replicas = { source = \"static\" }\n";
//! let mut doc = ConfigDocument::parse(text, "gateway.toml").unwrap();
//! let patch = AutoscalingPatch { max_replica: Some(3), ..Default::default() };
//! let scope = AutoscalingScope::Deployment("a".into());
//! assert_eq!(doc.set_autoscaling("m", scope, patch).unwrap(), Changed::Changed);
//! assert!(doc.text().contains("id = \"a\"   # the first one\n"));
//! assert_eq!(doc.config().models[0].deployments[0].autoscaling.max_replica, 3);
//! ```

mod input;
mod lookup;
mod protected;
mod rollout;
mod tree;

use toml_edit::{DocumentMut, Item, Table, Value};

pub use input::{
    AutoscalingPatch, AutoscalingScope, DeploymentPatch, EnvironmentPatch, NewDeployment,
    NewEnvironment, PromotionPatch, ReplicasSpec, ResourcesSpec, RollbackPatch,
};
pub use protected::Protected;

use crate::error::{ConfigErrors, Problem};
use crate::model::{Config, DeploymentKind, Model, PRODUCTION};
use crate::path::ConfigPath;
use input::{inline_of, table_of, toml_values};
use lookup::*;
use tree::{Form, Node};

/// Alias of a model's development deployment in `{deployment}` arguments.
const DEVELOPMENT: &str = "development";

/// Keys of a development deployment that its promoted copy does not take:
/// it gets its own identity, starts active, and its autoscaling starts from
/// the defaults (a development deployment is capped at one replica; the
/// environment it is promoted into brings its own settings).
const NOT_PROMOTED: [&str; 5] = ["id", "name", "kind", "active", "autoscaling"];

/// The config file as an editable document, with its validated config.
#[derive(Debug, Clone)]
pub struct ConfigDocument {
    doc: DocumentMut,
    origin: String,
    config: Config,
}

/// Whether an edit changed the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The document changed.
    Changed,
    /// The configuration already said so; the document is untouched.
    Unchanged,
}

impl Changed {
    /// True for [`Changed::Changed`].
    pub fn is_changed(self) -> bool {
        self == Self::Changed
    }
}

/// Why an edit was refused. The document is unchanged after any of them.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// (404) What is missing, e.g. "deployment `v3` of model `m`".
    #[error("{0} not found")]
    NotFound(String),
    /// (409) The edit breaks a lifecycle rule; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// (400) The edited file would not validate; each error is located in
    /// the edited text (untouched lines keep their numbers).
    #[error("the edit would make the config invalid:\n{0}")]
    Invalid(ConfigErrors),
    /// (400) The request contradicts itself.
    #[error("{0}")]
    BadRequest(String),
    /// (400) The edit would set or change a file path (or a replica
    /// address, when those are locked): only a hand edit may, unless the
    /// config's `[admin]` section lets the API.
    #[error(transparent)]
    Protected(#[from] Protected),
}

impl ConfigDocument {
    /// Parses and validates `text`; `origin` names the file in errors, which
    /// are those of [`load_str`](crate::load_str).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigErrors> {
        let config = crate::load_str(text, origin)?;
        Ok(Self {
            doc: parse_tree(text, origin)?,
            origin: origin.to_owned(),
            config,
        })
    }

    /// The document's text.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// The validated configuration of [`text`](Self::text).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The file the text came from, as given to [`parse`](Self::parse).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// [`check_files`](crate::check_files) of this document: whether every
    /// file its local replicas would load exists, relative paths taken from
    /// `base` (the config file's directory). Not part of [`parse`](Self::parse)
    /// or the edits, which never look at the disk; the caller that writes
    /// the file runs it, as the reloader does for hand edits.
    pub fn check_files(&self, base: &std::path::Path) -> Result<(), ConfigErrors> {
        let problems = crate::files::problems(&self.config, base);
        if problems.is_empty() {
            return Ok(());
        }
        Err(crate::files::locate(&self.origin, &self.text(), problems))
    }

    /// The id `reference` (an id, `development` or `production`) stands for.
    pub fn resolve_deployment(&self, model: &str, reference: &str) -> Result<String, EditError> {
        let m = self.model(model)?;
        Ok(deployment_of(m, reference)?.id.clone())
    }

    /// Adds a deployment at the end of the model's deployments; returns its
    /// id. Unless given, the id is 8 random lowercase letters and digits and
    /// the name `deployment-N`, one past the highest such name in the model.
    pub fn add_deployment(&mut self, model: &str, new: NewDeployment) -> Result<String, EditError> {
        let m = self.model(model)?;
        let id = match &new.id {
            Some(id) if m.deployment(id).is_some() => {
                return Err(EditError::Conflict(format!(
                    "deployment `{id}` already exists in model `{model}`"
                )));
            }
            Some(id) => id.clone(),
            None => unused_id(m),
        };
        let development = new.kind == Some(DeploymentKind::Development);
        if development && let Some(dev) = development_of(m) {
            return Err(EditError::Conflict(format!(
                "model `{model}` already has a development deployment (`{}`)",
                dev.id
            )));
        }
        let name = match &new.name {
            Some(name) => Some(non_empty_name(name)?.to_owned()),
            // The default name of a development deployment is `development`.
            None if development => None,
            None => Some(next_deployment_name(m)),
        };
        one_resource_form(new.instance_type.is_some(), new.resources.is_some())?;
        let entry = deployment_entry(&id, name, &new);
        self.apply(|doc| {
            tree::push_entry(&mut tree::model(doc, model)?, "deployments", entry);
            Ok(())
        })?;
        Ok(id)
    }

    /// Changes a deployment's name, resources, concurrency, replicas, engine
    /// or queue.
    pub fn update_deployment(
        &mut self,
        model: &str,
        deployment: &str,
        patch: DeploymentPatch,
    ) -> Result<Changed, EditError> {
        let id = self.resolve_deployment(model, deployment)?;
        if patch.is_empty() {
            return Ok(Changed::Unchanged);
        }
        one_resource_form(patch.instance_type.is_some(), patch.resources.is_some())?;
        if let Some(name) = &patch.name {
            non_empty_name(name)?;
        }
        self.change(|doc| {
            patch_deployment(&mut deployment_table(doc, model, &id)?, &patch);
            Ok(())
        })
    }

    /// Activates or deactivates a deployment. Environments may keep serving
    /// an inactive deployment; they answer 404 until it is active again. A
    /// deployment a rollout moves traffic to stays active until the rollout
    /// is cleared.
    pub fn set_deployment_active(
        &mut self,
        model: &str,
        deployment: &str,
        active: bool,
    ) -> Result<Changed, EditError> {
        let m = self.model(model)?;
        let id = deployment_of(m, deployment)?.id.clone();
        if !active && let Some(env) = rolling_out_to(m, &id) {
            return Err(EditError::Conflict(format!(
                "deployment `{id}` of model `{model}` is being rolled out in environment `{}`; clear the rollout first",
                env.name
            )));
        }
        self.change(|doc| {
            tree::set(&mut deployment_table(doc, model, &id)?, "active", active);
            Ok(())
        })
    }

    /// Deletes a deployment no environment serves or rolls out to. Later
    /// deployments named by their position (`deployment-N` by default) get
    /// that name written down, so deleting one does not rename the others.
    pub fn delete_deployment(&mut self, model: &str, deployment: &str) -> Result<(), EditError> {
        let m = self.model(model)?;
        let d = deployment_of(m, deployment)?;
        if let Some(env) = serving(m, &d.id) {
            return Err(EditError::Conflict(format!(
                "deployment `{}` of model `{model}` serves environment `{}`; point the environment elsewhere first",
                d.id, env.name
            )));
        }
        if let Some(env) = rolling_out_to(m, &d.id) {
            return Err(EditError::Conflict(format!(
                "deployment `{}` of model `{model}` is being rolled out in environment `{}`; clear the rollout first",
                d.id, env.name
            )));
        }
        let id = d.id.clone();
        let renamed = positional_names_after(m, &id);
        self.apply(|doc| {
            let mut m = tree::model(doc, model)?;
            for (later, name) in &renamed {
                if let Some(mut entry) = tree::entry(m.reborrow(), "deployments", "id", later)
                    && !entry.contains_key("name")
                {
                    tree::set(&mut entry, "name", name.as_str());
                }
            }
            tree::remove_entry(&mut m, "deployments", "id", &id);
            Ok(())
        })
    }

    /// Merges `patch` into a deployment's or an environment's `autoscaling`
    /// table (created when missing). `Unchanged` when every given value is
    /// already the effective one.
    pub fn set_autoscaling(
        &mut self,
        model: &str,
        scope: AutoscalingScope,
        patch: AutoscalingPatch,
    ) -> Result<Changed, EditError> {
        let values = patch.values();
        match scope {
            AutoscalingScope::Deployment(reference) => {
                let id = self.resolve_deployment(model, &reference)?;
                if values.is_empty() {
                    return Ok(Changed::Unchanged);
                }
                self.change(|doc| {
                    let entry = deployment_table(doc, model, &id)?;
                    tree::merge(
                        &mut tree::child(entry, "autoscaling", Form::Section),
                        values,
                    );
                    Ok(())
                })
            }
            AutoscalingScope::Environment(name) => self.update_environment(
                model,
                &name,
                EnvironmentPatch {
                    autoscaling: Some(patch),
                    promotion: None,
                },
            ),
        }
    }

    /// Adds an environment at the end of the model's environments. The
    /// deployment it serves, when given, must be active.
    pub fn add_environment(&mut self, model: &str, new: NewEnvironment) -> Result<(), EditError> {
        let m = self.model(model)?;
        if m.environment(&new.name).is_some() {
            return Err(EditError::Conflict(format!(
                "environment `{}` already exists in model `{model}`",
                new.name
            )));
        }
        let deployment = match &new.deployment {
            Some(reference) => Some(servable(m, reference)?.id.clone()),
            None => None,
        };
        let entry = environment_entry(&new, deployment);
        self.apply(|doc| {
            tree::push_entry(&mut tree::model(doc, model)?, "environments", entry);
            Ok(())
        })
    }

    /// Merges autoscaling and promotion settings into an environment. A
    /// promotion `rollback` patch is merged into the `rollback` table (an
    /// inline one when created).
    pub fn update_environment(
        &mut self,
        model: &str,
        environment: &str,
        patch: EnvironmentPatch,
    ) -> Result<Changed, EditError> {
        environment_of(self.model(model)?, environment)?;
        let autoscaling = patch.autoscaling.map(|a| a.values()).unwrap_or_default();
        let promotion = patch.promotion.unwrap_or_default();
        // Even an empty `[autoscaling]` would override the deployment's own.
        if autoscaling.is_empty() && promotion.is_empty() {
            return Ok(Changed::Unchanged);
        }
        self.change(|doc| {
            let mut entry = environment_table(doc, model, environment)?;
            if !autoscaling.is_empty() {
                tree::merge(
                    &mut tree::child(entry.reborrow(), "autoscaling", Form::Section),
                    autoscaling,
                );
            }
            if !promotion.is_empty() {
                let mut table = tree::child(entry, "promotion", Form::Section);
                tree::merge(&mut table, promotion.values());
                if let Some(rollback) = promotion.rollback {
                    tree::merge(
                        &mut tree::child(table, "rollback", Form::Inline),
                        rollback.values(),
                    );
                }
            }
            Ok(())
        })
    }

    /// Deletes an environment; returns the deployment it served. The
    /// production environment cannot be deleted.
    pub fn delete_environment(
        &mut self,
        model: &str,
        environment: &str,
    ) -> Result<Option<String>, EditError> {
        let m = self.model(model)?;
        if environment == PRODUCTION {
            return Err(EditError::Conflict(format!(
                "the production environment of model `{model}` cannot be deleted"
            )));
        }
        let served = environment_of(m, environment)?.deployment.clone();
        self.apply(|doc| {
            tree::remove_entry(
                &mut tree::model(doc, model)?,
                "environments",
                "name",
                environment,
            );
            Ok(())
        })?;
        Ok(served)
    }

    /// Points an environment at an active deployment (writing the production
    /// environment's entry if the file leaves it implicit). Only the pointer
    /// changes: applying the environment's autoscaling settings and cleanup
    /// strategy is the caller's promotion logic.
    pub fn point_environment(
        &mut self,
        model: &str,
        environment: &str,
        deployment: &str,
    ) -> Result<Changed, EditError> {
        let m = self.model(model)?;
        environment_of(m, environment)?;
        let id = servable(m, deployment)?.id.clone();
        self.change(|doc| {
            tree::set(
                &mut environment_table(doc, model, environment)?,
                "deployment",
                id,
            );
            Ok(())
        })
    }

    /// Copies the model's development deployment into a new regular one
    /// (new id, next `deployment-N` name, same resources, concurrency,
    /// replicas, engine and queue; active, default autoscaling); returns its
    /// id.
    pub fn promote_development(&mut self, model: &str) -> Result<String, EditError> {
        let m = self.model(model)?;
        let dev = development_of(m).ok_or_else(|| {
            EditError::NotFound(format!("development deployment of model `{model}`"))
        })?;
        let (dev_id, id, name) = (dev.id.clone(), unused_id(m), next_deployment_name(m));
        // The copy keeps the development deployment's paths and addresses.
        let copy = Some((id.as_str(), dev_id.as_str()));
        self.try_edit_copying(copy, |doc| {
            let mut m = tree::model(doc, model)?;
            let dev = tree::entry(m.reborrow(), "deployments", "id", &dev_id).ok_or_else(|| {
                EditError::NotFound(format!("deployment `{dev_id}` of model `{model}`"))
            })?;
            let mut entry = table_of(vec![kv("id", id.as_str()), kv("name", name)]);
            for (key, item) in dev.iter() {
                if !NOT_PROMOTED.contains(&key) {
                    entry.insert(key, tree::without_decor(item));
                }
            }
            tree::push_entry(&mut m, "deployments", entry);
            Ok(())
        })?;
        Ok(id)
    }

    /// Refuses a result that sets or changes what only a hand edit may
    /// ([`Protected`]). `copy`: a new deployment's id and the id of the
    /// deployment it copies, whose values it may keep.
    fn check_protected(&self, new: &Config, copy: Option<(&str, &str)>) -> Result<(), EditError> {
        for model in &new.models {
            let old = self.config.model(&model.id);
            for d in &model.deployments {
                let baseline = match copy {
                    Some((id, source)) if id == d.id => source,
                    _ => d.id.as_str(),
                };
                let before = old.and_then(|m| m.deployment(baseline));
                protected::check(&self.config.admin, before, d)?;
            }
        }
        Ok(())
    }

    fn model(&self, id: &str) -> Result<&Model, EditError> {
        self.config
            .model(id)
            .ok_or_else(|| EditError::NotFound(format!("model `{id}`")))
    }

    /// For adds and deletes, which always change the config.
    fn apply<T>(
        &mut self,
        edit: impl FnOnce(&mut DocumentMut) -> Result<T, EditError>,
    ) -> Result<T, EditError> {
        self.try_edit(edit).map(|(result, _)| result)
    }

    /// For setters, which may find the config already as asked.
    fn change(
        &mut self,
        edit: impl FnOnce(&mut DocumentMut) -> Result<(), EditError>,
    ) -> Result<Changed, EditError> {
        self.try_edit(edit).map(|((), changed)| changed)
    }

    /// Runs `edit` on a copy of the tree and keeps the result only if its
    /// text validates, changes nothing protected, and means something new.
    fn try_edit<T>(
        &mut self,
        edit: impl FnOnce(&mut DocumentMut) -> Result<T, EditError>,
    ) -> Result<(T, Changed), EditError> {
        self.try_edit_copying(None, edit)
    }

    /// [`Self::try_edit`] for an edit that copies a deployment (see
    /// [`Self::check_protected`]).
    fn try_edit_copying<T>(
        &mut self,
        copy: Option<(&str, &str)>,
        edit: impl FnOnce(&mut DocumentMut) -> Result<T, EditError>,
    ) -> Result<(T, Changed), EditError> {
        let mut doc = self.doc.clone();
        let result = edit(&mut doc)?;
        let text = doc.to_string();
        let config = crate::load_str(&text, &self.origin).map_err(EditError::Invalid)?;
        self.check_protected(&config, copy)?;
        // Same meaning (e.g. a default written out): keep the file as it is.
        if config == self.config {
            return Ok((result, Changed::Unchanged));
        }
        // Re-parsed, the tree is exactly what the next reader of the file sees.
        self.doc = parse_tree(&text, &self.origin).map_err(EditError::Invalid)?;
        self.config = config;
        Ok((result, Changed::Changed))
    }
}

fn parse_tree(text: &str, origin: &str) -> Result<DocumentMut, ConfigErrors> {
    text.parse::<DocumentMut>().map_err(|e| {
        let problem = Problem {
            path: ConfigPath::root(),
            span: e.span(),
            message: format!("invalid TOML: {}", e.message().trim_end()),
        };
        ConfigErrors::locate(origin, text, None, vec![problem])
    })
}

fn deployment_table<'t>(
    doc: &'t mut DocumentMut,
    model: &str,
    id: &str,
) -> Result<Node<'t>, EditError> {
    tree::entry(tree::model(doc, model)?, "deployments", "id", id)
        .ok_or_else(|| EditError::NotFound(format!("deployment `{id}` of model `{model}`")))
}

/// An environment's entry; the production one is written (first) when the
/// file leaves it implicit.
fn environment_table<'t>(
    doc: &'t mut DocumentMut,
    model: &str,
    name: &str,
) -> Result<Node<'t>, EditError> {
    let mut m = tree::model(doc, model)?;
    if name == PRODUCTION && tree::entry(m.reborrow(), "environments", "name", name).is_none() {
        let entry = table_of(vec![kv("name", PRODUCTION)]);
        tree::insert_first_entry(&mut m, "environments", entry);
    }
    tree::entry(m, "environments", "name", name)
        .ok_or_else(|| EditError::NotFound(format!("environment `{name}` of model `{model}`")))
}

fn deployment_entry(id: &str, name: Option<String>, new: &NewDeployment) -> Table {
    let mut values = vec![kv("id", id)];
    values.extend(name.map(|n| kv("name", n)));
    if let Some(kind) = new.kind.filter(|k| *k != DeploymentKind::Regular) {
        values.push(kv("kind", input::deployment_kind_name(kind)));
    }
    values.extend(new.active.map(|a| kv("active", a)));
    values.extend(new.instance_type.as_deref().map(|t| kv("instance_type", t)));
    values.extend(
        new.resources
            .as_ref()
            .map(|r| kv("resources", inline_of(r.values()))),
    );
    values.extend(
        new.predict_concurrency
            .map(|n| kv("predict_concurrency", n)),
    );
    values.push(kv("replicas", inline_of(new.replicas.values())));
    let mut entry = table_of(values);
    if let Some(autoscaling) = new
        .autoscaling
        .map(|a| a.values())
        .filter(|v| !v.is_empty())
    {
        entry.insert("autoscaling", Item::Table(table_of(autoscaling)));
    }
    if let Some(queue) = new.queue.as_ref().filter(|q| !q.is_empty()) {
        entry.insert("queue", Item::Table(table_of(toml_values(queue))));
    }
    if let Some(engine) = &new.engine {
        entry.insert("engine", Item::Table(table_of(toml_values(engine))));
    }
    entry
}

fn environment_entry(new: &NewEnvironment, deployment: Option<String>) -> Table {
    let mut values = vec![kv("name", new.name.as_str())];
    values.extend(deployment.map(|d| kv("deployment", d)));
    let mut entry = table_of(values);
    if let Some(autoscaling) = new
        .autoscaling
        .map(|a| a.values())
        .filter(|v| !v.is_empty())
    {
        entry.insert("autoscaling", Item::Table(table_of(autoscaling)));
    }
    if let Some(promotion) = new.promotion.filter(|p| !p.is_empty()) {
        let mut table = table_of(promotion.values());
        if let Some(rollback) = promotion.rollback {
            table.insert("rollback", Item::Value(inline_of(rollback.values()).into()));
        }
        entry.insert("promotion", Item::Table(table));
    }
    entry
}

fn patch_deployment(entry: &mut Node<'_>, patch: &DeploymentPatch) {
    if let Some(name) = &patch.name {
        tree::set(entry, "name", name.as_str());
    }
    // `instance_type` and `resources` are alternatives: setting one drops the other.
    if let Some(instance_type) = &patch.instance_type {
        tree::remove(entry, "resources");
        tree::set(entry, "instance_type", instance_type.as_str());
    }
    if let Some(resources) = &patch.resources {
        tree::remove(entry, "instance_type");
        tree::replace_table(entry, "resources", resources.values(), Form::Inline);
    }
    if let Some(n) = patch.predict_concurrency {
        tree::set(entry, "predict_concurrency", n);
    }
    if let Some(replicas) = &patch.replicas {
        tree::replace_table(entry, "replicas", replicas.values(), Form::Inline);
    }
    if let Some(engine) = &patch.engine {
        tree::replace_table(entry, "engine", toml_values(engine), Form::Section);
    }
    if let Some(queue) = &patch.queue {
        tree::replace_table(entry, "queue", toml_values(queue), Form::Section);
    }
}

fn kv(key: &str, value: impl Into<Value>) -> (String, Value) {
    (key.to_owned(), value.into())
}
