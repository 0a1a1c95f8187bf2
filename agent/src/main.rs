//! `satellite-agent`: the host agent that makes a GPU host outside AWS an Amazon EKS node.
//!
//! # Commands
//! ```text
//! satellite-agent join  -c node.yaml [--root DIR] [--dry-run]   # render kubelet's files
//! satellite-agent run   -c node.yaml [--root DIR]               # supervise kubelet (systemd Type=notify)
//! satellite-agent admin authorize|revoke --role-arn ARN (--node-name NAME | -c node.yaml)
//!                       [--kubeconfig FILE] [--dry-run]         # kube-system/aws-auth mapping
//! satellite-agent admin approve-csrs [--watch] [--dry-run] [--kubeconfig FILE]
//!                       [--service-cidr CIDRS] …                # serving CSRs: approve nodes' own, deny forged
//! satellite-agent admin approver-rbac [--user U | --group G]    # the approver's ClusterRole + binding
//! satellite-agent datapath up (-c node.yaml | --node-ip N --peer ADDR…) [--uplink IF]
//!                       [--allow-ports LIST] [--watch] …        # N on lo, peer routes, tc NAT
//! satellite-agent datapath down [--uplink IF] | status [--uplink IF] [--json]
//! satellite-agent leave -c node.yaml                            # remove what the agent installed
//! satellite-agent proxy --map N=PUBLIC_ADDR:PORTS… | -c proxy.yaml  # VPC side: TCP pass-through
//! ```
//! Logs go to stderr; verbosity from `SATELLITE_LOG` (`info` default; `kubelet=warn` style
//! per-target directives accepted).
//!
//! # Exit codes
//! See [`satellite_agent::error::ExitCode`]: 0 success, 1 other, 2 usage, 3 invalid input,
//! 4 AWS, 5 Kubernetes API, 6 host networking. `datapath status` exits 0 when everything `up`
//! installed is in place, 1 when something is missing or nothing is installed.

use clap::Parser;
use satellite_agent::cli::{Cli, dispatch};
use satellite_agent::error::{AgentError, ExitCode, Report};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.command.worker_threads())
        .enable_all()
        .build()
        .map_err(|source| AgentError::Runtime {
            what: "starting the runtime",
            source,
        })
        .and_then(|runtime| runtime.block_on(dispatch(cli.command)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("satellite-agent: error: {}", Report(&error));
            ExitCode::from(&error).into()
        }
    }
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
