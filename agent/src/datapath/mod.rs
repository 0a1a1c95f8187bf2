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

pub mod cli;
pub mod host;
pub mod net;
mod object;
pub mod spec;
pub mod watch;

pub use object::bytes as object_bytes;

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{self, NlOptions, SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, ProgramError, ProgramInfo};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfError};
use satellite_agent_common::{
    self as common, Counter, IPPROTO_TCP, IPPROTO_UDP, NatConfig, PeerInfo, PortInfo, PortKey,
};

/// Names of the maps, in pinning order.
const MAPS: [&str; 4] = [
    common::MAP_CONFIG,
    common::MAP_PEERS,
    common::MAP_PORTS,
    common::MAP_COUNTERS,
];
/// Pin name of the TCX ingress link.
const LINK_INGRESS: &str = "link_ingress";
/// Pin name of the TCX egress link.
const LINK_EGRESS: &str = "link_egress";
/// `statfs(2)` magic of bpffs (`BPF_FS_MAGIC`, include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Transport protocol of a protected port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    /// `tcp` or `udp`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the programs do: the NAT addresses, who the peers are, which ports are protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// S: the host's own address on the uplink (what the proxy connects to).
    pub host_addr: Ipv4Addr,
    /// N: the node IP (a VPC address, also configured locally, e.g. as a /32 on `lo`).
    pub node_addr: Ipv4Addr,
    /// The proxies: traffic with them is translated, and only they may reach the protected
    /// ports over the uplink. At most [`common::MAX_PEERS`].
    pub peers: BTreeSet<Ipv4Addr>,
    /// Protected (protocol, destination port) pairs, e.g. kubelet's (TCP, 10250). At most
    /// [`common::MAX_PORTS`].
    pub ports: BTreeSet<(Protocol, u16)>,
    /// Protected NodePort range (TCP and UDP), e.g. `30000..=32767`; `None` for none.
    pub nodeports: Option<RangeInclusive<u16>>,
}

/// How the programs are attached (`auto`, `tcx` or `netlink` in configuration files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX on kernels ≥ 6.6, netlink otherwise.
    #[default]
    Auto,
    /// TCX links (`BPF_LINK_TYPE_TCX`, kernel ≥ 6.6), pinned.
    Tcx,
    /// Netlink `cls_bpf` filters in direct-action mode on a `clsact` qdisc (kernel ≥ 4.5).
    Netlink,
}

impl AttachMode {
    /// The mode `Auto` stands for on this kernel (TCX on ≥ 6.6, else netlink); others as is.
    #[must_use]
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto
                if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) =>
            {
                Self::Tcx
            }
            Self::Auto => Self::Netlink,
            mode => mode,
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        })
    }
}

/// Packet counts summed over all CPUs (see [`Counter`] for what each one counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// [`Counter::IngressRewritten`].
    pub ingress_rewritten: u64,
    /// [`Counter::EgressRewritten`].
    pub egress_rewritten: u64,
    /// [`Counter::IcmpErrorRewritten`].
    pub icmp_error_rewritten: u64,
    /// [`Counter::DroppedNotAllowed`].
    pub dropped_not_allowed: u64,
    /// [`Counter::Errors`].
    pub errors: u64,
}

