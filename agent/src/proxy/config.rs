//! The proxy's configuration: from `--map` flags ([`ProxyArgs`]) or a `ProxyConfig` file, both
//! checked completely by [`ProxySpec::validate`] into a [`Plan`] before anything is bound.
//!
//! ```yaml
//! apiVersion: satellite.dev/v1alpha1
//! kind: ProxyConfig
//! spec:
//!   health: 127.0.0.1:9901        # /healthz and /metrics; omit to serve neither
//!   maxConnections: 10000         # all nodes together (default 10000)
//!   idleTimeout: 1h               # no byte either way for this long → close (default 1h)
//!   connectTimeout: 5s            # connecting to the host's public address (default 5s)
//!   drainTimeout: 30s             # after SIGTERM, how long open connections may finish (30s)
//!   splice: true                  # zero-copy splice(2); false copies through user space
//!   nodes:
//!     - nodeIp: 10.0.12.34        # N: a VPC address of this proxy, the node's --node-ip
//!       target: 203.0.113.7       # the GPU host's public address
//!       ports: [10250, 443, 80, 8080, 30000-32767]
//!       maxConnections: 2000      # optional, this node alone
//! ```
//!
//! Durations are [humantime](https://docs.rs/humantime) strings (`500ms`, `30s`, `5m`, `1h`).
//! Ports are numbers or `FIRST-LAST` ranges (a string of comma-separated items also works, as
//! in `--map`). Each node IP and port pair may appear once; the proxy passes N:port through to
//! target:port.
//!
//! One file (over 500 lines with its tests): the flags and the file are two spellings of one
//! configuration, checked by one validation, so they stay side by side.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::parse::addr::unicast as address;
use crate::parse::ports::port_list;

/// The only `apiVersion` the proxy reads.
pub const API_VERSION: &str = "satellite.dev/v1alpha1";
/// The only `kind` the proxy reads.
pub const KIND: &str = "ProxyConfig";

/// Default for [`ProxySpec::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for [`ProxySpec::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default for [`ProxySpec::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`ProxySpec::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `satellite-agent proxy`'s command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxyArgs {
    /// A ProxyConfig file (instead of the flags below)
    #[arg(
        short,
        long,
        conflicts_with_all = ["map", "health", "max_connections", "idle_timeout",
                              "connect_timeout", "drain_timeout", "no_splice"]
    )]
    pub config: Option<PathBuf>,
    /// A node: listen on NODE_IP:port for each port and pass through to PUBLIC_ADDR:port
    /// (repeatable; PORTS like 10250,443,80,8080,30000-32767; IPv6 in brackets)
    #[arg(long = "map", value_name = "NODE_IP=PUBLIC_ADDR:PORTS")]
    pub map: Vec<String>,
    /// Serve /healthz and /metrics on this address, e.g. 127.0.0.1:9901 [default: none]
    #[arg(long, value_name = "ADDR:PORT")]
    pub health: Option<String>,
    /// Open connections allowed, all nodes together; more are reset at once [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Close a connection after this long without a byte either way [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Give up connecting to the public address after this long [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// After SIGTERM/SIGINT, how long open connections may finish [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Copy bytes through user space instead of splice(2)
    #[arg(long)]
    pub no_splice: bool,
    /// Check the configuration, print the listeners and exit; bind nothing
    #[arg(long)]
    pub check: bool,
}

/// A parsed ProxyConfig file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// What to serve.
    pub spec: ProxySpec,
}

/// `spec` of a [`ProxyConfig`] (and what the flags amount to). Values are kept as written so
/// that [`ProxySpec::validate`] can name each bad one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySpec {
    /// Address of the HTTP endpoint for `/healthz` and `/metrics`; none when unset.
    #[serde(default)]
    pub health: Option<String>,
    /// Open connections allowed, all nodes together [`DEFAULT_MAX_CONNECTIONS`].
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Idle timeout [`DEFAULT_IDLE_TIMEOUT`].
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Connect timeout [`DEFAULT_CONNECT_TIMEOUT`].
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Drain timeout [`DEFAULT_DRAIN_TIMEOUT`].
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Zero-copy `splice(2)` (default true).
    #[serde(default)]
    pub splice: Option<bool>,
    /// The nodes served.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
}

/// One node in [`ProxySpec::nodes`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// N: the node's VPC address, where the proxy listens.
    pub node_ip: String,
    /// The GPU host's public address, where the proxy connects.
    pub target: String,
    /// The ports passed through.
    pub ports: Ports,
    /// Open connections allowed for this node alone; unset: only the global limit.
    #[serde(default)]
    pub max_connections: Option<u64>,
}

