//! Attaching the tc programs to the uplink, one file per kernel mechanism (as Cilium's loader
//! has `tcx.go` and `netlink.go`): [`tcx`] links (kernel ≥ 6.6; pinned, detached when
//! unpinned) and [`netlink`] `cls_bpf` filters on a `clsact` qdisc (older kernels; not
//! pinnable, found again by program name). [`AttachMode`] says which one is used.

pub(super) mod netlink;
pub(super) mod tcx;

use aya::util::KernelVersion;

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
