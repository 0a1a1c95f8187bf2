//! `cargo xtask vm-test`: the datapath tests (`agent/tests/datapath.rs`, and the host-side
//! tests of `agent/tests/vpc.rs` that need no iptables: `satellite-agent datapath up|down|status`
//! with rtnetlink and netlink attachment) under Debian's 6.1 kernel in qemu, where TCX does not
//! exist and the netlink `cls_bpf` path runs.
//!
//! The way aya tests its own kernel support: a small initramfs whose `/init` (a busybox shell
//! script) mounts the pseudo file systems, loads the modules, runs the test binary and prints a
//! result line that this side parses. Everything the tests execute (`ip`, `tc`, `ethtool`) is
//! copied from the host with the shared libraries `ldd` names. qemu runs with TCG (these
//! machines have no KVM).
//!
//! What runs, honestly counted: the test binaries run with libtest's `--include-ignored` (the
//! root tests are `#[ignore = "needs root"]`; `/init` is root). Two groups are left out by name
//! (`--skip`), and libtest's summary line counts them as "filtered out", never as passed: the
//! TCX variants (`*_tcx`), since Linux 6.1 has no TCX (run there, they would fail: they assert
//! the kernel has it), and the end-to-end VPC test (`vpc_client…`), which needs iptables for
//! the provider's NAT and the VM has none. Both run on the host (`cargo nextest run`) instead.
//! The task prints this before booting.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::setup;

/// Debian packages: qemu, Debian's kernel (6.1 on bookworm, modules included), a static
/// busybox for `/init`, cpio to pack the initramfs.
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "linux-image-amd64",
    "busybox-static",
    "cpio",
];

/// Modules the tests need on Debian's kernel (built as modules there).
const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];

/// Host programs the tests run, copied into the guest.
const TOOLS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/tc", "/usr/sbin/ethtool"];

/// busybox applets `/init` and the tests use.
const APPLETS: &[&str] = &[
    "sh", "mount", "umount", "mkdir", "modprobe", "poweroff", "sysctl", "echo", "cat",
];

const RESULT_MARKER: &str = "SATELLITE-VM-TEST rc=";

/// Installs what it needs, builds the test binary, packs the initramfs, boots it.
pub fn run() -> Result<()> {
    setup::apt(APT_PACKAGES)?;
    crate::ebpf::setup()?;
    let binaries = build_test_binaries()?;
    let (kernel, version) = kernel()?;
    let work = tempfile::Builder::new().prefix("satellite-vm-").tempdir()?;
    let root = work.path().join("root");
    std::fs::create_dir_all(&root)?;
    pack_root(&root, &binaries, &version)?;
    let initramfs = work.path().join("initramfs.cpio");
    cpio(&root, &initramfs)?;

    eprintln!(
        "xtask vm-test: left out in the VM (libtest counts them as \"filtered out\"): the TCX \
         variants (`*_tcx`, Linux {version} has no TCX) and the end-to-end VPC test \
         (`vpc_client…`, no iptables in the VM)"
    );
    eprintln!("xtask vm-test: booting {} (TCG)", kernel.display());
    let output = Command::new("timeout")
        .arg("600")
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
        .stdin(Stdio::null())
        .output()
        .context("starting qemu")?;
    let console = String::from_utf8_lossy(&output.stdout);
    print!("{console}");
    let rc = console
        .lines()
        .find_map(|l| l.trim().strip_prefix(RESULT_MARKER))
        .map(str::trim);
    match rc {
        Some("0") => Ok(()),
        Some(rc) => bail!("the tests failed in the VM (exit status {rc})"),
        None => bail!("the VM ended without a result line ({})", output.status),
    }
}

/// The executables the VM runs.
struct Binaries {
    /// `agent/tests/datapath.rs`.
    datapath: PathBuf,
    /// `agent/tests/vpc.rs`.
    vpc: PathBuf,
    /// `satellite-agent`, which the vpc tests run by its build path (`CARGO_BIN_EXE_…`).
    agent: PathBuf,
}

/// `cargo test --no-run` for the datapath and vpc tests; their executables and the agent's.
fn build_test_binaries() -> Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "test",
            "-p",
            "satellite-agent",
            "--test",
            "datapath",
            "--test",
            "vpc",
        ])
        .args(["--no-run", "--message-format", "json"])
        .current_dir(crate::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the datapath tests failed: {}", output.status);
    }
    let artifacts: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect();
    let executable = |name: &str, kind: &str| {
        artifacts
            .iter()
            .filter(|m| m["target"]["name"] == name && m["target"]["kind"][0] == kind)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo named no {kind} executable {name}"))
    };
    Ok(Binaries {
        datapath: executable("datapath", "test")?,
        vpc: executable("vpc", "test")?,
        agent: executable("satellite-agent", "bin")?,
    })
}

