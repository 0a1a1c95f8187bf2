//! The EKS bearer token: `k8s-aws-v1.` + unpadded base64url of a SigV4-presigned
//! `GET <sts endpoint>/?Action=GetCallerIdentity&Version=2011-06-15` URL.
//!
//! Source: aws-iam-authenticator `pkg/token/token.go` (the format EKS's authenticator
//! verifies) and AWS CLI `awscli/customizations/eks/get_token.py` (same output, byte for byte).

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

use crate::Error;
use crate::input::{ClusterId, Region};

/// The token prefix EKS's authenticator expects.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// The header whose signed value binds the token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";

/// How long the presigned URL is valid for STS (`X-Amz-Expires`), as EKS requires.
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);

/// How long EKS accepts a token after it was signed. The authenticator allows 15 min; clients
/// are told 14 min so a token is never presented in its last minute.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// How long before the signing credentials expire a token must stop being used.
pub const CREDENTIAL_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded,
/// as SigV4 requires for query values.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A minted EKS bearer token and the instant after which it must not be used.
///
/// `Debug` hides the token: it is a bearer secret for up to 15 minutes.
#[derive(Clone, PartialEq, Eq)]
pub struct EksToken {
    token: String,
    expiration: SystemTime,
}

impl EksToken {
    /// The bearer token, `k8s-aws-v1.…`. Treat as a secret.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When to stop using the token: min(signing time + 14 min, credential expiry − 1 min).
    pub fn expiration(&self) -> SystemTime {
        self.expiration
    }
}

impl fmt::Debug for EksToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EksToken")
            .field("token", &"** redacted **")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Presigns GetCallerIdentity for `cluster` with `credentials` at `now` and wraps it as a token.
///
/// `endpoint` is the STS endpoint the URL names (see [`Region::sts_endpoint`]); the SigV4
/// scope uses `region` and service `sts`. Query parameters are emitted in the order the AWS
/// CLI and aws-iam-authenticator use (the signature itself does not depend on the order).
///
/// Errors: [`Error::Signing`] when the signer rejects the inputs.
pub fn presign(
    credentials: &Credentials,
    cluster: &ClusterId,
    region: &Region,
    endpoint: &Url,
    now: SystemTime,
) -> Result<EksToken, Error> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region.as_str())
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| Error::Signing(e.to_string()))?
        .into();

    let base = format!(
        "{}?Action=GetCallerIdentity&Version=2011-06-15",
        endpoint.as_str()
    );
    let signable = SignableRequest::new(
        "GET",
        &base,
        [(CLUSTER_ID_HEADER, cluster.as_str())].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| Error::Signing(e.to_string()))?;
    let (_, params) = sign(signable, &params)
        .map_err(|e| Error::Signing(e.to_string()))?
        .into_parts()
        .0
        .into_parts();

    let mut url = base;
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ] {
        if let Some((_, value)) = params.iter().find(|(n, _)| *n == name) {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
    }

    Ok(EksToken {
        token: format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url)),
        expiration: expiration(now, credentials.expiry()),
    })
}

/// min(now + 14 min, credential expiry − 1 min), truncated to whole seconds (the
/// ExecCredential timestamp has second precision; rounding down never overstates validity).
fn expiration(now: SystemTime, credential_expiry: Option<SystemTime>) -> SystemTime {
    let by_token = now + TOKEN_LIFETIME;
    let at = match credential_expiry {
        Some(expiry) => by_token.min(
            expiry
                .checked_sub(CREDENTIAL_EXPIRY_MARGIN)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        ),
        None => by_token,
    };
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(token: &EksToken) -> String {
        let b64 = token.token().strip_prefix(TOKEN_PREFIX).unwrap();
        String::from_utf8(URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn presigned_url_has_the_eks_shape() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("tok/en+=".into()),
            None,
            "test",
        );
        let region = Region::new("us-west-2").unwrap();
        let cluster = ClusterId::new("gpu").unwrap();
        // 2026-01-02T03:04:05Z
        let token = presign(
            &creds,
            &cluster,
            &region,
            &region.sts_endpoint(),
            at(1_767_323_045),
        )
        .unwrap();
        let url = decode(&token);
        let prefix = "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15\
            &X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIDEXAMPLE%2F20260102%2Fus-west-2%2Fsts%2Faws4_request\
            &X-Amz-Date=20260102T030405Z&X-Amz-Expires=60\
            &X-Amz-SignedHeaders=host%3Bx-k8s-aws-id\
            &X-Amz-Security-Token=tok%2Fen%2B%3D&X-Amz-Signature=";
        assert!(url.starts_with(prefix), "{url}");
        let signature = &url[prefix.len()..];
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!token.token().contains('='), "base64 must be unpadded");
        assert!(!format!("{token:?}").contains(TOKEN_PREFIX));
    }

    #[test]
    fn signature_depends_on_cluster_and_secret() {
        let region = Region::new("us-east-1").unwrap();
        let sign = |secret: &str, cluster: &str| {
            let creds = Credentials::new("AKID", secret, None, None, "test");
            let token = presign(
                &creds,
                &ClusterId::new(cluster).unwrap(),
                &region,
                &region.sts_endpoint(),
                at(1_767_323_045),
            )
            .unwrap();
            decode(&token)
        };
        assert_eq!(sign("s1", "a"), sign("s1", "a"));
        assert_ne!(sign("s1", "a"), sign("s2", "a"));
        assert_ne!(sign("s1", "a"), sign("s1", "b"));
    }

    #[test]
    fn expiration_is_capped_by_credentials() {
        let now = at(1_000_000);
        assert_eq!(expiration(now, None), at(1_000_000 + 840));
        assert_eq!(
            expiration(now, Some(at(1_000_000 + 3600))),
            at(1_000_000 + 840)
        );
        assert_eq!(
            expiration(now, Some(at(1_000_000 + 300))),
            at(1_000_000 + 240)
        );
        let fractional = now + Duration::from_millis(999);
        assert_eq!(expiration(fractional, None), at(1_000_000 + 840));
    }
}
