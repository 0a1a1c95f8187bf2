//! Fixtures for CNI plugin tests and benchmarks: where `cnitool` and the reference plugins are,
//! a simulated node (a "host" network namespace with an uplink to an "outside" one), pod
//! namespaces, and runners for `cnitool` and for a plugin invoked directly, as a runtime does.
//!
//! The namespaces are [`Netns`] guards: unique names, deleted on drop, so tests run in
//! parallel and leave nothing behind even when they panic. Addresses are from 198.18.0.0/15
//! and exist only inside these namespaces.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;
use crate::tools;

/// Debian's reference plugins (`containernetworking-plugins`).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The node's uplink address (in the host namespace) and the outside peer's, on a /30.
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The outside namespace's address: the node's default gateway.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The uplink interface's name in the host namespace.
pub const UPLINK: &str = "uplink0";

/// Where `cargo xtask setup` caches `cnitool` (one build per Debian source version).
pub fn cnitool_cache_dir() -> PathBuf {
    tools::cache_root().join("cni")
}

/// Path `cnitool` is installed at (it may not exist yet).
pub fn cnitool_path() -> PathBuf {
    cnitool_cache_dir().join("cnitool")
}

/// `cnitool`, or a panic that says how to build it.
pub fn cnitool() -> PathBuf {
    let path = cnitool_path();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` (it builds cnitool from Debian's \
         golang-github-appc-cni source package)",
        path.display()
    );
    path
}

/// A simulated node: the plugin runs in `host`, whose uplink (`uplink0`, 198.18.0.1/30) leads
/// to `outside` (198.18.0.2, the default gateway), standing for the provider network.
pub struct Node {
    /// Where the plugin (and `cnitool`) runs: the node's root namespace.
    pub host: Netns,
    /// The network beyond the uplink.
    pub outside: Netns,
}

impl Node {
    /// Creates both namespaces and the uplink.
    pub fn new() -> Result<Self> {
        let host = Netns::new("scni-h")?;
        let outside = Netns::new("scni-o")?;
        host.veth(UPLINK, &outside, "wan0")?;
        host.ip(&["addr", "add", &format!("{UPLINK_ADDR}/30"), "dev", UPLINK])?;
        host.ip(&["link", "set", UPLINK, "up"])?;
        outside.ip(&["addr", "add", &format!("{OUTSIDE_ADDR}/30"), "dev", "wan0"])?;
        outside.ip(&["link", "set", "wan0", "up"])?;
        host.ip(&["route", "add", "default", "via", &OUTSIDE_ADDR.to_string()])?;
        Ok(Self { host, outside })
    }

    /// A fresh pod namespace.
    pub fn pod(&self) -> Result<Netns> {
        Netns::new("scni-p")
    }
}

/// Runs `cnitool` inside a node's host namespace with a conflist directory and a plugin path.
pub struct Cnitool {
    /// `NETCONFPATH`: holds the conflist(s).
    pub conf_dir: PathBuf,
    /// `CNI_PATH` entries.
    pub plugin_path: Vec<PathBuf>,
}

impl Cnitool {
    /// Runs `cnitool <action> <net> <pod netns path>` in `host` with `CAP_ARGS` = `cap_args`
    /// (JSON capability arguments such as port mappings) when given.
    pub fn run(
        &self,
        host: &Netns,
        action: &str,
        net: &str,
        pod: &Path,
        cap_args: Option<&str>,
    ) -> Result<Output> {
        let mut cmd = host.command(cnitool());
        cmd.args([action, net])
            .arg(pod)
            .env("NETCONFPATH", &self.conf_dir)
            .env("CNI_PATH", std::env::join_paths(&self.plugin_path)?)
            .stdin(Stdio::null());
        if let Some(args) = cap_args {
            cmd.env("CAP_ARGS", args);
        }
        cmd.output().context("running cnitool")
    }
}

/// A plugin invoked directly, as a runtime does: `CNI_*` in the environment, the network
/// configuration on stdin, inside a node's host namespace.
pub struct Invocation<'a> {
    /// The plugin binary.
    pub plugin: &'a Path,
    /// The whole environment besides `PATH`: `CNI_COMMAND`, `CNI_CONTAINERID`, ….
    pub env: Vec<(&'a str, String)>,
    /// stdin.
    pub stdin: Vec<u8>,
}

impl Invocation<'_> {
    /// Runs the plugin in `host` with exactly `env` (plus `PATH`) and returns its output.
    pub fn run(&self, host: &Netns) -> Result<Output> {
        let mut cmd = host.command(self.plugin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning the plugin")?;
        child
            .stdin
            .take()
            .context("plugin stdin")?
            .write_all(&self.stdin)
            .context("writing the plugin's stdin")?;
        child.wait_with_output().context("waiting for the plugin")
    }
}

/// The Kubernetes source tree `cargo xtask sandbox install` unpacked (its `vendor/` holds grpc
/// and cri-api), if present.
pub fn kubernetes_source_tree() -> Option<PathBuf> {
    let src = tools::cache_root().join("kubernetes/src");
    std::fs::read_dir(src)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("vendor/k8s.io/cri-api/pkg/apis/runtime/v1").is_dir())
}

/// Builds (once per source content, cached under [`cnitool_cache_dir`]) the small CRI client
/// whose Go source is `main_go`, against the Kubernetes tree's vendored grpc and cri-api, in
/// GOPATH mode. `Ok(None)` when that tree is not there (`cargo xtask sandbox install`
/// unpacks it). Concurrent callers wait on a lock, so the build runs once.
pub fn cri_client(main_go: &Path) -> Result<Option<PathBuf>> {
    let Some(tree) = kubernetes_source_tree() else {
        return Ok(None);
    };
    let source =
        std::fs::read(main_go).with_context(|| format!("reading {}", main_go.display()))?;
    let key = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&source)[..8]);
    let dir = cnitool_cache_dir();
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join(format!("cri-client-{key}"));
    // Held until this function returns: one build at a time.
    let _lock = satellite_fsutil::lock(&dir.join(".cri-client.lock"))
        .context("locking the cri-client build")?;
    if bin.exists() {
        return Ok(Some(bin));
    }
    let work = tempfile::tempdir_in(&dir)?;
    let pkg = work.path().join("ours/src/cri-client");
    std::fs::create_dir_all(&pkg)?;
    std::fs::write(pkg.join("main.go"), &source)?;
    // A second GOPATH entry whose src/ is the tree's vendor/: GOPATH mode resolves grpc and
    // cri-api there without touching the tree.
    std::fs::create_dir_all(work.path().join("vendor"))?;
    std::os::unix::fs::symlink(tree.join("vendor"), work.path().join("vendor/src"))?;
    let gopath = std::env::join_paths([work.path().join("ours"), work.path().join("vendor")])?;
    let tmp = work.path().join("cri-client");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&pkg)
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .context("running go (Debian golang-go; cargo xtask sandbox install installs it)")?;
    if !out.status.success() {
        bail!(
            "building cri-client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, &bin)?;
    Ok(Some(bin))
}
