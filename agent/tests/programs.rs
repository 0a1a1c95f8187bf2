//! The tc programs of `agent-ebpf` run on synthetic Ethernet frames with `BPF_PROG_TEST_RUN`
//! (needs root: `#[ignore = "needs root"]`; run with `--run-ignored all`).
//!
//! Each test loads the object the agent embeds ([`satellite_agent::datapath::object_bytes`]),
//! loads `sat_nat_ingress` and `sat_nat_egress` without attaching them anywhere, writes the
//! maps the way `Datapath::set_config` does, and runs frames built by [`packets`] through
//! aya's [`TestRun`] (`BPF_PROG_TEST_RUN`). It checks the verdict, the whole output frame
//! against the frame expected (built from scratch, checksums included), every checksum of the
//! output with an independent RFC 1071 implementation, and the per-CPU counters.
//!
//! Addresses (RFC 2544 benchmarking space, never routed):
//!
//! ```text
//!  S 198.18.0.1 (host)   N 198.18.100.1 (node IP)   peers 198.18.0.2, 198.18.0.4
//!  OTHER 198.18.0.3 (not a peer)   ROUTER 198.18.0.254 (a router on the path, not a peer)
//!  protected: TCP 10250, TCP 443, UDP 8472, NodePorts 30000–32767 (TCP and UDP)
//! ```
//!
//! The test run hands the programs an skb with `CHECKSUM_NONE`, so their helpers' incremental
//! updates must produce complete, correct checksums; offload states (`CHECKSUM_PARTIAL` on
//! egress, `CHECKSUM_COMPLETE` on ingress) are covered by `tests/datapath.rs` with real sockets.
//!
//! One file (over 500 lines): every test loads the same object and shares the packet builder
//! in `packets/`.

mod packets;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, PerCpuArray};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader, TestRun as _, TestRunOptions};
use packets::{
    DF, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ICMP, Ipv4, MF, TCP, UDP, checksum_errors, diff, ethernet,
    ethernet_unpadded, frame, icmp, icmp_echo, internet_checksum, l4_checksum, tcp, udp,
    udp_no_checksum,
};
use satellite_agent::datapath::{Config, Counters, Protocol};
use satellite_agent_common::{
    self as common, Counter, IPPROTO_TCP, IPPROTO_UDP, NatConfig, PeerInfo, PortInfo, PortKey,
};

const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PEER2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const KUBELET: u16 = 10250;
const HTTPS: u16 = 443;
const VXLAN: u16 = 8472;
const EPHEMERAL: u16 = 40000;

/// tc verdicts (include/uapi/linux/pkt_cls.h).
const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
/// What the programs return for every packet they let through: run the next program on the
/// hook, or pass when there is none.
const PASS: i32 = TC_ACT_UNSPEC;

const PAYLOAD: &[u8] = b"GET /healthz HTTP/1.1\r\n";

fn verdict_name(v: i32) -> String {
    match v {
        TC_ACT_UNSPEC => "TC_ACT_UNSPEC (-1)".into(),
        TC_ACT_OK => "TC_ACT_OK (0)".into(),
        TC_ACT_SHOT => "TC_ACT_SHOT (2)".into(),
        v => format!("{v}"),
    }
}

/// `error` and its sources, `: `-separated (aya's messages leave the OS error to the source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut s = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

/// The test configuration: S, N, two peers, three protected ports and the NodePort range.
fn config() -> Config {
    Config {
        host_addr: S,
        node_addr: N,
        peers: BTreeSet::from([PEER, PEER2]),
        ports: BTreeSet::from([
            (Protocol::Tcp, KUBELET),
            (Protocol::Tcp, HTTPS),
            (Protocol::Udp, VXLAN),
        ]),
        nodeports: Some(30000..=32767),
    }
}

#[derive(Clone, Copy, Debug)]
enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    const fn program(self) -> &'static str {
        match self {
            Self::Ingress => common::PROG_INGRESS,
            Self::Egress => common::PROG_EGRESS,
        }
    }
}

/// The embedded object with both programs loaded (not attached) and its maps.
struct Programs {
    ebpf: Ebpf,
}

/// One test run: the program's return value and the frame it left.
struct Outcome {
    verdict: i32,
    frame: Vec<u8>,
}

impl Programs {
    /// The programs with [`config`] in their maps.
    fn configured() -> Self {
        Self::load(Some(&config()))
    }

