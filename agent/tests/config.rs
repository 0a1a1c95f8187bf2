//! `NodeConfig`: schema errors at parse time, and every rule of validation, as tables.
//!
//! Each row is a mutation of one valid base config (or YAML text) and the problems it must
//! cause: field path + a substring of the message. A row passes only when exactly those
//! fields are reported. [`problems`] and [`parse_error`] are the only places that touch the
//! config API, so a change of that API is a change of those two functions.
//!
//! One file (over 500 lines): one table per NodeConfig section over the same base config.

use std::collections::BTreeMap;

use base64::Engine as _;
use satellite_agent::config::{ConfigError, NodeConfig, raw};
use serde_json::{Value, json};

/// A valid config: every later row changes a few fields of it.
const BASE: &str = "\
apiVersion: satellite.dev/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: gpu-prod
    region: us-west-2
  identity:
    roleArn: arn:aws:iam::123456789012:role/satellite-node
  node:
    ip: 10.0.17.23
";

// ---------------------------------------------------------------------------------------------
// The two adapters to the config API.

/// Every validation problem of `yaml` as (field path, message); panics when it does not parse.
fn problems(yaml: &str) -> Vec<(String, String)> {
    let config = raw::NodeConfig::parse(yaml).unwrap_or_else(|e| panic!("parse: {e}\n{yaml}"));
    match NodeConfig::try_from(config) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.into_iter().map(|p| (p.field, p.message)).collect(),
    }
}

