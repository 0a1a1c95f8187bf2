//! Keeps the agent's labels on its Node: the Fargate-style compute type, the agent version
//! and the NodeConfig's labels. Runs with the node's own identity (NodeRestriction lets a
//! node label itself), minting tokens in-process.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use satellite_credential_plugin::TokenMinter;

/// Time between reconciliations.
pub const RESYNC: Duration = Duration::from_secs(30);

/// A kube client that is rebuilt with a fresh token shortly before the old one expires.
pub struct NodeClient {
    endpoint: String,
    ca_pem: String,
    minter: TokenMinter,
    current: Option<(kube::Client, SystemTime)>,
}

impl NodeClient {
    /// A client for `endpoint` trusting `ca_pem`, authenticating with `minter`'s tokens.
    pub fn new(endpoint: String, ca_pem: String, minter: TokenMinter) -> NodeClient {
        NodeClient {
            endpoint,
            ca_pem,
            minter,
            current: None,
        }
    }

    /// A client whose token is valid for at least another minute.
    ///
    /// Errors: minting the token or configuring the client failed (message).
    pub async fn get(&mut self) -> Result<kube::Client, String> {
        let fresh = |expiry: &SystemTime| {
            expiry
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > Duration::from_secs(60))
        };
        if let Some((client, expiry)) = &self.current
            && fresh(expiry)
        {
            return Ok(client.clone());
        }
        let token = self.minter.token().await.map_err(|e| e.to_string())?;
        let client = crate::kube_client::client(&self.endpoint, &self.ca_pem, &token)
            .await
            .map_err(|e| e.to_string())?;
        self.current = Some((client.clone(), token.expiration()));
        Ok(client)
    }
}

/// Labels missing or different on the Node, as a merge patch body; `None` when all match.
pub fn missing_labels(node: &Node, wanted: &BTreeMap<String, String>) -> Option<serde_json::Value> {
    let current = node.metadata.labels.clone().unwrap_or_default();
    let diff: BTreeMap<&String, &String> = wanted
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .collect();
    (!diff.is_empty()).then(|| serde_json::json!({"metadata": {"labels": diff}}))
}

/// One reconciliation: reads the Node and patches the labels that differ.
///
/// Returns whether a patch was sent. Errors: the API call's message (the Node not being
/// registered yet is `Ok(false)`).
pub async fn reconcile(
    client: kube::Client,
    node_name: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let Some(node) = nodes.get_opt(node_name).await.map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    let Some(patch) = missing_labels(&node, wanted) else {
        return Ok(false);
    };
    nodes
        .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_differing_labels_are_patched() {
        let mut node = Node::default();
        node.metadata.labels = Some(BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "old".to_owned()),
            ("other".to_owned(), "kept".to_owned()),
        ]));
        let wanted = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "new".to_owned()),
            ("c".to_owned(), "3".to_owned()),
        ]);
        let patch = missing_labels(&node, &wanted).unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"labels": {"b": "new", "c": "3"}}})
        );
        node.metadata.labels = Some(wanted.clone());
        assert!(missing_labels(&node, &wanted).is_none());
    }
}
