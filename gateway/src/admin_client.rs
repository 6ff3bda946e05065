//! `gateway status | promote | activate | deactivate`: the common
//! management operations as commands, calling the management API of a
//! running gateway (so operators need not hand-write curl).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

/// Where the management API is and how to call it.
#[derive(clap::Args, Debug)]
pub struct ApiTarget {
    /// The gateway's admin listener.
    #[arg(
        long,
        global = true,
        env = "IGW_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    admin: String,
    /// An admin-scoped API key (for the operations below).
    #[arg(long, global = true, env = "IGW_ADMIN_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// One operation.
#[derive(clap::Subcommand, Debug)]
pub enum Operation {
    /// Show a model's deployments (status, ready/desired replicas) and environments.
    Status {
        /// The model id.
        #[arg(long)]
        model: String,
    },
    /// Promote a deployment into an environment (production by default).
    Promote {
        /// The model id.
        #[arg(long)]
        model: String,
        /// The deployment id (or `development`).
        #[arg(long)]
        deployment: String,
        /// The environment.
        #[arg(long, default_value = "production")]
        environment: String,
    },
    /// Activate a deactivated deployment.
    Activate {
        /// The model id.
        #[arg(long)]
        model: String,
        /// The deployment id.
        #[arg(long)]
        deployment: String,
    },
    /// Deactivate a deployment: no replicas, predict answers 404.
    Deactivate {
        /// The model id.
        #[arg(long)]
        model: String,
        /// The deployment id.
        #[arg(long)]
        deployment: String,
    },
}

/// Runs `op` against the API and prints the outcome; exit 1 on an error
/// answer.
pub fn run(target: &ApiTarget, op: Operation) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let (method, path, body) = match &op {
        Operation::Status { model } => ("GET", format!("/v1/models/{model}"), None),
        Operation::Promote {
            model,
            deployment,
            environment,
        } => (
            "POST",
            format!("/v1/models/{model}/environments/{environment}/promote"),
            Some(json!({ "deployment_id": deployment })),
        ),
        Operation::Activate { model, deployment } => (
            "POST",
            format!("/v1/models/{model}/deployments/{deployment}/activate"),
            None,
        ),
        Operation::Deactivate { model, deployment } => (
            "POST",
            format!("/v1/models/{model}/deployments/{deployment}/deactivate"),
            None,
        ),
    };
    let key = target
        .key
        .as_deref()
        .context("an admin key is needed: --key or IGW_ADMIN_KEY")?;
    let url = format!("{}{path}", target.admin.trim_end_matches('/'));
    let (status, answer) = runtime.block_on(call(&url, method, key, body))?;
    if !status.is_success() {
        eprintln!(
            "error: {status}: {}",
            answer["error"].as_str().unwrap_or("(no message)")
        );
        return Ok(ExitCode::FAILURE);
    }
    match op {
        Operation::Status { .. } => print!("{}", status_table(&answer)),
        _ => println!("{}", serde_json::to_string_pretty(&answer)?),
    }
    Ok(ExitCode::SUCCESS)
}

async fn call(
    url: &str,
    method: &str,
    key: &str,
    body: Option<Value>,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let method: reqwest::Method = method.parse()?;
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("authorization", format!("Api-Key {key}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let answer = resp.json().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

/// A model as a table: one line per deployment, then the environments.
fn status_table(model: &Value) -> String {
    let mut out = format!(
        "model {} ({})\n\n{:<12} {:<16} {:<15} {:>7}  {}\n",
        model["id"].as_str().unwrap_or("?"),
        model["name"].as_str().unwrap_or(""),
        "DEPLOYMENT",
        "NAME",
        "STATUS",
        "READY",
        "ENVIRONMENTS"
    );
    let empty = Vec::new();
    for d in model["deployments"].as_array().unwrap_or(&empty) {
        let envs: Vec<&str> = d["environments"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out += &format!(
            "{:<12} {:<16} {:<15} {:>7}  {}\n",
            d["id"].as_str().unwrap_or("?"),
            d["name"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or("?"),
            format!("{}/{}", d["replicas"]["ready"], d["replicas"]["desired"]),
            envs.join(", ")
        );
        if let Some(reason) = d["replicas"]["pending_reason"].as_str() {
            out += &format!("{:<12} pending: {reason}\n", "");
        }
        if let Some(error) = d["replicas"]["last_error"].as_str() {
            out += &format!("{:<12} last error: {error}\n", "");
        }
    }
    out
}
