//! Config builders: the TOML the tests' gateways are started with, written
//! once. The common case is one model whose production environment serves
//! one deployment of fixed (static) replicas:
//!
//! ```
//! use testkit::fixture::{Deployment, Model};
//! let addr = "127.0.0.1:9".parse().unwrap();
//! let toml = Model::new("m1")
//!     .deployment(Deployment::fixed("d1", &[addr]).set("predict_concurrency", "256"))
//!     .environment("production", "d1")
//!     .toml();
//! assert!(toml.contains("addresses = [\"127.0.0.1:9\"]"));
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;

/// An `[[api_keys]]` entry for `key` (`scope` as TOML: `"\"all\""`,
/// `"\"admin\""`, `"[\"m1\"]"`).
pub fn key_entry(key: &str, name: &str, scope: &str) -> String {
    format!(
        "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = {scope}\n",
        hex::encode(config::key_digest(key))
    )
}

/// A `[[models]]` table with its deployments and environments.
#[derive(Debug, Clone)]
pub struct Model {
    id: String,
    lines: Vec<(String, String)>,
    deployments: Vec<Deployment>,
    environments: Vec<(String, String)>,
}

/// A `[[models.deployments]]` table.
#[derive(Debug, Clone)]
pub struct Deployment {
    id: String,
    lines: Vec<(String, String)>,
    raw: String,
}

impl Model {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            lines: Vec::new(),
            deployments: Vec::new(),
            environments: Vec::new(),
        }
    }

    /// A key of the model's table, its value as TOML.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.lines.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn deployment(mut self, deployment: Deployment) -> Self {
        self.deployments.push(deployment);
        self
    }

    /// Environment `name` pointing at deployment `deployment`.
    pub fn environment(mut self, name: &str, deployment: &str) -> Self {
        self.environments
            .push((name.to_owned(), deployment.to_owned()));
        self
    }

    /// The TOML, starting on a line of its own.
    pub fn toml(&self) -> String {
        let mut out = format!("\n[[models]]\nid = \"{}\"\n", self.id);
        write_lines(&mut out, &self.lines);
        for deployment in &self.deployments {
            let _ = writeln!(out, "[[models.deployments]]\nid = \"{}\"", deployment.id);
            write_lines(&mut out, &deployment.lines);
            out.push_str(&deployment.raw);
        }
        for (name, deployment) in &self.environments {
            let _ = writeln!(
                out,
                "[[models.environments]]\nname = \"{name}\"\ndeployment = \"{deployment}\""
            );
        }
        out
    }
}

fn write_lines(out: &mut String, lines: &[(String, String)]) {
    for (key, value) in lines {
        let _ = writeln!(out, "{key} = {value}");
    }
}

impl Deployment {
    /// A deployment with no replicas table (set one with [`Self::set`]).
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            lines: Vec::new(),
            raw: String::new(),
        }
    }

    /// A deployment served by replicas at `addresses`, run elsewhere.
    pub fn fixed(id: &str, addresses: &[SocketAddr]) -> Self {
        Self::new(id).set("replicas", &static_replicas(addresses))
    }

    /// A key of the deployment's table, its value as TOML.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.lines.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Lines of TOML for the deployment's table as they are (`key = value`
    /// lines, or nothing).
    pub fn lines(mut self, toml: &str) -> Self {
        self.raw.push_str(toml);
        if !toml.is_empty() && !toml.ends_with('\n') {
            self.raw.push('\n');
        }
        self
    }
}

/// `{ source = "static", addresses = [...] }`.
pub fn static_replicas(addresses: &[SocketAddr]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{{ source = \"static\", addresses = [{}] }}",
        list.join(", ")
    )
}

/// The tests' most common model: `model` whose production environment
/// serves `deployment`, with the replicas at `addresses` and
/// `predict_concurrency` slots each.
pub fn static_model(
    model: &str,
    deployment: &str,
    addresses: &[SocketAddr],
    predict_concurrency: u32,
) -> String {
    Model::new(model)
        .deployment(
            Deployment::fixed(deployment, addresses)
                .set("predict_concurrency", &predict_concurrency.to_string()),
        )
        .environment("production", deployment)
        .toml()
}
