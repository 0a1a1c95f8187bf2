//! The host side of the datapath: what `satellite-agent datapath up|down|status`, `run` and
//! `leave` install, check and remove.
//!
//! [`up`] installs, in this order, on the calling thread's network namespace:
//! 1. N as a /32 on the address device (`lo`), so kubelet accepts `--node-ip=N` and
//!    host-network pods can bind it (skipped, and not owned, when N is already there);
//! 2. a /32 route to each peer out of the uplink (`proto 211`, via the gateway the kernel
//!    would use), so replies from N to the proxy always leave where the egress program runs,
//!    whatever other routes (a VPN, a second NIC) say (skipped, and not owned, when a /32 route
//!    to the peer exists);
//! 3. the tc programs on the uplink ([`super::Datapath`]), pinned under `<bpffsDir>/<uplink>`.
//!
//! Everything is validated, and everything on the host it depends on is looked up, before
//! the first change. A [`Record`] of what is owned is written before the first change
//! (`<stateDir>/datapath/<uplink>.json`, atomically), so [`down`] removes exactly that, even
//! after a crash halfway; a failed `up` removes what it had added. Changes happen under an
//! exclusive lock (`<stateDir>/datapath/lock`), which the reconcile loop ([`super::watch`])
//! takes too.
//!
//! One file per mechanism: `record` (the [`Record`] of what is owned, and the state lock),
//! `plan` (checking settings and host, changing nothing), `apply` ([`up`] and the reconcile
//! step), `teardown` ([`down`]), `status` (reading the state back), `error` ([`HostError`]).

mod apply;
mod error;
mod plan;
mod record;
mod status;
mod teardown;

use std::net::Ipv4Addr;

use super::net::Route;

pub use apply::{reconcile, up};
pub use error::{HostError, TeardownFailure};
pub use plan::plan;
pub use record::{PeerRoute, Record, StateLock, lock, read_record, record_path};
pub use status::{ProgramStatus, RouteStatus, Status, status};
pub use teardown::{Removed, down};

/// `rtm_protocol` of the peer routes `up` adds (`ip route show proto 211`): how `down` and
/// the reconcile loop tell them from everyone else's.
pub const ROUTE_PROTOCOL: u8 = 211;

/// The /32 route to `peer` in `routes`, if any.
fn host_route(routes: &[Route], peer: Ipv4Addr) -> Option<&Route> {
    routes.iter().find(|r| r.dst == peer && r.prefix == 32)
}
