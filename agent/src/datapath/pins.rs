//! The pin directory (on bpffs): the names of the maps, programs and TCX links pinned there,
//! opening what is pinned, and removing it. Separate from the loader because the pins are
//! what outlives the agent: they are read and removed without loading anything (by `status`,
//! by `down` after the agent that installed them is gone).

use std::io;
use std::path::Path;

use aya::maps::{Map, MapData};
use aya::programs::ProgramInfo;
use aya::programs::tc::TcAttachType;
use satellite_agent_common as common;

use super::attach::netlink::detach_filters;
use super::attach::tcx::unpin_link;
use super::{Error, TeardownError};

/// Names of the maps, in pinning order.
pub(super) const MAPS: [&str; 4] = [
    common::MAP_CONFIG,
    common::MAP_PEERS,
    common::MAP_PORTS,
    common::MAP_COUNTERS,
];
/// Pin name of the TCX ingress link.
pub(super) const LINK_INGRESS: &str = "link_ingress";
/// Pin name of the TCX egress link.
pub(super) const LINK_EGRESS: &str = "link_egress";
/// `statfs(2)` magic of bpffs (`BPF_FS_MAGIC`, include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Opens every map of [`MAPS`] pinned in `pin_dir`, in order.
pub(super) fn open_pinned_maps(pin_dir: &Path) -> Result<Vec<Map>, Error> {
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

/// Detaches what [`Datapath::install`](super::Datapath::install) attached to `interface` and
/// removes its pins under `pin_dir` (only the names it creates), then `pin_dir` itself if
/// empty: a teardown that needs no open [`Datapath`](super::Datapath) (e.g. after the agent
/// that installed it is gone). Nothing installed is not an error.
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

/// Detaches what `install` attaches to `interface` and removes our pins under `pin_dir` (only
/// our names), then `pin_dir` itself if empty.
pub(super) fn remove_pinned(interface: &str, pin_dir: &Path) -> Result<(), TeardownError> {
    let mut errors: TeardownError = TeardownError::new("datapath teardown");
    // Ingress first: never translate inbound without translating the replies.
    for (link_pin, attach_type, prog) in [
        (LINK_INGRESS, TcAttachType::Ingress, common::PROG_INGRESS),
        (LINK_EGRESS, TcAttachType::Egress, common::PROG_EGRESS),
    ] {
        if let Err(e) = unpin_link(&pin_dir.join(link_pin)) {
            errors.push(e);
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
    errors.into_result(())
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
