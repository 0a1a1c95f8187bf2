//! The CNI commands. Each validates first, then changes the host; ADD undoes its own partial
//! work when a later step fails.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;

use std::io;

use sha2::{Digest as _, Sha256};

use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::ipam::Allocation;
use crate::nat::Nat;
use crate::netlink::route::Rtnl;

/// The host end's name for an attachment: `sat` + 12 hex digits of
/// SHA-256(network name, container ID, ifname). Deterministic, so DEL and GC find it even when
/// the allocation record is all that is left; 48 bits make a collision between live pods on
/// one host negligible; 15 characters is the kernel's limit.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let digest = Sha256::new()
        .chain_update(network)
        .chain_update([0])
        .chain_update(container_id)
        .chain_update([0])
        .chain_update(ifname)
        .finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sat{hex}")
}

/// Removes what ADD created on the host for `alloc`: its host port mappings and its veth pair
/// (the pod end, its address and routes go with it). Missing pieces are not errors.
pub fn teardown(conf: &NetConf, host: &mut Rtnl, alloc: &Allocation) -> Result<()> {
    // The nfnetlink socket stays open until the veth is gone: closing it waits for the kernel
    // to free the deleted map elements after an RCU grace period, and deleting a veth waits
    // for grace periods too; closed in this order the two waits overlap instead of adding up.
    let nat = if alloc.port_mappings.is_empty() {
        None
    } else {
        let mut nat = Nat::open(conf)?;
        nat.unmap_ports(alloc)?;
        Some(nat)
    };
    host.delete_link(&alloc.host_veth)
        .map_err(|e| Error::netlink(format!("deleting veth {}", alloc.host_veth), e))?;
    drop(nat);
    Ok(())
}

/// An rtnetlink socket in the plugin's own (host) namespace.
pub fn host_rtnl() -> Result<Rtnl> {
    Rtnl::open().map_err(|e: io::Error| Error::netlink("opening an rtnetlink socket", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_and_distinct() {
        let a = host_veth_name("net", "c1", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("sat"));
        assert_eq!(a, host_veth_name("net", "c1", "eth0"));
        assert_ne!(a, host_veth_name("net", "c1", "eth1"));
        assert_ne!(a, host_veth_name("net2", "c1", "eth0"));
    }
}
