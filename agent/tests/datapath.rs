//! The tc datapath on the host kernel, with real sockets. The tests that need root are
//! `#[ignore = "needs root"]` (`cargo xtask test` runs them as root); run anyway without root,
//! they fail saying so. The TCX variants fail on kernels older than 6.6, which have no TCX
//! (`cargo xtask test` and `cargo xtask vm-test` leave them out there, and say so).
//!
//! Each test builds its own pair of network namespaces joined by a veth pair:
//!
//! ```text
//!  peer ns: wan 198.18.0.2/24 (the proxy, PEER)   host ns: uplink 198.18.0.1/24 (S)
//!           + 198.18.0.3/24 (a stranger, OTHER)            lo 198.19.0.1/32 (N)
//! ```
//!
//! The programs run on the host side's `uplink`. Transmit checksum offload is off on both
//! ends, so every packet carries a complete checksum that the receiving kernel verifies: a
//! wrong incremental update shows up as a lost packet. Namespaces, pins and the attachments
//! are removed by guards ([`Netns`], [`Bpffs`]), also when a test panics. Namespace changes
//! happen only on threads spawned for that purpose ([`Netns::run`]: `setns` is per thread).

use std::io::{ErrorKind, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::Duration;

use aya::programs::{SchedClassifier, TcAttachType};
use satellite_agent::datapath::{AttachMode, Config, Counters, Datapath, Error, Protocol};
use satellite_tests::netns::{Bpffs, Netns};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const KUBELET: u16 = 10250;
const TIMEOUT: Duration = Duration::from_secs(3);

/// Two namespaces joined by a veth pair and a private bpffs mount; on drop the namespaces are
/// deleted (with the veth and anything attached to it) and the bpffs unmounted (releasing the
/// pins).
struct Topology {
    host: Netns,
    peer: Netns,
    pin_dir: PathBuf,
    _bpffs: Bpffs,
}

impl Topology {
    /// Panics (saying what to do) unless running as root.
    fn new() -> Self {
        Self::build().unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn build() -> anyhow::Result<Self> {
        let bpffs = Bpffs::new("satellite-test")?;
        let topo = Self {
            host: Netns::new("sat-dp-h")?,
            peer: Netns::new("sat-dp-p")?,
            pin_dir: bpffs.path().join("satellite/uplink"),
            _bpffs: bpffs,
        };
        let (h, p) = (&topo.host, &topo.peer);
        h.veth("uplink", p, "wan")?;
        h.ip(&["addr", "add", "198.18.0.1/24", "dev", "uplink"])?;
        h.ip(&["addr", "add", "198.19.0.1/32", "dev", "lo"])?;
        p.ip(&["addr", "add", "198.18.0.2/24", "dev", "wan"])?;
        p.ip(&["addr", "add", "198.18.0.3/24", "dev", "wan"])?;
        for (ns, dev) in [(h, "uplink"), (p, "wan")] {
            ns.ip(&["link", "set", dev, "up"])?;
            ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
        }
        // ICMP echo through an unprivileged ICMP ("ping") socket, no raw packet building.
        p.sysctl("net.ipv4.ping_group_range=0 0")?;
        Ok(topo)
    }

    fn config(&self) -> Config {
        Config {
            host_addr: S,
            node_addr: N,
            peers: [PEER].into(),
            ports: [(Protocol::Tcp, KUBELET), (Protocol::Udp, KUBELET)].into(),
            nodeports: Some(30000..=32767),
        }
    }

    fn install(&self, mode: AttachMode) -> Datapath {
        let (pin_dir, config) = (self.pin_dir.clone(), self.config());
        self.host
            .run(move || Datapath::install("uplink", &pin_dir, mode, &config))
            .expect("installing the datapath")
    }

    fn teardown(&self, datapath: Datapath) {
        self.host
            .run(move || datapath.teardown())
            .expect("teardown");
    }

    /// Our programs attached to `uplink` (TCX and netlink), by name.
    fn attached(&self) -> Vec<String> {
        let tcx = tcx_available();
        let mut names: Vec<String> = self.host.run(move || {
            [TcAttachType::Ingress, TcAttachType::Egress]
                .into_iter()
                .filter(|_| tcx)
                .flat_map(|t| {
                    SchedClassifier::query_tcx("uplink", t)
                        .expect("query_tcx")
                        .1
                })
                .filter_map(|p| p.name_as_str().map(str::to_owned))
                .collect()
        });
        for hook in ["ingress", "egress"] {
            let out = self
                .host
                .exec("tc", &["filter", "show", "dev", "uplink", hook])
                .expect("tc");
            // One line per filter, e.g. `filter protocol all pref 49152 bpf chain 0 handle 0x1
            // sat_nat_ingress direct-action not_in_hw id 42 name sat_nat_ingress tag ...`.
            names.extend(out.lines().filter_map(|line| {
                ["sat_nat_ingress", "sat_nat_egress"]
                    .into_iter()
                    .find(|name| line.contains(name))
                    .map(str::to_owned)
            }));
        }
        names
    }
}

fn udp(ns: &Netns, local: Ipv4Addr, port: u16) -> UdpSocket {
    let sock = ns
        .run(move || UdpSocket::bind((local, port)))
        .expect("udp bind");
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock
}

/// `recvfrom(2)` into an initialised buffer.
fn recv_from(sock: &Socket, buf: &mut [u8]) -> std::io::Result<(usize, SockAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; recv only writes initialised bytes
    // into the (already initialised) buffer, so it stays initialised.
    let uninit = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

fn counters(datapath: &Datapath) -> Counters {
    datapath.counters().expect("reading counters")
}

/// TCP: the peer connects to S:10250, the server bound to N accepts, data flows both ways.
fn tcp_roundtrip(topo: &Topology, from: Ipv4Addr) -> std::io::Result<()> {
    let listener = topo
        .host
        .run(|| TcpListener::bind((N, KUBELET)))
        .expect("listen");
    let server = std::thread::spawn(move || {
        let (mut conn, remote) = listener.accept().expect("accept");
        assert_eq!(
            remote.ip(),
            std::net::IpAddr::V4(PEER),
            "the peer's address is kept"
        );
        assert_eq!(conn.local_addr().unwrap(), SocketAddr::from((N, KUBELET)));
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        conn.write_all(b"world").unwrap();
    });
    let client = topo.peer.run(move || -> std::io::Result<Socket> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.bind(&SocketAddr::from((from, 0)).into())?;
        sock.connect_timeout(&SocketAddr::from((S, KUBELET)).into(), TIMEOUT)?;
        Ok(sock)
    })?;
    let mut client = std::net::TcpStream::from(client);
    client.set_read_timeout(Some(TIMEOUT))?;
    assert_eq!(client.peer_addr()?, SocketAddr::from((S, KUBELET)));
    client.write_all(b"hello")?;
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf)?;
    assert_eq!(&buf, b"world");
    server.join().unwrap();
    Ok(())
}

/// Whether this kernel has TCX (Linux 6.6 and later).
fn tcx_available() -> bool {
    !aya::util::KernelVersion::current().is_ok_and(|v| v < aya::util::KernelVersion::new(6, 6, 0))
}

/// Fails a TCX variant on a kernel without TCX rather than letting it pass without testing
/// anything. `cargo xtask test` and `cargo xtask vm-test` leave these variants out there.
fn require_tcx(mode: AttachMode) {
    assert!(
        mode != AttachMode::Tcx || tcx_available(),
        "TCX needs Linux >= 6.6 (this kernel: {:?}); run the netlink variants, or leave the \
         TCX ones out with `-E 'not test(/_tcx$/)'`",
        aya::util::KernelVersion::current()
    );
}

fn nat_end_to_end(mode: AttachMode) {
    require_tcx(mode);
    let topo = Topology::new();
    let datapath = topo.install(mode);
    let expected_mode = if mode == AttachMode::Netlink {
        AttachMode::Netlink
    } else {
        AttachMode::Tcx
    };
    assert_eq!(datapath.mode(), expected_mode);
    assert!(!datapath.adopted());

    // TCP through the NAT, the reply from S.
    tcp_roundtrip(&topo, PEER).expect("TCP peer -> S:10250 -> N");

    // UDP both ways: the connected peer socket only accepts the reply if it comes from S.
    let server = udp(&topo.host, N, 30053);
    let client = udp(&topo.peer, PEER, 0);
    client.connect((S, 30053)).unwrap();
    client.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).expect("UDP at N");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"ping"[..], std::net::IpAddr::V4(PEER))
    );
    server.send_to(b"pong", from).unwrap();
    let n = client.recv(&mut buf).expect("UDP reply from S");
    assert_eq!(&buf[..n], b"pong");

    // UDP without checksum (RFC 768 zero): delivered, and still zero after the rewrite.
    let capture = topo
        .host
        .run(|| Socket::new(Domain::IPV4, Type::RAW, Some(SockProtocol::UDP)))
        .expect("raw UDP socket");
    capture.set_read_timeout(Some(TIMEOUT)).unwrap();
    let server = udp(&topo.host, N, 30054);
    let client = udp(&topo.peer, PEER, 0);
    let one: libc::c_int = 1;
    // SAFETY: SO_NO_CHECK takes an int; the pointer and length describe `one`.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
    client.send_to(b"nocsum", (S, 30054)).unwrap();
    let n = server.recv(&mut buf).expect("zero-checksum UDP at N");
    assert_eq!(&buf[..n], b"nocsum");
    let packet = loop {
        let mut raw = [0u8; 256];
        let n = (&capture).read(&mut raw).expect("captured UDP");
        let ihl = usize::from(raw[0] & 0x0f) * 4;
        if u16::from_be_bytes([raw[ihl + 2], raw[ihl + 3]]) == 30054 {
            break raw[..n].to_vec();
        }
    };
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    assert_eq!(&packet[16..20], &N.octets(), "destination rewritten to N");
    assert_eq!(
        &packet[ihl + 6..ihl + 8],
        &[0, 0],
        "zero UDP checksum kept zero"
    );

    // ICMP echo to S, answered from S.
    let ping = topo
        .peer
        .run(|| Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProtocol::ICMPV4)))
        .expect("ping socket");
    ping.set_read_timeout(Some(TIMEOUT)).unwrap();
    ping.bind(&SocketAddr::from((PEER, 0)).into()).unwrap();
    let echo = [8u8, 0, 0, 0, 0, 0, 0, 1, b'h', b'i'];
    ping.send_to(&echo, &SockAddr::from(SocketAddrV4::new(S, 0)))
        .unwrap();
    let mut reply = [0u8; 64];
    let (n, from) = recv_from(&ping, &mut reply).expect("echo reply");
    assert_eq!(from.as_socket_ipv4().unwrap().ip(), &S);
    assert_eq!(reply[0], 0, "an echo reply ({n} bytes)");

    // ICMP port unreachable for a datagram to N (nothing listens): the peer's connected socket
    // sees ECONNREFUSED, which needs the quoted header rewritten back to S.
    let before = counters(&datapath);
    let client = udp(&topo.peer, PEER, 0);
    client.connect((S, 40000)).unwrap();
    client.send(b"anyone?").unwrap();
    let err = client
        .recv(&mut buf)
        .expect_err("no one listens on N:40000");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let after = counters(&datapath);
    assert!(
        after.icmp_error_rewritten > before.icmp_error_rewritten,
        "{after:?}"
    );

    // The other way: the host (from N) sends to a closed peer port; the peer's port
    // unreachable goes to S and quotes S, both rewritten to N on ingress.
    let before = after;
    let client = udp(&topo.host, N, 0);
    client.connect((PEER, 40001)).unwrap();
    client.send(b"anyone?").unwrap();
    let err = client
        .recv(&mut buf)
        .expect_err("no one listens on PEER:40001");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let after = counters(&datapath);
    assert!(
        after.icmp_error_rewritten > before.icmp_error_rewritten,
        "{after:?}"
    );

    // Fragmented datagrams (MTU 1500) both ways: every fragment gets the address (reassembly
    // needs them all), only the first one has a UDP checksum to fix, verified on reassembly.
    let server = udp(&topo.host, N, 30055);
    let client = udp(&topo.peer, PEER, 0);
    client.connect((S, 30055)).unwrap();
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    client.send(&big).unwrap();
    let mut large = vec![0u8; 8192];
    let (n, from) = server.recv_from(&mut large).expect("fragmented UDP at N");
    assert_eq!(&large[..n], &big[..]);
    server.send_to(&big, from).unwrap();
    let n = client
        .recv(&mut large)
        .expect("fragmented UDP reply from S");
    assert_eq!(&large[..n], &big[..]);

    let after = counters(&datapath);
    assert!(
        after.ingress_rewritten >= 10 && after.egress_rewritten >= 9,
        "{after:?}"
    );
    assert_eq!(after.errors, 0, "{after:?}");
    assert_eq!(after.dropped_not_allowed, 0, "{after:?}");

    topo.teardown(datapath);
    assert_eq!(
        topo.attached(),
        Vec::<String>::new(),
        "nothing of ours stays attached"
    );
    assert!(!topo.pin_dir.exists(), "the pins are gone");
}

