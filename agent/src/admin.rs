//! `satellite-agent admin authorize|revoke`: add or remove exactly one `kube-system/aws-auth`
//! mapping for a node, keeping every other entry.
//!
//! A wrong edit of aws-auth can lock everyone out of a cluster, so: the existing `mapRoles` /
//! `mapUsers` are parsed (an unparseable ConfigMap is never overwritten), other entries are
//! kept as they are, the write carries the `resourceVersion` that was read (a concurrent
//! edit makes it fail with 409 and the change is recomputed on the new contents), and
//! `--dry-run` shows the diff without writing.
//!
//! Source for the format: aws-iam-authenticator `pkg/mapper/configmap` and the EKS user guide
//! ("Grant IAM users and roles access to Kubernetes APIs").

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use serde_json::{Value, json};
use similar::TextDiff;

use crate::config::{NodeConfig, node_name};
use crate::error::{AgentError, ExitCode};

/// The groups a node identity needs: EKS's Fargate mapping's. `system:node-proxier` is for
/// kube-proxy, which `run` runs with the node's own identity (EKS binds the group to the
/// `system:node-proxier` ClusterRole for Fargate: ClusterRoleBinding `eks:kube-proxy-fargate`).
pub const NODE_GROUPS: [&str; 3] = [
    "system:bootstrappers",
    "system:nodes",
    "system:node-proxier",
];

/// How many times a write is recomputed after losing a resourceVersion race.
const CONFLICT_ATTEMPTS: usize = 5;

/// Which change to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add the node's mapping.
    Authorize,
    /// Remove the node's mapping.
    Revoke,
}

/// The mapping of one node: an IAM role (→ `mapRoles`) or user (→ `mapUsers`) ARN to
/// `system:node:<node name>` in [`NODE_GROUPS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMapping {
    /// `arn:<partition>:iam::<account>:role/…` or `…:user/…`.
    pub arn: String,
    /// The node name.
    pub node_name: String,
}

impl NodeMapping {
    fn is_user(&self) -> bool {
        self.arn.contains(":user/")
    }

    fn data_key(&self) -> &'static str {
        if self.is_user() {
            "mapUsers"
        } else {
            "mapRoles"
        }
    }

    fn arn_key(&self) -> &'static str {
        if self.is_user() { "userarn" } else { "rolearn" }
    }

    fn username(&self) -> String {
        format!("system:node:{}", self.node_name)
    }

    fn entry(&self) -> Value {
        json!({
            self.arn_key(): self.arn,
            "username": self.username(),
            "groups": NODE_GROUPS,
        })
    }
}

/// What `authorize`/`revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the ConfigMap changed (or, on a dry run, would change).
    pub changed: bool,
    /// Unified diff of the changed data key (empty when unchanged).
    pub diff: String,
}

/// Why an aws-auth edit was refused or failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The existing mapping list is not a YAML list of mappings.
    #[error(
        "kube-system/aws-auth {key} is not a YAML list of mappings ({message}); refusing to \
         rewrite it: fix it by hand (kubectl edit -n kube-system configmap aws-auth)"
    )]
    Unparseable {
        /// `mapRoles` or `mapUsers`.
        key: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The ARN is already mapped to a different identity.
    #[error(
        "{arn} is already mapped in aws-auth to username {username:?}; one ARN maps to one \
         identity, so use a separate role per node or revoke that mapping first"
    )]
    Conflict {
        /// The ARN.
        arn: String,
        /// The existing username.
        username: String,
    },
    /// The API server refused or failed.
    #[error("kube-system/aws-auth")]
    Kube(#[from] kube::Error),
    /// Concurrent edits kept winning.
    #[error("kube-system/aws-auth changed concurrently {CONFLICT_ATTEMPTS} times in a row; retry")]
    Contended,
}

