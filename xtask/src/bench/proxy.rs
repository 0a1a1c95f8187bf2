//! `cargo xtask bench proxy`: `satellite-agent proxy` (release build) against HAProxy (mode tcp,
//! splice both ways) and socat (`fork`), doing the same forwarding in the same run.
//!
//! ```text
//!  client ns             proxy ns                            backend ns
//!  c0 198.18.1.2/24 ──── p0 198.18.1.1/24 + N 198.18.1.10    
//!                        p1 198.18.2.1/24 ────────────────── b0 198.18.2.2/24 (PUB)
//!                        (ip_forward on: the "direct" row)    iperf3 -s :5201, echo :7000
//! ```
//!
//! Each proxy listens on N:5201 and N:7000 and forwards to PUB on the same port; one runs at a
//! time. Per proxy and round: TCP throughput (`iperf3 -P <streams> -t <seconds> -O 1 --json`,
//! `end.sum_received`), then new connections per second (`concurrency` client threads, each
//! connecting, sending 8 bytes, reading the echo and closing, for `conn_seconds`), and the
//! proxy's CPU time in each. The "direct" row is the kernel routing the same traffic (no
//! proxy): the ceiling. The table shows the median over the rounds (run in turn, so drift
//! hits every proxy alike).
//!
//! One file (over 500 lines): the topology, the three proxies under test and the report share
//! one set of namespaces and must be read together to trust the comparison.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use satellite_tests::netns::{self, Netns};

use crate::bench::target_dir;
use crate::cargo;

const N: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const PUB: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const IPERF_PORT: u16 = 5201;
const ECHO_PORT: u16 = 7000;
/// Connection limit of our proxy and HAProxy (HAProxy needs about 2 descriptors per
/// connection within `ulimit -n`).
const MAX_CONNECTIONS: usize = 4000;
/// Bytes each connection-rate client sends and reads back.
const PING: &[u8; 8] = b"satelite";

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// iperf3 seconds per throughput scenario (plus one omitted warm-up second).
    pub seconds: u64,
    /// Seconds per connection-rate scenario.
    pub conn_seconds: u64,
    /// Parallel iperf3 streams.
    pub streams: usize,
    /// Concurrent connection-rate clients.
    pub concurrency: usize,
    /// Rounds (the median is shown).
    pub rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Direct,
    Ours,
    Haproxy,
    Socat,
}

impl Subject {
    const ALL: [Subject; 4] = [
        Subject::Direct,
        Subject::Ours,
        Subject::Haproxy,
        Subject::Socat,
    ];

    /// Where clients connect.
    fn front(self) -> Ipv4Addr {
        if self == Subject::Direct { PUB } else { N }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    gbits: f64,
    throughput_cpu: f64,
    conns_per_s: f64,
    conn_cpu: f64,
    conn_errors: u64,
}

/// Runs the benchmark and prints its table.
pub fn run(options: Options) -> Result<()> {
    netns::require_root("bench proxy")?;
    for tool in ["haproxy", "socat", "iperf3", "ss"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    cargo(&["build", "--quiet", "--release", "-p", "satellite-agent"])?;
    let agent = target_dir().join("release/satellite-agent");
    let work = tempfile::Builder::new()
        .prefix("satellite-bench-proxy-")
        .tempdir()?;
    let topo = Topology::new()?;
    let _iperf = Daemon::spawn(
        netns::command(topo.backend.name(), "iperf3").args([
            "-s",
            "-B",
            &PUB.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ]),
        &work.path().join("iperf3-server.log"),
    )?;
    let echo = EchoServer::start(topo.backend.name(), options.concurrency * 2)?;
    wait_listening(topo.backend.name(), &[IPERF_PORT, ECHO_PORT])?;

    let versions = Versions::read();
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); Subject::ALL.len()];
    for round in 1..=options.rounds {
        for (i, subject) in Subject::ALL.into_iter().enumerate() {
            eprintln!("bench proxy: round {round}/{}: {subject:?}", options.rounds);
            let figures = measure(&topo, subject, &agent, work.path(), &options)
                .with_context(|| format!("{subject:?}, round {round}"))?;
            results[i].push(figures);
        }
    }
    drop(echo);

