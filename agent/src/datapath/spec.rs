//! What the host datapath should look like: `spec.datapath` of a NodeConfig, or the flags of
//! `satellite-agent datapath up`. Written as [`RawDatapathSpec`] (serde, shape only), parsed
//! into [`DatapathSpec`] (every field valid) with every problem at once, before anything on
//! the host is touched. The record of an installed datapath stores the same form.
//!
//! ```yaml
//! datapath:
//!   peers: [203.0.113.7]            # the proxy's address as this host sees it (required)
//!   uplink: eth0                    # default: the interface of the IPv4 default route
//!   hostAddress: 10.19.4.2          # S; default: the uplink's primary IPv4 address
//!   allowPorts: ["10250/tcp", "30000-32767"]   # the default; a range is the NodePort range
//!   addressDevice: lo               # where N goes as a /32
//!   attachMode: auto                # auto (TCX on ≥ 6.6, else netlink), tcx, netlink
//!   bpffsDir: /sys/fs/bpf/satellite # pins go to <bpffsDir>/<uplink>
//!   stateDir: /run/satellite        # the record of what was installed
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use satellite_agent_common as common;
use serde::{Deserialize, Serialize};

use super::{AttachMode, Config};
use crate::config::Problems;
use crate::parse::addr::unicast_v4;
use crate::parse::ifname::IfName;
use crate::parse::text::absolute;

pub use crate::config::Problem;
pub use crate::parse::ports::AllowPorts;

/// kubelet's port: the default protected port.
pub const KUBELET_PORT: u16 = 10250;
/// Kubernetes' default NodePort range (`--service-node-port-range`).
pub const DEFAULT_NODEPORTS: &str = "30000-32767";

/// `spec.datapath` as written (see the module doc for the YAML form). Every field has a
/// default except `peers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RawDatapathSpec {
    /// The proxies' addresses as this host sees them.
    pub peers: Vec<Ipv4Addr>,
    /// The uplink's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// S.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_address: Option<Ipv4Addr>,
    /// Protected ports: `PORT[/tcp|/udp]` or one `FIRST-LAST` range.
    pub allow_ports: Vec<String>,
    /// The device N goes on.
    pub address_device: String,
    /// How the tc programs are attached.
    pub attach_mode: AttachMode,
    /// bpffs directory for the pins.
    pub bpffs_dir: PathBuf,
    /// Where the record is kept.
    pub state_dir: PathBuf,
}

impl Default for RawDatapathSpec {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            uplink: None,
            host_address: None,
            allow_ports: vec![format!("{KUBELET_PORT}/tcp"), DEFAULT_NODEPORTS.into()],
            address_device: "lo".into(),
            attach_mode: AttachMode::Auto,
            bpffs_dir: "/sys/fs/bpf/satellite".into(),
            state_dir: "/run/satellite".into(),
        }
    }
}

/// Valid host datapath settings, parsed from a [`RawDatapathSpec`] (and serialized as one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawDatapathSpec", into = "RawDatapathSpec")]
pub struct DatapathSpec {
    /// The proxies' addresses as this host sees them (their public addresses after any
    /// provider NAT): traffic with them is translated, and only they may reach the protected
    /// ports over the uplink. 1 to 64, unicast, each once.
    pub peers: Vec<Ipv4Addr>,
    /// The interface the proxy's traffic arrives on; `None`: the interface of the IPv4
    /// default route.
    pub uplink: Option<IfName>,
    /// S, the host's own (unicast) address on the uplink; `None`: the uplink's primary IPv4
    /// address (followed when it changes).
    pub host_address: Option<Ipv4Addr>,
    /// Protected ports (default 10250/tcp and the NodePort range 30000-32767).
    pub allow_ports: AllowPorts,
    /// The device N is put on as a /32 (`lo`).
    pub address_device: IfName,
    /// How the tc programs are attached.
    pub attach_mode: AttachMode,
    /// bpffs directory for the pins (absolute); the uplink's pins go in `<bpffsDir>/<uplink>`.
    pub bpffs_dir: PathBuf,
    /// Where the record of what was installed is kept (absolute;
    /// `<stateDir>/datapath/<uplink>.json`); a tmpfs such as `/run`, since nothing installed
    /// survives a reboot.
    pub state_dir: PathBuf,
}

/// The problems of a [`RawDatapathSpec`] that does not parse (field names within
/// `spec.datapath`, e.g. `peers[1]`); displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblems(pub Vec<Problem>);

