//! The one error type of the library, and the [`ExitCode`] each variant maps to.

use std::path::PathBuf;

/// Everything that can go wrong while minting a token.
///
/// Each variant's `Display` says what failed and how to fix it; none of them carries a secret
/// (secret access keys, session tokens and bearer tokens never reach an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is malformed; detected before any network call.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input (`cluster name`, `role ARN`, `region`, …).
        what: &'static str,
        /// What is wrong with it and what a valid value looks like.
        reason: String,
    },

    /// `KUBERNETES_EXEC_INFO` is not an ExecCredential this plugin can answer.
    #[error(
        "KUBERNETES_EXEC_INFO: {0}; set `apiVersion: client.authentication.k8s.io/v1` (or v1beta1) \
         in the `exec` section of your kubeconfig"
    )]
    ExecInfo(String),

    /// The AWS credential chain found nothing to sign with.
    #[error(
        "no AWS credentials found ({0}); provide them through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
         a profile in ~/.aws/config or ~/.aws/credentials (--profile or AWS_PROFILE), web identity \
         (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), SSO, credential_process or instance metadata"
    )]
    NoCredentials(String),

    /// STS refused to let the caller assume the role.
    #[error(
        "sts:AssumeRole of {role_arn} was denied for the caller (access key {caller_key_id}): {message}; \
         allow the caller in the role's trust policy and give it sts:AssumeRole on the role"
    )]
    AccessDenied {
        /// The role that was requested.
        role_arn: String,
        /// Access key id of the base credentials (an identifier, not a secret).
        caller_key_id: String,
        /// STS's own message, which names the calling principal.
        message: String,
    },

    /// STS rejected the base credentials themselves (unknown key, bad signature, expired token).
    #[error(
        "STS rejected the caller's credentials (access key {caller_key_id}): {message}; check that \
         the credentials are current and belong to the intended account"
    )]
    CredentialsRejected {
        /// Access key id of the base credentials.
        caller_key_id: String,
        /// STS's error code and message.
        message: String,
    },

    /// STS could not be reached (connect failure or timeout) within the retry budget.
    #[error(
        "STS endpoint {endpoint} unreachable after retries ({message}); check network access to it, \
         or point --sts-endpoint / AWS_ENDPOINT_URL_STS at a reachable endpoint"
    )]
    StsUnreachable {
        /// The endpoint that was tried.
        endpoint: String,
        /// What the transport reported.
        message: String,
    },

    /// STS answered with an error other than AccessDenied.
    #[error("sts:{operation} failed: {message}")]
    Sts {
        /// The STS operation (`AssumeRole`).
        operation: &'static str,
        /// STS's error code and message.
        message: String,
    },

    /// SigV4 presigning failed (should only happen with malformed credentials).
    #[error("signing the GetCallerIdentity request failed: {0}")]
    Signing(String),

    /// The credential cache could not be used; the caller can retry without `--cache-dir`.
    #[error("credential cache at {path}: {message}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },

    /// The ExecCredential could not be written to stdout.
    ///
    /// The OS error is in the message (the binary prints only the message), so it is not also
    /// the `source()`.
    #[error("writing the ExecCredential to stdout: {0}")]
    Output(std::io::Error),

    /// Starting the async runtime failed (the OS error is in the message).
    #[error("starting the tokio runtime: {0}")]
    Runtime(std::io::Error),
}

/// The exit status of `satellite-credential-plugin` for a failure, as documented in the
/// binary's crate doc (0 is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// 1: any other failure (STS errors, signing, the cache, stdout).
    Other = 1,
    /// 2: bad command line (clap exits with it itself).
    Usage = 2,
    /// 3: invalid input, detected before any network call.
    Invalid = 3,
    /// 4: no AWS credentials found.
    NoCredentials = 4,
    /// 5: STS denied the AssumeRole, or rejected the caller's credentials.
    Denied = 5,
    /// 6: STS unreachable within the retry budget.
    Unreachable = 6,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

impl From<&Error> for ExitCode {
    fn from(error: &Error) -> Self {
        match error {
            Error::InvalidInput { .. } | Error::ExecInfo(_) => ExitCode::Invalid,
            Error::NoCredentials(_) => ExitCode::NoCredentials,
            Error::AccessDenied { .. } | Error::CredentialsRejected { .. } => ExitCode::Denied,
            Error::StsUnreachable { .. } => ExitCode::Unreachable,
            Error::Sts { .. }
            | Error::Signing(_)
            | Error::Cache { .. }
            | Error::Output(_)
            | Error::Runtime(_) => ExitCode::Other,
        }
    }
}

impl Error {
    /// An [`Error::InvalidInput`] for `what`, saying `reason`.
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [
            ExitCode::Other,
            ExitCode::Usage,
            ExitCode::Invalid,
            ExitCode::NoCredentials,
            ExitCode::Denied,
            ExitCode::Unreachable,
        ];
        assert_eq!(codes.map(|c| c as u8), [1, 2, 3, 4, 5, 6]);
        let unreachable = Error::StsUnreachable {
            endpoint: "https://sts.us-east-1.amazonaws.com".into(),
            message: "timed out".into(),
        };
        assert_eq!(ExitCode::from(&unreachable), ExitCode::Unreachable);
        assert_eq!(
            ExitCode::from(&Error::NoCredentials("none".into())),
            ExitCode::NoCredentials
        );
    }
}
