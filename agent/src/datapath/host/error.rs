//! [`HostError`]: how the host datapath fails, and the exit code each failure maps to.
//! Separate because every step (plan, apply, teardown, status, the record) returns it.

use std::io;
use std::path::PathBuf;

/// A failure of the host datapath.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The settings are invalid (exit code 3); every problem is listed.
    #[error("invalid datapath settings:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The host is not as the settings need it (a missing interface, no address, an
    /// unreachable peer); nothing was changed (exit code 3).
    #[error("{0}")]
    Host(String),
    /// A netlink request failed (exit code 6).
    #[error("{what}: {source}")]
    Netlink {
        /// The request.
        what: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// Loading, attaching or pinning the tc programs failed (exit code 6).
    #[error("the tc programs: {}", chain(.0))]
    Datapath(#[from] crate::datapath::Error),
    /// Reading or writing the record or its lock failed (exit code 1).
    #[error("{what} {}: {source}", path.display())]
    State {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `down` could not remove everything; every failed step is listed (exit code 6).
    #[error("removing the datapath: {} step(s) failed:\n{}", .0.len(), .0.join("\n"))]
    Teardown(Vec<String>),
}

impl HostError {
    /// The exit code: `3` invalid settings or host, `6` netlink/eBPF, `1` state files.
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) | Self::Host(_) => 3,
            Self::Netlink { .. } | Self::Datapath(_) | Self::Teardown(_) => 6,
            Self::State { .. } => 1,
        }
    }
}

/// `error` and its sources, `: `-separated.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps a netlink request's OS error to [`HostError::Netlink`] for `what`.
pub(super) fn netlink(what: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Netlink { what, source }
}
