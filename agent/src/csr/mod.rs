//! `satellite-agent admin approve-csrs`: the serving-certificate approver for satellite nodes.
//!
//! kubelet asks for its serving certificate (`serverTLSBootstrap`) with a
//! `kubernetes.io/kubelet-serving` CSR. EKS approves those only for node types it can vouch
//! for; a satellite node's stays Pending, and `kubectl logs/exec/port-forward` fail with a TLS
//! error. This approver judges each such CSR against the Node it names ([`decide`]): it
//! approves one whose every SAN is the node's own name or address, denies any other with the
//! failed rules as the reason, and leaves CSRs of nodes that are not satellite nodes to EKS.
//!
//! Run it once (`approve-csrs`), or as a service (`--watch`, shipped as
//! `agent/units/satellite-csr-approver.service`), from any host with API access — the proxy
//! host, in the VPC, is the natural place. It runs as its own identity with only
//! [`rbac::cluster_role`]: map an IAM role to it in `kube-system/aws-auth` with no groups
//! (`- rolearn: arn:aws:iam::<account>:role/satellite-csr-approver`, `username:
//! satellite:csr-approver`), then `satellite-agent admin approver-rbac | kubectl apply -f -`
//! (its ClusterRoleBinding names that user; `--user`/`--group` for another).
//!
//! The unit runs `approve-csrs --watch --kubeconfig %d/kubeconfig` under `DynamicUser` with
//! `ProtectSystem=strict`, no capabilities and a syscall filter; systemd hands it
//! `/etc/satellite/csr-approver.kubeconfig` (root-only) with `LoadCredential`. That kubeconfig
//! holds no secret: its user is `satellite-credential-plugin … --role-arn <the approver's
//! role>` (an `exec` plugin), with the proxy host's instance-profile credentials as the base.
//! Nothing secret is in its argv or environment.
//!
//! Trust: a Node's labels and `status.addresses` are written by the node itself, so they
//! only say which CSRs are ours to judge; what is approved is bound to the node's name, which
//! its aws-auth mapping fixes and which encodes its IP.

pub mod approve;
pub mod decide;
pub mod rbac;
pub mod request;

use std::path::PathBuf;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use ipnet::IpNet;

use crate::error::{AgentError, ExitCode};
use approve::Approver;
use decide::{Decision, Policy};
use rbac::{Grantee, Permission};

/// How many times the startup check is tried against an unreachable API server.
const CONNECT_ATTEMPTS: usize = 6;

/// Arguments of `satellite-agent admin approve-csrs`.
#[derive(Debug, clap::Args)]
pub struct ApproverArgs {
    /// kubeconfig of the approver's identity [default: KUBECONFIG or ~/.kube/config]
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Keep running: judge each CSR as it is created (a list first, so none is missed)
    #[arg(long)]
    pub watch: bool,
    /// Log the decisions; approve and deny nothing
    #[arg(long)]
    pub dry_run: bool,
    /// The cluster's service CIDRs; no certificate may name an address in them
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10.100.0.0/16,172.20.0.0/16"
    )]
    pub service_cidr: Vec<IpNet>,
    /// The cluster DNS domain; no certificate may name it
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The longest spec.expirationSeconds approved (e.g. 30d, 8760h)
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub max_expiration: Duration,
}

/// Arguments of `satellite-agent admin approver-rbac`.
#[derive(Debug, clap::Args)]
pub struct RbacArgs {
    /// Bind the role to this user (the approver's aws-auth username)
    #[arg(long, default_value = rbac::DEFAULT_USER, conflicts_with = "group")]
    pub user: String,
    /// Bind the role to this group instead
    #[arg(long)]
    pub group: Option<String>,
}