/// The valid NodeConfig of `yaml`; panics when it is malformed or invalid.
fn parse(yaml: &str) -> NodeConfig {
    NodeConfig::from_yaml(yaml, std::path::Path::new("node.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The parse error of `yaml`; panics when it parses.
fn parse_error(yaml: &str) -> String {
    match raw::NodeConfig::parse(yaml) {
        Ok(config) => panic!("parsed, but must not:\n{yaml}\n=> {config:?}"),
        Err(message) => message,
    }
}

// ---------------------------------------------------------------------------------------------
// Building rows.

/// One change of the base config: set the value at a dotted path (`None`: remove the key).
type Edit = (&'static str, Option<Value>);

fn set(path: &'static str, value: Value) -> Edit {
    (path, Some(value))
}

fn remove(path: &'static str) -> Edit {
    (path, None)
}

/// `base` with `edits` applied, as YAML text.
fn mutate(base: &str, edits: &[Edit]) -> String {
    let mut doc: Value = serde_saphyr::from_str(base).expect("base config is YAML");
    for (path, value) in edits {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().unwrap();
        let mut node = &mut doc;
        for key in keys {
            if node.get(key).is_none() {
                node[key] = json!({});
            }
            node = &mut node[key];
        }
        let map = node
            .as_object_mut()
            .unwrap_or_else(|| panic!("{path}: parent is not a mapping"));
        match value {
            Some(value) => {
                map.insert(last.to_owned(), value.clone());
            }
            None => {
                map.remove(last);
            }
        }
    }
    serde_saphyr::to_string(&doc).expect("YAML")
}

/// A validation row: name, edits of [`BASE`], expected (field, message substring) pairs.
struct Row {
    name: String,
    edits: Vec<Edit>,
    expect: Vec<(String, &'static str)>,
}

fn row(name: impl Into<String>, edits: Vec<Edit>, expect: &[(&str, &'static str)]) -> Row {
    Row {
        name: name.into(),
        edits,
        expect: expect.iter().map(|(f, m)| ((*f).to_owned(), *m)).collect(),
    }
}

/// Checks one row; returns a failure message naming it.
fn check(row: &Row) -> Option<String> {
    let yaml = mutate(BASE, &row.edits);
    let got = match std::panic::catch_unwind(|| problems(&yaml)) {
        Ok(got) => got,
        Err(_) => return Some(format!("row {:?}: does not parse:\n{yaml}", row.name)),
    };
    let mut got_fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    let mut want_fields: Vec<&str> = row.expect.iter().map(|(f, _)| f.as_str()).collect();
    got_fields.sort_unstable();
    want_fields.sort_unstable();
    if got_fields != want_fields {
        return Some(format!(
            "row {:?}: problems at {got_fields:?}, want {want_fields:?}\n  got: {got:#?}\n  yaml:\n{yaml}",
            row.name
        ));
    }
    for (field, needle) in &row.expect {
        let matching = got
            .iter()
            .any(|(f, message)| f == field && message.contains(needle));
        if !matching {
            return Some(format!(
                "row {:?}: no problem at {field} mentions {needle:?}; got {got:#?}",
                row.name
            ));
        }
    }
    None
}

fn check_all(rows: &[Row]) {
    let failures: Vec<String> = rows.iter().filter_map(check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

fn ca_base64(pem: &str) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(pem))
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBsatellite\n-----END CERTIFICATE-----\n";

// ---------------------------------------------------------------------------------------------
// Valid configs.

#[test]
fn base_and_documented_variants_are_valid() {
    let rows = vec![
        row("base", vec![], &[]),
        row(
            "eniId instead of ip",
            vec![
                remove("spec.node.ip"),
                set("spec.node.eniId", json!("eni-0123456789abcdef0")),
            ],
            &[],
        ),
        row(
            "createEni instead of ip",
            vec![
                remove("spec.node.ip"),
                set(
                    "spec.node.createEni",
                    json!({"subnetId": "subnet-0abc", "securityGroupIds": ["sg-01", "sg-0123456789abcdef0"]}),
                ),
            ],
            &[],
        ),
        row(
            "explicit endpoint, CA and service CIDR",
            vec![
                set(
                    "spec.cluster.apiServerEndpoint",
                    json!("https://ABC.gr7.us-west-2.eks.amazonaws.com"),
                ),
                set("spec.cluster.certificateAuthority", ca_base64(PEM)),
                set("spec.cluster.cidr", json!("172.20.0.0/16")),
            ],
            &[],
        ),
        row(
            "endpoint with a port",
            vec![
                set(
                    "spec.cluster.apiServerEndpoint",
                    json!("https://10.0.0.1:6443"),
                ),
                set("spec.cluster.certificateAuthority", ca_base64(PEM)),
            ],
            &[],
        ),
        row(
            "AWS endpoint overrides, http allowed (local moto)",
            vec![set(
                "spec.cluster.awsEndpoints",
                json!({"sts": "http://127.0.0.1:5000", "eks": "https://eks.example", "ec2": "https://ec2.example:8443"}),
            )],
            &[],
        ),
        row(
            "China partition",
            vec![
                set("spec.cluster.region", json!("cn-north-1")),
                set(
                    "spec.identity.roleArn",
                    json!("arn:aws-cn:iam::123456789012:role/satellite-node"),
                ),
            ],
            &[],
        ),
        row(
            "GovCloud partition",
            vec![
                set("spec.cluster.region", json!("us-gov-west-1")),
                set(
                    "spec.identity.roleArn",
                    json!("arn:aws-us-gov:iam::123456789012:role/satellite-node"),
                ),
            ],
            &[],
        ),
        row(
            "role with a path",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws:iam::123456789012:role/gpu/nodes/satellite-node"),
            )],
            &[],
        ),
        row(
            "every identity option",
            vec![set(
                "spec.identity",
                json!({
                    "roleArn": "arn:aws:iam::123456789012:role/satellite-node",
                    "sessionName": "satellite-gpu-host-07@lab",
                    "credentialsFile": "/etc/satellite/aws-credentials",
                    "profile": "lab",
                }),
            )],
            &[],
        ),
        row(
            "every kubelet option",
            vec![set(
                "spec.kubelet",
                json!({
                    "binary": "/opt/bin/kubelet",
                    "labels": {"nvidia.com/gpu.product": "NVIDIA-A10G", "tier": ""},
                    "taints": ["nvidia.com/gpu=present:NoSchedule", "dedicated:NoExecute"],
                    "config": {"maxPods": 110, "evictionHard": {"memory.available": "1Gi"}},
                    "flags": ["--v=2", "--max-open-files=1000000"],
                }),
            )],
            &[],
        ),
        row(
            "podCidr, runtime endpoint and paths",
            vec![
                set("spec.podCidr", json!("10.213.0.0/20")),
                set(
                    "spec.containerRuntime",
                    json!({"endpoint": "unix:///run/k3s/containerd/containerd.sock"}),
                ),
                set(
                    "spec.paths",
                    json!({"kubeletDir": "/data/kubelet", "cniLogFile": "/var/log/cni.log"}),
                ),
            ],
            &[],
        ),
        row(
            "datapath",
            vec![set(
                "spec.datapath",
                json!({
                    "peers": ["203.0.113.7", "203.0.113.8"],
                    "uplink": "enp1s0f0",
                    "hostAddress": "10.19.4.2",
                    "allowPorts": ["10250/tcp", "9100", "8472/udp", "30000-32767"],
                    "addressDevice": "lo",
                    "attachMode": "netlink",
                    "bpffsDir": "/sys/fs/bpf/sat",
                    "stateDir": "/run/sat",
                }),
            )],
            &[],
        ),
    ];
    check_all(&rows);
}

// ---------------------------------------------------------------------------------------------
// One rule per row.

#[test]
fn header_and_cluster_rules() {
    let rows = vec![
        row(
            "apiVersion",
            vec![set("apiVersion", json!("satellite.dev/v1beta9"))],
            &[("apiVersion", "must be \"satellite.dev/v1alpha1\"")],
        ),
        row(
            "kind",
            vec![set("kind", json!("Node"))],
            &[("kind", "must be \"NodeConfig\"")],
        ),
        row(
            "empty cluster name",
            vec![set("spec.cluster.name", json!(""))],
            &[("spec.cluster.name", "empty")],
        ),
        row(
            "cluster name with a space",
            vec![set("spec.cluster.name", json!("gpu prod"))],
            &[("spec.cluster.name", "printable ASCII")],
        ),
        row(
            "cluster name of 101 characters",
            vec![set("spec.cluster.name", json!("c".repeat(101)))],
            &[("spec.cluster.name", "1-100")],
        ),
        // A bad region is reported once: the role ARN's partition is checked only against a
        // valid region.
        row(
            "region not a region name",
            vec![set("spec.cluster.region", json!("Mars"))],
            &[("spec.cluster.region", "not an AWS region name")],
        ),
        row(
            "region without a dash",
            vec![set("spec.cluster.region", json!("uswest2"))],
            &[("spec.cluster.region", "not an AWS region name")],
        ),
        row(
            "region in upper case",
            vec![set("spec.cluster.region", json!("US-WEST-2"))],
            &[("spec.cluster.region", "not an AWS region name")],
        ),
        row(
            "endpoint without CA",
            vec![set(
                "spec.cluster.apiServerEndpoint",
                json!("https://abc.eks.amazonaws.com"),
            )],
            &[(
                "spec.cluster",
                "set both apiServerEndpoint and certificateAuthority",
            )],
        ),
        row(
            "CA without endpoint",
            vec![set("spec.cluster.certificateAuthority", ca_base64(PEM))],
            &[(
                "spec.cluster",
                "set both apiServerEndpoint and certificateAuthority",
            )],
        ),
        row(
            "http endpoint",
            vec![
                set(
                    "spec.cluster.apiServerEndpoint",
                    json!("http://abc.eks.amazonaws.com"),
                ),
                set("spec.cluster.certificateAuthority", ca_base64(PEM)),
            ],
            &[(
                "spec.cluster.apiServerEndpoint",
                "must be an https://host[:port] URL",
            )],
        ),
        row(
            "endpoint not a URL",
            vec![
                set(
                    "spec.cluster.apiServerEndpoint",
                    json!("abc.eks.amazonaws.com"),
                ),
                set("spec.cluster.certificateAuthority", ca_base64(PEM)),
            ],
            &[("spec.cluster.apiServerEndpoint", "is not a URL")],
        ),
        row(
            "CA not base64",
            vec![
                set(
                    "spec.cluster.apiServerEndpoint",
                    json!("https://abc.example"),
                ),
                set(
                    "spec.cluster.certificateAuthority",
                    json!("-----BEGIN CERTIFICATE-----"),
                ),
            ],
            &[("spec.cluster.certificateAuthority", "not base64")],
        ),
        row(
            "CA base64 of something else",
            vec![
                set(
                    "spec.cluster.apiServerEndpoint",
                    json!("https://abc.example"),
                ),
                set("spec.cluster.certificateAuthority", ca_base64("hello")),
            ],
            &[(
                "spec.cluster.certificateAuthority",
                "decodes to something other than a PEM certificate",
            )],
        ),
        row(
            "both endpoint and CA bad",
            vec![
                set("spec.cluster.apiServerEndpoint", json!("ftp://abc.example")),
                set("spec.cluster.certificateAuthority", json!("%%%")),
            ],
            &[
                ("spec.cluster.apiServerEndpoint", "https://"),
                ("spec.cluster.certificateAuthority", "not base64"),
            ],
        ),
        row(
            "service CIDR too small for .10",
            vec![set("spec.cluster.cidr", json!("172.20.0.0/29"))],
            &[("spec.cluster.cidr", "too small")],
        ),
        row(
            "IPv6 service CIDR",
            vec![set("spec.cluster.cidr", json!("fd00:10:96::/112"))],
            &[("spec.cluster.cidr", "not an IPv4 CIDR")],
        ),
        row(
            "service CIDR with host bits",
            vec![set("spec.cluster.cidr", json!("172.20.0.1/16"))],
            &[("spec.cluster.cidr", "host bits set; use 172.20.0.0/16")],
        ),
        row(
            "service CIDR not a CIDR",
            vec![set("spec.cluster.cidr", json!("172.20.0.0"))],
            &[("spec.cluster.cidr", "not an IPv4 CIDR")],
        ),
        row(
            "AWS endpoints: scheme, path, not a URL, empty host",
            vec![set(
                "spec.cluster.awsEndpoints",
                json!({"sts": "ftp://sts.example", "eks": "https://eks.example/v1", "ec2": "ec2.example"}),
            )],
            &[
                ("spec.cluster.awsEndpoints.sts", "is not http or https"),
                (
                    "spec.cluster.awsEndpoints.eks",
                    "must not have a path, query or fragment",
                ),
                ("spec.cluster.awsEndpoints.ec2", "is not a URL"),
            ],
        ),
        row(
            "AWS endpoint with a query",
            vec![set(
                "spec.cluster.awsEndpoints.sts",
                json!("https://sts.example/?x=1"),
            )],
            &[(
                "spec.cluster.awsEndpoints.sts",
                "must not have a path, query or fragment",
            )],
        ),
    ];
    check_all(&rows);
}

#[test]
fn identity_rules() {
    let rows = vec![
        row(
            "account of 3 digits",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws:iam::123:role/x"),
            )],
            &[("spec.identity.roleArn", "account \"123\" is not 12 digits")],
        ),
        row(
            "not an ARN",
            vec![set("spec.identity.roleArn", json!("satellite-node"))],
            &[("spec.identity.roleArn", "six colon-separated ARN fields")],
        ),
        row(
            "a user, not a role",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws:iam::123456789012:user/gpu"),
            )],
            &[("spec.identity.roleArn", "is not \"role/NAME\"")],
        ),
        row(
            "an STS assumed-role ARN",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws:sts::123456789012:assumed-role/satellite-node/s"),
            )],
            &[("spec.identity.roleArn", "not \"iam\"")],
        ),
        row(
            "unknown partition",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws-eu:iam::123456789012:role/x"),
            )],
            &[("spec.identity.roleArn", "unknown partition \"aws-eu\"")],
        ),
        row(
            "IAM ARN with a region",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws:iam:us-west-2:123456789012:role/x"),
            )],
            &[("spec.identity.roleArn", "empty region field")],
        ),
        row(
            "role name with a bad character",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws:iam::123456789012:role/gpu node"),
            )],
            &[("spec.identity.roleArn", "role name")],
        ),
        row(
            "role name of 65 characters",
            vec![set(
                "spec.identity.roleArn",
                json!(format!("arn:aws:iam::123456789012:role/{}", "r".repeat(65))),
            )],
            &[("spec.identity.roleArn", "1-64")],
        ),
        row(
            "role in another partition than the region",
            vec![set("spec.cluster.region", json!("cn-north-1"))],
            &[(
                "spec.identity.roleArn",
                "partition aws does not match region cn-north-1",
            )],
        ),
        row(
            "commercial region, GovCloud role",
            vec![set(
                "spec.identity.roleArn",
                json!("arn:aws-us-gov:iam::123456789012:role/x"),
            )],
            &[(
                "spec.identity.roleArn",
                "partition aws-us-gov does not match region us-west-2",
            )],
        ),
        row(
            "session name of 1 character",
            vec![set("spec.identity.sessionName", json!("x"))],
            &[("spec.identity.sessionName", "2-64 characters")],
        ),
        row(
            "session name with a space",
            vec![set("spec.identity.sessionName", json!("gpu host"))],
            &[("spec.identity.sessionName", "2-64 characters")],
        ),
        row(
            "session name of 65 characters",
            vec![set("spec.identity.sessionName", json!("s".repeat(65)))],
            &[("spec.identity.sessionName", "2-64 characters")],
        ),
        row(
            "relative credentials file",
            vec![set(
                "spec.identity.credentialsFile",
                json!("etc/aws-credentials"),
            )],
            &[("spec.identity.credentialsFile", "must be an absolute path")],
        ),
    ];
    check_all(&rows);
}

