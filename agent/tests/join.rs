//! `satellite-agent join` against moto (EKS, EC2, STS): bad input of every class fails with a
//! clear message, a documented exit code, and nothing written; ENI creation is idempotent.
//!
//! The successful path (a node going Ready) needs a real API server and kubelet: see the
//! sandbox end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use satellite_agent::config::NodeConfig;
use satellite_tests::moto::{MotoServer, free_port};

/// moto with an EKS cluster, a VPC/subnet/security group and a role to assume; auth stays
/// off (moto's EKS does not work with it on; signature checks are the plugin tests' job).
struct Aws {
    moto: MotoServer,
    subnet_id: String,
    security_group_id: String,
    role_arn: String,
    dir: tempfile::TempDir,
}

fn aws() -> Aws {
    let moto = MotoServer::start();
    let role_arn = moto.create_role("satellite-node", "gpu-host");
    let key = moto.create_user("gpu-host");
    let vpc = moto.aws_json(&["ec2", "create-vpc", "--cidr-block", "198.18.0.0/16"]);
    let vpc_id = vpc["Vpc"]["VpcId"].as_str().unwrap().to_owned();
    let subnet = moto.aws_json(&[
        "ec2",
        "create-subnet",
        "--vpc-id",
        &vpc_id,
        "--cidr-block",
        "198.18.0.0/24",
    ]);
    let sg = moto.aws_json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "eks-secondary",
        "--description",
        "cluster secondary group",
        "--vpc-id",
        &vpc_id,
    ]);
    let subnet_id = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_owned();
    moto.aws_json(&[
        "eks",
        "create-cluster",
        "--name",
        "gpu",
        "--role-arn",
        &role_arn,
        "--resources-vpc-config",
        &format!("subnetIds={subnet_id}"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key.access_key_id, key.secret_access_key
        ),
    )
    .unwrap();
    Aws {
        subnet_id,
        security_group_id: sg["GroupId"].as_str().unwrap().to_owned(),
        role_arn,
        moto,
        dir,
    }
}

