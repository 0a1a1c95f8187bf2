//! [`plan`]: validates the settings and looks up everything on the host they depend on (the
//! uplink, S, the routes to the peers, what is already there and so not owned), changing
//! nothing. Separate because it is the all-or-nothing check before the first change.

use std::net::Ipv4Addr;

use super::error::netlink;
use super::record::{PeerRoute, RECORD_VERSION, Record};
use super::{HostError, ROUTE_PROTOCOL, host_route};
use crate::datapath::net::Netlink;
use crate::datapath::spec::DatapathSpec;
use crate::datapath::{self, AttachMode};

/// Checks `spec` for node IP `node_ip` and everything on the host it depends on, changing
/// nothing; the record `up` would write.
///
/// # Errors
///
/// [`HostError::Invalid`] (every problem), [`HostError::Host`], [`HostError::Netlink`].
pub async fn plan(
    net: &Netlink,
    node_ip: Ipv4Addr,
    spec: &DatapathSpec,
) -> Result<Record, HostError> {
    let problems = spec.node_ip_problems(node_ip);
    if !problems.is_empty() {
        return Err(HostError::Invalid(
            problems
                .into_iter()
                .map(|p| format!("  - {}: {}", p.field, p.message))
                .collect(),
        ));
    }
    if !datapath::object_embedded() {
        return Err(datapath::Error::NoObject.into());
    }
    let uplink = match &spec.uplink {
        Some(name) => name.as_str().to_owned(),
        None => default_route_link(net).await?,
    };
    let uplink_index = net
        .link_index(&uplink)
        .await
        .map_err(netlink(format!("looking up uplink {uplink}")))?
        .ok_or_else(|| {
            HostError::Host(format!(
                "uplink {uplink} does not exist; name the interface the proxy's traffic \
                 arrives on"
            ))
        })?;
    let device = spec.address_device.as_str();
    let device_index = net
        .link_index(device)
        .await
        .map_err(netlink(format!("looking up {device}")))?
        .ok_or_else(|| HostError::Host(format!("address device {device} does not exist")))?;
    let uplink_addresses = net
        .addresses(uplink_index)
        .await
        .map_err(netlink(format!("listing the addresses of {uplink}")))?;
    if uplink_addresses.iter().any(|a| a.ip == node_ip) {
        return Err(HostError::Host(format!(
            "the node IP {node_ip} is an address of the uplink {uplink}: the node IP is the \
             VPC address (on the proxy), not the host's own"
        )));
    }
    let host_address = match spec.host_address {
        Some(host) if uplink_addresses.iter().any(|a| a.ip == host) => host,
        Some(host) => {
            return Err(HostError::Host(format!(
                "hostAddress {host} is not an address of {uplink}; omit it to use {uplink}'s \
                 primary address"
            )));
        }
        None => {
            uplink_addresses
                .first()
                .ok_or_else(|| {
                    HostError::Host(format!(
                        "{uplink} has no IPv4 address; the proxy's traffic must arrive there"
                    ))
                })?
                .ip
        }
    };
    let mut routes = Vec::new();
    for peer in &spec.peers {
        let route = net
            .route_get(*peer, uplink_index)
            .await
            .map_err(netlink(format!("looking up the route to {peer}")))?
            .ok_or_else(|| {
                HostError::Host(format!("peer {peer} is not reachable through {uplink}"))
            })?;
        routes.push(PeerRoute {
            peer: *peer,
            gateway: route.gateway,
        });
    }
    let present = net
        .addresses(device_index)
        .await
        .map_err(netlink(format!("listing the addresses of {device}")))?;
    let main = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    // Owned: only what is not there yet (or is ours from an earlier `up`).
    let routes = routes
        .into_iter()
        .filter(|r| {
            host_route(&main, r.peer).is_none_or(|existing| existing.protocol == ROUTE_PROTOCOL)
        })
        .collect();
    let mode = spec.attach_mode.resolve();
    let clsact_added = mode == AttachMode::Netlink
        && net
            .clsact(uplink_index)
            .await
            .map_err(netlink(format!("listing the qdiscs of {uplink}")))?
            .is_none();
    let record = Record {
        version: RECORD_VERSION,
        node_ip,
        spec: spec.clone(),
        uplink: uplink.clone(),
        host_address,
        pin_dir: spec.bpffs_dir.join(&uplink),
        mode,
        clsact_added,
        bpffs_dir_created: false,
        address_added: !present.iter().any(|a| a.ip == node_ip && a.prefix == 32),
        routes,
    };
    record.nat_config().validate()?;
    Ok(record)
}

/// The uplink by default: the interface of the IPv4 default route.
async fn default_route_link(net: &Netlink) -> Result<String, HostError> {
    let routes = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    let oif = routes
        .iter()
        .find(|r| r.prefix == 0 && r.oif != 0)
        .map(|r| r.oif)
        .ok_or_else(|| {
            HostError::Host(
                "no IPv4 default route to find the uplink by; name it (--uplink, \
                 spec.datapath.uplink)"
                    .into(),
            )
        })?;
    net.link_name(oif)
        .await
        .map_err(netlink("looking up the default route's interface"))?
        .ok_or_else(|| HostError::Host("the default route's interface vanished".into()))
}
