//! TCX attachment (`BPF_LINK_TYPE_TCX`, kernel ≥ 6.6): a program is attached as a link,
//! which is pinned so it outlives the agent, and detached by the kernel when the last
//! reference (the pin) goes. Separate from netlink attachment: a different kernel interface
//! with a different lifetime rule.

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, ProgramInfo};

use crate::datapath::Error;

/// Attaches the loaded `program` (named `name`) to `interface`'s `attach_type` hook as a TCX
/// link and pins the link at `link_path`.
pub(in crate::datapath) fn attach_tcx(
    program: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
    link_path: &Path,
) -> Result<(), Error> {
    let link = super::attach(
        program,
        interface,
        attach_type,
        name,
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    )?;
    let link = FdLink::try_from(link).map_err(|e| Error::Link {
        what: format!("the TCX link of {name}"),
        source: Box::new(e),
    })?;
    link.pin(link_path).map_err(|e| Error::Pin {
        what: format!("pinning the link of {name} at {}", link_path.display()),
        source: Box::new(e),
    })?;
    Ok(())
}

/// Whether a TCX link is pinned at `link_path` and can be opened.
pub(in crate::datapath) fn link_pinned(link_path: &Path) -> bool {
    PinnedLink::from_pin(link_path).is_ok()
}

/// Detaches the TCX link pinned at `link_path` by unpinning it; no pin is not an error.
pub(in crate::datapath) fn unpin_link(link_path: &Path) -> Result<(), Error> {
    if !link_path.exists() {
        return Ok(());
    }
    // Unpinning drops the last reference to the TCX link: the kernel detaches it.
    match PinnedLink::from_pin(link_path) {
        Ok(link) => link.unpin().map(drop).map_err(|source| Error::Io {
            what: "unpinning link",
            path: link_path.to_owned(),
            source,
        }),
        Err(e) => Err(Error::Link {
            what: format!("opening pinned link {}", link_path.display()),
            source: Box::new(e),
        }),
    }
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
