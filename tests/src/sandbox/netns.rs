//! The sandbox's network namespace: created with `ip netns add` (so it is visible as
//! `/run/netns/<name>`), entered with `setns(2)` only — never `ip netns exec`, which also
//! gives each command a private mount namespace, and kubelet and containerd must see each
//! other's mounts.

use std::ffi::OsStr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// `/run/netns/<name>`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether the namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Creates namespace `name` (if missing), brings `lo` up and puts each of `addrs`
/// (`a.b.c.d/32`) on `lo` (if missing). Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
pub fn create(name: &str, addrs: &[&str]) -> Result<()> {
    if !exists(name) {
        ip(&["netns", "add", name])
            .with_context(|| format!("creating network namespace {name} (needs root)"))?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    let shown = Command::new("ip")
        .args(["-n", name, "-o", "addr", "show", "dev", "lo"])
        .output()
        .context("running ip addr show")?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    for addr in addrs {
        if !shown.contains(&format!(" {addr} ")) {
            ip(&["-n", name, "addr", "add", addr, "dev", "lo"])?;
        }
    }
    Ok(())
}

/// Deletes the namespace (and with it its interfaces, addresses and iptables chains). Safe
/// when it does not exist.
pub fn delete(name: &str) -> Result<()> {
    if exists(name) {
        ip(&["netns", "delete", name])
            .with_context(|| format!("deleting network namespace {name}"))?;
    }
    Ok(())
}

/// The namespace's inode (to recognise processes inside it), if it exists.
pub fn inode(name: &str) -> Option<u64> {
    std::fs::metadata(path(name)).ok().map(|m| m.ino())
}

/// Pids of every process whose network namespace is `name`.
pub fn pids_inside(name: &str) -> Vec<i32> {
    let Some(ino) = inode(name) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
        })
        .collect()
}

/// A command for `program` that runs inside namespace `name` (entered with `setns` between
/// fork and exec; the mount namespace stays the host's). Fails at spawn when the namespace is
/// gone.
pub fn command(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    let ns_path = path(name);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (open, setns, close) on data prepared before the fork.
    unsafe {
        let c_path =
            std::ffi::CString::new(ns_path.as_os_str().as_encoded_bytes()).unwrap_or_default();
        cmd.pre_exec(move || {
            let fd = libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::setns(fd, libc::CLONE_NEWNET);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if rc != 0 {
                return Err(err);
            }
            Ok(())
        });
    }
    cmd
}

/// Like [`command`], and the child also starts a new session (`setsid`), so it outlives the
/// caller and can be stopped as a process group.
pub fn daemon_command(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = command(name, program);
    // SAFETY: setsid is async-signal-safe; it runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `f` on a new thread whose network namespace is `name` (sockets it opens live there),
/// and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = std::fs::File::open(path(name))
        .with_context(|| format!("opening network namespace {name} (is the sandbox up?)"))?;
    std::thread::spawn(move || {
        // SAFETY: `ns` is an open namespace file descriptor owned by this closure; setns
        // changes only this thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread inside the namespace panicked"))?
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
