//! The one set of network-namespace fixtures for tests, benchmarks and the sandbox:
//!
//! - [`Netns`]: an RAII guard for a namespace with a unique name (`<prefix>-<pid>-<n>`), `lo`
//!   up, deleted on drop, also when the test panics;
//! - named namespaces that outlive one process (the sandbox's): [`create`], [`delete`],
//!   [`exists`], [`path`], [`inode`], [`pids_inside`];
//! - entering one: [`run_in`] / [`Netns::run`] (a closure on a thread of its own) and
//!   [`command`] / [`daemon_command`] / [`Netns::command`] (a child process);
//! - [`run`]: the one command helper (the command and its stderr on failure), and [`ip`] on
//!   top of it;
//! - [`require_root`]: the one root requirement (with [`is_root`], its test);
//! - [`Bpffs`]: a private bpffs mount, unmounted on drop; [`unmount_under`] for what a
//!   runtime leaves mounted.
//!
//! # Entering a namespace
//!
//! `setns(2)` changes the network namespace of the calling *thread* only. aya's integration
//! tests pin a `NetNsGuard` to the current thread: it enters on creation and restores the
//! original namespace on drop. Here every entry runs on a thread of its own instead, spawned
//! for the closure and ended with it ([`run_in`]), and a child process enters between fork and
//! exec ([`command`]). The test's own thread never changes namespace, so:
//!
//! - one test uses several namespaces at once (client, proxy, backend) without any order of
//!   entering and restoring to get right, and a panic cannot leave a thread in the wrong one;
//! - threads the test spawns, and commands it runs with `std::process::Command`, start in the
//!   namespace they are meant to (a thread inherits its creator's namespace);
//! - what a closure opens (sockets) stays in the namespace it was opened in and can be used
//!   from any thread afterwards.
//!
//! The price is a thread per call, which is nothing next to what a test does in it.
//!
//! Never `ip netns exec`: it also gives each command a private mount namespace (and a fresh
//! `/sys`), and the sandbox's kubelet and containerd must see each other's mounts.

use std::ffi::OsStr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result, bail};

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `Ok` when running as root; otherwise an error saying that `what` needs root and how the
/// root tests run. Tests that need root are `#[ignore = "needs root"]` and end up here only
/// when run anyway (`--run-ignored all`): they fail with this message instead of passing.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root (network namespaces, veth pairs, BPF, nf_tables): run the root \
             tests as root, e.g. `sudo -E cargo xtask test`, or `cargo nextest run \
             --run-ignored all` as root"
        );
    }
    Ok(())
}

/// Runs `cmd` to its end and returns its stdout. Fails naming the command line when it cannot
/// start (with a hint to `cargo xtask setup`, which installs the tools) or exits unsuccessfully
/// (with its status and stderr).
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = command_line(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running `{line}` (`cargo xtask setup` installs the tools)"))?;
    stdout_of(&line, out)
}

/// Like [`run`], with `input` written to the command's stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Result<String> {
    use std::io::Write as _;
    let line = command_line(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{line}` (`cargo xtask setup` installs the tools)"))?;
    child
        .stdin
        .take()
        .with_context(|| format!("`{line}`: no stdin"))?
        .write_all(input)
        .with_context(|| format!("writing to `{line}`"))?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{line}`"))?;
    stdout_of(&line, out)
}

