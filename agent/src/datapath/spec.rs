//! What the host datapath should look like: `spec.datapath` of a NodeConfig, or the flags of
//! `satellite-agent datapath up`, validated before anything on the host is touched.
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
use std::net::Ipv4Addr;
use std::path::PathBuf;

use satellite_agent_common as common;
use serde::{Deserialize, Serialize};

use super::{AttachMode, Config};
use crate::parse::addr::unicast_v4;
use crate::parse::ifname::IfName;

/// kubelet's port: the default protected port.
pub const KUBELET_PORT: u16 = 10250;
/// Kubernetes' default NodePort range (`--service-node-port-range`).
pub const DEFAULT_NODEPORTS: &str = "30000-32767";

/// The host datapath's settings (see the module doc for the YAML form). Every field has a
/// default except `peers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatapathSpec {
    /// The proxies' addresses as this host sees them (their public addresses after any
    /// provider NAT): traffic with them is translated, and only they may reach the protected
    /// ports over the uplink. 1 to 64.
    pub peers: Vec<Ipv4Addr>,
    /// The interface the proxy's traffic arrives on; `None`: the interface of the IPv4
    /// default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// S, the host's own address on the uplink; `None`: the uplink's primary IPv4 address
    /// (followed when it changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_address: Option<Ipv4Addr>,
    /// Protected ports: `PORT[/tcp|/udp]` (TCP when no protocol is given) or one range
    /// `FIRST-LAST` (the NodePort range, TCP and UDP). Default `["10250/tcp", "30000-32767"]`.
    pub allow_ports: Vec<String>,
    /// The device N is put on as a /32 (`lo`).
    pub address_device: String,
    /// How the tc programs are attached.
    pub attach_mode: AttachMode,
    /// bpffs directory for the pins; the uplink's pins go in `<bpffsDir>/<uplink>`.
    pub bpffs_dir: PathBuf,
    /// Where the record of what was installed is kept (`<stateDir>/datapath/<uplink>.json`);
    /// a tmpfs such as `/run`, since nothing installed survives a reboot.
    pub state_dir: PathBuf,
}

impl Default for DatapathSpec {
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

pub use crate::parse::ports::AllowPorts;

/// One invalid field: its camelCase name within `spec.datapath` (e.g. `peers[1]`) and what is
/// wrong.
pub use crate::config::Problem;

impl DatapathSpec {
    /// Every problem of this spec with node IP `node_ip` (`None` when not known yet, e.g. an
    /// ENI's address before `join`); empty when usable. Checks values only, nothing on the
    /// host.
    #[must_use]
    pub fn validate(&self, node_ip: Option<Ipv4Addr>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |field: String, message: String| problems.push(Problem { field, message });
        if self.peers.is_empty() || self.peers.len() > common::MAX_PEERS as usize {
            bad(
                "peers".into(),
                format!(
                    "list 1 to {} proxy addresses (as this host sees them), not {}",
                    common::MAX_PEERS,
                    self.peers.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if let Err(message) = unicast_v4("a peer", *peer) {
                bad(format!("peers[{i}]"), message);
            } else if Some(*peer) == node_ip {
                bad(
                    format!("peers[{i}]"),
                    format!("{peer} is the node IP itself; list the proxy's address"),
                );
            } else if !seen.insert(*peer) {
                bad(format!("peers[{i}]"), format!("{peer} is listed twice"));
            }
        }
        if let Some(node_ip) = node_ip
            && let Err(message) = unicast_v4("the node IP", node_ip)
        {
            bad("nodeIp".into(), message);
        }
        if let Some(uplink) = &self.uplink
            && let Err(message) = IfName::new(uplink)
        {
            bad("uplink".into(), message);
        }
        if let Err(message) = IfName::new(&self.address_device) {
            bad("addressDevice".into(), message);
        }
        if let Some(host) = self.host_address {
            if let Err(message) = unicast_v4("the host address", host) {
                bad("hostAddress".into(), message);
            } else if Some(host) == node_ip {
                bad(
                    "hostAddress".into(),
                    format!("{host} is the node IP; S and N must differ"),
                );
            }
        }
        if let Err(message) = self.allow_ports() {
            bad("allowPorts".into(), message);
        }
        for (field, path) in [("bpffsDir", &self.bpffs_dir), ("stateDir", &self.state_dir)] {
            if !path.is_absolute() {
                bad(
                    field.into(),
                    format!("{} must be an absolute path", path.display()),
                );
            }
        }
        problems
    }

    /// Parses [`Self::allow_ports`].
    ///
    /// # Errors
    ///
    /// A message naming the bad entry and the accepted forms.
    pub fn allow_ports(&self) -> Result<AllowPorts, String> {
        AllowPorts::parse(&self.allow_ports)
    }

    /// The tc programs' configuration for node IP `node_ip` and host address `host_address`.
    ///
    /// # Errors
    ///
    /// As [`Self::allow_ports`].
    pub fn nat_config(&self, node_ip: Ipv4Addr, host_address: Ipv4Addr) -> Result<Config, String> {
        let AllowPorts { ports, nodeports } = self.allow_ports()?;
        Ok(Config {
            host_addr: host_address,
            node_addr: node_ip,
            peers: self.peers.iter().copied().collect(),
            ports,
            nodeports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Protocol;

    const N: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 50);

    fn spec(peers: &[[u8; 4]], ports: &[&str]) -> DatapathSpec {
        DatapathSpec {
            peers: peers.iter().map(|p| Ipv4Addr::from(*p)).collect(),
            allow_ports: ports.iter().map(|p| (*p).to_owned()).collect(),
            ..DatapathSpec::default()
        }
    }

    #[test]
    fn default_ports_are_kubelet_and_the_nodeport_range() {
        let parsed = DatapathSpec::default().allow_ports().unwrap();
        assert_eq!(
            parsed.ports,
            BTreeSet::from([(Protocol::Tcp, KUBELET_PORT)])
        );
        assert_eq!(parsed.nodeports, Some(30000..=32767));
    }

    #[test]
    fn ports_parse_with_protocols_and_one_range() {
        let parsed = spec(
            &[[198, 18, 20, 1]],
            &["10250", "53/udp", "443/tcp", "30000-30100"],
        )
        .allow_ports()
        .unwrap();
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
        let fields: Vec<String> = bad.validate(Some(N)).into_iter().map(|p| p.field).collect();
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
        assert!(
            spec(&[], &[])
                .validate(Some(N))
                .iter()
                .any(|p| p.field == "peers")
        );
        for ports in [
            &["0"][..],
            &["1-2", "3-4"],
            &["9-8"],
            &["x/tcp"],
            &["70000"],
        ] {
            assert!(
                spec(&[[198, 18, 20, 1]], ports).allow_ports().is_err(),
                "{ports:?} accepted"
            );
        }
        assert!(
            spec(&[[198, 18, 20, 1]], &["10250"])
                .validate(Some(N))
                .is_empty()
        );
    }
}
