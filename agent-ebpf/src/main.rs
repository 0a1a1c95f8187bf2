//! tc classifiers of the satellite agent: a stateless 1:1 IPv4 NAT between the host's own
//! uplink address S and the node IP N, for traffic with the configured peers (the proxy), plus
//! an inbound allow-list for the proxied ports.
//!
//! - `sat_nat_ingress` (tc ingress of the uplink):
//!   - TCP/UDP to a protected port (the [`SAT_PORTS`] map or the NodePort range of
//!     [`NatConfig`]) from a non-peer is dropped and counted ([`Counter::DroppedNotAllowed`]).
//!     Loopback traffic never crosses the uplink, so "peers and loopback" is what remains.
//!   - peer → S becomes peer → N ([`Counter::IngressRewritten`]);
//!   - ICMP errors (RFC 792 types 3, 4, 5, 11, 12) to S that quote a datagram S → peer (e.g.
//!     "fragmentation needed" from a router on the path, for PMTUD) become errors to N quoting
//!     N → peer, whoever sent them ([`Counter::IcmpErrorRewritten`]).
//! - `sat_nat_egress` (tc egress of the uplink): N → peer becomes S → peer; an ICMP error among
//!   them (e.g. port unreachable for a datagram peer → N) also gets its quoted destination N
//!   rewritten to S, so the peer's socket matches it.
//!
//! Checksums are updated incrementally (RFC 1624) with the kernel's `bpf_l3_csum_replace` /
//! `bpf_l4_csum_replace` helpers: the IPv4 header checksum; the TCP/UDP checksum through the
//! pseudo-header (`BPF_F_PSEUDO_HDR`), with `BPF_F_MARK_MANGLED_0` for UDP so a zero ("no
//! checksum", RFC 768) UDP checksum stays zero and a computed zero is sent as 0xffff; the ICMP
//! checksum (no pseudo-header) for every byte changed in a quoted datagram. Non-first fragments
//! (fragment offset ≠ 0) carry no transport header: only their IPv4 header is rewritten, and the
//! allow-list cannot see their ports (a dropped first fragment makes reassembly fail).
//!
//! Headers on every packet's path (Ethernet type, IPv4 header, destination port) are read
//! directly from the linear packet data, bounds-checked against `data_end`, falling back to
//! `bpf_skb_load_bytes` when they are not linear; everything else (the rarer ICMP errors) and
//! every write goes through `bpf_skb_load_bytes`/`bpf_skb_store_bytes`. The uplink must carry
//! Ethernet frames (no VLAN tag in the packet data: the kernel strips offloaded tags before
//! tc).

#![no_std]
#![no_main]

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};
use satellite_agent_common::{
    COUNTER_COUNT, Counter, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, MAX_PEERS, MAX_PORTS,
    NatConfig, PeerInfo, PortInfo, PortKey,
};

/// [`satellite_agent_common::MAP_CONFIG`]: the [`NatConfig`] at index 0.
#[map]
static SAT_CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

/// [`satellite_agent_common::MAP_PEERS`]: peer address → [`PeerInfo`].
#[map]
static SAT_PEERS: HashMap<u32, PeerInfo> = HashMap::with_max_entries(MAX_PEERS, 0);

/// [`satellite_agent_common::MAP_PORTS`]: protected (protocol, port) → [`PortInfo`].
#[map]
static SAT_PORTS: HashMap<PortKey, PortInfo> = HashMap::with_max_entries(MAX_PORTS, 0);

/// [`satellite_agent_common::MAP_COUNTERS`]: per-CPU packet counters indexed by [`Counter`].
#[map]
static SAT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Verdict for packets we are done with: run the next tc program on the hook, or pass the
/// packet when there is none (TCX_NEXT / cls_bpf "unspec"). Leaves room for other programs.
const NEXT: i32 = TC_ACT_UNSPEC;
/// Verdict for dropped packets.
const DROP: i32 = TC_ACT_SHOT;

