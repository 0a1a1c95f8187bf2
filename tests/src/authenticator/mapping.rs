//! The `kube-system/aws-auth` ConfigMap and how it maps an AWS identity to a Kubernetes user,
//! as aws-iam-authenticator's `pkg/mapper/configmap` does for EKS:
//!
//! - `mapRoles`: YAML list of `{rolearn, username, groups}`; matched against the caller's
//!   canonical role ARN (an assumed-role session maps through its role; paths in `rolearn`
//!   are dropped, comparison ignores ASCII case);
//! - `mapUsers`: YAML list of `{userarn, username, groups}`; matched against an IAM user ARN;
//! - username templates: `{{AccountID}}`, `{{SessionName}}` (the session name with `@`
//!   replaced by `-`), `{{SessionNameRaw}}`, `{{AccessKeyID}}`. Any other `{{…}}` is
//!   rejected (EKS's `{{EC2PrivateDNSName}}` needs EC2 lookups the sandbox does not make).

use serde::Deserialize;

/// A caller as STS GetCallerIdentity would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The ARN STS reports (`arn:aws:sts::<acct>:assumed-role/<role>/<session>` or
    /// `arn:aws:iam::<acct>:user/<name>`).
    pub arn: String,
    /// The ARN mappings are matched against: the role ARN (no path) for assumed roles, else
    /// [`Caller::arn`].
    pub canonical_arn: String,
    /// The account id.
    pub account_id: String,
    /// STS's `UserId` (`AROA…:<session>` or `AIDA…`).
    pub user_id: String,
    /// The session name, for assumed roles.
    pub session_name: Option<String>,
    /// The access key id that signed the token.
    pub access_key_id: String,
}

/// One `mapRoles` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RoleMapping {
    /// `rolearn`.
    pub rolearn: String,
    /// `username` (template).
    #[serde(default)]
    pub username: String,
    /// `groups`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One `mapUsers` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct UserMapping {
    /// `userarn`.
    pub userarn: String,
    /// `username` (template).
    #[serde(default)]
    pub username: String,
    /// `groups`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The parsed `aws-auth` data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsAuth {
    /// `mapRoles`.
    pub map_roles: Vec<RoleMapping>,
    /// `mapUsers`.
    pub map_users: Vec<UserMapping>,
}

/// The Kubernetes identity a caller maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// Username after template expansion.
    pub username: String,
    /// Groups.
    pub groups: Vec<String>,
    /// `aws-iam-authenticator:<account>:<user id>`, as EKS reports it.
    pub uid: String,
    /// The user's `extra` as aws-iam-authenticator reports it (`arn`, `canonicalArn`,
    /// `sessionName`, `accessKeyId`, `principalId`), so audit logs and CSRs show which AWS
    /// identity and key a request came from.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl AwsAuth {
    /// Parses the ConfigMap's `mapRoles` and `mapUsers` values (each a YAML list; missing or
    /// empty means none).
    ///
    /// Errors name the key that is not valid YAML of that shape.
    pub fn parse(map_roles: Option<&str>, map_users: Option<&str>) -> Result<AwsAuth, String> {
        fn list<T: for<'de> Deserialize<'de>>(
            key: &str,
            text: Option<&str>,
        ) -> Result<Vec<T>, String> {
            match text.map(str::trim) {
                None | Some("") => Ok(Vec::new()),
                Some(t) => serde_saphyr::from_str::<Option<Vec<T>>>(t)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| format!("aws-auth {key} is not a valid list: {e}")),
            }
        }
        Ok(AwsAuth {
            map_roles: list("mapRoles", map_roles)?,
            map_users: list("mapUsers", map_users)?,
        })
    }

    /// Maps `caller`, or says why not (no matching entry; an empty or unsupported username).
    pub fn map(&self, caller: &Caller) -> Result<Mapped, String> {
        let (template, groups) = if caller.session_name.is_some() {
            self.map_roles
                .iter()
                .find(|m| {
                    canonical_role_arn(&m.rolearn).eq_ignore_ascii_case(&caller.canonical_arn)
                })
                .map(|m| (&m.username, &m.groups))
        } else {
            self.map_users
                .iter()
                .find(|m| m.userarn.eq_ignore_ascii_case(&caller.canonical_arn))
                .map(|m| (&m.username, &m.groups))
        }
        .ok_or_else(|| {
            format!(
                "ARN {} is not mapped in kube-system/aws-auth",
                caller.canonical_arn
            )
        })?;
        let username = expand(template, caller)?;
        if username.is_empty() {
            return Err(format!(
                "the aws-auth entry for {} has an empty username",
                caller.canonical_arn
            ));
        }
        Ok(Mapped {
            username,
            groups: groups.clone(),
            uid: format!(
                "aws-iam-authenticator:{}:{}",
                caller.account_id, caller.user_id
            ),
            extra: [
                ("arn", Some(&caller.arn)),
                ("canonicalArn", Some(&caller.canonical_arn)),
                ("sessionName", caller.session_name.as_ref()),
                ("accessKeyId", Some(&caller.access_key_id)),
                ("principalId", Some(&caller.user_id)),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), vec![v?.clone()])))
            .collect(),
        })
    }
}

