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

/// Every error [`Datapath::teardown`](super::Datapath::teardown) met; it attempts every step
/// regardless.
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
