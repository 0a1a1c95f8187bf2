//! A simulated VPC, end to end, with the real `satellite-agent` binary on both sides. Every
//! test here needs root: `#[ignore = "needs root"]` (`cargo xtask test` runs them as root); run
//! anyway without root, they fail saying so. Four network namespaces, addresses from
//! 198.18.0.0/15:
//!
//! ```text
//!  client        proxy                         internet (provider NAT)      satellite host
//!  198.18.10.2 ─ 198.18.10.1, N 198.18.10.50   P 198.18.20.100 → S          eth0 S 198.18.30.2
//!                198.18.20.1 (+ .3 stranger) ─ 198.18.20.2 / 198.18.30.1 ─  lo N/32 (the agent)
//! ```
//!
//! The proxy (`satellite-agent proxy`) listens on N:10250 and connects to P:10250; the
//! "internet" namespace DNATs P to S and SNATs S back to P, as GPU clouds do; the host runs
//! `satellite-agent datapath up --watch` with the proxy (198.18.20.1) as its peer, and a TCP
//! server bound to N:10250. The link from the internet to the proxy has MTU 1280, so large
//! replies from the host need path MTU discovery through the NAT.
//!
//! One file (over 500 lines): every test runs in the same four-namespace topology.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use satellite_tests::netns::{Bpffs, Netns};

const N: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 50);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const PROXY: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 3);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 100);
const S: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 2);
const KUBELET: u16 = 10250;
const UDP_PORT: u16 = 5353;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes the host's server sends for a `big` request: many full-size segments.
const BIG: usize = 4 << 20;

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_satellite-agent")
}

/// The four namespaces, the private bpffs and the work dir; all removed on drop.
struct Vpc {
    client: Netns,
    proxy: Netns,
    internet: Netns,
    host: Netns,
    work: tempfile::TempDir,
    bpffs: Bpffs,
}

