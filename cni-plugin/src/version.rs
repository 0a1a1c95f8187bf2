//! CNI spec versions this plugin implements, and the negotiation between `cniVersion` and
//! `cniVersions` (SPEC.md "Version considerations", "Configuration format").

use serde::Serialize;

use crate::error::{Error, Result};

/// The spec versions this plugin implements, oldest first. 0.4.0 is the oldest with CHECK;
/// STATUS and GC exist from 1.1.0 on.
pub const SUPPORTED: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version: used for VERSION output and for error results when the
/// configuration's version is unusable.
pub const NEWEST: &str = "1.1.0";

/// One supported spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.4.0: results carry `ips[].version`; no STATUS, GC or interface `mtu`.
    V0_4_0,
    /// 1.0.0: results drop `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC, interface `mtu`.
    V1_1_0,
}

impl Version {
    /// Parses one of [`SUPPORTED`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "0.4.0" => Some(Self::V0_4_0),
            "1.0.0" => Some(Self::V1_0_0),
            "1.1.0" => Some(Self::V1_1_0),
            _ => None,
        }
    }

    /// The version string (`"1.1.0"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results of `self` and `other` share one JSON shape (1.0.0 and 1.1.0 do; 0.4.0
    /// differs in `ips[].version`), so a `prevResult` in one is valid under the other.
    pub fn same_result_format(self, other: Self) -> bool {
        (self == Self::V0_4_0) == (other == Self::V0_4_0)
    }
}

/// Picks the version to speak: `cniVersion` when given (it must be supported), else the newest
/// supported entry of `cniVersions` (a conflist-level list that some runtimes pass through).
///
/// Errors: [`Error::InvalidConfig`] when neither is present; [`Error::IncompatibleVersion`]
/// when the version (or every listed one) is unsupported.
pub fn negotiate(cni_version: Option<&str>, cni_versions: Option<&[String]>) -> Result<Version> {
    let supported = SUPPORTED.join(", ");
    if let Some(v) = cni_version {
        return Version::parse(v).ok_or_else(|| {
            Error::IncompatibleVersion(format!(
                "cniVersion {v:?} is not supported; this plugin supports {supported}"
            ))
        });
    }
    match cni_versions {
        Some(list) => list
            .iter()
            .filter_map(|v| Version::parse(v))
            .max()
            .ok_or_else(|| {
                Error::IncompatibleVersion(format!(
                    "none of cniVersions {list:?} is supported; this plugin supports {supported}"
                ))
            }),
        None => Err(Error::InvalidConfig(format!(
            "cniVersion is missing; set it to one of {supported}"
        ))),
    }
}

/// The VERSION command's output (SPEC.md "VERSION").
#[derive(Debug, Serialize)]
pub struct VersionResult {
    /// The version of this output's format.
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    /// [`SUPPORTED`].
    #[serde(rename = "supportedVersions")]
    pub supported_versions: &'static [&'static str],
}

impl Default for VersionResult {
    fn default() -> Self {
        Self {
            cni_version: NEWEST,
            supported_versions: SUPPORTED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(Some("1.0.0"), None).unwrap(), Version::V1_0_0);
        let list = vec!["0.3.1".to_owned(), "1.0.0".to_owned(), "1.1.0".to_owned()];
        assert_eq!(negotiate(None, Some(&list)).unwrap(), Version::V1_1_0);
        // cniVersion wins over the list: libcni sets it to what it negotiated.
        assert_eq!(
            negotiate(Some("0.4.0"), Some(&list)).unwrap(),
            Version::V0_4_0
        );
        assert_eq!(negotiate(Some("0.3.1"), None).unwrap_err().code(), 1);
        assert_eq!(
            negotiate(None, Some(&["2.0.0".to_owned()]))
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(negotiate(None, None).unwrap_err().code(), 7);
    }
}
