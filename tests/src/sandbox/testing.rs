//! Helpers for tests that run a sandbox: a guard that takes it down (also on panic) and
//! binaries of the test's own build. The root check is [`crate::netns::require_root`], which
//! [`TestSandbox::up`] runs (through `lifecycle::up`'s preflight).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use super::{SandboxInfo, lifecycle};

/// A sandbox in its own temp work dir (so its own namespace); `down` on drop, also on panic.
#[derive(Debug)]
pub struct TestSandbox {
    /// Its contract.
    pub info: SandboxInfo,
    dir: tempfile::TempDir,
}

impl TestSandbox {
    /// Starts a sandbox; panics with the reason (after cleaning up) when it does not come up.
    /// `authenticator_bin`: `env!("CARGO_BIN_EXE_sandbox-authenticator")` of the test crate.
    pub fn up(authenticator_bin: &Path) -> TestSandbox {
        // Short path: containerd's unix socket paths must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("satsb-")
            .tempdir_in("/tmp")
            .expect("temp work dir");
        let opts = lifecycle::UpOptions {
            work_dir: dir.path().to_owned(),
            authenticator_bin: authenticator_bin.to_owned(),
        };
        let started = Instant::now();
        let info = match lifecycle::up(&opts) {
            Ok(info) => info,
            Err(e) => {
                let _ = lifecycle::down(dir.path());
                panic!("sandbox up failed: {e:#}");
            }
        };
        eprintln!("sandbox up in {:.1} s", started.elapsed().as_secs_f64());
        TestSandbox { info, dir }
    }

    /// The work dir.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if let Err(e) = lifecycle::down(self.dir.path()) {
            eprintln!("sandbox down failed: {e:#}");
        }
    }
}

/// A binary of the workspace from the same target directory and profile as the running
/// test (`<target>/<profile>/<name>`); panics naming the build command when it is missing.
/// `cargo xtask test` (nextest `--workspace --all-targets`) builds them all.
pub fn target_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable under <target>/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p {package}` (cargo xtask test builds it)",
        bin.display()
    );
    bin
}

/// `kubectl ARGS…` inside the sandbox's namespace with `KUBECONFIG=kubeconfig` and
/// `HOME=home` (kubectl's cache), stdin from `/dev/null`; its output. Panics when kubectl
/// cannot start.
pub fn kubectl(info: &SandboxInfo, kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    info.command("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

/// Calls `f` every 250 ms until it returns `Some`, and returns that; panics naming `what`
/// after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
