//! Builds the tc eBPF object (`agent-ebpf`) and copies it to `$OUT_DIR/satellite-agent-ebpf.o`,
//! which `src/datapath/object.rs` embeds.
//!
//! - `SATELLITE_EBPF_OBJECT=PATH`: embed that prebuilt object instead of building one.
//! - `SATELLITE_EBPF=skip` (and automatically under `cargo clippy`): embed nothing; the loader
//!   then fails at run time with [`NoObject`](src/datapath/mod.rs). For `cargo check`/clippy on
//!   machines without the eBPF toolchain.
//! - otherwise: build `agent-ebpf` with Debian's toolchain exactly as `cargo xtask build-ebpf`
//!   does (see `xtask/src/ebpf.rs` for why Debian's and not rustup's), into
//!   `${CARGO_TARGET_DIR:-target}/ebpf`. A missing toolchain fails the build with the command
//!   that installs it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECT_NAME: &str = "satellite-agent-ebpf.o";

fn main() {
    println!("cargo::rerun-if-env-changed=SATELLITE_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=SATELLITE_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join(OBJECT_NAME);

    let object = if let Some(path) = env::var_os("SATELLITE_EBPF_OBJECT") {
        let path = PathBuf::from(path);
        println!("cargo::rerun-if-changed={}", path.display());
        Some(path)
    } else if env::var("SATELLITE_EBPF").as_deref() == Ok("skip") || under_clippy() {
        None
    } else {
        Some(build())
    };
    match object {
        Some(path) => {
            std::fs::copy(&path, &dest).unwrap_or_else(|e| {
                panic!("copying the eBPF object {} failed: {e}", path.display())
            });
        }
        // An empty object: the loader reports `Error::NoObject` at run time.
        None => std::fs::write(&dest, []).expect("writing the empty eBPF object placeholder"),
    }
}

/// `cargo clippy` runs build scripts with `RUSTC_WORKSPACE_WRAPPER` set to `clippy-driver`.
fn under_clippy() -> bool {
    env::var_os("RUSTC_WORKSPACE_WRAPPER").is_some_and(|w| Path::new(&w).ends_with("clippy-driver"))
}

fn build() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("agent/ is inside the workspace");
    let crate_dir = workspace.join("agent-ebpf");
    for input in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!(
            "cargo::rerun-if-changed={}",
            crate_dir.join(input).display()
        );
    }
    for input in ["src", "Cargo.toml"] {
        let path = workspace.join("agent-common").join(input);
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| workspace.join("target"), PathBuf::from)
        .join("ebpf");

    let hint = "install the eBPF toolchain with `cargo xtask setup`, or set SATELLITE_EBPF=skip \
                (check/clippy only) or SATELLITE_EBPF_OBJECT=<prebuilt object>";
    if !Path::new("/usr/bin/rustc").exists()
        || Command::new("bpf-linker")
            .arg("--version")
            .output()
            .is_err()
    {
        panic!("the eBPF toolchain (Debian rustc-web, bpf-linker) is missing: {hint}");
    }
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.args(["build", "--release", "--ignore-rust-version", "--locked"])
        .current_dir(&crate_dir)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir);
    // Nothing of this (rustup's) build may leak into the nested one.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "TARGET",
        "HOST",
    ] {
        cmd.env_remove(var);
    }
    // Keep the nested build's stdout off ours: cargo reads `cargo::` directives from it.
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .unwrap_or_else(|e| panic!("starting /usr/bin/cargo failed ({e}): {hint}"));
    assert!(
        status.success(),
        "building {} failed: {status}",
        crate_dir.display()
    );
    target_dir.join("bpfel-unknown-none/release/satellite-agent-ebpf")
}