/// A port list as written: each item a port number or a `FIRST-LAST` range (strings may hold
/// several items separated by commas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports(pub Vec<String>);

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ports;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of ports and FIRST-LAST ranges, e.g. [10250, 443, 30000-32767]")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ports, E> {
                Ok(Ports(vec![v.to_string()]))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ports, E> {
                Ok(Ports(vec![v.to_string()]))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ports, E> {
                Ok(Ports(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Ports, A::Error> {
                let mut items = Vec::new();
                while let Some(Ports(item)) = seq.next_element::<Ports>()? {
                    items.extend(item);
                }
                Ok(Ports(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A problem in the configuration: the field path (such as `spec.nodes[1].ports`) or the flag,
/// and what is wrong, with what a valid value looks like.
pub use crate::config::Problem;

/// Why the configuration cannot be used (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading proxy config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML for a ProxyConfig (unknown field, wrong type, …).
    #[error("proxy config {path} is malformed: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Some values are invalid; every problem is listed.
    #[error("{origin} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// `proxy config <path>` or `the command line`.
        origin: String,
        /// Each invalid value.
        problems: Vec<Problem>,
    },
}

/// A node mapping after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// N: where the proxy listens.
    pub node: IpAddr,
    /// The host's public address: where it connects.
    pub target: IpAddr,
    /// The ports, sorted, each once.
    pub ports: Vec<u16>,
    /// This node's own connection limit.
    pub max_connections: Option<usize>,
}

/// A validated configuration: everything needed to bind and serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The node mappings (no listen address twice).
    pub mappings: Vec<Mapping>,
    /// Where `/healthz` and `/metrics` are served.
    pub health: Option<SocketAddr>,
    /// Global connection limit.
    pub max_connections: usize,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Use `splice(2)`.
    pub splice: bool,
}

impl Plan {
    /// Every listener: (index into [`Plan::mappings`], listen address, target address).
    pub fn listeners(&self) -> impl Iterator<Item = (usize, SocketAddr, SocketAddr)> + '_ {
        self.mappings.iter().enumerate().flat_map(|(i, m)| {
            m.ports
                .iter()
                .map(move |&p| (i, SocketAddr::new(m.node, p), SocketAddr::new(m.target, p)))
        })
    }

    /// Builds the plan from the command line: the file given with `-c`, else the flags.
    ///
    /// Errors: [`ConfigError`], all of them before anything is bound.
    pub fn from_args(args: &ProxyArgs) -> Result<Plan, ConfigError> {
        match &args.config {
            Some(path) => Plan::load(path),
            None => {
                let mut problems = Vec::new();
                let spec = ProxySpec::from_args(args, &mut problems);
                finish(spec.validate(Origin::Flags(&args.map)), problems, || {
                    "the command line".to_owned()
                })
            }
        }
    }

    /// Reads, parses and validates a ProxyConfig file.
    ///
    /// Errors: [`ConfigError::Read`], [`ConfigError::Parse`], [`ConfigError::Invalid`].
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: ProxyConfig =
            serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let mut problems = Vec::new();
        if config.api_version != API_VERSION {
            problems.push(Problem {
                field: "apiVersion".into(),
                message: format!("is {:?}; write {API_VERSION}", config.api_version),
            });
        }
        if config.kind != KIND {
            problems.push(Problem {
                field: "kind".into(),
                message: format!("is {:?}; write {KIND}", config.kind),
            });
        }
        finish(config.spec.validate(Origin::File), problems, || {
            format!("proxy config {}", path.display())
        })
    }
}

fn finish(
    result: Result<Plan, Vec<Problem>>,
    mut problems: Vec<Problem>,
    origin: impl FnOnce() -> String,
) -> Result<Plan, ConfigError> {
    match result {
        Ok(plan) if problems.is_empty() => Ok(plan),
        Ok(_) => Err(ConfigError::Invalid {
            origin: origin(),
            problems,
        }),
        Err(more) => {
            problems.extend(more);
            Err(ConfigError::Invalid {
                origin: origin(),
                problems,
            })
        }
    }
}

/// Where a [`ProxySpec`] came from, to name its fields in problems.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A ProxyConfig file: `spec.nodes[1].ports`.
    File,
    /// The flags; holds the `--map` values as written: `--map 10.0.0.1=…: ports`.
    Flags(&'a [String]),
}

impl Origin<'_> {
    fn top(self, file_field: &str, flag: &str) -> String {
        match self {
            Origin::File => format!("spec.{file_field}"),
            Origin::Flags(_) => format!("--{flag}"),
        }
    }

    fn node(self, index: usize, field: &str) -> String {
        match self {
            Origin::File => format!("spec.nodes[{index}].{field}"),
            Origin::Flags(maps) => format!(
                "--map {} ({field})",
                maps.get(index).map(String::as_str).unwrap_or("?")
            ),
        }
    }

    fn node_ref(self, index: usize) -> String {
        match self {
            Origin::File => format!("spec.nodes[{index}]"),
            Origin::Flags(maps) => {
                format!(
                    "--map {}",
                    maps.get(index).map(String::as_str).unwrap_or("?")
                )
            }
        }
    }
}

