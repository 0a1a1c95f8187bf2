//! ADD: reserve an address (persisted first), then a veth pair into the pod's namespace with a
//! /32 on the pod end, the gateway /32 on the host end, routes on both sides (ptp-style), IP
//! forwarding, masquerading and host ports.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::time::Instant;

use tracing::{info, warn};

use super::{host_rtnl, host_veth_name, teardown};
use crate::config::NetConf;
use crate::env::Invocation;
use crate::error::{Error, Result};
use crate::ipam::{Allocation, Store};
use crate::nat::Nat;
use crate::netlink::netns;
use crate::netlink::route::{Route, Rtnl};
use crate::result::{CniResult, Interface, IpConfig, RouteConfig};

/// MTU when neither `mtu` nor an uplink gives one.
const FALLBACK_MTU: u32 = 1500;

/// Runs ADD and returns the result to print.
pub fn run(inv: &Invocation, conf: &NetConf) -> Result<CniResult> {
    let start = Instant::now();
    let netns_path = inv.netns.as_deref().expect("CNI_NETNS is checked for ADD");
    let netns = netns::open(netns_path)?;
    let store = Store::new(&conf.data_dir, &conf.name)?;
    let alloc = reserve(inv, conf, &store)?;
    info!(ip = %alloc.ip, host_veth = %alloc.host_veth, "address reserved");
    match configure(inv, conf, &netns, &alloc) {
        Ok(result) => {
            info!(
                ip = %alloc.ip,
                elapsed_ms = format!("{:.2}", start.elapsed().as_secs_f64() * 1e3),
                "attached"
            );
            Ok(result)
        }
        Err(e) => {
            warn!(error = %e, "ADD failed; undoing it");
            if let Err(undo) = host_rtnl().and_then(|mut host| teardown(conf, &mut host, &alloc)) {
                warn!(error = %undo, "undoing ADD failed; GC or DEL will finish it");
                return Err(e);
            }
            if let Ok(mut locked) = store.lock()
                && locked
                    .state
                    .remove(&inv.container_id, &inv.ifname)
                    .is_some()
                && let Err(undo) = locked.commit()
            {
                warn!(error = %undo, "releasing the address failed; GC or DEL will finish it");
            }
            Err(e)
        }
    }
}

/// Reserves an address for the attachment (or returns its existing allocation, when a runtime
/// repeats ADD) and persists it, with the host ports, before anything is created.
fn reserve(inv: &Invocation, conf: &NetConf, store: &Store) -> Result<Allocation> {
    let mut locked = store.lock()?;
    let state = &mut locked.state;
    for mapping in &conf.port_mappings {
        let taken = state.allocations.iter().any(|a| {
            !a.is(&inv.container_id, &inv.ifname)
                && a.port_mappings.iter().any(|m| {
                    m.host_port == mapping.host_port
                        && m.protocol == mapping.protocol
                        && (m.host_ip.is_none()
                            || mapping.host_ip.is_none()
                            || m.host_ip == mapping.host_ip)
                })
        });
        if taken {
            return Err(Error::HostPortInUse {
                protocol: mapping.protocol.clone(),
                port: mapping.host_port,
            });
        }
    }
    let ip = match state.find(&inv.container_id, &inv.ifname) {
        Some(existing) => existing.ip,
        None => {
            let ip = state.next_free(conf.subnet, conf.gateway)?;
            state.last_reserved = Some(ip);
            ip
        }
    };
    state.remove(&inv.container_id, &inv.ifname);
    let alloc = Allocation {
        ip,
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
        host_veth: host_veth_name(&conf.name, &inv.container_id, &inv.ifname),
        port_mappings: conf.port_mappings.clone(),
    };
    state.allocations.push(alloc.clone());
    locked.commit()?;
    Ok(alloc)
}

