//! Installs the test peers: Debian packages, a Python venv with moto and the AWS CLI, and the
//! eBPF toolchain ([`crate::ebpf`]).
//!
//! Everything lands in [`satellite_tests::tools::cache_root`] (outside the work tree, so fresh
//! clones reuse it). Each step checks first and does nothing when already done.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use satellite_tests::tools;

/// Debian packages the tests and benchmarks use: libfaketime freezes clocks for the
/// byte-for-byte comparison with the AWS CLI; iproute2 (`ip`, `tc`) and ethtool build the
/// network namespaces of the datapath tests; haproxy, socat and iperf3 are the peers and the
/// load generator of `cargo xtask bench proxy`.
const APT_PACKAGES: &[&str] = &[
    "faketime", "iproute2", "ethtool", "haproxy", "socat", "iperf3",
];

/// PyPI packages, pinned: the peers we compare against must not move under us.
const PYTHON_REQUIREMENTS: &[&str] = &["moto[server]==5.2.5", "awscli==1.46.2"];

/// Runs every set-up step.
pub fn all() -> Result<()> {
    apt(APT_PACKAGES)?;
    crate::ebpf::setup()?;
    python_venv()?;
    nextest()
}

/// cargo-nextest runs the suite (one process per test, so a test's environment and a crashed
/// child never leak into another). Most machines of this kind ship it; install it otherwise.
fn nextest() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let present = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-nextest from crates.io");
    run(Command::new(&cargo).args(["install", "--locked", "cargo-nextest"]))
}

/// Installs the Debian `packages` that are not installed yet (`apt-get update` first).
pub fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing Debian packages {missing:?}");
    let lock = "DPkg::Lock::Timeout=600";
    run(Command::new("apt-get").args(["-o", lock, "update", "-qq"]))?;
    run(Command::new("apt-get")
        .args([
            "-o",
            lock,
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn python_venv() -> Result<()> {
    let venv = tools::venv();
    let stamp = venv.join(".satellite-requirements");
    let wanted = PYTHON_REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: creating Python venv {} ({wanted:?})",
        venv.display()
    );
    std::fs::create_dir_all(tools::cache_root()).context("creating the dev cache directory")?;
    if !venv.join("bin/python").exists() && run(&mut venv_cmd(&venv)).is_err() {
        // Debian's system Python needs the venv module packaged separately.
        apt(&["python3-venv"])?;
        run(&mut venv_cmd(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_REQUIREMENTS))?;
    std::fs::write(&stamp, wanted).context("writing the venv stamp")
}

fn venv_cmd(venv: &Path) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv", "--clear"]).arg(venv);
    cmd
}

/// Runs `cmd`, failing unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "{:?} {:?} failed: {status}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        );
    }
    Ok(())
}
