//! The NodeConfig file as written: serde types that accept any value of the right shape
//! (unknown fields are refused). [`super::NodeConfig`] is parsed from these with every
//! problem reported at once; nothing else reads them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::datapath::spec::RawDatapathSpec;
use serde::{Deserialize, Serialize};

/// A node configuration file as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Must be [`super::API_VERSION`].
    pub api_version: String,
    /// Must be [`super::KIND`].
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
    /// kube-proxy, supervised by `run` next to kubelet (NodePort Services on N; EKS's
    /// kube-proxy DaemonSet skips these nodes); absent: not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy: Option<KubeProxySpec>,
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
    pub datapath: Option<RawDatapathSpec>,
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

/// `spec.kubeProxy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxySpec {
    /// The kube-proxy binary; default `/usr/bin/kube-proxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Fields merged over the rendered KubeProxyConfiguration (top-level keys replace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, serde_json::Value>,
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

impl NodeConfig {
    /// Parses YAML text into the raw form (shape only: unknown fields and wrong types fail).
    ///
    /// Errors: the parser's message with line and column.
    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}