#[test]
fn node_address_rules() {
    let create = |subnet: &str, sgs: Value| {
        vec![
            remove("spec.node.ip"),
            set(
                "spec.node.createEni",
                json!({"subnetId": subnet, "securityGroupIds": sgs}),
            ),
        ]
    };
    let eni = |id: &str| vec![remove("spec.node.ip"), set("spec.node.eniId", json!(id))];
    let mut rows = vec![
        row(
            "no way to the node IP",
            vec![remove("spec.node.ip")],
            &[("spec.node", "set exactly one of ip, eniId, createEni")],
        ),
        row(
            "ip and eniId",
            vec![set("spec.node.eniId", json!("eni-0123456789abcdef0"))],
            &[("spec.node", "set exactly one of ip, eniId, createEni")],
        ),
        row(
            "all three ways",
            vec![
                set("spec.node.eniId", json!("eni-0123")),
                set(
                    "spec.node.createEni",
                    json!({"subnetId": "subnet-0123", "securityGroupIds": ["sg-0123"]}),
                ),
            ],
            &[("spec.node", "set exactly one of ip, eniId, createEni")],
        ),
        row(
            "eniId not hex",
            eni("eni-xyz"),
            &[(
                "spec.node.eniId",
                "not an id of the form eni-0123456789abcdef0",
            )],
        ),
        row(
            "eniId without digits",
            eni("eni-"),
            &[("spec.node.eniId", "eni-0123456789abcdef0")],
        ),
        row(
            "eniId of an instance",
            eni("i-0123456789abcdef0"),
            &[("spec.node.eniId", "eni-0123456789abcdef0")],
        ),
        row(
            "eniId of 18 hex digits",
            eni("eni-0123456789abcdef01"),
            &[("spec.node.eniId", "eni-0123456789abcdef0")],
        ),
        row(
            "subnet id prefix",
            create("sub-0123", json!(["sg-0123"])),
            &[("spec.node.createEni.subnetId", "subnet-0123456789abcdef0")],
        ),
        row(
            "no security group",
            create("subnet-0123", json!([])),
            &[(
                "spec.node.createEni.securityGroupIds",
                "at least one security group",
            )],
        ),
        row(
            "second security group bad",
            create("subnet-0123", json!(["sg-0123", "sg-zz", "secgroup-1"])),
            &[
                (
                    "spec.node.createEni.securityGroupIds[1]",
                    "sg-0123456789abcdef0",
                ),
                (
                    "spec.node.createEni.securityGroupIds[2]",
                    "sg-0123456789abcdef0",
                ),
            ],
        ),
    ];
    for ip in [
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        rows.push(row(
            format!("node ip {ip}"),
            vec![set("spec.node.ip", json!(ip))],
            &[("spec.node.ip", "cannot be a node IP")],
        ));
    }
    check_all(&rows);
}