const ETH_HLEN: usize = EthHdr::LEN;
const IP_OFF: usize = ETH_HLEN;
const IP_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
const IP_DST: usize = offset_of!(Ipv4Hdr, dst_addr);
const IP_CHECK: usize = offset_of!(Ipv4Hdr, check);
const TCP_CHECK: usize = offset_of!(TcpHdr, check);
const UDP_CHECK: usize = offset_of!(UdpHdr, check);
const ICMP_CHECK: usize = offset_of!(Icmpv4Hdr, check);
/// Destination port offset, the same in TCP and UDP headers (RFC 9293, RFC 768).
const L4_DPORT: usize = offset_of!(UdpHdr, dst);
/// IPv4 fragment offset mask of the flags+offset word (host order).
const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Which address of a header a rewrite changes.
#[derive(Clone, Copy)]
enum Field {
    Src,
    Dst,
}

impl Field {
    const fn offset(self) -> usize {
        match self {
            Self::Src => IP_SRC,
            Self::Dst => IP_DST,
        }
    }
}

/// A failed helper call. Before any write the packet is passed on; after a write it is dropped
/// (its checksums would no longer match).
struct Fault;

/// The parsed outer IPv4 header.
struct Ip {
    src: u32,
    dst: u32,
    proto: u8,
    /// Offset of the transport header.
    l4: usize,
    /// Fragment offset is zero: the transport header is present.
    first_fragment: bool,
}

/// The IPv4 header quoted in an ICMP error (RFC 792: the datagram's IP header + at least 8
/// bytes of its payload).
struct Quoted {
    /// Offset of the quoted IPv4 header.
    ip: usize,
    src: u32,
    dst: u32,
    proto: u8,
    /// Offset of the quoted transport header.
    l4: usize,
    first_fragment: bool,
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = SAT_COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array: it is valid,
        // aligned, and only this CPU touches this slot while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn config() -> Option<NatConfig> {
    let cfg = *SAT_CONFIG.get(0)?;
    (cfg.host_addr != 0 && cfg.node_addr != 0).then_some(cfg)
}

#[inline(always)]
fn is_peer(addr: u32) -> bool {
    SAT_PEERS.get_ptr(&addr).is_some()
}

#[inline(always)]
fn is_protected(cfg: &NatConfig, proto: u8, port: u16) -> bool {
    let nodeport = (cfg.nodeport_min != 0 || cfg.nodeport_max != 0)
        && port >= cfg.nodeport_min
        && port <= cfg.nodeport_max;
    nodeport || SAT_PORTS.get_ptr(&PortKey::new(proto, port)).is_some()
}

/// Reads a `T` at `off` of the packet: straight from the linear data when it is there (no
/// helper call: every packet's headers are read this way), else with `bpf_skb_load_bytes`
/// (headers in paged data).
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let start = ctx.data();
    if start + off + size_of::<T>() <= ctx.data_end() {
        // SAFETY: the `size_of::<T>()` bytes at `start + off` lie before `data_end`: inside
        // the linear packet data, which the verifier also checks against this comparison.
        // Packet data has no alignment, hence the unaligned read.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
    } else {
        ctx.load(off).ok()
    }
}

/// Parses the IPv4 header at `off`; `None` for anything else or a malformed header.
#[inline(always)]
fn parse_ip(ctx: &TcContext, off: usize) -> Option<Ip> {
    let ip: Ipv4Hdr = read(ctx, off)?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    Some(Ip {
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        proto: ip.proto,
        l4: off + ihl,
        first_fragment: u16::from_be_bytes(ip.frags) & IP_FRAG_OFFSET_MASK == 0,
    })
}

/// The outer IPv4 header of an Ethernet frame, or `None` when it carries something else.
#[inline(always)]
fn outer_ip(ctx: &TcContext) -> Option<Ip> {
    let ether_type: u16 = read(ctx, offset_of!(EthHdr, ether_type))?;
    if ether_type != EtherType::Ipv4 as u16 {
        return None;
    }
    parse_ip(ctx, IP_OFF)
}

