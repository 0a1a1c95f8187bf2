//! `cargo xtask sandbox install|up|down|status|exec`: the local sandbox cluster (see
//! [`satellite_tests::sandbox`]). `up` installs first (cached), builds `sandbox-authenticator`,
//! then starts everything in `--work-dir` (default `<cache root>/sandbox`). `join` also joins
//! this machine as a satellite node ([`satellite_tests::sandbox::node`]).

pub mod install;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use satellite_tests::sandbox::{SandboxInfo, lifecycle, node};
use satellite_tests::tools;

/// `cargo xtask sandbox …`
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Install packages and build Kubernetes v1.20.2 and the pause image (cached)
    Install,
    /// Start the sandbox (a no-op reporting status when it is already up); writes sandbox.json
    Up {
        /// Work dir holding every file of this sandbox
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Bring the sandbox up if needed, then join this machine as a satellite node
    /// (`satellite-agent admin authorize`, `join`, `run`) and wait until the Node is Ready
    Join {
        /// Work dir of the sandbox
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Stop everything the sandbox started and remove its namespace and runtime state (logs stay)
    Down {
        /// Work dir of the sandbox
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Report each component: pid and health; exit 1 unless all are healthy
    Status {
        /// Work dir of the sandbox
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Run a command inside the sandbox's network namespace, KUBECONFIG = the admin kubeconfig
    Exec {
        /// Work dir of the sandbox
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// The command and its arguments (after `--`)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

fn default_work_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| tools::cache_root().join("sandbox"))
}

/// Runs `action`.
pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Install => install::all(),
        Action::Up { work_dir } => up(default_work_dir(work_dir)).map(drop),
        Action::Join { work_dir } => join(default_work_dir(work_dir)),
        Action::Down { work_dir } => {
            let work_dir = default_work_dir(work_dir);
            lifecycle::down(&work_dir)?;
            println!("sandbox in {} is down", work_dir.display());
            Ok(())
        }
        Action::Status { work_dir } => {
            let work_dir = default_work_dir(work_dir);
            if !print_status(&work_dir) {
                bail!("the sandbox in {} is not (fully) up", work_dir.display());
            }
            Ok(())
        }
        Action::Exec { work_dir, command } => {
            let info = SandboxInfo::load(&default_work_dir(work_dir))?;
            let status = info
                .command(&command[0])
                .args(&command[1..])
                .status()
                .with_context(|| format!("running {:?} in namespace {}", command[0], info.netns))?;
            if !status.success() {
                bail!("{:?} failed: {status}", command[0]);
            }
            Ok(())
        }
    }
}

/// `sandbox up`: starts the sandbox in `work_dir` unless it is already up; its contract.
fn up(work_dir: PathBuf) -> Result<SandboxInfo> {
    let start = Instant::now();
    // Already up: report, touch nothing (no install check, no cargo build).
    if let Ok(info) = SandboxInfo::load(&work_dir)
        && lifecycle::status(&work_dir).iter().all(|c| c.healthy)
    {
        print_status(&work_dir);
        println!("sandbox in {} is already up", work_dir.display());
        return Ok(info);
    }
    install::all()?;
    let authenticator_bin = build_authenticator()?;
    let info = lifecycle::up(&lifecycle::UpOptions {
        work_dir: work_dir.clone(),
        authenticator_bin,
    })?;
    print_status(&info.work_dir);
    println!(
        "sandbox up in {:.1} s: {}/sandbox.json; try `cargo xtask sandbox exec --work-dir {} -- kubectl get ns`",
        start.elapsed().as_secs_f64(),
        info.work_dir.display(),
        info.work_dir.display()
    );
    Ok(info)
}

/// Builds what a node runs (the agent, the credential plugin, the CNI plugin), `release` or
/// debug, and returns their paths.
pub fn node_binaries(release: bool) -> Result<node::NodeBinaries> {
    let mut args = vec!["build", "--quiet"];
    if release {
        args.push("--release");
    }
    args.extend([
        "-p",
        "satellite-agent",
        "-p",
        "satellite-credential-plugin",
        "-p",
        "satellite-cni",
    ]);
    crate::cargo(&args)?;
    let dir = crate::bench::target_dir().join(if release { "release" } else { "debug" });
    Ok(node::NodeBinaries {
        agent: dir.join("satellite-agent"),
        credential_plugin: dir.join("satellite-credential-plugin"),
        cni_plugin: dir.join("satellite-cni"),
    })
}

/// `sandbox join`: `up`, then this machine as a node of it, Ready, with its serving
/// certificate issued; ends with `kubectl get nodes -o wide` and `kubectl logs` of a pod on
/// the node.
pub fn join(work_dir: PathBuf) -> Result<()> {
    let info = up(work_dir)?;
    let bins = node_binaries(false)?;
    println!(
        "==> joining this machine: satellite-agent admin authorize, join, run ({})",
        node::config_path(&info).display()
    );
    let joined = node::up(&info, &bins)?;
    println!(
        "==> node {} Ready {:.1} s after `join` started; agent log: {}",
        joined.name,
        joined.join_to_ready.as_secs_f64(),
        satellite_tests::sandbox::processes::log_file(&info.work_dir, node::AGENT).display()
    );
    let csr = node::wait_serving_certificate(&info, &joined.name, Duration::from_secs(60))?;
    println!(
        "==> kubelet's serving certificate issued: CSR {csr} approved by `satellite-agent admin approve-csrs` (log: {})",
        satellite_tests::sandbox::processes::log_file(&info.work_dir, node::APPROVER).display()
    );
    let status = info
        .command("kubectl")
        .args(["get", "nodes", "-o", "wide"])
        .status()
        .context("running kubectl")?;
    if !status.success() {
        bail!("kubectl get nodes failed: {status}");
    }
    println!(
        "==> kubectl logs hello (a pod on {}: API server → N {} → proxy → {} → NAT → tc → kubelet)",
        joined.name, info.node_ip, info.public_address
    );
    print!(
        "{}",
        node::pod_logs(&info, &joined.name, "hello", "hello from a satellite node")?
    );
    println!(
        "stop with `cargo xtask sandbox down{}`",
        if info.work_dir == tools::cache_root().join("sandbox") {
            String::new()
        } else {
            format!(" --work-dir {}", info.work_dir.display())
        }
    );
    Ok(())
}

/// Prints one line per component; true when all are healthy.
fn print_status(work_dir: &std::path::Path) -> bool {
    let status = lifecycle::status(work_dir);
    for c in &status {
        println!("{c}");
    }
    status.iter().all(|c| c.healthy)
}

/// Builds `sandbox-authenticator` and returns its path.
fn build_authenticator() -> Result<PathBuf> {
    crate::cargo(&[
        "build",
        "--quiet",
        "-p",
        "satellite-tests",
        "--bin",
        "sandbox-authenticator",
    ])?;
    Ok(crate::bench::target_dir().join("debug/sandbox-authenticator"))
}