    let median = |i: usize, f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = results[i].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!(
        "TCP pass-through, network namespaces over veth, {} CPU(s); median of {} round(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        options.rounds
    );
    println!(
        "throughput: iperf3 -P {} -t {}; connection rate: {} clients, connect + 8-byte echo + \
         close, {} s",
        options.streams, options.seconds, options.concurrency, options.conn_seconds
    );
    println!();
    println!(
        "{:<40} {:>7} {:>12} {:>8} {:>12} {:>7}",
        "forwarder", "Gbit/s", "proxy CPU %", "conn/s", "proxy CPU %", "errors"
    );
    let names = [
        "direct (kernel routing, no proxy)".to_owned(),
        "satellite-agent proxy (splice)".to_owned(),
        format!("HAProxy {} (tcp, splice)", versions.haproxy),
        format!("socat {} (fork)", versions.socat),
    ];
    for (i, name) in names.iter().enumerate() {
        let errors: u64 = results[i].iter().map(|f| f.conn_errors).sum();
        let cpu = |v: f64| {
            if i == 0 {
                "-".to_owned()
            } else {
                format!("{v:.0}")
            }
        };
        println!(
            "{:<40} {:>7.2} {:>12} {:>8.0} {:>12} {:>7}",
            name,
            median(i, |f| f.gbits),
            cpu(median(i, |f| f.throughput_cpu)),
            median(i, |f| f.conns_per_s),
            cpu(median(i, |f| f.conn_cpu)),
            errors
        );
    }
    let (ours, haproxy, socat) = (1, 2, 3);
    let ratio = |a: usize, b: usize, f: fn(&Figures) -> f64| median(a, f) / median(b, f).max(1e-9);
    println!();
    println!(
        "ours vs HAProxy: throughput {:.2}x (target >= 1.0x), conn/s {:.2}x",
        ratio(ours, haproxy, |f| f.gbits),
        ratio(ours, haproxy, |f| f.conns_per_s)
    );
    println!(
        "ours vs socat:   throughput {:.2}x (target >= 2x), conn/s {:.2}x",
        ratio(ours, socat, |f| f.gbits),
        ratio(ours, socat, |f| f.conns_per_s)
    );
    // CPU per unit of work: a forwarder that shares 2 CPUs with iperf3 can only be as fast as
    // the endpoints allow, so this is where forwarders differ most.
    let per = |i: usize, cpu: fn(&Figures) -> f64, work: fn(&Figures) -> f64| {
        median(i, cpu) / median(i, work).max(1e-9)
    };
    let cpu_ratio = |b: usize, cpu: fn(&Figures) -> f64, work: fn(&Figures) -> f64| {
        per(b, cpu, work) / per(ours, cpu, work).max(1e-9)
    };
    println!(
        "CPU per Gbit/s: HAProxy uses {:.2}x ours, socat {:.2}x; CPU per connection/s: HAProxy \
         {:.2}x, socat {:.2}x",
        cpu_ratio(haproxy, |f| f.throughput_cpu, |f| f.gbits),
        cpu_ratio(socat, |f| f.throughput_cpu, |f| f.gbits),
        cpu_ratio(haproxy, |f| f.conn_cpu, |f| f.conns_per_s),
        cpu_ratio(socat, |f| f.conn_cpu, |f| f.conns_per_s),
    );
    Ok(())
}