impl Aws {
    /// A NodeConfig pointing every AWS endpoint at moto; `cluster` and `node` are spliced in.
    fn config(&self, cluster_extra: &str, node: &str) -> PathBuf {
        let url = self.moto.url();
        let text = format!(
            "apiVersion: satellite.dev/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: gpu
    region: us-east-1
    awsEndpoints: {{sts: \"{url}\", eks: \"{url}\", ec2: \"{url}\"}}
{cluster_extra}
  identity:
    roleArn: {role}
    credentialsFile: {creds}
  node:
{node}
",
            role = self.role_arn,
            creds = self.dir.path().join("credentials").display(),
        );
        let path = self.dir.path().join(format!("node-{}.yaml", free_port()));
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn join(config: &Path, root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_satellite-agent"))
        .args(["join", "-c"])
        .arg(config)
        .arg("--root")
        .arg(root)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("HOME", root)
        .output()
        .unwrap()
}

/// Asserts a failed join: exit `code`, stderr mentions `needle`, stdout empty, and nothing
/// under `root` but the credential cache (a side effect of authenticating, not of joining).
fn assert_rejected(out: &Output, root: &Path, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    assert!(out.stdout.is_empty());
    let mut written = Vec::new();
    walk(root, &mut written);
    written.retain(|p| !p.starts_with(root.join("var/cache/satellite")));
    assert!(written.is_empty(), "join wrote files: {written:?}");
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn malformed_node_config_is_rejected_with_field_paths() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "apiVersion: satellite.dev/v1alpha1\nkind: NodeConfig\nspec:\n  cluster: {name: c, region: us-east-1, colour: blue}\n",
    )
    .unwrap();
    let out = join(&config, root.path());
    assert_rejected(&out, root.path(), 3, "colour");

    std::fs::write(
        &config,
        "apiVersion: satellite.dev/v1beta9
kind: NodeConfig
spec:
  cluster: {name: c, region: Mars}
  identity: {roleArn: 'arn:aws:iam::123:role/x', credentialsFile: relative/creds}
  node: {ip: 198.18.0.10, eniId: eni-0123}
  kubelet: {taints: ['gpu:Sometimes'], labels: {'bad label': x}}
",
    )
    .unwrap();
    let out = join(&config, root.path());
    for field in [
        "apiVersion",
        "spec.cluster.region",
        "spec.identity.roleArn",
        "spec.identity.credentialsFile",
        "spec.node: set exactly one",
        "spec.kubelet.taints[0]",
        "spec.kubelet.labels[bad label]",
    ] {
        assert_rejected(&out, root.path(), 3, field);
    }
}

#[test]
fn unknown_cluster_is_reported_and_nothing_written() {
    let aws = aws();
    let root = tempfile::tempdir().unwrap();
    let config = aws.config("", "    ip: 198.18.0.10");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("name: gpu", "name: nope");
    std::fs::write(&config, text).unwrap();
    let out = join(&config, root.path());
    assert_rejected(
        &out,
        root.path(),
        4,
        "EKS cluster \"nope\" not found in us-east-1",
    );
}

#[test]
fn describe_cluster_with_unusable_ca_is_reported() {
    // moto's DescribeCluster returns a placeholder CA: the agent must say so, not write it.
    let aws = aws();
    let root = tempfile::tempdir().unwrap();
    let out = join(&aws.config("", "    ip: 198.18.0.10"), root.path());
    assert_rejected(
        &out,
        root.path(),
        4,
        "certificateAuthority is not base64 of a PEM",
    );
}

fn explicit_cluster(endpoint: &str) -> String {
    let ca = rcgen::generate_simple_self_signed(vec!["sandbox".to_owned()])
        .unwrap()
        .cert
        .pem();
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    format!(
        "    apiServerEndpoint: {endpoint}\n    certificateAuthority: {ca}\n    cidr: 198.19.0.0/16"
    )
}

#[test]
fn bad_subnet_is_reported_and_nothing_written() {
    let aws = aws();
    let root = tempfile::tempdir().unwrap();
    let config = aws.config(
        &explicit_cluster("https://127.0.0.1:1"),
        &format!(
            "    createEni: {{subnetId: subnet-0badc0ffee0000000, securityGroupIds: [{}]}}",
            aws.security_group_id
        ),
    );
    let out = join(&config, root.path());
    assert_rejected(&out, root.path(), 4, "InvalidSubnetID.NotFound");
    assert_rejected(&out, root.path(), 4, "spec.node.createEni.subnetId");
}

#[test]
fn unreachable_api_server_is_reported_and_nothing_written() {
    let aws = aws();
    let root = tempfile::tempdir().unwrap();
    let endpoint = format!("https://127.0.0.1:{}", free_port());
    let config = aws.config(&explicit_cluster(&endpoint), "    ip: 198.18.0.10");
    let out = join(&config, root.path());
    assert_rejected(&out, root.path(), 5, &format!("API server {endpoint}"));
    assert_rejected(&out, root.path(), 5, "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_eni_is_found_again_not_duplicated() {
    let aws = aws();
    let root = tempfile::tempdir().unwrap();
    let config_path = aws.config(
        "",
        &format!(
            "    createEni: {{subnetId: {}, securityGroupIds: [{}]}}",
            aws.subnet_id, aws.security_group_id
        ),
    );
    let config = NodeConfig::load(&config_path).unwrap();
    let minter = satellite_agent::aws::minter(&config, root.path())
        .await
        .unwrap();
    let preview = satellite_agent::aws::node_ip(&config, &minter, "host-a", true).await;
    let preview = preview.unwrap_err().to_string();
    assert!(preview.contains("--dry-run"), "{preview}");

    let first = satellite_agent::aws::node_ip(&config, &minter, "host-a", false)
        .await
        .unwrap();
    let again = satellite_agent::aws::node_ip(&config, &minter, "host-a", false)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(
        first.octets()[..3],
        [198, 18, 0],
        "{first} outside the subnet"
    );
    let other = satellite_agent::aws::node_ip(&config, &minter, "host-b", false)
        .await
        .unwrap();
    assert_ne!(first, other, "another host gets its own ENI");

    let enis = aws.moto.aws_json(&["ec2", "describe-network-interfaces"]);
    let ours: Vec<_> = enis["NetworkInterfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|eni| {
            eni["TagSet"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["Key"] == "satellite.dev/host" && t["Value"] == "host-a")
        })
        .collect();
    assert_eq!(ours.len(), 1, "{enis}");
    assert_eq!(ours[0]["PrivateIpAddress"], first.to_string());
}
