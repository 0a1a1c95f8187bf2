//! CHECK: the attachment is still as ADD left it: allocation recorded and listed in
//! `prevResult`; pod interface up with its /32 and routes; host end up with the gateway and the
//! route to the pod; host ports mapped.

use std::os::fd::AsFd as _;

use super::host_rtnl;
use crate::config::NetConf;
use crate::env::Invocation;
use crate::error::{Error, Result};
use crate::ipam::Store;
use crate::nat::Nat;
use crate::netlink::netns;
use crate::netlink::route::Rtnl;

/// Runs CHECK.
pub fn run(inv: &Invocation, conf: &NetConf) -> Result<()> {
    let fail = |msg: String| Err(Error::CheckFailed(msg));
    let Some(prev) = &conf.prev_result else {
        return Err(Error::InvalidConfig(
            "CHECK needs prevResult (the result of ADD); the runtime must pass it".into(),
        ));
    };
    let netns_path = inv
        .netns
        .as_deref()
        .expect("CNI_NETNS is checked for CHECK");
    let netns = netns::open(netns_path)?;
    let state = Store::new(&conf.data_dir, &conf.name)?.read()?;
    let Some(alloc) = state.find(&inv.container_id, &inv.ifname) else {
        return fail(format!(
            "no address is allocated to container {} interface {}",
            inv.container_id, inv.ifname
        ));
    };
    let address = format!("{}/32", alloc.ip);
    let listed = prev.ips.iter().any(|ip| {
        ip.address == address
            && ip
                .interface
                .and_then(|i| prev.interfaces.get(i))
                .is_some_and(|iface| iface.name == inv.ifname)
    });
    if !listed {
        return fail(format!(
            "prevResult does not list {address} on interface {}",
            inv.ifname
        ));
    }

    let nl = |what: &str| {
        let what = what.to_owned();
        move |e| Error::netlink(what, e)
    };
    let mut pod = Rtnl::open_in(netns.as_fd()).map_err(nl(
        "opening an rtnetlink socket in the container's namespace",
    ))?;
    let Some(link) = pod
        .link(&inv.ifname)
        .map_err(nl("looking up the pod interface"))?
    else {
        return fail(format!("{} is missing in the container", inv.ifname));
    };
    if !link.up {
        return fail(format!("{} is down in the container", inv.ifname));
    }
    let addrs = pod
        .addresses(link.index)
        .map_err(nl("listing pod addresses"))?;
    if !addrs.contains(&(alloc.ip, 32)) {
        return fail(format!("{} lacks {address} in the container", inv.ifname));
    }
    let routes = pod.routes().map_err(nl("listing pod routes"))?;
    let has = |dst: std::net::Ipv4Addr, prefix: u8, gw: Option<std::net::Ipv4Addr>| {
        routes
            .iter()
            .any(|r| r.dst == dst && r.prefix == prefix && r.oif == link.index && r.gateway == gw)
    };
    if !has(conf.gateway, 32, None) {
        return fail(format!(
            "the container lacks the route to the gateway {}",
            conf.gateway
        ));
    }
    for dst in &conf.routes {
        if !has(dst.network(), dst.prefix_len(), Some(conf.gateway)) {
            return fail(format!(
                "the container lacks route {dst} via {}",
                conf.gateway
            ));
        }
    }

    let mut host = host_rtnl()?;
    let Some(host_link) = host
        .link(&alloc.host_veth)
        .map_err(nl("looking up the host veth"))?
    else {
        return fail(format!("host veth {} is missing", alloc.host_veth));
    };
    if !host_link.up {
        return fail(format!("host veth {} is down", alloc.host_veth));
    }
    let host_routes = host.routes().map_err(nl("listing host routes"))?;
    if !host_routes
        .iter()
        .any(|r| r.dst == alloc.ip && r.prefix == 32 && r.oif == host_link.index)
    {
        return fail(format!(
            "the host lacks the route {address} dev {}",
            alloc.host_veth
        ));
    }
    if !alloc.port_mappings.is_empty() {
        Nat::open(conf)?.check_ports(alloc)?;
    }
    Ok(())
}
