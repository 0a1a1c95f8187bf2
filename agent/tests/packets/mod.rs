//! Synthetic Ethernet/IPv4 frames for the tc program tests, and an independent checker.
//!
//! Everything here is written from the RFCs, not from the programs: checksums are computed
//! from scratch with the RFC 1071 one's complement sum (over the pseudo-header for TCP and UDP,
//! RFC 9293 §3.1 and RFC 768), never updated incrementally as the programs do, so a wrong
//! incremental update cannot be "confirmed" by the same mistake.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::ops::Range;

/// Ethernet header length (destination, source, EtherType).
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Minimum Ethernet frame without FCS: shorter frames are padded with zeros.
pub const ETH_ZLEN: usize = 60;

/// IP protocol numbers.
pub const TCP: u8 = 6;
/// UDP (RFC 768).
pub const UDP: u8 = 17;
/// ICMP (RFC 792).
pub const ICMP: u8 = 1;

/// IPv4 "more fragments" flag in the flags+offset word.
pub const MF: u16 = 0x2000;
/// IPv4 "don't fragment" flag.
pub const DF: u16 = 0x4000;

/// The RFC 1071 checksum of `data`: the one's complement of the one's complement sum of its
/// 16-bit big-endian words (an odd last byte padded with a zero byte). Over data that includes
/// a correct checksum field the result is 0.
#[must_use]
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP/UDP pseudo-header (RFC 9293 §3.1, RFC 768) followed by `segment`.
fn with_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + segment.len());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.push(0);
    v.push(proto);
    v.extend_from_slice(&u16::try_from(segment.len()).unwrap().to_be_bytes());
    v.extend_from_slice(segment);
    v
}

/// The TCP or UDP checksum of `segment` (its checksum field zeroed) from `src` to `dst`, as
/// sent: a computed 0 is sent as 0xffff for UDP (RFC 768; 0 means "no checksum").
#[must_use]
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let c = internet_checksum(&with_pseudo_header(src, dst, proto, segment));
    if proto == UDP && c == 0 { 0xffff } else { c }
}

/// An IPv4 header (RFC 791) to put in front of a payload.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub proto: u8,
    /// Identification.
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units), host order.
    pub frag: u16,
    /// Time to live.
    pub ttl: u8,
    /// Options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    /// Total length to write instead of the real one (a quoted header describes the original
    /// datagram, not the quote).
    pub total_len: Option<u16>,
}

impl Ipv4 {
    /// A plain header from `src` to `dst` carrying `proto`, DF set.
    #[must_use]
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            id: 0x1234,
            frag: DF,
            ttl: 64,
            options: Vec::new(),
            total_len: None,
        }
    }

    /// The header followed by `payload`, with a correct header checksum.
    #[must_use]
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let hlen = 20 + self.options.len();
        let total = self
            .total_len
            .unwrap_or_else(|| u16::try_from(hlen + payload.len()).unwrap());
        let mut h = Vec::with_capacity(hlen + payload.len());
        h.push(0x40 | u8::try_from(hlen / 4).unwrap());
        h.push(0); // TOS
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        let check = internet_checksum(&h);
        h[10..12].copy_from_slice(&check.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// A TCP segment (RFC 9293; 20-byte header, ACK|PSH) with a correct checksum for `src` → `dst`.
#[must_use]
pub fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // sequence number
    s.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes()); // acknowledgment number
    s.push(5 << 4); // data offset
    s.push(0x18); // ACK | PSH
    s.extend_from_slice(&64240u16.to_be_bytes()); // window
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    s.extend_from_slice(payload);
    let check = l4_checksum(src, dst, TCP, &s);
    s[16..18].copy_from_slice(&check.to_be_bytes());
    s
}

/// A UDP datagram (RFC 768) with a correct checksum for `src` → `dst`.
#[must_use]
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = udp_no_checksum(sport, dport, payload);
    let check = l4_checksum(src, dst, UDP, &d);
    d[6..8].copy_from_slice(&check.to_be_bytes());
    d
}

/// A UDP datagram with checksum 0 ("no checksum", RFC 768).
#[must_use]
pub fn udp_no_checksum(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// An ICMP message (RFC 792): `kind`, `code`, the 4 bytes after the checksum, then `body`, with
/// a correct checksum (over the whole message, no pseudo-header).
#[must_use]
pub fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let check = internet_checksum(&m);
    m[2..4].copy_from_slice(&check.to_be_bytes());
    m
}

/// An ICMP echo request (type 8).
#[must_use]
pub fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp(8, 0, [a, b, c, d], payload)
}

