//! Types shared by the satellite tc eBPF programs (`agent-ebpf`, built for `bpfel-unknown-none`)
//! and the agent that loads them (`agent::datapath`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so the kernel side and the
//! user side agree on the byte layout of every map key and value. With the `user` feature the
//! types implement [`aya::Pod`] so the agent can read and write them through aya's map APIs.
//!
//! # Byte order
//!
//! IPv4 addresses are stored as they appear on the wire: `u32::from_ne_bytes(addr.octets())`
//! (see [`ipv4_key`]). The eBPF programs then compare them with the raw 32-bit words they load
//! from the packet without any byte swapping. Ports are stored in host byte order.

#![no_std]

// Map and program names stay within the kernel's 15 visible characters (BPF_OBJ_NAME_LEN 16), so
// `bpftool` shows them whole. The eBPF crate's statics and functions carry exactly these names.

/// Name of the single-entry `BPF_MAP_TYPE_ARRAY` holding the [`NatConfig`] (key `0u32`).
pub const MAP_CONFIG: &str = "SAT_CONFIG";
/// Name of the `BPF_MAP_TYPE_HASH` of peers: key an IPv4 address as [`ipv4_key`] returns it,
/// value a [`PeerInfo`].
pub const MAP_PEERS: &str = "SAT_PEERS";
/// Name of the `BPF_MAP_TYPE_HASH` of protected ports: key a [`PortKey`], value a [`PortInfo`].
pub const MAP_PORTS: &str = "SAT_PORTS";
/// Name of the `BPF_MAP_TYPE_PERCPU_ARRAY` of packet counters: key a [`Counter`] as `u32`,
/// value a `u64` per CPU.
pub const MAP_COUNTERS: &str = "SAT_COUNTERS";

/// Name (ELF symbol and kernel program name) of the tc ingress classifier.
pub const PROG_INGRESS: &str = "sat_nat_ingress";
/// Name (ELF symbol and kernel program name) of the tc egress classifier.
pub const PROG_EGRESS: &str = "sat_nat_egress";

/// Capacity of [`MAP_PEERS`] (entries).
pub const MAX_PEERS: u32 = 64;
/// Capacity of [`MAP_PORTS`] (entries).
pub const MAX_PORTS: u32 = 1024;

/// IANA protocol number of TCP (RFC 9293).
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP (RFC 768).
pub const IPPROTO_UDP: u8 = 17;
/// IANA protocol number of ICMP (RFC 792).
pub const IPPROTO_ICMP: u8 = 1;

/// The IPv4 address with octets `octets` as a map key or [`NatConfig`] field: the four octets in
/// wire order reinterpreted as a native-endian `u32`, i.e. exactly the word the eBPF programs
/// load from an IPv4 header.
#[must_use]
pub const fn ipv4_key(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The octets of an address stored with [`ipv4_key`].
#[must_use]
pub const fn ipv4_octets(key: u32) -> [u8; 4] {
    key.to_ne_bytes()
}

/// The NAT configuration, the only entry (index 0) of [`MAP_CONFIG`].
///
/// While `host_addr` or `node_addr` is zero (the state of a freshly created map) the programs
/// pass every packet unchanged: no NAT, no allow-list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// S: the host's own address on the uplink, as [`ipv4_key`] stores it. Ingress packets from a
    /// peer to S are rewritten to [`Self::node_addr`].
    pub host_addr: u32,
    /// N: the node IP (configured locally, e.g. a /32 on `lo`), as [`ipv4_key`] stores it. Egress
    /// packets from N to a peer are rewritten to come from [`Self::host_addr`].
    pub node_addr: u32,
    /// First port (host byte order, inclusive) of the NodePort range, protected for TCP and UDP
    /// like the ports in [`MAP_PORTS`]. `0` together with `nodeport_max == 0` disables the range.
    pub nodeport_min: u16,
    /// Last port (host byte order, inclusive) of the NodePort range.
    pub nodeport_max: u16,
    /// Reserved, must be zero.
    pub flags: u32,
}

/// Key of [`MAP_PORTS`]: a protected (protocol, destination port) pair.
///
/// Inbound TCP or UDP to a protected port is accepted on the uplink only from a peer (loopback
/// traffic never crosses the uplink); anything else is dropped and counted as
/// [`Counter::DroppedNotAllowed`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Explicit padding, must be zero (hash keys compare every byte).
    pub pad: u8,
    /// Destination port, host byte order.
    pub port: u16,
}

impl PortKey {
    /// The key for `proto` (an `IPPROTO_*` number) and `port` (host byte order).
    #[must_use]
    pub const fn new(proto: u8, port: u16) -> Self {
        Self {
            proto,
            pad: 0,
            port,
        }
    }
}

/// Value of [`MAP_PORTS`]. Presence of the key is what counts; the value is reserved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// Reserved, must be zero.
    pub flags: u32,
}

/// Value of [`MAP_PEERS`]. Presence of the key is what counts; the value is reserved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Reserved, must be zero.
    pub flags: u32,
}

/// Indices of [`MAP_COUNTERS`]; every counter counts packets.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Ingress packets from a peer whose destination S was rewritten to N.
    IngressRewritten = 0,
    /// Egress packets to a peer whose source N was rewritten to S.
    EgressRewritten = 1,
    /// ICMP error messages (RFC 792 types 3, 4, 5, 11, 12) whose embedded IPv4 header was
    /// rewritten as well (in either direction).
    IcmpErrorRewritten = 2,
    /// Inbound TCP/UDP to a protected port from a non-peer, dropped.
    DroppedNotAllowed = 3,
    /// Packets the programs could not parse or rewrite (truncated headers, helper failures);
    /// these are passed unchanged, or dropped when a rewrite had already started.
    Errors = 4,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Self; COUNTER_COUNT as usize] = [
        Self::IngressRewritten,
        Self::EgressRewritten,
        Self::IcmpErrorRewritten,
        Self::DroppedNotAllowed,
        Self::Errors,
    ];

    /// The counter's index in [`MAP_COUNTERS`].
    #[must_use]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

/// Number of entries of [`MAP_COUNTERS`].
pub const COUNTER_COUNT: u32 = 5;

#[cfg(feature = "user")]
mod pod {
    use super::{NatConfig, PeerInfo, PortInfo, PortKey};

    // SAFETY: `#[repr(C)]`, only integer fields, no implicit padding (4+4+2+2+4 bytes), every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for NatConfig {}
    // SAFETY: `#[repr(C)]`, integer fields with explicit padding (1+1+2 bytes), every bit pattern
    // is a valid value.
    unsafe impl aya::Pod for PortKey {}
    // SAFETY: `#[repr(C)]`, a single `u32`.
    unsafe impl aya::Pod for PortInfo {}
    // SAFETY: `#[repr(C)]`, a single `u32`.
    unsafe impl aya::Pod for PeerInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<NatConfig>(), 16);
        assert_eq!(size_of::<PortKey>(), 4);
        assert_eq!(size_of::<PortInfo>(), 4);
        assert_eq!(size_of::<PeerInfo>(), 4);
    }

    #[test]
    fn ipv4_key_is_wire_order() {
        let key = ipv4_key([198, 18, 0, 1]);
        assert_eq!(key.to_ne_bytes(), [198, 18, 0, 1]);
        assert_eq!(ipv4_octets(key), [198, 18, 0, 1]);
    }

    #[test]
    fn counters_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
        }
    }
}
