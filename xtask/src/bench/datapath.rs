//! `cargo xtask bench datapath`: TCP throughput and request/response rate through the host
//! datapath, side by side in the same run: no NAT, our tc NAT, and iptables doing the same
//! mapping; then the programs' own cost per packet (root; network namespaces).
//!
//! Two namespaces joined by a veth pair, as in `agent/tests/datapath.rs`:
//!
//! ```text
//!  peer (the proxy) 198.18.0.2/24 ── wan · uplink ── host 198.18.0.1/24 (S), lo 198.19.0.1/32 (N)
//! ```
//!
//! - **no NAT**: the server listens on S, the peer connects to S;
//! - **tc NAT (ours)**: `satellite-agent datapath up` (release build) on `uplink`; the server
//!   listens on N, the peer connects to S (ingress S → N, egress N → S);
//! - **iptables NAT**: `PREROUTING -s PEER -d S -j DNAT --to-destination N` (conntrack undoes it
//!   on the replies); the server listens on N, the peer connects to S.
//!
//! Throughput: `iperf3 -J` (one stream, `--seconds` each). Request/response: one TCP connection,
//! 1-byte ping-pong for `--seconds` (a `TCP_RR`). The three scenarios alternate, `--rounds`
//! times; medians are printed. Program cost: `kernel.bpf_stats_enabled=1` (restored after)
//! while a UDP flood and a request/response run go through our NAT, then `run_time_ns /
//! run_cnt` of each program from `datapath status --json`, next to the same figure for an
//! empty tc program (the floor of the measurement on this machine; read with `bpftool`).
//!
//! One file (over 500 lines): the topology, the three NAT variants and the report share one
//! set of namespaces and must be read together to trust the comparison.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use satellite_tests::netns::{Bpffs, Netns};
use serde_json::Value;

use super::target_dir;
use crate::cargo;

const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const N: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 5202;

/// How the host is set up for one scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    NoNat,
    TcNat,
    Iptables,
}

impl Scenario {
    const ALL: [Self; 3] = [Self::NoNat, Self::TcNat, Self::Iptables];

    fn name(self) -> &'static str {
        match self {
            Self::NoNat => "no NAT",
            Self::TcNat => "tc NAT (ours)",
            Self::Iptables => "iptables NAT",
        }
    }

    /// Where the server listens.
    fn server(self) -> Ipv4Addr {
        if self == Self::NoNat { S } else { N }
    }
}

/// The bench's namespaces, bpffs and files; removed on drop.
struct Bench {
    host: Netns,
    peer: Netns,
    bpffs: Bpffs,
    work: tempfile::TempDir,
    agent: std::path::PathBuf,
}

impl Bench {
    fn new(agent: std::path::PathBuf) -> Result<Self> {
        let bench = Self {
            host: Netns::new("sat-bdp-h")?,
            peer: Netns::new("sat-bdp-p")?,
            bpffs: Bpffs::new("satellite-bench")?,
            work: tempfile::Builder::new()
                .prefix("satellite-bench-")
                .tempdir()?,
            agent,
        };
        bench.host.veth("uplink", &bench.peer, "wan")?;
        bench
            .host
            .ip(&["addr", "add", "198.18.0.1/24", "dev", "uplink"])?;
        bench
            .peer
            .ip(&["addr", "add", "198.18.0.2/24", "dev", "wan"])?;
        bench.host.ip(&["link", "set", "uplink", "up"])?;
        bench.peer.ip(&["link", "set", "wan", "up"])?;
        Ok(bench)
    }

