//! `NodeConfig`: the one declarative file that describes a satellite node.
//!
//! Modeled on nodeadm's `node.eks.aws/v1alpha1` NodeConfig (`spec.cluster`, `spec.kubelet`),
//! extended with what a host outside AWS needs (`spec.identity`, `spec.node`, `spec.paths`).
//! The file is read into [`raw`] types (shape only; unknown fields are refused), then parsed
//! into [`NodeConfig`], whose fields can only hold valid values; every problem is reported at
//! once with its field path, before anything on the host is touched.
//!
//! ```yaml
//! apiVersion: satellite.dev/v1alpha1
//! kind: NodeConfig
//! spec:
//!   cluster:
//!     name: gpu-prod
//!     region: us-west-2
//!     apiServerEndpoint: https://ABC.gr7.us-west-2.eks.amazonaws.com   # optional, with CA
//!     certificateAuthority: LS0tLS1CRUdJTi...                           # base64 PEM, optional
//!     cidr: 172.20.0.0/16                                                # service CIDR, optional
//!   identity:
//!     roleArn: arn:aws:iam::123456789012:role/satellite-node
//!     credentialsFile: /etc/satellite/aws-credentials   # AWS shared credentials file, 0600
//!     profile: default
//!   node:
//!     eniId: eni-0123456789abcdef0          # or `ip:`, or `createEni: {subnetId, securityGroupIds}`
//!   kubelet:
//!     labels: {nvidia.com/gpu.product: NVIDIA-A10G}
//!     taints: ["nvidia.com/gpu=present:NoSchedule"]
//!     config: {maxPods: 110}                 # merged over the rendered KubeletConfiguration
//!     flags: ["--v=2"]
//!   kubeProxy:                               # optional: NodePort Services on the node IP
//!     binary: /usr/bin/kube-proxy
//!     config: {iptables: {syncPeriod: 30s}}  # merged over the rendered KubeProxyConfiguration
//!   datapath:                                # optional: tc NAT with the proxy (see datapath::spec)
//!     peers: [203.0.113.7]
//! ```

mod parse;
pub mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use satellite_credential_plugin::input::{ClusterId, Region, RoleArn, SessionName};

use crate::datapath::spec::DatapathSpec;
use crate::parse::aws::{EniId, SecurityGroupId, SubnetId};
use crate::parse::kube::Taint;
use crate::parse::text::{Endpoint, HttpsUrl};
pub use raw::Paths;

/// The only `apiVersion` this agent reads.
pub const API_VERSION: &str = "satellite.dev/v1alpha1";
/// The only `kind` this agent reads.
pub const KIND: &str = "NodeConfig";
/// kube-proxy's binary when `spec.kubeProxy.binary` is not set.
pub const DEFAULT_KUBE_PROXY: &str = "/usr/bin/kube-proxy";
/// kubelet's binary when `spec.kubelet.binary` is not set.
pub const DEFAULT_KUBELET: &str = "/usr/bin/kubelet";

/// A valid node configuration (parsed from [`raw::NodeConfig`] by [`NodeConfig::try_from`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The node's specification.
    pub spec: NodeSpec,
}

/// `spec` of a [`NodeConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The EKS cluster to join.
    pub cluster: ClusterSpec,
    /// The AWS identity the node authenticates as.
    pub identity: IdentitySpec,
    /// How the node's VPC address is obtained.
    pub node: NodeAddress,
    /// kubelet settings.
    pub kubelet: KubeletSpec,
    /// kube-proxy settings; `None`: `run` does not run kube-proxy.
    pub kube_proxy: Option<KubeProxySpec>,
    /// The CRI endpoint, `unix:///…`.
    pub container_runtime_endpoint: String,
    /// Node-local range for pod addresses (default `10.88.0.0/16`).
    pub pod_cidr: Ipv4Net,
    /// Where files are written on the host (all absolute).
    pub paths: Paths,
    /// The host datapath `run` installs and keeps; `None`: the host's network is left alone.
    pub datapath: Option<DatapathSpec>,
}

/// `spec.cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// The EKS cluster name (signed into every token as `x-k8s-aws-id`).
    pub name: ClusterId,
    /// The cluster's region.
    pub region: Region,
    /// The API server and its CA; `None`: from `eks:DescribeCluster`.
    pub api_server: Option<ApiServer>,
    /// The service CIDR (its `.10` is `clusterDNS`); `None`: from DescribeCluster.
    pub cidr: Option<Ipv4Net>,
    /// AWS endpoint overrides; `None`: the regional default.
    pub aws_endpoints: AwsEndpoints,
}

/// `spec.cluster.apiServerEndpoint` with `certificateAuthority`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiServer {
    /// The API server URL.
    pub endpoint: HttpsUrl,
    /// The cluster CA bundle, PEM (decoded from the file's base64).
    pub ca_pem: String,
}

/// `spec.cluster.awsEndpoints`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsEndpoints {
    /// STS (tokens are presigned for it, and AssumeRole goes there).
    pub sts: Option<Endpoint>,
    /// EKS (DescribeCluster).
    pub eks: Option<Endpoint>,
    /// EC2 (network interfaces).
    pub ec2: Option<Endpoint>,
}

