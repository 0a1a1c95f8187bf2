//! Installs the test peers: Debian packages, a Python venv with moto and the AWS CLI, the
//! eBPF toolchain ([`crate::ebpf`]), and the CNI peers (the reference plugins and `cnitool`).
//!
//! Everything lands in [`satellite_tests::tools::cache_root`] (outside the work tree, so fresh
//! clones reuse it). Each step checks first and does nothing when already done.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use satellite_tests::tools;

/// Debian packages the tests and benchmarks use: libfaketime freezes clocks for the
/// byte-for-byte comparison with the AWS CLI; iproute2 (`ip`, `tc`) and ethtool build the
/// network namespaces of the datapath tests; iptables is the simulated provider's NAT there
/// and a peer of the datapath benchmark; haproxy, socat and iperf3 are the peers and the load
/// generator of `cargo xtask bench datapath` and `bench proxy`; bpftool reads the run-time
/// statistics of the benchmark's reference program.
const APT_PACKAGES: &[&str] = &[
    "faketime", "iproute2", "ethtool", "iptables", "haproxy", "socat", "iperf3", "bpftool",
];

/// PyPI packages, pinned: the peers we compare against must not move under us.
const PYTHON_REQUIREMENTS: &[&str] = &["moto[server]==5.2.5", "awscli==1.46.2"];

/// Runs every set-up step.
pub fn all() -> Result<()> {
    apt(APT_PACKAGES)?;
    crate::ebpf::setup()?;
    python_venv()?;
    cni_peers()?;
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

/// The CNI plugin's peers: Debian's reference plugins (`ptp`, `host-local`, `portmap` in
/// `/usr/lib/cni`), `nft` and `cnitool`, which no Debian binary package ships: it is built from the
/// `golang-github-appc-cni` source package (libcni 1.1.2, the same libcni containerd 1.6 uses)
/// in GOPATH mode and cached by source version under
/// [`satellite_tests::cni::cnitool_cache_dir`].
fn cni_peers() -> Result<()> {
    // nftables: the tests read the plugin's tables with `nft` (an independent reader);
    // strace: the crash tests delay a chosen system call of the plugin and kill it there.
    apt(&["containernetworking-plugins", "nftables", "strace"])?;
    let bin = satellite_tests::cni::cnitool_path();
    let dir = satellite_tests::cni::cnitool_cache_dir();
    let stamp = dir.join(".source-version");
    if bin.exists() && stamp.exists() {
        return Ok(());
    }
    apt(&["golang-go", "dpkg-dev"])?;
    ensure_deb_src()?;
    let version = cni_source_version()?;
    let work = tempfile::tempdir_in(tools::cache_root()).context("creating a build directory")?;
    eprintln!("xtask setup: building cnitool from Debian source golang-github-appc-cni {version}");
    run(Command::new("apt-get")
        .args([
            "-o",
            "DPkg::Lock::Timeout=600",
            "source",
            "-qq",
            "golang-github-appc-cni",
        ])
        .current_dir(work.path()))?;
    let upstream = version.split_once('-').map_or(version.as_str(), |(v, _)| v);
    let tree = work
        .path()
        .join(format!("golang-github-appc-cni-{upstream}"));
    if !tree.is_dir() {
        bail!(
            "apt-get source golang-github-appc-cni did not unpack {}: is dpkg-dev installed?",
            tree.display()
        );
    }
    // The tree has no go.mod dependencies beyond itself: a GOPATH link is all it needs.
    let gopath = work.path().join("gopath");
    let link = gopath.join("src/github.com/containernetworking/cni");
    std::fs::create_dir_all(link.parent().context("GOPATH link has a parent")?)?;
    std::os::unix::fs::symlink(&tree, &link).context("linking the source into GOPATH")?;
    std::fs::create_dir_all(&dir)?;
    let tmp_bin = dir.join(".cnitool.tmp");
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp_bin)
        .arg("./cnitool")
        .current_dir(&link)
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", work.path().join("gocache")))?;
    std::fs::rename(&tmp_bin, &bin).context("installing cnitool")?;
    std::fs::write(&stamp, &version).context("writing the cnitool stamp")
}

/// Adds the `deb-src` entry for Debian's own mirror (same mirror and suites as Debian's
/// default `debian.sources`; the sandbox builds Kubernetes and setup builds cnitool from
/// source packages) if missing, then `apt-get update`.
pub fn ensure_deb_src() -> Result<()> {
    const FILE: &str = "/etc/apt/sources.list.d/satellite-deb-src.sources";
    const CONTENT: &str = "# Added by `cargo xtask setup`: Debian source packages \
(Kubernetes and cnitool are built from Debian's source packages).\n\
Types: deb-src\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm bookworm-updates\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
    if Path::new(FILE).exists() {
        return Ok(());
    }
    eprintln!("xtask setup: adding {FILE} (deb-src entry)");
    let tmp = format!("{FILE}.tmp");
    std::fs::write(&tmp, CONTENT).with_context(|| format!("writing {tmp} (needs root)"))?;
    std::fs::rename(&tmp, FILE).with_context(|| format!("installing {FILE}"))?;
    run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update", "-qq"]))
}

/// The version of the `golang-github-appc-cni` source package (`apt-get update` once
/// when the index does not know it yet).
fn cni_source_version() -> Result<String> {
    let query = || -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["showsrc", "golang-github-appc-cni"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("Version: "))
            // bookworm (and bookworm-updates) carry one version of this package.
            .next()
            .map(str::to_owned)
    };
    if let Some(v) = query() {
        return Ok(v);
    }
    run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update", "-qq"]))?;
    query().context(
        "apt-cache showsrc golang-github-appc-cni found nothing: is the deb-src entry there?",
    )
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