impl Vpc {
    fn new() -> Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("satellite-vpc-")
            .tempdir()?;
        let bpffs = Bpffs::new("satellite-vpc")?;
        let vpc = Self {
            client: Netns::new("sat-vpc-c")?,
            proxy: Netns::new("sat-vpc-x")?,
            internet: Netns::new("sat-vpc-i")?,
            host: Netns::new("sat-vpc-h")?,
            work,
            bpffs,
        };
        vpc.client.veth("vpc0", &vpc.proxy, "vpc0")?;
        vpc.proxy.veth("wan0", &vpc.internet, "pub0")?;
        vpc.internet.veth("prv0", &vpc.host, "eth0")?;
        for (ns, link, addrs) in [
            (&vpc.client, "vpc0", &["198.18.10.2/24"][..]),
            (&vpc.proxy, "vpc0", &["198.18.10.1/24", "198.18.10.50/32"]),
            (&vpc.proxy, "wan0", &["198.18.20.1/24", "198.18.20.3/24"]),
            (
                &vpc.internet,
                "pub0",
                &["198.18.20.2/24", "198.18.20.100/32"],
            ),
            (&vpc.internet, "prv0", &["198.18.30.1/24"]),
            (&vpc.host, "eth0", &["198.18.30.2/24"]),
        ] {
            for addr in addrs {
                ns.ip(&["addr", "add", addr, "dev", link])?;
            }
            ns.ip(&["link", "set", link, "up"])?;
        }
        // The only narrow link: the internet's side towards the proxy.
        vpc.internet.ip(&["link", "set", "pub0", "mtu", "1280"])?;
        vpc.host
            .ip(&["route", "add", "default", "via", "198.18.30.1"])?;
        vpc.proxy
            .ip(&["route", "add", "198.18.30.0/24", "via", "198.18.20.2"])?;
        // Checksums computed in software on every hop: a wrong incremental update by the tc
        // programs is a dropped packet, not a silently accepted one.
        for (ns, link) in [(&vpc.host, "eth0"), (&vpc.internet, "prv0")] {
            ns.exec("ethtool", &["-K", link, "tx", "off"])?;
        }
        Ok(vpc)
    }

    /// The provider's 1:1 NAT of the host's public address (iptables in the internet
    /// namespace, which forwards).
    fn provider_nat(&self) -> Result<()> {
        self.internet.sysctl("net.ipv4.ip_forward=1")?;
        for rule in [
            "PREROUTING -d 198.18.20.100 -j DNAT --to-destination 198.18.30.2",
            "POSTROUTING -s 198.18.30.2 -j SNAT --to-source 198.18.20.100",
        ] {
            let args: Vec<&str> = ["-t", "nat", "-A"]
                .into_iter()
                .chain(rule.split(' '))
                .collect();
            self.internet.exec("iptables", &args)?;
        }
        Ok(())
    }

    fn state_dir(&self) -> PathBuf {
        self.work.path().join("state")
    }

    /// `satellite-agent datapath ARGS` in the host namespace, with this test's state dir.
    fn datapath(&self, args: &[&str]) -> Command {
        let mut cmd = self.host.command(agent_bin());
        cmd.arg("datapath").args(args);
        if args.first() != Some(&"up") || !args.contains(&"-c") {
            cmd.arg("--state-dir").arg(self.state_dir());
        }
        cmd
    }

    /// The NodeConfig the host's agent uses (`datapath up -c`, `leave -c`).
    fn node_config(&self) -> Result<PathBuf> {
        let path = self.work.path().join("node.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: satellite.dev/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: vpc-test
    region: us-east-1
  identity:
    roleArn: arn:aws:iam::123456789012:role/satellite-node
  node:
    ip: {N}
  datapath:
    peers: [{PROXY}]
    uplink: eth0
    allowPorts: [\"{KUBELET}/tcp\", \"30000-32767\"]
    bpffsDir: {}
    stateDir: {}
",
                self.bpffs.path().join("satellite").display(),
                self.state_dir().display()
            ),
        )?;
        Ok(path)
    }

    /// What `leave` must restore: addresses, routes of every table, qdiscs, filters, pins.
    fn host_snapshot(&self) -> Result<String> {
        let mut out = String::new();
        for args in [
            // IPv4 only: IPv6 link-local addresses change flags on their own (DAD).
            &["-4", "-j", "addr", "show"][..],
            &["-4", "-j", "route", "show", "table", "all"],
        ] {
            out.push_str(&self.host.ip(args)?);
        }
        for args in [
            &["qdisc", "show"][..],
            &["filter", "show", "dev", "eth0", "ingress"],
            &["filter", "show", "dev", "eth0", "egress"],
        ] {
            out.push_str(&self.host.exec("tc", args)?);
        }
        out.push_str(&format!("{:?}", tree(self.bpffs.path())));
        Ok(out)
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Process(Option<Child>);

impl Process {
    fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting satellite-agent")?;
        Ok(Self(Some(child)))
    }

    fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            found.push(path.display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{what}: not within {timeout:?}")
}

/// The datapath's status as JSON (`datapath status --json`) and whether it is intact.
fn status(vpc: &Vpc) -> Result<(serde_json::Value, bool)> {
    let out: Output = vpc.datapath(&["status", "--json"]).output()?;
    let json = serde_json::from_slice(&out.stdout).context("status --json")?;
    Ok((json, out.status.success()))
}

/// The host's servers: TCP echo on N:10250 (`big` → [`BIG`] bytes), UDP echo on N:5353. Each
/// TCP reply starts with the peer address the server saw. They run until the namespace goes.
fn start_servers(host: &Netns) -> Result<()> {
    host.run(|| -> Result<()> {
        let tcp = TcpListener::bind((N, KUBELET))?;
        std::thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                std::thread::spawn(move || serve(stream));
            }
        });
        let udp = UdpSocket::bind((N, UDP_PORT))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        Ok(())
    })
}

