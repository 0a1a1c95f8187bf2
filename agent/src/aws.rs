//! The AWS side of `join`: the node identity's credentials, the cluster (eks:DescribeCluster)
//! and the node's VPC IP (an existing ENI, or one created once and found again by tag).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_smithy_types::error::display::DisplayErrorContext;
use satellite_credential_plugin::input::SessionName;
use satellite_credential_plugin::{AssumeRole, TokenConfig, TokenMinter};

use crate::config::{CreateEni, NodeAddress, NodeConfig, cluster_dns};
use crate::parse::text::{base64_pem, ipv4_net};

/// Tag key on ENIs the agent creates: the host's machine id, so a re-run finds its ENI.
pub const HOST_TAG: &str = "satellite.dev/host";
/// Tag key on ENIs the agent creates: the cluster name.
pub const CLUSTER_TAG: &str = "satellite.dev/cluster";

/// A failure talking to AWS, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Minting credentials or tokens failed.
    #[error(transparent)]
    Credentials(#[from] satellite_credential_plugin::Error),
    /// DescribeCluster said the cluster does not exist.
    #[error(
        "EKS cluster {name:?} not found in {region}: check spec.cluster.name and spec.cluster.region"
    )]
    ClusterNotFound {
        /// Cluster name.
        name: String,
        /// Region.
        region: String,
    },
    /// DescribeCluster's answer lacks something the node needs.
    #[error("eks:DescribeCluster for {name:?}: {what}; set it in spec.cluster instead")]
    ClusterIncomplete {
        /// Cluster name.
        name: String,
        /// What is missing or malformed.
        what: String,
    },
    /// An EC2 call failed.
    #[error("ec2:{operation}: {message}")]
    Ec2 {
        /// The operation.
        operation: &'static str,
        /// The error code and message, with the fix when known.
        message: String,
    },
    /// Another AWS call failed.
    #[error("{operation}: {message}")]
    Other {
        /// The operation.
        operation: &'static str,
        /// The error.
        message: String,
    },
}

/// What DescribeCluster (or the NodeConfig) says about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// API server URL.
    pub endpoint: String,
    /// CA bundle, PEM.
    pub ca_pem: String,
    /// Service CIDR (holds the DNS service address, `.10`).
    pub service_cidr: ipnet::Ipv4Net,
}

/// The token minter for the node identity of `config`: base credentials from
/// `spec.identity.credentialsFile` (only that file) or the standard chain, assuming
/// `spec.identity.roleArn`, credentials cached in `spec.paths.credentialCacheDir` under `root`.
///
/// Errors: [`AwsError::Credentials`] when the minter cannot be built.
pub async fn minter(config: &NodeConfig, root: &Path) -> Result<TokenMinter, AwsError> {
    let cluster = &config.spec.cluster;
    let identity = &config.spec.identity;
    let credentials_provider = match &identity.credentials_file {
        Some(file) => {
            let files = EnvConfigFiles::builder()
                .with_file(EnvConfigFileKind::Credentials, file)
                .build();
            let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_files(files)
                .profile_name(identity.profile.as_deref().unwrap_or("default"))
                .build();
            Some(SharedCredentialsProvider::new(provider))
        }
        None => None,
    };
    let minter = TokenMinter::new(TokenConfig {
        cluster: cluster.name.clone(),
        region: cluster.region.clone(),
        sts_endpoint: cluster.aws_endpoints.sts.as_ref().map(|e| e.url().clone()),
        profile: identity.profile.clone(),
        credentials_provider,
        assume_role: Some(AssumeRole {
            role_arn: identity.role_arn.clone(),
            session_name: identity
                .session_name
                .clone()
                .unwrap_or_else(SessionName::default_for_host),
            external_id: None,
            duration: Duration::from_secs(3600),
        }),
        cache_dir: Some(crate::render::under(
            root,
            &config.spec.paths.credential_cache_dir,
        )),
    })?;
    Ok(minter)
}

/// AWS SDK configuration signed by the node identity (the assumed role).
async fn sdk_config(
    config: &NodeConfig,
    minter: &TokenMinter,
) -> Result<aws_config::SdkConfig, AwsError> {
    let credentials = minter.credentials().await?;
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(
            config.spec.cluster.region.as_str().to_owned(),
        ))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .load()
        .await)
}

