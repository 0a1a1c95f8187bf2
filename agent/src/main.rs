//! `satellite-agent`: the host agent that makes a GPU host outside AWS an Amazon EKS node.
//!
//! # Commands
//! ```text
//! satellite-agent join  -c node.yaml [--root DIR] [--dry-run]   # render kubelet's files
//! satellite-agent run   -c node.yaml [--root DIR]               # supervise kubelet (systemd Type=notify)
//! satellite-agent admin authorize|revoke --role-arn ARN (--node-name NAME | -c node.yaml)
//!                       [--kubeconfig FILE] [--dry-run]         # kube-system/aws-auth mapping
//! satellite-agent proxy --map N=PUBLIC_ADDR:PORTS… | -c proxy.yaml  # VPC side: TCP pass-through
//! ```
//! Logs go to stderr; verbosity from `SATELLITE_LOG` (`info` default; `kubelet=warn` style
//! per-target directives accepted).
//!
//! # Exit codes
//! | code | meaning |
//! |------|---------|
//! | 0 | success (`join --dry-run`: also when changes are pending) |
//! | 1 | other failure (`proxy`: a port could not be bound) |
//! | 2 | bad command line |
//! | 3 | invalid NodeConfig, ProxyConfig or input |
//! | 4 | AWS failure (credentials, STS, EKS, EC2) |
//! | 5 | Kubernetes API failure (unreachable, unauthorized, aws-auth refused) |

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use satellite_agent::admin::{self, Action, NodeMapping};
use satellite_agent::config::{NodeConfig, node_name};
use satellite_agent::join::{self, JoinOptions};
use satellite_agent::run::{self, RunOptions};

/// Host agent for satellite EKS nodes.
#[derive(Debug, Parser)]
#[command(name = "satellite-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Proxy(satellite_agent::proxy::ProxyArgs),
    /// Cluster-side administration (run with cluster-admin credentials)
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Map the node's IAM role (or user) to system:node:<name> in kube-system/aws-auth
    Authorize(AdminArgs),
    /// Remove that mapping (and nothing else)
    Revoke(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The node's IAM role ARN (or IAM user ARN, mapped under mapUsers) [default: the NodeConfig's roleArn]
    #[arg(long)]
    role_arn: Option<String>,
    /// The node name (fargate-ip-…); or give the NodeConfig with -c and --node-ip
    #[arg(long, conflicts_with = "node_ip")]
    node_name: Option<String>,
    /// The node IP; the name is derived with the NodeConfig's region
    #[arg(long, requires = "config")]
    node_ip: Option<std::net::Ipv4Addr>,
    /// The NodeConfig file
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// kubeconfig with cluster-admin rights [default: KUBECONFIG or ~/.kube/config]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Print the diff; change nothing
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // The proxy is a data plane: one worker per CPU. Everything else: two.
    let workers = match cli.command {
        Command::Proxy(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
        _ => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("satellite-agent: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("satellite-agent: error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command) -> Result<(), (u8, String)> {
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
            .await
            .map_err(|e| (e.exit_code(), e.to_string()))?;
            print!("{}", report.diff);
            if dry_run {
                eprintln!(
                    "node {} ({}): {}",
                    report.node_name,
                    report.node_ip,
                    if report.diff.is_empty() {
                        "up to date"
                    } else {
                        "changes pending (dry run)"
                    }
                );
            } else {
                eprintln!(
                    "node {} ({}): {} file(s) written",
                    report.node_name,
                    report.node_ip,
                    report.changed.len()
                );
            }
            Ok(())
        }
        Command::Run { config, root } => run::run(&RunOptions {
            config_path: config,
            root,
        })
        .await
        .map_err(|e| (e.exit_code(), e.to_string())),
        Command::Proxy(args) => satellite_agent::proxy::run(&args)
            .await
            .map_err(|e| (e.exit_code(), e.to_string())),
        Command::Admin { command } => {
            let (action, args) = match command {
                AdminCommand::Authorize(args) => (Action::Authorize, args),
                AdminCommand::Revoke(args) => (Action::Revoke, args),
            };
            admin_command(action, args).await
        }
    }
}

async fn admin_command(action: Action, args: AdminArgs) -> Result<(), (u8, String)> {
    let invalid = |message: String| (3, message);
    let config = args
        .config
        .as_deref()
        .map(NodeConfig::load)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    let arn = args
        .role_arn
        .or_else(|| config.as_ref().map(|c| c.spec.identity.role_arn.clone()))
        .ok_or_else(|| invalid("give --role-arn, or -c with the node's NodeConfig".into()))?;
    if !arn.starts_with("arn:") || !(arn.contains(":role/") || arn.contains(":user/")) {
        return Err(invalid(format!("{arn:?} is not an IAM role or user ARN")));
    }
    let node_name = match (args.node_name, args.node_ip, &config) {
        (Some(name), _, _) => name,
        (None, Some(ip), Some(config)) => node_name(ip, &config.spec.cluster.region),
        (None, _, Some(config)) => match config.spec.node.ip {
            Some(ip) => node_name(ip, &config.spec.cluster.region),
            None => {
                return Err(invalid(
                    "the NodeConfig does not fix the node IP: give --node-ip or --node-name".into(),
                ));
            }
        },
        (None, _, None) => return Err(invalid("give --node-name (or -c with --node-ip)".into())),
    };
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
        }
        None => kube::Config::from_kubeconfig(&Default::default()).await,
    }
    .map_err(|e| invalid(format!("kubeconfig: {e}")))?;
    let client = kube::Client::try_from(kube_config).map_err(|e| (5, e.to_string()))?;
    let mapping = NodeMapping { arn, node_name };
    let outcome = admin::apply(client, action, &mapping, args.dry_run)
        .await
        .map_err(|e| match e {
            admin::AdminError::Kube(_) | admin::AdminError::Contended => (5, e.to_string()),
            _ => (3, e.to_string()),
        })?;
    print!("{}", outcome.diff);
    let verb = match action {
        Action::Authorize => "authorized",
        Action::Revoke => "revoked",
    };
    eprintln!(
        "{} {} as system:node:{}: {}",
        verb,
        mapping.arn,
        mapping.node_name,
        match (outcome.changed, args.dry_run) {
            (false, _) => "already so, nothing changed",
            (true, true) => "dry run, nothing written",
            (true, false) => "aws-auth updated",
        }
    );
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SATELLITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}
