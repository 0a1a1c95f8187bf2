//! The sandbox's EKS-style token webhook (binary `sandbox-authenticator`): what EKS's
//! aws-iam-authenticator does for kube-apiserver, against moto instead of STS.
//!
//! kube-apiserver POSTs a `TokenReview` (authentication.k8s.io/v1) to `/authenticate`; for a
//! `k8s-aws-v1.` token the webhook
//! 1. decodes and checks the presigned GetCallerIdentity URL ([`crate::eks_token::decode`],
//!    [`verify::check_url`]: STS host allow-list, `X-Amz-Expires` ≤ 60, `x-k8s-aws-id` signed,
//!    `X-Amz-Date` within 15 minutes);
//! 2. finds the signing credentials in moto's state and recomputes the SigV4 signature with
//!    the cluster name as `x-k8s-aws-id` (so a token for another cluster fails);
//! 3. maps the caller through the live `kube-system/aws-auth` ConfigMap ([`mapping`]).
//!
//! Any failure answers `authenticated: false` with the reason in `status.error` (the
//! apiserver logs it; the client sees 401).

pub mod mapping;
pub mod verify;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use serde_json::Value;
use time::OffsetDateTime;

use crate::eks_token;
use mapping::{AwsAuth, Mapped};

/// What the webhook checks tokens against.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster name tokens must be signed for (`x-k8s-aws-id`).
    pub cluster_name: String,
    /// STS endpoints of the sandbox (`host:port`), accepted over http.
    pub local_sts_hosts: Vec<String>,
}

/// Authenticates `token` given moto's state and the aws-auth ConfigMap, at time `now`.
pub fn authenticate(
    settings: &Settings,
    token: &str,
    moto_state: &Value,
    aws_auth: &AwsAuth,
    now: OffsetDateTime,
) -> Result<Mapped, String> {
    let decoded = eks_token::decode(token)?;
    verify::check_url(&decoded, &settings.local_sts_hosts, now)?;
    let (caller, secret) = verify::caller_from_moto(moto_state, &decoded)?;
    decoded.verify_signature(&secret, &settings.cluster_name)?;
    aws_auth.map(&caller)
}

/// The `TokenReview` answer for `result` (`status` only; the caller sets kind/apiVersion).
pub fn review_response(result: Result<Mapped, String>) -> TokenReview {
    let status = match result {
        Ok(mapped) => TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some(mapped.username),
                groups: Some(mapped.groups),
                uid: Some(mapped.uid),
                extra: Some(mapped.extra),
            }),
            ..TokenReviewStatus::default()
        },
        Err(reason) => TokenReviewStatus {
            authenticated: Some(false),
            error: Some(reason),
            ..TokenReviewStatus::default()
        },
    };
    TokenReview {
        status: Some(status),
        ..TokenReview::default()
    }
}
