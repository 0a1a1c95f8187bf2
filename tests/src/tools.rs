//! Where the development tools live: one cache directory shared by `cargo xtask setup` (which
//! fills it) and the tests (which use it), outside the work tree so that fresh clones reuse it.

use std::path::{Path, PathBuf};

/// The cache root: `$SATELLITE_DEV_CACHE`, else `$XDG_CACHE_HOME/satellite-dev`, else
/// `$HOME/.cache/satellite-dev`, else `/var/cache/satellite-dev`.
pub fn cache_root() -> PathBuf {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SATELLITE_DEV_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("satellite-dev")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/satellite-dev")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/satellite-dev"))
}

/// The Python virtual environment holding `moto[server]` and `awscli`.
pub fn venv() -> PathBuf {
    cache_root().join("venv")
}

/// Path of a program in the venv (`aws`, `moto_server`), or a panic that says how to install it.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    require(&path, "cargo xtask setup");
    path
}

/// libfaketime's preload library (Debian package `faketime`), or a panic that says how to
/// install it.
pub fn libfaketime() -> PathBuf {
    let path = PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
    require(&path, "cargo xtask setup");
    path
}

/// The Kubernetes binaries the sandbox builds from Debian's source (`make WHAT=cmd/…`) into
/// [`kubernetes_bin_dir`]: the control plane, and kubelet and kube-proxy, which the agent
/// supervises on the node.
pub const KUBE_COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kubelet",
    "kube-proxy",
];

/// Directory of the Kubernetes binaries built from Debian's `kubernetes` source package
/// (`kube-apiserver`, `kube-controller-manager`, `kubelet`, v1.20.2): a symlink that
/// `cargo xtask sandbox up` (or `cargo xtask setup`) points at the build for the current
/// source version.
pub fn kubernetes_bin_dir() -> PathBuf {
    cache_root().join("kubernetes/bin")
}

/// Path of a Kubernetes binary built by the sandbox installer, or a panic that says how to
/// build it.
pub fn kube_bin(name: &str) -> PathBuf {
    let path = kubernetes_bin_dir().join(name);
    require(&path, "cargo xtask sandbox install");
    path
}

/// The locally built pause image (docker-archive tar, image `localhost/pause:local`) that the
/// sandbox imports into containerd, since no image can be pulled here.
pub fn pause_image_tar() -> PathBuf {
    cache_root().join("kubernetes/pause.tar")
}

/// The locally built busybox image (docker-archive tar, image `localhost/busybox:local`: Debian's
/// static busybox as `/bin/busybox` and `/bin/sh`), for pods that must do something (listen,
/// connect) in the sandbox.
pub fn busybox_image_tar() -> PathBuf {
    cache_root().join("kubernetes/busybox.tar")
}

fn require(path: &Path, how: &str) {
    assert!(
        path.exists(),
        "{} is missing: run `{how}` first (it installs the test peers)",
        path.display()
    );
}

/// Sets up `cmd` (the venv's `aws`) for moto while its auth is off: a cleared environment
/// with `PATH` and `HOME` only, no shared config or credentials files, no instance metadata,
/// throwaway setup-only keys, `region`, every service at `endpoint`, stdin closed.
pub fn aws_cli_setup_env<'a>(
    cmd: &'a mut std::process::Command,
    endpoint: &str,
    region: &str,
) -> &'a mut std::process::Command {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "setup-only")
        .env("AWS_DEFAULT_REGION", region)
        .env("AWS_ENDPOINT_URL", endpoint)
        .stdin(std::process::Stdio::null())
}
