//! STATUS (1.1.0): whether ADD can succeed now. 50 when the state directory is unusable or the
//! subnet is full; 51 when the configured uplink is missing (pods would have no egress).

use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::ipam::Store;

use super::host_rtnl;

/// Runs STATUS.
pub fn run(conf: &NetConf) -> Result<()> {
    let store =
        Store::new(&conf.data_dir, &conf.name).map_err(|e| Error::NotAvailable(e.to_string()))?;
    let locked = store
        .lock()
        .map_err(|e| Error::NotAvailable(format!("the allocation store is unusable: {e}")))?;
    locked
        .state
        .next_free(conf.subnet, conf.gateway)
        .map_err(|e| Error::NotAvailable(e.to_string()))?;
    drop(locked);
    if let Some(uplink) = &conf.uplink {
        let mut host = host_rtnl().map_err(|e| Error::NotAvailable(e.to_string()))?;
        let present = host
            .link(uplink)
            .map_err(|e| Error::NotAvailable(format!("looking up uplink {uplink}: {e}")))?;
        if present.is_none() {
            return Err(Error::LimitedConnectivity(format!(
                "uplink {uplink} does not exist: pods cannot reach outside the host"
            )));
        }
    }
    Ok(())
}
