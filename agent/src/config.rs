//! `NodeConfig`: the one declarative file that describes a satellite node.
//!
//! Modeled on nodeadm's `node.eks.aws/v1alpha1` NodeConfig (`spec.cluster`, `spec.kubelet`),
//! extended with what a host outside AWS needs (`spec.identity`, `spec.node`, `spec.paths`).
//! Parsing rejects unknown fields; [`NodeConfig::validate`] checks every value before
//! anything on the host is touched and reports each problem with its field path.
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
//!   datapath:                                # optional: tc NAT with the proxy (see datapath::spec)
//!     peers: [203.0.113.7]
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use satellite_credential_plugin::input::{Region, RoleArn, SessionName, parse_endpoint};

use crate::datapath::spec::DatapathSpec;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this agent reads.
pub const API_VERSION: &str = "satellite.dev/v1alpha1";
/// The only `kind` this agent reads.
pub const KIND: &str = "NodeConfig";

/// A parsed node configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// The node's specification.
    pub spec: NodeSpec,
}

/// `spec` of a [`NodeConfig`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// The EKS cluster to join.
    pub cluster: ClusterSpec,
    /// The AWS identity the node authenticates as.
    pub identity: IdentitySpec,
    /// The node's VPC address.
    pub node: NodeAddressSpec,
    /// kubelet settings.
    #[serde(default)]
    pub kubelet: KubeletSpec,
    /// The container runtime.
    #[serde(default)]
    pub container_runtime: ContainerRuntimeSpec,
    /// Node-local range for pod addresses (pods are masqueraded behind the host, so it only
    /// must not overlap destinations the pods talk to); default `10.88.0.0/16`.
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: String,
    /// Where files are written on the host.
    #[serde(default)]
    pub paths: Paths,
    /// The host datapath `run` installs and keeps (N on `lo`, peer routes, tc NAT with the
    /// proxy); absent: `run` leaves the host's network alone. See
    /// [`crate::datapath::spec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathSpec>,
}

fn default_pod_cidr() -> String {
    "10.88.0.0/16".into()
}

/// `spec.cluster`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The EKS cluster name (signed into every token as `x-k8s-aws-id`).
    pub name: String,
    /// The cluster's region, e.g. `us-west-2`.
    pub region: String,
    /// The API server URL; with [`ClusterSpec::certificate_authority`] it skips
    /// `eks:DescribeCluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_endpoint: Option<String>,
    /// The cluster CA bundle, base64 of the PEM (as in nodeadm and DescribeCluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// The service CIDR (`cidr` in nodeadm); its `.10` becomes `clusterDNS`. Else taken from
    /// DescribeCluster's `kubernetesNetworkConfig.serviceIpv4Cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// AWS endpoint overrides (for private endpoints, or a local STS/EKS/EC2 in tests).
    #[serde(default)]
    pub aws_endpoints: AwsEndpoints,
}

/// `spec.cluster.awsEndpoints`: per-service endpoint URLs; unset means the regional default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsEndpoints {
    /// STS (tokens are presigned for it, and AssumeRole goes there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<String>,
    /// EKS (DescribeCluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<String>,
    /// EC2 (network interfaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<String>,
}

/// `spec.identity`: secrets are referenced, never inlined.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySpec {
    /// The role mapped in aws-auth to `system:node:<node name>`.
    pub role_arn: String,
    /// `RoleSessionName`; default `satellite-<hostname>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// An AWS shared credentials file with the base credentials (mode 0600, owned by root);
    /// unset: the standard chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// The profile in that file (or in the standard config); default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// `spec.node`: exactly one way to obtain the node's VPC IP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddressSpec {
    /// The VPC IP itself (an ENI's primary private IP created elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// An existing ENI whose primary private IP is the node IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    /// Create (once; found again by tag afterwards) an ENI in this subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_eni: Option<CreateEni>,
}

/// `spec.node.createEni`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEni {
    /// A private subnet of the cluster's VPC, `subnet-…`.
    pub subnet_id: String,
    /// Security groups for the ENI (the cluster's secondary security group), `sg-…`.
    pub security_group_ids: Vec<String>,
}

/// `spec.kubelet`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletSpec {
    /// The kubelet binary; default `/usr/bin/kubelet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Fields merged over the rendered KubeletConfiguration (top-level keys replace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Extra command-line flags, appended after the rendered ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Node labels (in addition to the ones the agent sets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints as `key[=value]:Effect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
}

/// `spec.containerRuntime`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerRuntimeSpec {
    /// The CRI endpoint, `unix://…`.
    pub endpoint: String,
}

impl Default for ContainerRuntimeSpec {
    fn default() -> Self {
        ContainerRuntimeSpec {
            endpoint: "unix:///run/containerd/containerd.sock".into(),
        }
    }
}