#[test]
fn kubelet_runtime_and_pod_cidr_rules() {
    let rows = vec![
        row(
            "relative kubelet binary",
            vec![set("spec.kubelet.binary", json!("kubelet"))],
            &[("spec.kubelet.binary", "must be an absolute path")],
        ),
        row(
            "labels: bad name, bad prefix, bad value",
            vec![set(
                "spec.kubelet.labels",
                json!({"bad label": "x", "Example.com/gpu": "x", "gpu": "a,b=c", "ok": "fine"}),
            )],
            &[
                ("spec.kubelet.labels[bad label]", "label name"),
                ("spec.kubelet.labels[Example.com/gpu]", "label prefix"),
                ("spec.kubelet.labels[gpu]", "label value"),
            ],
        ),
        // FIXME(lead): kubelet refuses to start with --node-labels in the kubernetes.io and
        // k8s.io namespaces other than its allowed set ("unknown 'kubernetes.io' or 'k8s.io'
        // labels specified with --node-labels", kubernetes/kubernetes
        // cmd/kubelet/app/options/options.go ValidateKubeletFlags); validation accepts them,
        // so join succeeds and kubelet then crash-loops.
        row(
            "reserved label namespaces are accepted",
            vec![set(
                "spec.kubelet.labels",
                json!({"node-role.kubernetes.io/gpu": "", "example.k8s.io/x": "y"}),
            )],
            &[],
        ),
        row(
            "label value of 64 characters",
            vec![set("spec.kubelet.labels", json!({"gpu": "v".repeat(64)}))],
            &[("spec.kubelet.labels[gpu]", "label value")],
        ),
        row(
            "taints: bad effect, no effect, bad key",
            vec![set(
                "spec.kubelet.taints",
                json!([
                    "ok:NoSchedule",
                    "gpu:Sometimes",
                    "gpu=present",
                    "bad key:NoExecute"
                ]),
            )],
            &[
                ("spec.kubelet.taints[1]", "taint effect \"Sometimes\""),
                ("spec.kubelet.taints[2]", "key[=value]:Effect"),
                ("spec.kubelet.taints[3]", "label name"),
            ],
        ),
        row(
            "flags without --",
            vec![set("spec.kubelet.flags", json!(["--v=2", "v=2", "-v"]))],
            &[
                ("spec.kubelet.flags[1]", "is not a --flag[=value]"),
                ("spec.kubelet.flags[2]", "is not a --flag[=value]"),
            ],
        ),
        // FIXME(lead): spec.kubelet.config is not validated at all: any key is merged over the
        // rendered KubeletConfiguration, including apiVersion/kind and the security settings
        // the agent renders (see render.rs `kubelet_config_override_replaces_whole_top_level_keys`).
        row(
            "kubelet config is not checked",
            vec![set(
                "spec.kubelet.config",
                json!({"kind": "Pod", "authentication": {"anonymous": {"enabled": true}}}),
            )],
            &[],
        ),
        row(
            "runtime endpoint is a path",
            vec![set(
                "spec.containerRuntime.endpoint",
                json!("/run/containerd/containerd.sock"),
            )],
            &[("spec.containerRuntime.endpoint", "unix:///path")],
        ),
        row(
            "runtime endpoint over TCP",
            vec![set(
                "spec.containerRuntime.endpoint",
                json!("tcp://127.0.0.1:2375"),
            )],
            &[("spec.containerRuntime.endpoint", "unix:///path")],
        ),
        row(
            "runtime endpoint unix://relative",
            vec![set(
                "spec.containerRuntime.endpoint",
                json!("unix://run/containerd.sock"),
            )],
            &[("spec.containerRuntime.endpoint", "unix:///path")],
        ),
        // FIXME(lead): podCidr is checked with render::cluster_dns, so a small pod range is
        // refused with a message about the DNS service address, which has nothing to do with
        // pods.
        row(
            "pod CIDR /29",
            vec![set("spec.podCidr", json!("10.88.0.0/29"))],
            &[("spec.podCidr", "too small to hold the DNS service address")],
        ),
        row(
            "pod CIDR IPv6",
            vec![set("spec.podCidr", json!("fd00:88::/64"))],
            &[("spec.podCidr", "not an IPv4 CIDR")],
        ),
        row(
            "pod CIDR with host bits",
            vec![set("spec.podCidr", json!("10.88.1.0/16"))],
            &[("spec.podCidr", "host bits set")],
        ),
    ];
    check_all(&rows);
}

