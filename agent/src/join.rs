//! `satellite-agent join`: from a NodeConfig, resolve the cluster and the node IP, check the
//! node identity against the API server, and write kubelet's files (or show the diff).
//!
//! Order matters: everything that can fail for a reason the user must fix (config, AWS,
//! kubelet binary, API server reachability and authorization) is checked before the first
//! file is written.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;

use crate::aws::{self, AwsError};
use crate::config::{ConfigError, NodeConfig, node_name};
use crate::error::ExitCode;
use crate::fsplan::ApplyError;
use crate::render::{self, KubeletVersion, Resolved};

/// Inputs of a join.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The NodeConfig file.
    pub config_path: PathBuf,
    /// Prefix for every written path (`/` on a real host).
    pub root: PathBuf,
    /// Show the diff instead of writing.
    pub dry_run: bool,
    /// The agent binary the systemd unit runs.
    pub agent_binary: PathBuf,
}

/// What a join did (or would do).
#[derive(Debug, Clone)]
pub struct JoinReport {
    /// The node name.
    pub node_name: String,
    /// The node IP.
    pub node_ip: Ipv4Addr,
    /// The unified diff of the changes (empty: nothing to change).
    pub diff: String,
    /// Files written (empty on a dry run or when nothing changed).
    pub changed: Vec<PathBuf>,
}

impl JoinReport {
    /// One line for stderr: the node, and whether files were written or are pending.
    pub fn summary(&self, dry_run: bool) -> String {
        let what = match (dry_run, self.diff.is_empty()) {
            (true, true) => "up to date".to_owned(),
            (true, false) => "changes pending (dry run)".to_owned(),
            (false, _) => format!("{} file(s) written", self.changed.len()),
        };
        format!("node {} ({}): {what}", self.node_name, self.node_ip)
    }
}

/// Why a join failed; nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The NodeConfig is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// kubelet is missing or its version unreadable.
    #[error("kubelet at {path}: {message}; install kubelet or set spec.kubelet.binary")]
    Kubelet {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// kube-proxy (`spec.kubeProxy`) is missing or its version unreadable.
    #[error(
        "kube-proxy at {path}: {message}; install kube-proxy (the kubelet's version) or set \
         spec.kubeProxy.binary, or remove spec.kubeProxy (then NodePort Services do not \
         reach this node)"
    )]
    KubeProxy {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The API server is unreachable or refused the node identity.
    #[error("API server {endpoint}: {message}")]
    ApiServer {
        /// The endpoint.
        endpoint: String,
        /// What went wrong, with the fix.
        message: String,
    },
    /// A file could not be rendered.
    #[error("rendering: {0}")]
    Render(String),
    /// Reading the current files or writing the new ones failed (files staged so far were
    /// discarded; none was renamed).
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl From<&JoinError> for ExitCode {
    /// `Invalid` config, `Aws`, `Kube` for the API server, `Other` otherwise.
    fn from(error: &JoinError) -> Self {
        match error {
            JoinError::Config(_) => ExitCode::Invalid,
            JoinError::Aws(_) => ExitCode::Aws,
            JoinError::ApiServer { .. } => ExitCode::Kube,
            JoinError::Kubelet { .. }
            | JoinError::KubeProxy { .. }
            | JoinError::Render(_)
            | JoinError::Apply(_) => ExitCode::Other,
        }
    }
}

/// Runs a join.
///
/// Errors: see [`JoinError`]; on error nothing was written.
pub async fn join(options: &JoinOptions) -> Result<JoinReport, JoinError> {
    let config = NodeConfig::load(&options.config_path)?;
    let root = &options.root;
    let minter = aws::minter(&config, root).await?;
    let cluster = aws::cluster_info(&config, &minter).await?;
    let host_id = host_id(root);
    let node_ip = aws::node_ip(&config, &minter, &host_id, options.dry_run).await?;
    let node_name = node_name(node_ip, &config.spec.cluster.region);
    check_api_server(&cluster, &minter, &node_name).await?;
    let kubelet_version = kubelet_version(&config).await?;
    if let Some(kube_proxy) = &config.spec.kube_proxy {
        let path = &kube_proxy.binary;
        version(path)
            .await
            .map_err(|message| JoinError::KubeProxy {
                path: path.clone(),
                message,
            })?;
    }

    let resolved = Resolved {
        api_server: cluster.endpoint.clone(),
        ca_pem: cluster.ca_pem.clone(),
        service_cidr: cluster.service_cidr,
        node_ip,
        node_name: node_name.clone(),
        kubelet_version,
        node_config_path: absolute(&options.config_path),
        agent_binary: options.agent_binary.clone(),
    };
    let plan = render::plan(&config, &resolved).map_err(JoinError::Render)?;
    let diff = plan.diff(root)?;
    let changed = if options.dry_run {
        Vec::new()
    } else {
        plan.apply(root)?
    };
    if !options.dry_run && root == Path::new("/") {
        apply_sysctls();
    }
    Ok(JoinReport {
        node_name,
        node_ip,
        diff,
        changed,
    })
}

/// Asks the API server for this node's Node object with the node's own token: proves
/// reachability, TLS trust, and that aws-auth maps the role to `system:node:<name>`.
async fn check_api_server(
    cluster: &aws::ClusterInfo,
    minter: &satellite_credential_plugin::TokenMinter,
    node_name: &str,
) -> Result<(), JoinError> {
    let fail = |message: String| JoinError::ApiServer {
        endpoint: cluster.endpoint.clone(),
        message,
    };
    let token = minter.token().await.map_err(AwsError::from)?;
    let client = crate::kube_client::client(&cluster.endpoint, &cluster.ca_pem, &token)
        .await
        .map_err(|e| fail(format!("client configuration: {e}")))?;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    match nodes.get_opt(node_name).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 401 => Err(fail(format!(
            "the node's token was rejected (401): map the node role to system:node:{node_name} \
             in kube-system/aws-auth (satellite-agent admin authorize) and check the role ARN"
        ))),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(fail(format!(
            "the node identity is not allowed to read its Node (403: {}); aws-auth must map the \
             role to username system:node:{node_name} with groups system:bootstrappers, \
             system:nodes, system:node-proxier",
            status.message
        ))),
        Err(e) => Err(fail(format!(
            "unreachable or failing ({e}); check spec.cluster.apiServerEndpoint and the network path"
        ))),
    }
}

async fn kubelet_version(config: &NodeConfig) -> Result<KubeletVersion, JoinError> {
    let path = &config.spec.kubelet.binary;
    version(path).await.map_err(|message| JoinError::Kubelet {
        path: path.clone(),
        message,
    })
}

/// `BINARY --version` (kubelet, kube-proxy: `Kubernetes v1.20.2`), parsed.
async fn version(path: &Path) -> Result<KubeletVersion, String> {
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    KubeletVersion::parse(&String::from_utf8_lossy(&out.stdout))
}

/// This host's identity for ENI tags: `/etc/machine-id` under `root`, else the host name.
fn host_id(root: &Path) -> String {
    std::fs::read_to_string(render::under(root, Path::new("/etc/machine-id")))
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown-host".into())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Applies [`render::SYSCTLS`] now (the drop-in makes them survive reboots). Failures are
/// logged, not fatal: kubelet reports the consequence precisely.
fn apply_sysctls() {
    for (key, value) in render::SYSCTLS {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        if let Err(e) = std::fs::write(&path, value) {
            tracing::warn!(sysctl = key, error = %crate::error::Report(&e), "could not apply sysctl");
        }
    }
}
