//! Benchmarks that measure our binaries and their peers side by side, in the same run.
//! `cni` lives in [`cni`], `datapath` in [`datapath`], `node` in [`node`], `proxy` in [`proxy`].
//!
//! Per invocation: wall time from spawn to reap, and peak RSS from `wait4`'s `ru_maxrss`.
//! `bench datapath` and `bench proxy` measure throughput and rates instead.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use satellite_tests::moto::MotoServer;
use satellite_tests::tools;

use crate::{cargo, workspace_root};

mod cni;
mod datapath;
mod node;
mod proxy;

/// Which benchmark.
#[derive(Debug, Subcommand)]
pub enum Which {
    /// Exec credential plugin vs `aws eks get-token` (AWS CLI), against a local moto STS
    CredentialPlugin {
        /// Invocations per scenario of our binary
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Invocations per scenario of the AWS CLI (about 0.4 s each)
        #[arg(long, default_value_t = 20)]
        peer_runs: usize,
    },
    /// The node in the sandbox: sandbox start, join → Ready, the agent's steady-state RSS
    Node {
        /// Seconds to sample the agent's RSS once the node is Ready
        #[arg(long, default_value_t = 30)]
        settle: u64,
    },
    /// CNI plugin vs the reference ptp + host-local (+ portmap): ADD+DEL latency, peak RSS
    /// (root; network namespaces)
    Cni {
        /// ADD+DEL pairs per plugin and scenario
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// Host datapath: TCP throughput and request/response with no NAT, our tc NAT and
    /// iptables NAT; tc program cost per packet (root; network namespaces)
    Datapath {
        /// Rounds of the three scenarios (medians are printed)
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per measurement
        #[arg(long, default_value_t = 4)]
        seconds: u64,
    },
    /// `satellite-agent proxy` vs HAProxy vs socat in network namespaces: TCP throughput
    /// (iperf3) and new connections per second (root)
    Proxy {
        /// iperf3 seconds per throughput scenario
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Seconds per connection-rate scenario
        #[arg(long, default_value_t = 3)]
        conn_seconds: u64,
        /// Parallel iperf3 streams
        #[arg(long, default_value_t = 8)]
        streams: usize,
        /// Concurrent clients in the connection-rate scenario
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Rounds over all forwarders (the median is shown)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

/// Runs the selected benchmark and prints its table.
pub fn run(which: Which) -> Result<()> {
    match which {
        Which::CredentialPlugin { runs, peer_runs } => credential_plugin(runs, peer_runs),
        Which::Node { settle } => node::run(Duration::from_secs(settle)),
        Which::Cni { runs } => cni::run(runs),
        Which::Datapath { rounds, seconds } => datapath::run(rounds, seconds),
        Which::Proxy {
            seconds,
            conn_seconds,
            streams,
            concurrency,
            rounds,
        } => proxy::run(proxy::Options {
            seconds,
            conn_seconds,
            streams,
            concurrency,
            rounds: rounds.max(1),
        }),
    }
}

/// Summary of one scenario.
struct Stats {
    name: String,
    runs: usize,
    median: Duration,
    p95: Duration,
    peak_rss_kib: u64,
}

fn credential_plugin(runs: usize, peer_runs: usize) -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "satellite-credential-plugin",
    ])?;
    let ours = target_dir().join("release/satellite-credential-plugin");
    let aws = tools::venv_bin("aws");

    let moto = MotoServer::start();
    let key = moto.create_user("bench-node");
    let role = moto.create_role("bench-node-role", "bench-node");
    moto.enable_auth();
    let home = tempfile::tempdir()?;
    let cache = home.path().join("cache");

    let env = |cmd: &mut Command| {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", &key.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret_access_key)
            .env("AWS_ENDPOINT_URL_STS", moto.url());
    };
    let ours_cmd = |extra: &[&str]| {
        let mut cmd = Command::new(&ours);
        env(&mut cmd);
        cmd.args([
            "--region",
            "us-east-1",
            "eks",
            "get-token",
            "--cluster-name",
            "bench",
        ])
        .args(extra);
        cmd
    };
    let aws_cmd = |extra: &[&str]| {
        let mut cmd = Command::new(&aws);
        env(&mut cmd);
        cmd.args([
            "--region",
            "us-east-1",
            "eks",
            "get-token",
            "--cluster-name",
            "bench",
        ])
        .args(extra);
        cmd
    };
    let cache_arg = cache.to_str().context("cache path is UTF-8")?;
    let with_role = ["--role-arn", role.as_str()];