/// One subject, one round: start it, measure both scenarios, stop it.
fn measure(
    topo: &Topology,
    subject: Subject,
    agent: &Path,
    work: &Path,
    options: &Options,
) -> Result<Figures> {
    let log = |name: &str| work.join(format!("{name}.log"));
    let mut daemons: Vec<Daemon> = match subject {
        Subject::Direct => Vec::new(),
        Subject::Ours => vec![Daemon::spawn(
            netns::command(topo.proxy.name(), agent)
                .args([
                    "proxy",
                    "--map",
                    &format!("{N}={PUB}:{IPERF_PORT},{ECHO_PORT}"),
                    "--max-connections",
                    &MAX_CONNECTIONS.to_string(),
                ])
                .env("SATELLITE_LOG", "warn"),
            &log("satellite-agent"),
        )?],
        Subject::Haproxy => {
            let config = work.join("haproxy.cfg");
            std::fs::write(&config, haproxy_config())?;
            vec![Daemon::spawn(
                netns::command(topo.proxy.name(), "haproxy")
                    .arg("-db")
                    .arg("-f")
                    .arg(&config),
                &log("haproxy"),
            )?]
        }
        Subject::Socat => [IPERF_PORT, ECHO_PORT]
            .into_iter()
            .map(|port| {
                Daemon::spawn(
                    netns::command(topo.proxy.name(), "socat").args([
                        format!("TCP-LISTEN:{port},bind={N},fork,reuseaddr,backlog=4096"),
                        format!("TCP:{PUB}:{port}"),
                    ]),
                    &log(&format!("socat-{port}")),
                )
            })
            .collect::<Result<_>>()?,
    };
    if subject != Subject::Direct
        && let Err(e) = wait_listening(topo.proxy.name(), &[IPERF_PORT, ECHO_PORT])
    {
        let logs: Vec<String> = daemons.iter().map(Daemon::log).collect();
        bail!("{e:#}\n{}", logs.join("\n"));
    }
    let cpu = || daemons.iter().map(|d| cpu_seconds(d.pid())).sum::<f64>();

    let before = cpu();
    let started = Instant::now();
    let gbits = iperf(topo, subject.front(), options)?;
    let throughput_cpu = (cpu() - before) / started.elapsed().as_secs_f64() * 100.0;

    let before = cpu();
    let started = Instant::now();
    let (conns, conn_errors) = connection_rate(
        topo.client.name(),
        SocketAddrV4::new(subject.front(), ECHO_PORT),
        options.concurrency,
        Duration::from_secs(options.conn_seconds),
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let conn_cpu = (cpu() - before) / elapsed * 100.0;
    for d in &mut daemons {
        d.check_alive()?;
    }
    drop(daemons);
    // Let TIME_WAIT and the backlog of the previous subject settle.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Figures {
        gbits,
        throughput_cpu,
        conns_per_s: conns as f64 / elapsed,
        conn_cpu,
        conn_errors,
    })
}

fn haproxy_config() -> String {
    // Splice forced both ways (not only `splice-auto`'s guess), as our proxy does.
    format!(
        "global\n    maxconn {MAX_CONNECTIONS}\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
         timeout client 1h\n    timeout server 1h\n    option splice-request\n    option \
         splice-response\n\nlisten iperf\n    bind {N}:{IPERF_PORT}\n    server backend \
         {PUB}:{IPERF_PORT}\n\nlisten echo\n    bind {N}:{ECHO_PORT}\n    server backend \
         {PUB}:{ECHO_PORT}\n"
    )
}

