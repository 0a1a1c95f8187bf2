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
//!   `vm-test` (the README's test command). The tests that need root are `#[ignore]`d: as root
//!   they run too (`--run-ignored all`); otherwise the task says how many are left out, and
//!   nextest counts them as skipped, never as passed. On kernels without TCX (< 6.6) the TCX
//!   variants are left out by a filter, also said.
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
            // Every failure in one run (CI runs once): no stop at the first.
            let mut nextest: Vec<String> = [
                "nextest",
                "run",
                "--workspace",
                "--all-targets",
                "--no-fail-fast",
            ]
            .map(String::from)
            .to_vec();
            nextest.extend(root_test_selection(&args)?);
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

/// What `cargo xtask test` adds to `cargo nextest run` for the tests that need root (all of
/// them `#[ignore = "needs root…"]`): `--run-ignored all` when running as root, else nothing and
/// a note with how many are not run; and, on a kernel without TCX, a filter leaving out the TCX
/// variants (which would fail there), with a note. Nothing when `args` already choose
/// (`--run-ignored`, `--ignored`, `--include-ignored`, `-E`).
fn root_test_selection(args: &[String]) -> Result<Vec<String>> {
    let chosen = |flags: &[&str]| {
        args.iter().any(|a| {
            flags
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
        })
    };
    let mut extra = Vec::new();
    if !chosen(&["--run-ignored", "--ignored", "--include-ignored"]) {
        if satellite_tests::netns::is_root() {
            eprintln!("xtask test: running as root: the tests that need root (#[ignore]) run too");
            extra.extend(["--run-ignored", "all"].map(String::from));
        } else {
            let ignored = count_ignored_tests()?;
            eprintln!(
                "xtask test: not root: {ignored} tests that need root are NOT run (nextest \
                 reports them as skipped); run `sudo -E cargo xtask test` to run them"
            );
        }
    }
    if let Some(release) = kernel_without_tcx()
        && !chosen(&["-E", "--filterset", "--filter-expr"])
    {
        eprintln!(
            "xtask test: Linux {release} has no TCX (6.6+): the TCX variants (`*_tcx`) are left \
             out (-E 'not test(/_tcx$/)'), not passed"
        );
        extra.extend(["-E", "not test(/_tcx$/)"].map(String::from));
    }
    Ok(extra)
}

/// The number of `#[ignore]`d tests in the workspace (`cargo nextest list --run-ignored only`).
fn count_ignored_tests() -> Result<usize> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["nextest", "list", "--workspace", "--all-targets"])
        .args(["--run-ignored", "only", "--message-format", "oneline"])
        .current_dir(workspace_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo nextest list")?;
    if !out.status.success() {
        bail!("cargo nextest list failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// The running kernel's release when it is older than 6.6 (no TCX), else `None`.
fn kernel_without_tcx() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim().to_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next()?, numbers.next()?);
    (version < (6, 6)).then_some(release)
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
