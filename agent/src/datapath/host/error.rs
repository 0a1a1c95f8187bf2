//! [`HostError`]: how the host datapath fails, and the exit code each failure maps to.
//! Separate because every step (plan, apply, teardown, status, the record) returns it.
//!
//! The errors a variant wraps are written into its message (the kernel's and aya's text,
//! with [`Report`] for aya's chain), not returned by `source()`, so the one chain printer
//! ([`crate::error::Report`]) prints each once. (Hence no `thiserror` here: it makes a field
//! named `source` the `source()`.)

use std::io;
use std::path::PathBuf;

use crate::datapath::{self, TeardownError};
use crate::error::{ExitCode, Report};

/// A failure of the host datapath.
#[derive(Debug)]
pub enum HostError {
    /// The settings are invalid (exit code 3); every problem is listed.
    Invalid(Vec<String>),
    /// The host is not as the settings need it (a missing interface, no address, an
    /// unreachable peer); nothing was changed (exit code 3).
    Host(String),
    /// A netlink request failed (exit code 6).
    Netlink {
        /// The request.
        what: String,
        /// The kernel's error (in the message).
        source: io::Error,
    },
    /// Loading, attaching or pinning the tc programs failed (exit code 6).
    Datapath(datapath::Error),
    /// Reading or writing the record or its lock failed (exit code 1).
    State {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error (in the message).
        source: io::Error,
    },
    /// `down` could not remove everything; every failed step is listed, one per line
    /// (exit code 6).
    Teardown(TeardownError<TeardownFailure>),
}

impl From<&HostError> for ExitCode {
    /// `Invalid` settings or host, `Host` for netlink/eBPF/teardown, `Other` for the record.
    fn from(error: &HostError) -> Self {
        match error {
            HostError::Invalid(_) | HostError::Host(_) => ExitCode::Invalid,
            HostError::Netlink { .. } | HostError::Datapath(_) | HostError::Teardown(_) => {
                ExitCode::Host
            }
            HostError::State { .. } => ExitCode::Other,
        }
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(problems) => {
                write!(f, "invalid datapath settings:\n{}", problems.join("\n"))
            }
            Self::Host(message) => f.write_str(message),
            Self::Netlink { what, source } => write!(f, "{what}: {source}"),
            Self::Datapath(error) => write!(f, "the tc programs: {}", Report(error)),
            Self::State { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
            Self::Teardown(errors) => write!(f, "{errors:#}"),
        }
    }
}

/// No `source()`: every wrapped error is in the message (see the module doc).
impl std::error::Error for HostError {}

impl From<datapath::Error> for HostError {
    fn from(error: datapath::Error) -> Self {
        Self::Datapath(error)
    }
}

/// One failed step of [`down`](super::down)'s teardown: an item of [`HostError::Teardown`].
#[derive(Debug)]
pub enum TeardownFailure {
    /// Removing the tc programs and their pins failed (every failure, on one line).
    Programs(TeardownError),
    /// A netlink request failed.
    Netlink {
        /// The request.
        what: String,
        /// The kernel's error (in the message).
        error: io::Error,
    },
}

impl std::fmt::Display for TeardownFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Programs(errors) => write!(f, "{errors}"),
            Self::Netlink { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

/// No `source()`: the wrapped error is in the message (see the module doc).
impl std::error::Error for TeardownFailure {}

impl From<TeardownError> for TeardownFailure {
    fn from(errors: TeardownError) -> Self {
        Self::Programs(errors)
    }
}

/// Maps a netlink request's OS error to [`HostError::Netlink`] for `what`.
pub(super) fn netlink(what: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Netlink { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_hold_the_sources_once() {
        let busy = || io::Error::from_raw_os_error(libc::EBUSY);
        let mut programs: TeardownError = TeardownError::new("datapath teardown");
        programs.push(datapath::Error::Io {
            what: "unpinning",
            path: "/p".into(),
            source: busy(),
        });
        let mut errors = TeardownError::new("removing the datapath");
        errors.push(programs);
        errors.push(TeardownFailure::Netlink {
            what: "deleting route 198.18.0.1/32".into(),
            error: busy(),
        });
        let error = HostError::Teardown(errors);
        assert_eq!(
            error.to_string(),
            format!(
                "removing the datapath: 2 step(s) failed:\ndatapath teardown: 1 step(s) failed; \
                 unpinning /p failed: {}\ndeleting route 198.18.0.1/32: {}",
                busy(),
                busy()
            )
        );
        assert_eq!(ExitCode::from(&error), ExitCode::Host);

        let error = HostError::from(datapath::Error::Io {
            what: "statfs",
            path: "/p".into(),
            source: busy(),
        });
        assert_eq!(
            error.to_string(),
            format!("the tc programs: statfs /p failed: {}", busy())
        );
        let error = HostError::Netlink {
            what: "listing the main routing table".into(),
            source: busy(),
        };
        assert_eq!(
            error.to_string(),
            format!("listing the main routing table: {}", busy())
        );
        for error in [error, HostError::from(datapath::Error::NoObject)] {
            assert!(std::error::Error::source(&error).is_none());
        }
    }
}
