//! The datapath's errors: [`Error`] for one failed step of loading, attaching, pinning or
//! configuring, and [`TeardownError`] for a teardown, which attempts every step and reports
//! every failure. Separate because every mechanism (loader, attach, pins, maps) returns them.

use std::io;
use std::path::PathBuf;

use aya::EbpfError;
use aya::maps::MapError;
use aya::programs::ProgramError;
use aya::programs::links::LinkError;
use aya::programs::tc;

use crate::error::Report;

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

/// Every failure of a teardown, in the order they occurred: the one aggregate both
/// teardowns return — [`Datapath::teardown`](super::Datapath::teardown) and
/// [`remove`](super::remove) (`E` = [`Error`]), and `datapath down`
/// ([`HostError::Teardown`](super::host::HostError::Teardown), `E` =
/// [`TeardownFailure`](super::host::TeardownFailure)). A teardown attempts every step whatever
/// failed before (as netavark's does), so one failure never hides another.
///
/// `{}` writes one line, `<what>: <n> step(s) failed; <failure>; …`, and `{:#}` one failure
/// per line, `<what>: <n> step(s) failed:\n<failure>\n…`; each failure with its sources
/// ([`Report`]). The failures are in the message, so the aggregate has no
/// [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct TeardownError<E = Error> {
    /// What was torn down: the head of the message.
    pub what: &'static str,
    /// The failures, in the order they occurred.
    pub errors: Vec<E>,
}

impl<E> TeardownError<E> {
    /// No failure yet in the teardown of `what`.
    #[must_use]
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            errors: Vec::new(),
        }
    }

    /// Records the failure of a step.
    pub fn push(&mut self, error: impl Into<E>) {
        self.errors.push(error.into());
    }

    /// `Ok(value)` when no step failed, else `Err(self)`.
    ///
    /// # Errors
    ///
    /// `self`, when it holds a failure.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl<E: std::error::Error> std::fmt::Display for TeardownError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} step(s) failed", self.what, self.errors.len())?;
        let separator = if f.alternate() {
            f.write_str(":")?;
            "\n"
        } else {
            "; "
        };
        for error in &self.errors {
            write!(f, "{separator}{}", Report(error))?;
        }
        Ok(())
    }
}

impl<E: std::error::Error> std::error::Error for TeardownError<E> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_error_lists_every_failure_with_its_sources() {
        let failure = |what| Error::Io {
            what,
            path: "/p".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let busy = io::Error::from_raw_os_error(libc::EBUSY);
        let mut errors: TeardownError = TeardownError::new("datapath teardown");
        errors.push(failure("unpinning"));
        errors.push(failure("removing"));
        assert_eq!(
            errors.to_string(),
            format!(
                "datapath teardown: 2 step(s) failed; unpinning /p failed: {busy}; removing /p \
                 failed: {busy}"
            )
        );
        assert_eq!(
            format!("{errors:#}"),
            format!(
                "datapath teardown: 2 step(s) failed:\nunpinning /p failed: {busy}\nremoving /p \
                 failed: {busy}"
            )
        );
        assert!(std::error::Error::source(&errors).is_none());
        assert!(matches!(errors.into_result(()), Err(e) if e.errors.len() == 2));
        assert!(matches!(
            TeardownError::<Error>::new("x").into_result(7),
            Ok(7)
        ));
    }
}
