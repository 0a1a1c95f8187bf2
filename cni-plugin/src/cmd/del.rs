//! DEL: remove the host ports and the veth pair, then release the address. Idempotent: a
//! missing namespace, veth or allocation is success (SPEC.md: "Plugins should generally
//! complete a DEL action without error even if some resources are missing").

use tracing::info;

use super::{host_rtnl, host_veth_name, teardown};
use crate::config::NetConf;
use crate::env::Invocation;
use crate::error::Result;
use crate::ipam::{Allocation, Store};

/// Runs DEL.
pub fn run(inv: &Invocation, conf: &NetConf) -> Result<()> {
    let store = Store::new(&conf.data_dir, &conf.name)?;
    // Unlocked read: the file is replaced atomically, and the runtime does not run ADD and DEL
    // of one attachment concurrently.
    let recorded = store.read()?.find(&inv.container_id, &inv.ifname).cloned();
    // Without a record (never added, already deleted, or a crash before the record was
    // written) the deterministic name still finds a veth a crashed ADD may have left.
    let alloc = recorded.clone().unwrap_or_else(|| Allocation {
        ip: std::net::Ipv4Addr::UNSPECIFIED,
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
        host_veth: host_veth_name(&conf.name, &inv.container_id, &inv.ifname),
        port_mappings: Vec::new(),
    });
    let mut host = host_rtnl()?;
    teardown(conf, &mut host, &alloc)?;
    if recorded.is_some() {
        let mut locked = store.lock()?;
        if locked
            .state
            .remove(&inv.container_id, &inv.ifname)
            .is_some()
        {
            locked.commit()?;
        }
        info!(ip = %alloc.ip, "detached, address released");
    } else {
        info!("nothing recorded for this attachment; nothing left to release");
    }
    Ok(())
}
