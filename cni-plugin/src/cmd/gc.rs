//! GC (1.1.0): release every allocation of this network whose (container ID, ifname) is not in
//! `cni.dev/valid-attachments`, with whatever ADD created for it (veth pair, host ports).

use tracing::{info, warn};

use super::{host_rtnl, teardown};
use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::ipam::Store;

/// Runs GC.
///
/// Errors: [`Error::InvalidConfig`] without `cni.dev/valid-attachments` (an absent list is
/// not taken to mean "nothing is valid": that would detach every pod).
pub fn run(conf: &NetConf) -> Result<()> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(Error::InvalidConfig(
            "GC needs \"cni.dev/valid-attachments\" (an empty list to release everything)".into(),
        ));
    };
    let store = Store::new(&conf.data_dir, &conf.name)?;
    let stale: Vec<_> = store
        .read()?
        .allocations
        .into_iter()
        .filter(|a| !valid.iter().any(|v| a.is(&v.container_id, &v.ifname)))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut host = host_rtnl()?;
    let mut released = Vec::new();
    let mut first_error = None;
    for alloc in &stale {
        match teardown(conf, &mut host, alloc) {
            Ok(()) => released.push(alloc),
            Err(e) => {
                warn!(container = %alloc.container_id, ifname = %alloc.ifname, error = %e, "GC could not remove this attachment; keeping its allocation");
                first_error.get_or_insert(e);
            }
        }
    }
    let mut locked = store.lock()?;
    // Only what is still recorded exactly as read: an ADD that reused a key meanwhile wins.
    locked.state.allocations.retain(|a| !released.contains(&a));
    locked.commit()?;
    for alloc in &released {
        info!(container = %alloc.container_id, ifname = %alloc.ifname, ip = %alloc.ip, "GC released a stale attachment");
    }
    first_error.map_or(Ok(()), Err)
}
