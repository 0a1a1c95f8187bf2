//! [`down`]: removes what `up` installed and owns, and only that — the tc programs, the
//! `clsact` qdisc `up` added, the owned peer routes, the owned node IP — attempting every step
//! and reporting every failure. Separate because it is the inverse of apply and must work
//! from the record alone (after a crash, after the agent is gone).

use std::io;
use std::path::Path;

use serde::Serialize;

use super::error::{TeardownFailure, netlink};
use super::record::{Record, lock, read_record, remove_record};
use super::{HostError, ROUTE_PROTOCOL, host_route};
use crate::datapath::net::Netlink;
use crate::datapath::{self, TeardownError};

/// What [`down`] removed.
#[derive(Debug, Default, Serialize)]
pub struct Removed {
    /// The uplink, `None` when nothing was installed.
    pub uplink: Option<String>,
    /// Each thing removed.
    pub items: Vec<String>,
}

/// Removes what `up` installed on `uplink` (or the only uplink with a record) and only that;
/// nothing installed is not an error. Takes the state lock; the record is removed last, after
/// which a running reconcile loop stops restoring.
///
/// # Errors
///
/// [`HostError::Teardown`] with every failed step (each is attempted), [`HostError::State`].
pub async fn down(state_dir: &Path, uplink: Option<&str>) -> Result<Removed, HostError> {
    let net = Netlink::open().map_err(netlink("opening an rtnetlink socket"))?;
    let _lock = lock(state_dir)?;
    let Some(record) = read_record(state_dir, uplink)? else {
        return Ok(Removed::default());
    };
    // Under the lock no reconcile loop runs; the record goes only once everything is removed,
    // so a failed `down` can be run again (and a running loop then stops restoring).
    let items = teardown(&net, &record).await?;
    remove_record(&record)?;
    Ok(Removed {
        uplink: Some(record.uplink),
        items,
    })
}

/// Removes the programs, the owned routes and the owned address of `record`, attempting every
/// step; [`HostError::Teardown`] lists every one that failed.
pub(super) async fn teardown(net: &Netlink, record: &Record) -> Result<Vec<String>, HostError> {
    let mut removed = Vec::new();
    let mut errors: TeardownError<TeardownFailure> = TeardownError::new("removing the datapath");
    let failed = |what: String, error| TeardownFailure::Netlink { what, error };
    if record.pin_dir.exists() {
        match datapath::remove(&record.uplink, &record.pin_dir) {
            Ok(()) => removed.push(format!("tc programs on {}", record.uplink)),
            Err(e) => errors.push(e),
        }
    }
    // The bpffs directory `up` created, when nothing else is pinned there.
    if record.bpffs_dir_created {
        let _ = std::fs::remove_dir(&record.spec.bpffs_dir);
    }
    if record.clsact_added {
        match remove_unused_clsact(net, &record.uplink).await {
            Ok(true) => removed.push(format!("clsact qdisc on {}", record.uplink)),
            Ok(false) => {}
            Err(e) => errors.push(failed(
                format!("removing the clsact qdisc of {}", record.uplink),
                e,
            )),
        }
    }
    match net.routes().await {
        Ok(main) => {
            for owned in &record.routes {
                let Some(route) = host_route(&main, owned.peer) else {
                    continue;
                };
                if route.protocol != ROUTE_PROTOCOL {
                    continue;
                }
                match net.delete_route(route).await {
                    Ok(()) => removed.push(format!("route {}/32", owned.peer)),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => errors.push(failed(format!("deleting route {}/32", owned.peer), e)),
                }
            }
        }
        Err(e) => errors.push(failed("listing the main routing table".into(), e)),
    }
    if record.address_added {
        let device = record.spec.address_device.as_str();
        match net.link_index(device).await {
            Ok(Some(index)) => match net.addresses(index).await {
                Ok(addresses) => {
                    for address in addresses
                        .iter()
                        .filter(|a| a.ip == record.node_ip && a.prefix == 32)
                    {
                        match net.delete_address(address).await {
                            Ok(()) => removed.push(format!("{}/32 on {device}", record.node_ip)),
                            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                            Err(e) => errors.push(failed(
                                format!("deleting {}/32 from {device}", record.node_ip),
                                e,
                            )),
                        }
                    }
                }
                Err(e) => {
                    errors.push(failed(format!("listing the addresses of {device}"), e));
                }
            },
            Ok(None) => {}
            Err(e) => errors.push(failed(format!("looking up {device}"), e)),
        }
    }
    errors.into_result(removed).map_err(HostError::Teardown)
}

/// Deletes `uplink`'s clsact qdisc when it holds no filter; whether it did.
async fn remove_unused_clsact(net: &Netlink, uplink: &str) -> io::Result<bool> {
    let Some(index) = net.link_index(uplink).await? else {
        return Ok(false);
    };
    let Some(qdisc) = net.clsact(index).await? else {
        return Ok(false);
    };
    if !net.filters(index, true).await?.is_empty() || !net.filters(index, false).await?.is_empty() {
        return Ok(false);
    }
    net.delete_qdisc(&qdisc).await?;
    Ok(true)
}