/// iperf3 through `front`: received Gbit/s.
fn iperf(topo: &Topology, front: Ipv4Addr, options: &Options) -> Result<f64> {
    let out = netns::command(topo.client.name(), "iperf3")
        .args([
            "-c",
            &front.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-P",
            &options.streams.to_string(),
            "-t",
            &options.seconds.to_string(),
            "-O",
            "1",
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running iperf3")?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output is not JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(error) = json.get("error") {
        bail!("iperf3: {error}");
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// `concurrency` threads in namespace `ns` connecting to `addr` for `duration`: (connections
/// completed, errors).
fn connection_rate(
    ns: &str,
    addr: SocketAddrV4,
    concurrency: usize,
    duration: Duration,
) -> Result<(u64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (ns, done, errors) = (ns.to_owned(), Arc::clone(&done), Arc::clone(&errors));
            std::thread::spawn(move || -> Result<()> {
                netns::run_in(&ns, move || {
                    while Instant::now() < deadline {
                        match ping(addr) {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok((done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed)))
}

fn ping(addr: SocketAddrV4) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_nodelay(true)?;
    stream.write_all(PING)?;
    let mut back = [0u8; PING.len()];
    stream.read_exact(&mut back)?;
    if &back != PING {
        return Err(std::io::Error::other("wrong echo"));
    }
    Ok(())
}

/// Echo server threads in the backend namespace, blocked in `accept`; they stop with the
/// value (`shutdown` of the listening socket wakes them).
struct EchoServer {
    listener: TcpListener,
}

impl EchoServer {
    fn start(ns: &str, threads: usize) -> Result<EchoServer> {
        let listener = netns::run_in(ns, move || -> Result<TcpListener> {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::from((PUB, ECHO_PORT)).into())?;
            socket.listen(4096)?;
            Ok(socket.into())
        })??;
        for _ in 0..threads {
            let listener = listener.try_clone()?;
            std::thread::spawn(move || {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        Ok(EchoServer { listener })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // Wakes every thread blocked in accept(2) with an error.
        let _ = socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Both);
    }
}

/// Waits until something listens on each of `ports` in namespace `ns` (`ss -ltn`).
fn wait_listening(ns: &str, ports: &[u16]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = netns::command(ns, "ss")
            .arg("-Hltn")
            .output()
            .context("running ss")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if ports.iter().all(|p| {
            text.split_whitespace()
                .any(|w| w.ends_with(&format!(":{p}")))
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {ports:?} in {ns} after 10 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU seconds of `pid` and its reaped children (`/proc/<pid>/stat` utime, stime, cutime,
/// cstime).
fn cpu_seconds(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, i.e. index 11 counting from state (field 3).
    let ticks: u64 = fields
        .get(11..15)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A child process, killed and reaped on drop.
struct Daemon {
    child: Child,
    name: String,
    log: std::path::PathBuf,
}

impl Daemon {
    fn spawn(cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let file = std::fs::File::create(log)?;
        let name = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon {
            child,
            name,
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    fn log(&self) -> String {
        format!(
            "{} ({}):\n{}",
            self.name,
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{status}: {}", self.log());
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peers' versions, for the table.
struct Versions {
    haproxy: String,
    socat: String,
}

impl Versions {
    fn read() -> Versions {
        let first_line = |program: &str, arg: &str, word: usize| {
            Command::new(program)
                .arg(arg)
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .and_then(|l| l.split_whitespace().nth(word).map(str::to_owned))
                })
                .unwrap_or_else(|| "?".into())
        };
        Versions {
            // "HAProxy version 2.6.12-1+deb12u4 2025/…"
            haproxy: first_line("haproxy", "-v", 2),
            // "socat by Gerhard Rieger and contributors - see www.dest-unreach.org" then
            // "socat version 1.7.4.4 on …"
            socat: Command::new("socat")
                .arg("-V")
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .find(|l| l.starts_with("socat version"))
                        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
                })
                .unwrap_or_else(|| "?".into()),
        }
    }
}

/// The three namespaces (`lo` up; deleted on drop, with their veths).
struct Topology {
    client: Netns,
    proxy: Netns,
    backend: Netns,
}

impl Topology {
    fn new() -> Result<Topology> {
        let topo = Topology {
            client: Netns::new("sat-bench-c")?,
            proxy: Netns::new("sat-bench-p")?,
            backend: Netns::new("sat-bench-b")?,
        };
        let (c, p, b) = (&topo.client, &topo.proxy, &topo.backend);
        for ns in [c, p, b] {
            // Many short connections: the whole port range, and TIME_WAIT reuse.
            ns.sysctl("net.ipv4.ip_local_port_range=1024 65535")?;
            ns.sysctl("net.ipv4.tcp_tw_reuse=1")?;
        }
        c.veth("c0", p, "p0")?;
        p.veth("p1", b, "b0")?;
        for (ns, dev, addrs) in [
            (c, "c0", &["198.18.1.2/24"][..]),
            (p, "p0", &["198.18.1.1/24", "198.18.1.10/24"][..]),
            (p, "p1", &["198.18.2.1/24"][..]),
            (b, "b0", &["198.18.2.2/24"][..]),
        ] {
            for addr in addrs {
                ns.ip(&["addr", "add", addr, "dev", dev])?;
            }
            ns.ip(&["link", "set", dev, "up"])?;
        }
        // The "direct" row: the proxy namespace routes between the two sides.
        p.sysctl("net.ipv4.ip_forward=1")?;
        c.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.1.1"])?;
        b.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.2.1"])?;
        Ok(topo)
    }
}
