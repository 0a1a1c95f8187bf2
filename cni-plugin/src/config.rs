//! The network configuration on stdin (SPEC.md "Network configuration"), parsed and validated
//! before anything touches the host. The keys are listed in the crate documentation.
//!
//! One file (over 500 lines with its tests): the whole stdin schema, its defaults and its
//! validation read together, as the spec's section does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::result::CniResult;
use crate::version::{self, Version};

/// Default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/satellite";
/// Default `logFile`.
pub const DEFAULT_LOG_FILE: &str = "/var/log/satellite-cni.log";
/// The largest stdin accepted: configurations are a few KiB.
pub const MAX_STDIN: usize = 1024 * 1024;

/// A validated network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The negotiated spec version (results and errors are written in it).
    pub version: Version,
    /// `name`: the network's name (also the state directory's name).
    pub name: String,
    /// `subnet`: the node-local IPv4 range pods get /32 addresses from.
    pub subnet: Ipv4Net,
    /// `gateway`: the host side's address, the pods' next hop (default: the subnet's first
    /// address).
    pub gateway: Ipv4Addr,
    /// `mtu`: the veth MTU; `None` means the uplink's.
    pub mtu: Option<u32>,
    /// `uplink`: the interface that carries pod egress; `None` means the one holding the
    /// IPv4 default route.
    pub uplink: Option<String>,
    /// `masquerade`: SNAT pod egress leaving the subnet to the outgoing interface's address.
    pub masquerade: bool,
    /// `routes`: destinations routed via the gateway inside the pod.
    pub routes: Vec<Ipv4Net>,
    /// `dns`: copied into the result.
    pub dns: Map<String, Value>,
    /// `dataDir`: where allocations live (one directory per network name).
    pub data_dir: PathBuf,
    /// `logFile`: the log file (`None` when set to `""`).
    pub log_file: Option<PathBuf>,
    /// `logLevel`.
    pub log_level: tracing::Level,
    /// `runtimeConfig.portMappings` (capability `portMappings`).
    pub port_mappings: Vec<PortMapping>,
    /// `prevResult`, when chained after another plugin (ADD) or on CHECK.
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Top-level keys this plugin does not know (logged, not fatal: runtimes add their own).
    pub unknown_keys: Vec<String>,
}

/// One host port mapping (`runtimeConfig.portMappings[]`, as kubelet and containerd send it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host (1–65535).
    pub host_port: u16,
    /// Port in the pod (1–65535).
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lower case; default `tcp`).
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Only this host address (`""`, `0.0.0.0` or absent: every local address).
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

fn tcp() -> String {
    "tcp".into()
}

impl PortMapping {
    /// The IP protocol number (`IPPROTO_TCP`, …).
    pub fn proto_number(&self) -> u8 {
        match self.protocol.as_str() {
            "udp" => libc::IPPROTO_UDP as u8,
            "sctp" => libc::IPPROTO_SCTP as u8,
            _ => libc::IPPROTO_TCP as u8,
        }
    }
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: Option<String>,
    cni_versions: Option<Vec<String>>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    subnet: Option<String>,
    gateway: Option<Ipv4Addr>,
    mtu: Option<u32>,
    uplink: Option<String>,
    masquerade: Option<bool>,
    routes: Option<Vec<RawRoute>>,
    dns: Option<Map<String, Value>>,
    data_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log_level: Option<String>,
    ipam: Option<Value>,
    runtime_config: Option<RawRuntimeConfig>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    /// Objects, read with case-insensitive keys: kubelet's dockershim and CRI-O send
    /// `hostPort`, but containerd's go-cni marshals a Go struct without JSON tags (`HostPort`,
    /// `ContainerPort`, `Protocol`, `HostIP`), which Go plugins accept because Go's decoder
    /// ignores case.
    #[serde(default)]
    port_mappings: Vec<Map<String, Value>>,
}

