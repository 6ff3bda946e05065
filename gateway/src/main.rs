//! `gateway`: serve, check a config, or create an API key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gateway", version, about = "L7 inference gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    api: gateway::admin_client::ApiTarget,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Take over from the gateway running with this config: wait for
        /// it to hand over its listening sockets and local replicas (send
        /// it SIGQUIT), then serve while it drains.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file, and that the model, tokenizer and runtime
    /// library files of local deployments exist: prints OK, or every error
    /// with its location.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Move a fleet's shared document (keys, models, deployments,
    /// environments) in and out of etcd.
    Config {
        #[command(subcommand)]
        command: gateway::fleet_cli::ConfigCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Operate a running gateway through its management API.
    #[command(flatten)]
    Ops(gateway::admin_client::Operation),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new random key once, and the config entry to paste.
    New {
        /// Who the key is for (shown in logs instead of the key).
        #[arg(long)]
        name: String,
        /// `all` (every model), `admin` (every model and the management
        /// API) or a comma-separated list of model ids.
        #[arg(long, default_value = "all")]
        scope: String,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli.command, &cli.api) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, api: &gateway::admin_client::ApiTarget) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ops(op) => gateway::admin_client::run(api, op),
        Command::Check { config } => match config::load_file_checked(&config) {
            Ok(_) => {
                println!("OK");
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                println!("{errors}");
                println!("{} error(s)", errors.errors.len());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Serve {
            config: path,
            upgrade,
        } => {
            // The files local replicas load are checked too, as `check`
            // and every reload do: a typo is an error now, not a crash loop.
            let config = config::load_file_checked(&path)
                .map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
            gateway::server::run(&config, &path, upgrade)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command } => gateway::fleet_cli::run(command),
        Command::Keys {
            command: KeysCommand::New { name, scope },
        } => {
            let scope = match scope.as_str() {
                "all" | "admin" => format!("{scope:?}"),
                ids => {
                    let ids: Vec<String> = ids
                        .split(',')
                        .map(|id| format!("{:?}", id.trim()))
                        .collect();
                    format!("[{}]", ids.join(", "))
                }
            };
            let key = config::generate_key()
                .map_err(|e| anyhow::anyhow!("reading OS randomness: {e}"))?;
            println!("API key (shown once, store it now):\n\n  {}\n", key.key);
            println!(
                "Add this to the gateway config:\n\n{}",
                key.config_snippet(&name, &scope)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