impl fmt::Display for SpecProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl TryFrom<RawDatapathSpec> for DatapathSpec {
    type Error = SpecProblems;

    /// Parses without a node IP (see [`DatapathSpec::parse`]).
    fn try_from(raw: RawDatapathSpec) -> Result<Self, SpecProblems> {
        DatapathSpec::parse(raw, None).map_err(SpecProblems)
    }
}

impl From<DatapathSpec> for RawDatapathSpec {
    fn from(spec: DatapathSpec) -> Self {
        RawDatapathSpec {
            peers: spec.peers,
            uplink: spec.uplink.map(|u| u.as_str().to_owned()),
            host_address: spec.host_address,
            allow_ports: spec.allow_ports.entries(),
            address_device: spec.address_device.as_str().to_owned(),
            attach_mode: spec.attach_mode,
            bpffs_dir: spec.bpffs_dir,
            state_dir: spec.state_dir,
        }
    }
}

impl DatapathSpec {
    /// Parses `raw` for node IP `node_ip` (`None` when not known yet, e.g. an ENI's address
    /// before `join`: the checks against N then run in [`Self::node_ip_problems`]).
    ///
    /// # Errors
    ///
    /// Every problem, in field order, with its camelCase field name within `spec.datapath`.
    pub fn parse(raw: RawDatapathSpec, node_ip: Option<Ipv4Addr>) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        if raw.peers.is_empty() || raw.peers.len() > common::MAX_PEERS as usize {
            p.add(
                "peers",
                format!(
                    "list 1 to {} proxy addresses (as this host sees them), not {}",
                    common::MAX_PEERS,
                    raw.peers.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, peer) in raw.peers.iter().enumerate() {
            let check = peer_problem(*peer, node_ip).and_then(|()| {
                if seen.insert(*peer) {
                    Ok(())
                } else {
                    Err(format!("{peer} is listed twice"))
                }
            });
            p.check(format!("peers[{i}]"), check);
        }
        if let Some(node_ip) = node_ip {
            p.check("nodeIp", unicast_v4("the node IP", node_ip));
        }
        let uplink = match &raw.uplink {
            Some(uplink) => p.check("uplink", IfName::new(uplink)).map(Some),
            None => Some(None),
        };
        let address_device = p.check("addressDevice", IfName::new(&raw.address_device));
        if let Some(host) = raw.host_address {
            p.check("hostAddress", host_problem(host, node_ip));
        }
        let allow_ports = p.check("allowPorts", AllowPorts::parse(&raw.allow_ports));
        p.check("bpffsDir", absolute(&raw.bpffs_dir));
        p.check("stateDir", absolute(&raw.state_dir));
        let problems = p.into_vec();
        match (uplink, address_device, allow_ports) {
            (Some(uplink), Some(address_device), Some(allow_ports)) if problems.is_empty() => {
                Ok(DatapathSpec {
                    peers: raw.peers,
                    uplink,
                    host_address: raw.host_address,
                    allow_ports,
                    address_device,
                    attach_mode: raw.attach_mode,
                    bpffs_dir: raw.bpffs_dir,
                    state_dir: raw.state_dir,
                })
            }
            _ => Err(problems),
        }
    }

    /// The problems of using this spec with node IP `node_ip`: N must be unicast, and neither
    /// a peer nor the host address. Empty when they fit.
    #[must_use]
    pub fn node_ip_problems(&self, node_ip: Ipv4Addr) -> Vec<Problem> {
        let mut p = Problems::default();
        for (i, peer) in self.peers.iter().enumerate() {
            p.check(format!("peers[{i}]"), peer_problem(*peer, Some(node_ip)));
        }
        p.check("nodeIp", unicast_v4("the node IP", node_ip));
        if let Some(host) = self.host_address {
            p.check("hostAddress", host_problem(host, Some(node_ip)));
        }
        p.into_vec()
    }

    /// The tc programs' configuration for node IP `node_ip` and host address `host_address`.
    #[must_use]
    pub fn nat_config(&self, node_ip: Ipv4Addr, host_address: Ipv4Addr) -> Config {
        Config {
            host_addr: host_address,
            node_addr: node_ip,
            peers: self.peers.iter().copied().collect(),
            ports: self.allow_ports.ports.clone(),
            nodeports: self.allow_ports.nodeports.clone(),
        }
    }
}

/// A peer must be unicast and not the node IP.
fn peer_problem(peer: Ipv4Addr, node_ip: Option<Ipv4Addr>) -> Result<(), String> {
    unicast_v4("a peer", peer)?;
    if Some(peer) == node_ip {
        return Err(format!(
            "{peer} is the node IP itself; list the proxy's address"
        ));
    }
    Ok(())
}

/// S must be unicast and differ from N.
fn host_problem(host: Ipv4Addr, node_ip: Option<Ipv4Addr>) -> Result<(), String> {
    unicast_v4("the host address", host)?;
    if Some(host) == node_ip {
        return Err(format!("{host} is the node IP; S and N must differ"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Protocol;

    const N: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 50);

    fn spec(peers: &[[u8; 4]], ports: &[&str]) -> RawDatapathSpec {
        RawDatapathSpec {
            peers: peers.iter().map(|p| Ipv4Addr::from(*p)).collect(),
            allow_ports: ports.iter().map(|p| (*p).to_owned()).collect(),
            ..RawDatapathSpec::default()
        }
    }

    fn problems(raw: RawDatapathSpec) -> Vec<Problem> {
        DatapathSpec::parse(raw, Some(N)).err().unwrap_or_default()
    }

    #[test]
    fn default_ports_are_kubelet_and_the_nodeport_range() {
        let raw = RawDatapathSpec {
            peers: vec![Ipv4Addr::new(198, 18, 20, 1)],
            ..RawDatapathSpec::default()
        };
        let parsed = DatapathSpec::parse(raw, None).unwrap().allow_ports;
        assert_eq!(
            parsed.ports,
            BTreeSet::from([(Protocol::Tcp, KUBELET_PORT)])
        );
        assert_eq!(parsed.nodeports, Some(30000..=32767));
    }

    #[test]
    fn ports_parse_with_protocols_and_one_range() {
        let parsed = DatapathSpec::parse(
            spec(
                &[[198, 18, 20, 1]],
                &["10250", "53/udp", "443/tcp", "30000-30100"],
            ),
            Some(N),
        )
        .unwrap()
        .allow_ports;
        assert_eq!(
            parsed.ports,
            BTreeSet::from([
                (Protocol::Tcp, 10250),
                (Protocol::Udp, 53),
                (Protocol::Tcp, 443)
            ])
        );
        assert_eq!(parsed.nodeports, Some(30000..=30100));
    }

    #[test]
    fn every_bad_value_is_reported_with_its_field() {
        let mut bad = spec(
            &[
                [198, 18, 20, 1],
                [198, 18, 20, 1],
                [127, 0, 0, 1],
                [198, 18, 10, 50],
            ],
            &["10250/sctp"],
        );
        bad.uplink = Some("a-name-far-too-long".into());
        bad.address_device = String::new();
        bad.host_address = Some(N);
        bad.state_dir = "run".into();
        let fields: Vec<String> = problems(bad).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "peers[1]",
                "peers[2]",
                "peers[3]",
                "uplink",
                "addressDevice",
                "hostAddress",
                "allowPorts",
                "stateDir"
            ]
        );
        assert!(problems(spec(&[], &[])).iter().any(|p| p.field == "peers"));
        for ports in [
            &["0"][..],
            &["1-2", "3-4"],
            &["9-8"],
            &["x/tcp"],
            &["70000"],
        ] {
            assert!(
                !problems(spec(&[[198, 18, 20, 1]], ports)).is_empty(),
                "{ports:?} accepted"
            );
        }
        assert!(problems(spec(&[[198, 18, 20, 1]], &["10250"])).is_empty());
    }

    #[test]
    fn the_node_ip_is_checked_also_after_parsing() {
        let parsed = DatapathSpec::parse(spec(&[[198, 18, 10, 50]], &["10250"]), None).unwrap();
        let fields: Vec<String> = parsed
            .node_ip_problems(N)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["peers[0]"]);
        assert!(
            parsed
                .node_ip_problems(Ipv4Addr::new(198, 18, 10, 51))
                .is_empty()
        );
    }

    #[test]
    fn the_record_form_round_trips() {
        let raw = spec(&[[198, 18, 20, 1]], &["10250", "30000-30100"]);
        let parsed = DatapathSpec::parse(raw, None).unwrap();
        let json = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            json["allowPorts"],
            serde_json::json!(["10250/tcp", "30000-30100"])
        );
        let back: DatapathSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, parsed);
        let bad = serde_json::json!({"peers": []});
        let e = serde_json::from_value::<DatapathSpec>(bad).unwrap_err();
        assert!(e.to_string().contains("peers: list 1 to"), "{e}");
    }
}