/// A datapath failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent was built without its eBPF object (`SATELLITE_EBPF=skip`, or `cargo clippy`).
    #[error(
        "this agent was built without its eBPF object (SATELLITE_EBPF=skip or clippy); rebuild \
         with the eBPF toolchain (`cargo xtask setup`) or SATELLITE_EBPF_OBJECT=<object>"
    )]
    NoObject,
    /// The configuration cannot be represented in the maps.
    #[error("invalid datapath configuration: {0}")]
    Config(String),
    /// The pin directory is not on a BPF file system.
    #[error("{0} is not on a bpffs (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs(PathBuf),
    /// Loading the object (maps, BTF relocation, verifier) failed.
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<EbpfError>),
    /// Loading, attaching, pinning or detaching a program failed.
    #[error("{what} failed")]
    Program {
        /// The step and program.
        what: String,
        /// aya's error (includes the verifier log for load failures).
        #[source]
        source: Box<ProgramError>,
    },
    /// Opening, pinning or updating a map failed.
    #[error("{what} failed")]
    Map {
        /// The step and map.
        what: String,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
    /// Opening, pinning or unpinning a link failed.
    #[error("{what} failed")]
    Link {
        /// The step and link.
        what: String,
        /// aya's error.
        #[source]
        source: Box<LinkError>,
    },
    /// Pinning a map, program or link failed.
    #[error("{what} failed")]
    Pin {
        /// The object and path.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// Adding the `clsact` qdisc or detaching netlink filters failed.
    #[error("{what} failed")]
    Tc {
        /// The step.
        what: String,
        /// aya's error.
        #[source]
        source: Box<tc::TcError>,
    },
    /// A file system operation on the pin directory failed.
    #[error("{what} {path} failed")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Every error [`Datapath::teardown`] met; it attempts every step regardless.
#[derive(Debug, thiserror::Error)]
pub struct TeardownError {
    /// The errors, in the order they occurred.
    pub errors: Vec<Error>,
}

impl std::fmt::Display for TeardownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "datapath teardown: {} step(s) failed", self.errors.len())?;
        for error in &self.errors {
            write!(f, "; {error}")?;
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                write!(f, ": {cause}")?;
                source = cause.source();
            }
        }
        Ok(())
    }
}