/// `spec.identity`: secrets are referenced, never inlined.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySpec {
    /// The role mapped in aws-auth to `system:node:<node name>`, in the region's partition.
    pub role_arn: RoleArn,
    /// `RoleSessionName`; `None`: `satellite-<hostname>`.
    pub session_name: Option<SessionName>,
    /// An AWS shared credentials file (absolute) with the base credentials; `None`: the
    /// standard chain.
    pub credentials_file: Option<PathBuf>,
    /// The profile in that file (or in the standard config); `None`: `default`.
    pub profile: Option<String>,
}

/// `spec.node`: the one way the node's VPC IP is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAddress {
    /// `ip`: the VPC IP itself.
    Ip(Ipv4Addr),
    /// `eniId`: an existing ENI whose primary private IP is the node IP.
    Eni(EniId),
    /// `createEni`: an ENI this host creates once (found again by tag).
    CreateEni(CreateEni),
}

impl NodeAddress {
    /// The node IP when the config fixes it (`spec.node.ip`).
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            NodeAddress::Ip(ip) => Some(*ip),
            NodeAddress::Eni(_) | NodeAddress::CreateEni(_) => None,
        }
    }
}

/// `spec.node.createEni`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateEni {
    /// A private subnet of the cluster's VPC.
    pub subnet_id: SubnetId,
    /// Security groups for the ENI (at least one).
    pub security_group_ids: Vec<SecurityGroupId>,
}

/// `spec.kubelet`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletSpec {
    /// The kubelet binary (absolute; default [`DEFAULT_KUBELET`]).
    pub binary: PathBuf,
    /// Fields merged over the rendered KubeletConfiguration (top-level keys replace).
    pub config: BTreeMap<String, serde_json::Value>,
    /// Extra `--flag[=value]`s, appended after the rendered ones.
    pub flags: Vec<String>,
    /// Node labels (valid keys and values) besides the agent's.
    pub labels: BTreeMap<String, String>,
    /// Taints registered with the node.
    pub taints: Vec<Taint>,
}

/// `spec.kubeProxy`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeProxySpec {
    /// The kube-proxy binary (absolute; default [`DEFAULT_KUBE_PROXY`]).
    pub binary: PathBuf,
    /// Fields merged over the rendered KubeProxyConfiguration (top-level keys replace).
    pub config: BTreeMap<String, serde_json::Value>,
}

/// A problem in a configuration (NodeConfig, ProxyConfig, `spec.datapath`, or the flags that
/// stand for them): the field path or flag, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `spec.identity.roleArn`, or the flag.
    pub field: String,
    /// What is wrong and what a valid value looks like.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects [`Problem`]s while parsing: each check either yields its value or records the
/// problem under its field path.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// The value of `result`, or `None` with its error recorded under `field`.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    /// Records a problem.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Every problem, in the order found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Why a NodeConfig could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading node config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML for a NodeConfig (unknown field, wrong type, …).
    #[error("node config {path} is malformed: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but some values are invalid; every problem is listed.
    #[error("node config {path} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each invalid field.
        problems: Vec<Problem>,
    },
}

impl NodeConfig {
    /// Reads and parses `path`.
    ///
    /// Errors: [`ConfigError::Read`], [`ConfigError::Parse`], [`ConfigError::Invalid`].
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        NodeConfig::from_yaml(&text, path)
    }

    /// Parses YAML `text` (read from `path`, which only names it in errors).
    ///
    /// Errors: [`ConfigError::Parse`] for the wrong shape, [`ConfigError::Invalid`] with
    /// every invalid value.
    pub fn from_yaml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let raw = raw::NodeConfig::parse(text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        NodeConfig::try_from(raw).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

/// The Fargate-style node name for VPC IP `ip` in `region`:
/// `fargate-ip-<a>-<b>-<c>-<d>.<region>.compute.internal` (also on us-east-1).
pub fn node_name(ip: Ipv4Addr, region: &Region) -> String {
    let [a, b, c, d] = ip.octets();
    format!("fargate-ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
}

/// The inverse of [`node_name`]: the IP a `fargate-ip-<a>-<b>-<c>-<d>.<region>.compute.internal`
/// name encodes, `None` for any other name (also for `fargate-ip-010-…`, which [`node_name`]
/// never writes).
pub fn node_ip_from_name(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_prefix("fargate-ip-")?;
    let (dashed, domain) = rest.split_once('.')?;
    let region = domain.strip_suffix(".compute.internal")?;
    if region.is_empty() || region.contains('.') {
        return None;
    }
    let ip: Ipv4Addr = dashed.replace('-', ".").parse().ok()?;
    let [a, b, c, d] = ip.octets();
    (dashed == format!("{a}-{b}-{c}-{d}")).then_some(ip)
}

/// `clusterDNS` for a service CIDR: its network address + 10 (`10.100.0.0/16` →
/// `10.100.0.10`).
///
/// Errors: the CIDR is smaller than /28.
pub fn cluster_dns(cidr: Ipv4Net) -> Result<Ipv4Addr, String> {
    if cidr.prefix_len() > 28 {
        return Err(format!(
            "{cidr} is too small to hold the DNS service address (.10)"
        ));
    }
    Ok(Ipv4Addr::from(u32::from(cidr.network()) + 10))
}