/// The cluster's endpoint, CA and service CIDR: from the NodeConfig where set, else from
/// eks:DescribeCluster.
///
/// Errors: [`AwsError::ClusterNotFound`], [`AwsError::ClusterIncomplete`], [`AwsError::Other`].
pub async fn cluster_info(
    config: &NodeConfig,
    minter: &TokenMinter,
) -> Result<ClusterInfo, AwsError> {
    let cluster = &config.spec.cluster;
    if let (Some(api_server), Some(cidr)) = (&cluster.api_server, cluster.cidr) {
        return Ok(ClusterInfo {
            endpoint: api_server.endpoint.to_string(),
            ca_pem: api_server.ca_pem.clone(),
            service_cidr: cidr,
        });
    }
    let sdk = sdk_config(config, minter).await?;
    let mut eks = aws_sdk_eks::config::Builder::from(&sdk);
    if let Some(url) = &cluster.aws_endpoints.eks {
        eks = eks.endpoint_url(url.as_str());
    }
    let eks = aws_sdk_eks::Client::from_conf(eks.build());
    let described = eks
        .describe_cluster()
        .name(cluster.name.as_str())
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                AwsError::ClusterNotFound {
                    name: cluster.name.as_str().to_owned(),
                    region: cluster.region.to_string(),
                }
            } else {
                AwsError::Other {
                    operation: "eks:DescribeCluster",
                    message: DisplayErrorContext(&e).to_string(),
                }
            }
        })?;
    let incomplete = |what: &str| AwsError::ClusterIncomplete {
        name: cluster.name.as_str().to_owned(),
        what: what.to_owned(),
    };
    let info = described
        .cluster()
        .ok_or_else(|| incomplete("no cluster in the answer"))?;
    let (endpoint, ca_pem) = match &cluster.api_server {
        Some(api_server) => (api_server.endpoint.to_string(), api_server.ca_pem.clone()),
        None => {
            let endpoint = info
                .endpoint()
                .ok_or_else(|| incomplete("no endpoint (is the cluster still creating?)"))?;
            let data = info
                .certificate_authority()
                .and_then(|c| c.data())
                .ok_or_else(|| incomplete("no certificateAuthority.data"))?;
            let ca_pem = base64_pem(data).map_err(|_| {
                incomplete("certificateAuthority is not base64 of a PEM certificate")
            })?;
            (endpoint.to_owned(), ca_pem)
        }
    };
    let service_cidr = match cluster.cidr {
        Some(cidr) => cidr,
        None => {
            let text = info
                .kubernetes_network_config()
                .and_then(|n| n.service_ipv4_cidr())
                .ok_or_else(|| {
                    incomplete("no kubernetesNetworkConfig.serviceIpv4Cidr (set spec.cluster.cidr)")
                })?;
            ipv4_net(text)
                .and_then(|net| cluster_dns(net).map(|_| net))
                .map_err(|e| incomplete(&format!("kubernetesNetworkConfig.serviceIpv4Cidr: {e}")))?
        }
    };
    Ok(ClusterInfo {
        endpoint,
        ca_pem,
        service_cidr,
    })
}