#[test]
fn datapath_rules() {
    let datapath = |spec: Value| vec![set("spec.datapath", spec)];
    let rows = vec![
        row(
            "no peer",
            datapath(json!({"peers": []})),
            &[("spec.datapath.peers", "list 1 to")],
        ),
        row(
            "datapath without peers key",
            datapath(json!({"uplink": "eth0"})),
            &[("spec.datapath.peers", "list 1 to")],
        ),
        row(
            "65 peers",
            datapath(
                json!({"peers": (1..=65).map(|i| format!("203.0.113.{i}")).collect::<Vec<_>>()}),
            ),
            &[("spec.datapath.peers", "list 1 to 64 proxy addresses")],
        ),
        row(
            "peer is the node IP",
            datapath(json!({"peers": ["10.0.17.23"]})),
            &[("spec.datapath.peers[0]", "is the node IP itself")],
        ),
        row(
            "peer twice, peer loopback",
            datapath(json!({"peers": ["203.0.113.7", "203.0.113.7", "127.0.0.1"]})),
            &[
                ("spec.datapath.peers[1]", "listed twice"),
                ("spec.datapath.peers[2]", "cannot be a peer"),
            ],
        ),
        row(
            "uplink name too long",
            datapath(json!({"peers": ["203.0.113.7"], "uplink": "a-very-long-ifname"})),
            &[("spec.datapath.uplink", "is not an interface name")],
        ),
        row(
            "address device with a slash",
            datapath(json!({"peers": ["203.0.113.7"], "addressDevice": "lo/1"})),
            &[("spec.datapath.addressDevice", "is not an interface name")],
        ),
        row(
            "host address is the node IP",
            datapath(json!({"peers": ["203.0.113.7"], "hostAddress": "10.0.17.23"})),
            &[("spec.datapath.hostAddress", "S and N must differ")],
        ),
        row(
            "host address multicast",
            datapath(json!({"peers": ["203.0.113.7"], "hostAddress": "239.1.1.1"})),
            &[("spec.datapath.hostAddress", "cannot be the host address")],
        ),
        row(
            "allowPorts: not a port",
            datapath(json!({"peers": ["203.0.113.7"], "allowPorts": ["http"]})),
            &[("spec.datapath.allowPorts", "is not a port (1-65535)")],
        ),
        row(
            "allowPorts: bad protocol",
            datapath(json!({"peers": ["203.0.113.7"], "allowPorts": ["10250/sctp"]})),
            &[(
                "spec.datapath.allowPorts",
                "protocol \"sctp\" is not tcp or udp",
            )],
        ),
        row(
            "allowPorts: empty range",
            datapath(json!({"peers": ["203.0.113.7"], "allowPorts": ["32767-30000"]})),
            &[("spec.datapath.allowPorts", "the range is empty")],
        ),
        row(
            "allowPorts: two ranges",
            datapath(
                json!({"peers": ["203.0.113.7"], "allowPorts": ["30000-31000", "31001-32767"]}),
            ),
            &[("spec.datapath.allowPorts", "only one port range")],
        ),
        row(
            "relative bpffs and state dirs",
            datapath(json!({"peers": ["203.0.113.7"], "bpffsDir": "bpf", "stateDir": "run"})),
            &[
                ("spec.datapath.bpffsDir", "must be an absolute path"),
                ("spec.datapath.stateDir", "must be an absolute path"),
            ],
        ),
        row(
            "with an ENI the node IP is not known: no peer/node IP check",
            vec![
                remove("spec.node.ip"),
                set("spec.node.eniId", json!("eni-0123")),
                set("spec.datapath", json!({"peers": ["10.0.17.23"]})),
            ],
            &[],
        ),
    ];
    check_all(&rows);
}