    fn agent_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.host.command(&self.agent);
        cmd.arg("datapath")
            .args(args)
            .arg("--state-dir")
            .arg(self.work.path().join("state"));
        cmd
    }

    /// Prepares the host for `scenario`.
    fn enter(&self, scenario: Scenario) -> Result<()> {
        match scenario {
            Scenario::NoNat => Ok(()),
            Scenario::TcNat => crate::setup::run(
                self.agent_cmd(&[
                    "up",
                    "--node-ip",
                    &N.to_string(),
                    "--peer",
                    &PEER.to_string(),
                    "--uplink",
                    "uplink",
                    "--allow-ports",
                    &format!("{IPERF_PORT}/tcp,{RR_PORT}/tcp"),
                ])
                .arg("--bpffs-dir")
                .arg(self.bpffs.path().join("satellite"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            ),
            Scenario::Iptables => {
                self.host
                    .ip(&["addr", "add", &format!("{N}/32"), "dev", "lo"])?;
                iptables(&self.host, "-A")
            }
        }
    }

    /// Undoes [`Self::enter`].
    fn leave(&self, scenario: Scenario) -> Result<()> {
        match scenario {
            Scenario::NoNat => Ok(()),
            Scenario::TcNat => crate::setup::run(
                self.agent_cmd(&["down"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            ),
            Scenario::Iptables => {
                iptables(&self.host, "-D")?;
                self.host
                    .ip(&["addr", "del", &format!("{N}/32"), "dev", "lo"])
                    .map(drop)
            }
        }
    }
}

fn iptables(host: &Netns, op: &str) -> Result<()> {
    let (peer, s, n) = (PEER.to_string(), S.to_string(), N.to_string());
    host.exec(
        "iptables",
        &[
            "-t",
            "nat",
            op,
            "PREROUTING",
            "-i",
            "uplink",
            "-p",
            "tcp",
            "-s",
            &peer,
            "-d",
            &s,
            "-j",
            "DNAT",
            "--to-destination",
            &n,
        ],
    )
    .map(drop)
}

/// A child killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark.
pub fn run(rounds: usize, seconds: u64) -> Result<()> {
    satellite_tests::netns::require_root("bench datapath")?;
    cargo(&["build", "--release", "--package", "satellite-agent"])?;
    let bench = Bench::new(target_dir().join("release/satellite-agent"))?;
    let duration = Duration::from_secs(seconds);
    let mut throughput: [Vec<f64>; 3] = Default::default();
    let mut rr: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
            bench.enter(scenario)?;
            let measured = measure(&bench, scenario, duration);
            bench.leave(scenario)?;
            let (gbps, tps) = measured?;
            eprintln!(
                "round {}/{rounds} {:<14} {gbps:>7.2} Gbit/s {tps:>9.0} trans/s",
                round + 1,
                scenario.name()
            );
            throughput[i].push(gbps);
            rr[i].push(tps);
        }
    }
    let cost = program_cost(&bench, duration)?;

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\ndatapath over veth (kernel {}, {} CPUs; median of {rounds} × {seconds} s)",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>12} {:>14} {:>14}",
        "", "no NAT", "tc NAT (ours)", "iptables NAT"
    );
    let t: Vec<f64> = throughput.iter_mut().map(|v| median(v)).collect();
    let r: Vec<f64> = rr.iter_mut().map(|v| median(v)).collect();
    println!(
        "{:<34} {:>12.2} {:>14.2} {:>14.2}",
        "TCP throughput, 1 stream (Gbit/s)", t[0], t[1], t[2]
    );
    println!(
        "{:<34} {:>12.3} {:>14.3} {:>14.3}",
        "  vs no NAT",
        1.0,
        t[1] / t[0],
        t[2] / t[0]
    );
    println!(
        "{:<34} {:>12.0} {:>14.0} {:>14.0}",
        "TCP request/response (trans/s)", r[0], r[1], r[2]
    );
    println!(
        "{:<34} {:>12.3} {:>14.3} {:>14.3}",
        "  vs no NAT",
        1.0,
        r[1] / r[0],
        r[2] / r[0]
    );
    println!(
        "ours vs iptables: throughput {:.3}×, request/response {:.3}× (targets: ≥ 0.95 of no NAT, ≥ 1.0 of iptables)",
        t[1] / t[2],
        r[1] / r[2]
    );
    let floor = cost
        .iter()
        .find(|c| c.program == "empty")
        .map_or(0.0, |c| c.ns);
    println!(
        "\ntc program cost (kernel.bpf_stats_enabled: run_time_ns / run_cnt; target ≤ 100 ns)"
    );
    for c in &cost {
        println!(
            "{:<8} {:<17} {:>9} packets {:>8.1} ns/packet{}",
            c.program,
            c.workload,
            c.packets,
            c.ns,
            if c.program == "empty" {
                " (the floor: an empty program, the same measurement)".to_owned()
            } else {
                format!(", {:.1} ns above the floor", c.ns - floor)
            }
        );
    }
    Ok(())
}