/// `arn:aws:iam::<acct>:role/<path>/<name>` → `arn:aws:iam::<acct>:role/<name>`; other ARNs
/// unchanged.
pub fn canonical_role_arn(arn: &str) -> String {
    match arn.split_once(":role/") {
        Some((prefix, rest)) => {
            let name = rest.rsplit('/').next().unwrap_or(rest);
            format!("{prefix}:role/{name}")
        }
        None => arn.to_owned(),
    }
}

fn expand(template: &str, caller: &Caller) -> Result<String, String> {
    let session = caller.session_name.as_deref();
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| format!("unterminated template in username {template:?}"))?;
        let name = &rest[start + 2..start + end];
        let value = match name {
            "AccountID" => caller.account_id.clone(),
            "AccessKeyID" => caller.access_key_id.clone(),
            "SessionName" => session
                .ok_or("{{SessionName}} needs an assumed role")?
                .replace('@', "-"),
            "SessionNameRaw" => session
                .ok_or("{{SessionNameRaw}} needs an assumed role")?
                .to_owned(),
            other => return Err(format!("unsupported username template {{{{{other}}}}}")),
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_caller(session: &str) -> Caller {
        Caller {
            arn: format!("arn:aws:sts::123456789012:assumed-role/satellite-node/{session}"),
            canonical_arn: "arn:aws:iam::123456789012:role/satellite-node".into(),
            account_id: "123456789012".into(),
            user_id: format!("AROAEXAMPLE:{session}"),
            session_name: Some(session.into()),
            access_key_id: "ASIAEXAMPLE".into(),
        }
    }

    const ROLES: &str = r#"
- rolearn: arn:aws:iam::123456789012:role/some/path/Satellite-Node
  username: system:node:{{SessionName}}
  groups:
    - system:bootstrappers
    - system:nodes
- rolearn: arn:aws:iam::123456789012:role/admin
  username: admin:{{AccountID}}:{{SessionNameRaw}}
"#;

    #[test]
    fn map_roles_expands_templates_and_ignores_path_and_case() {
        let auth = AwsAuth::parse(Some(ROLES), None).unwrap();
        let mapped = auth.map(&role_caller("fargate-ip-198-18-0-10@x")).unwrap();
        assert_eq!(mapped.username, "system:node:fargate-ip-198-18-0-10-x");
        assert_eq!(mapped.groups, ["system:bootstrappers", "system:nodes"]);
        assert_eq!(
            mapped.uid,
            "aws-iam-authenticator:123456789012:AROAEXAMPLE:fargate-ip-198-18-0-10@x"
        );
    }

    #[test]
    fn raw_session_and_account_templates() {
        let auth = AwsAuth::parse(Some(ROLES), None).unwrap();
        let mut caller = role_caller("a@b");
        caller.canonical_arn = "arn:aws:iam::123456789012:role/admin".into();
        assert_eq!(
            auth.map(&caller).unwrap().username,
            "admin:123456789012:a@b"
        );
    }

    #[test]
    fn map_users_matches_user_arns() {
        let users = "- userarn: arn:aws:iam::123456789012:user/satellite-host\n  username: host\n  groups: [g]\n";
        let auth = AwsAuth::parse(None, Some(users)).unwrap();
        let caller = Caller {
            arn: "arn:aws:iam::123456789012:user/satellite-host".into(),
            canonical_arn: "arn:aws:iam::123456789012:user/satellite-host".into(),
            account_id: "123456789012".into(),
            user_id: "AIDAEXAMPLE".into(),
            session_name: None,
            access_key_id: "AKIAEXAMPLE".into(),
        };
        let mapped = auth.map(&caller).unwrap();
        assert_eq!(
            (mapped.username.as_str(), mapped.groups.as_slice()),
            ("host", &["g".to_owned()][..])
        );
        // A user is never matched by mapRoles, nor a role by mapUsers.
        assert!(auth.map(&role_caller("s")).is_err());
    }

    #[test]
    fn unmapped_arn_and_bad_templates_are_rejected() {
        let auth = AwsAuth::parse(Some(ROLES), Some("")).unwrap();
        let mut caller = role_caller("s");
        caller.canonical_arn = "arn:aws:iam::123456789012:role/other".into();
        assert!(auth.map(&caller).unwrap_err().contains("not mapped"));

        let bad = "- rolearn: arn:aws:iam::123456789012:role/satellite-node\n  username: '{{EC2PrivateDNSName}}'\n";
        let auth = AwsAuth::parse(Some(bad), None).unwrap();
        assert!(
            auth.map(&role_caller("s"))
                .unwrap_err()
                .contains("unsupported")
        );
        let empty = "- rolearn: arn:aws:iam::123456789012:role/satellite-node\n";
        let auth = AwsAuth::parse(Some(empty), None).unwrap();
        assert!(
            auth.map(&role_caller("s"))
                .unwrap_err()
                .contains("empty username")
        );
    }

    #[test]
    fn malformed_yaml_names_the_key() {
        assert!(
            AwsAuth::parse(Some("rolearn: [unclosed"), None)
                .unwrap_err()
                .contains("mapRoles")
        );
        assert_eq!(AwsAuth::parse(None, None).unwrap(), AwsAuth::default());
    }
}
