//! Long-running sandbox processes: started in their own session inside the namespace, output
//! to `<work dir>/logs/<name>.log`, identity in `<work dir>/run/<name>.pid` as
//! `<pid> <start time>` (field 22 of `/proc/<pid>/stat`, clock ticks since boot), so a pid
//! reused by an unrelated process is never mistaken for ours or signalled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// How long a component gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// `<work dir>/run/<name>.pid`.
pub fn pid_file(work_dir: &Path, name: &str) -> PathBuf {
    work_dir.join("run").join(format!("{name}.pid"))
}

/// `<work dir>/logs/<name>.log`.
pub fn log_file(work_dir: &Path, name: &str) -> PathBuf {
    work_dir.join("logs").join(format!("{name}.log"))
}

/// Spawns `cmd` (built with [`crate::netns::daemon_command`]) with stdout and stderr appended
/// to its log, records its pid file, and returns the pid. The child is not waited for: it
/// survives the caller.
pub fn spawn(work_dir: &Path, name: &str, mut cmd: Command) -> Result<i32> {
    let log_path = log_file(work_dir, name);
    std::fs::create_dir_all(work_dir.join("logs"))?;
    std::fs::create_dir_all(work_dir.join("run"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // The child is reaped by init once we exit; dropping `Child` does not kill it.
    drop(child);
    let start = start_time(pid)
        .with_context(|| format!("{name} exited at once; see {}", log_path.display()))?;
    super::write_atomic(
        &pid_file(work_dir, name),
        format!("{pid} {start}\n").as_bytes(),
        0o644,
    )?;
    Ok(pid)
}

/// The pid recorded for `name` if that process is still the one we started.
pub fn running(work_dir: &Path, name: &str) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file(work_dir, name)).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    let alive = start_time(pid).is_some_and(|s| s.to_string() == start) && !is_zombie(pid);
    alive.then_some(pid)
}

/// Stops `name`: SIGTERM to its process group, SIGKILL after [`STOP_GRACE`], then removes the
/// pid file. Safe when it is not running.
pub fn stop(work_dir: &Path, name: &str) {
    if let Some(pid) = running(work_dir, name) {
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while running(work_dir, name).is_some() && Instant::now() < deadline {
            reap(pid);
            std::thread::sleep(Duration::from_millis(50));
        }
        if running(work_dir, name).is_some() {
            eprintln!("sandbox: {name} (pid {pid}) ignored SIGTERM for {STOP_GRACE:?}; SIGKILL");
            signal_group(pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(pid_file(work_dir, name));
}

/// Sends `sig` to process group `pid` (and to `pid` itself, in case it left the group).
pub fn signal_group(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

/// Reaps `pid` if it is our exited child (tests start the sandbox in-process); a no-op
/// otherwise.
fn reap(pid: i32) {
    // SAFETY: waitpid with WNOHANG and a null status pointer has no preconditions.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), if the process exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing paren are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}
