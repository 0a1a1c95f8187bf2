//! Making the host match a [`Record`]: [`up`] (plan, write the record, apply, undo on
//! failure) and [`reconcile`] (the reconcile loop's step: follow a renumbered uplink, then
//! apply). Separate because it is the only part that adds things to the host.

use std::net::Ipv4Addr;

use aya::programs::TcAttachType;

use super::error::netlink;
use super::plan::plan;
use super::record::{Record, lock, read_record, remove_record, write_record};
use super::teardown::teardown;
use super::{HostError, ROUTE_PROTOCOL, host_route};
use crate::datapath::net::Netlink;
use crate::datapath::spec::DatapathSpec;
use crate::datapath::{self, AttachMode, Datapath};

/// Installs the datapath for node IP `node_ip` (see the module doc); a second `up` with the
/// same settings changes nothing and adopts the pinned programs. Takes the state lock.
///
/// # Errors
///
/// As [`plan`] (nothing changed), then [`HostError::Netlink`] / [`HostError::Datapath`] /
/// [`HostError::State`], after removing what this call had added.
pub async fn up(node_ip: Ipv4Addr, spec: &DatapathSpec) -> Result<Record, HostError> {
    let net = Netlink::open().map_err(netlink("opening an rtnetlink socket"))?;
    let _lock = lock(&spec.state_dir)?;
    let mut record = plan(&net, node_ip, spec).await?;
    let bpffs = record.spec.bpffs_dir.clone();
    record.bpffs_dir_created = !bpffs.exists();
    std::fs::create_dir_all(&bpffs).map_err(|source| HostError::State {
        what: "creating",
        path: bpffs.clone(),
        source,
    })?;
    if let Err(e) = datapath::check_bpffs(&bpffs) {
        if record.bpffs_dir_created {
            let _ = std::fs::remove_dir(&bpffs);
        }
        return Err(match e {
            datapath::Error::NotBpffs(_) => HostError::Host(format!(
                "{e}; or point bpffsDir (--bpffs-dir) at a directory on one"
            )),
            e => e.into(),
        });
    }
    // What an earlier `up` of this uplink owns stays owned.
    if let Some(earlier) = read_record(&spec.state_dir, Some(&record.uplink))? {
        record.address_added |= earlier.address_added && earlier.node_ip == node_ip;
        record.clsact_added |= earlier.clsact_added;
        record.bpffs_dir_created |= earlier.bpffs_dir_created;
        for route in earlier.routes {
            if !record.routes.contains(&route) && spec.peers.contains(&route.peer) {
                record.routes.push(route);
            }
        }
    }
    write_record(&record)?;
    match apply(&net, &record).await {
        Ok(_) => Ok(record),
        Err(e) => {
            tracing::warn!(error = %crate::error::Report(&e), "datapath up failed; removing what it added");
            if let Err(undo) = teardown(&net, &record).await {
                tracing::warn!(error = %undo, "removing it failed too; run `satellite-agent datapath down`");
            } else {
                let _ = remove_record(&record);
            }
            Err(e)
        }
    }
}

