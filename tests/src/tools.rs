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

fn require(path: &Path, how: &str) {
    assert!(
        path.exists(),
        "{} is missing: run `{how}` first (it installs the test peers)",
        path.display()
    );
}
