//! `cargo xtask`: developer tasks for the satellite workspace.
//!
//! - `demo`: `setup`, then `sandbox join`: the local sandbox cluster with this machine joined
//!   as a Ready satellite node (the README's first command).
//! - `token-demo`: `setup`, then mint and verify a token against a local STS.
//! - `setup`: install what the tests and benchmarks need on a fresh Debian machine (apt
//!   packages, a Python venv with moto and the AWS CLI, the eBPF toolchain). Idempotent; a
//!   second run is a no-op.
//! - `build-ebpf`: build the tc eBPF object with Debian's toolchain (installed by `setup`) and
//!   print its path.
//! - `lint-ebpf`: `cargo fmt --check` and `cargo clippy -- -D warnings` for the eBPF crate
//!   (outside the workspace; clippy with the toolchain that builds it).
//! - `vm-test`: the datapath tests under Debian's 6.1 kernel in qemu (TCG).
//! - `test`: `setup` and `sandbox install`, then doc tests, `cargo nextest run --workspace` and
//!   `vm-test` (the README's test command).
//! - `sandbox install|up|join|down|status|exec`: the local sandbox cluster (root).
//! - `bench credential-plugin`: our exec plugin vs `aws eks get-token`, side by side.
//! - `bench datapath`: no NAT vs our tc NAT vs iptables NAT (iperf3, request/response), and
//!   the tc programs' cost per packet (root).
//! - `bench node`: sandbox start, join → Ready, the agent's steady-state RSS.
//! - `bench cni`: our CNI plugin vs the reference `ptp` + `host-local` (+ `portmap`), side by
//!   side (root).
//! - `bench proxy`: `satellite-agent proxy` vs HAProxy vs socat (throughput, connections/s).
//!
//! Exit codes: `0` success, `1` a step failed (the message says which), `2` bad command line.

mod bench;
mod demo;
mod ebpf;
mod sandbox;
mod setup;
mod vmtest;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Set up, start the local sandbox cluster and join this machine to it as a satellite node
    /// (ends with `kubectl get nodes -o wide` showing it Ready)
    Demo,
    /// Set up, then mint a real EKS token via AssumeRole against a local STS (moto)
    TokenDemo,
    /// Install test peers and tools (apt packages, Python venv, eBPF toolchain); idempotent and
    /// cached
    Setup,
    /// Install the eBPF toolchain if needed, build the tc eBPF object, print its path
    BuildEbpf,
    /// Install the eBPF toolchain if needed, then `cargo fmt --check` and `cargo clippy -- -D
    /// warnings` for the eBPF crate (not in the workspace) with the toolchain that builds it
    LintEbpf,
    /// Run the datapath tests under Debian's 6.1 kernel in qemu (TCG; netlink attach path)
    VmTest,
    /// Set up, then run the whole test suite: doc tests, every other test under
    /// cargo-nextest (extra arguments go to `cargo nextest run`), then `vm-test`
    Test {
        /// Arguments passed through to `cargo nextest run`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The local sandbox cluster (real Kubernetes v1.20.2, containerd, moto) in a network namespace
    Sandbox {
        #[command(subcommand)]
        action: sandbox::Action,
    },
    /// Run a benchmark against its peer, measured in the same run
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Task::Setup => setup::all(),
        Task::VmTest => vmtest::run(),
        Task::BuildEbpf => {
            ebpf::setup()?;
            println!("{}", ebpf::build()?.display());
            Ok(())
        }
        Task::LintEbpf => {
            ebpf::setup()?;
            ebpf::lint()
        }
        Task::Demo => {
            setup::all()?;
            sandbox::join(satellite_tests::tools::cache_root().join("sandbox"))
        }
        Task::TokenDemo => {
            setup::all()?;
            demo::run()
        }
        Task::Test { args } => {
            setup::all()?;
            // The sandbox tests need Kubernetes, containerd, etcd and the pause image (cached;
            // only the first run on a machine builds Kubernetes, ~4 min on 2 idle cores).
            sandbox::install::all()?;
            cargo(&["test", "--workspace", "--doc"])?;
            let mut nextest: Vec<String> = ["nextest", "run", "--workspace", "--all-targets"]
                .map(String::from)
                .to_vec();
            nextest.extend(args);
            cargo(&nextest)?;
            // The same datapath tests on another kernel (6.1: no TCX, netlink attachment).
            vmtest::run()
        }
        Task::Sandbox { action } => sandbox::run(action),
        Task::Bench { which } => {
            setup::all()?;
            bench::run(which)
        }
    }
}

/// Runs `cargo ARGS…` in the workspace root with the cargo that runs xtask.
pub fn cargo<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!(
            "cargo {:?} failed: {status}",
            args.iter().map(AsRef::as_ref).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The workspace root (the parent of xtask's manifest directory).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}
