//! What an API edit may not change on its own: file paths (a deployment
//! engine's `model`, `tokenizer` and `onnxruntime`: a local replica loads
//! them, the last one as a shared library in its own process, so whoever
//! sets them runs code on the host) and, when the operator locks them,
//! static replicas' addresses (which the gateway probes and sends
//! predictions to). A hand edit may change anything; an API edit changes
//! these only where the config's `[admin]` section opts in. Edits that
//! leave them as they are always pass.

use std::net::SocketAddr;
use std::path::Path;

use crate::engine::EngineBackend;
use crate::model::{AdminSettings, Deployment, ReplicaSource};

/// An API edit that would set or change values only a hand edit may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "deployment `{deployment}`: {fields} ({what}) may be set or changed only by editing the config file by hand, unless its [admin] section says `{setting} = true`"
)]
pub struct Protected {
    /// The deployment's id.
    pub deployment: String,
    /// The fields, as the API's JSON names them (e.g. `engine.onnxruntime`),
    /// backquoted and comma-separated.
    pub fields: String,
    /// What they are ("file paths", "replica addresses").
    pub what: &'static str,
    /// The `[admin]` setting that would allow it.
    pub setting: &'static str,
}

/// Checks `after`, a deployment as an edit leaves it, against `before`,
/// the deployment whose values it may keep (itself before the edit, or the
/// one it copies; `None` for a new one, which may set none).
pub(super) fn check(
    admin: &AdminSettings,
    before: Option<&Deployment>,
    after: &Deployment,
) -> Result<(), Protected> {
    if !admin.api_may_set_paths {
        let was = before.map(paths);
        let changed: Vec<&str> = paths(after)
            .into_iter()
            .enumerate()
            .filter(|(i, (_, path))| *path != was.as_ref().and_then(|w| w[*i].1))
            .map(|(_, (field, _))| field)
            .collect();
        if !changed.is_empty() {
            return Err(refusal(after, &changed, "file paths", "api_may_set_paths"));
        }
    }
    if !admin.api_may_set_replica_addresses
        && addresses(after) != before.map(addresses).unwrap_or_default()
    {
        return Err(refusal(
            after,
            &["replicas.addresses"],
            "replica addresses",
            "api_may_set_replica_addresses",
        ));
    }
    Ok(())
}

fn refusal(
    deployment: &Deployment,
    fields: &[&str],
    what: &'static str,
    setting: &'static str,
) -> Protected {
    let fields: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    Protected {
        deployment: deployment.id.clone(),
        fields: fields.join(", "),
        what,
        setting,
    }
}

/// The deployment's file paths by field, as written (unresolved).
fn paths(d: &Deployment) -> [(&'static str, Option<&Path>); 3] {
    let model = match d.engine.as_ref().map(|e| &e.backend) {
        Some(EngineBackend::Onnx(m) | EngineBackend::TensorRt(m)) => Some(m),
        _ => None,
    };
    [
        ("engine.model", model.map(|m| m.model.as_path())),
        // The default (beside the model) is the same value either way.
        ("engine.tokenizer", model.map(|m| m.tokenizer.as_path())),
        (
            "engine.onnxruntime",
            model.and_then(|m| m.runtime_library.as_deref()),
        ),
    ]
}

/// Its static replicas' addresses, sorted: their order changes nothing.
fn addresses(d: &Deployment) -> Vec<SocketAddr> {
    let mut addresses = match &d.replicas {
        ReplicaSource::Static { addresses } => addresses.clone(),
        ReplicaSource::Local => Vec::new(),
    };
    addresses.sort_unstable();
    addresses
}