    // Fill the cache once: the warm scenario measures what kubelet sees on every call after.
    measure("warm-up", 1, || {
        ours_cmd(&[&with_role[..], &["--cache-dir", cache_arg]].concat())
    })?;

    let results = [
        measure("ours, role, cached credentials", runs, || {
            ours_cmd(&[&with_role[..], &["--cache-dir", cache_arg]].concat())
        })?,
        measure("aws eks get-token, role", peer_runs, || aws_cmd(&with_role))?,
        measure("ours, role, cold (AssumeRole)", peer_runs, || {
            ours_cmd(&[&with_role[..], &["--no-cache"]].concat())
        })?,
        measure("ours, static keys", runs, || ours_cmd(&[]))?,
        measure("aws eks get-token, static keys", peer_runs, || aws_cmd(&[]))?,
    ];
    let assumed = moto.assumed_roles().len();
    let expected_assumes = 1 + peer_runs * 2;
    if assumed != expected_assumes {
        bail!(
            "moto saw {assumed} AssumeRole calls, expected {expected_assumes}: the cache did not hold"
        );
    }

    println!();
    println!(
        "{:<34} {:>6} {:>11} {:>11} {:>12}",
        "scenario", "runs", "median ms", "p95 ms", "peak RSS MB"
    );
    for s in &results {
        println!(
            "{:<34} {:>6} {:>11.2} {:>11.2} {:>12.1}",
            s.name,
            s.runs,
            ms(s.median),
            ms(s.p95),
            s.peak_rss_kib as f64 / 1024.0
        );
    }
    let [warm, peer_role, cold, static_ours, peer_static] = &results;
    println!();
    println!(
        "speed-up, role (cached) vs aws eks get-token --role-arn: {:.0}x (median), target >= 100x",
        ratio(peer_role.median, warm.median)
    );
    println!(
        "speed-up, role cold (AssumeRole) vs aws eks get-token --role-arn: {:.1}x",
        ratio(peer_role.median, cold.median)
    );
    println!(
        "speed-up, static keys vs aws eks get-token: {:.0}x",
        ratio(peer_static.median, static_ours.median)
    );
    println!(
        "peak RSS, ours cached: {:.1} MB (target <= 10 MB); aws: {:.1} MB",
        warm.peak_rss_kib as f64 / 1024.0,
        peer_role.peak_rss_kib as f64 / 1024.0
    );
    Ok(())
}

fn measure(name: &str, runs: usize, mut command: impl FnMut() -> Command) -> Result<Stats> {
    let mut times = Vec::with_capacity(runs);
    let mut peak_rss_kib = 0;
    for _ in 0..runs {
        let (elapsed, rss) = run_once(command()).with_context(|| format!("scenario {name:?}"))?;
        times.push(elapsed);
        peak_rss_kib = peak_rss_kib.max(rss);
    }
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Stats {
        name: name.to_owned(),
        runs,
        median: pick(0.5),
        p95: pick(0.95),
        peak_rss_kib,
    })
}

/// Spawns `cmd`, reaps it with `wait4`, and returns (wall time, peak RSS in KiB).
fn run_once(mut cmd: Command) -> Result<(Duration, u64)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let (status, peak_rss_kib) = reap(&child)?;
    let elapsed = start.elapsed();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read as _;
            pipe.read_to_string(&mut stderr).ok();
        }
        bail!(
            "{:?} failed (wait status {status}): {stderr}",
            cmd.get_program()
        );
    }
    Ok((elapsed, peak_rss_kib))
}

/// Reaps `child` with `wait4(2)`: its wait status and peak RSS in KiB (`ru_maxrss`, which
/// covers the children it waited for).
fn reap(child: &std::process::Child) -> Result<(i32, u64)> {
    let pid = i32::try_from(child.id()).context("pid fits i32")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; status and usage point to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    // Linux reports ru_maxrss in KiB.
    Ok((status, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(1e-9)
}