/// The attached datapath of one interface: handles to its (pinned) maps.
pub struct Datapath {
    interface: String,
    pin_dir: PathBuf,
    mode: AttachMode,
    adopted: bool,
    config: Array<MapData, NatConfig>,
    peers: HashMap<MapData, u32, PeerInfo>,
    ports: HashMap<MapData, PortKey, PortInfo>,
    counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("interface", &self.interface)
            .field("pin_dir", &self.pin_dir)
            .field("mode", &self.mode)
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Installs the datapath on `interface` (in the calling thread's network namespace) with
    /// `config`, pinning everything under `pin_dir` (created if needed; must be on bpffs, e.g.
    /// `/sys/fs/bpf/satellite/eth0`). When `pin_dir` already holds a complete installation in
    /// the same mode, adopts it and only rewrites the maps ([`Self::adopted`] is then true);
    /// leftovers of an incomplete one are removed first.
    ///
    /// # Errors
    ///
    /// [`Error::NoObject`] when built without the object, [`Error::Config`] for a configuration
    /// the maps cannot hold, [`Error::NotBpffs`], and the load/attach/pin failures; a failed
    /// fresh install removes what it had installed.
    pub fn install(
        interface: &str,
        pin_dir: &Path,
        mode: AttachMode,
        config: &Config,
    ) -> Result<Self, Error> {
        validate(config)?;
        let mode = mode.resolve();
        std::fs::create_dir_all(pin_dir).map_err(|source| Error::Io {
            what: "creating",
            path: pin_dir.to_owned(),
            source,
        })?;
        check_bpffs(pin_dir)?;

        if let Some(mut adopted) = Self::adopt(interface, pin_dir, mode)? {
            adopted.set_config(config)?;
            return Ok(adopted);
        }
        // Leftovers of an interrupted install or of another mode: remove, then start afresh.
        let _ = remove_pinned(interface, pin_dir);
        std::fs::create_dir_all(pin_dir).map_err(|source| Error::Io {
            what: "creating",
            path: pin_dir.to_owned(),
            source,
        })?;
        let result = Self::fresh(interface, pin_dir, mode, config);
        if result.is_err() {
            let _ = remove_pinned(interface, pin_dir);
        }
        result
    }

    fn fresh(
        interface: &str,
        pin_dir: &Path,
        mode: AttachMode,
        config: &Config,
    ) -> Result<Self, Error> {
        let bytes = object::bytes();
        if bytes.is_empty() {
            return Err(Error::NoObject);
        }
        let mut ebpf = Ebpf::load(bytes).map_err(|e| Error::Load(Box::new(e)))?;
        let mut maps = Vec::with_capacity(MAPS.len());
        for name in MAPS {
            let map = ebpf.take_map(name).ok_or_else(|| Error::Map {
                what: format!("finding map {name} in the object"),
                source: Box::new(MapError::InvalidName { name: name.into() }),
            })?;
            let path = pin_dir.join(name);
            map.pin(&path).map_err(|e| Error::Pin {
                what: format!("pinning map {name} at {}", path.display()),
                source: Box::new(e),
            })?;
            maps.push(map);
        }
        let mut datapath = Self::from_maps(interface, pin_dir, mode, false, maps)?;
        datapath.set_config(config)?;

        if mode == AttachMode::Netlink {
            add_clsact(interface)?;
        }
        // Egress first: never translate inbound without translating the replies.
        for (name, attach_type, link_pin) in [
            (common::PROG_EGRESS, TcAttachType::Egress, LINK_EGRESS),
            (common::PROG_INGRESS, TcAttachType::Ingress, LINK_INGRESS),
        ] {
            let program_error = |what: String| {
                move |e: ProgramError| Error::Program {
                    what,
                    source: Box::new(e),
                }
            };
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Program {
                    what: format!("finding program {name} in the object"),
                    source: Box::new(ProgramError::NotLoaded),
                })?
                .try_into()
                .map_err(program_error(format!("program {name}")))?;
            program
                .load()
                .map_err(program_error(format!("loading program {name}")))?;
            let path = pin_dir.join(name);
            program.pin(&path).map_err(|e| Error::Pin {
                what: format!("pinning program {name} at {}", path.display()),
                source: Box::new(e),
            })?;
            if mode == AttachMode::Netlink {
                attach_netlink(program, interface, attach_type, name)?;
            } else {
                let link_id = program
                    .attach_with_options(
                        interface,
                        attach_type,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(program_error(format!("attaching {name} to {interface}")))?;
                let link = program
                    .take_link(link_id)
                    .map_err(program_error(format!("taking the link of {name}")))?;
                let link = FdLink::try_from(link).map_err(|e| Error::Link {
                    what: format!("the TCX link of {name}"),
                    source: Box::new(e),
                })?;
                let path = pin_dir.join(link_pin);
                link.pin(&path).map_err(|e| Error::Pin {
                    what: format!("pinning the link of {name} at {}", path.display()),
                    source: Box::new(e),
                })?;
            }
        }
        Ok(datapath)
    }

    /// Opens a complete installation pinned in `pin_dir` in `mode`, or `None`.
    fn adopt(interface: &str, pin_dir: &Path, mode: AttachMode) -> Result<Option<Self>, Error> {
        let mut expected: Vec<&str> = MAPS.to_vec();
        expected.extend([common::PROG_INGRESS, common::PROG_EGRESS]);
        if mode == AttachMode::Tcx {
            expected.extend([LINK_INGRESS, LINK_EGRESS]);
        }
        if !expected.iter().all(|name| pin_dir.join(name).exists()) {
            return Ok(None);
        }
        if mode == AttachMode::Tcx {
            for name in [LINK_INGRESS, LINK_EGRESS] {
                if PinnedLink::from_pin(pin_dir.join(name)).is_err() {
                    return Ok(None);
                }
            }
        } else {
            // Netlink filters are not pinnable: (re)attach the pinned programs, replacing any
            // filter of ours still there (packets pass untranslated for that instant).
            add_clsact(interface)?;
            for (name, attach_type) in [
                (common::PROG_EGRESS, TcAttachType::Egress),
                (common::PROG_INGRESS, TcAttachType::Ingress),
            ] {
                let path = pin_dir.join(name);
                let mut program = SchedClassifier::from_pin(&path).map_err(|e| Error::Program {
                    what: format!("opening pinned program {}", path.display()),
                    source: Box::new(e),
                })?;
                detach_filters(interface, attach_type, name)?;
                attach_netlink(&mut program, interface, attach_type, name)?;
            }
        }
        Self::from_maps(interface, pin_dir, mode, true, open_pinned_maps(pin_dir)?).map(Some)
    }

    /// Opens the maps pinned in `pin_dir` (to read counters or change the configuration)
    /// without attaching or detaching anything; the mode is read from the pins (TCX when link
    /// pins exist). `None` when nothing is pinned there.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] when a pinned map cannot be opened (e.g. an incomplete installation).
    pub fn open(interface: &str, pin_dir: &Path) -> Result<Option<Self>, Error> {
        if !pin_dir.join(common::MAP_CONFIG).exists() {
            return Ok(None);
        }
        let mode = if pin_dir.join(LINK_INGRESS).exists() {
            AttachMode::Tcx
        } else {
            AttachMode::Netlink
        };
        Self::from_maps(interface, pin_dir, mode, true, open_pinned_maps(pin_dir)?).map(Some)
    }

    fn from_maps(
        interface: &str,
        pin_dir: &Path,
        mode: AttachMode,
        adopted: bool,
        maps: Vec<Map>,
    ) -> Result<Self, Error> {
        let map_error = |name: &str| {
            let what = format!("map {name}");
            move |e: MapError| Error::Map {
                what,
                source: Box::new(e),
            }
        };
        let [config, peers, ports, counters]: [Map; 4] =
            maps.try_into().expect("one map per name in MAPS");
        Ok(Self {
            interface: interface.to_owned(),
            pin_dir: pin_dir.to_owned(),
            mode,
            adopted,
            config: Array::try_from(config).map_err(map_error(common::MAP_CONFIG))?,
            peers: HashMap::try_from(peers).map_err(map_error(common::MAP_PEERS))?,
            ports: HashMap::try_from(ports).map_err(map_error(common::MAP_PORTS))?,
            counters: PerCpuArray::try_from(counters).map_err(map_error(common::MAP_COUNTERS))?,
        })
    }

    /// Whether [`Self::install`] adopted a pinned installation instead of attaching anew.
    #[must_use]
    pub const fn adopted(&self) -> bool {
        self.adopted
    }

    /// The attach mode in use (never [`AttachMode::Auto`]).
    #[must_use]
    pub const fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Rewrites the maps with `config`: peers and ports are added before stale ones are removed,
    /// so a peer or port present in both the old and the new configuration never loses service.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a configuration the maps cannot hold, [`Error::Map`] when an
    /// update fails (the maps may then hold a mix of both configurations).
    pub fn set_config(&mut self, config: &Config) -> Result<(), Error> {
        validate(config)?;
        let map_error = |what: &str| {
            let what = what.to_owned();
            move |e: MapError| Error::Map {
                what,
                source: Box::new(e),
            }
        };
        let (nodeport_min, nodeport_max) = config
            .nodeports
            .as_ref()
            .map_or((0, 0), |r| (*r.start(), *r.end()));
        let nat = NatConfig {
            host_addr: common::ipv4_key(config.host_addr.octets()),
            node_addr: common::ipv4_key(config.node_addr.octets()),
            nodeport_min,
            nodeport_max,
            flags: 0,
        };

        let peers: BTreeSet<u32> = config
            .peers
            .iter()
            .map(|p| common::ipv4_key(p.octets()))
            .collect();
        for peer in &peers {
            self.peers
                .insert(peer, PeerInfo::default(), 0)
                .map_err(map_error("adding a peer"))?;
        }
        let ports: BTreeSet<PortKey> = config
            .ports
            .iter()
            .map(|(proto, port)| PortKey::new(proto.number(), *port))
            .collect();
        for port in &ports {
            self.ports
                .insert(port, PortInfo::default(), 0)
                .map_err(map_error("adding a port"))?;
        }
        self.config
            .set(0, nat, 0)
            .map_err(map_error("writing the NAT configuration"))?;

        let stale_peers: Vec<u32> = self
            .peers
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !peers.contains(k))
            .collect();
        for peer in stale_peers {
            self.peers
                .remove(&peer)
                .map_err(map_error("removing a peer"))?;
        }
        let stale_ports: Vec<PortKey> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ports.contains(k))
            .collect();
        for port in stale_ports {
            self.ports
                .remove(&port)
                .map_err(map_error("removing a port"))?;
        }
        Ok(())
    }

    /// The packet counters, summed over CPUs.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] when the per-CPU array cannot be read.
    pub fn counters(&self) -> Result<Counters, Error> {
        let read = |counter: Counter| -> Result<u64, Error> {
            let values = self
                .counters
                .get(&counter.index(), 0)
                .map_err(|e| Error::Map {
                    what: format!("reading counter {counter:?}"),
                    source: Box::new(e),
                })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(Counters {
            ingress_rewritten: read(Counter::IngressRewritten)?,
            egress_rewritten: read(Counter::EgressRewritten)?,
            icmp_error_rewritten: read(Counter::IcmpErrorRewritten)?,
            dropped_not_allowed: read(Counter::DroppedNotAllowed)?,
            errors: read(Counter::Errors)?,
        })
    }

    /// Detaches the programs from the interface (in the calling thread's network namespace)
    /// and removes every pin `install` created, then the pin directory when empty. Attempts
    /// every step even after failures.
    ///
    /// # Errors
    ///
    /// [`TeardownError`] with every failure.
    pub fn teardown(self) -> Result<(), TeardownError> {
        let Self {
            interface, pin_dir, ..
        } = self;
        remove_pinned(&interface, &pin_dir)
    }
}

