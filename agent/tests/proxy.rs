//! `satellite-agent proxy` end to end: the real binary, real sockets, in network namespaces.
//! Every test here needs root: `#[ignore = "needs root"]` (`cargo xtask test` runs them as
//! root); run anyway without root, they fail saying so.
//!
//! Each test builds its own three namespaces:
//!
//! ```text
//!  client ns            proxy ns                                backend ns
//!  c0 198.18.1.2/24 ── p0 198.18.1.1/24                          (the GPU hosts' "public" side)
//!                        + N1 198.18.1.10, N2 198.18.1.11
//!                      p1 198.18.2.1/24 ──────────────────────── b0 198.18.2.2/24 (PUB1)
//!                                                                   + 198.18.2.3/24 (PUB2)
//! ```
//!
//! The proxy runs in the proxy namespace as a child process (entered with `setns` between fork
//! and exec) with its health endpoint on the namespace's own 127.0.0.1:9901. Clients and
//! servers are std sockets opened on threads that entered the client or backend namespace
//! ([`Netns::run`]). Namespaces are deleted ([`Netns`]) and the proxy killed by guards, also
//! when a test panics.
//!
//! One file (over 500 lines): every test runs in the same three-namespace topology.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use satellite_tests::netns::Netns;
use sha2::{Digest, Sha256};

const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const PROXY_OUT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const PUB1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const PUB2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);
const HEALTH: &str = "127.0.0.1:9901";
const TIMEOUT: Duration = Duration::from_secs(10);
const AGENT: &str = env!("CARGO_BIN_EXE_satellite-agent");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The three namespaces and their veth pairs; deleted on drop.
struct Topology {
    client: Netns,
    proxy: Netns,
    backend: Netns,
    logs: tempfile::TempDir,
}