/// Why the approver stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApproverError {
    /// The identity lacks permissions (checked with SelfSubjectAccessReview at start).
    #[error(
        "the approver's identity may not {}: bind it to the role with `satellite-agent admin \
         approver-rbac --user <its username> | kubectl apply -f -`",
        missing.iter().map(Permission::to_string).collect::<Vec<_>>().join(", ")
    )]
    Forbidden {
        /// What is missing.
        missing: Vec<Permission>,
    },
    /// The API server did not accept the identity's credentials (401) at the startup check.
    #[error(
        "the API server did not accept the approver's credentials: map its IAM role in \
         kube-system/aws-auth to the user the `satellite-agent admin approver-rbac` binding names \
         (default {}), and check its kubeconfig",
        rbac::DEFAULT_USER
    )]
    Unauthenticated(#[source] kube::Error),
    /// The startup check (SelfSubjectAccessReview) was refused otherwise.
    #[error("checking the approver's permissions (SelfSubjectAccessReview)")]
    Check(#[source] kube::Error),
    /// The API server did not answer the startup check.
    #[error("the Kubernetes API server did not answer ({CONNECT_ATTEMPTS} attempts with backoff)")]
    Unreachable(#[source] kube::Error),
    /// Listing or judging CSRs failed.
    #[error("judging CSRs")]
    Kube(#[source] kube::Error),
    /// The RBAC manifest could not be rendered.
    #[error("rendering the RBAC manifest: {0}")]
    Manifest(String),
}

impl From<&ApproverError> for ExitCode {
    /// `Kube` for every API failure and refusal, `Other` for rendering.
    fn from(error: &ApproverError) -> Self {
        match error {
            ApproverError::Manifest(_) => ExitCode::Other,
            _ => ExitCode::Kube,
        }
    }
}

/// `satellite-agent admin approve-csrs`: checks the identity's permissions, then judges every
/// pending CSR once, or (`--watch`) until SIGTERM. One audit log line (target `audit`) per
/// approval or denial.
///
/// Errors: [`AgentError::Kubeconfig`]/[`AgentError::KubeClient`] for the client,
/// [`ApproverError`] otherwise.
pub async fn command(args: &ApproverArgs) -> Result<(), AgentError> {
    let client = crate::admin::kube_client(args.kubeconfig.as_deref()).await?;
    let needed = rbac::permissions(!args.dry_run, args.watch);
    let check = || rbac::missing(&client, &needed);
    let missing = check
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(CONNECT_ATTEMPTS - 1),
        )
        .when(|e| !matches!(e, kube::Error::Api(_)))
        .notify(|e, after| {
            tracing::warn!(error = %crate::error::Report(e), "API server not answering; retrying in {after:?}");
        })
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref status) if status.code == 401 => {
                ApproverError::Unauthenticated(e)
            }
            kube::Error::Api(_) => ApproverError::Check(e),
            e => ApproverError::Unreachable(e),
        })?;
    if !missing.is_empty() {
        return Err(ApproverError::Forbidden { missing }.into());
    }
    let approver = Approver {
        client,
        policy: Policy {
            service_cidrs: args.service_cidr.clone(),
            cluster_domain: args.cluster_domain.clone(),
            max_expiration: args.max_expiration,
        },
        dry_run: args.dry_run,
    };
    if args.watch {
        tracing::info!(dry_run = args.dry_run, "watching kubelet-serving CSRs");
        approver.watch().await;
        return Ok(());
    }
    let decisions = approver.once().await.map_err(ApproverError::Kube)?;
    let decided = decisions
        .iter()
        .filter(|(_, d)| !matches!(d, Decision::Skip(_)))
        .count();
    eprintln!(
        "{decided} CSR(s) {} of {} listed",
        if args.dry_run {
            "would be decided (dry run)"
        } else {
            "decided"
        },
        decisions.len()
    );
    Ok(())
}

/// `satellite-agent admin approver-rbac`: prints the ClusterRole and its binding.
///
/// Errors: [`ApproverError::Manifest`].
pub fn rbac_command(args: &RbacArgs) -> Result<(), AgentError> {
    let grantee = match &args.group {
        Some(group) => Grantee::Group(group.clone()),
        None => Grantee::User(args.user.clone()),
    };
    print!(
        "{}",
        rbac::manifest(&grantee).map_err(ApproverError::Manifest)?
    );
    Ok(())
}