/// An Ethernet II frame carrying `payload` with EtherType `ether_type`, padded to
/// [`ETH_ZLEN`] like a real frame.
#[must_use]
pub fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_ZLEN.max(ETH_HLEN + payload.len()));
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // destination (locally administered)
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // source
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(ETH_ZLEN), 0);
    f
}

/// An Ethernet frame carrying `payload` with EtherType `ether_type`, not padded (a truncated
/// frame).
#[must_use]
pub fn ethernet_unpadded(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ethernet(ether_type, payload);
    f.truncate(ETH_HLEN + payload.len());
    f
}

/// An Ethernet frame carrying the IPv4 `packet`.
#[must_use]
pub fn frame(packet: &[u8]) -> Vec<u8> {
    ethernet(ETH_P_IP, packet)
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn addr(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

/// A parsed IPv4 header inside a frame.
struct IpView {
    off: usize,
    hlen: usize,
    /// End of the datagram in the buffer (its total length, or the buffer's end if shorter).
    end: usize,
    /// The total length field claims more than the buffer holds (a quoted, truncated datagram).
    truncated: bool,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    first_fragment: bool,
    more_fragments: bool,
}

fn ip_view(b: &[u8], off: usize) -> Option<IpView> {
    if b.len() < off + 20 || b[off] >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(b[off] & 0x0f) * 4;
    if hlen < 20 || b.len() < off + hlen {
        return None;
    }
    let total = usize::from(be16(b, off + 2));
    let frag = be16(b, off + 6);
    Some(IpView {
        off,
        hlen,
        end: (off + total).min(b.len()),
        truncated: off + total > b.len(),
        proto: b[off + 9],
        src: addr(b, off + 12),
        dst: addr(b, off + 16),
        first_fragment: frag & 0x1fff == 0,
        more_fragments: frag & MF != 0,
    })
}

/// Checks every checksum of an Ethernet frame from scratch: the IPv4 header checksum; the
/// TCP/UDP checksum over the pseudo-header, or the ICMP checksum, when the frame holds the
/// whole datagram (not for fragments; a UDP checksum 0, "none", is accepted). In an ICMP error
/// also the quoted IPv4 header checksum, and the quoted TCP/UDP checksum when the
/// quote holds the whole quoted datagram. Returns one line per checksum that does not verify.
#[must_use]
pub fn checksum_errors(frame: &[u8]) -> Vec<String> {
    let mut errors = Vec::new();
    if frame.len() < ETH_HLEN || be16(frame, 12) != ETH_P_IP {
        return errors;
    }
    let Some(ip) = ip_view(frame, ETH_HLEN) else {
        errors.push("malformed IPv4 header".into());
        return errors;
    };
    check_datagram(frame, &ip, "", &mut errors);
    if ip.proto == ICMP
        && ip.first_fragment
        && !ip.more_fragments
        && ip.end >= ip.off + ip.hlen + 8
        && is_icmp_error(frame[ip.off + ip.hlen])
        && let Some(q) = ip_view(&frame[..ip.end], ip.off + ip.hlen + 8)
    {
        check_datagram(&frame[..ip.end], &q, "quoted ", &mut errors);
    }
    errors
}

fn is_icmp_error(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

fn check_datagram(b: &[u8], ip: &IpView, what: &str, errors: &mut Vec<String>) {
    let hdr = &b[ip.off..ip.off + ip.hlen];
    let c = internet_checksum(hdr);
    if c != 0 {
        errors.push(format!(
            "{what}IPv4 header checksum {:#06x} does not verify (should be {:#06x})",
            be16(hdr, 10),
            expected_field(hdr, 10)
        ));
    }
    if !ip.first_fragment || ip.more_fragments || ip.truncated {
        return; // the transport checksum covers bytes that are not here
    }
    let seg = &b[ip.off + ip.hlen..ip.end];
    let (name, check_off) = match ip.proto {
        TCP => ("TCP", 16),
        UDP => ("UDP", 6),
        ICMP => ("ICMP", 2),
        _ => return,
    };
    if seg.len() < check_off + 2 {
        errors.push(format!("{what}{name} header truncated"));
        return;
    }
    let field = be16(seg, check_off);
    let ok = match ip.proto {
        ICMP => internet_checksum(seg) == 0,
        UDP if field == 0 => true,
        _ => internet_checksum(&with_pseudo_header(ip.src, ip.dst, ip.proto, seg)) == 0,
    };
    if !ok {
        let mut zeroed = seg.to_vec();
        zeroed[check_off..check_off + 2].fill(0);
        let want = if ip.proto == ICMP {
            internet_checksum(&zeroed)
        } else {
            l4_checksum(ip.src, ip.dst, ip.proto, &zeroed)
        };
        errors.push(format!(
            "{what}{name} checksum {field:#06x} does not verify for {} → {} (should be {want:#06x})",
            ip.src, ip.dst
        ));
    }
}

/// The value the 16-bit checksum field at `off` of `data` should have.
fn expected_field(data: &[u8], off: usize) -> u16 {
    let mut zeroed = data.to_vec();
    zeroed[off..off + 2].fill(0);
    internet_checksum(&zeroed)
}

/// Names for the byte ranges of a frame, for messages that say which field differs.
#[must_use]
pub fn fields(frame: &[u8]) -> Vec<(String, Range<usize>)> {
    let mut f: Vec<(String, Range<usize>)> = vec![
        ("eth.dst".into(), 0..6),
        ("eth.src".into(), 6..12),
        ("eth.type".into(), 12..14),
    ];
    if frame.len() >= ETH_HLEN
        && be16(frame, 12) == ETH_P_IP
        && let Some(ip) = ip_view(frame, ETH_HLEN)
    {
        ip_fields(frame, &ip, "ip", &mut f);
        if ip.first_fragment && ip.proto == ICMP && ip.end >= ip.off + ip.hlen + 8 {
            let icmp = ip.off + ip.hlen;
            if is_icmp_error(frame[icmp])
                && let Some(q) = ip_view(&frame[..ip.end], icmp + 8)
            {
                ip_fields(&frame[..ip.end], &q, "icmp.quote.ip", &mut f);
            }
        }
    }
    f
}

fn ip_fields(b: &[u8], ip: &IpView, prefix: &str, f: &mut Vec<(String, Range<usize>)>) {
    let o = ip.off;
    for (name, r) in [
        ("vihl", 0..1),
        ("tos", 1..2),
        ("len", 2..4),
        ("id", 4..6),
        ("frag", 6..8),
        ("ttl", 8..9),
        ("proto", 9..10),
        ("check", 10..12),
        ("src", 12..16),
        ("dst", 16..20),
    ] {
        f.push((format!("{prefix}.{name}"), o + r.start..o + r.end));
    }
    if ip.hlen > 20 {
        f.push((format!("{prefix}.options"), o + 20..o + ip.hlen));
    }
    if !ip.first_fragment {
        return; // payload only
    }
    let l4 = o + ip.hlen;
    let l4_prefix = prefix.strip_suffix(".ip").unwrap_or("").to_owned();
    let dot = if l4_prefix.is_empty() { "" } else { "." };
    let named: &[(&str, Range<usize>)] = match ip.proto {
        TCP => &[
            ("tcp.sport", 0..2),
            ("tcp.dport", 2..4),
            ("tcp.seq", 4..8),
            ("tcp.ack", 8..12),
            ("tcp.off_flags", 12..14),
            ("tcp.window", 14..16),
            ("tcp.check", 16..18),
            ("tcp.urgent", 18..20),
        ],
        UDP => &[
            ("udp.sport", 0..2),
            ("udp.dport", 2..4),
            ("udp.len", 4..6),
            ("udp.check", 6..8),
        ],
        ICMP => &[
            ("icmp.type", 0..1),
            ("icmp.code", 1..2),
            ("icmp.check", 2..4),
            ("icmp.rest", 4..8),
        ],
        _ => &[],
    };
    for (name, r) in named {
        if l4 + r.end <= b.len() {
            f.push((format!("{l4_prefix}{dot}{name}"), l4 + r.start..l4 + r.end));
        }
    }
}

fn show(name: &str, bytes: &[u8]) -> String {
    if name.ends_with("src") && bytes.len() == 4 && name.contains("ip") {
        return addr(bytes, 0).to_string();
    }
    if name.ends_with("dst") && bytes.len() == 4 && name.contains("ip") {
        return addr(bytes, 0).to_string();
    }
    let mut s = String::from("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `None` when `got` equals `want`, else one line per field (named by [`fields`] of `want`)
/// whose bytes differ: `ip.dst: got 198.18.0.1, want 198.18.100.1`.
#[must_use]
pub fn diff(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let mut out = Vec::new();
    if got.len() != want.len() {
        out.push(format!("length: got {}, want {}", got.len(), want.len()));
    }
    let named = fields(want);
    let len = got.len().min(want.len());
    let mut covered = vec![false; len];
    for (name, r) in &named {
        if r.end > len {
            continue;
        }
        covered[r.clone()].fill(true);
        if got[r.clone()] != want[r.clone()] {
            out.push(format!(
                "{name}: got {}, want {}",
                show(name, &got[r.clone()]),
                show(name, &want[r.clone()])
            ));
        }
    }
    for i in 0..len {
        if !covered[i] && got[i] != want[i] {
            out.push(format!(
                "byte {i} (payload): got {:#04x}, want {:#04x}",
                got[i], want[i]
            ));
        }
    }
    Some(out.join("; "))
}