impl Topology {
    /// Panics (saying what to do) unless running as root.
    fn new() -> Self {
        Self::build().unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn build() -> anyhow::Result<Self> {
        let topo = Self {
            client: Netns::new("sat-px-c")?,
            proxy: Netns::new("sat-px-p")?,
            backend: Netns::new("sat-px-b")?,
            logs: tempfile::tempdir()?,
        };
        let (c, p, b) = (&topo.client, &topo.proxy, &topo.backend);
        c.veth("c0", p, "p0")?;
        p.veth("p1", b, "b0")?;
        for (ns, dev, addrs) in [
            (c, "c0", &["198.18.1.2/24"][..]),
            (
                p,
                "p0",
                &["198.18.1.1/24", "198.18.1.10/24", "198.18.1.11/24"][..],
            ),
            (p, "p1", &["198.18.2.1/24"][..]),
            (b, "b0", &["198.18.2.2/24", "198.18.2.3/24"][..]),
        ] {
            for addr in addrs {
                ns.ip(&["addr", "add", addr, "dev", dev])?;
            }
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(topo)
    }

    /// Starts the proxy with `args` (plus the health endpoint) and waits until `/healthz`
    /// answers 200.
    fn proxy(&self, args: &[&str]) -> ProxyProcess {
        let mut child = self.spawn_proxy(args, &["--health", HEALTH]);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.child.try_wait().expect("try_wait") {
                panic!(
                    "the proxy exited ({status}) before listening:\n{}",
                    child.log()
                );
            }
            if self.get("/healthz").is_ok_and(|(status, _)| status == 200) {
                return child;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not become healthy:\n{}",
                child.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn_proxy(&self, args: &[&str], extra: &[&str]) -> ProxyProcess {
        let log_path = self.logs.path().join(format!(
            "proxy-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log = File::create(&log_path).expect("log file");
        let child = self
            .proxy
            .command(AGENT)
            .arg("proxy")
            .args(args)
            .args(extra)
            .env("SATELLITE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawning satellite-agent proxy");
        ProxyProcess { child, log_path }
    }

    /// Runs the proxy with `args` to its end (it must exit within the timeout).
    fn proxy_exits(&self, args: &[&str]) -> (ExitStatus, String) {
        let mut proxy = self.spawn_proxy(args, &[]);
        let status = proxy
            .wait_timeout(TIMEOUT)
            .unwrap_or_else(|| panic!("the proxy kept running:\n{}", proxy.log()));
        (status, proxy.log())
    }

    /// `GET path` on the proxy's health endpoint: (status, body).
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let addr: SocketAddr = HEALTH.parse().unwrap();
        let mut stream = self
            .proxy
            .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {HEALTH}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `metric(name, labels)` equals `want` (counters may trail the sockets).
    fn await_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = self.metrics();
            let got = metric(&text, name, labels);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got}, expected {want}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A listener on `addr` in the backend namespace.
    fn listen(&self, addr: SocketAddrV4) -> TcpListener {
        self.backend
            .run(move || TcpListener::bind(addr))
            .expect("backend listen")
    }

    /// A connection from the client namespace (timeouts set).
    fn connect(&self, addr: SocketAddrV4) -> std::io::Result<TcpStream> {
        let stream = self
            .client
            .run(move || TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(stream)
    }
}

/// The proxy child process; killed and reaped on drop.
struct ProxyProcess {
    child: Child,
    log_path: PathBuf,
}

impl ProxyProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill on our own child's pid (not yet reaped: we hold the Child).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Serves each connection on its own thread with `handle`, until the listener is dropped
/// with the test.
fn serve(listener: TcpListener, handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            let handle = handle.clone();
            std::thread::spawn(move || handle(stream));
        }
    });
}

/// Echoes until end of stream, then closes.
fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn roundtrip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    stream.write_all(message)?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back)?;
    assert_eq!(back, message);
    Ok(())
}

/// A reproducible byte stream (xorshift64*), written in chunks of varying size.
fn send_stream(stream: &mut TcpStream, seed: u64, len: usize) -> [u8; 32] {
    let mut state = seed | 1;
    let mut hash = Sha256::new();
    let mut sent = 0;
    let mut chunk = Vec::with_capacity(256 * 1024);
    while sent < len {
        let size = (1 + (state as usize % (256 * 1024))).min(len - sent);
        chunk.clear();
        while chunk.len() < size {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        chunk.truncate(size);
        hash.update(&chunk);
        stream.write_all(&chunk).expect("sending");
        sent += size;
    }
    stream.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
    hash.finalize().into()
}

/// Reads to end of stream: (byte count, SHA-256).
fn receive_stream(stream: &mut TcpStream) -> (usize, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (total, hash.finalize().into()),
            Ok(n) => {
                hash.update(&buf[..n]);
                total += n;
            }
            Err(e) => panic!("receiving after {total} bytes: {e}"),
        }
    }
}

/// Whether the connection was closed on us (reset or end of stream) rather than answered.
/// Whether a fresh connection is reset or closed by the proxy. The reset may come before
/// `connect(2)` has even returned (it then reports `ECONNRESET` through `SO_ERROR`), or after.
fn reset_by_proxy(connected: std::io::Result<TcpStream>) -> bool {
    match connected {
        Ok(mut stream) => closed_on_us(&mut stream),
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

fn closed_on_us(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"x");
    let mut buf = [0u8; 1];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Ok(_) => false,
        Err(e) => panic!("expected a reset or end of stream, got {e}"),
    }
}

const UP: usize = 24 << 20;
const DOWN: usize = 40 << 20;