impl ProxySpec {
    /// The spec the flags describe; a `--map` that cannot be split into its three parts is
    /// reported in `problems` (and left out).
    pub fn from_args(args: &ProxyArgs, problems: &mut Vec<Problem>) -> ProxySpec {
        let mut nodes = Vec::new();
        for raw in &args.map {
            match split_map(raw) {
                Ok(node) => nodes.push(node),
                Err(message) => {
                    problems.push(Problem {
                        field: format!("--map {raw}"),
                        message,
                    });
                    // Keep the indices of the others aligned with `args.map`.
                    nodes.push(NodeSpec {
                        node_ip: String::new(),
                        target: String::new(),
                        ports: Ports(Vec::new()),
                        max_connections: None,
                    });
                }
            }
        }
        let max_connections = args.max_connections.as_ref().and_then(|raw| {
            raw.parse::<u64>()
                .map_err(|_| {
                    problems.push(Problem {
                        field: "--max-connections".into(),
                        message: format!("{raw:?} is not a whole number; write e.g. 10000"),
                    });
                })
                .ok()
        });
        ProxySpec {
            health: args.health.clone(),
            max_connections,
            idle_timeout: args.idle_timeout.clone(),
            connect_timeout: args.connect_timeout.clone(),
            drain_timeout: args.drain_timeout.clone(),
            splice: Some(!args.no_splice),
            nodes,
        }
    }

    /// Checks every value and returns the plan, or every problem found (with field paths as
    /// [`Origin`] names them). Binds nothing.
    pub fn validate(&self, origin: Origin<'_>) -> Result<Plan, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem =
            |field: String, message: String| problems.push(Problem { field, message });
        // `--map` values that failed to split are already reported: skip them here.
        let skip =
            |i: usize| matches!(origin, Origin::Flags(_)) && self.nodes[i].node_ip.is_empty();

        let max_connections = match self.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(0) => {
                problem(
                    origin.top("maxConnections", "max-connections"),
                    "must be at least 1; write e.g. 10000".into(),
                );
                DEFAULT_MAX_CONNECTIONS
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let mut duration = |value: &Option<String>, file: &str, flag: &str, default: Duration| {
            let Some(raw) = value else { return default };
            match humantime::parse_duration(raw) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problem(
                        origin.top(file, flag),
                        "must be longer than 0; write e.g. 30s".into(),
                    );
                    default
                }
                Err(e) => {
                    problem(
                        origin.top(file, flag),
                        format!("{raw:?} is not a duration ({e}); write e.g. 500ms, 30s, 5m, 1h"),
                    );
                    default
                }
            }
        };
        let idle_timeout = duration(
            &self.idle_timeout,
            "idleTimeout",
            "idle-timeout",
            DEFAULT_IDLE_TIMEOUT,
        );
        let connect_timeout = duration(
            &self.connect_timeout,
            "connectTimeout",
            "connect-timeout",
            DEFAULT_CONNECT_TIMEOUT,
        );
        let drain_timeout = duration(
            &self.drain_timeout,
            "drainTimeout",
            "drain-timeout",
            DEFAULT_DRAIN_TIMEOUT,
        );

        let health = self
            .health
            .as_ref()
            .and_then(|raw| match raw.parse::<SocketAddr>() {
                Ok(addr) if addr.port() == 0 => {
                    problem(
                        origin.top("health", "health"),
                        format!("{raw}: port 0 is not a port; write e.g. 127.0.0.1:9901"),
                    );
                    None
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    problem(
                        origin.top("health", "health"),
                        format!("{raw:?} is not ADDRESS:PORT; write e.g. 127.0.0.1:9901"),
                    );
                    None
                }
            });

