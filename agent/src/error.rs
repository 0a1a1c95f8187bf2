//! The agent's one top-level error, its exit codes, and the one way errors are printed.
//!
//! Idiom (used by every module): an error's `Display` says what failed and, where known, how
//! to fix it; the error that caused it is its `source()`, never repeated in the message.
//! [`Report`] prints the whole chain (`what: cause: cause…`) once — in `main`, and in log
//! lines (`error = %Report(&e)`). Errors that wrap another one unchanged are
//! `#[error(transparent)]`.
//!
//! Exit codes (the README's table is this one):
//!
//! | code | [`ExitCode`] | meaning |
//! |------|--------------|---------|
//! | 0 | — | success (`join --dry-run`: also when changes are pending) |
//! | 1 | `Other` | other failure (`proxy`: a port could not be bound; `datapath status`: incomplete or not installed) |
//! | 2 | `Usage` | bad command line (clap) |
//! | 3 | `Invalid` | invalid NodeConfig, ProxyConfig, flags or input; the host is not as the settings need |
//! | 4 | `Aws` | AWS failure (credentials, STS, EKS, EC2) |
//! | 5 | `Kube` | Kubernetes API failure (unreachable, unauthorized, aws-auth refused) |
//! | 6 | `Host` | host networking failure (netlink, eBPF load/attach, teardown) |

use std::fmt;
use std::path::PathBuf;

use crate::admin::AdminError;
use crate::config::ConfigError;
use crate::csr::ApproverError;
use crate::datapath::host::HostError;
use crate::join::JoinError;
use crate::proxy::ProxyError;
use crate::run::RunError;

/// The process exit status of `satellite-agent` for a failure (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// 1: any other failure.
    Other = 1,
    /// 2: bad command line (clap exits with it itself).
    Usage = 2,
    /// 3: invalid configuration or input; nothing was changed.
    Invalid = 3,
    /// 4: an AWS call failed.
    Aws = 4,
    /// 5: the Kubernetes API failed or refused.
    Kube = 5,
    /// 6: changing the host's networking failed.
    Host = 6,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// Every way a `satellite-agent` command fails.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `join` failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// `run` failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// `proxy` failed.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// `admin` failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// `admin approve-csrs` or `admin approver-rbac` failed.
    #[error(transparent)]
    Approver(#[from] ApproverError),
    /// `datapath` or `leave` failed.
    #[error(transparent)]
    Datapath(#[from] HostError),
    /// The NodeConfig is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line names an impossible combination (checked before anything is done).
    #[error("{0}")]
    Invalid(String),
    /// The kubeconfig given to an admin command is unreadable or unusable.
    #[error("kubeconfig {}", path.as_ref().map_or("(KUBECONFIG or ~/.kube/config)".into(), |p| p.display().to_string()))]
    Kubeconfig {
        /// The file, `None` for the default lookup.
        path: Option<PathBuf>,
        /// Why it cannot be used.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Kubernetes client could not be built from a valid kubeconfig.
    #[error("building the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    /// The async runtime or the signal handlers could not be set up.
    #[error("{what}")]
    Runtime {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A check found the host degraded (e.g. `datapath status`: something is missing).
    #[error("{0}")]
    Degraded(String),
}

impl From<&AgentError> for ExitCode {
    fn from(error: &AgentError) -> Self {
        match error {
            AgentError::Join(e) => e.into(),
            AgentError::Run(e) => e.into(),
            AgentError::Proxy(e) => e.into(),
            AgentError::Admin(e) => e.into(),
            AgentError::Approver(e) => e.into(),
            AgentError::Datapath(e) => e.into(),
            AgentError::Config(_) | AgentError::Invalid(_) | AgentError::Kubeconfig { .. } => {
                ExitCode::Invalid
            }
            AgentError::KubeClient(_) => ExitCode::Kube,
            AgentError::Runtime { .. } | AgentError::Degraded(_) => ExitCode::Other,
        }
    }
}

/// Displays an error and every `source()` below it, joined with `: ` — the one way errors are
/// printed (by `main` and in log fields).
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}")]
    struct Outer {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn report_prints_each_cause_once() {
        let error = Outer {
            path: "/etc/x",
            source: std::io::Error::other("denied"),
        };
        assert_eq!(Report(&error).to_string(), "reading /etc/x: denied");
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [
            ExitCode::Other,
            ExitCode::Usage,
            ExitCode::Invalid,
            ExitCode::Aws,
            ExitCode::Kube,
            ExitCode::Host,
        ];
        assert_eq!(codes.map(|c| c as u8), [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            ExitCode::from(&AgentError::Invalid("x".into())),
            ExitCode::Invalid
        );
        assert_eq!(
            ExitCode::from(&AgentError::Degraded("x".into())),
            ExitCode::Other
        );
    }
}
