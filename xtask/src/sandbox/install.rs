//! Installs what the sandbox cluster runs: Debian packages (etcd, containerd, runc, CNI
//! plugins, Go and the tools to build Kubernetes and the pause image), then builds
//! `kube-apiserver`, `kube-controller-manager`, `kubelet` and `kube-proxy` v1.20.2 from Debian's
//! `kubernetes` source package, a static pause image and a static busybox image.
//!
//! Everything is cached under [`tools::cache_root`]`/kubernetes`:
//! - `src/`: the unpacked source package;
//! - `<debian source version>/bin/`: the binaries of that source version, complete when
//!   `.complete` exists; `bin` is a symlink to the current one ([`tools::kubernetes_bin_dir`]);
//! - `pause.tar`: the pause image ([`tools::pause_image_tar`]);
//! - `busybox.tar`: the busybox image ([`tools::busybox_image_tar`]).
//!
//! A second run finds the symlink and the images and returns at once (no apt, no Go).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use satellite_tests::sandbox::{BUSYBOX_IMAGE, PAUSE_IMAGE};
use satellite_tests::tools;

use crate::setup::{apt, run};

/// Debian packages the sandbox runs or builds with.
const PACKAGES: &[&str] = &[
    "golang-go",
    "dpkg-dev",
    "make",
    "rsync",
    "jq",
    "gcc",
    "libc6-dev",
    "iproute2",
    "etcd-server",
    "containerd",
    "runc",
    "umoci",
    "skopeo",
    // The busybox image's only binary.
    "busybox-static",
    "containernetworking-plugins",
    // kubelet's KUBE-FIREWALL chains and the ptp plugin's ipMasq.
    "iptables",
];

/// The Kubernetes components the sandbox needs from the source tree (`make WHAT=…`).
use satellite_tests::tools::KUBE_COMPONENTS;

/// Installs everything (idempotent; instant when done).
pub fn all() -> Result<()> {
    crate::setup::all()?;
    let start = Instant::now();
    apt(PACKAGES)?;
    if which("kubectl").is_none() {
        apt(&["kubernetes-client"])?;
    }
    let root = tools::cache_root().join("kubernetes");
    if !tools::busybox_image_tar().exists() {
        build_busybox_image(&root)?;
    }
    if !is_complete(&tools::kubernetes_bin_dir()) || !tools::pause_image_tar().exists() {
        let src = source_tree(&root)?;
        if !is_complete(&tools::kubernetes_bin_dir()) {
            build_kubernetes(&root, &src)?;
        }
        if !tools::pause_image_tar().exists() {
            build_pause_image(&root, &src)?;
        }
        eprintln!(
            "xtask sandbox: install done in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Built, and with every component of [`KUBE_COMPONENTS`] (a tree built before one was added
/// is built again; Go's build cache makes that the new component's time).
fn is_complete(bin_dir: &Path) -> bool {
    bin_dir.join(".complete").exists() && KUBE_COMPONENTS.iter().all(|c| bin_dir.join(c).exists())
}

/// `PATH` lookup.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Adds the `deb-src` entry if missing, downloads and unpacks `apt-get source kubernetes`
/// into `root/src` (once per source version), and returns the tree and its version.
fn source_tree(root: &Path) -> Result<SourceTree> {
    crate::setup::ensure_deb_src()?;
    let version = source_version().or_else(|_| {
        run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update", "-qq"]))?;
        source_version()
    })?;
    let src_parent = root.join("src");
    let stamp = src_parent.join(".version");
    let upstream = version
        .split_once('-')
        .map_or(version.as_str(), |(v, _)| v)
        .to_owned();
    let tree = src_parent.join(format!("kubernetes-{upstream}"));
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(version.as_str()) || !tree.is_dir() {
        eprintln!("xtask sandbox: apt-get source kubernetes ({version})");
        if src_parent.exists() {
            std::fs::remove_dir_all(&src_parent)
                .with_context(|| format!("removing stale {}", src_parent.display()))?;
        }
        std::fs::create_dir_all(&src_parent)?;
        run(Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=600",
                "source",
                "-qq",
                "kubernetes",
            ])
            .current_dir(&src_parent))?;
        if !tree.is_dir() {
            bail!(
                "apt-get source kubernetes did not unpack {}: check dpkg-dev is installed",
                tree.display()
            );
        }
        std::fs::write(&stamp, &version)?;
    }
    Ok(SourceTree { tree, version })
}

struct SourceTree {
    tree: PathBuf,
    version: String,
}

/// The version of Debian's `kubernetes` source package (e.g. `1.20.5+really1.20.2-1.1+deb12u1`).
fn source_version() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["showsrc", "kubernetes"])
        .output()
        .context("running apt-cache showsrc kubernetes")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .max_by(|a, b| compare_debian_versions(a, b))
        .map(str::to_owned)
        .context("apt-cache showsrc kubernetes found no source package: is the deb-src entry there and `apt-get update` done?")
}