/// The node's VPC IP: `spec.node.ip`, the primary private IP of `spec.node.eniId`, or of the
/// ENI this host created in `spec.node.createEni` (created now when there is none yet).
///
/// `host_id` identifies this host in the ENI's tags (its machine id).
///
/// Errors: [`AwsError::Ec2`] with the fix (unknown ENI or subnet, no permission).
pub async fn node_ip(
    config: &NodeConfig,
    minter: &TokenMinter,
    host_id: &str,
    dry_run: bool,
) -> Result<Ipv4Addr, AwsError> {
    let ec2_error = |operation: &'static str, e: &dyn std::error::Error| AwsError::Ec2 {
        operation,
        message: DisplayErrorContext(e).to_string(),
    };
    let (interfaces, wanted) = match &config.spec.node {
        NodeAddress::Ip(ip) => return Ok(*ip),
        NodeAddress::Eni(id) => {
            let out = ec2_client(config, minter)
                .await?
                .describe_network_interfaces()
                .network_interface_ids(id.as_str())
                .send()
                .await
                .map_err(|e| {
                    let mut err = ec2_error("DescribeNetworkInterfaces", &e);
                    if let AwsError::Ec2 { message, .. } = &mut err {
                        message.push_str(&format!("; check spec.node.eniId ({id}) and region"));
                    }
                    err
                })?;
            (out.network_interfaces().to_vec(), id.to_string())
        }
        NodeAddress::CreateEni(create) => {
            let ec2 = ec2_client(config, minter).await?;
            let out = ec2
                .describe_network_interfaces()
                .filters(filter(&format!("tag:{HOST_TAG}"), host_id))
                .filters(filter(
                    &format!("tag:{CLUSTER_TAG}"),
                    config.spec.cluster.name.as_str(),
                ))
                .filters(filter("subnet-id", create.subnet_id.as_str()))
                .send()
                .await
                .map_err(|e| ec2_error("DescribeNetworkInterfaces", &e))?;
            let existing = out.network_interfaces().to_vec();
            if existing.is_empty() {
                if dry_run {
                    return Err(AwsError::Ec2 {
                        operation: "CreateNetworkInterface",
                        message: format!(
                            "--dry-run: this host has no ENI in {} yet; join would create one \
                             (its IP names the node), so the files cannot be previewed",
                            create.subnet_id
                        ),
                    });
                }
                let created =
                    create_eni(&ec2, create, host_id, config.spec.cluster.name.as_str()).await?;
                (vec![created], String::new())
            } else {
                (existing, String::new())
            }
        }
    };
    let interface = interfaces.first().ok_or_else(|| AwsError::Ec2 {
        operation: "DescribeNetworkInterfaces",
        message: format!("no network interface {wanted}"),
    })?;
    interface
        .private_ip_address()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| AwsError::Ec2 {
            operation: "DescribeNetworkInterfaces",
            message: "the network interface has no primary private IPv4 address".into(),
        })
}

/// An EC2 client signed by the node identity, at `spec.cluster.awsEndpoints.ec2` if set.
async fn ec2_client(
    config: &NodeConfig,
    minter: &TokenMinter,
) -> Result<aws_sdk_ec2::Client, AwsError> {
    let sdk = sdk_config(config, minter).await?;
    let mut ec2 = aws_sdk_ec2::config::Builder::from(&sdk);
    if let Some(url) = &config.spec.cluster.aws_endpoints.ec2 {
        ec2 = ec2.endpoint_url(url.as_str());
    }
    Ok(aws_sdk_ec2::Client::from_conf(ec2.build()))
}

async fn create_eni(
    ec2: &aws_sdk_ec2::Client,
    create: &CreateEni,
    host_id: &str,
    cluster: &str,
) -> Result<aws_sdk_ec2::types::NetworkInterface, AwsError> {
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::NetworkInterface)
        .tags(Tag::builder().key(HOST_TAG).value(host_id).build())
        .tags(Tag::builder().key(CLUSTER_TAG).value(cluster).build())
        .build();
    let out = ec2
        .create_network_interface()
        .subnet_id(create.subnet_id.as_str())
        .set_groups(Some(
            create
                .security_group_ids
                .iter()
                .map(ToString::to_string)
                .collect(),
        ))
        .description(format!("satellite node of {cluster} (host {host_id})"))
        .tag_specifications(tags)
        .send()
        .await
        .map_err(|e| {
            let code = e
                .as_service_error()
                .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s).map(str::to_owned));
            let hint = match code.as_deref() {
                Some("InvalidSubnetID.NotFound") => format!(
                    "; subnet {} does not exist in this region: check spec.node.createEni.subnetId",
                    create.subnet_id
                ),
                Some("InvalidGroup.NotFound") => {
                    "; check spec.node.createEni.securityGroupIds".to_owned()
                }
                _ => String::new(),
            };
            AwsError::Ec2 {
                operation: "CreateNetworkInterface",
                message: format!("{}{hint}", DisplayErrorContext(&e)),
            }
        })?;
    out.network_interface()
        .cloned()
        .ok_or_else(|| AwsError::Ec2 {
            operation: "CreateNetworkInterface",
            message: "the answer carried no network interface".into(),
        })
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}