/// The newest installed Debian 6.1 kernel and its release string.
fn kernel() -> Result<(PathBuf, String)> {
    let mut kernels: Vec<String> = std::fs::read_dir("/boot")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .filter(|v| v.starts_with("6.1."))
        .collect();
    kernels.sort();
    let version = kernels
        .pop()
        .context("no /boot/vmlinuz-6.1.* (linux-image-amd64)")?;
    Ok((PathBuf::from(format!("/boot/vmlinuz-{version}")), version))
}

fn pack_root(root: &Path, binaries: &Binaries, version: &str) -> Result<()> {
    for dir in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "root"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    // The kernel's module autoloader runs /sbin/modprobe.
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/modprobe"))?;

    let agent = root.join(binaries.agent.strip_prefix("/")?);
    std::fs::create_dir_all(agent.parent().context("agent path")?)?;
    for (from, to) in [
        (&binaries.datapath, root.join("bin/datapath")),
        (&binaries.vpc, root.join("bin/vpc")),
        (&binaries.agent, agent),
    ] {
        setup::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(from)
                .arg(&to),
        )?;
    }
    let mut elves = vec![
        binaries.datapath.clone(),
        binaries.vpc.clone(),
        binaries.agent.clone(),
    ];
    for tool in TOOLS {
        let name = Path::new(tool).file_name().context("tool path")?;
        std::fs::copy(tool, root.join("bin").join(name)).with_context(|| tool.to_string())?;
        elves.push(PathBuf::from(tool));
    }
    for elf in &elves {
        copy_libraries(root, elf)?;
    }

    let modules = PathBuf::from(format!("/lib/modules/{version}"));
    let dest = root.join(modules.strip_prefix("/")?);
    std::fs::create_dir_all(&dest)?;
    for entry in std::fs::read_dir(&modules)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
        }
    }
    // modules.dep lines: `kernel/…/veth.ko.xz: kernel/…/dep.ko.xz …`; copy the closure.
    let dep = std::fs::read_to_string(modules.join("modules.dep"))?;
    for line in dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let stem = Path::new(module)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .unwrap_or_default();
        if !MODULES.contains(&stem) {
            continue;
        }
        for file in std::iter::once(module).chain(deps.split_whitespace()) {
            let target = dest.join(file);
            std::fs::create_dir_all(target.parent().context("module path")?)?;
            std::fs::copy(modules.join(file), &target).with_context(|| file.to_owned())?;
        }
    }

    let init = format!(
        r#"#!/bin/sh
export PATH=/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
for m in {modules}; do modprobe $m || echo "modprobe $m failed"; done
# The root tests are #[ignore]d: --include-ignored runs them (this is root). Left out by name,
# counted as "filtered out", not passed: the TCX variants (no TCX before Linux 6.6; they would
# fail) and the end-to-end VPC test (it needs iptables for the provider's NAT; none here).
echo "left out: *_tcx (no TCX on this kernel), vpc_client* (no iptables)"
/bin/datapath --test-threads=1 --include-ignored --skip _tcx
datapath=$?
/bin/vpc --test-threads=1 --include-ignored --skip vpc_client
vpc=$?
echo "datapath tests: exit $datapath; vpc tests: exit $vpc"
echo "{RESULT_MARKER}$((datapath | vpc))"
poweroff -f
"#,
        modules = MODULES.join(" ")
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, init)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&init_path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Copies the shared libraries `ldd` lists for `elf` (and the dynamic loader) into `root`.
fn copy_libraries(root: &Path, elf: &Path) -> Result<()> {
    let output = Command::new("ldd").arg(elf).output().context("ldd")?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = line
            .split_once("=>")
            .map_or(line, |(_, p)| p)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if !path.starts_with('/') {
            continue;
        }
        let dest = root.join(path.trim_start_matches('/'));
        if dest.exists() {
            continue;
        }
        std::fs::create_dir_all(dest.parent().context("library path")?)?;
        std::fs::copy(path, &dest).with_context(|| path.to_owned())?;
    }
    Ok(())
}

fn cpio(root: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out)?;
    let status = Command::new("sh")
        .args(["-c", "find . | cpio --quiet -o -H newc"])
        .current_dir(root)
        .stdout(file)
        .status()
        .context("cpio")?;
    if !status.success() {
        bail!("packing the initramfs failed: {status}");
    }
    Ok(())
}
