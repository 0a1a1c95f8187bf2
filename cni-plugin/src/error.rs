//! Errors and the CNI error result (SPEC.md, "Error" section).
//!
//! Every error maps to one CNI error code ([`ErrorCode`]). Codes 1–99 are the spec's well-known
//! codes; 100 and up are this plugin's own (the spec reserves them for plugins). The process exit
//! status is the same number, so a shell sees what a runtime sees.

use std::io;

use serde::Serialize;

/// Everything that can fail in an invocation. The `Display` text is the error result's `msg`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Code 1: the configuration asks for a CNI version this plugin does not implement.
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    /// Code 2: a field this plugin does not support (e.g. an `ipam` section: IPAM is built in).
    #[error("unsupported field in the network configuration: {0}")]
    UnsupportedField(String),
    /// Code 3: the container (its network namespace, or its attachment on CHECK) does not exist.
    #[error("container unknown or does not exist: {0}")]
    UnknownContainer(String),
    /// Code 4: a `CNI_*` environment variable is missing or malformed.
    #[error("invalid environment variables: {0}")]
    InvalidEnvironment(String),
    /// Code 5: reading or writing the plugin's state (allocations, lock, log) failed.
    #[error("I/O failure: {context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Code 6: stdin is not a JSON object.
    #[error("failed to decode the network configuration on stdin: {0}")]
    Decode(String),
    /// Code 7: the network configuration is JSON but its content is invalid.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// Code 11: a transient condition (the allocation lock is held for too long); retry.
    #[error("try again later: {0}")]
    TryAgain(String),
    /// Code 50 (STATUS only): the plugin cannot service ADD requests.
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// Code 51 (STATUS only): as 50, and existing pods may have limited connectivity.
    #[error("plugin not available, existing pods may have limited connectivity: {0}")]
    LimitedConnectivity(String),
    /// Code 100: every address of the configured subnet is allocated.
    #[error(
        "no free address in {subnet}: {allocated} addresses are allocated; delete pods or configure a larger subnet"
    )]
    RangeExhausted {
        /// The configured subnet.
        subnet: String,
        /// How many allocations exist.
        allocated: usize,
    },
    /// Code 101: a netlink request (rtnetlink or nf_tables) failed.
    #[error("{context}: {source}")]
    Netlink {
        /// The operation, with interface names and addresses.
        context: String,
        /// The kernel's errno as an I/O error.
        source: io::Error,
    },
    /// Code 102: CHECK found the attachment different from what ADD configured.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// Code 103: a requested host port is already mapped to another attachment.
    #[error("host port {protocol}/{port} is already mapped to another pod")]
    HostPortInUse {
        /// `tcp`, `udp` or `sctp`.
        protocol: String,
        /// The host port.
        port: u16,
    },
    /// Code 104: the interface name requested for the pod already exists in its namespace.
    #[error(
        "interface {0:?} already exists in the container's network namespace; pick another CNI_IFNAME or delete it"
    )]
    InterfaceExists(String),
}

/// A CNI error code (SPEC.md, "Error": 1–7 and 11 are the spec's well-known codes, 50–99
/// reserved for the spec, 100 and up this plugin's own). The process exit status is the same
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in the network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: failed to decode content.
    Decode = 6,
    /// 7: invalid network config.
    InvalidConfig = 7,
    /// 11: try again later.
    TryAgain = 11,
    /// 50: the plugin is not available (STATUS).
    NotAvailable = 50,
    /// 51: the plugin can only provide limited connectivity (STATUS).
    LimitedConnectivity = 51,
    /// 100: the pod range has no free address.
    RangeExhausted = 100,
    /// 101: a netlink request failed.
    Netlink = 101,
    /// 102: CHECK found the attachment not as ADD left it.
    CheckFailed = 102,
    /// 103: a host port is taken.
    HostPortInUse = 103,
    /// 104: the interface already exists in the container.
    InterfaceExists = 104,
}

impl From<&Error> for ErrorCode {
    fn from(error: &Error) -> Self {
        match error {
            Error::IncompatibleVersion(_) => Self::IncompatibleVersion,
            Error::UnsupportedField(_) => Self::UnsupportedField,
            Error::UnknownContainer(_) => Self::UnknownContainer,
            Error::InvalidEnvironment(_) => Self::InvalidEnvironment,
            Error::Io { .. } => Self::Io,
            Error::Decode(_) => Self::Decode,
            Error::InvalidConfig(_) => Self::InvalidConfig,
            Error::TryAgain(_) => Self::TryAgain,
            Error::NotAvailable(_) => Self::NotAvailable,
            Error::LimitedConnectivity(_) => Self::LimitedConnectivity,
            Error::RangeExhausted { .. } => Self::RangeExhausted,
            Error::Netlink { .. } => Self::Netlink,
            Error::CheckFailed(_) => Self::CheckFailed,
            Error::HostPortInUse { .. } => Self::HostPortInUse,
            Error::InterfaceExists(_) => Self::InterfaceExists,
        }
    }
}

impl From<ErrorCode> for std::process::ExitCode {
    fn from(code: ErrorCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

impl Error {
    /// The CNI error code of this error, as the number the error result carries.
    pub fn code(&self) -> u32 {
        u32::from(ErrorCode::from(self) as u8)
    }

    /// An [`Error::Io`] with `context`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Netlink`] with `context`.
    pub fn netlink(context: impl Into<String>, source: io::Error) -> Self {
        Self::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error result printed on stdout (SPEC.md "Error"): `cniVersion`, `code`, `msg`,
/// `details`.
#[derive(Debug, Serialize)]
pub struct ErrorResult<'a> {
    /// The configuration's `cniVersion` when it is one this plugin supports, else the newest.
    #[serde(rename = "cniVersion")]
    pub cni_version: &'a str,
    /// [`Error::code`].
    pub code: u32,
    /// The error's `Display` text.
    pub msg: String,
    /// The source chain, when there is more to say than `msg`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl<'a> ErrorResult<'a> {
    /// The error result for `error`, in `cni_version`.
    pub fn new(cni_version: &'a str, error: &Error) -> Self {
        let details = match error {
            Error::Io { source, .. } | Error::Netlink { source, .. } => match source.raw_os_error()
            {
                Some(errno) => format!("errno {errno}"),
                None => String::new(),
            },
            _ => String::new(),
        };
        Self {
            cni_version,
            code: error.code(),
            msg: error.to_string(),
            details,
        }
    }
}
