//! The CNI success result (SPEC.md "Success"), in the shape of each supported version, and the
//! `prevResult` a runtime passes in when chaining.
//!
//! Fields this plugin does not interpret (e.g. a route's `table`, an interface's `socketPath`)
//! are kept as they came, so a chained result passes through unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::version::Version;

/// A CNI result: what ADD prints and what CHECK receives as `prevResult`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CniResult {
    /// The result's version.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Interfaces created or used, in order; `ips[].interface` indexes this list.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// DNS settings, passed through from the configuration's `dns`.
    #[serde(default)]
    pub dns: Map<String, Value>,
}

/// `interfaces[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's namespace path; absent for host-side interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `ips[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"` in 0.4.0 results; absent from 1.0.0 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length (`10.88.0.5/32`).
    pub address: String,
    /// Default gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// `routes[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteConfig {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop; absent means the default gateway of the matching `ips[]` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// Other fields (1.1.0: `mtu`, `advmss`, `priority`, `table`, `scope`), passed through.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl CniResult {
    /// Parses a `prevResult` for a configuration of version `conf`.
    ///
    /// A `prevResult` without `cniVersion` is taken to be in the configuration's version (as
    /// libcni does). One whose version has another result format than `conf` (0.4.0 vs 1.x)
    /// means the runtime did not convert it.
    ///
    /// Errors: [`Error::IncompatibleVersion`] for an unsupported or mismatched version;
    /// [`Error::InvalidConfig`] when it is not a result object.
    pub fn from_prev(value: &Value, conf: Version) -> Result<Self> {
        let mut prev: Self = serde_json::from_value(value.clone())
            .map_err(|e| Error::InvalidConfig(format!("prevResult is not a CNI result: {e}")))?;
        if prev.cni_version.is_empty() {
            prev.cni_version = conf.as_str().to_owned();
        }
        let version = Version::parse(&prev.cni_version).ok_or_else(|| {
            Error::IncompatibleVersion(format!(
                "prevResult has cniVersion {:?}, which this plugin does not support",
                prev.cni_version
            ))
        })?;
        if !version.same_result_format(conf) {
            return Err(Error::IncompatibleVersion(format!(
                "prevResult is cniVersion {} but the configuration is {}: the runtime must \
                 convert prevResult to the configuration's version",
                version.as_str(),
                conf.as_str()
            )));
        }
        for ip in &prev.ips {
            if let Some(i) = ip.interface
                && i >= prev.interfaces.len()
            {
                return Err(Error::InvalidConfig(format!(
                    "prevResult ips entry {} names interface {i}, but prevResult has only {} \
                     interfaces",
                    ip.address,
                    prev.interfaces.len()
                )));
            }
        }
        Ok(prev)
    }

    /// This result in the shape of `version`: 0.4.0 gets `ips[].version`, 1.0.0 and later
    /// drop it; `interfaces[].mtu` only from 1.1.0 on.
    pub fn for_version(mut self, version: Version) -> Self {
        self.cni_version = version.as_str().to_owned();
        for ip in &mut self.ips {
            ip.version = match version {
                Version::V0_4_0 => Some(if ip.address.contains(':') { "6" } else { "4" }.into()),
                _ => None,
            };
        }
        if version < Version::V1_1_0 {
            for iface in &mut self.interfaces {
                iface.mtu = None;
            }
        }
        self
    }

    /// Appends `other` (this plugin's own result) after `self` (a `prevResult`), re-indexing
    /// its `ips[].interface`; DNS keys of `other` fill only what `self` lacks.
    pub fn merge(mut self, other: Self) -> Self {
        let offset = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        for route in other.routes {
            if !self.routes.contains(&route) {
                self.routes.push(route);
            }
        }
        for (k, v) in other.dns {
            self.dns.entry(k).or_insert(v);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prev_result_versions() {
        let prev =
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        assert_eq!(
            CniResult::from_prev(&prev, Version::V1_0_0)
                .unwrap_err()
                .code(),
            1
        );
        assert!(CniResult::from_prev(&prev, Version::V0_4_0).is_ok());
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}], "ips": [{"address": "10.0.0.2/24", "interface": 0}]});
        assert!(CniResult::from_prev(&prev, Version::V1_1_0).is_ok());
        let prev = json!({"cniVersion": "0.1.0"});
        assert_eq!(
            CniResult::from_prev(&prev, Version::V1_0_0)
                .unwrap_err()
                .code(),
            1
        );
        let prev =
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 3}]});
        assert_eq!(
            CniResult::from_prev(&prev, Version::V1_0_0)
                .unwrap_err()
                .code(),
            7
        );
    }

    #[test]
    fn shapes_per_version_and_merge() {
        let ours = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mtu: Some(1500),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.0.0.2/32".into(),
                interface: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let merged = prev.merge(ours).for_version(Version::V0_4_0);
        let v = serde_json::to_value(&merged).unwrap();
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][1].get("mtu").is_none());
        let v = serde_json::to_value(merged.for_version(Version::V1_1_0)).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}