/// Keys a runtime or a conflist legitimately puts in a plugin's configuration that this
/// plugin does not need.
const KNOWN_IGNORED: &[&str] = &["capabilities", "args"];

/// Where to log when the configuration could not be parsed: its `logFile` if that much is
/// readable (absolute path, or the default when absent), so configuration errors reach the log
/// file too.
pub fn log_file_hint(stdin: &[u8]) -> Option<PathBuf> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    match value.get("logFile") {
        None => Some(PathBuf::from(DEFAULT_LOG_FILE)),
        Some(Value::String(p)) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(_) => None,
    }
}

/// The version to write an error result in when the configuration could not be parsed: the
/// configuration's `cniVersion` if it is readable and supported, else the newest.
pub fn error_version(stdin: &[u8]) -> &'static str {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .and_then(Version::parse)
        })
        .map_or(version::NEWEST, Version::as_str)
}

impl NetConf {
    /// Parses and validates `stdin`.
    ///
    /// Errors: [`Error::Decode`] (6) when it is not a JSON object; [`Error::InvalidConfig`] (7)
    /// for a missing or invalid key, naming the key and the fix; [`Error::IncompatibleVersion`]
    /// (1) for an unsupported `cniVersion` or `prevResult` version;
    /// [`Error::UnsupportedField`] (2) for an `ipam` section.
    pub fn parse(stdin: &[u8]) -> Result<Self> {
        if stdin.len() > MAX_STDIN {
            return Err(Error::Decode(format!(
                "stdin is {} bytes; a network configuration is at most {MAX_STDIN}",
                stdin.len()
            )));
        }
        let value: Value =
            serde_json::from_slice(stdin).map_err(|e| Error::Decode(e.to_string()))?;
        if !value.is_object() {
            return Err(Error::Decode("stdin is JSON but not an object".into()));
        }
        let raw: Raw =
            serde_json::from_value(value).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let version = version::negotiate(raw.cni_version.as_deref(), raw.cni_versions.as_deref())?;
        let invalid = |msg: String| Error::InvalidConfig(msg);

        let name = raw.name.ok_or_else(|| {
            invalid("\"name\" is missing: name the network (e.g. \"satellite\")".into())
        })?;
        validate_name(&name)?;
        if let Some(kind) = &raw.kind
            && kind.is_empty()
        {
            return Err(invalid(
                "\"type\" is empty: it names the plugin binary".into(),
            ));
        }
        if raw.ipam.is_some() {
            return Err(Error::UnsupportedField(
                "\"ipam\": satellite-cni allocates addresses itself; remove the ipam section and \
                 set \"subnet\" (and optionally \"gateway\", \"dataDir\") at the top level"
                    .into(),
            ));
        }
        let subnet_text = raw.subnet.ok_or_else(|| {
            invalid("\"subnet\" is missing: set the node's pod range, e.g. \"10.88.0.0/24\"".into())
        })?;
        let subnet = parse_subnet(&subnet_text)?;
        let gateway = match raw.gateway {
            Some(gw) => {
                if !subnet.contains(&gw) || gw == subnet.network() || gw == subnet.broadcast() {
                    return Err(invalid(format!(
                        "\"gateway\" {gw} is not a host address of subnet {subnet}"
                    )));
                }
                gw
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        if let Some(mtu) = raw.mtu
            && !(576..=65535).contains(&mtu)
        {
            return Err(invalid(format!(
                "\"mtu\" {mtu} is out of range: IPv4 needs 576 to 65535 (omit it to use the uplink's)"
            )));
        }
        if let Some(uplink) = &raw.uplink {
            crate::env::validate_ifname(uplink).map_err(|_| {
                invalid(format!(
                    "\"uplink\" {uplink:?} is not a valid interface name"
                ))
            })?;
        }
        let routes = match raw.routes {
            None => vec![Ipv4Net::default()],
            Some(routes) => routes
                .iter()
                .map(|r| {
                    r.dst.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| {
                        invalid(format!(
                            "\"routes\" entry {:?} is not an IPv4 CIDR such as \"0.0.0.0/0\"",
                            r.dst
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        let log_level = match raw.log_level.as_deref().unwrap_or("info") {
            "error" => tracing::Level::ERROR,
            "warn" => tracing::Level::WARN,
            "info" => tracing::Level::INFO,
            "debug" => tracing::Level::DEBUG,
            other => {
                return Err(invalid(format!(
                    "\"logLevel\" {other:?} is not one of error, warn, info, debug"
                )));
            }
        };
        let log_file = match raw.log_file {
            None => Some(PathBuf::from(DEFAULT_LOG_FILE)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if p.is_absolute() => Some(p),
            Some(p) => {
                return Err(invalid(format!(
                    "\"logFile\" {} must be an absolute path (or \"\" to log to stderr only)",
                    p.display()
                )));
            }
        };
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(invalid(format!(
                "\"dataDir\" {} must be an absolute path",
                data_dir.display()
            )));
        }
        let port_mappings = raw
            .runtime_config
            .map(|rc| rc.port_mappings)
            .unwrap_or_default()
            .into_iter()
            .map(validate_port_mapping)
            .collect::<Result<Vec<_>>>()?;
        check_port_conflicts(&port_mappings)?;
        let prev_result = raw
            .prev_result
            .as_ref()
            .map(|v| CniResult::from_prev(v, version))
            .transpose()?;
        let unknown_keys = raw
            .other
            .into_keys()
            .filter(|k| !KNOWN_IGNORED.contains(&k.as_str()))
            .collect();
        Ok(Self {
            version,
            name,
            subnet,
            gateway,
            mtu: raw.mtu,
            uplink: raw.uplink,
            masquerade: raw.masquerade.unwrap_or(true),
            routes,
            dns: raw.dns.unwrap_or_default(),
            data_dir,
            log_file,
            log_level,
            port_mappings,
            prev_result,
            valid_attachments: raw.valid_attachments,
            unknown_keys,
        })
    }

    /// How many pod addresses the subnet holds (hosts minus the gateway).
    pub fn capacity(&self) -> usize {
        usable(self.subnet, self.gateway).count()
    }
}

/// The addresses pods may get: the subnet's hosts except network, broadcast and `gateway`.
pub fn usable(subnet: Ipv4Net, gateway: Ipv4Addr) -> impl Iterator<Item = Ipv4Addr> {
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    (first..=last)
        .map(Ipv4Addr::from)
        .filter(move |ip| *ip != gateway)
}

/// SPEC.md: a network name contains only alphanumerics, `_`, `.` and `-`. It also names the
/// state directory, so this keeps it a single path component.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "\"name\" {name:?} must be 1-128 letters, digits, '_', '.' or '-'"
        )))
    }
}

fn parse_subnet(text: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = text.parse().map_err(|_| {
        Error::InvalidConfig(format!(
            "\"subnet\" {text:?} is not an IPv4 CIDR such as \"10.88.0.0/24\" (IPv6 is not supported)"
        ))
    })?;
    if net.addr() != net.network() {
        return Err(Error::InvalidConfig(format!(
            "\"subnet\" {text:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        )));
    }
    if !(8..=30).contains(&net.prefix_len()) {
        return Err(Error::InvalidConfig(format!(
            "\"subnet\" {text:?} must have a prefix length from /8 to /30 (a /30 holds one pod)"
        )));
    }
    Ok(net)
}

fn validate_port_mapping(raw: Map<String, Value>) -> Result<PortMapping> {
    let invalid = |msg: String| Error::InvalidConfig(format!("runtimeConfig.portMappings: {msg}"));
    let get = |key: &str| {
        raw.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };
    let port = |key: &str| -> Result<u16> {
        let value = get(key).ok_or_else(|| invalid(format!("{key} is missing in {raw:?}")))?;
        value
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("{key} {value} is not a port from 1 to 65535")))
    };
    let text = |key: &str| -> Result<Option<String>> {
        match get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(format!("{key} {other} is not a string"))),
        }
    };
    let protocol = text("protocol")?
        .filter(|p| !p.is_empty())
        .unwrap_or_else(tcp)
        .to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid(format!(
            "protocol {protocol:?} is not tcp, udp or sctp"
        )));
    }
    let host_ip = match text("hostIP")?.as_deref() {
        None | Some("") | Some("0.0.0.0") => None,
        Some(text) => Some(text.parse::<Ipv4Addr>().map_err(|_| {
            invalid(format!(
                "hostIP {text:?} is not an IPv4 address (IPv6 host ports are not supported)"
            ))
        })?),
    };
    Ok(PortMapping {
        host_port: port("hostPort")?,
        container_port: port("containerPort")?,
        protocol,
        host_ip,
    })
}