/// Throughput (Gbit/s) and request/response rate (transactions/s) of one scenario.
fn measure(bench: &Bench, scenario: Scenario, duration: Duration) -> Result<(f64, f64)> {
    let server = scenario.server().to_string();
    let _iperf = Server(
        bench
            .host
            .command("iperf3")
            .args(["-s", "-B", &server, "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 (Debian package iperf3)")?,
    );
    // iperf3 -c retries nothing: until its server listens, the client reports an error.
    let mut attempt = 0;
    let bps = loop {
        let out = bench
            .peer
            .command("iperf3")
            .args(["-c", &S.to_string(), "-p", &IPERF_PORT.to_string(), "-J"])
            .args(["-t", &duration.as_secs().to_string()])
            .output()?;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64()
            && out.status.success()
        {
            break bps;
        }
        attempt += 1;
        if attempt == 20 {
            bail!(
                "iperf3 ({}): {}",
                scenario.name(),
                report["error"].as_str().map_or_else(
                    || String::from_utf8_lossy(&out.stdout).into_owned(),
                    str::to_owned
                )
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let tps = request_response(bench, scenario.server(), duration)?;
    Ok((bps / 1e9, tps))
}

/// One TCP connection from the peer to S, 1-byte ping-pong for `duration`: transactions/s.
fn request_response(bench: &Bench, server: Ipv4Addr, duration: Duration) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let listener = bench
        .host
        .run(move || TcpListener::bind((server, RR_PORT)))?;
    let serving = std::thread::spawn(move || -> Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while stream.read(&mut byte)? == 1 {
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    let stopped = Arc::clone(&stop);
    let count = bench.peer.run(move || {
        let mut stream = TcpStream::connect((S, RR_PORT))?;
        stream.set_nodelay(true)?;
        let start = Instant::now();
        let mut count = 0u64;
        let mut byte = [1u8; 1];
        while start.elapsed() < duration && !stopped.load(Ordering::Relaxed) {
            stream.write_all(&byte)?;
            stream.read_exact(&mut byte)?;
            count += 1;
        }
        Ok(count as f64 / start.elapsed().as_secs_f64())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = serving.join();
    count
}

/// `kernel.bpf_stats_enabled`, restored on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(Self::PATH).context(Self::PATH)?;
        std::fs::write(Self::PATH, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// The run-time statistics of one program over one workload.
struct Cost {
    /// What ran: `ingress`/`egress` (ours) or `empty` (the floor).
    program: String,
    /// The workload.
    workload: &'static str,
    /// Packets it ran for.
    packets: u64,
    /// Average nanoseconds per packet.
    ns: f64,
}

/// An empty classifier (`r0 = TC_ACT_UNSPEC; exit`), assembled with llvm-mc: the floor of the
/// measurement itself (the call, and the statistics' own clock reads).
const EMPTY_PROGRAM: &str = "\t.section classifier,\"ax\",@progbits
\t.globl sat_bench_empty
\t.type sat_bench_empty,@function
sat_bench_empty:
\tr0 = -1
\texit
\t.size sat_bench_empty, .-sat_bench_empty
\t.section license,\"aw\",@progbits
\t.globl _license
_license:
\t.asciz \"GPL\"
";

/// The floor and our programs' costs, with `kernel.bpf_stats_enabled=1` for each workload:
/// a UDP flood (iperf3, 64-byte datagrams; warm caches, the ingress path) through the empty
/// program and through our NAT, and the request/response run through our NAT (one packet at a
/// time; cold caches, both hooks).
fn program_cost(bench: &Bench, duration: Duration) -> Result<Vec<Cost>> {
    let mut costs = vec![empty_program_cost(bench, duration)?];
    bench.enter(Scenario::TcNat)?;
    let measured = (|| -> Result<()> {
        for workload in ["UDP flood", "request/response"] {
            let stats = BpfStats::enable()?;
            if workload == "UDP flood" {
                udp_flood(bench, N, duration)?;
            } else {
                request_response(bench, N, duration)?;
            }
            let status = bench.agent_cmd(&["status", "--json"]).output()?;
            drop(stats);
            let status: Value = serde_json::from_slice(&status.stdout).context("status --json")?;
            for p in status["programs"]
                .as_array()
                .context("status --json: no programs")?
            {
                let packets = p["runCount"].as_u64().unwrap_or(0);
                costs.push(Cost {
                    program: p["hook"].as_str().unwrap_or("?").to_owned(),
                    workload,
                    packets,
                    ns: p["runTimeNs"].as_u64().unwrap_or(0) as f64 / packets.max(1) as f64,
                });
            }
            // The next workload counts from zero: reinstall.
            bench.leave(Scenario::TcNat)?;
            bench.enter(Scenario::TcNat)?;
        }
        Ok(())
    })();
    bench.leave(Scenario::TcNat)?;
    measured?;
    Ok(costs)
}

/// The empty program on `uplink`'s ingress (no NAT) under the UDP flood.
fn empty_program_cost(bench: &Bench, duration: Duration) -> Result<Cost> {
    let source = bench.work.path().join("empty.s");
    let object = bench.work.path().join("empty.o");
    std::fs::write(&source, EMPTY_PROGRAM)?;
    crate::setup::run(
        Command::new(crate::ebpf::LLVM_MC)
            .args(["-triple", "bpfel", "-filetype=obj", "-o"])
            .arg(&object)
            .arg(&source),
    )?;
    let tc = |args: &[&str]| bench.host.exec("tc", args).map(drop);
    tc(&["qdisc", "add", "dev", "uplink", "clsact"])?;
    let measured = (|| -> Result<Cost> {
        tc(&[
            "filter",
            "add",
            "dev",
            "uplink",
            "ingress",
            "bpf",
            "da",
            "obj",
            &object.to_string_lossy(),
            "sec",
            "classifier",
        ])?;
        let stats = BpfStats::enable()?;
        udp_flood(bench, S, duration)?;
        let shown = Command::new("bpftool")
            .args(["-j", "prog", "show", "name", "sat_bench_empty"])
            .output()
            .context("running bpftool (Debian package bpftool)")?;
        drop(stats);
        let shown: Value = serde_json::from_slice(&shown.stdout).context("bpftool -j")?;
        let packets = shown["run_cnt"].as_u64().unwrap_or(0);
        Ok(Cost {
            program: "empty".into(),
            workload: "UDP flood",
            packets,
            ns: shown["run_time_ns"].as_u64().unwrap_or(0) as f64 / packets.max(1) as f64,
        })
    })();
    tc(&["qdisc", "del", "dev", "uplink", "clsact"])?;
    measured
}

/// 64-byte UDP datagrams from the peer to S at up to 200 Mbit/s for `duration` (iperf3 -u);
/// the server listens on `server`.
fn udp_flood(bench: &Bench, server: Ipv4Addr, duration: Duration) -> Result<()> {
    let _iperf = Server(
        bench
            .host
            .command("iperf3")
            .args([
                "-s",
                "-B",
                &server.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3")?,
    );
    for _ in 0..20 {
        let out = bench
            .peer
            .command("iperf3")
            .args(["-c", &S.to_string(), "-p", &IPERF_PORT.to_string()])
            .args([
                "-u",
                "-b",
                "200M",
                "-l",
                "64",
                "-t",
                &duration.as_secs().to_string(),
            ])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("iperf3 -u to {server} kept failing")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
