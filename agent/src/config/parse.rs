//! Parsing a [`raw::NodeConfig`] into a [`NodeConfig`]: one function per section, each
//! returning its typed value or `None` after recording its problems, so every problem of the
//! file is reported at once, in field order.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use satellite_credential_plugin::input::{ClusterId, Region, RoleArn, SessionName};

use super::{
    API_VERSION, ApiServer, AwsEndpoints, ClusterSpec, CreateEni, DEFAULT_KUBE_PROXY,
    DEFAULT_KUBELET, IdentitySpec, KIND, KubeProxySpec, KubeletSpec, NodeAddress, NodeConfig,
    NodeSpec, Paths, Problem, Problems, cluster_dns, raw,
};
use crate::datapath::spec::DatapathSpec;
use crate::parse::aws::{EniId, SecurityGroupId, SubnetId};
use crate::parse::kube::{Taint, label};
use crate::parse::text::{Endpoint, HttpsUrl, absolute, base64_pem, ipv4_net};

impl TryFrom<raw::NodeConfig> for NodeConfig {
    type Error = Vec<Problem>;

    /// Parses every field; the error lists every problem with its field path.
    fn try_from(raw: raw::NodeConfig) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        p.check("apiVersion", expect_eq(&raw.api_version, API_VERSION));
        p.check("kind", expect_eq(&raw.kind, KIND));
        let spec = raw.spec;
        let cluster = cluster(&mut p, spec.cluster);
        let identity = identity(&mut p, spec.identity, cluster.as_ref().map(|c| &c.region));
        let node = node(&mut p, spec.node);
        let pod_cidr = p.check("spec.podCidr", cidr_with_dns(&spec.pod_cidr));
        let kubelet = kubelet(&mut p, spec.kubelet);
        let kube_proxy = match spec.kube_proxy {
            Some(raw) => kube_proxy(&mut p, raw).map(Some),
            None => Some(None),
        };
        let endpoint = spec.container_runtime.endpoint;
        if !endpoint.starts_with("unix:///") {
            p.add(
                "spec.containerRuntime.endpoint",
                "must be a unix:///path socket URL",
            );
        }
        let datapath = match spec.datapath {
            Some(raw) => {
                let node_ip = node.as_ref().and_then(NodeAddress::ip);
                match DatapathSpec::parse(raw, node_ip) {
                    Ok(datapath) => Some(Some(datapath)),
                    Err(problems) => {
                        for problem in problems {
                            p.add(format!("spec.datapath.{}", problem.field), problem.message);
                        }
                        None
                    }
                }
            }
            None => Some(None),
        };
        paths(&mut p, &spec.paths);
        match (
            cluster, identity, node, pod_cidr, kubelet, kube_proxy, datapath,
        ) {
            (
                Some(cluster),
                Some(identity),
                Some(node),
                Some(pod_cidr),
                Some(kubelet),
                Some(kube_proxy),
                Some(datapath),
            ) if p.0.is_empty() => Ok(NodeConfig {
                spec: NodeSpec {
                    cluster,
                    identity,
                    node,
                    kubelet,
                    kube_proxy,
                    container_runtime_endpoint: endpoint,
                    pod_cidr,
                    paths: spec.paths,
                    datapath,
                },
            }),
            _ => Err(p.into_vec()),
        }
    }
}

fn cluster(p: &mut Problems, raw: raw::ClusterSpec) -> Option<ClusterSpec> {
    let name = p.check(
        "spec.cluster.name",
        ClusterId::new(&raw.name).map_err(|e| e.to_string()),
    );
    let region = p.check(
        "spec.cluster.region",
        Region::new(&raw.region).map_err(|e| e.to_string()),
    );
    let api_server = match (raw.api_server_endpoint, raw.certificate_authority) {
        (Some(endpoint), Some(ca)) => {
            let endpoint = p.check("spec.cluster.apiServerEndpoint", HttpsUrl::new(&endpoint));
            let ca_pem = p.check("spec.cluster.certificateAuthority", base64_pem(&ca));
            Some(
                endpoint
                    .zip(ca_pem)
                    .map(|(endpoint, ca_pem)| ApiServer { endpoint, ca_pem }),
            )
        }
        (None, None) => Some(None),
        (Some(_), None) | (None, Some(_)) => {
            p.add(
                "spec.cluster",
                "set both apiServerEndpoint and certificateAuthority, or neither (then \
                 eks:DescribeCluster provides them)",
            );
            None
        }
    };
    let cidr = match &raw.cidr {
        Some(cidr) => p.check("spec.cluster.cidr", cidr_with_dns(cidr)).map(Some),
        None => Some(None),
    };
    let mut endpoint = |field: &str, url: Option<String>| match url {
        Some(url) => p.check(field, Endpoint::new(&url)).map(Some),
        None => Some(None),
    };
    let sts = endpoint("spec.cluster.awsEndpoints.sts", raw.aws_endpoints.sts);
    let eks = endpoint("spec.cluster.awsEndpoints.eks", raw.aws_endpoints.eks);
    let ec2 = endpoint("spec.cluster.awsEndpoints.ec2", raw.aws_endpoints.ec2);
    Some(ClusterSpec {
        name: name?,
        region: region?,
        api_server: api_server?,
        cidr: cidr?,
        aws_endpoints: AwsEndpoints {
            sts: sts?,
            eks: eks?,
            ec2: ec2?,
        },
    })
}

