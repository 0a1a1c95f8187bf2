//! The `satellite-agent` command line: what each subcommand takes, and [`dispatch`] running
//! one. `main` only parses, dispatches and prints the error (see [`crate::error`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::{self, Action, AdminArgs};
use crate::datapath::cli::{self as datapath, DatapathCommand};
use crate::error::AgentError;
use crate::join::{self, JoinOptions};
use crate::run::{self, RunOptions};

/// Host agent for satellite EKS nodes.
#[derive(Debug, Parser)]
#[command(name = "satellite-agent", version)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve the cluster and node IP, check the node identity, write kubelet's files
    Join {
        /// The NodeConfig file
        #[arg(short, long)]
        config: PathBuf,
        /// Write everything under this directory instead of /
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print the diff of what would change; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the node: supervise kubelet, keep labels, notify systemd
    Run {
        /// The NodeConfig file
        #[arg(short, long)]
        config: PathBuf,
        /// The directory `join` wrote under
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// VPC side: pass TCP through from each node IP N to the GPU host's public address
    Proxy(crate::proxy::ProxyArgs),
    /// Cluster-side administration (run with cluster-admin credentials)
    Admin {
        /// The admin subcommand.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The host datapath on its own (root): N on lo, peer routes, tc NAT with the proxy
    Datapath {
        /// The datapath subcommand.
        #[command(subcommand)]
        command: DatapathCommand,
    },
    /// Remove what the agent installed on this host (the datapath of the NodeConfig)
    Leave {
        /// The NodeConfig file
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// `satellite-agent admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Map the node's IAM role (or user) to system:node:NAME in kube-system/aws-auth
    Authorize(AdminArgs),
    /// Remove that mapping (and nothing else)
    Revoke(AdminArgs),
    /// Approve satellite nodes' kubelet-serving CSRs whose SANs are the node's own; deny forged ones
    ApproveCsrs(crate::csr::ApproverArgs),
    /// Print the ClusterRole and binding approve-csrs needs (pipe to kubectl apply -f -)
    ApproverRbac(crate::csr::RbacArgs),
}

impl Command {
    /// Tokio worker threads for this command: the proxy is a data plane (one per CPU);
    /// everything else needs two.
    pub fn worker_threads(&self) -> usize {
        match self {
            Command::Proxy(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
            _ => 2,
        }
    }
}

/// Runs `command` to its end; results go to stdout, progress to stderr.
///
/// Errors: whatever the subcommand fails with (see [`AgentError`] for the exit codes).
pub async fn dispatch(command: Command) -> Result<(), AgentError> {
    match command {
        Command::Join {
            config,
            root,
            dry_run,
        } => {
            let agent_binary = std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/satellite-agent"));
            let report = join::join(&JoinOptions {
                config_path: config,
                root,
                dry_run,
                agent_binary,
            })
            .await?;
            print!("{}", report.diff);
            eprintln!("{}", report.summary(dry_run));
            Ok(())
        }
        Command::Run { config, root } => Ok(run::run(&RunOptions {
            config_path: config,
            root,
        })
        .await?),
        Command::Proxy(args) => Ok(crate::proxy::run(&args).await?),
        Command::Admin { command } => match command {
            AdminCommand::Authorize(args) => admin::command(Action::Authorize, &args).await,
            AdminCommand::Revoke(args) => admin::command(Action::Revoke, &args).await,
            AdminCommand::ApproveCsrs(args) => crate::csr::command(&args).await,
            AdminCommand::ApproverRbac(args) => crate::csr::rbac_command(&args),
        },
        Command::Datapath { command } => datapath::command(command).await,
        Command::Leave { config } => datapath::leave(&config).await,
    }
}
