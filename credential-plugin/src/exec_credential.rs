//! The Kubernetes exec credential protocol: read `KUBERNETES_EXEC_INFO`, answer an
//! `ExecCredential` in the same `client.authentication.k8s.io` version.
//!
//! Source: client-go `plugin/pkg/client/auth/exec/exec.go` and the
//! `client.authentication.k8s.io/v1` / `v1beta1` API types.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{EksToken, Error};

/// The environment variable client-go sets to describe the request.
pub const EXEC_INFO_ENV: &str = "KUBERNETES_EXEC_INFO";

const GROUP: &str = "client.authentication.k8s.io";

/// The `client.authentication.k8s.io` versions this plugin answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `client.authentication.k8s.io/v1` (Kubernetes ≥ 1.22).
    V1,
    /// `client.authentication.k8s.io/v1beta1`; also the answer when no exec info is given,
    /// as `aws eks get-token` does.
    V1beta1,
}

impl ApiVersion {
    /// The full `apiVersion` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "client.authentication.k8s.io/v1",
            ApiVersion::V1beta1 => "client.authentication.k8s.io/v1beta1",
        }
    }

    /// Negotiates the version from the value of `KUBERNETES_EXEC_INFO` (`None` or empty when
    /// unset: v1beta1).
    ///
    /// Errors: [`Error::ExecInfo`] when the value is not JSON, not an `ExecCredential`, or names
    /// a version other than v1 and v1beta1 (v1alpha1 was removed in Kubernetes 1.24).
    pub fn from_exec_info(exec_info: Option<&str>) -> Result<Self, Error> {
        let Some(raw) = exec_info.filter(|s| !s.trim().is_empty()) else {
            return Ok(ApiVersion::V1beta1);
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct TypeMeta {
            api_version: Option<String>,
            kind: Option<String>,
        }
        let meta: TypeMeta = serde_json::from_str(raw)
            .map_err(|e| Error::ExecInfo(format!("not a JSON ExecCredential object ({e})")))?;
        if let Some(kind) = meta.kind.as_deref().filter(|k| *k != "ExecCredential") {
            return Err(Error::ExecInfo(format!(
                "kind is {kind:?}, expected \"ExecCredential\""
            )));
        }
        match meta.api_version.as_deref() {
            Some(v) if v == ApiVersion::V1.as_str() => Ok(ApiVersion::V1),
            Some(v) if v == ApiVersion::V1beta1.as_str() => Ok(ApiVersion::V1beta1),
            None => Err(Error::ExecInfo("apiVersion is missing".into())),
            Some(other) => Err(Error::ExecInfo(format!(
                "apiVersion {other:?} is not supported (this plugin answers {GROUP}/v1 and {GROUP}/v1beta1)"
            ))),
        }
    }
}

/// An `ExecCredential` response carrying a bearer token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential<'a> {
    kind: &'static str,
    api_version: &'static str,
    spec: Spec,
    status: Status<'a>,
}

#[derive(Debug, Serialize)]
struct Spec {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    expiration_timestamp: String,
    token: &'a str,
}

/// Renders the `ExecCredential` JSON for `token` in `version`, newline-terminated.
///
/// `status.expirationTimestamp` is RFC 3339 in UTC with second precision
/// (`2026-01-02T03:18:05Z`), as client-go's `metav1.Time` and the AWS CLI write it.
pub fn render(version: ApiVersion, token: &EksToken) -> String {
    let credential = ExecCredential {
        kind: "ExecCredential",
        api_version: version.as_str(),
        spec: Spec {},
        status: Status {
            expiration_timestamp: rfc3339_seconds(token.expiration()),
            token: token.token(),
        },
    };
    let mut out = serde_json::to_string(&credential).expect("ExecCredential always serializes");
    out.push('\n');
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `at` (sub-second part dropped).
pub fn rfc3339_seconds(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.format(format).expect("a UTC timestamp always formats")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn version_negotiation() {
        assert_eq!(
            ApiVersion::from_exec_info(None).unwrap(),
            ApiVersion::V1beta1
        );
        assert_eq!(
            ApiVersion::from_exec_info(Some("")).unwrap(),
            ApiVersion::V1beta1
        );
        let v1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
        assert_eq!(
            ApiVersion::from_exec_info(Some(v1)).unwrap(),
            ApiVersion::V1
        );
        let beta = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{}}"#;
        assert_eq!(
            ApiVersion::from_exec_info(Some(beta)).unwrap(),
            ApiVersion::V1beta1
        );

        let rejected = [
            (
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1alpha1"}"#,
                "v1alpha1",
            ),
            (
                r#"{"kind":"Pod","apiVersion":"client.authentication.k8s.io/v1"}"#,
                "\"Pod\"",
            ),
            (r#"{"kind":"ExecCredential"}"#, "missing"),
            ("not json", "not a JSON"),
        ];
        for (info, why) in rejected {
            let err = ApiVersion::from_exec_info(Some(info)).unwrap_err();
            assert!(err.to_string().contains(why), "{info}: {err}");
            assert_eq!(crate::ExitCode::from(&err), crate::ExitCode::Invalid);
        }
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_323_885_999);
        assert_eq!(rfc3339_seconds(at), "2026-01-02T03:18:05Z");
    }
}