fn configure(
    inv: &Invocation,
    conf: &NetConf,
    netns: &File,
    alloc: &Allocation,
) -> Result<CniResult> {
    let nl = |what: String| move |e| Error::netlink(what, e);
    let mut host = host_rtnl()?;
    let mtu = match conf.mtu {
        Some(mtu) => mtu,
        None => uplink_mtu(conf, &mut host)?,
    };
    // A host end left by a crashed or repeated ADD of this same attachment: its name is ours.
    if host
        .delete_link(&alloc.host_veth)
        .map_err(nl(format!("deleting stale veth {}", alloc.host_veth)))?
    {
        warn!(host_veth = %alloc.host_veth, "deleted a stale host veth of this attachment");
    }
    let mut pod = Rtnl::open_in(netns.as_fd()).map_err(nl(
        "opening an rtnetlink socket in the container's namespace".into(),
    ))?;
    if pod
        .link(&inv.ifname)
        .map_err(nl(format!("looking up {} in the container", inv.ifname)))?
        .is_some()
    {
        return Err(Error::InterfaceExists(inv.ifname.clone()));
    }
    host.create_veth(&alloc.host_veth, &inv.ifname, mtu, netns.as_fd())
        .map_err(nl(format!(
            "creating veth pair {} / {} (mtu {mtu})",
            alloc.host_veth, inv.ifname
        )))?;

    let host_link = host
        .link(&alloc.host_veth)
        .map_err(nl(format!("looking up {}", alloc.host_veth)))?
        .ok_or_else(|| gone(&alloc.host_veth))?;
    add_address(&mut host, host_link.index, conf.gateway).map_err(nl(format!(
        "adding {}/32 to {}",
        conf.gateway, alloc.host_veth
    )))?;
    host.add_route(&Route {
        dst: alloc.ip,
        prefix: 32,
        oif: host_link.index,
        gateway: None,
        src: None,
        link_scope: true,
    })
    .map_err(nl(format!(
        "adding route {}/32 dev {}",
        alloc.ip, alloc.host_veth
    )))?;

    let pod_link = pod
        .link(&inv.ifname)
        .map_err(nl(format!("looking up {} in the container", inv.ifname)))?
        .ok_or_else(|| gone(&inv.ifname))?;
    pod.set_up(pod_link.index)
        .map_err(nl(format!("setting {} up in the container", inv.ifname)))?;
    pod.add_address(pod_link.index, alloc.ip, 32)
        .map_err(nl(format!(
            "adding {}/32 to {} in the container",
            alloc.ip, inv.ifname
        )))?;
    pod.add_route(&Route {
        dst: conf.gateway,
        prefix: 32,
        oif: pod_link.index,
        gateway: None,
        src: Some(alloc.ip),
        link_scope: true,
    })
    .map_err(nl(format!(
        "adding route {}/32 dev {} in the container",
        conf.gateway, inv.ifname
    )))?;
    for dst in &conf.routes {
        pod.add_route(&Route {
            dst: dst.network(),
            prefix: dst.prefix_len(),
            oif: pod_link.index,
            gateway: Some(conf.gateway),
            src: Some(alloc.ip),
            link_scope: false,
        })
        .map_err(nl(format!(
            "adding route {dst} via {} in the container",
            conf.gateway
        )))?;
    }

    enable_ip_forwarding()?;
    // Also without masquerading or host ports: a table left by an earlier configuration (say,
    // with "masquerade": true) is brought up to date.
    Nat::open(conf)?.apply(alloc)?;

    let ours = CniResult {
        cni_version: String::new(),
        interfaces: vec![
            Interface {
                name: host_link.name,
                mac: host_link.mac,
                mtu: Some(mtu),
                ..Interface::default()
            },
            Interface {
                name: pod_link.name,
                mac: pod_link.mac,
                mtu: Some(mtu),
                sandbox: netns_display(inv),
                ..Interface::default()
            },
        ],
        ips: vec![IpConfig {
            version: None,
            address: format!("{}/32", alloc.ip),
            gateway: Some(conf.gateway.to_string()),
            interface: Some(1),
        }],
        routes: conf
            .routes
            .iter()
            .map(|dst| RouteConfig {
                dst: dst.to_string(),
                gw: Some(conf.gateway.to_string()),
                other: Default::default(),
            })
            .collect(),
        dns: conf.dns.clone(),
    };
    let result = match &conf.prev_result {
        Some(prev) => prev.clone().merge(ours),
        None => ours,
    };
    Ok(result.for_version(conf.version))
}

fn netns_display(inv: &Invocation) -> String {
    inv.netns
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn gone(name: &str) -> Error {
    Error::netlink(
        format!("{name} vanished right after it was created"),
        std::io::Error::from_raw_os_error(libc::ENODEV),
    )
}

/// Adds the gateway /32 to a host end; it is already there when a link is reused.
fn add_address(host: &mut Rtnl, index: u32, gateway: Ipv4Addr) -> std::io::Result<()> {
    match host.add_address(index, gateway, 32) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// The MTU of `uplink`, else of the interface holding the IPv4 default route, else 1500.
fn uplink_mtu(conf: &NetConf, host: &mut Rtnl) -> Result<u32> {
    if let Some(name) = &conf.uplink {
        return host
            .link(name)
            .map_err(|e| Error::netlink(format!("looking up uplink {name}"), e))?
            .map(|l| l.mtu)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "\"uplink\" {name:?} does not exist on this host; fix the name or omit it"
                ))
            });
    }
    let routes = host
        .routes()
        .map_err(|e| Error::netlink("listing routes to find the uplink", e))?;
    let Some(default) = routes.iter().find(|r| r.prefix == 0 && r.oif != 0) else {
        warn!(
            "no IPv4 default route and no \"mtu\" or \"uplink\" configured; using MTU {FALLBACK_MTU}"
        );
        return Ok(FALLBACK_MTU);
    };
    Ok(host
        .link_by_index(default.oif)
        .map_err(|e| Error::netlink("looking up the default route's interface", e))?
        .map_or(FALLBACK_MTU, |l| l.mtu))
}

/// Pods' traffic is routed through the host: `net.ipv4.ip_forward` must be 1 (in this network
/// namespace; the reference ptp plugin does the same).
fn enable_ip_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let current = std::fs::read(PATH).map_err(|e| Error::io(format!("reading {PATH}"), e))?;
    if current.first() != Some(&b'1') {
        std::fs::write(PATH, b"1").map_err(|e| Error::io(format!("enabling {PATH}"), e))?;
        info!("enabled net.ipv4.ip_forward");
    }
    Ok(())
}