/// Opens every map of [`MAPS`] pinned in `pin_dir`, in order.
fn open_pinned_maps(pin_dir: &Path) -> Result<Vec<Map>, Error> {
    MAPS.iter()
        .map(|name| {
            let path = pin_dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| Error::Map {
                what: format!("opening pinned map {}", path.display()),
                source: Box::new(e),
            })?;
            Map::from_map_data(data).map_err(|e| Error::Map {
                what: format!("pinned map {}", path.display()),
                source: Box::new(e),
            })
        })
        .collect()
}

/// Detaches what [`Datapath::install`] attached to `interface` and removes its pins under
/// `pin_dir` (only the names it creates), then `pin_dir` itself if empty: a teardown that needs
/// no open [`Datapath`] (e.g. after the agent that installed it is gone). Nothing installed is
/// not an error.
///
/// # Errors
///
/// [`TeardownError`] with every step that failed; every step is attempted.
pub fn remove(interface: &str, pin_dir: &Path) -> Result<(), TeardownError> {
    remove_pinned(interface, pin_dir)
}

/// The ids of the programs pinned in `pin_dir`, `(ingress, egress)`; `None` when either is not
/// pinned there. Compare with what is attached to tell whether the pinned programs are the
/// ones running.
pub fn pinned_program_ids(pin_dir: &Path) -> Option<(u32, u32)> {
    let id = |name: &str| {
        ProgramInfo::from_pin(pin_dir.join(name))
            .ok()
            .map(|i| i.id())
    };
    Some((id(common::PROG_INGRESS)?, id(common::PROG_EGRESS)?))
}