    /// Loads the object and both programs; fails (never skips) when anything is missing.
    fn load(config: Option<&Config>) -> Self {
        let bytes = satellite_agent::datapath::object_bytes();
        assert!(
            !bytes.is_empty(),
            "the agent was built without its eBPF object (SATELLITE_EBPF=skip or clippy): \
             rebuild without SATELLITE_EBPF=skip, with the eBPF toolchain (`cargo xtask setup`)"
        );
        let mut ebpf = EbpfLoader::new()
            .load(bytes)
            .unwrap_or_else(|e| panic!("loading the eBPF object failed (root?): {}", chain(&e)));
        for name in [common::PROG_INGRESS, common::PROG_EGRESS] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} missing from the object"))
                .try_into()
                .unwrap_or_else(|e| panic!("program {name} is no SchedClassifier: {e}"));
            program
                .load()
                .unwrap_or_else(|e| panic!("loading program {name} failed (root?): {}", chain(&e)));
        }
        if let Some(config) = config {
            write_config(&mut ebpf, config);
        }
        Self { ebpf }
    }

    /// Runs `input` through the program of `hook` once with `BPF_PROG_TEST_RUN`.
    fn run(&self, hook: Hook, input: &[u8]) -> Outcome {
        let name = hook.program();
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .expect("loaded in load()")
            .try_into()
            .expect("a SchedClassifier");
        // Room for growth: the kernel fails with ENOSPC rather than truncate the output.
        let mut out = vec![0u8; input.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "BPF_PROG_TEST_RUN of {name} with a {}-byte frame failed: {}",
                    input.len(),
                    chain(&e)
                )
            });
        out.truncate(usize::try_from(result.data_size_out).unwrap());
        Outcome {
            verdict: result.return_value.cast_signed(),
            frame: out,
        }
    }

    /// The counters, summed over CPUs (the test run uses the CPU it runs on).
    fn counters(&self) -> Counters {
        let map = self
            .ebpf
            .map(common::MAP_COUNTERS)
            .expect("counters map in the object");
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map).expect("a per-CPU array");
        let read = |c: Counter| -> u64 {
            counters
                .get(&c.index(), 0)
                .unwrap_or_else(|e| panic!("reading counter {c:?}: {e}"))
                .iter()
                .sum()
        };
        Counters {
            ingress_rewritten: read(Counter::IngressRewritten),
            egress_rewritten: read(Counter::EgressRewritten),
            icmp_error_rewritten: read(Counter::IcmpErrorRewritten),
            dropped_not_allowed: read(Counter::DroppedNotAllowed),
            errors: read(Counter::Errors),
        }
    }

    /// Runs `input` through `hook` and checks the verdict, the output frame against `want`
    /// (field by field) and the output's checksums (independently computed).
    #[track_caller]
    fn expect(&self, what: &str, hook: Hook, input: &[u8], verdict: i32, want: &[u8]) {
        let out = self.run(hook, input);
        let mut problems = Vec::new();
        if out.verdict != verdict {
            problems.push(format!(
                "verdict: got {}, want {}",
                verdict_name(out.verdict),
                verdict_name(verdict)
            ));
        }
        // Deliberately malformed frames (checked for being left alone) have no valid checksums.
        if checksum_errors(want).is_empty() {
            problems.extend(checksum_errors(&out.frame));
        }
        if let Some(d) = diff(&out.frame, want) {
            problems.push(format!("output frame differs from the expected one: {d}"));
        }
        assert!(
            problems.is_empty(),
            "{what} ({hook:?}):\n  {}",
            problems.join("\n  ")
        );
    }

    /// Checks that `hook` passes `input` unchanged.
    #[track_caller]
    fn untouched(&self, what: &str, hook: Hook, input: &[u8]) {
        self.expect(what, hook, input, PASS, input);
    }

    /// Checks the counters against `want`, naming every counter that differs.
    #[track_caller]
    fn expect_counters(&self, want: Counters) {
        let got = self.counters();
        let mut problems = Vec::new();
        for (name, g, w) in [
            (
                "ingress_rewritten",
                got.ingress_rewritten,
                want.ingress_rewritten,
            ),
            (
                "egress_rewritten",
                got.egress_rewritten,
                want.egress_rewritten,
            ),
            (
                "icmp_error_rewritten",
                got.icmp_error_rewritten,
                want.icmp_error_rewritten,
            ),
            (
                "dropped_not_allowed",
                got.dropped_not_allowed,
                want.dropped_not_allowed,
            ),
            ("errors", got.errors, want.errors),
        ] {
            if g != w {
                problems.push(format!("{name}: got {g}, want {w}"));
            }
        }
        assert!(problems.is_empty(), "counters: {}", problems.join(", "));
    }
}