/// The program and its arguments, for messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stdout of a finished command, or an error with its status and stderr.
fn stdout_of(line: &str, out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS…` (iproute2) through [`run`]: its stdout, or an error with the command and stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A unique name: `<prefix>-<pid>-<counter>` (unique within the process by the counter,
/// across processes by the pid).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `/run/netns/<name>`, where `ip netns` keeps a named namespace (what `CNI_NETNS` names).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Creates namespace `name` if it is missing, brings `lo` up and puts each of `addrs`
/// (`a.b.c.d/32`) on `lo` unless already there. Idempotent. Needs root.
pub fn create(name: &str, addrs: &[&str]) -> Result<()> {
    require_root(&format!("creating network namespace {name}"))?;
    if !exists(name) {
        ip(&["netns", "add", name])
            .with_context(|| format!("creating network namespace {name}"))?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    let shown = ip(&["-n", name, "-o", "addr", "show", "dev", "lo"])?;
    for addr in addrs {
        if !shown.contains(&format!(" {addr} ")) {
            ip(&["-n", name, "addr", "add", addr, "dev", "lo"])?;
        }
    }
    Ok(())
}

/// Deletes namespace `name` (with its interfaces, addresses, routes, tc filters and firewall
/// rules; processes still inside keep it alive until they exit). `Ok` when it does not exist.
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

/// Pids of every process whose network namespace is `name` (none when it does not exist).
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

/// A command for `program` that runs inside namespace `name`, entered with `setns` between
/// fork and exec (the mount namespace stays the caller's). Spawning it fails when the
/// namespace does not exist.
pub fn command(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    let c_path = std::ffi::CString::new(path(name).into_os_string().into_encoded_bytes())
        .unwrap_or_default();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (open, setns, close) on data prepared before the fork.
    unsafe {
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

/// Like [`command`], and the child also starts a new session (`setsid`) with stdin from
/// `/dev/null`, so it outlives the caller and can be stopped as a process group.
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

/// Runs `f` on a new thread whose network namespace is `name` and returns what `f` returns
/// (sockets it opens live in that namespace). Fails only when the namespace cannot be opened
/// or entered; a panic in `f` propagates to the caller.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let ns = std::fs::File::open(path(name))
        .with_context(|| format!("opening network namespace {name} (does it exist?)"))?;
    let thread = std::thread::Builder::new()
        .name(format!("netns {name}"))
        .spawn(move || -> std::io::Result<T> {
            // SAFETY: `ns` is an open namespace file descriptor owned by this closure; setns
            // changes only this thread's network namespace, and the thread ends with `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop(ns);
            Ok(f())
        })
        .context("spawning a thread")?;
    match thread.join() {
        Ok(entered) => entered.with_context(|| format!("entering network namespace {name}")),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A network namespace of this process: a unique name starting with a prefix, `lo` up; deleted
/// on drop (also when a test panics), and with it everything inside. Needs root.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named [`unique_name`]`(prefix)`, `lo` up. Fails when not root
    /// ([`require_root`]) or when `ip` fails. A leftover of the same name (a dead process with
    /// the same pid) is deleted first.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        require_root(&format!("network namespace {name}"))?;
        delete(&name)?;
        ip(&["netns", "add", &name])
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        path(&self.name)
    }

    /// Runs `f` on a thread inside this namespace ([`run_in`]) and returns what it returns.
    /// Panics when the namespace cannot be entered (it exists while the guard does, so only
    /// when something else deleted it); a panic in `f` propagates.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in(&self.name, f).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A command for `program` that runs inside this namespace ([`command`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command(&self.name, program)
    }

    /// Runs `program ARGS…` inside this namespace through [`run`]: its stdout, or an error
    /// with the command line and its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// `ip -n <name> ARGS…`: its stdout, or an error with the command line and ip's stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A veth pair: `dev` in this namespace, `peer_dev` in `peer` (both down, no addresses).
    pub fn veth(&self, dev: &str, peer: &Netns, peer_dev: &str) -> Result<()> {
        self.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name,
        ])
        .map(drop)
    }

    /// `sysctl -qw SETTING` (`key=value`) inside this namespace.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", setting]).map(drop)
    }

    /// Names of the links in this namespace (without `@peer`).
    pub fn links(&self) -> Result<Vec<String>> {
        Ok(self
            .ip(&["-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A private bpffs mounted on a fresh temporary directory (pins made there are this test's
/// alone); unmounted on drop, which releases the pins, also when a test panics. Needs root.
#[derive(Debug)]
pub struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    /// Mounts a bpffs (source name `label`, as `mount` shows it) on a new temporary directory.
    /// Fails when not root or when `mount` fails.
    pub fn new(label: &str) -> Result<Self> {
        require_root("mounting a bpffs")?;
        let dir = tempfile::Builder::new()
            .prefix("satellite-bpffs-")
            .tempdir()?;
        run(Command::new("mount")
            .args(["-t", "bpf", label])
            .arg(dir.path()))?;
        Ok(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(e) = unmount_lazily(self.dir.path()) {
            eprintln!("cleanup: unmounting {}: {e}", self.dir.path().display());
        }
    }
}

/// Lazily unmounts every mount point under `dir` (`dir` too), deepest first: what containerd
/// leaves when stopped abruptly (overlay root filesystems, shm), a kubelet's volume mounts.
/// Fails naming the first mount point that cannot be unmounted.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        match unmount_lazily(&point) {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                bail!("unmounting {}: {e}", point.display())
            }
            _ => {}
        }
    }
    Ok(())
}

/// `umount2(path, MNT_DETACH)`: a process still using the mount does not keep it attached.
fn unmount_lazily(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b/c\134d"), r"/a b/c\d");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