/// `spec.paths`: where rendered files go. All are absolute and resolved under `--root`; an
/// omitted key keeps its default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Paths {
    /// kubelet's state directory (`--root-dir`).
    pub kubelet_dir: PathBuf,
    /// Cluster CA and kubelet PKI.
    pub pki_dir: PathBuf,
    /// kubelet's KubeletConfiguration and kubeconfig.
    pub kubelet_config_dir: PathBuf,
    /// CNI network configurations.
    pub cni_config_dir: PathBuf,
    /// CNI plugin binaries (`satellite-cni` and `loopback` must be there).
    pub cni_bin_dir: PathBuf,
    /// `satellite-cni`'s allocation store (`dataDir` of the conflist).
    pub cni_state_dir: PathBuf,
    /// `satellite-cni`'s log file (`logFile` of the conflist).
    pub cni_log_file: PathBuf,
    /// sysctl drop-ins.
    pub sysctl_dir: PathBuf,
    /// systemd units.
    pub systemd_dir: PathBuf,
    /// The credential plugin binary kubelet's kubeconfig runs.
    pub credential_plugin: PathBuf,
    /// Cache directory of the credential plugin.
    pub credential_cache_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            kubelet_dir: "/var/lib/kubelet".into(),
            pki_dir: "/etc/kubernetes/pki".into(),
            kubelet_config_dir: "/etc/kubernetes/kubelet".into(),
            cni_config_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_state_dir: "/var/lib/cni/satellite".into(),
            cni_log_file: "/var/log/satellite-cni.log".into(),
            sysctl_dir: "/etc/sysctl.d".into(),
            systemd_dir: "/etc/systemd/system".into(),
            credential_plugin: "/usr/local/bin/satellite-credential-plugin".into(),
            credential_cache_dir: "/var/cache/satellite/credentials".into(),
        }
    }
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
    /// Reads, parses and validates `path`.
    ///
    /// Errors: [`ConfigError::Read`], [`ConfigError::Parse`], [`ConfigError::Invalid`].
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = NodeConfig::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Parses YAML text (no validation beyond the schema).
    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Every invalid value, with its field path; empty when the config is usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |field: &str, result: Result<(), String>| {
            if let Err(message) = result {
                problems.push(Problem {
                    field: field.to_owned(),
                    message,
                });
            }
        };
        check("apiVersion", expect_eq(&self.api_version, API_VERSION));
        check("kind", expect_eq(&self.kind, KIND));
        let spec = &self.spec;
        let cluster = &spec.cluster;
        check(
            "spec.cluster.name",
            satellite_credential_plugin::input::ClusterId::new(&cluster.name)
                .map(drop)
                .map_err(|e| e.to_string()),
        );
        check(
            "spec.cluster.region",
            Region::new(&cluster.region)
                .map(drop)
                .map_err(|e| e.to_string()),
        );
        match (&cluster.api_server_endpoint, &cluster.certificate_authority) {
            (Some(endpoint), Some(ca)) => {
                check("spec.cluster.apiServerEndpoint", https_url(endpoint));
                check("spec.cluster.certificateAuthority", base64_pem(ca));
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => check(
                "spec.cluster",
                Err(
                    "set both apiServerEndpoint and certificateAuthority, or neither (then \
                     eks:DescribeCluster provides them)"
                        .into(),
                ),
            ),
        }
        if let Some(cidr) = &cluster.cidr {
            check(
                "spec.cluster.cidr",
                crate::render::cluster_dns(cidr).map(drop),
            );
        }
        for (field, endpoint) in [
            ("spec.cluster.awsEndpoints.sts", &cluster.aws_endpoints.sts),
            ("spec.cluster.awsEndpoints.eks", &cluster.aws_endpoints.eks),
            ("spec.cluster.awsEndpoints.ec2", &cluster.aws_endpoints.ec2),
        ] {
            if let Some(url) = endpoint {
                check(
                    field,
                    parse_endpoint(url).map(drop).map_err(|e| e.to_string()),
                );
            }
        }

        let identity = &spec.identity;
        check(
            "spec.identity.roleArn",
            RoleArn::parse(&identity.role_arn)
                .map_err(|e| e.to_string())
                .and_then(|arn| {
                    let region = Region::new(&cluster.region).map_err(|e| e.to_string())?;
                    if arn.partition() == region.partition() {
                        Ok(())
                    } else {
                        Err(format!(
                            "partition {} does not match region {}",
                            arn.partition().as_str(),
                            cluster.region
                        ))
                    }
                }),
        );
        if let Some(name) = &identity.session_name {
            check(
                "spec.identity.sessionName",
                SessionName::new(name).map(drop).map_err(|e| e.to_string()),
            );
        }
        if let Some(file) = &identity.credentials_file {
            check("spec.identity.credentialsFile", absolute(file));
        }

        let node = &spec.node;
        let ways = [
            node.ip.is_some(),
            node.eni_id.is_some(),
            node.create_eni.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() != 1 {
            check(
                "spec.node",
                Err("set exactly one of ip, eniId, createEni".into()),
            );
        }
        if let Some(ip) = node.ip {
            check("spec.node.ip", node_ip(ip));
        }
        if let Some(id) = &node.eni_id {
            check("spec.node.eniId", aws_id(id, "eni-"));
        }
        if let Some(create) = &node.create_eni {
            check(
                "spec.node.createEni.subnetId",
                aws_id(&create.subnet_id, "subnet-"),
            );
            if create.security_group_ids.is_empty() {
                check(
                    "spec.node.createEni.securityGroupIds",
                    Err("list at least one security group (the cluster's secondary group)".into()),
                );
            }
            for (i, sg) in create.security_group_ids.iter().enumerate() {
                check(
                    &format!("spec.node.createEni.securityGroupIds[{i}]"),
                    aws_id(sg, "sg-"),
                );
            }
        }

        check(
            "spec.podCidr",
            crate::render::cluster_dns(&spec.pod_cidr).map(drop),
        );
        let kubelet = &spec.kubelet;
        if let Some(binary) = &kubelet.binary {
            check("spec.kubelet.binary", absolute(binary));
        }
        for (key, value) in &kubelet.labels {
            check(
                &format!("spec.kubelet.labels[{key}]"),
                crate::render::label(key, value),
            );
        }
        for (i, taint) in kubelet.taints.iter().enumerate() {
            check(
                &format!("spec.kubelet.taints[{i}]"),
                crate::render::taint(taint).map(drop),
            );
        }
        for (i, flag) in kubelet.flags.iter().enumerate() {
            if !flag.starts_with("--") {
                check(
                    &format!("spec.kubelet.flags[{i}]"),
                    Err(format!("{flag:?} is not a --flag[=value]")),
                );
            }
        }
        check(
            "spec.containerRuntime.endpoint",
            if spec.container_runtime.endpoint.starts_with("unix:///") {
                Ok(())
            } else {
                Err("must be a unix:///path socket URL".into())
            },
        );
        if let Some(datapath) = &spec.datapath {
            for problem in datapath.validate(node.ip) {
                check(
                    &format!("spec.datapath.{}", problem.field),
                    Err(problem.message),
                );
            }
        }
        let paths = &spec.paths;
        for (field, path) in [
            ("kubeletDir", &paths.kubelet_dir),
            ("pkiDir", &paths.pki_dir),
            ("kubeletConfigDir", &paths.kubelet_config_dir),
            ("cniConfigDir", &paths.cni_config_dir),
            ("cniBinDir", &paths.cni_bin_dir),
            ("cniStateDir", &paths.cni_state_dir),
            ("cniLogFile", &paths.cni_log_file),
            ("sysctlDir", &paths.sysctl_dir),
            ("systemdDir", &paths.systemd_dir),
            ("credentialPlugin", &paths.credential_plugin),
            ("credentialCacheDir", &paths.credential_cache_dir),
        ] {
            check(&format!("spec.paths.{field}"), absolute(path));
        }
        problems
    }
}