#[test]
fn every_path_must_be_absolute() {
    let fields = [
        "kubeletDir",
        "pkiDir",
        "kubeletConfigDir",
        "cniConfigDir",
        "cniBinDir",
        "cniStateDir",
        "cniLogFile",
        "sysctlDir",
        "systemdDir",
        "credentialPlugin",
        "credentialCacheDir",
    ];
    let mut rows: Vec<Row> = fields
        .iter()
        .map(|field| Row {
            name: format!("relative {field}"),
            edits: vec![set("spec.paths", json!({ *field: "relative/dir" }))],
            expect: vec![(format!("spec.paths.{field}"), "must be an absolute path")],
        })
        .collect();
    // All at once: each reported.
    let all: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| ((*f).to_owned(), json!(format!("{f}-relative"))))
        .collect();
    rows.push(Row {
        name: "every path relative".into(),
        edits: vec![set("spec.paths", Value::Object(all))],
        expect: fields
            .iter()
            .map(|f| (format!("spec.paths.{f}"), "must be an absolute path"))
            .collect(),
    });
    check_all(&rows);
}

#[test]
fn all_problems_are_reported_at_once_in_field_order() {
    // The config of the join test: many mistakes, each reported with its path.
    let yaml = "\
apiVersion: satellite.dev/v1beta9
kind: NodeConfig
spec:
  cluster: {name: c, region: Mars, cidr: 10.0.0.0/30}
  identity: {roleArn: 'arn:aws:iam::123:role/x', credentialsFile: relative/creds, sessionName: x}
  node: {ip: 127.0.0.1, eniId: eni-xyz}
  kubelet: {taints: ['gpu:Sometimes'], labels: {'bad label': x}, flags: [v]}
  containerRuntime: {endpoint: /run/containerd.sock}
  paths: {sysctlDir: sysctl.d}
";
    let got = problems(yaml);
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "apiVersion",
            "spec.cluster.region",
            "spec.cluster.cidr",
            "spec.identity.roleArn",
            "spec.identity.sessionName",
            "spec.identity.credentialsFile",
            "spec.node",
            "spec.node.ip",
            "spec.node.eniId",
            "spec.kubelet.labels[bad label]",
            "spec.kubelet.taints[0]",
            "spec.kubelet.flags[0]",
            "spec.containerRuntime.endpoint",
            "spec.paths.sysctlDir",
        ],
        "{got:#?}"
    );
    for (field, message) in &got {
        assert!(!message.is_empty(), "{field}: empty message");
    }
}