#[test]
#[ignore = "needs root"]
fn nat_end_to_end_tcx() {
    nat_end_to_end(AttachMode::Tcx);
}

#[test]
#[ignore = "needs root"]
fn nat_end_to_end_netlink() {
    nat_end_to_end(AttachMode::Netlink);
}

#[test]
#[ignore = "needs root"]
fn allow_list_drops_and_counts_non_peers() {
    let topo = Topology::new();
    let datapath = topo.install(AttachMode::Auto);
    // kubelet on every address: without the allow-list the stranger would get in.
    let listener = topo
        .host
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, KUBELET)))
        .expect("listen");
    let stranger = topo.peer.run(|| {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.bind(&SocketAddr::from((OTHER, 0)).into())?;
        sock.connect_timeout(
            &SocketAddr::from((S, KUBELET)).into(),
            Duration::from_secs(1),
        )
    });
    assert!(stranger.is_err(), "a non-peer reached kubelet");
    let udp_server = udp(&topo.host, Ipv4Addr::UNSPECIFIED, 31000);
    udp_server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let client = udp(&topo.peer, OTHER, 0);
    client.send_to(b"nodeport", (S, 31000)).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        udp_server.recv(&mut buf).is_err(),
        "a non-peer reached a NodePort"
    );
    let dropped = counters(&datapath).dropped_not_allowed;
    assert!(dropped >= 2, "dropped {dropped}");

    // Unprotected ports stay open to anyone, untranslated.
    let open = topo
        .host
        .run(|| TcpListener::bind((S, 8080)))
        .expect("listen");
    topo.peer
        .run(|| {
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            sock.bind(&SocketAddr::from((OTHER, 0)).into())?;
            sock.connect_timeout(&SocketAddr::from((S, 8080)).into(), TIMEOUT)
        })
        .expect("a stranger reaches an unprotected port");
    drop((open, listener));
    // The peer still gets through.
    tcp_roundtrip(&topo, PEER).expect("TCP from the peer");
    topo.teardown(datapath);
}

