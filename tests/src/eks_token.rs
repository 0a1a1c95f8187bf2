//! An independent verifier for `k8s-aws-v1.` tokens: decodes the presigned GetCallerIdentity
//! URL, checks its shape the way EKS's authenticator does, and recomputes the SigV4 signature
//! from a known secret (what STS would do when EKS forwards the request).
//!
//! Written from the specifications, not with the signer under test: SigV4 per the AWS
//! General Reference ("Create a canonical request", "Create a string to sign", "Calculate
//! the signature"), token checks per aws-iam-authenticator `pkg/token/token.go` `Verify`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest as _, Sha256};
use url::Url;

const PREFIX: &str = "k8s-aws-v1.";
const SIGV4_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A decoded token whose shape is valid (signature not yet checked).
#[derive(Debug, Clone)]
pub struct PresignedToken {
    /// The decoded presigned URL.
    pub url: Url,
    /// Query parameters, percent-decoded.
    pub params: BTreeMap<String, String>,
    /// `X-Amz-Credential`'s access key id.
    pub access_key_id: String,
    /// `X-Amz-Credential`'s region.
    pub region: String,
    /// `X-Amz-Date`, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
}

/// Decodes `token` and checks what EKS checks before asking STS: prefix, base64url, an
/// `https` (or, for local test endpoints, `http`) URL with path `/`, `Action=GetCallerIdentity`,
/// `Version=2011-06-15`, `X-Amz-Algorithm=AWS4-HMAC-SHA256`, a `…/sts/aws4_request` credential
/// scope, `X-Amz-Expires` ≤ 60 and `x-k8s-aws-id` among the signed headers.
pub fn decode(token: &str) -> Result<PresignedToken, String> {
    let b64 = token
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("token does not start with {PREFIX}"))?;
    if b64.contains('=') {
        return Err("token base64 is padded".into());
    }
    let raw = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|e| format!("token is not base64url: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("token URL is not UTF-8: {e}"))?;
    let url = Url::parse(&text).map_err(|e| format!("token is not a URL: {e}"))?;
    if url.path() != "/" {
        return Err(format!("unexpected path {}", url.path()));
    }
    let mut params = BTreeMap::new();
    for pair in url.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').ok_or("query pair without =")?;
        let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
        let k = decode(k).map_err(|e| e.to_string())?;
        if params
            .insert(k.clone(), decode(v).map_err(|e| e.to_string())?)
            .is_some()
        {
            return Err(format!("duplicate query parameter {k}"));
        }
    }
    let want = |k: &str, v: &str| match params.get(k) {
        Some(got) if got == v => Ok(()),
        got => Err(format!("{k} is {got:?}, want {v:?}")),
    };
    want("Action", "GetCallerIdentity")?;
    want("Version", "2011-06-15")?;
    want("X-Amz-Algorithm", "AWS4-HMAC-SHA256")?;
    let expires: u64 = params
        .get("X-Amz-Expires")
        .and_then(|e| e.parse().ok())
        .ok_or("X-Amz-Expires missing")?;
    if expires > 60 {
        return Err(format!("X-Amz-Expires {expires} > 60"));
    }
    let signed = params
        .get("X-Amz-SignedHeaders")
        .ok_or("no SignedHeaders")?;
    if !signed.split(';').any(|h| h == "x-k8s-aws-id") {
        return Err("x-k8s-aws-id is not signed".into());
    }
    let credential = params
        .get("X-Amz-Credential")
        .ok_or("no X-Amz-Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, "sts", "aws4_request"] = scope[..] else {
        return Err(format!("bad credential scope {credential}"));
    };
    let amz_date = params.get("X-Amz-Date").ok_or("no X-Amz-Date")?.clone();
    if !amz_date.starts_with(date) {
        return Err("X-Amz-Date does not match the credential scope date".into());
    }
    Ok(PresignedToken {
        access_key_id: key_id.to_owned(),
        region: region.to_owned(),
        amz_date,
        url,
        params,
    })
}

impl PresignedToken {
    /// Recomputes the SigV4 signature with `secret` for `cluster` as the `x-k8s-aws-id` value
    /// and compares it with `X-Amz-Signature`.
    pub fn verify_signature(&self, secret: &str, cluster: &str) -> Result<(), String> {
        let host = match self.url.port() {
            Some(port) => format!("{}:{port}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_owned(),
        };
        let canonical_query = self
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "X-Amz-Signature")
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, SIGV4_UNRESERVED),
                    utf8_percent_encode(v, SIGV4_UNRESERVED)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let signed_headers = &self.params["X-Amz-SignedHeaders"];
        let mut canonical_headers = String::new();
        for name in signed_headers.split(';') {
            let value = match name {
                "host" => host.as_str(),
                "x-k8s-aws-id" => cluster,
                other => return Err(format!("unexpected signed header {other}")),
            };
            canonical_headers.push_str(&format!("{name}:{value}\n"));
        }
        let canonical_request = format!(
            "GET\n/\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
            hex::encode(Sha256::digest(b""))
        );
        let date = &self.amz_date[..8];
        let scope = format!("{date}/{}/sts/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            self.amz_date,
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "sts", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let expected = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        let got = self
            .params
            .get("X-Amz-Signature")
            .ok_or("no X-Amz-Signature")?;
        if *got == expected {
            Ok(())
        } else {
            Err(format!(
                "signature mismatch for cluster {cluster:?} (wrong secret, cluster or request)"
            ))
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}