/// Writes `config` into the maps exactly as `Datapath::set_config` does (peers and ports as
/// keys with default values, the `NatConfig` at index 0). `set_config` itself needs a
/// `Datapath`, which only exists attached to an interface, hence this copy of its encoding.
fn write_config(ebpf: &mut Ebpf, config: &Config) {
    config
        .validate()
        .expect("a configuration the loader accepts");
    let mut peers: HashMap<_, u32, PeerInfo> =
        HashMap::try_from(ebpf.map_mut(common::MAP_PEERS).expect("peers map")).expect("a hash");
    for peer in &config.peers {
        peers
            .insert(common::ipv4_key(peer.octets()), PeerInfo::default(), 0)
            .expect("adding a peer");
    }
    let mut ports: HashMap<_, PortKey, PortInfo> =
        HashMap::try_from(ebpf.map_mut(common::MAP_PORTS).expect("ports map")).expect("a hash");
    for (proto, port) in &config.ports {
        let proto = match proto {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        };
        ports
            .insert(PortKey::new(proto, *port), PortInfo::default(), 0)
            .expect("adding a port");
    }
    let (nodeport_min, nodeport_max) = config
        .nodeports
        .as_ref()
        .map_or((0, 0), |r| (*r.start(), *r.end()));
    let mut nat: Array<_, NatConfig> =
        Array::try_from(ebpf.map_mut(common::MAP_CONFIG).expect("config map")).expect("array");
    nat.set(
        0,
        NatConfig {
            host_addr: common::ipv4_key(config.host_addr.octets()),
            node_addr: common::ipv4_key(config.node_addr.octets()),
            nodeport_min,
            nodeport_max,
            flags: 0,
        },
        0,
    )
    .expect("writing the NAT configuration");
}

/// A frame with a TCP segment (payload [`PAYLOAD`]).
fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    frame(&Ipv4::new(src, dst, TCP).packet(&tcp(src, dst, sport, dport, PAYLOAD)))
}

/// A frame with a UDP datagram (checksum set).
fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    frame(&Ipv4::new(src, dst, UDP).packet(&udp(src, dst, sport, dport, payload)))
}

/// A frame with an ICMP error `kind`/`code` from `src` to `dst` quoting `quoted`.
fn icmp_error_frame(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    // "Fragmentation needed" carries the next-hop MTU in the second half of the rest field.
    let rest = if (kind, code) == (3, 4) {
        [0, 0, 0x05, 0x78] // 1400
    } else {
        [0; 4]
    };
    let mut ip = Ipv4::new(src, dst, ICMP);
    ip.frag = 0;
    frame(&ip.packet(&icmp(kind, code, rest, quoted)))
}