fn adoption(mode: AttachMode) {
    require_tcx(mode);
    let topo = Topology::new();
    let first = topo.install(mode);
    // The agent restarts: the second install adopts instead of attaching another copy.
    let second = topo.install(mode);
    assert!(second.adopted());
    let programs = topo.attached();
    let ingress = programs
        .iter()
        .filter(|p| p.starts_with("sat_nat_ingress"))
        .count();
    let egress = programs
        .iter()
        .filter(|p| p.starts_with("sat_nat_egress"))
        .count();
    assert_eq!((ingress, egress), (1, 1), "{programs:?}");
    // The first agent "dies" without teardown: traffic keeps flowing.
    drop(first);
    tcp_roundtrip(&topo, PEER).expect("TCP after the restart");
    assert!(counters(&second).ingress_rewritten > 0);
    topo.teardown(second);
    assert_eq!(topo.attached(), Vec::<String>::new());
    assert!(!topo.pin_dir.exists());
}

#[test]
#[ignore = "needs root"]
fn reinstall_adopts_pinned_state_tcx() {
    adoption(AttachMode::Tcx);
}

#[test]
#[ignore = "needs root"]
fn reinstall_adopts_pinned_state_netlink() {
    adoption(AttachMode::Netlink);
}

#[test]
fn rejects_bad_configurations_and_non_bpffs_pin_dirs() {
    let good = Config {
        host_addr: S,
        node_addr: N,
        peers: [PEER].into(),
        ports: [(Protocol::Tcp, KUBELET)].into(),
        nodeports: Some(30000..=32767),
    };
    let dir = tempfile::tempdir().unwrap();
    let install = |config: &Config| Datapath::install("lo", dir.path(), AttachMode::Auto, config);
    for bad in [
        Config {
            node_addr: S,
            ..good.clone()
        },
        Config {
            host_addr: Ipv4Addr::UNSPECIFIED,
            ..good.clone()
        },
        Config {
            peers: [].into(),
            ..good.clone()
        },
        Config {
            nodeports: Some(0..=10),
            ..good.clone()
        },
    ] {
        let err = install(&bad).expect_err("invalid configuration accepted");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
    // A temporary directory is no bpffs: refused before anything is loaded.
    let err = install(&good).expect_err("pinning outside bpffs");
    assert!(matches!(err, Error::NotBpffs(_)), "{err:?}");
}
