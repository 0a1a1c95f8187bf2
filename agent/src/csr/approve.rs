//! Applying decisions: look up the Nodes a CSR names, [`decide`], write the condition to the
//! CSR's `approval` subresource, and log one audit line per approval or denial.
//!
//! Every write carries the `resourceVersion` that was judged, so a CSR that changed meanwhile
//! (another approver, a second replica) fails with 409 and is judged again on its new
//! contents — which are then decided and skipped: no CSR is decided twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::decide::{Decision, Policy, Skip, decide, early_skip, named_nodes};

/// How often a CSR whose Node is not registered yet is looked at again.
const NOT_REGISTERED_REQUEUE: Duration = Duration::from_secs(1);
/// After this age a CSR of an unregistered node is no longer looked at (kubelet files a
/// new one when it retries).
const NOT_REGISTERED_GIVE_UP: Duration = Duration::from_secs(600);
/// Requeue after a failed API call (the controller retries with this delay).
const ERROR_REQUEUE: Duration = Duration::from_secs(2);

/// The approver: a client, the policy, and whether to write.
#[derive(Clone)]
pub struct Approver {
    /// Client with the [`super::rbac::cluster_role`] permissions.
    pub client: kube::Client,
    /// What is accepted beyond the Node's identity.
    pub policy: Policy,
    /// Log what would be decided; write nothing.
    pub dry_run: bool,
}

impl Approver {
    fn csrs(&self) -> kube::Api<CertificateSigningRequest> {
        kube::Api::all(self.client.clone())
    }

    /// Judges `csr` and applies the decision (unless a dry run); returns it.
    ///
    /// Errors: the API server's, reading Nodes or writing the approval (409: the CSR changed;
    /// judge its new version).
    pub async fn judge(&self, csr: &CertificateSigningRequest) -> Result<Decision, kube::Error> {
        let nodes_api: kube::Api<Node> = kube::Api::all(self.client.clone());
        let mut nodes = BTreeMap::new();
        // No Node lookups for CSRs that are not ours or already decided (most of a restart's
        // initial list).
        if early_skip(csr).is_none() {
            for name in named_nodes(csr) {
                if let Some(node) = nodes_api.get_opt(&name).await? {
                    nodes.insert(name, node);
                }
            }
        }
        let decision = decide(csr, &nodes, &self.policy);
        let name = csr.metadata.name.as_deref().unwrap_or_default();
        let requester = csr.spec.username.as_deref().unwrap_or_default();
        let (type_, reason, message) = match &decision {
            Decision::Skip(skip) => {
                tracing::debug!(csr = name, requester, ?skip, "CSR left alone");
                return Ok(decision);
            }
            Decision::Approve { node } => (
                "Approved",
                "SatelliteNodeVerified",
                format!(
                    "satellite-agent approve-csrs: {node} is a satellite node and every SAN is its own"
                ),
            ),
            Decision::Deny { reason, message } => ("Denied", reason.as_str(), message.clone()),
        };
        if !self.dry_run {
            let mut approval = csr.clone();
            approval
                .status
                .get_or_insert_with(Default::default)
                .conditions
                .get_or_insert_with(Vec::new)
                .push(CertificateSigningRequestCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(message.clone()),
                    ..CertificateSigningRequestCondition::default()
                });
            self.csrs()
                .replace_subresource("approval", name, &PostParams::default(), &approval)
                .await?;
        }
        tracing::info!(
            target: "audit",
            csr = name,
            requester,
            decision = type_,
            reason,
            message = message.as_str(),
            dry_run = self.dry_run,
            "CSR decision"
        );
        Ok(decision)
    }

    /// One pass: lists every CSR and judges each undecided one.
    ///
    /// Errors: the API server's (the first failure stops the pass).
    pub async fn once(&self) -> Result<Vec<(String, Decision)>, kube::Error> {
        let mut decisions = Vec::new();
        for csr in self.csrs().list(&ListParams::default()).await? {
            let decision = self.judge(&csr).await?;
            decisions.push((csr.metadata.name.unwrap_or_default(), decision));
        }
        Ok(decisions)
    }

    /// Until SIGINT/SIGTERM: watches CSRs (a list first, so a restarted approver finds the
    /// ones created while it was down) and judges each one as it appears or changes.
    pub async fn watch(self) {
        let csrs = self.csrs();
        Controller::new(csrs, watcher::Config::default())
            .shutdown_on_signal()
            .run(reconcile, error_policy, Arc::new(self))
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::warn!(error = %crate::error::Report(&e), "CSR watch");
                }
            })
            .await;
    }
}

/// Why one reconcile failed (the controller logs it and retries).
#[derive(Debug, thiserror::Error)]
#[error("judging the CSR")]
pub struct ReconcileError(#[source] kube::Error);

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    approver: Arc<Approver>,
) -> Result<Action, ReconcileError> {
    match approver.judge(&csr).await.map_err(ReconcileError)? {
        Decision::Skip(Skip::NodeNotRegistered(_)) if !too_old(&csr) => {
            Ok(Action::requeue(NOT_REGISTERED_REQUEUE))
        }
        _ => Ok(Action::await_change()),
    }
}

fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    error: &ReconcileError,
    _: Arc<Approver>,
) -> Action {
    tracing::warn!(
        csr = csr.metadata.name.as_deref().unwrap_or_default(),
        error = %crate::error::Report(error),
        "retrying in {ERROR_REQUEUE:?}"
    );
    Action::requeue(ERROR_REQUEUE)
}

fn too_old(csr: &CertificateSigningRequest) -> bool {
    csr.metadata.creation_timestamp.as_ref().is_some_and(|t| {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
        age.as_secs() > NOT_REGISTERED_GIVE_UP.as_secs() as i64
    })
}
