//! The one error type of the library, and the exit code each variant maps to.

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
    #[error("writing the ExecCredential to stdout: {0}")]
    Output(#[source] std::io::Error),

    /// Starting the async runtime failed.
    #[error("starting the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The process exit code for this error, as documented in the binary's crate doc:
    /// `3` invalid input, `4` no credentials, `5` access denied, `6` STS unreachable, `1` otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidInput { .. } | Error::ExecInfo(_) => 3,
            Error::NoCredentials(_) => 4,
            Error::AccessDenied { .. } | Error::CredentialsRejected { .. } => 5,
            Error::StsUnreachable { .. } => 6,
            Error::Sts { .. }
            | Error::Signing(_)
            | Error::Cache { .. }
            | Error::Output(_)
            | Error::Runtime(_) => 1,
        }
    }

    /// An [`Error::InvalidInput`] for `what`, saying `reason`.
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what,
            reason: reason.into(),
        }
    }
}