/// Applies `action` for `mapping` to `kube-system/aws-auth` through `client`.
///
/// Errors: see [`AdminError`]; on error the ConfigMap is unchanged.
pub async fn apply(
    client: kube::Client,
    action: Action,
    mapping: &NodeMapping,
    dry_run: bool,
) -> Result<Outcome, AdminError> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "kube-system");
    for _ in 0..CONFLICT_ATTEMPTS {
        let current = api.get_opt("aws-auth").await?;
        let old_text = current
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get(mapping.data_key()))
            .cloned()
            .unwrap_or_default();
        let Some(new_text) = edit(&old_text, action, mapping)? else {
            return Ok(Outcome {
                changed: false,
                diff: String::new(),
            });
        };
        let diff = TextDiff::from_lines(&old_text, &new_text)
            .unified_diff()
            .header(
                &format!("aws-auth {} (current)", mapping.data_key()),
                &format!("aws-auth {} (new)", mapping.data_key()),
            )
            .to_string();
        if dry_run {
            return Ok(Outcome {
                changed: true,
                diff,
            });
        }
        let result = match current {
            Some(mut cm) => {
                // `cm.metadata.resource_version` is the one we read: a concurrent writer makes
                // this replace fail with 409 instead of being overwritten.
                cm.data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(mapping.data_key().to_owned(), new_text);
                api.replace("aws-auth", &PostParams::default(), &cm).await
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some("aws-auth".into()),
                        namespace: Some("kube-system".into()),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(mapping.data_key().to_owned(), new_text)])),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &cm).await
            }
        };
        match result {
            Ok(_) => {
                return Ok(Outcome {
                    changed: true,
                    diff,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Contended)
}

/// The new text of the mapping list, or `None` when `action` changes nothing.
///
/// Errors: [`AdminError::Unparseable`], [`AdminError::Conflict`].
pub fn edit(
    text: &str,
    action: Action,
    mapping: &NodeMapping,
) -> Result<Option<String>, AdminError> {
    let mut entries: Vec<Value> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(text).map_err(|e| AdminError::Unparseable {
            key: mapping.data_key(),
            message: e.to_string(),
        })?
    };
    if let Some(bad) = entries.iter().find(|e| !e.is_object()) {
        return Err(AdminError::Unparseable {
            key: mapping.data_key(),
            message: format!("entry {bad} is not a mapping"),
        });
    }
    let same_arn = |e: &Value| e[mapping.arn_key()].as_str() == Some(mapping.arn.as_str());
    let ours = |e: &Value| same_arn(e) && e["username"].as_str() == Some(&mapping.username());
    match action {
        Action::Authorize => {
            if let Some(existing) = entries.iter().find(|e| same_arn(e)) {
                if ours(existing) && existing["groups"] == json!(NODE_GROUPS) {
                    return Ok(None);
                }
                return Err(AdminError::Conflict {
                    arn: mapping.arn.clone(),
                    username: existing["username"].as_str().unwrap_or_default().to_owned(),
                });
            }
            entries.push(mapping.entry());
        }
        Action::Revoke => {
            let before = entries.len();
            entries.retain(|e| !ours(e));
            if entries.len() == before {
                return Ok(None);
            }
        }
    }
    if entries.is_empty() {
        return Ok(Some(String::new()));
    }
    serde_saphyr::to_string(&entries)
        .map(Some)
        .map_err(|e| AdminError::Unparseable {
            key: mapping.data_key(),
            message: e.to_string(),
        })
}

impl From<&AdminError> for ExitCode {
    /// `Kube` when the API server failed or kept conflicting, `Invalid` for a refused edit.
    fn from(error: &AdminError) -> Self {
        match error {
            AdminError::Kube(_) | AdminError::Contended => ExitCode::Kube,
            AdminError::Unparseable { .. } | AdminError::Conflict { .. } => ExitCode::Invalid,
        }
    }
}

/// Arguments of `satellite-agent admin authorize|revoke`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The node's IAM role ARN (or IAM user ARN, mapped under mapUsers) [default: the NodeConfig's roleArn]
    #[arg(long)]
    pub role_arn: Option<String>,
    /// The node name (fargate-ip-…); or give the NodeConfig with -c and --node-ip
    #[arg(long, conflicts_with = "node_ip")]
    pub node_name: Option<String>,
    /// The node IP; the name is derived with the NodeConfig's region
    #[arg(long, requires = "config")]
    pub node_ip: Option<Ipv4Addr>,
    /// The NodeConfig file
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// kubeconfig with cluster-admin rights [default: KUBECONFIG or ~/.kube/config]
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Print the diff; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

impl AdminArgs {
    /// The mapping these arguments name: the ARN from `--role-arn` or the NodeConfig, the
    /// node name from `--node-name`, or derived from `--node-ip` / `spec.node.ip` and the
    /// NodeConfig's region.
    ///
    /// Errors: [`AgentError::Config`] for an unusable NodeConfig, [`AgentError::Invalid`] when
    /// an argument is missing or is not an IAM role/user ARN.
    pub fn mapping(&self) -> Result<NodeMapping, AgentError> {
        let invalid = |message: &str| AgentError::Invalid(message.to_owned());
        let config = self.config.as_deref().map(NodeConfig::load).transpose()?;
        let arn = match (&self.role_arn, &config) {
            (Some(arn), _) => arn.clone(),
            (None, Some(config)) => config.spec.identity.role_arn.to_string(),
            (None, None) => {
                return Err(invalid("give --role-arn, or -c with the node's NodeConfig"));
            }
        };
        if !arn.starts_with("arn:") || !(arn.contains(":role/") || arn.contains(":user/")) {
            return Err(AgentError::Invalid(format!(
                "{arn:?} is not an IAM role or user ARN"
            )));
        }
        let node_name = match (&self.node_name, self.node_ip, &config) {
            (Some(name), _, _) => name.clone(),
            (None, Some(ip), Some(config)) => node_name(ip, &config.spec.cluster.region),
            (None, _, Some(config)) => match config.spec.node.ip() {
                Some(ip) => node_name(ip, &config.spec.cluster.region),
                None => {
                    return Err(invalid(
                        "the NodeConfig does not fix the node IP: give --node-ip or --node-name",
                    ));
                }
            },
            (None, _, None) => return Err(invalid("give --node-name (or -c with --node-ip)")),
        };
        Ok(NodeMapping { arn, node_name })
    }
}

/// A client for the cluster of `kubeconfig` (`None`: `KUBECONFIG` or `~/.kube/config`).
///
/// Errors: [`AgentError::Kubeconfig`] for an unreadable or unusable file,
/// [`AgentError::KubeClient`] when no client can be built from it.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, AgentError> {
    let unusable = |source: Box<dyn std::error::Error + Send + Sync>| AgentError::Kubeconfig {
        path: kubeconfig.map(Path::to_owned),
        source,
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| unusable(e.into()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await
        }
        None => kube::Config::from_kubeconfig(&Default::default()).await,
    }
    .map_err(|e| unusable(e.into()))?;
    kube::Client::try_from(config).map_err(AgentError::KubeClient)
}

