//! The AWS side of the sandbox, created in moto through the real AWS CLI (run inside the
//! namespace): a VPC with a subnet and a security group, IAM user [`HOST_USER`] with an access
//! key allowed to call sts:AssumeRole, role [`NODE_ROLE`] trusting that user, and — on the
//! auth-off moto — EKS cluster [`CLUSTER_NAME`] in that subnet, and the node's ENI (primary
//! private IP [`NODE_IP`], the address the namespace carries on `lo`).

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{CLUSTER_NAME, HOST_USER, NODE_IP, NODE_ROLE, REGION, SUBNET_CIDR, VPC_CIDR, netns};
use crate::moto::ACCOUNT_ID;
use crate::tools;

/// What the fixtures created.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The subnet id.
    pub subnet_id: String,
    /// The security group id.
    pub security_group_id: String,
    /// The host user's access key id.
    pub access_key_id: String,
    /// The host user's secret access key.
    pub secret_access_key: String,
    /// The node role's ARN.
    pub role_arn: String,
    /// The node's ENI (`eni-…`), primary private IP [`NODE_IP`].
    pub node_eni_id: String,
}

/// Creates the fixtures. `moto_url` must still have authentication off (it is turned on
/// afterwards by [`enable_auth`]); `moto_eks_url` keeps it off.
pub fn create(ns: &str, moto_url: &str, moto_eks_url: &str) -> Result<Fixtures> {
    let aws = |args: &[&str]| aws_json(ns, moto_url, args);
    let vpc = aws(&["ec2", "create-vpc", "--cidr-block", VPC_CIDR])?;
    let vpc_id = str_at(&vpc, &["Vpc", "VpcId"])?;
    let subnet = aws(&[
        "ec2",
        "create-subnet",
        "--vpc-id",
        &vpc_id,
        "--cidr-block",
        SUBNET_CIDR,
        "--availability-zone",
        &format!("{REGION}a"),
    ])?;
    let subnet_id = str_at(&subnet, &["Subnet", "SubnetId"])?;
    let sg = aws(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "satellite-sandbox-nodes",
        "--description",
        "satellite sandbox node ENIs",
        "--vpc-id",
        &vpc_id,
    ])?;
    let security_group_id = str_at(&sg, &["GroupId"])?;
    // As an operator would: one ENI per satellite host, its private IP the node IP.
    let eni = aws(&[
        "ec2",
        "create-network-interface",
        "--subnet-id",
        &subnet_id,
        "--groups",
        &security_group_id,
        "--private-ip-address",
        NODE_IP,
        "--description",
        "satellite sandbox node",
    ])?;
    let node_eni_id = str_at(&eni, &["NetworkInterface", "NetworkInterfaceId"])?;

    aws(&["iam", "create-user", "--user-name", HOST_USER])?;
    aws(&[
        "iam",
        "put-user-policy",
        "--user-name",
        HOST_USER,
        "--policy-name",
        "assume-node-role",
        "--policy-document",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole","sts:GetCallerIdentity"],"Resource":"*"}]}"#,
    ])?;
    let key = aws(&["iam", "create-access-key", "--user-name", HOST_USER])?;
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT_ID}:user/{HOST_USER}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let role = aws(&[
        "iam",
        "create-role",
        "--role-name",
        NODE_ROLE,
        "--assume-role-policy-document",
        &trust,
    ])?;
    // What a node does with the role: discover the cluster, manage its ENI.
    aws(&[
        "iam",
        "put-role-policy",
        "--role-name",
        NODE_ROLE,
        "--policy-name",
        "satellite-node",
        "--policy-document",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","eks:DescribeCluster","sts:GetCallerIdentity"],"Resource":"*"}]}"#,
    ])?;

    aws_json(
        ns,
        moto_eks_url,
        &[
            "eks",
            "create-cluster",
            "--name",
            CLUSTER_NAME,
            "--role-arn",
            &format!("arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster"),
            "--resources-vpc-config",
            &format!("subnetIds={subnet_id},securityGroupIds={security_group_id}"),
        ],
    )?;

    Ok(Fixtures {
        subnet_id,
        security_group_id,
        access_key_id: str_at(&key, &["AccessKey", "AccessKeyId"])?,
        secret_access_key: str_at(&key, &["AccessKey", "SecretAccessKey"])?,
        role_arn: str_at(&role, &["Role", "Arn"])?,
        node_eni_id,
    })
}

/// Turns moto's request authentication on (SigV4, access keys, IAM policies, trust policies).
pub fn enable_auth(ns: &str, moto_url: &str) -> Result<()> {
    let url = format!("{moto_url}/moto-api/reset-auth");
    netns::run_in(ns, move || {
        ureq::post(&url)
            .header("Content-Type", "text/plain")
            .send("0")
            .context("POST moto-api/reset-auth")
            .map(drop)
    })?
}

/// Runs the AWS CLI inside the namespace against `endpoint` with setup-only credentials
/// (accepted while moto's auth is off) and returns its JSON output (`Null` when empty).
fn aws_json(ns: &str, endpoint: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = netns::command(ns, tools::venv_bin("aws"));
    let out = tools::aws_cli_setup_env(&mut cmd, endpoint, REGION)
        .args(args)
        .output()
        .context("running the AWS CLI (run `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!(
            "aws {} failed: {}",
            args.iter().take(2).copied().collect::<Vec<_>>().join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).context("the AWS CLI printed something other than JSON")
}

fn str_at(v: &Value, path: &[&str]) -> Result<String> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {} in the AWS CLI output", path.join(".")))
}
