//! What the programs are told, through their maps: the [`Config`] (the NAT addresses, the
//! peers, the protected ports) written by [`Datapath::set_config`] after [`Config::validate`],
//! and the packet [`Counters`] read back. Separate from the loader because this is the part
//! that changes at run time (every reconcile rewrites the maps), without attaching anything.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use aya::maps::MapError;
use satellite_agent_common::{
    self as common, Counter, IPPROTO_TCP, IPPROTO_UDP, NatConfig, PeerInfo, PortInfo, PortKey,
};

use super::{Datapath, Error};

/// Transport protocol of a protected port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    /// `tcp` or `udp`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the programs do: the NAT addresses, who the peers are, which ports are protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// S: the host's own address on the uplink (what the proxy connects to).
    pub host_addr: Ipv4Addr,
    /// N: the node IP (a VPC address, also configured locally, e.g. as a /32 on `lo`).
    pub node_addr: Ipv4Addr,
    /// The proxies: traffic with them is translated, and only they may reach the protected
    /// ports over the uplink. At most [`common::MAX_PEERS`].
    pub peers: BTreeSet<Ipv4Addr>,
    /// Protected (protocol, destination port) pairs, e.g. kubelet's (TCP, 10250). At most
    /// [`common::MAX_PORTS`].
    pub ports: BTreeSet<(Protocol, u16)>,
    /// Protected NodePort range (TCP and UDP), e.g. `30000..=32767`; `None` for none.
    pub nodeports: Option<RangeInclusive<u16>>,
}

/// Packet counts summed over all CPUs (see [`Counter`] for what each one counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// [`Counter::IngressRewritten`].
    pub ingress_rewritten: u64,
    /// [`Counter::EgressRewritten`].
    pub egress_rewritten: u64,
    /// [`Counter::IcmpErrorRewritten`].
    pub icmp_error_rewritten: u64,
    /// [`Counter::DroppedNotAllowed`].
    pub dropped_not_allowed: u64,
    /// [`Counter::Errors`].
    pub errors: u64,
}

impl Datapath {
    /// Rewrites the maps with `config`: peers and ports are added before stale ones are removed,
    /// so a peer or port present in both the old and the new configuration never loses service.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a configuration the maps cannot hold, [`Error::Map`] when an
    /// update fails (the maps may then hold a mix of both configurations).
    pub fn set_config(&mut self, config: &Config) -> Result<(), Error> {
        validate(config)?;
        let map_error = |what: &str| {
            let what = what.to_owned();
            move |e: MapError| Error::Map {
                what,
                source: Box::new(e),
            }
        };
        let (nodeport_min, nodeport_max) = config
            .nodeports
            .as_ref()
            .map_or((0, 0), |r| (*r.start(), *r.end()));
        let nat = NatConfig {
            host_addr: common::ipv4_key(config.host_addr.octets()),
            node_addr: common::ipv4_key(config.node_addr.octets()),
            nodeport_min,
            nodeport_max,
            flags: 0,
        };

        let peers: BTreeSet<u32> = config
            .peers
            .iter()
            .map(|p| common::ipv4_key(p.octets()))
            .collect();
        for peer in &peers {
            self.peers
                .insert(peer, PeerInfo::default(), 0)
                .map_err(map_error("adding a peer"))?;
        }
        let ports: BTreeSet<PortKey> = config
            .ports
            .iter()
            .map(|(proto, port)| PortKey::new(proto.number(), *port))
            .collect();
        for port in &ports {
            self.ports
                .insert(port, PortInfo::default(), 0)
                .map_err(map_error("adding a port"))?;
        }
        self.config
            .set(0, nat, 0)
            .map_err(map_error("writing the NAT configuration"))?;

        let stale_peers: Vec<u32> = self
            .peers
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !peers.contains(k))
            .collect();
        for peer in stale_peers {
            self.peers
                .remove(&peer)
                .map_err(map_error("removing a peer"))?;
        }
        let stale_ports: Vec<PortKey> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ports.contains(k))
            .collect();
        for port in stale_ports {
            self.ports
                .remove(&port)
                .map_err(map_error("removing a port"))?;
        }
        Ok(())
    }

    /// The packet counters, summed over CPUs.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] when the per-CPU array cannot be read.
    pub fn counters(&self) -> Result<Counters, Error> {
        let read = |counter: Counter| -> Result<u64, Error> {
            let values = self
                .counters
                .get(&counter.index(), 0)
                .map_err(|e| Error::Map {
                    what: format!("reading counter {counter:?}"),
                    source: Box::new(e),
                })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(Counters {
            ingress_rewritten: read(Counter::IngressRewritten)?,
            egress_rewritten: read(Counter::EgressRewritten)?,
            icmp_error_rewritten: read(Counter::IcmpErrorRewritten)?,
            dropped_not_allowed: read(Counter::DroppedNotAllowed)?,
            errors: read(Counter::Errors)?,
        })
    }
}

impl Config {
    /// Checks that the maps can hold this configuration (S and N set and distinct, 1 to
    /// [`common::MAX_PEERS`] peers, at most [`common::MAX_PORTS`] ports, a non-empty NodePort
    /// range without port 0).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the problem.
    pub fn validate(&self) -> Result<(), Error> {
        validate(self)
    }
}

/// [`Config::validate`].
pub(super) fn validate(config: &Config) -> Result<(), Error> {
    let unspecified = |a: Ipv4Addr| a.is_unspecified();
    if unspecified(config.host_addr) || unspecified(config.node_addr) {
        return Err(Error::Config("S and N must not be 0.0.0.0".into()));
    }
    if config.host_addr == config.node_addr {
        return Err(Error::Config("S and N must differ".into()));
    }
    if config.peers.is_empty() || config.peers.len() > common::MAX_PEERS as usize {
        return Err(Error::Config(format!(
            "1 to {} peers, not {}",
            common::MAX_PEERS,
            config.peers.len()
        )));
    }
    if config.ports.len() > common::MAX_PORTS as usize {
        return Err(Error::Config(format!(
            "at most {} ports, not {}",
            common::MAX_PORTS,
            config.ports.len()
        )));
    }
    if let Some(range) = &config.nodeports
        && (range.is_empty() || *range.start() == 0)
    {
        return Err(Error::Config(format!("bad NodePort range {range:?}")));
    }
    Ok(())
}
