//! `satellite-agent`: the host agent that makes a GPU host outside AWS an Amazon EKS node.
//!
//! Subcommands arrive with their issues (`join`, `run`, `proxy`, `datapath`, `admin`,
//! `leave`); see the repository README.
//!
//! Exit codes: `0` success, `2` bad command line.

use clap::Parser;

/// Host agent for satellite EKS nodes.
#[derive(Debug, Parser)]
#[command(name = "satellite-agent", version)]
struct Cli {}

fn main() {
    Cli::parse();
}