fn transfer(extra: &[&str]) {
    let topo = Topology::new();
    let map = format!("{N1}={PUB1}:8080");
    let mut args = vec!["--map", &map];
    args.extend_from_slice(extra);
    let proxy = topo.proxy(&args);
    let listener = topo.listen(addr(PUB1, 8080));
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        let mut reader = stream.try_clone().unwrap();
        let received = std::thread::spawn(move || receive_stream(&mut reader));
        let sent = send_stream(&mut stream, 2, DOWN);
        (peer, received.join().unwrap(), sent)
    });
    let mut client = topo
        .connect(addr(N1, 8080))
        .expect("connecting through the proxy");
    let mut reader = client.try_clone().unwrap();
    let received = std::thread::spawn(move || receive_stream(&mut reader));
    let sent = send_stream(&mut client, 1, UP);
    let (down_len, down_hash) = received.join().unwrap();
    let (peer, (up_len, up_hash), server_sent) = server.join().unwrap();

    assert_eq!(peer.ip(), PROXY_OUT, "the backend sees the proxy's address");
    assert_eq!((up_len, up_hash), (UP, sent), "client → backend intact");
    assert_eq!(
        (down_len, down_hash),
        (DOWN, server_sent),
        "backend → client intact"
    );

    let n1 = [("node", "198.18.1.10"), ("target", "198.18.2.2")];
    topo.await_metric("satellite_proxy_connections_active", &n1, 0.0);
    let text = topo.metrics();
    let bytes = |direction| {
        metric(
            &text,
            "satellite_proxy_bytes_total",
            &[n1[0], n1[1], ("direction", direction)],
        )
    };
    assert_eq!(bytes("to_target"), UP as f64, "{text}");
    assert_eq!(bytes("to_client"), DOWN as f64, "{text}");
    assert_eq!(
        metric(&text, "satellite_proxy_connections_accepted_total", &n1),
        1.0
    );
    assert_eq!(
        metric(&text, "satellite_proxy_connections_reset_total", &n1),
        0.0
    );
    assert_eq!(metric(&text, "satellite_proxy_listeners", &[]), 1.0);
    assert_eq!(
        metric(&text, "satellite_proxy_copy_fallbacks_total", &[]),
        0.0
    );
    assert_eq!(topo.get("/healthz").unwrap(), (200, "ok\n".to_owned()));
    assert_eq!(topo.get("/nope").unwrap().0, 404);
    drop(proxy);
}

#[test]
#[ignore = "needs root"]
fn bytes_pass_both_ways_intact_with_splice() {
    transfer(&[]);
}

#[test]
#[ignore = "needs root"]
fn bytes_pass_both_ways_intact_with_copy() {
    transfer(&["--no-splice"]);
}

#[test]
#[ignore = "needs root"]
fn half_close_keeps_the_other_direction() {
    let topo = Topology::new();
    let _proxy = topo.proxy(&["--map", &format!("{N1}={PUB1}:8080")]);
    serve(topo.listen(addr(PUB1, 8080)), |mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        // Long enough for a proxy that wrongly closes both ways on the first EOF to do so.
        std::thread::sleep(Duration::from_millis(300));
        write!(stream, "received {} bytes", request.len()).unwrap();
    });
    let mut client = topo.connect(addr(N1, 8080)).unwrap();
    client.write_all(&vec![7u8; 100_000]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    client
        .read_to_string(&mut reply)
        .expect("the reply after our half-close");
    assert_eq!(reply, "received 100000 bytes");
    let n1 = [("node", "198.18.1.10")];
    topo.await_metric("satellite_proxy_connections_active", &n1, 0.0);
    assert_eq!(
        metric(
            &topo.metrics(),
            "satellite_proxy_connections_reset_total",
            &n1
        ),
        0.0
    );
}

#[test]
#[ignore = "needs root"]
fn one_proxy_serves_many_nodes() {
    let topo = Topology::new();
    let _proxy = topo.proxy(&[
        "--map",
        &format!("{N1}={PUB1}:8080,9000-9001"),
        "--map",
        &format!("{N2}={PUB2}:8080"),
    ]);
    for backend in [addr(PUB1, 8080), addr(PUB1, 9001), addr(PUB2, 8080)] {
        serve(topo.listen(backend), move |mut stream| {
            let peer = stream.peer_addr().unwrap().ip();
            write!(stream, "{backend} for {peer}").unwrap();
        });
    }
    for (front, back) in [
        (addr(N1, 8080), addr(PUB1, 8080)),
        (addr(N1, 9001), addr(PUB1, 9001)),
        (addr(N2, 8080), addr(PUB2, 8080)),
    ] {
        let mut client = topo.connect(front).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, format!("{back} for {PROXY_OUT}"), "through {front}");
    }
    // Served, but nothing listens behind it: the client is reset, counted as failed.
    assert!(reset_by_proxy(topo.connect(addr(N1, 9000))));
    // Not served at all.
    let refused = topo.connect(addr(N2, 9001)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    let n1 = [("node", "198.18.1.10"), ("target", "198.18.2.2")];
    let n2 = [("node", "198.18.1.11"), ("target", "198.18.2.3")];
    topo.await_metric("satellite_proxy_connections_failed_total", &n1, 1.0);
    let text = topo.metrics();
    assert_eq!(
        metric(&text, "satellite_proxy_connections_accepted_total", &n1),
        3.0
    );
    assert_eq!(
        metric(&text, "satellite_proxy_connections_accepted_total", &n2),
        1.0
    );
    assert_eq!(
        metric(&text, "satellite_proxy_connections_failed_total", &n2),
        0.0
    );
    assert_eq!(metric(&text, "satellite_proxy_listeners", &[]), 4.0);
}