        if self.nodes.is_empty() {
            let (field, message) = match origin {
                Origin::File => (
                    "spec.nodes".to_owned(),
                    "no nodes; add one with nodeIp, target and ports".to_owned(),
                ),
                Origin::Flags(_) => (
                    "--map".to_owned(),
                    "no nodes; give --map NODE_IP=PUBLIC_ADDR:PORTS (e.g. \
                     10.0.12.34=203.0.113.7:10250,443,80,8080), or -c proxy.yaml"
                        .to_owned(),
                ),
            };
            problem(field, message);
        }

        let mut mappings = Vec::new();
        // Listen address → the node that claimed it first.
        let mut claimed: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if skip(i) {
                continue;
            }
            let node_ip = address(&node.node_ip, "10.0.12.34 (a VPC address of this proxy)")
                .map_err(|m| problem(origin.node(i, "nodeIp"), m))
                .ok();
            let target = address(&node.target, "203.0.113.7 (the GPU host's public address)")
                .map_err(|m| problem(origin.node(i, "target"), m))
                .ok();
            let ports = port_list(&node.ports.0)
                .map_err(|m| problem(origin.node(i, "ports"), m))
                .ok();
            let node_max = match node.max_connections {
                Some(0) => {
                    problem(
                        origin.node(i, "maxConnections"),
                        "must be at least 1 (leave it out for only the global limit)".into(),
                    );
                    None
                }
                n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            let (Some(node_ip), Some(target), Some(ports)) = (node_ip, target, ports) else {
                continue;
            };
            if node_ip == target {
                problem(
                    origin.node(i, "target"),
                    format!("is the node IP {node_ip} itself; the proxy would connect to itself"),
                );
                continue;
            }
            for &port in &ports {
                let listen = SocketAddr::new(node_ip, port);
                if let Some(&first) = claimed.get(&listen) {
                    problem(
                        origin.node(i, "ports"),
                        format!(
                            "{listen} is already served by {}; each node IP and port may \
                             appear once",
                            origin.node_ref(first)
                        ),
                    );
                } else {
                    claimed.insert(listen, i);
                }
                if health == Some(listen) {
                    problem(
                        origin.top("health", "health"),
                        format!(
                            "{listen} is also a proxied port of {}; pick another port",
                            origin.node_ref(i)
                        ),
                    );
                }
            }
            mappings.push(Mapping {
                node: node_ip,
                target,
                ports,
                max_connections: node_max,
            });
        }
        // A wildcard health address on a proxied port collides with that listener.
        if let Some(h) = health.filter(|h| h.ip().is_unspecified())
            && let Some((listen, &i)) = claimed.iter().find(|(l, _)| l.port() == h.port())
        {
            problem(
                origin.top("health", "health"),
                format!(
                    "{h} covers {listen} of {}; pick another port",
                    origin.node_ref(i)
                ),
            );
        }

        if problems.is_empty() {
            Ok(Plan {
                mappings,
                health,
                max_connections,
                idle_timeout,
                connect_timeout,
                drain_timeout,
                splice: self.splice.unwrap_or(true),
            })
        } else {
            Err(problems)
        }
    }
}