fn compare_debian_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let newer = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success());
    if newer {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Less
    }
}

/// Builds the components in GOPATH mode (module mode fails for this tree), as
/// `make WHAT=…` with a pinned version stamp, into `root/<version>/bin`, then points the
/// `bin` symlink at it.
fn build_kubernetes(root: &Path, src: &SourceTree) -> Result<()> {
    let out_dir = root.join(&src.version).join("bin");
    if !is_complete(&out_dir) {
        let gopath = root.join("gopath");
        let link = gopath.join("src/k8s.io/kubernetes");
        std::fs::create_dir_all(link.parent().context("GOPATH link has a parent")?)?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&src.tree, &link)
            .with_context(|| format!("linking {} into GOPATH", src.tree.display()))?;
        let what = KUBE_COMPONENTS
            .iter()
            .map(|c| format!("cmd/{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("xtask sandbox: building Kubernetes ({what}) from source; ~4 min on 2 cores");
        let start = Instant::now();
        run(Command::new("make")
            .arg(format!("WHAT={what}"))
            .current_dir(&link)
            .env("GOPATH", &gopath)
            .env("GOCACHE", root.join("gocache"))
            .env("GO111MODULE", "off")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .env("KUBE_GIT_VERSION", "v1.20.2")
            .env("KUBE_GIT_TREE_STATE", "clean"))?;
        eprintln!(
            "xtask sandbox: Kubernetes built in {:.0} s",
            start.elapsed().as_secs_f64()
        );
        std::fs::create_dir_all(&out_dir)?;
        for component in KUBE_COMPONENTS {
            let built = src.tree.join("_output/bin").join(component);
            let dest = out_dir.join(component);
            std::fs::copy(&built, &dest)
                .with_context(|| format!("copying {} (did make build it?)", built.display()))?;
        }
        std::fs::write(out_dir.join(".complete"), &src.version)?;
    }
    // Repoint `bin` atomically: a new symlink renamed over the old one.
    let link = tools::kubernetes_bin_dir();
    let tmp = root.join(".bin.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new(&src.version).join("bin"), &tmp)?;
    std::fs::rename(&tmp, &link).with_context(|| format!("updating {}", link.display()))
}

/// Builds the pause image: `pause.c` from the tree, compiled `-static`, as the only file
/// of an image.
fn build_pause_image(root: &Path, src: &SourceTree) -> Result<()> {
    eprintln!("xtask sandbox: building the pause image {PAUSE_IMAGE}");
    let work = tempfile::tempdir_in(root).context("temp dir for the pause image")?;
    let binary = work.path().join("pause");
    run(Command::new("gcc")
        .args([
            "-Os",
            "-static",
            "-Wall",
            "-DVERSION=satellite-sandbox",
            "-o",
        ])
        .arg(&binary)
        .arg(src.tree.join("build/pause/linux/pause.c")))?;
    run(Command::new("strip").arg(&binary))?;
    build_image(
        work.path(),
        PAUSE_IMAGE,
        &[(binary.as_path(), "pause")],
        &[],
        "/pause",
        &tools::pause_image_tar(),
    )
}

/// Builds the busybox image: Debian's static busybox as `/bin/busybox`, `/bin/sh` a link to
/// it; pods give their own command.
fn build_busybox_image(root: &Path) -> Result<()> {
    eprintln!("xtask sandbox: building the busybox image {BUSYBOX_IMAGE}");
    std::fs::create_dir_all(root)?;
    let work = tempfile::tempdir_in(root).context("temp dir for the busybox image")?;
    build_image(
        work.path(),
        BUSYBOX_IMAGE,
        &[(Path::new("/bin/busybox"), "bin/busybox")],
        &[("busybox", "bin/sh")],
        "/bin/busybox",
        &tools::busybox_image_tar(),
    )
}

/// Packs `files` (host path, path in the image) and `links` (target, path in the image) as the
/// only layer of an OCI image (umoci; user 65535, as Kubernetes' pause), exported as a docker-archive tar (skopeo)
/// that containerd imports, stored at `dest`.
fn build_image(
    work: &Path,
    name: &str,
    files: &[(&Path, &str)],
    links: &[(&str, &str)],
    entrypoint: &str,
    dest: &Path,
) -> Result<()> {
    let layout = work.join("oci");
    let image = format!("{}:local", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    let bundle = work.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    for (from, to) in files {
        let to = rootfs.join(to);
        std::fs::create_dir_all(to.parent().context("image path")?)?;
        std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    for (target, link) in links {
        std::os::unix::fs::symlink(target, rootfs.join(link))?;
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        entrypoint,
        "--config.user",
        "65535:65535",
    ]))?;
    let tar = work.join("image.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{image}"))
        .arg(format!("docker-archive:{}:{name}", tar.display())))?;
    std::fs::rename(&tar, dest).with_context(|| format!("storing {}", dest.display()))
}