// ---------------------------------------------------------------------------------------------
// Schema errors (parse time).

#[test]
fn unknown_fields_and_wrong_types_are_parse_errors_naming_the_field() {
    // (row, YAML, substrings of the error's first line, substrings of the whole error).
    // Unknown and missing fields are named in the message itself; a wrong type is located by
    // line and column, and the quoted source line under it shows the key.
    type ParseRow = (
        &'static str,
        String,
        &'static [&'static str],
        &'static [&'static str],
    );
    let table: Vec<ParseRow> =
        vec![
        (
            "unknown top-level field",
            BASE.to_owned() + "metadata: {name: x}\n",
            &["line 11 column 1", "unknown field `metadata`"],
            &[],
        ),
        (
            "unknown field in spec.cluster",
            BASE.replace("    region: us-west-2\n", "    region: us-west-2\n    colour: blue\n"),
            &["line 7 column 5", "unknown field `colour`", "expected one of name, region"],
            &[],
        ),
        (
            "typo in spec.kubelet",
            BASE.to_owned() + "  kubelet: {lables: {a: b}}\n",
            &["unknown field `lables`", "labels"],
            &[],
        ),
        (
            "wrong case in spec.paths",
            BASE.to_owned() + "  paths: {kubeletdir: /var/lib/kubelet}\n",
            &["unknown field `kubeletdir`", "kubeletDir"],
            &[],
        ),
        (
            "unknown field in spec.datapath",
            BASE.to_owned() + "  datapath: {peers: [203.0.113.7], peer: 203.0.113.8}\n",
            &["unknown field `peer`"],
            &[],
        ),
        (
            "unknown field in createEni",
            BASE.replace(
                "    ip: 10.0.17.23\n",
                "    createEni: {subnetId: subnet-01, securityGroupIds: [sg-01], vpcId: vpc-01}\n",
            ),
            &["unknown field `vpcId`"],
            &[],
        ),
        (
            "missing spec.identity",
            BASE.replace(
                "  identity:\n    roleArn: arn:aws:iam::123456789012:role/satellite-node\n",
                "",
            ),
            &["missing field `identity`"],
            &[],
        ),
        (
            "missing spec.cluster.region",
            BASE.replace("    region: us-west-2\n", ""),
            &["missing field `region`"],
            &[],
        ),
        (
            "missing roleArn",
            BASE.replace(
                "    roleArn: arn:aws:iam::123456789012:role/satellite-node\n",
                "    profile: x\n",
            ),
            &["missing field `roleArn`"],
            &[],
        ),
        (
            "node ip not an IP",
            BASE.replace("ip: 10.0.17.23", "ip: 10.0.17"),
            &["line 10 column 9", "invalid IPv4 address"],
            &["10 |     ip: 10.0.17\n"],
        ),
        (
            "flags a string, not a list",
            BASE.to_owned() + "  kubelet: {flags: --v=2}\n",
            &["line 11 column 20", "expected sequence"],
            &["11 |   kubelet: {flags: --v=2}\n"],
        ),
        (
            "taints a mapping, not a list",
            BASE.to_owned() + "  kubelet: {taints: {gpu: NoSchedule}}\n",
            &["line 11 column 21", "expected sequence"],
            &["{taints: {gpu"],
        ),
        (
            "securityGroupIds a string",
            BASE.replace(
                "    ip: 10.0.17.23\n",
                "    createEni: {subnetId: subnet-01, securityGroupIds: sg-01}\n",
            ),
            &["line 10 column 56", "expected sequence"],
            &["securityGroupIds: sg-01}"],
        ),
        (
            "peer not an IP",
            BASE.to_owned() + "  datapath: {peers: [proxy.example]}\n",
            &["line 11 column 22", "invalid IPv4 address"],
            &["peers: [proxy.example]"],
        ),
        (
            "unknown attach mode",
            BASE.to_owned() + "  datapath: {peers: [203.0.113.7], attachMode: sometimes}\n",
            &["unknown variant `sometimes`", "auto, tcx, netlink"],
            &[],
        ),
        (
            "label value a mapping",
            BASE.to_owned() + "  kubelet: {labels: {gpu: {a: b}}}\n",
            &["line 11"],
            &["labels: {gpu: {a: b}}"],
        ),
        ("not YAML", "spec: [unclosed".to_owned(), &["line 1"], &[]),
        ("a list, not a mapping", "- a\n- b\n".to_owned(), &["line 1 column 1"], &[]),
    ];
    let mut failures = Vec::new();
    for (name, yaml, first_line, anywhere) in &table {
        let message = match raw::NodeConfig::parse(yaml) {
            Ok(config) => {
                failures.push(format!("row {name:?}: parsed: {config:?}"));
                continue;
            }
            Err(_) => parse_error(yaml),
        };
        let first = message.lines().next().unwrap_or_default();
        for needle in *first_line {
            if !first.contains(needle) {
                failures.push(format!(
                    "row {name:?}: first line of the parse error lacks {needle:?}:\n{message}"
                ));
            }
        }
        for needle in *anywhere {
            if !message.contains(needle) {
                failures.push(format!(
                    "row {name:?}: parse error lacks {needle:?}:\n{message}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn defaults_fill_what_the_file_omits() {
    let config = parse(BASE);
    let spec = &config.spec;
    assert_eq!(spec.pod_cidr.to_string(), "10.88.0.0/16");
    assert_eq!(
        spec.container_runtime_endpoint,
        "unix:///run/containerd/containerd.sock"
    );
    let paths = serde_json::to_value(&spec.paths).unwrap();
    let want: BTreeMap<&str, &str> = [
        ("kubeletDir", "/var/lib/kubelet"),
        ("pkiDir", "/etc/kubernetes/pki"),
        ("kubeletConfigDir", "/etc/kubernetes/kubelet"),
        ("cniConfigDir", "/etc/cni/net.d"),
        ("cniBinDir", "/opt/cni/bin"),
        ("cniStateDir", "/var/lib/cni/satellite"),
        ("cniLogFile", "/var/log/satellite-cni.log"),
        ("sysctlDir", "/etc/sysctl.d"),
        ("systemdDir", "/etc/systemd/system"),
        (
            "credentialPlugin",
            "/usr/local/bin/satellite-credential-plugin",
        ),
        ("credentialCacheDir", "/var/cache/satellite/credentials"),
    ]
    .into();
    for (field, default) in &want {
        assert_eq!(paths[field], *default, "spec.paths.{field} default");
    }
    // An omitted key keeps its default when another is set.
    let one = mutate(BASE, &[set("spec.paths", json!({"pkiDir": "/srv/pki"}))]);
    let paths = serde_json::to_value(&parse(&one).spec.paths).unwrap();
    assert_eq!(paths["pkiDir"], "/srv/pki");
    assert_eq!(paths["kubeletDir"], "/var/lib/kubelet");
}

#[test]
fn load_reports_read_parse_and_invalid_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");

    match NodeConfig::load(&path) {
        Err(e @ ConfigError::Read { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}")
        }
        other => panic!("missing file: {other:?}"),
    }

    std::fs::write(&path, BASE.to_owned() + "colour: blue\n").unwrap();
    match NodeConfig::load(&path) {
        Err(e @ ConfigError::Parse { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("colour"), "{text}");
        }
        other => panic!("unknown field: {other:?}"),
    }

    std::fs::write(
        &path,
        mutate(
            BASE,
            &[
                set("spec.cluster.region", json!("Mars")),
                set("kind", json!("Node")),
            ],
        ),
    )
    .unwrap();
    match NodeConfig::load(&path) {
        Err(e @ ConfigError::Invalid { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("\n  - kind: is \"Node\""), "{text}");
            assert!(text.contains("\n  - spec.cluster.region: "), "{text}");
        }
        other => panic!("invalid: {other:?}"),
    }

    std::fs::write(&path, BASE).unwrap();
    let config = NodeConfig::load(&path).expect("valid base");
    assert_eq!(config.spec.cluster.name.as_str(), "gpu-prod");
}