/// `satellite-agent admin authorize|revoke`: applies `action` with `args`, prints the diff on
/// stdout and what happened on stderr.
///
/// Errors: see [`AdminArgs::mapping`], [`kube_client`] and [`apply`].
pub async fn command(action: Action, args: &AdminArgs) -> Result<(), AgentError> {
    let mapping = args.mapping()?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let outcome = apply(client, action, &mapping, args.dry_run).await?;
    print!("{}", outcome.diff);
    let verb = match action {
        Action::Authorize => "authorized",
        Action::Revoke => "revoked",
    };
    eprintln!(
        "{} {} as system:node:{}: {}",
        verb,
        mapping.arn,
        mapping.node_name,
        match (outcome.changed, args.dry_run) {
            (false, _) => "already so, nothing changed",
            (true, true) => "dry run, nothing written",
            (true, false) => "aws-auth updated",
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(arn: &str) -> NodeMapping {
        NodeMapping {
            arn: arn.into(),
            node_name: "fargate-ip-198-18-0-10.us-east-1.compute.internal".into(),
        }
    }

    const EXISTING: &str = "- rolearn: arn:aws:iam::123456789012:role/eks-nodes\n  username: system:node:{{EC2PrivateDNSName}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n- rolearn: arn:aws:iam::123456789012:role/admins\n  username: admin:{{SessionName}}\n  groups: [system:masters]\n";

    #[test]
    fn authorize_appends_and_keeps_other_entries() {
        let mapping = node("arn:aws:iam::123456789012:role/satellite");
        let text = edit(EXISTING, Action::Authorize, &mapping)
            .unwrap()
            .unwrap();
        let entries: Vec<Value> = serde_saphyr::from_str(&text).unwrap();
        let before: Vec<Value> = serde_saphyr::from_str(EXISTING).unwrap();
        assert_eq!(entries[..2], before[..]);
        assert_eq!(entries[2], mapping.entry());
        assert_eq!(
            entries[2]["username"],
            "system:node:fargate-ip-198-18-0-10.us-east-1.compute.internal"
        );
        // Idempotent.
        assert_eq!(edit(&text, Action::Authorize, &mapping).unwrap(), None);
        // Revoke restores the other entries exactly.
        let revoked = edit(&text, Action::Revoke, &mapping).unwrap().unwrap();
        let after: Vec<Value> = serde_saphyr::from_str(&revoked).unwrap();
        assert_eq!(after, before);
        assert_eq!(edit(&revoked, Action::Revoke, &mapping).unwrap(), None);
    }

    #[test]
    fn users_go_to_map_users() {
        let mapping = node("arn:aws:iam::123456789012:user/gpu-box");
        assert_eq!(mapping.data_key(), "mapUsers");
        let text = edit("", Action::Authorize, &mapping).unwrap().unwrap();
        let entries: Vec<Value> = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            entries[0]["userarn"],
            "arn:aws:iam::123456789012:user/gpu-box"
        );
    }

    #[test]
    fn refuses_to_remap_or_to_rewrite_garbage() {
        let taken = node("arn:aws:iam::123456789012:role/admins");
        assert!(matches!(
            edit(EXISTING, Action::Authorize, &taken),
            Err(AdminError::Conflict { .. })
        ));
        // Revoke of a mapping that is not ours leaves the admin entry alone.
        assert_eq!(edit(EXISTING, Action::Revoke, &taken).unwrap(), None);
        let mapping = node("arn:aws:iam::123456789012:role/satellite");
        for garbage in ["{not: [valid", "just a string", "- 1\n- 2\n"] {
            assert!(
                matches!(
                    edit(garbage, Action::Authorize, &mapping),
                    Err(AdminError::Unparseable { .. })
                ),
                "{garbage:?}"
            );
        }
    }
}