#[test]
#[ignore = "needs root"]
fn connection_limit_resets_excess_and_counts_them() {
    let topo = Topology::new();
    let _proxy = topo.proxy(&[
        "--map",
        &format!("{N1}={PUB1}:8080"),
        "--max-connections",
        "2",
    ]);
    serve(topo.listen(addr(PUB1, 8080)), echo);
    let mut first = topo.connect(addr(N1, 8080)).unwrap();
    let mut second = topo.connect(addr(N1, 8080)).unwrap();
    roundtrip(&mut first, b"one").unwrap();
    roundtrip(&mut second, b"two").unwrap();
    assert!(
        reset_by_proxy(topo.connect(addr(N1, 8080))),
        "a third connection must be reset"
    );

    let n1 = [("node", "198.18.1.10")];
    let text = topo.metrics();
    assert_eq!(
        metric(&text, "satellite_proxy_connections_rejected_total", &n1),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "satellite_proxy_connections_active", &n1),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "satellite_proxy_connections_accepted_total", &n1),
        2.0
    );

    // A freed slot is usable again.
    drop(first);
    topo.await_metric("satellite_proxy_connections_active", &n1, 1.0);
    let mut fourth = topo.connect(addr(N1, 8080)).unwrap();
    roundtrip(&mut fourth, b"four").unwrap();
    roundtrip(&mut second, b"still").unwrap();
}

