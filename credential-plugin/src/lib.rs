//! Mint Amazon EKS bearer tokens, in-process or as a Kubernetes exec credential plugin.
//!
//! A token is `k8s-aws-v1.` followed by the unpadded base64url encoding of a SigV4-presigned
//! `GET https://sts.<region>.<partition suffix>/?Action=GetCallerIdentity&Version=2011-06-15`
//! URL (`X-Amz-Expires=60`) whose signed headers include `x-k8s-aws-id: <cluster>`. EKS
//! accepts it for 15 minutes after signing; this crate reports 14
//! ([`token::TOKEN_LIFETIME`]), capped one minute before the signing credentials expire.
//!
//! Credentials come from the standard AWS chain (`aws-config`: environment, shared config and
//! credentials files and profiles, web identity, SSO, `credential_process`, container and
//! instance metadata), optionally exchanged through `sts:AssumeRole`. Assumed-role credentials
//! are cached on disk ([`cache`]) so that repeated invocations (kubelet and kubectl call exec
//! plugins often) skip STS entirely and need no async runtime.
//!
//! ```no_run
//! use satellite_credential_plugin::{TokenConfig, TokenMinter, input::{ClusterId, Region}};
//! # async fn f() -> Result<(), satellite_credential_plugin::Error> {
//! let minter = TokenMinter::new(TokenConfig {
//!     cluster: ClusterId::new("gpu-prod")?,
//!     region: Region::new("us-west-2")?,
//!     sts_endpoint: None,
//!     profile: None,
//!     credentials_provider: None,
//!     assume_role: None,
//!     cache_dir: None,
//! })?;
//! let token = minter.token().await?;
//! println!("valid until {:?}", token.expiration());
//! # Ok(()) }
//! ```
//!
//! Sources: aws-iam-authenticator `pkg/token/token.go`; AWS CLI
//! `awscli/customizations/eks/get_token.py`; client-go `plugin/pkg/client/auth/exec`.

pub mod cache;
mod error;
pub mod exec_credential;
pub mod input;
mod minter;
pub mod token;

pub use error::{Error, ExitCode};
pub use minter::{
    AssumeRole, STS_MAX_ATTEMPTS, STS_OPERATION_TIMEOUT, TokenConfig, TokenMinter, profile_region,
};
pub use token::EksToken;
