//! The eBPF datapath: loads the tc programs of `agent-ebpf` (stateless 1:1 NAT between the
//! host's uplink address S and the node IP N for traffic with the proxy peers, plus the inbound
//! allow-list for the proxied ports), attaches them to the uplink, and keeps them running
//! across agent restarts.
//!
//! # Lifecycle
//!
//! [`Datapath::install`] loads the embedded object, fills the maps from a [`Config`], attaches
//! `sat_nat_egress` then `sat_nat_ingress` to the interface, and pins the maps, programs and
//! (TCX) links under a bpffs directory, so traffic keeps flowing when the agent exits or dies.
//! Called again with the same directory (the next agent start), it adopts what is pinned there
//! instead of attaching a second copy, and rewrites the maps with the new configuration.
//! [`Datapath::teardown`] detaches and unpins exactly what `install` created, and collects every
//! error instead of stopping at the first.
//!
//! Attach modes ([`AttachMode`]): TCX links (kernel ≥ 6.6; pinned, detached when unpinned) or
//! netlink `cls_bpf` filters on a `clsact` qdisc (older kernels; the filters stay until
//! removed, found again by program name). The `clsact` qdisc is left in place on teardown (it
//! may be shared with other users and is inert without filters).
//!
//! All interface names resolve in the calling thread's network namespace; map access does not
//! depend on it.
//!
//! # Modules
//!
//! One file per mechanism, as Cilium's loader (`pkg/datapath/loader/`) is split:
//! - `loader`: [`Datapath`] — install (fresh or adopting the pins), open;
//! - `attach`: [`AttachMode`], with `attach/tcx.rs` (TCX links) and `attach/netlink.rs`
//!   (`cls_bpf` filters on `clsact`);
//! - `pins`: the pin directory — names, opening, [`remove`], [`check_bpffs`];
//! - `maps`: what the maps hold — [`Config`], [`Protocol`], [`Counters`];
//! - `error`: [`Error`] and [`TeardownError`];
//! - [`cli`]: the `datapath` subcommands' flags and output;
//! - [`host`]: what `satellite-agent datapath up|down|status` installs on the host around the
//!   programs (the node IP, the peer routes, the record of what is owned).

mod attach;
pub mod cli;
mod error;
pub mod host;
mod loader;
mod maps;
pub mod net;
mod object;
mod pins;
pub mod spec;
pub mod watch;

pub use object::bytes as object_bytes;

pub use attach::AttachMode;
pub use attach::tcx::tcx_program_ids;
pub use error::{Error, TeardownError};
pub use loader::{Datapath, object_embedded};
pub use maps::{Config, Counters, Protocol};
pub use pins::{check_bpffs, pinned_program_ids, remove};