fn check_port_conflicts(mappings: &[PortMapping]) -> Result<()> {
    for (i, a) in mappings.iter().enumerate() {
        if let Some(b) = mappings[..i]
            .iter()
            .find(|b| b.host_port == a.host_port && b.protocol == a.protocol)
        {
            return Err(Error::InvalidConfig(format!(
                "runtimeConfig.portMappings maps host port {}/{} twice (to {} and {})",
                a.protocol, a.host_port, b.container_port, a.container_port
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "sat", "type": "satellite-cni", "subnet": "10.88.0.0/24"})
    }

    #[test]
    fn defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(c.routes, vec![Ipv4Net::default()]);
        assert!(c.masquerade);
        assert_eq!(c.capacity(), 253);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn error_classes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code(), 6);
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            parse(b).unwrap_err().code()
        };
        assert_eq!(with("cniVersion", json!("0.3.1")), 1);
        assert_eq!(with("subnet", json!("10.88.0.1/24")), 7);
        assert_eq!(with("subnet", json!("10.88.0.0/31")), 7);
        assert_eq!(with("subnet", json!("fd00::/64")), 7);
        assert_eq!(with("subnet", json!(42)), 7);
        assert_eq!(with("gateway", json!("10.99.0.1")), 7);
        assert_eq!(with("name", json!("a/b")), 7);
        assert_eq!(with("mtu", json!(100)), 7);
        assert_eq!(with("ipam", json!({"type": "host-local"})), 2);
        assert_eq!(with("prevResult", json!({"cniVersion": "0.4.0"})), 1);
        assert_eq!(
            with(
                "runtimeConfig",
                json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]})
            ),
            7
        );
        assert_eq!(
            with(
                "runtimeConfig",
                json!({"portMappings": [
                    {"hostPort": 80, "containerPort": 80},
                    {"hostPort": 80, "containerPort": 81, "protocol": "TCP"}
                ]})
            ),
            7
        );
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("subnet");
        assert_eq!(parse(missing).unwrap_err().code(), 7);
    }

    #[test]
    fn port_mappings_and_unknown_keys() {
        let mut b = base();
        b["runtimeConfig"] = json!({"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": ""},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "198.18.0.1"},
            // containerd 1.6 (go-cni) spells the keys like Go field names.
            {"HostPort": 9090, "ContainerPort": 90, "Protocol": "tcp", "HostIP": ""}
        ]});
        b["capabilities"] = json!({"portMappings": true});
        b["subnt"] = json!("typo");
        let c = parse(b).unwrap();
        assert_eq!(c.port_mappings[0].protocol, "tcp");
        assert_eq!(c.port_mappings[0].host_ip, None);
        assert_eq!(
            c.port_mappings[1].host_ip,
            Some(Ipv4Addr::new(198, 18, 0, 1))
        );
        assert_eq!(c.unknown_keys, vec!["subnt".to_owned()]);
    }
}