/// A UDP payload of 2 bytes that makes the UDP checksum of `src` → `dst` (ports as given)
/// compute to 0, so that it is sent as 0xffff.
fn udp_payload_for_zero_checksum(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> [u8; 2] {
    // The checksum c of the datagram with payload 0 is ~sum; adding the word c makes the sum
    // 0xffff (one's complement -0), whose complement is 0.
    let c = l4_checksum(src, dst, UDP, &udp_no_checksum(sport, dport, &[0, 0]));
    let payload = c.to_be_bytes();
    let d = udp(src, dst, sport, dport, &payload);
    assert_eq!(
        &d[6..8],
        &[0xff, 0xff],
        "test construction: checksum should compute to 0"
    );
    payload
}

const fn counters(
    ingress: u64,
    egress: u64,
    icmp_errors: u64,
    dropped: u64,
    errors: u64,
) -> Counters {
    Counters {
        ingress_rewritten: ingress,
        egress_rewritten: egress,
        icmp_error_rewritten: icmp_errors,
        dropped_not_allowed: dropped,
        errors,
    }
}

/// The checksum routines of [`packets`] against published values (no root needed).
#[test]
fn checksum_implementation_matches_known_values() {
    // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
    assert_eq!(
        internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
    // A classic IPv4 header example (192.168.0.1 → 192.168.0.199, UDP, total length 115).
    let header = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(internet_checksum(&header), 0xb861);
    let mut ip = Ipv4::new(
        Ipv4Addr::new(192, 168, 0, 1),
        Ipv4Addr::new(192, 168, 0, 199),
        UDP,
    );
    ip.id = 0;
    ip.total_len = Some(0x73);
    assert_eq!(&ip.packet(&[])[10..12], &[0xb8, 0x61]);
    // Built frames verify; a flipped bit is reported by name.
    let mut f = tcp_frame(PEER, S, EPHEMERAL, KUBELET);
    assert!(checksum_errors(&f).is_empty(), "{:?}", checksum_errors(&f));
    f[14 + 20 + 20] ^= 1; // the first payload byte
    let errors = checksum_errors(&f);
    assert!(
        errors.len() == 1 && errors[0].starts_with("TCP checksum"),
        "{errors:?}"
    );
    assert!(checksum_errors(&udp_frame(PEER, S, 1, 2, b"x")).is_empty());
}

#[test]
#[ignore = "needs root"]
fn ingress_tcp_from_peers_to_s_goes_to_n() {
    let p = Programs::configured();
    p.expect(
        "TCP peer → S:10250",
        Hook::Ingress,
        &tcp_frame(PEER, S, EPHEMERAL, KUBELET),
        PASS,
        &tcp_frame(PEER, N, EPHEMERAL, KUBELET),
    );
    p.expect(
        "TCP second peer → S:443",
        Hook::Ingress,
        &tcp_frame(PEER2, S, EPHEMERAL, HTTPS),
        PASS,
        &tcp_frame(PEER2, N, EPHEMERAL, HTTPS),
    );
    p.expect(
        "TCP peer → S:NodePort 30080",
        Hook::Ingress,
        &tcp_frame(PEER, S, EPHEMERAL, 30080),
        PASS,
        &tcp_frame(PEER, N, EPHEMERAL, 30080),
    );
    p.expect(
        "TCP peer → S:22 (unprotected)",
        Hook::Ingress,
        &tcp_frame(PEER, S, EPHEMERAL, 22),
        PASS,
        &tcp_frame(PEER, N, EPHEMERAL, 22),
    );
    p.expect_counters(counters(4, 0, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn egress_tcp_from_n_to_peers_comes_from_s() {
    let p = Programs::configured();
    p.expect(
        "TCP N:10250 → peer",
        Hook::Egress,
        &tcp_frame(N, PEER, KUBELET, EPHEMERAL),
        PASS,
        &tcp_frame(S, PEER, KUBELET, EPHEMERAL),
    );
    p.expect(
        "TCP N:443 → second peer",
        Hook::Egress,
        &tcp_frame(N, PEER2, HTTPS, EPHEMERAL),
        PASS,
        &tcp_frame(S, PEER2, HTTPS, EPHEMERAL),
    );
    p.expect_counters(counters(0, 2, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn tcp_behind_ipv4_options_is_rewritten() {
    let p = Programs::configured();
    for options in [vec![1, 1, 1, 0], vec![1; 8], vec![0x94, 0x04, 0, 0]] {
        let build = |src, dst, sport, dport| {
            let mut ip = Ipv4::new(src, dst, TCP);
            ip.options.clone_from(&options);
            frame(&ip.packet(&tcp(src, dst, sport, dport, PAYLOAD)))
        };
        p.expect(
            &format!("TCP peer → S with IPv4 options {options:02x?}"),
            Hook::Ingress,
            &build(PEER, S, EPHEMERAL, KUBELET),
            PASS,
            &build(PEER, N, EPHEMERAL, KUBELET),
        );
        p.expect(
            &format!("TCP N → peer with IPv4 options {options:02x?}"),
            Hook::Egress,
            &build(N, PEER, KUBELET, EPHEMERAL),
            PASS,
            &build(S, PEER, KUBELET, EPHEMERAL),
        );
    }
    p.expect_counters(counters(3, 3, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn udp_is_rewritten_both_ways() {
    let p = Programs::configured();
    let payload = b"\x12\x34 some DNS-ish bytes";
    p.expect(
        "UDP peer → S:8472",
        Hook::Ingress,
        &udp_frame(PEER, S, EPHEMERAL, VXLAN, payload),
        PASS,
        &udp_frame(PEER, N, EPHEMERAL, VXLAN, payload),
    );
    p.expect(
        "UDP peer → S:NodePort 32767",
        Hook::Ingress,
        &udp_frame(PEER, S, EPHEMERAL, 32767, payload),
        PASS,
        &udp_frame(PEER, N, EPHEMERAL, 32767, payload),
    );
    p.expect(
        "UDP N → peer",
        Hook::Egress,
        &udp_frame(N, PEER, VXLAN, EPHEMERAL, payload),
        PASS,
        &udp_frame(S, PEER, VXLAN, EPHEMERAL, payload),
    );
    // An odd payload length: the checksum pads the last byte.
    p.expect(
        "UDP N → peer, odd length",
        Hook::Egress,
        &udp_frame(N, PEER, VXLAN, EPHEMERAL, b"odd"),
        PASS,
        &udp_frame(S, PEER, VXLAN, EPHEMERAL, b"odd"),
    );
    p.expect_counters(counters(2, 2, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn udp_without_checksum_keeps_zero() {
    let p = Programs::configured();
    let build = |src, dst, sport, dport| {
        frame(&Ipv4::new(src, dst, UDP).packet(&udp_no_checksum(sport, dport, b"no checksum")))
    };
    p.expect(
        "UDP checksum 0, peer → S",
        Hook::Ingress,
        &build(PEER, S, EPHEMERAL, VXLAN),
        PASS,
        &build(PEER, N, EPHEMERAL, VXLAN),
    );
    p.expect(
        "UDP checksum 0, N → peer",
        Hook::Egress,
        &build(N, PEER, VXLAN, EPHEMERAL),
        PASS,
        &build(S, PEER, VXLAN, EPHEMERAL),
    );
    p.expect_counters(counters(1, 1, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn udp_checksum_computing_to_zero_is_sent_as_ffff() {
    let p = Programs::configured();
    // Ingress: the rewritten datagram peer → N has a computed checksum of 0.
    let payload = udp_payload_for_zero_checksum(PEER, N, EPHEMERAL, VXLAN);
    p.expect(
        "UDP peer → S whose checksum for N computes to 0",
        Hook::Ingress,
        &udp_frame(PEER, S, EPHEMERAL, VXLAN, &payload),
        PASS,
        &udp_frame(PEER, N, EPHEMERAL, VXLAN, &payload),
    );
    let payload = udp_payload_for_zero_checksum(S, PEER, VXLAN, EPHEMERAL);
    p.expect(
        "UDP N → peer whose checksum from S computes to 0",
        Hook::Egress,
        &udp_frame(N, PEER, VXLAN, EPHEMERAL, &payload),
        PASS,
        &udp_frame(S, PEER, VXLAN, EPHEMERAL, &payload),
    );
    p.expect_counters(counters(1, 1, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn icmp_echo_is_rewritten_both_ways() {
    let p = Programs::configured();
    let echo = |src, dst| frame(&Ipv4::new(src, dst, ICMP).packet(&icmp_echo(7, 1, PAYLOAD)));
    p.expect(
        "ICMP echo request peer → S",
        Hook::Ingress,
        &echo(PEER, S),
        PASS,
        &echo(PEER, N),
    );
    let reply = |src, dst| frame(&Ipv4::new(src, dst, ICMP).packet(&icmp(0, 0, [0, 7, 0, 1], b"")));
    p.expect(
        "ICMP echo reply N → peer",
        Hook::Egress,
        &reply(N, PEER),
        PASS,
        &reply(S, PEER),
    );
    p.expect_counters(counters(1, 1, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn ingress_icmp_errors_about_our_datagrams_are_rewritten_with_their_quote() {
    let p = Programs::configured();
    // A router on the path: "fragmentation needed" for a TCP segment S → peer, quoted whole.
    let quote =
        |src| Ipv4::new(src, PEER, TCP).packet(&tcp(src, PEER, KUBELET, EPHEMERAL, PAYLOAD));
    p.expect(
        "ICMP frag-needed router → S quoting TCP S → peer",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 4, &quote(S)),
        PASS,
        &icmp_error_frame(ROUTER, N, 3, 4, &quote(N)),
    );
    // The peer itself: "port unreachable" for a UDP datagram S → peer.
    let quote = |src| Ipv4::new(src, PEER, UDP).packet(&udp(src, PEER, 5353, 53, b"query"));
    p.expect(
        "ICMP port unreachable peer → S quoting UDP S → peer",
        Hook::Ingress,
        &icmp_error_frame(PEER, S, 3, 3, &quote(S)),
        PASS,
        &icmp_error_frame(PEER, N, 3, 3, &quote(N)),
    );
    // Time exceeded (traceroute) for an ICMP echo S → second peer: only its IPv4 header holds
    // addresses.
    let quote = |src| Ipv4::new(src, PEER2, ICMP).packet(&icmp_echo(9, 3, b"trace"));
    p.expect(
        "ICMP time exceeded router → S quoting ICMP echo S → peer",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 11, 0, &quote(S)),
        PASS,
        &icmp_error_frame(ROUTER, N, 11, 0, &quote(N)),
    );
    p.expect_counters(counters(3, 0, 3, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn egress_icmp_errors_about_peer_datagrams_are_rewritten_with_their_quote() {
    let p = Programs::configured();
    let quote = |dst| Ipv4::new(PEER, dst, UDP).packet(&udp(PEER, dst, EPHEMERAL, 9999, b"hello"));
    p.expect(
        "ICMP port unreachable N → peer quoting UDP peer → N",
        Hook::Egress,
        &icmp_error_frame(N, PEER, 3, 3, &quote(N)),
        PASS,
        &icmp_error_frame(S, PEER, 3, 3, &quote(S)),
    );
    let quote =
        |dst| Ipv4::new(PEER2, dst, TCP).packet(&tcp(PEER2, dst, EPHEMERAL, KUBELET, PAYLOAD));
    p.expect(
        "ICMP frag-needed N → peer quoting TCP peer → N",
        Hook::Egress,
        &icmp_error_frame(N, PEER2, 3, 4, &quote(N)),
        PASS,
        &icmp_error_frame(S, PEER2, 3, 4, &quote(S)),
    );
    p.expect_counters(counters(0, 2, 2, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn icmp_error_quotes_with_ipv4_options_or_of_fragments_are_rewritten() {
    let p = Programs::configured();
    let with_options = |src| {
        let mut ip = Ipv4::new(src, PEER, UDP);
        ip.options = vec![1, 1, 1, 0];
        ip.packet(&udp(src, PEER, 5353, 53, b"query"))
    };
    p.expect(
        "ICMP frag-needed router → S quoting UDP S → peer behind IPv4 options",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 4, &with_options(S)),
        PASS,
        &icmp_error_frame(ROUTER, N, 3, 4, &with_options(N)),
    );
    // A non-first fragment carries no transport header: only the quoted IPv4 header changes.
    let fragment = |src| {
        let mut ip = Ipv4::new(src, PEER, UDP);
        ip.frag = 185;
        ip.packet(&[0x5a; 16])
    };
    p.expect(
        "ICMP frag-needed router → S quoting a non-first fragment S → peer",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 4, &fragment(S)),
        PASS,
        &icmp_error_frame(ROUTER, N, 3, 4, &fragment(N)),
    );
    p.expect_counters(counters(2, 0, 2, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn icmp_error_quoting_udp_without_checksum_keeps_it_zero() {
    let p = Programs::configured();
    let quote = |src, dst| Ipv4::new(src, dst, UDP).packet(&udp_no_checksum(5353, 53, b"q"));
    p.expect(
        "ICMP port unreachable router → S quoting checksum-less UDP S → peer",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 3, &quote(S, PEER)),
        PASS,
        &icmp_error_frame(ROUTER, N, 3, 3, &quote(N, PEER)),
    );
    p.expect(
        "ICMP port unreachable N → peer quoting checksum-less UDP peer → N",
        Hook::Egress,
        &icmp_error_frame(N, PEER, 3, 3, &quote(PEER, N)),
        PASS,
        &icmp_error_frame(S, PEER, 3, 3, &quote(PEER, S)),
    );
    p.expect_counters(counters(1, 1, 2, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn icmp_error_quoting_udp_whose_checksum_computes_to_zero_quotes_ffff() {
    let p = Programs::configured();
    let payload = udp_payload_for_zero_checksum(N, PEER, 5353, 53);
    let quote = |src| Ipv4::new(src, PEER, UDP).packet(&udp(src, PEER, 5353, 53, &payload));
    p.expect(
        "ICMP port unreachable router → S quoting UDP S → peer (checksum from N computes to 0)",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 3, &quote(S)),
        PASS,
        &icmp_error_frame(ROUTER, N, 3, 3, &quote(N)),
    );
    p.expect_counters(counters(1, 0, 1, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn icmp_error_with_an_8_byte_quote_is_rewritten() {
    let p = Programs::configured();
    // RFC 792 only promises the IPv4 header and 8 bytes: the quoted TCP checksum is not there.
    let quote = |src| {
        let mut q = Ipv4::new(src, PEER, TCP).packet(&tcp(src, PEER, KUBELET, EPHEMERAL, PAYLOAD));
        q.truncate(20 + 8);
        q
    };
    p.expect(
        "ICMP frag-needed router → S quoting 8 bytes of TCP S → peer",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 4, &quote(S)),
        PASS,
        &icmp_error_frame(ROUTER, N, 3, 4, &quote(N)),
    );
    p.expect_counters(counters(1, 0, 1, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn icmp_errors_about_other_traffic_are_left_alone() {
    let p = Programs::configured();
    let tcp_quote = |src, dst| Ipv4::new(src, dst, TCP).packet(&tcp(src, dst, 22, 50000, b"ssh"));
    p.untouched(
        "ICMP error router → S quoting S → non-peer",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 4, &tcp_quote(S, OTHER)),
    );
    p.untouched(
        "ICMP error router → S quoting peer → S (not sent by us)",
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 1, &tcp_quote(PEER, S)),
    );
    p.untouched(
        "ICMP echo request non-peer → S",
        Hook::Ingress,
        &frame(&Ipv4::new(OTHER, S, ICMP).packet(&icmp_echo(1, 1, b"ping"))),
    );
    // Outer N → peer is ours, the quote (non-peer → S) is not: only the outer header changes.
    let quote = tcp_quote(OTHER, S);
    p.expect(
        "ICMP error N → peer quoting non-peer → S",
        Hook::Egress,
        &icmp_error_frame(N, PEER, 3, 3, &quote),
        PASS,
        &icmp_error_frame(S, PEER, 3, 3, &quote),
    );
    p.expect_counters(counters(0, 1, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn non_first_fragments_get_only_their_ipv4_header_rewritten() {
    let p = Programs::configured();
    // Payload bytes that would read as ports 40000 → 10250 if parsed as a transport header.
    let mut payload = udp(PEER, S, EPHEMERAL, KUBELET, b"looks like a header");
    payload.resize(40, 0xab);
    let fragment = |src, dst, proto| {
        let mut ip = Ipv4::new(src, dst, proto);
        ip.frag = 185; // offset 1480 bytes, last fragment
        frame(&ip.packet(&payload))
    };
    p.expect(
        "UDP non-first fragment peer → S",
        Hook::Ingress,
        &fragment(PEER, S, UDP),
        PASS,
        &fragment(PEER, N, UDP),
    );
    p.expect(
        "TCP non-first fragment N → peer",
        Hook::Egress,
        &fragment(N, PEER, TCP),
        PASS,
        &fragment(S, PEER, TCP),
    );
    // The allow-list cannot see ports in non-first fragments (documented): passed, not NATed.
    p.untouched(
        "TCP non-first fragment non-peer → S",
        Hook::Ingress,
        &fragment(OTHER, S, TCP),
    );
    p.expect_counters(counters(1, 1, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn first_fragments_get_their_transport_checksum_rewritten() {
    let p = Programs::configured();
    // The checksum of a fragmented UDP datagram covers all of it: the first fragment carries
    // the checksum of the whole datagram, rewritten for the new address.
    let payload: Vec<u8> = (0..64u8).collect();
    let first_fragment = |src, dst, sport, dport| {
        let datagram = udp(src, dst, sport, dport, &payload);
        let mut ip = Ipv4::new(src, dst, UDP);
        ip.frag = MF;
        frame(&ip.packet(&datagram[..32]))
    };
    p.expect(
        "UDP first fragment peer → S",
        Hook::Ingress,
        &first_fragment(PEER, S, EPHEMERAL, VXLAN),
        PASS,
        &first_fragment(PEER, N, EPHEMERAL, VXLAN),
    );
    p.expect(
        "UDP first fragment N → peer",
        Hook::Egress,
        &first_fragment(N, PEER, VXLAN, EPHEMERAL),
        PASS,
        &first_fragment(S, PEER, VXLAN, EPHEMERAL),
    );
    p.expect_counters(counters(1, 1, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn non_peers_to_protected_ports_are_dropped() {
    let p = Programs::configured();
    let mut with_options = Ipv4::new(ROUTER, S, TCP);
    with_options.options = vec![1, 1, 1, 1];
    let mut first_fragment = Ipv4::new(OTHER, S, UDP);
    first_fragment.frag = MF;
    for (what, input) in [
        (
            "TCP non-peer → S:10250",
            tcp_frame(OTHER, S, EPHEMERAL, KUBELET),
        ),
        (
            "TCP non-peer → N:443",
            tcp_frame(OTHER, N, EPHEMERAL, HTTPS),
        ),
        (
            "UDP non-peer → S:8472",
            udp_frame(OTHER, S, EPHEMERAL, VXLAN, b"x"),
        ),
        (
            "UDP non-peer → S:NodePort 30000",
            udp_frame(OTHER, S, EPHEMERAL, 30000, b"x"),
        ),
        (
            "TCP non-peer → other address:NodePort 32767",
            tcp_frame(OTHER, ROUTER, EPHEMERAL, 32767),
        ),
        (
            "TCP behind IPv4 options non-peer → S:10250",
            frame(&with_options.packet(&tcp(ROUTER, S, EPHEMERAL, KUBELET, PAYLOAD))),
        ),
        (
            "UDP first fragment non-peer → S:8472",
            frame(&first_fragment.packet(&udp(OTHER, S, EPHEMERAL, VXLAN, &[0; 24]))),
        ),
    ] {
        p.expect(what, Hook::Ingress, &input, TC_ACT_SHOT, &input);
    }
    p.expect_counters(counters(0, 0, 0, 7, 0));
}

#[test]
#[ignore = "needs root"]
fn non_peers_to_other_ports_pass_untouched() {
    let p = Programs::configured();
    for (what, input) in [
        ("TCP non-peer → S:22", tcp_frame(OTHER, S, EPHEMERAL, 22)),
        (
            "UDP non-peer → S:10250 (only TCP 10250 is protected)",
            udp_frame(OTHER, S, EPHEMERAL, KUBELET, b"x"),
        ),
        (
            "TCP non-peer → S:8472 (only UDP 8472 is protected)",
            tcp_frame(OTHER, S, EPHEMERAL, VXLAN),
        ),
        (
            "TCP non-peer → S:29999 (below the NodePorts)",
            tcp_frame(OTHER, S, EPHEMERAL, 29999),
        ),
        (
            "UDP non-peer → S:32768 (above the NodePorts)",
            udp_frame(OTHER, S, EPHEMERAL, 32768, b"x"),
        ),
        (
            "TCP non-peer from port 10250 → S:40000",
            tcp_frame(OTHER, S, KUBELET, EPHEMERAL),
        ),
    ] {
        p.untouched(what, Hook::Ingress, &input);
    }
    // The allow-list is inbound only.
    p.untouched(
        "TCP N → non-peer:10250",
        Hook::Egress,
        &tcp_frame(N, OTHER, EPHEMERAL, KUBELET),
    );
    p.expect_counters(counters(0, 0, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn unrelated_traffic_is_left_alone() {
    let p = Programs::configured();
    let ingress = [
        (
            "TCP peer → another address",
            tcp_frame(PEER, OTHER, EPHEMERAL, KUBELET),
        ),
        (
            "TCP peer → N (already N)",
            tcp_frame(PEER, N, EPHEMERAL, KUBELET),
        ),
        ("TCP S → S", tcp_frame(S, S, EPHEMERAL, 22)),
        (
            "ARP request",
            ethernet(
                ETH_P_ARP,
                &[
                    0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 198,
                    18, 0, 1,
                ],
            ),
        ),
        ("IPv6", ethernet(ETH_P_IPV6, &[0x60; 60])),
        (
            "IPv4 EtherType, version 6 header",
            frame(&{
                let mut b = Ipv4::new(PEER, S, TCP).packet(&tcp(PEER, S, 1, 2, b""));
                b[0] = 0x65;
                b
            }),
        ),
        (
            "IPv4 header length 16 bytes",
            frame(&{
                let mut b = Ipv4::new(PEER, S, TCP).packet(&tcp(PEER, S, 1, 2, b""));
                b[0] = 0x44;
                b
            }),
        ),
    ];
    // (A frame with IPv4 EtherType and a truncated IPv4 header cannot be tested: the kernel's
    // test run refuses it with EINVAL before the program runs.)
    for (what, input) in &ingress {
        p.untouched(what, Hook::Ingress, input);
    }
    let egress = [
        (
            "TCP S → peer (already S)",
            tcp_frame(S, PEER, KUBELET, EPHEMERAL),
        ),
        ("TCP N → non-peer", tcp_frame(N, OTHER, KUBELET, EPHEMERAL)),
        (
            "TCP non-N → peer",
            tcp_frame(OTHER, PEER, KUBELET, EPHEMERAL),
        ),
        (
            "TCP peer → N (wrong direction)",
            tcp_frame(PEER, N, EPHEMERAL, KUBELET),
        ),
        ("IPv6", ethernet(ETH_P_IPV6, &[0x60; 60])),
    ];
    for (what, input) in &egress {
        p.untouched(what, Hook::Egress, input);
    }
    p.expect_counters(counters(0, 0, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn unconfigured_programs_pass_everything() {
    // Freshly created maps: S and N are 0, no peers, no ports.
    let p = Programs::load(None);
    p.untouched(
        "TCP peer → S",
        Hook::Ingress,
        &tcp_frame(PEER, S, EPHEMERAL, KUBELET),
    );
    p.untouched(
        "TCP non-peer → S:10250",
        Hook::Ingress,
        &tcp_frame(OTHER, S, EPHEMERAL, KUBELET),
    );
    p.untouched(
        "TCP N → peer",
        Hook::Egress,
        &tcp_frame(N, PEER, KUBELET, EPHEMERAL),
    );
    p.expect_counters(counters(0, 0, 0, 0, 0));
}

#[test]
#[ignore = "needs root"]
fn truncated_transport_header_from_non_peer_is_counted_as_error() {
    let p = Programs::configured();
    // A TCP datagram whose frame ends right after the IPv4 header: no port to check.
    let mut ip = Ipv4::new(OTHER, S, TCP);
    ip.total_len = Some(40);
    let input = ethernet_unpadded(ETH_P_IP, &ip.packet(&[]));
    p.expect(
        "TCP non-peer → S without transport header",
        Hook::Ingress,
        &input,
        PASS,
        &input,
    );
    p.expect_counters(counters(0, 0, 0, 0, 1));
}

#[test]
#[ignore = "needs root"]
fn counters_add_up_over_runs() {
    let p = Programs::configured();
    let tcp_quote = |src| Ipv4::new(src, PEER, TCP).packet(&tcp(src, PEER, KUBELET, 1, b"x"));
    for _ in 0..3 {
        let _ = p.run(Hook::Ingress, &tcp_frame(PEER, S, EPHEMERAL, KUBELET));
        let _ = p.run(Hook::Egress, &tcp_frame(N, PEER, KUBELET, EPHEMERAL));
        let _ = p.run(Hook::Ingress, &tcp_frame(OTHER, S, EPHEMERAL, KUBELET));
    }
    let _ = p.run(
        Hook::Ingress,
        &icmp_error_frame(ROUTER, S, 3, 4, &tcp_quote(S)),
    );
    let _ = p.run(Hook::Egress, &tcp_frame(S, PEER, KUBELET, EPHEMERAL));
    p.expect_counters(counters(4, 3, 1, 3, 0));
    // DF is irrelevant to the programs; a DF-less segment counts like any other.
    let mut ip = Ipv4::new(PEER, S, TCP);
    ip.frag &= !DF;
    let _ = p.run(
        Hook::Ingress,
        &frame(&ip.packet(&tcp(PEER, S, EPHEMERAL, 22, b""))),
    );
    p.expect_counters(counters(5, 3, 1, 3, 0));
}
