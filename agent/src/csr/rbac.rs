//! The least privilege the approver needs: the ClusterRole and binding `admin approver-rbac`
//! prints, and the startup check that the identity it runs as has each permission
//! (SelfSubjectAccessReview), so a missing one is named before any CSR is looked at.
//!
//! Source: Kubernetes "Certificates and Certificate Signing Requests" — "Authorization"
//! (approving needs `update` on `certificatesigningrequests/approval` and `approve` on the
//! signer, by `resourceNames`).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};

use super::decide::KUBELET_SERVING_SIGNER;

/// The ClusterRole's (and binding's) name.
pub const ROLE_NAME: &str = "satellite:csr-approver";
/// The default user the binding names (map the approver's IAM role to it in aws-auth).
pub const DEFAULT_USER: &str = "satellite:csr-approver";

/// One permission the approver needs, as RBAC and SelfSubjectAccessReview spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The API group (`""` for core).
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The subresource (`""` for none).
    pub subresource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// The resource name (`""` for any).
    pub name: &'static str,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        Ok(())
    }
}

const CSRS: &str = "certificatesigningrequests";
const CERTIFICATES: &str = "certificates.k8s.io";

/// Every permission of the approver; `writes` are the ones a `--dry-run` does not use and
/// `watch` the one only `--watch` does.
pub fn permissions(writes: bool, watch: bool) -> Vec<Permission> {
    let p = |group, resource, subresource, verb, name| Permission {
        group,
        resource,
        subresource,
        verb,
        name,
    };
    let mut all = vec![
        p(CERTIFICATES, CSRS, "", "list", ""),
        p(CERTIFICATES, CSRS, "", "get", ""),
        p("", "nodes", "", "get", ""),
    ];
    if watch {
        all.push(p(CERTIFICATES, CSRS, "", "watch", ""));
    }
    if writes {
        all.push(p(CERTIFICATES, CSRS, "approval", "update", ""));
        all.push(p(
            CERTIFICATES,
            "signers",
            "",
            "approve",
            KUBELET_SERVING_SIGNER,
        ));
    }
    all
}

/// The ClusterRole granting [`permissions`]`(true, true)` and nothing else.
pub fn cluster_role() -> ClusterRole {
    let rule = |group: &str, resources: &[&str], verbs: &[&str], names: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resource_names: (!names.is_empty())
            .then(|| names.iter().map(|n| (*n).to_owned()).collect()),
        ..PolicyRule::default()
    };
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(CERTIFICATES, &[CSRS], &["get", "list", "watch"], &[]),
            rule(
                CERTIFICATES,
                &["certificatesigningrequests/approval"],
                &["update"],
                &[],
            ),
            rule(
                CERTIFICATES,
                &["signers"],
                &["approve"],
                &[KUBELET_SERVING_SIGNER],
            ),
            rule("", &["nodes"], &["get"], &[]),
        ]),
        ..ClusterRole::default()
    }
}

/// Who the binding grants the role to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// A user (the aws-auth `username` of the approver's IAM role).
    User(String),
    /// A group.
    Group(String),
}

/// The ClusterRoleBinding of [`cluster_role`] to `grantee`.
pub fn binding(grantee: &Grantee) -> ClusterRoleBinding {
    let (kind, name) = match grantee {
        Grantee::User(name) => ("User", name),
        Grantee::Group(name) => ("Group", name),
    };
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: ROLE_NAME.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind.into(),
            name: name.clone(),
            namespace: None,
        }]),
    }
}

/// The role and binding as one YAML stream (`kubectl apply -f -` takes it).
///
/// Errors: the YAML serializer's message (not expected for these types).
pub fn manifest(grantee: &Grantee) -> Result<String, String> {
    let with_kind = |value: serde_json::Value, kind: &str| {
        let mut value = value;
        value["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
        value["kind"] = kind.into();
        value
    };
    let role = serde_json::to_value(cluster_role()).map_err(|e| e.to_string())?;
    let binding = serde_json::to_value(binding(grantee)).map_err(|e| e.to_string())?;
    let mut out =
        String::from("# satellite-agent admin approve-csrs: the least privilege it needs\n");
    for doc in [
        with_kind(role, "ClusterRole"),
        with_kind(binding, "ClusterRoleBinding"),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The permissions among `needed` the client's identity lacks.
///
/// Errors: the API server's (unreachable, or the review itself refused).
pub async fn missing(
    client: &kube::Client,
    needed: &[Permission],
) -> Result<Vec<Permission>, kube::Error> {
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client.clone());
    let mut missing = Vec::new();
    for permission in needed {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(permission.group.into()),
                    resource: Some(permission.resource.into()),
                    subresource: (!permission.subresource.is_empty())
                        .then(|| permission.subresource.into()),
                    verb: Some(permission.verb.into()),
                    name: (!permission.name.is_empty()).then(|| permission.name.into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let result = api.create(&PostParams::default(), &review).await?;
        if !result.status.is_some_and(|s| s.allowed) {
            missing.push(*permission);
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_grants_exactly_the_checked_permissions() {
        let role = cluster_role();
        let rules = role.rules.unwrap();
        let granted = |p: &Permission| {
            let resource = if p.subresource.is_empty() {
                p.resource.to_owned()
            } else {
                format!("{}/{}", p.resource, p.subresource)
            };
            rules.iter().any(|r| {
                r.api_groups
                    .as_ref()
                    .is_some_and(|g| g.iter().any(|g| g == p.group))
                    && r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.contains(&resource))
                    && r.verbs.iter().any(|v| v == p.verb)
                    && (p.name.is_empty()
                        || r.resource_names
                            .as_ref()
                            .is_some_and(|n| n.iter().any(|n| n == p.name)))
            })
        };
        let all = permissions(true, true);
        assert!(all.iter().all(granted), "{all:?} vs {rules:?}");
        // Nothing beyond them: one verb per checked permission, no wildcard.
        let verbs: usize = rules.iter().map(|r| r.verbs.len()).sum();
        assert_eq!(verbs, all.len());
        assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")));
        assert_eq!(
            rules[2].resource_names.as_deref(),
            Some(&[KUBELET_SERVING_SIGNER.to_owned()][..])
        );
        let dry = permissions(false, false);
        assert!(
            dry.iter()
                .all(|p| p.verb != "update" && p.verb != "approve")
        );
    }

    #[test]
    fn manifest_is_two_documents_binding_the_grantee() {
        let text = manifest(&Grantee::Group("ops:approvers".into())).unwrap();
        assert_eq!(text.matches("---\n").count(), 2);
        assert!(text.contains("kind: ClusterRole\n"), "{text}");
        assert!(text.contains("kind: ClusterRoleBinding\n"), "{text}");
        assert!(text.contains("name: ops:approvers"), "{text}");
        assert!(text.contains("kind: Group"), "{text}");
    }
}