/// Splits `NODE_IP=PUBLIC_ADDR:PORTS` (IPv6 addresses in brackets).
fn split_map(raw: &str) -> Result<NodeSpec, String> {
    let usage = "expected NODE_IP=PUBLIC_ADDR:PORTS, e.g. 10.0.12.34=203.0.113.7:10250,443,80,8080";
    let (node, rest) = raw
        .split_once('=')
        .ok_or_else(|| format!("no '='; {usage}"))?;
    let (target, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("no ']' after the IPv6 address; {usage}"))?;
        let ports = after
            .strip_prefix(':')
            .ok_or_else(|| format!("no ':PORTS' after the address; {usage}"))?;
        (addr, ports)
    } else {
        rest.split_once(':')
            .ok_or_else(|| format!("no ':PORTS' after the address; {usage}"))?
    };
    Ok(NodeSpec {
        node_ip: node.trim_matches(|c| c == '[' || c == ']').to_owned(),
        target: target.to_owned(),
        ports: Ports(vec![ports.to_owned()]),
        max_connections: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(maps: &[&str]) -> ProxyArgs {
        ProxyArgs {
            map: maps.iter().map(|s| (*s).to_owned()).collect(),
            ..ProxyArgs::default()
        }
    }

    fn problems(args: &ProxyArgs) -> Vec<String> {
        match Plan::from_args(args) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn flags_make_a_plan() {
        let plan = Plan::from_args(&flags(&[
            "10.0.12.34=203.0.113.7:10250,443,30000-30002",
            "10.0.12.35=[2001:db8::1]:80",
        ]))
        .unwrap();
        assert_eq!(plan.mappings.len(), 2);
        assert_eq!(plan.mappings[0].ports, [443, 10250, 30000, 30001, 30002]);
        assert_eq!(
            plan.mappings[1].target,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(plan.listeners().count(), 6);
        assert_eq!(plan.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(plan.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert!(plan.splice);
        assert_eq!(plan.health, None);
    }

    #[test]
    fn every_problem_is_named() {
        let mut args = flags(&[
            "10.0.12.34=203.0.113.7:443,0",
            "10.0.12.34",
            "10.0.12.35=203.0.113.300:443",
            "10.0.12.36=203.0.113.7:30010-30000",
            "10.0.12.37=203.0.113.7:",
            "10.0.12.38=203.0.113.7:443",
            "10.0.12.38=203.0.113.8:443",
        ]);
        args.idle_timeout = Some("soon".into());
        args.max_connections = Some("0".into());
        args.health = Some("localhost".into());
        let got = problems(&args);
        let expect = [
            "--map 10.0.12.34: no '='",
            "--max-connections: must be at least 1",
            "--idle-timeout: \"soon\" is not a duration",
            "--health: \"localhost\" is not ADDRESS:PORT",
            "--map 10.0.12.34=203.0.113.7:443,0 (ports): port 0 is not a port",
            "--map 10.0.12.35=203.0.113.300:443 (target): \"203.0.113.300\" is not an IP address",
            "--map 10.0.12.36=203.0.113.7:30010-30000 (ports): range 30010-30000 is reversed",
            "--map 10.0.12.37=203.0.113.7: (ports): no ports",
            "--map 10.0.12.38=203.0.113.8:443 (ports): 10.0.12.38:443 is already served by --map \
             10.0.12.38=203.0.113.7:443",
        ];
        assert_eq!(got.len(), expect.len(), "{got:#?}");
        for (got, want) in got.iter().zip(expect) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn no_nodes_says_how() {
        let got = problems(&flags(&[]));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("give --map NODE_IP=PUBLIC_ADDR:PORTS"),
            "{got:?}"
        );
    }

    #[test]
    fn wildcard_health_on_a_proxied_port() {
        let mut args = flags(&["10.0.12.34=203.0.113.7:443"]);
        args.health = Some("0.0.0.0:443".into());
        let got = problems(&args);
        assert!(
            got[0].starts_with("--health: 0.0.0.0:443 covers 10.0.12.34:443"),
            "{got:?}"
        );
    }

    #[test]
    fn file_round_trip_and_field_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(
            &path,
            "apiVersion: satellite.dev/v1alpha1\nkind: ProxyConfig\nspec:\n  health: \
             127.0.0.1:9901\n  idleTimeout: 90s\n  splice: false\n  nodes:\n    - nodeIp: \
             10.0.12.34\n      target: 203.0.113.7\n      ports: [10250, 443, 30000-30001, \
             \"80,8080\"]\n      maxConnections: 5\n",
        )
        .unwrap();
        let plan = Plan::load(&path).unwrap();
        assert_eq!(plan.mappings[0].ports, [80, 443, 8080, 10250, 30000, 30001]);
        assert_eq!(plan.mappings[0].max_connections, Some(5));
        assert_eq!(plan.idle_timeout, Duration::from_secs(90));
        assert_eq!(plan.health, Some("127.0.0.1:9901".parse().unwrap()));
        assert!(!plan.splice);

        std::fs::write(
            &path,
            "apiVersion: satellite.dev/v1\nkind: ProxyConfig\nspec:\n  nodes:\n    - nodeIp: \
             0.0.0.0\n      target: 203.0.113.7\n      ports: []\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid { problems, .. }) = Plan::load(&path) else {
            panic!("expected problems");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["apiVersion", "spec.nodes[0].nodeIp", "spec.nodes[0].ports"]
        );

        std::fs::write(
            &path,
            "apiVersion: satellite.dev/v1alpha1\nkind: ProxyConfig\nspec:\n  nodes: []\n  \
             maxConnection: 3\n",
        )
        .unwrap();
        let err = Plan::load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { message, .. } if message.contains("maxConnection")),
            "{err}"
        );
    }
}