fn serve(mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut buf = [0u8; 256];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return;
        }
        let reply = if &buf[..n] == b"big" {
            let mut big = vec![0u8; BIG];
            for (i, b) in big.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            big
        } else {
            format!("{peer} {}", String::from_utf8_lossy(&buf[..n])).into_bytes()
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Sends `message` on `stream` and reads one reply.
fn exchange(stream: &mut TcpStream, message: &str) -> Result<String> {
    stream.write_all(message.as_bytes())?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf)?;
    ensure!(n > 0, "connection closed instead of a reply to {message:?}");
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
#[ignore = "needs root"]
fn vpc_client_reaches_the_host_through_the_proxy_and_the_datapath() -> Result<()> {
    let vpc = Vpc::new()?;
    vpc.provider_nat()?;
    let before = vpc.host_snapshot()?;
    let config = vpc.node_config()?;
    let logs = vpc.work.path();

    let mut agent = Process::spawn(
        {
            let mut cmd = vpc.datapath(&["up", "--watch", "-c"]);
            cmd.arg(&config);
            cmd
        },
        &logs.join("agent.log"),
    )?;
    wait_for("the datapath to be up", Duration::from_secs(20), || {
        status(&vpc).is_ok_and(|(_, intact)| intact)
    })?;
    // Bound to N, as kubelet is: only once the agent has put N on lo.
    start_servers(&vpc.host)?;
    let _proxy = Process::spawn(
        {
            let mut cmd = vpc.proxy.command(agent_bin());
            cmd.args(["proxy", "--map", &format!("{N}={PUBLIC}:{KUBELET}")]);
            cmd
        },
        &logs.join("proxy.log"),
    )?;

    // 1. The VPC client reaches the server bound to N:10250 via N, through the proxy; the
    //    server sees the proxy as its peer.
    let mut kept = vpc.client.run(|| -> Result<_> {
        let addr = SocketAddr::from((N, KUBELET));
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => bail!("connecting to N via the proxy: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    })?;
    let reply = exchange(&mut kept, "hello")?;
    assert!(reply.starts_with(&format!("{PROXY}:")), "{reply}");
    assert!(reply.ends_with(" hello"), "{reply}");
    assert_eq!(kept.local_addr()?.ip(), CLIENT);

    // 2. Path MTU discovery through the provider NAT: 4 MiB from the host in 1500-byte
    //    segments meet the 1280-byte link; the router's "fragmentation needed" (to S, quoting
    //    S → proxy) must reach the socket bound to N, or the transfer stalls.
    let received = vpc.client.run(|| -> Result<_> {
        let mut stream = TcpStream::connect((N, KUBELET))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(b"big")?;
        let mut big = vec![0u8; BIG];
        stream
            .read_exact(&mut big)
            .context("reading 4 MiB through a 1280-byte link (PMTU discovery)")?;
        Ok(big)
    })?;
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8),
        "the large reply arrived corrupted"
    );
    let (json, _) = status(&vpc)?;
    assert!(
        json["counters"]["icmpErrorRewritten"].as_u64() > Some(0),
        "no ICMP error was rewritten: {json}"
    );

    // 3. A UDP exchange between the proxy and N, via the public address.
    let echoed = vpc.proxy.run(|| -> Result<_> {
        let socket = UdpSocket::bind((PROXY, 0))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(b"ping", (PUBLIC, UDP_PORT))?;
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf)?;
        Ok((buf[..n].to_vec(), from))
    })?;
    assert_eq!(echoed.0, b"ping");
    assert_eq!(echoed.1, SocketAddr::from((PUBLIC, UDP_PORT)));

    // 4. A non-peer reaching the protected port over the internet is dropped (and counted).
    let dropped_before = status(&vpc)?.0["counters"]["droppedNotAllowed"].as_u64();
    let stranger = vpc.proxy.run(|| -> Result<_> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((STRANGER, 0)).into())?;
        Ok(socket
            .connect_timeout(
                &SocketAddr::from((PUBLIC, KUBELET)).into(),
                Duration::from_secs(1),
            )
            .is_ok())
    })?;
    assert!(!stranger, "a non-peer connected to the protected port");
    assert!(status(&vpc)?.0["counters"]["droppedNotAllowed"].as_u64() > dropped_before);

    // 5. kill -9 of the agent: the open connection keeps working (pinned programs).
    let pid = agent.pid();
    agent.kill();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(exchange(&mut kept, "after kill")?.ends_with(" after kill"));

    // 6. A restarted agent adopts what is pinned; N deleted from lo comes back within 1 s.
    let mut agent = Process::spawn(
        {
            let mut cmd = vpc.datapath(&["up", "--watch", "-c"]);
            cmd.arg(&config);
            cmd
        },
        &logs.join("agent-2.log"),
    )?;
    wait_for("the agent to reconcile", Duration::from_secs(20), || {
        std::fs::read_to_string(logs.join("agent-2.log"))
            .is_ok_and(|log| log.contains("reconciling the datapath"))
    })?;
    assert!(exchange(&mut kept, "adopted")?.ends_with(" adopted"));
    vpc.host
        .ip(&["addr", "del", &format!("{N}/32"), "dev", "lo"])?;
    let repaired = wait_for("N back on lo", Duration::from_secs(1), || {
        vpc.host
            .ip(&["-o", "addr", "show", "dev", "lo"])
            .is_ok_and(|a| a.contains(&format!(" {N}/32 ")))
    })?;
    eprintln!("N restored on lo after {repaired:?}");
    vpc.host.ip(&["route", "del", &format!("{PROXY}/32")])?;
    wait_for("the peer route back", Duration::from_secs(1), || {
        vpc.host
            .ip(&["route", "show", &format!("{PROXY}/32")])
            .is_ok_and(|r| r.contains("proto 211"))
    })?;
    assert!(exchange(&mut kept, "repaired")?.ends_with(" repaired"));

    // 7. `leave` removes everything, and only that: the host is as before, and the running
    //    agent stops reconciling (it exits).
    drop(kept);
    let left = vpc
        .host
        .command(agent_bin())
        .arg("leave")
        .arg("-c")
        .arg(&config)
        .output()?;
    assert!(
        left.status.success(),
        "{}",
        String::from_utf8_lossy(&left.stderr)
    );
    let exited = agent.wait_exit(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the agent kept running after leave: {exited:?}"
    );
    assert_eq!(
        vpc.host_snapshot()?,
        before,
        "leave did not restore the host"
    );
    let (_, intact) = status(&vpc).unwrap_or((serde_json::Value::Null, false));
    assert!(!intact);
    Ok(())
}

