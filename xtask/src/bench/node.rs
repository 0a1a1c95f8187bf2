//! `cargo xtask bench node`: the figures of the node's lifecycle in the sandbox, with release
//! builds of the agent and credential plugin.
//!
//! - sandbox start in a fresh work dir (binaries cached) and a second `up` (a no-op);
//! - `join` → Node Ready (authorize, join, run, kubelet registers and reports Ready);
//! - the agent's steady-state RSS (VmRSS sampled every second for `--settle` seconds after
//!   Ready, kubelet running, labels reconciled, healthz polled), next to kubelet's own;
//! - `down` with the node joined.
//!
//! There is no peer to take a ratio against: the target is absolute (agent RSS ≤ 20 MB).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use satellite_tests::sandbox::{lifecycle, node, processes};

use crate::bench::target_dir;
use crate::cargo;

/// Runs the benchmark; `settle`: how long to sample the agent's RSS once the node is Ready.
pub fn run(settle: Duration) -> Result<()> {
    crate::sandbox::install::all()?;
    let bins = crate::sandbox::node_binaries(true)?;
    cargo(&[
        "build",
        "--quiet",
        "-p",
        "satellite-tests",
        "--bin",
        "sandbox-authenticator",
    ])?;
    let dir = tempfile::Builder::new()
        .prefix("satsb-bench-")
        .tempdir_in("/tmp")?;
    let opts = lifecycle::UpOptions {
        work_dir: dir.path().to_owned(),
        authenticator_bin: target_dir().join("debug/sandbox-authenticator"),
    };
    let result = measure(&opts, &bins, settle);
    let t = Instant::now();
    lifecycle::down(dir.path())?;
    let down = t.elapsed();
    let figures = result?;
    println!(
        "{:<44} {:>10}",
        "node lifecycle (sandbox, release build)", ""
    );
    println!(
        "{:<44} {:>8.1} s",
        "sandbox up, fresh work dir", figures.up_fresh
    );
    println!(
        "{:<44} {:>8.2} s",
        "sandbox up, already up (no-op)", figures.up_again
    );
    println!(
        "{:<44} {:>8.1} s",
        "join → Node Ready (authorize excluded)", figures.join_to_ready
    );
    println!(
        "{:<44} {:>8.1} MB  (max {:.1} MB over {} s; target ≤ 20 MB)",
        "satellite-agent RSS, steady state",
        figures.agent_rss_last,
        figures.agent_rss_max,
        settle.as_secs()
    );
    println!(
        "{:<44} {:>8.1} MB",
        "kubelet RSS (for scale)", figures.kubelet_rss
    );
    println!(
        "{:<44} {:>8.1} s",
        "sandbox down with a node joined",
        down.as_secs_f64()
    );
    Ok(())
}

struct Figures {
    up_fresh: f64,
    up_again: f64,
    join_to_ready: f64,
    agent_rss_last: f64,
    agent_rss_max: f64,
    kubelet_rss: f64,
}

fn measure(
    opts: &lifecycle::UpOptions,
    bins: &node::NodeBinaries,
    settle: Duration,
) -> Result<Figures> {
    let t = Instant::now();
    let info = lifecycle::up(opts)?;
    let up_fresh = t.elapsed().as_secs_f64();
    let t = Instant::now();
    lifecycle::up(opts)?;
    let up_again = t.elapsed().as_secs_f64();
    let joined = node::up(&info, bins)?;
    let agent = processes::running(&info.work_dir, node::AGENT).context("agent not running")?;
    let mut samples = Vec::new();
    let end = Instant::now() + settle;
    while Instant::now() < end {
        samples.push(rss_mib(agent)?);
        std::thread::sleep(Duration::from_secs(1));
    }
    let kubelet = *node::kubelet_pids(&info)
        .first()
        .context("kubelet not running")?;
    Ok(Figures {
        up_fresh,
        up_again,
        join_to_ready: joined.join_to_ready.as_secs_f64(),
        agent_rss_last: *samples.last().context("no samples")?,
        agent_rss_max: samples.iter().copied().fold(0.0, f64::max),
        kubelet_rss: rss_mib(kubelet)?,
    })
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: i32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}