/// The datagram quoted by an ICMP error message at `l4`, or `None` when the message is not an
/// error (RFC 792 types 3, 4, 5, 11, 12) or too short.
#[inline(always)]
fn quoted(ctx: &TcContext, l4: usize) -> Option<Quoted> {
    let icmp_type: u8 = ctx.load(l4).ok()?;
    if !matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
        return None;
    }
    let ip = parse_ip(ctx, l4 + Icmpv4Hdr::LEN)?;
    Some(Quoted {
        ip: l4 + Icmpv4Hdr::LEN,
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        l4: ip.l4,
        first_fragment: ip.first_fragment,
    })
}

/// Rewrites the outer `field` from `from` to `to` and fixes the IPv4 header checksum and, in a
/// first fragment, the TCP/UDP checksum (its pseudo-header covers both addresses; ICMP has none).
#[inline(always)]
fn rewrite_outer(ctx: &TcContext, ip: &Ip, field: Field, from: u32, to: u32) -> Result<(), Fault> {
    ctx.store(IP_OFF + field.offset(), &to, 0)
        .map_err(|_| Fault)?;
    ctx.l3_csum_replace(IP_OFF + IP_CHECK, u64::from(from), u64::from(to), 4)
        .map_err(|_| Fault)?;
    if !ip.first_fragment {
        return Ok(());
    }
    let (check, flags) = match ip.proto {
        IPPROTO_TCP => (ip.l4 + TCP_CHECK, u64::from(BPF_F_PSEUDO_HDR)),
        IPPROTO_UDP => (
            ip.l4 + UDP_CHECK,
            u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0),
        ),
        _ => return Ok(()),
    };
    ctx.l4_csum_replace(check, u64::from(from), u64::from(to), flags | 4)
        .map_err(|_| Fault)
}

/// Rewrites the quoted datagram's `field` from `from` to `to` inside the ICMP error at `icmp`:
/// the quoted IPv4 header and its checksum, the quoted TCP/UDP checksum when the quote contains
/// it (UDP: unless zero), and the ICMP checksum for each of those changes (RFC 792: it covers the
/// whole message, no pseudo-header).
#[inline(always)]
fn rewrite_quoted(
    ctx: &TcContext,
    icmp: usize,
    q: &Quoted,
    field: Field,
    from: u32,
    to: u32,
) -> Result<(), Fault> {
    let icmp_check = icmp + ICMP_CHECK;
    ctx.store(q.ip + field.offset(), &to, 0)
        .map_err(|_| Fault)?;
    ctx.l4_csum_replace(icmp_check, u64::from(from), u64::from(to), 4)
        .map_err(|_| Fault)?;
    fix_quoted_check(ctx, icmp_check, q.ip + IP_CHECK, from, to, false)?;
    if !q.first_fragment {
        return Ok(());
    }
    let (check, udp) = match q.proto {
        IPPROTO_TCP => (q.l4 + TCP_CHECK, false),
        IPPROTO_UDP => (q.l4 + UDP_CHECK, true),
        _ => return Ok(()),
    };
    // Quotes may end before the TCP checksum (RFC 792 only promises 8 bytes): nothing to fix.
    if ctx.load::<u16>(check).is_err() {
        return Ok(());
    }
    fix_quoted_check(ctx, icmp_check, check, from, to, udp)
}