#[test]
#[ignore = "needs root"]
fn bad_input_changes_nothing() -> Result<()> {
    let vpc = Vpc::new()?;
    let before = vpc.host_snapshot()?;
    let bpffs = vpc.bpffs.path().join("satellite");
    let cases: [(&[&str], &str); 5] = [
        (&["--peer", "198.18.20.1"], "--node-ip"),
        (
            &["--node-ip", "198.18.10.50", "--peer", "198.18.10.50"],
            "node IP itself",
        ),
        (
            &[
                "--node-ip",
                "198.18.10.50",
                "--peer",
                "198.18.20.1",
                "--allow-ports",
                "10250/sctp",
            ],
            "tcp or udp",
        ),
        (
            &[
                "--node-ip",
                "198.18.10.50",
                "--peer",
                "198.18.20.1",
                "--uplink",
                "nosuch0",
            ],
            "does not exist",
        ),
        (
            &[
                "--node-ip",
                "198.18.30.2",
                "--peer",
                "198.18.20.1",
                "--uplink",
                "eth0",
            ],
            "address of the uplink",
        ),
    ];
    for (args, message) in cases {
        let out = vpc
            .datapath(&["up"])
            .args(args)
            .arg("--bpffs-dir")
            .arg(&bpffs)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // Not a bpffs: refused before N or a route is added.
    let out = vpc
        .datapath(&["up", "--node-ip", "198.18.10.50", "--peer", "198.18.20.1"])
        .arg("--bpffs-dir")
        .arg(vpc.work.path().join("not-bpffs"))
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on a bpffs"));
    assert!(
        !vpc.work.path().join("not-bpffs").exists(),
        "a refused up left the directory it made"
    );
    assert_eq!(
        vpc.host_snapshot()?,
        before,
        "a refused up changed the host"
    );
    assert!(
        !vpc.state_dir().join("datapath/eth0.json").exists(),
        "a refused up left a record"
    );
    Ok(())
}

#[test]
#[ignore = "needs root"]
fn second_up_changes_nothing_and_existing_state_is_not_owned() -> Result<()> {
    let vpc = Vpc::new()?;
    // N is already on lo and a /32 route to the peer exists: not ours, so they stay.
    vpc.host
        .ip(&["addr", "add", &format!("{N}/32"), "dev", "lo"])?;
    vpc.host
        .ip(&["route", "add", &format!("{PROXY}/32"), "via", "198.18.30.1"])?;
    let before = vpc.host_snapshot()?;
    let up = |attach: &str| -> Result<Output> {
        Ok(vpc
            .datapath(&[
                "up",
                "--node-ip",
                &N.to_string(),
                "--peer",
                &PROXY.to_string(),
            ])
            .args(["--attach", attach])
            .arg("--bpffs-dir")
            .arg(vpc.bpffs.path().join("satellite"))
            .output()?)
    };
    for attach in ["netlink", "auto"] {
        let first = up(attach)?;
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let (json, intact) = status(&vpc)?;
        assert!(intact, "{json}");
        assert_eq!(json["record"]["addressAdded"], false);
        assert_eq!(json["record"]["hostAddress"], S.to_string());
        assert_eq!(json["record"]["routes"], serde_json::json!([]));
        let installed = vpc.host_snapshot()?;
        let ids = json["programs"].clone();
        let second = up(attach)?;
        assert!(second.status.success());
        assert_eq!(
            vpc.host_snapshot()?,
            installed,
            "a second up changed the host"
        );
        assert_eq!(
            status(&vpc)?.0["programs"],
            ids,
            "a second up replaced the programs"
        );
        let down = vpc.datapath(&["down"]).output()?;
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert_eq!(
            vpc.host_snapshot()?,
            before,
            "down removed what it did not add"
        );
    }
    let again = vpc.datapath(&["down"]).output()?;
    assert!(
        again.status.success(),
        "down with nothing installed must succeed"
    );
    Ok(())
}