/// The ids of the tc programs attached to `interface`'s `attach_type` hook as TCX links, in
/// order (kernel ≥ 6.6; `ENODEV`/`EINVAL` from older kernels and missing interfaces are
/// errors).
///
/// # Errors
///
/// [`Error::Program`] when the query fails.
pub fn tcx_program_ids(interface: &str, attach_type: TcAttachType) -> Result<Vec<u32>, Error> {
    SchedClassifier::query_tcx(interface, attach_type)
        .map(|(_, programs)| programs.iter().map(ProgramInfo::id).collect())
        .map_err(|e| Error::Program {
            what: format!("querying the TCX programs of {interface}"),
            source: Box::new(e),
        })
}

/// Detaches what `install` attaches to `interface` and removes our pins under `pin_dir` (only
/// our names), then `pin_dir` itself if empty.
fn remove_pinned(interface: &str, pin_dir: &Path) -> Result<(), TeardownError> {
    let mut errors = Vec::new();
    // Ingress first: never translate inbound without translating the replies.
    for (link_pin, attach_type, prog) in [
        (LINK_INGRESS, TcAttachType::Ingress, common::PROG_INGRESS),
        (LINK_EGRESS, TcAttachType::Egress, common::PROG_EGRESS),
    ] {
        let path = pin_dir.join(link_pin);
        if path.exists() {
            // Unpinning drops the last reference to the TCX link: the kernel detaches it.
            match PinnedLink::from_pin(&path) {
                Ok(link) => {
                    if let Err(source) = link.unpin() {
                        errors.push(Error::Io {
                            what: "unpinning link",
                            path,
                            source,
                        });
                    }
                }
                Err(e) => errors.push(Error::Link {
                    what: format!("opening pinned link {}", path.display()),
                    source: Box::new(e),
                }),
            }
        }
        // Netlink filters carry the program's name; an absent interface has none left.
        if let Err(e) = detach_filters(interface, attach_type, prog) {
            errors.push(e);
        }
    }
    for name in MAPS
        .iter()
        .chain(&[common::PROG_INGRESS, common::PROG_EGRESS])
    {
        let path = pin_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => errors.push(Error::Io {
                what: "unpinning",
                path,
                source,
            }),
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) => {}
        Err(source) => errors.push(Error::Io {
            what: "removing",
            path: pin_dir.to_owned(),
            source,
        }),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TeardownError { errors })
    }
}

