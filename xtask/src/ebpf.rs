//! The eBPF toolchain, build and lints (`cargo xtask setup`, `cargo xtask build-ebpf`,
//! `cargo xtask lint-ebpf`).
//!
//! rustup's toolchains on our machines ship no `rust-src`, which `-Z build-std=core` for
//! `bpfel-unknown-none` needs, and `core` only builds with the compiler release it ships with.
//! Debian's `rustc-web` (1.96, LLVM 22) ships both, so the eBPF crate builds with Debian's
//! `/usr/bin/cargo` + `/usr/bin/rustc`, linked by `bpf-linker` built against Debian's LLVM 22.
//! aya's own `aya-build` cannot drive that (it assumes a rustup toolchain with `rust-src`).
//! The agent's `build.rs` runs the same build during a normal `cargo build`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use satellite_tests::tools;

use crate::setup;

/// Debian packages of the eBPF toolchain: Debian's Rust 1.96 with its library sources (for
/// build-std) and its clippy (`lint-ebpf`: clippy must be the compiler that builds `core` for
/// `bpfel-unknown-none`), and LLVM 22 with the libraries `bpf-linker` links against.
pub const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "libxml2-dev",
];

/// The `bpf-linker` release we build, against Debian's LLVM 22 (`--features llvm-22`).
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian's compiler and cargo (not rustup's proxies, which come first on `PATH`).
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's `cargo clippy` (package `rust-web-clippy`; runs `/usr/bin/clippy-driver`).
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// LLVM 22's assembler (package `llvm-22`, a dependency of `llvm-22-dev`): `bench datapath`
/// assembles its empty reference program with it.
pub const LLVM_MC: &str = "/usr/lib/llvm-22/bin/llvm-mc";

/// Installs the eBPF toolchain: the Debian packages, then `bpf-linker` into cargo's install
/// root (`~/.cargo/bin`, on `PATH`), built in a cached target directory. Idempotent: each step
/// is skipped when already done (the right `bpf-linker` version answers `--version`).
pub fn setup() -> Result<()> {
    setup::apt(APT_PACKAGES)?;
    bpf_linker()
}

fn bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if version.is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|w| w == BPF_LINKER_VERSION)
    }) {
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (minutes)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![PathBuf::from(LLVM_PREFIX).join("bin")];
    paths.extend(std::env::split_paths(&path));
    setup::run(
        Command::new(cargo)
            .args([
                "install",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("PATH", std::env::join_paths(paths)?)
            .env(
                "CARGO_TARGET_DIR",
                tools::cache_root().join("target-bpf-linker"),
            ),
    )
}

/// Where the eBPF crate's builds go: `$CARGO_TARGET_DIR/ebpf`, else `<workspace>/target/ebpf`
/// (the same place the agent's `build.rs` uses).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| crate::workspace_root().join("target"), PathBuf::from)
        .join("ebpf")
}

/// `program` (Debian's cargo or cargo-clippy) in the eBPF crate with Debian's toolchain,
/// `args` first: target, build-std and linker come from `agent-ebpf/.cargo/config.toml`.
fn debian_cargo(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(["--release", "--ignore-rust-version", "--locked"])
        .current_dir(crate::workspace_root().join("agent-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        // cargo-clippy runs "$CARGO"; cargo ignores it.
        .env("CARGO", DEBIAN_CARGO)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTDOC", DEBIAN_RUSTDOC)
        // build-std needs unstable cargo features; Debian's stable toolchain allows them so.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir());
    cmd
}

/// Builds `agent-ebpf` (release) with Debian's toolchain and returns the object's path.
pub fn build() -> Result<PathBuf> {
    let crate_dir = crate::workspace_root().join("agent-ebpf");
    let target_dir = target_dir();
    let status = debian_cargo(DEBIAN_CARGO, &["build"])
        .status()
        .with_context(|| format!("starting {DEBIAN_CARGO} (run `cargo xtask setup`)"))?;
    if !status.success() {
        bail!("building {} failed: {status}", crate_dir.display());
    }
    let object = target_dir.join("bpfel-unknown-none/release/satellite-agent-ebpf");
    if !object.is_file() {
        bail!("the build succeeded but {} is missing", object.display());
    }
    Ok(object)
}

/// Lints `agent-ebpf`, which the root workspace excludes (so `cargo fmt --all` and `cargo
/// clippy --workspace` never see it): `cargo fmt --check` with the rustfmt that formats the
/// workspace, and `cargo clippy -- -D warnings` with Debian's toolchain, target and flags, the
/// ones that build it (rustup's clippy cannot: it has no `core` for `bpfel-unknown-none`).
pub fn lint() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    setup::run(
        Command::new(cargo)
            .args(["fmt", "--check"])
            .current_dir(crate::workspace_root().join("agent-ebpf")),
    )
    .context("agent-ebpf is not formatted (run `cargo fmt` in agent-ebpf/)")?;
    setup::run(debian_cargo(DEBIAN_CARGO_CLIPPY, &["clippy"]).args(["--", "-D", "warnings"]))
        .context("clippy found problems in agent-ebpf (or run `cargo xtask setup`)")
}