/// The Fargate-style node name for VPC IP `ip` in `region`:
/// `fargate-ip-<a>-<b>-<c>-<d>.<region>.compute.internal` (also on us-east-1).
pub fn node_name(ip: Ipv4Addr, region: &str) -> String {
    let [a, b, c, d] = ip.octets();
    format!("fargate-ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
}

fn expect_eq(got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("is {got:?}, must be {want:?}"))
    }
}

fn https_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() {
        return Err(format!("{url:?} must be an https://host[:port] URL"));
    }
    Ok(())
}

fn base64_pem(data: &str) -> Result<(), String> {
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            format!("not base64 ({e}); paste DescribeCluster's certificateAuthority.data")
        })?;
    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err("decodes to something other than a PEM certificate".into())
    }
}

fn absolute(path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(format!("{} must be an absolute path", path.display()))
    }
}

fn aws_id(id: &str, prefix: &str) -> Result<(), String> {
    let rest = id.strip_prefix(prefix).unwrap_or_default();
    if !rest.is_empty() && rest.len() <= 17 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not an id of the form {prefix}0123456789abcdef0"
        ))
    }
}

fn node_ip(ip: Ipv4Addr) -> Result<(), String> {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        Err(format!(
            "{ip} cannot be a node IP (kubelet rejects loopback and special addresses)"
        ))
    } else {
        Ok(())
    }
}
