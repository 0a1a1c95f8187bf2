//! Attaching the tc programs to the uplink, one file per kernel mechanism (as Cilium's loader
//! has `tcx.go` and `netlink.go`): [`tcx`] links (kernel ≥ 6.6; pinned, detached when
//! unpinned) and [`netlink`] `cls_bpf` filters on a `clsact` qdisc (older kernels; not
//! pinnable, found again by program name). [`AttachMode`] says which one is used.

pub(super) mod netlink;
pub(super) mod tcx;

use aya::programs::ProgramError;
use aya::programs::tc::{SchedClassifier, SchedClassifierLink, TcAttachOptions, TcAttachType};
use aya::util::KernelVersion;

use crate::datapath::Error;

/// Attaches the loaded `program` (named `name`) to `interface`'s `attach_type` hook with
/// `options` and takes the link from aya, so that dropping the program does not detach it.
fn attach(
    program: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
    options: TcAttachOptions,
) -> Result<SchedClassifierLink, Error> {
    let program_error = |what: String| {
        move |e: ProgramError| Error::Program {
            what,
            source: Box::new(e),
        }
    };
    let link_id = program
        .attach_with_options(interface, attach_type, options)
        .map_err(program_error(format!("attaching {name} to {interface}")))?;
    program
        .take_link(link_id)
        .map_err(program_error(format!("taking the link of {name}")))
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
