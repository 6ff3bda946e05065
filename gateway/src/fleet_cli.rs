//! `gateway config push|pull`: a fleet's shared document in and out of
//! etcd, for operators who edit it by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use control::fleet::SharedDocument;

/// What `gateway config` does.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE as the fleet's shared document (with the same located
    /// errors as `check`, against this node's files) and write it to etcd;
    /// every gateway of the fleet applies it.
    Push {
        /// This node's file: its `[fleet]` table names etcd.
        #[arg(long, short)]
        config: PathBuf,
        /// Write only if the document is still at this etcd revision (as
        /// `pull` printed it); by default it is replaced whatever it holds.
        #[arg(long)]
        if_revision: Option<i64>,
        /// The shared document to push (TOML).
        file: PathBuf,
    },
    /// Print the fleet's shared document on standard output (its etcd
    /// revision on standard error).
    Pull {
        /// This node's file: its `[fleet]` table names etcd.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs one `gateway config` command.
pub fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(async {
        match command {
            ConfigCommand::Push {
                config,
                if_revision,
                file,
            } => push(&config, &file, if_revision).await,
            ConfigCommand::Pull { config } => {
                let version = connect(&config).await?.get().await?;
                if version.revision == 0 {
                    anyhow::bail!("the fleet has no shared document yet: push one");
                }
                print!("{}", version.text);
                eprintln!("etcd revision {}", version.revision);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn push(node: &Path, file: &Path, if_revision: Option<i64>) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // Validated before etcd is contacted, located in FILE as `check` does;
    // the files local replicas load are checked against this node.
    let node_config = node_config(node)?;
    let base = node.parent().unwrap_or(Path::new(""));
    if let Err(errors) =
        config::load_shared_checked(&text, &file.display().to_string(), &node_config, base)
    {
        println!("{errors}");
        println!("{} error(s)", errors.errors.len());
        return Ok(ExitCode::FAILURE);
    }
    let document = SharedDocument::connect(node_config, node).await?;
    let revision = match if_revision {
        None => document.put(&text).await?,
        Some(expected) => match document.put_if(expected, &text).await? {
            Some(revision) => revision,
            None => {
                let now = document.get().await?.revision;
                eprintln!(
                    "not pushed: the shared document is at etcd revision {now}, not {expected}: pull it again"
                );
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    println!("pushed {} as etcd revision {revision}", document.origin());
    Ok(ExitCode::SUCCESS)
}

async fn connect(node: &Path) -> anyhow::Result<SharedDocument> {
    Ok(SharedDocument::connect(node_config(node)?, node).await?)
}

/// The node's own file, which must name a fleet.
fn node_config(node: &Path) -> anyhow::Result<config::Config> {
    let config = config::load_file_checked(node)
        .map_err(|e| anyhow::anyhow!("invalid node config:\n{e}"))?;
    if config.fleet.is_none() {
        anyhow::bail!(
            "{} has no [fleet] table: `gateway config` moves a fleet's shared document in and out of etcd",
            node.display()
        );
    }
    Ok(config)
}
