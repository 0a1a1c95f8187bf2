//! Runs kubelet (and kube-proxy) as child processes: restarts each with capped exponential
//! backoff, forwards its output into our logs (target `kubelet` or `kube-proxy`), and stops it
//! (SIGTERM, then SIGKILL after a grace period).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// First restart delay.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Restart delays double up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Time a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// What the agent supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// kubelet (`flags.json`).
    Kubelet,
    /// kube-proxy (`kube-proxy-flags.json`).
    KubeProxy,
}

impl Component {
    /// `kubelet` or `kube-proxy`: log field and message prefix.
    pub fn name(self) -> &'static str {
        match self {
            Component::Kubelet => "kubelet",
            Component::KubeProxy => "kube-proxy",
        }
    }
}

/// A supervised command: binary and arguments (from `join`'s flags files).
#[derive(Debug, Clone)]
pub struct ChildCommand {
    /// Which component it is.
    pub component: Component,
    /// The binary.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Capped exponential backoff: 1 s, 2 s, 4 s … 30 s; reset after a long enough run.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// The delay before the next restart of a child that ran for `ran`.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= BACKOFF_RESET_AFTER {
            self.next = BACKOFF_START;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Supervises `command` until `shutdown` turns true; then stops it and returns.
///
/// `started` is bumped every time a new process starts (the label reconciler listens to
/// kubelet's).
pub async fn supervise(
    command: ChildCommand,
    mut shutdown: watch::Receiver<bool>,
    started: watch::Sender<u64>,
) {
    let name = command.component.name();
    let mut backoff = Backoff::default();
    let mut generation = 0;
    loop {
        let start = Instant::now();
        let mut child = match spawn(&command) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(binary = %command.binary.display(), error = %crate::error::Report(&e), "cannot start {name}");
                let delay = backoff.after_exit(Duration::ZERO);
                if wait_or_shutdown(delay, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        generation += 1;
        started.send_replace(generation);
        tracing::info!(pid = child.id(), generation, "{name} started");
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(status) = exited else {
            stop(name, &mut child).await;
            return;
        };
        let ran = start.elapsed();
        let delay = backoff.after_exit(ran);
        log_exit(name, status, ran, delay);
        if wait_or_shutdown(delay, &mut shutdown).await {
            return;
        }
    }
}

fn spawn(command: &ChildCommand) -> std::io::Result<Child> {
    let mut child = Command::new(&command.binary)
        .args(&command.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let component = command.component;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(component, BufReader::new(out)));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(component, BufReader::new(err)));
    }
    Ok(child)
}

/// kubelet and kube-proxy log in klog format; each line becomes one of our events, at the
/// klog line's level (target `kubelet` or `kube-proxy`: a tracing target is static).
async fn forward<R: tokio::io::AsyncRead + Unpin>(component: Component, reader: BufReader<R>) {
    macro_rules! emit {
        ($target:literal, $line:expr) => {
            match $line.as_bytes().first() {
                Some(b'E' | b'F') => tracing::error!(target: $target, "{}", $line),
                Some(b'W') => tracing::warn!(target: $target, "{}", $line),
                _ => tracing::info!(target: $target, "{}", $line),
            }
        };
    }
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match component {
            Component::Kubelet => emit!("kubelet", line),
            Component::KubeProxy => emit!("kube-proxy", line),
        }
    }
}

fn log_exit(name: &str, status: std::io::Result<ExitStatus>, ran: Duration, delay: Duration) {
    match status {
        Ok(status) => tracing::warn!(
            %status,
            ran_s = ran.as_secs(),
            restart_in_s = delay.as_secs_f32(),
            "{name} exited; restarting"
        ),
        Err(e) => {
            tracing::error!(error = %crate::error::Report(&e), "waiting for {name} failed; restarting")
        }
    }
}

/// Sleeps `delay`; returns true when shutdown was requested meanwhile.
async fn wait_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(name: &str, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => tracing::info!(?status, "{name} stopped"),
        Err(_) => {
            tracing::warn!("{name} ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7).map(|_| b.after_exit(short).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.after_exit(BACKOFF_RESET_AFTER).as_secs(), 1);
        assert_eq!(b.after_exit(short).as_secs(), 2);
    }
}