/// Makes the host match `record`: adds what is missing, (re)attaches the programs when they
/// are not running, rewrites the maps. Returns what had to be restored (empty when nothing
/// was missing).
async fn apply(net: &Netlink, record: &Record) -> Result<Vec<String>, HostError> {
    let mut restored = Vec::new();
    let device = record.spec.address_device.as_str();
    let device_index = net
        .link_index(device)
        .await
        .map_err(netlink(format!("looking up {device}")))?
        .ok_or_else(|| HostError::Host(format!("address device {device} does not exist")))?;
    let present = net
        .addresses(device_index)
        .await
        .map_err(netlink(format!("listing the addresses of {device}")))?;
    if !present.iter().any(|a| a.ip == record.node_ip) {
        match net.add_address(device_index, record.node_ip, 32).await {
            Ok(()) => restored.push(format!("{}/32 on {device}", record.node_ip)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(netlink(format!("adding {}/32 to {device}", record.node_ip))(e)),
        }
    }
    let uplink_index = net
        .link_index(&record.uplink)
        .await
        .map_err(netlink(format!("looking up {}", record.uplink)))?
        .ok_or_else(|| HostError::Host(format!("uplink {} does not exist", record.uplink)))?;
    let main = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    for route in &record.routes {
        if host_route(&main, route.peer).is_some() {
            continue;
        }
        match net
            .add_host_route(route.peer, route.gateway, uplink_index, ROUTE_PROTOCOL)
            .await
        {
            Ok(()) => restored.push(format!("route {}/32 dev {}", route.peer, record.uplink)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(netlink(format!(
                    "adding route {}/32 dev {}",
                    route.peer, record.uplink
                ))(e));
            }
        }
    }
    let config = record.nat_config();
    if attached(net, record, uplink_index).await? {
        if let Some(mut datapath) = Datapath::open(&record.uplink, &record.pin_dir)? {
            datapath.set_config(&config)?;
        }
    } else {
        // Netlink filters are re-attached from the pinned programs (install adopts them). A
        // TCX link pinned but detached (its interface was deleted) cannot be re-attached:
        // start afresh, the counters from zero.
        if record.mode == AttachMode::Tcx && record.pin_dir.exists() {
            let _ = datapath::remove(&record.uplink, &record.pin_dir);
        }
        Datapath::install(&record.uplink, &record.pin_dir, record.mode, &config)?;
        restored.push(format!(
            "tc programs on {} ({:?})",
            record.uplink, record.mode
        ));
    }
    Ok(restored)
}

/// Whether both pinned programs are attached to the uplink (index `uplink_index`) in the
/// record's mode.
async fn attached(net: &Netlink, record: &Record, uplink_index: u32) -> Result<bool, HostError> {
    let Some((ingress, egress)) = datapath::pinned_program_ids(&record.pin_dir) else {
        return Ok(false);
    };
    let [on_ingress, on_egress] = attached_ids(net, record, uplink_index).await?;
    Ok(on_ingress.contains(&ingress) && on_egress.contains(&egress))
}

/// The ids of the programs attached to the uplink's `[ingress, egress]` hooks in the record's
/// mode.
pub(super) async fn attached_ids(
    net: &Netlink,
    record: &Record,
    uplink_index: u32,
) -> Result<[Vec<u32>; 2], HostError> {
    if record.mode == AttachMode::Tcx {
        Ok([
            datapath::tcx_program_ids(&record.uplink, TcAttachType::Ingress)?,
            datapath::tcx_program_ids(&record.uplink, TcAttachType::Egress)?,
        ])
    } else {
        let what = format!("listing the tc filters of {}", record.uplink);
        Ok([
            net.bpf_filter_ids(uplink_index, true)
                .await
                .map_err(netlink(what.clone()))?,
            net.bpf_filter_ids(uplink_index, false)
                .await
                .map_err(netlink(what))?,
        ])
    }
}

/// Keeps the host as `record` says (the reconcile loop's step): S followed when it was not
/// given and the uplink's primary address changed, then `apply` (as in [`up`]). Returns what
/// was restored or changed.
///
/// # Errors
///
/// As [`up`]'s apply step; the caller retries on the next event.
pub async fn reconcile(net: &Netlink, record: &mut Record) -> Result<Vec<String>, HostError> {
    let mut changed = Vec::new();
    if record.spec.host_address.is_none()
        && let Some(index) = net
            .link_index(&record.uplink)
            .await
            .map_err(netlink(format!("looking up {}", record.uplink)))?
        && let Some(primary) = net
            .addresses(index)
            .await
            .map_err(netlink(format!(
                "listing the addresses of {}",
                record.uplink
            )))?
            .first()
        && primary.ip != record.host_address
        && primary.ip != record.node_ip
    {
        changed.push(format!(
            "host address {} → {} (the uplink was renumbered)",
            record.host_address, primary.ip
        ));
        record.host_address = primary.ip;
        write_record(record)?;
    }
    changed.extend(apply(net, record).await?);
    Ok(changed)
}