/// Adds the `clsact` qdisc to `interface` unless it has one.
fn add_clsact(interface: &str) -> Result<(), Error> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(Error::Tc {
            what: format!("adding the clsact qdisc to {interface}"),
            source: Box::new(e),
        }),
    }
}

/// Attaches `program` as a netlink `cls_bpf` filter and leaves it attached for good.
fn attach_netlink(
    program: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
) -> Result<(), Error> {
    let program_error = |what: String| {
        move |e: ProgramError| Error::Program {
            what,
            source: Box::new(e),
        }
    };
    let link_id = program
        .attach_with_options(
            interface,
            attach_type,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(program_error(format!("attaching {name} to {interface}")))?;
    let link = program
        .take_link(link_id)
        .map_err(program_error(format!("taking the link of {name}")))?;
    // A netlink filter is no fd: dropping aya's handle would delete the filter. It stays until
    // teardown, which finds it by program name; the handle owns no resource, nothing leaks.
    std::mem::forget(link);
    Ok(())
}

/// Deletes the netlink filters named `name` from `interface`'s `attach_type` hook; none, no
/// clsact qdisc or no interface are not errors.
fn detach_filters(interface: &str, attach_type: TcAttachType, name: &str) -> Result<(), Error> {
    match tc::qdisc_detach_program(interface, attach_type, name) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(e))
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(())
        }
        Err(tc::TcError::NetlinkError(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::Tc {
            what: format!("detaching {name} filters from {interface}"),
            source: Box::new(e),
        }),
    }
}

impl Config {
    /// Checks that the maps can hold this configuration (S and N set and distinct, 1 to
    /// [`common::MAX_PEERS`] peers, at most [`common::MAX_PORTS`] ports, a non-empty NodePort
    /// range without port 0).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the problem.
    pub fn validate(&self) -> Result<(), Error> {
        validate(self)
    }
}

fn validate(config: &Config) -> Result<(), Error> {
    let unspecified = |a: Ipv4Addr| a.is_unspecified();
    if unspecified(config.host_addr) || unspecified(config.node_addr) {
        return Err(Error::Config("S and N must not be 0.0.0.0".into()));
    }
    if config.host_addr == config.node_addr {
        return Err(Error::Config("S and N must differ".into()));
    }
    if config.peers.is_empty() || config.peers.len() > common::MAX_PEERS as usize {
        return Err(Error::Config(format!(
            "1 to {} peers, not {}",
            common::MAX_PEERS,
            config.peers.len()
        )));
    }
    if config.ports.len() > common::MAX_PORTS as usize {
        return Err(Error::Config(format!(
            "at most {} ports, not {}",
            common::MAX_PORTS,
            config.ports.len()
        )));
    }
    if let Some(range) = &config.nodeports
        && (range.is_empty() || *range.start() == 0)
    {
        return Err(Error::Config(format!("bad NodePort range {range:?}")));
    }
    Ok(())
}

/// Whether this agent was built with its eBPF object ([`Error::NoObject`] otherwise).
#[must_use]
pub fn object_embedded() -> bool {
    !object::bytes().is_empty()
}

/// Checks that `dir` (which must exist) is on a BPF file system.
///
/// # Errors
///
/// [`Error::NotBpffs`], or [`Error::Io`] when `statfs` fails.
pub fn check_bpffs(dir: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::NotBpffs(dir.to_owned()))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` points to writable memory of the
    // size statfs(2) fills; we read it only after a successful call.
    let rc = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::Io {
            what: "statfs",
            path: dir.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: statfs(2) succeeded, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    if stat.f_type as i64 != BPF_FS_MAGIC {
        return Err(Error::NotBpffs(dir.to_owned()));
    }
    Ok(())
}