fn identity(
    p: &mut Problems,
    raw: raw::IdentitySpec,
    region: Option<&Region>,
) -> Option<IdentitySpec> {
    let role_arn = p.check(
        "spec.identity.roleArn",
        RoleArn::parse(&raw.role_arn)
            .map_err(|e| e.to_string())
            .and_then(|arn| match region {
                Some(region) if arn.partition() != region.partition() => Err(format!(
                    "partition {} does not match region {}",
                    arn.partition().as_str(),
                    region
                )),
                _ => Ok(arn),
            }),
    );
    let session_name = match &raw.session_name {
        Some(name) => p
            .check(
                "spec.identity.sessionName",
                SessionName::new(name).map_err(|e| e.to_string()),
            )
            .map(Some),
        None => Some(None),
    };
    let credentials_file = match &raw.credentials_file {
        Some(file) => p
            .check("spec.identity.credentialsFile", absolute(file))
            .map(Some),
        None => Some(None),
    };
    Some(IdentitySpec {
        role_arn: role_arn?,
        session_name: session_name?,
        credentials_file: credentials_file?,
        profile: raw.profile,
    })
}

fn node(p: &mut Problems, raw: raw::NodeAddressSpec) -> Option<NodeAddress> {
    match (raw.ip, raw.eni_id, raw.create_eni) {
        (Some(ip), None, None) => p.check("spec.node.ip", node_ip(ip)).map(NodeAddress::Ip),
        (None, Some(id), None) => p
            .check("spec.node.eniId", EniId::new(&id))
            .map(NodeAddress::Eni),
        (None, None, Some(create)) => {
            let subnet_id = p.check(
                "spec.node.createEni.subnetId",
                SubnetId::new(&create.subnet_id),
            );
            if create.security_group_ids.is_empty() {
                p.add(
                    "spec.node.createEni.securityGroupIds",
                    "list at least one security group (the cluster's secondary group)",
                );
            }
            let groups: Vec<Option<SecurityGroupId>> = create
                .security_group_ids
                .iter()
                .enumerate()
                .map(|(i, sg)| {
                    p.check(
                        format!("spec.node.createEni.securityGroupIds[{i}]"),
                        SecurityGroupId::new(sg),
                    )
                })
                .collect();
            let security_group_ids: Option<Vec<SecurityGroupId>> = groups.into_iter().collect();
            Some(NodeAddress::CreateEni(CreateEni {
                subnet_id: subnet_id?,
                security_group_ids: security_group_ids.filter(|g| !g.is_empty())?,
            }))
        }
        (ip, eni_id, create_eni) => {
            p.add("spec.node", "set exactly one of ip, eniId, createEni");
            // Still report what is wrong inside each of them.
            if let Some(ip) = ip {
                p.check("spec.node.ip", node_ip(ip));
            }
            if let Some(id) = eni_id {
                p.check("spec.node.eniId", EniId::new(&id));
            }
            if let Some(create) = create_eni {
                node(
                    p,
                    raw::NodeAddressSpec {
                        create_eni: Some(create),
                        ..raw::NodeAddressSpec::default()
                    },
                );
            }
            None
        }
    }
}

fn kube_proxy(p: &mut Problems, raw: raw::KubeProxySpec) -> Option<KubeProxySpec> {
    let binary = match &raw.binary {
        Some(binary) => p.check("spec.kubeProxy.binary", absolute(binary)),
        None => Some(PathBuf::from(DEFAULT_KUBE_PROXY)),
    };
    Some(KubeProxySpec {
        binary: binary?,
        config: raw.config,
    })
}

fn kubelet(p: &mut Problems, raw: raw::KubeletSpec) -> Option<KubeletSpec> {
    let binary = match &raw.binary {
        Some(binary) => p.check("spec.kubelet.binary", absolute(binary)),
        None => Some(PathBuf::from(DEFAULT_KUBELET)),
    };
    let mut labels_ok = true;
    for (key, value) in &raw.labels {
        labels_ok &= p
            .check(format!("spec.kubelet.labels[{key}]"), label(key, value))
            .is_some();
    }
    let taints: Vec<Option<Taint>> = raw
        .taints
        .iter()
        .enumerate()
        .map(|(i, taint)| p.check(format!("spec.kubelet.taints[{i}]"), Taint::new(taint)))
        .collect();
    let mut flags_ok = true;
    for (i, flag) in raw.flags.iter().enumerate() {
        if !flag.starts_with("--") {
            flags_ok = false;
            p.add(
                format!("spec.kubelet.flags[{i}]"),
                format!("{flag:?} is not a --flag[=value]"),
            );
        }
    }
    let taints: Option<Vec<Taint>> = taints.into_iter().collect();
    (labels_ok && flags_ok).then_some(())?;
    Some(KubeletSpec {
        binary: binary?,
        config: raw.config,
        flags: raw.flags,
        labels: raw.labels,
        taints: taints?,
    })
}

fn paths(p: &mut Problems, paths: &Paths) {
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
        p.check(format!("spec.paths.{field}"), absolute(path));
    }
}

/// A CIDR that can hold the DNS service address (`.10`): the rule for the service and pod
/// CIDRs.
fn cidr_with_dns(text: &str) -> Result<Ipv4Net, String> {
    let net = ipv4_net(text)?;
    cluster_dns(net).map(|_| net)
}

fn expect_eq(got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("is {got:?}, must be {want:?}"))
    }
}

fn node_ip(ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        Err(format!(
            "{ip} cannot be a node IP (kubelet rejects loopback and special addresses)"
        ))
    } else {
        Ok(ip)
    }
}
