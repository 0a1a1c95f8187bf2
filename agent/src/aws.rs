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
use base64::Engine as _;
use satellite_credential_plugin::input::{ClusterId, Region, RoleArn, SessionName, parse_endpoint};
use satellite_credential_plugin::{AssumeRole, TokenConfig, TokenMinter};

use crate::config::{CreateEni, NodeConfig};

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
    /// Service CIDR.
    pub service_cidr: String,
}

/// The token minter for the node identity of `config`: base credentials from
/// `spec.identity.credentialsFile` (only that file) or the standard chain, assuming
/// `spec.identity.roleArn`, credentials cached in `spec.paths.credentialCacheDir` under `root`.
///
/// Errors: invalid identity values (already rejected by validation).
pub async fn minter(config: &NodeConfig, root: &Path) -> Result<TokenMinter, AwsError> {
    let cluster = &config.spec.cluster;
    let identity = &config.spec.identity;
    let region = Region::new(&cluster.region)?;
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
        cluster: ClusterId::new(&cluster.name)?,
        region,
        sts_endpoint: cluster
            .aws_endpoints
            .sts
            .as_deref()
            .map(parse_endpoint)
            .transpose()?,
        profile: identity.profile.clone(),
        credentials_provider,
        assume_role: Some(AssumeRole {
            role_arn: RoleArn::parse(&identity.role_arn)?,
            session_name: match &identity.session_name {
                Some(name) => SessionName::new(name)?,
                None => SessionName::default_for_host(),
            },
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
        .region(aws_config::Region::new(config.spec.cluster.region.clone()))
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
    if let (Some(endpoint), Some(ca), Some(cidr)) = (
        &cluster.api_server_endpoint,
        &cluster.certificate_authority,
        &cluster.cidr,
    ) {
        return Ok(ClusterInfo {
            endpoint: endpoint.clone(),
            ca_pem: decode_ca(&cluster.name, ca)?,
            service_cidr: cidr.clone(),
        });
    }
    let sdk = sdk_config(config, minter).await?;
    let mut eks = aws_sdk_eks::config::Builder::from(&sdk);
    if let Some(url) = &cluster.aws_endpoints.eks {
        eks = eks.endpoint_url(url);
    }
    let eks = aws_sdk_eks::Client::from_conf(eks.build());
    let described = eks
        .describe_cluster()
        .name(&cluster.name)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                AwsError::ClusterNotFound {
                    name: cluster.name.clone(),
                    region: cluster.region.clone(),
                }
            } else {
                AwsError::Other {
                    operation: "eks:DescribeCluster",
                    message: DisplayErrorContext(&e).to_string(),
                }
            }
        })?;
    let incomplete = |what: &str| AwsError::ClusterIncomplete {
        name: cluster.name.clone(),
        what: what.to_owned(),
    };
    let info = described
        .cluster()
        .ok_or_else(|| incomplete("no cluster in the answer"))?;
    let endpoint = match &cluster.api_server_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => info
            .endpoint()
            .ok_or_else(|| incomplete("no endpoint (is the cluster still creating?)"))?
            .to_owned(),
    };
    let ca_pem = match &cluster.certificate_authority {
        Some(ca) => decode_ca(&cluster.name, ca)?,
        None => decode_ca(
            &cluster.name,
            info.certificate_authority()
                .and_then(|c| c.data())
                .ok_or_else(|| incomplete("no certificateAuthority.data"))?,
        )?,
    };
    let service_cidr = match &cluster.cidr {
        Some(cidr) => cidr.clone(),
        None => info
            .kubernetes_network_config()
            .and_then(|n| n.service_ipv4_cidr())
            .ok_or_else(|| {
                incomplete("no kubernetesNetworkConfig.serviceIpv4Cidr (set spec.cluster.cidr)")
            })?
            .to_owned(),
    };
    Ok(ClusterInfo {
        endpoint,
        ca_pem,
        service_cidr,
    })
}

fn decode_ca(cluster: &str, data: &str) -> Result<String, AwsError> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"));
    pem.ok_or_else(|| AwsError::ClusterIncomplete {
        name: cluster.to_owned(),
        what: "certificateAuthority is not base64 of a PEM certificate".into(),
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
    let node = &config.spec.node;
    if let Some(ip) = node.ip {
        return Ok(ip);
    }
    let sdk = sdk_config(config, minter).await?;
    let mut ec2 = aws_sdk_ec2::config::Builder::from(&sdk);
    if let Some(url) = &config.spec.cluster.aws_endpoints.ec2 {
        ec2 = ec2.endpoint_url(url);
    }
    let ec2 = aws_sdk_ec2::Client::from_conf(ec2.build());
    let ec2_error = |operation: &'static str, e: &dyn std::error::Error| AwsError::Ec2 {
        operation,
        message: DisplayErrorContext(e).to_string(),
    };
    let (interfaces, wanted) = match (&node.eni_id, &node.create_eni) {
        (Some(id), _) => {
            let out = ec2
                .describe_network_interfaces()
                .network_interface_ids(id)
                .send()
                .await
                .map_err(|e| {
                    let mut err = ec2_error("DescribeNetworkInterfaces", &e);
                    if let AwsError::Ec2 { message, .. } = &mut err {
                        message.push_str(&format!("; check spec.node.eniId ({id}) and region"));
                    }
                    err
                })?;
            (out.network_interfaces().to_vec(), id.clone())
        }
        (None, Some(create)) => {
            let out = ec2
                .describe_network_interfaces()
                .filters(filter(&format!("tag:{HOST_TAG}"), host_id))
                .filters(filter(
                    &format!("tag:{CLUSTER_TAG}"),
                    &config.spec.cluster.name,
                ))
                .filters(filter("subnet-id", &create.subnet_id))
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
                let created = create_eni(&ec2, create, host_id, &config.spec.cluster.name).await?;
                (vec![created], String::new())
            } else {
                (existing, String::new())
            }
        }
        (None, None) => {
            return Err(AwsError::Other {
                operation: "node IP",
                message: "spec.node sets none of ip, eniId, createEni".into(),
            });
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
        .subnet_id(&create.subnet_id)
        .set_groups(Some(create.security_group_ids.clone()))
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
