//! The loader: [`Datapath::install`] loads the embedded object, pins its maps and programs and
//! attaches them (a fresh install), or adopts a complete installation pinned by an earlier
//! agent; [`Datapath::open`] opens the pinned maps only. Separate from attaching
//! ([`super::attach`]), the pin directory ([`super::pins`]) and the map contents
//! ([`super::maps`]), which it sequences.

use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::ProgramError;
use aya::programs::tc::{SchedClassifier, TcAttachType};
use satellite_agent_common::{self as common, NatConfig, PeerInfo, PortInfo, PortKey};

use super::attach::netlink::{add_clsact, attach_netlink, detach_filters};
use super::attach::tcx::{attach_tcx, link_pinned};
use super::maps::validate;
use super::pins::{LINK_EGRESS, LINK_INGRESS, MAPS, open_pinned_maps, remove_pinned};
use super::{AttachMode, Config, Error, TeardownError, check_bpffs, object};

/// The attached datapath of one interface: handles to its (pinned) maps.
pub struct Datapath {
    interface: String,
    pin_dir: PathBuf,
    mode: AttachMode,
    adopted: bool,
    /// [`common::MAP_CONFIG`] (written by [`Self::set_config`]).
    pub(super) config: Array<MapData, NatConfig>,
    /// [`common::MAP_PEERS`].
    pub(super) peers: HashMap<MapData, u32, PeerInfo>,
    /// [`common::MAP_PORTS`].
    pub(super) ports: HashMap<MapData, PortKey, PortInfo>,
    /// [`common::MAP_COUNTERS`] (read by [`Self::counters`]).
    pub(super) counters: PerCpuArray<MapData, u64>,
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
                attach_tcx(
                    program,
                    interface,
                    attach_type,
                    name,
                    &pin_dir.join(link_pin),
                )?;
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
                if !link_pinned(&pin_dir.join(name)) {
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

/// Whether this agent was built with its eBPF object ([`Error::NoObject`] otherwise).
#[must_use]
pub fn object_embedded() -> bool {
    !object::bytes().is_empty()
}