#[test]
#[ignore = "needs root"]
fn config_file_with_a_per_node_limit() {
    let topo = Topology::new();
    let path = topo.logs.path().join("proxy.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: satellite.dev/v1alpha1\nkind: ProxyConfig\nspec:\n  health: {HEALTH}\n  \
             maxConnections: 10\n  nodes:\n    - nodeIp: {N1}\n      target: {PUB1}\n      \
             ports: [8080]\n    - nodeIp: {N2}\n      target: {PUB2}\n      ports: [\"8080\"]\n      \
             maxConnections: 1\n"
        ),
    )
    .unwrap();
    let proxy = topo.spawn_proxy(&["-c", path.to_str().unwrap()], &[]);
    let deadline = Instant::now() + TIMEOUT;
    while !topo.get("/healthz").is_ok_and(|(s, _)| s == 200) {
        assert!(Instant::now() < deadline, "not healthy:\n{}", proxy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    serve(topo.listen(addr(PUB1, 8080)), echo);
    serve(topo.listen(addr(PUB2, 8080)), echo);
    let mut n2 = topo.connect(addr(N2, 8080)).unwrap();
    roundtrip(&mut n2, b"n2").unwrap();
    assert!(
        reset_by_proxy(topo.connect(addr(N2, 8080))),
        "N2 allows one connection"
    );
    let mut n1_first = topo.connect(addr(N1, 8080)).unwrap();
    let mut n1_second = topo.connect(addr(N1, 8080)).unwrap();
    roundtrip(&mut n1_first, b"n1").unwrap();
    roundtrip(&mut n1_second, b"n1 again").unwrap();
    let text = topo.metrics();
    assert_eq!(
        metric(
            &text,
            "satellite_proxy_connections_rejected_total",
            &[("node", "198.18.1.11")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "satellite_proxy_connections_rejected_total",
            &[("node", "198.18.1.10")]
        ),
        0.0
    );
}

#[test]
#[ignore = "needs root"]
fn idle_timeout_closes_silent_connections_only() {
    let topo = Topology::new();
    let _proxy = topo.proxy(&[
        "--map",
        &format!("{N1}={PUB1}:8080"),
        "--idle-timeout",
        "1s",
    ]);
    let (ended_tx, ended) = mpsc::channel();
    serve(topo.listen(addr(PUB1, 8080)), move |stream| {
        echo(stream);
        let _ = ended_tx.send(());
    });
    let mut silent = topo.connect(addr(N1, 8080)).unwrap();
    roundtrip(&mut silent, b"hello").unwrap();
    let mut chatty = topo.connect(addr(N1, 8080)).unwrap();
    let start = Instant::now();
    // A byte every 200 ms keeps a connection open well past the 1 s idle timeout.
    while start.elapsed() < Duration::from_millis(2500) {
        roundtrip(&mut chatty, b".").expect("an active connection stays open");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut buf = [0u8; 1];
    assert_eq!(
        silent.read(&mut buf).expect("end of stream"),
        0,
        "the silent one is closed"
    );
    ended
        .recv_timeout(TIMEOUT)
        .expect("the backend side of the silent connection is closed too");
    let n1 = [("node", "198.18.1.10")];
    topo.await_metric("satellite_proxy_connections_idle_closed_total", &n1, 1.0);
    roundtrip(&mut chatty, b"still here").unwrap();
}

#[test]
#[ignore = "needs root"]
fn sigterm_drains_open_connections_then_exits_0() {
    let topo = Topology::new();
    let mut proxy = topo.proxy(&[
        "--map",
        &format!("{N1}={PUB1}:8080"),
        "--drain-timeout",
        "60s",
    ]);
    serve(topo.listen(addr(PUB1, 8080)), echo);
    let mut open = topo.connect(addr(N1, 8080)).unwrap();
    roundtrip(&mut open, b"before").unwrap();

    proxy.signal(libc::SIGTERM);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match topo.connect(addr(N1, 8080)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "new connections still accepted after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        topo.get("/healthz").unwrap(),
        (503, "draining\n".to_owned())
    );
    assert_eq!(
        metric(&topo.metrics(), "satellite_proxy_draining", &[]),
        1.0
    );
    roundtrip(&mut open, b"during the drain").unwrap();
    assert!(proxy.running(), "the proxy waits for the open connection");

    drop(open);
    let status = proxy
        .wait_timeout(TIMEOUT)
        .unwrap_or_else(|| panic!("no exit after the last connection closed:\n{}", proxy.log()));
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
}

#[test]
#[ignore = "needs root"]
fn drain_timeout_resets_what_is_still_open() {
    let topo = Topology::new();
    let mut proxy = topo.proxy(&[
        "--map",
        &format!("{N1}={PUB1}:8080"),
        "--drain-timeout",
        "1s",
    ]);
    serve(topo.listen(addr(PUB1, 8080)), echo);
    let mut open = topo.connect(addr(N1, 8080)).unwrap();
    roundtrip(&mut open, b"before").unwrap();
    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_timeout(TIMEOUT)
        .expect("exit after the drain timeout");
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    assert!(closed_on_us(&mut open));
}

#[test]
#[ignore = "needs root"]
fn resets_propagate_both_ways() {
    let topo = Topology::new();
    let _proxy = topo.proxy(&["--map", &format!("{N1}={PUB1}:8080,8081")]);
    // 8080: the backend resets after the first bytes.
    serve(topo.listen(addr(PUB1, 8080)), |mut stream| {
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let mut client = topo.connect(addr(N1, 8080)).unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 1];
    let err = client
        .read(&mut buf)
        .expect_err("the backend's reset reaches the client");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);

    // 8081: the client resets; the backend sees it.
    let (seen_tx, seen) = mpsc::channel();
    serve(topo.listen(addr(PUB1, 8081)), move |mut stream| {
        let mut buf = [0u8; 64];
        let mut result = Ok(0);
        for _ in 0..100 {
            result = stream.read(&mut buf);
            if !matches!(result, Ok(n) if n > 0) {
                break;
            }
        }
        let _ = seen_tx.send(result.map_err(|e| e.kind()));
    });
    let client = topo.connect(addr(N1, 8081)).unwrap();
    (&client).write_all(b"hello").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    assert_eq!(
        seen.recv_timeout(TIMEOUT).unwrap(),
        Err(ErrorKind::ConnectionReset),
        "the client's reset reaches the backend"
    );
    topo.await_metric(
        "satellite_proxy_connections_reset_total",
        &[("node", "198.18.1.10")],
        2.0,
    );
}

#[test]
#[ignore = "needs root"]
fn bad_config_exits_3_before_binding_anything() {
    let topo = Topology::new();
    // We hold N1:8080: a proxy that bound before validating would fail with 1, not 3.
    let proxy_ns = &topo.proxy;
    let _held = proxy_ns.run(|| TcpListener::bind(addr(N1, 8080))).unwrap();
    let good = format!("{N1}={PUB1}:8080");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--map", &good, "--map", &format!("{N2}={PUB2}:0")],
            "--map 198.18.1.11=198.18.2.3:0 (ports): port 0 is not a port",
        ),
        (
            &["--map", &good, "--map", &format!("{N1}={PUB2}:8080")],
            "198.18.1.10:8080 is already served by --map 198.18.1.10=198.18.2.2:8080",
        ),
        (
            &["--map", &good, "--map", "198.18.1.300=198.18.2.3:80"],
            "(nodeIp): \"198.18.1.300\" is not an IP address",
        ),
        (
            &["--map", &good, "--map", &format!("{N2}={PUB2}:")],
            "(ports): no ports",
        ),
        (
            &["--map", &good, "--idle-timeout", "forever"],
            "--idle-timeout: \"forever\" is not a duration",
        ),
        (
            &["--map", &good, "--health", "127.0.0.1"],
            "--health: \"127.0.0.1\" is not ADDRESS:PORT",
        ),
        (&[], "--map: no nodes"),
    ];
    for (args, message) in cases {
        let (status, log) = topo.proxy_exits(args);
        assert_eq!(status.code(), Some(3), "{args:?}:\n{log}");
        assert!(
            log.contains(message),
            "{args:?} should say {message:?}:\n{log}"
        );
    }

    let path = topo.logs.path().join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: satellite.dev/v1alpha1\nkind: ProxyConfig\nspec:\n  nodes:\n    - nodeIp: \
             {N1}\n      target: {PUB1}\n      ports: [8080]\n      port: 1\n"
        ),
    )
    .unwrap();
    let (status, log) = topo.proxy_exits(&["-c", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("port"), "{log}");
    std::fs::write(
        &path,
        format!(
            "apiVersion: satellite.dev/v1alpha1\nkind: ProxyConfig\nspec:\n  nodes:\n    - nodeIp: \
             {N1}\n      target: {N1}\n      ports: [8080, 8080]\n"
        ),
    )
    .unwrap();
    let (status, log) = topo.proxy_exits(&["-c", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains("spec.nodes[0].ports: port 8080 is listed twice"),
        "{log}"
    );

    // `--check` validates and lists, binding nothing (N1:8080 is still ours).
    let (status, log) = topo.proxy_exits(&["--check", "--map", &format!("{N1}={PUB1}:8080-8081")]);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("198.18.1.10:8080 -> 198.18.2.2:8080\n198.18.1.10:8081 -> 198.18.2.2:8081"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root"]
fn bind_failure_exits_1_and_leaves_nothing_bound() {
    let topo = Topology::new();
    let proxy_ns = &topo.proxy;
    let held = proxy_ns.run(|| TcpListener::bind(addr(N1, 8081))).unwrap();
    let (status, log) = topo.proxy_exits(&[
        "--map",
        &format!("{N1}={PUB1}:8080-8082"),
        "--health",
        HEALTH,
    ]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot listen on 198.18.1.10:8081") && log.contains("ss -ltnp"),
        "{log}"
    );
    drop(held);
    // Every address the proxy would have used is free.
    for (ns, a) in [
        (proxy_ns, SocketAddr::from(addr(N1, 8080))),
        (proxy_ns, SocketAddr::from(addr(N1, 8082))),
        (proxy_ns, HEALTH.parse().unwrap()),
    ] {
        ns.run(move || TcpListener::bind(a))
            .unwrap_or_else(|e| panic!("{a}: {e}"));
    }
}