/// Applies the address change `from` → `to` to the 16-bit checksum at `check` inside an ICMP
/// message and folds the resulting change of that field into the ICMP checksum at
/// `icmp_check`. A plain RFC 1624 update (`bpf_l3_csum_replace` never looks at the skb's
/// checksum state, unlike `bpf_l4_csum_replace` without `BPF_F_PSEUDO_HDR`). For a quoted UDP
/// checksum (`udp`) zero stays zero and a computed zero becomes 0xffff (RFC 768).
#[inline(always)]
fn fix_quoted_check(
    ctx: &TcContext,
    icmp_check: usize,
    check: usize,
    from: u32,
    to: u32,
    udp: bool,
) -> Result<(), Fault> {
    let old: u16 = ctx.load(check).map_err(|_| Fault)?;
    if udp && old == 0 {
        return Ok(());
    }
    ctx.l3_csum_replace(check, u64::from(from), u64::from(to), 4)
        .map_err(|_| Fault)?;
    let mut new: u16 = ctx.load(check).map_err(|_| Fault)?;
    if udp && new == 0 {
        new = 0xffff;
        ctx.store(check, &new, 0).map_err(|_| Fault)?;
    }
    ctx.l4_csum_replace(icmp_check, u64::from(old), u64::from(new), 2)
        .map_err(|_| Fault)
}

/// tc ingress classifier of the uplink (see the crate documentation).
#[classifier]
fn sat_nat_ingress(ctx: TcContext) -> i32 {
    let Some(cfg) = config() else {
        return NEXT;
    };
    let Some(ip) = outer_ip(&ctx) else {
        return NEXT;
    };
    let peer = is_peer(ip.src);

    if !peer && ip.first_fragment && (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) {
        let Some(dport) = read::<[u8; 2]>(&ctx, ip.l4 + L4_DPORT) else {
            count(Counter::Errors);
            return NEXT;
        };
        if is_protected(&cfg, ip.proto, u16::from_be_bytes(dport)) {
            count(Counter::DroppedNotAllowed);
            return DROP;
        }
    }
    if ip.dst != cfg.host_addr {
        return NEXT;
    }

    // An ICMP error about a datagram we sent (S → peer), from the peer or a router on the way.
    let quote = if ip.proto == IPPROTO_ICMP && ip.first_fragment {
        quoted(&ctx, ip.l4).filter(|q| q.src == cfg.host_addr && is_peer(q.dst))
    } else {
        None
    };
    if !peer && quote.is_none() {
        return NEXT;
    }

    let (s, n) = (cfg.host_addr, cfg.node_addr);
    let result = rewrite_outer(&ctx, &ip, Field::Dst, s, n).and_then(|()| match &quote {
        Some(q) => rewrite_quoted(&ctx, ip.l4, q, Field::Src, s, n),
        None => Ok(()),
    });
    finish(result, Counter::IngressRewritten, quote.is_some())
}

/// tc egress classifier of the uplink (see the crate documentation).
#[classifier]
fn sat_nat_egress(ctx: TcContext) -> i32 {
    let Some(cfg) = config() else {
        return NEXT;
    };
    let Some(ip) = outer_ip(&ctx) else {
        return NEXT;
    };
    if ip.src != cfg.node_addr || !is_peer(ip.dst) {
        return NEXT;
    }
    let (s, n) = (cfg.host_addr, cfg.node_addr);
    // An ICMP error we send about a datagram the peer sent to N.
    let quote = if ip.proto == IPPROTO_ICMP && ip.first_fragment {
        quoted(&ctx, ip.l4).filter(|q| q.dst == n)
    } else {
        None
    };
    let result = rewrite_outer(&ctx, &ip, Field::Src, n, s).and_then(|()| match &quote {
        Some(q) => rewrite_quoted(&ctx, ip.l4, q, Field::Dst, n, s),
        None => Ok(()),
    });
    finish(result, Counter::EgressRewritten, quote.is_some())
}

#[inline(always)]
fn finish(result: Result<(), Fault>, rewritten: Counter, quoted: bool) -> i32 {
    match result {
        Ok(()) => {
            count(rewritten);
            if quoted {
                count(Counter::IcmpErrorRewritten);
            }
            NEXT
        }
        Err(Fault) => {
            count(Counter::Errors);
            DROP
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path; this only satisfies `no_std`.
    loop {}
}

/// License of the programs; GPL-compatible, as the helpers used require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
