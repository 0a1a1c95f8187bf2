//! [`status`]: reads back what is in place against the [`Record`] (the node IP, the peer
//! routes, the programs and their statistics, the counters), changing nothing. Separate
//! because it is read-only and serves `satellite-agent datapath status`.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::programs::ProgramInfo;
use satellite_agent_common as common;
use serde::Serialize;

use super::apply::attached_ids;
use super::error::netlink;
use super::record::{Record, read_record};
use super::{HostError, host_route};
use crate::datapath::net::Netlink;
use crate::datapath::{Counters, Datapath};

/// One tc program's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramStatus {
    /// `ingress` or `egress`.
    pub hook: &'static str,
    /// The pinned program's id, `None` when not pinned.
    pub id: Option<u32>,
    /// Whether that program is attached to the uplink.
    pub attached: bool,
    /// Times it ran (counted while `kernel.bpf_stats_enabled` is 1).
    pub run_count: u64,
    /// Nanoseconds it ran in all (counted while `kernel.bpf_stats_enabled` is 1).
    pub run_time_ns: u64,
    /// Instructions the verifier processed.
    pub verified_instructions: Option<u32>,
    /// Size of its JIT-compiled code in bytes.
    pub jited_bytes: u32,
}

/// One peer route's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The peer.
    pub peer: Ipv4Addr,
    /// The next hop.
    pub gateway: Option<Ipv4Addr>,
    /// Whether satellite added it (and removes it on `down`).
    pub owned: bool,
    /// Whether a /32 route to the peer is in the main table.
    pub present: bool,
}

/// The datapath's state (`satellite-agent datapath status [--json]`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// What `up` recorded.
    pub record: Record,
    /// Whether the uplink exists.
    pub uplink_present: bool,
    /// Whether N is on the address device.
    pub node_ip_present: bool,
    /// The peer routes.
    pub routes: Vec<RouteStatus>,
    /// The tc programs.
    pub programs: Vec<ProgramStatus>,
    /// The packet counters, `None` when the maps are not pinned.
    pub counters: Option<Counters>,
}

impl Status {
    /// Whether everything `up` installed is in place.
    #[must_use]
    pub fn intact(&self) -> bool {
        self.uplink_present
            && self.node_ip_present
            && self.routes.iter().all(|r| r.present)
            && self.programs.iter().all(|p| p.attached)
    }
}

/// The state of the datapath on `uplink` (or the only uplink with a record); `None` when
/// nothing is installed. Reads only.
///
/// # Errors
///
/// [`HostError::State`], [`HostError::Netlink`], [`HostError::Datapath`].
pub async fn status(state_dir: &Path, uplink: Option<&str>) -> Result<Option<Status>, HostError> {
    let Some(record) = read_record(state_dir, uplink)? else {
        return Ok(None);
    };
    let net = Netlink::open().map_err(netlink("opening an rtnetlink socket"))?;
    let uplink_index = net
        .link_index(&record.uplink)
        .await
        .map_err(netlink(format!("looking up {}", record.uplink)))?;
    let device = record.spec.address_device.as_str();
    let node_ip_present = match net
        .link_index(device)
        .await
        .map_err(netlink(format!("looking up {device}")))?
    {
        Some(index) => net
            .addresses(index)
            .await
            .map_err(netlink(format!("listing the addresses of {device}")))?
            .iter()
            .any(|a| a.ip == record.node_ip),
        None => false,
    };
    let main = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    let routes = record
        .spec
        .peers
        .iter()
        .map(|peer| {
            let owned = record.routes.iter().find(|r| r.peer == *peer);
            let found = host_route(&main, *peer);
            RouteStatus {
                peer: *peer,
                gateway: owned.map_or_else(|| found.and_then(|r| r.gateway), |r| r.gateway),
                owned: owned.is_some(),
                // Routes not owned were never needed from us: the kernel's own choice stands.
                present: owned.is_none() || found.is_some(),
            }
        })
        .collect();
    let attached = match uplink_index {
        Some(index) => attached_ids(&net, &record, index).await?,
        None => [Vec::new(), Vec::new()],
    };
    let programs = [
        ("ingress", common::PROG_INGRESS),
        ("egress", common::PROG_EGRESS),
    ]
    .into_iter()
    .zip(attached)
    .map(|((hook, name), ids)| {
        let info = ProgramInfo::from_pin(record.pin_dir.join(name)).ok();
        ProgramStatus {
            hook,
            id: info.as_ref().map(ProgramInfo::id),
            attached: info.as_ref().is_some_and(|i| ids.contains(&i.id())),
            run_count: info.as_ref().map_or(0, ProgramInfo::run_count),
            run_time_ns: info.as_ref().map_or(0, |i| {
                u64::try_from(i.run_time().as_nanos()).unwrap_or(u64::MAX)
            }),
            verified_instructions: info
                .as_ref()
                .and_then(ProgramInfo::verified_instruction_count),
            jited_bytes: info.as_ref().map_or(0, ProgramInfo::size_jitted),
        }
    })
    .collect();
    let counters = Datapath::open(&record.uplink, &record.pin_dir)?
        .map(|d| d.counters())
        .transpose()?;
    Ok(Some(Status {
        uplink_present: uplink_index.is_some(),
        node_ip_present,
        routes,
        programs,
        counters,
        record,
    }))
}

impl fmt::Display for Status {
    /// The human-readable `datapath status`: one line per installed item, `MISSING` where it
    /// is gone.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self;
        let r = &status.record;
        let yes = |b: bool| if b { "present" } else { "MISSING" };
        writeln!(
            out,
            "uplink        {} ({}), host address {}",
            r.uplink,
            if status.uplink_present {
                "up"
            } else {
                "MISSING"
            },
            r.host_address
        )?;
        writeln!(
            out,
            "node IP       {}/32 on {}: {}{}",
            r.node_ip,
            r.spec.address_device,
            yes(status.node_ip_present),
            if r.address_added {
                ""
            } else {
                " (not ours: it was there before)"
            }
        )?;
        for route in &status.routes {
            writeln!(
                out,
                "peer          {}{}: {}",
                route.peer,
                match (route.owned, route.gateway) {
                    (true, Some(gw)) => format!(", route /32 via {gw} dev {}", r.uplink),
                    (true, None) => format!(", route /32 dev {}", r.uplink),
                    (false, _) => ", existing route".to_owned(),
                },
                yes(route.present)
            )?;
        }
        for program in &status.programs {
            writeln!(
                out,
                "program       {:<7} {} id {}: {}",
                program.hook,
                r.mode,
                program.id.map_or("-".to_owned(), |id| id.to_string()),
                if program.attached {
                    "attached"
                } else {
                    "NOT ATTACHED"
                }
            )?;
        }
        writeln!(out, "protected     {} (peers only)", r.spec.allow_ports)?;
        if let Some(c) = &status.counters {
            writeln!(
                out,
                "counters      ingress rewritten {}, egress rewritten {}, ICMP errors rewritten {}, \
             dropped {}, errors {}",
                c.ingress_rewritten,
                c.egress_rewritten,
                c.icmp_error_rewritten,
                c.dropped_not_allowed,
                c.errors
            )?;
        }
        Ok(())
    }
}
