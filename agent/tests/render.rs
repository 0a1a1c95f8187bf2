//! `render`: everything `join` writes, per kubelet version, against golden files; and the
//! pure helpers behind it (version branch points, `clusterDNS`, label and taint syntax).
//!
//! Golden files live in `agent/tests/golden/<case>/<kubelet version>/`: one file per rendered
//! file (named after its basename) and `plan.txt` (mode and path of every file, in plan order).
//! After an intended rendering change, rewrite them with
//!
//! ```text
//! SATELLITE_BLESS=1 cargo nextest run -p satellite-agent --test render
//! ```
//!
//! and review `git diff agent/tests/golden`.
//!
//! Configs are built only from YAML text, through [`NodeConfig::from_yaml`] (raw serde types
//! parsed into typed values); [`resolved`] is the one place that builds a [`Resolved`].
//!
//! One file (over 500 lines): the golden cases and the tables share the fixtures above.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use satellite_agent::config::{NodeConfig, node_name};
use satellite_agent::parse::kube::{Taint, label};
use satellite_agent::parse::text::ipv4_net;
use satellite_agent::render::{self, KubeletVersion, Resolved};
use serde_json::Value;

/// The kubelet versions every golden case is rendered for.
const VERSIONS: &[&str] = &[
    "1.20", "1.23", "1.25", "1.27", "1.29", "1.31", "1.33", "1.34",
];

/// The smallest usable NodeConfig: defaults everywhere.
const MINIMAL: &str = "\
apiVersion: satellite.dev/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: gpu-prod
    region: us-west-2
  identity:
    roleArn: arn:aws:iam::123456789012:role/satellite-node
  node:
    eniId: eni-0123456789abcdef0
";

/// Every optional knob that changes a rendered file.
const RICH: &str = "\
apiVersion: satellite.dev/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: gpu-lab
    region: eu-central-1
    cidr: 10.100.0.0/16
    awsEndpoints:
      sts: https://sts.eu-central-1.amazonaws.com
  identity:
    roleArn: arn:aws:iam::210987654321:role/gpu/satellite-node
    sessionName: gpu-host-07
    credentialsFile: /etc/satellite/aws-credentials
    profile: satellite
  node:
    ip: 10.20.30.40
  kubelet:
    binary: /opt/kubernetes/bin/kubelet
    labels:
      nvidia.com/gpu.product: NVIDIA-A10G
      k8s.amazonaws.com/accelerator: NVIDIA-A10G
      satellite.dev/spot: ''
      tier: gpu
    taints:
      - nvidia.com/gpu=present:NoSchedule
      - dedicated:NoExecute
    config:
      maxPods: 64
      evictionHard:
        memory.available: 500Mi
        nodefs.available: 10%
      featureGates:
        DevicePluginCDIDevices: true
      serializeImagePulls: false
    flags:
      - --v=2
      - --max-open-files=1000000
  kubeProxy:
    binary: /opt/kubernetes/bin/kube-proxy
    config:
      iptables: {syncPeriod: 10s}
  containerRuntime:
    endpoint: unix:///run/k3s/containerd/containerd.sock
  podCidr: 10.213.0.0/20
  paths:
    kubeletDir: /data/kubelet
    pkiDir: /etc/satellite/pki
    cniLogFile: /var/log/satellite/cni.log
    credentialPlugin: /opt/satellite/bin/satellite-credential-plugin
";

/// A stand-in for the cluster CA: the renderer copies it verbatim.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBdzCCAR2gAwIBAgIUSATELLITEGOLDENFIXTURExxxxxxxxwCgYIKoZIzj0EAwIw\n\
-----END CERTIFICATE-----\n";

/// A golden case: its directory name, its NodeConfig, and the service CIDR `join` resolved.
struct Case {
    name: &'static str,
    yaml: &'static str,
    service_cidr: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "minimal",
        yaml: MINIMAL,
        service_cidr: "172.20.0.0/16",
    },
    Case {
        name: "rich",
        yaml: RICH,
        service_cidr: "10.100.0.0/16",
    },
];

/// Parses and validates `yaml`; panics (naming `what`) unless it is a usable NodeConfig.
fn config(what: &str, yaml: &str) -> NodeConfig {
    NodeConfig::from_yaml(yaml, Path::new(what)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// What `join` resolves (cluster, node IP, kubelet version), fixed. The node IP is the
/// config's `spec.node.ip` when it has one, else the one an ENI would have given.
fn resolved(config: &NodeConfig, version: &str, service_cidr: &str) -> Resolved {
    let node_ip = config
        .spec
        .node
        .ip()
        .unwrap_or(Ipv4Addr::new(10, 0, 17, 23));
    Resolved {
        api_server: format!(
            "https://0123456789ABCDEF0123456789ABCDEF.gr7.{}.eks.amazonaws.com",
            config.spec.cluster.region
        ),
        ca_pem: CA_PEM.into(),
        service_cidr: ipv4_net(service_cidr).expect("a test service CIDR"),
        node_ip,
        node_name: node_name(node_ip, &config.spec.cluster.region),
        kubelet_version: KubeletVersion::parse(&format!("Kubernetes v{version}.4"))
            .unwrap_or_else(|e| panic!("kubelet version {version}: {e}")),
        node_config_path: "/etc/satellite/node.yaml".into(),
        agent_binary: "/usr/local/bin/satellite-agent".into(),
    }
}

/// Every rendered file of `case` at kubelet `version`: golden file name → contents, plus
/// `plan.txt`.
fn render_case(case: &Case, version: &str) -> BTreeMap<String, String> {
    let config = config(case.name, case.yaml);
    let resolved = resolved(&config, version, case.service_cidr);
    let plan = render::plan(&config, &resolved)
        .unwrap_or_else(|e| panic!("{}/{version}: render: {e}", case.name));
    let mut files = BTreeMap::new();
    let mut index = String::new();
    for file in plan.files() {
        let name = file
            .path
            .file_name()
            .unwrap_or_else(|| panic!("{}: {} has no file name", case.name, file.path.display()))
            .to_string_lossy()
            .into_owned();
        index.push_str(&format!("{:04o} {}\n", file.mode, file.path.display()));
        let previous = files.insert(name.clone(), file.contents.clone());
        assert!(
            previous.is_none(),
            "{}/{version}: two planned files named {name}",
            case.name
        );
    }
    files.insert("plan.txt".into(), index);
    files
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var_os("SATELLITE_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compares `files` with the golden directory `dir` (or rewrites it under `SATELLITE_BLESS`);
/// returns one message per difference, with a unified diff.
fn compare_golden(dir: &Path, files: &BTreeMap<String, String>) -> Vec<String> {
    let label = dir.strip_prefix(golden_root()).unwrap_or(dir).display();
    if blessing() {
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
        std::fs::create_dir_all(dir).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        return Vec::new();
    }
    let mut failures = Vec::new();
    for (name, rendered) in files {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Err(e) => failures.push(format!(
                "golden {label}/{name}: cannot read {} ({e}); run with SATELLITE_BLESS=1 to create it",
                path.display()
            )),
            Ok(golden) if golden != *rendered => failures.push(format!(
                "golden {label}/{name} differs from the rendering (- golden, + rendered):\n{}",
                similar::TextDiff::from_lines(&golden, rendered)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("golden/{label}/{name}"), "rendered")
            )),
            Ok(_) => {}
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !files.contains_key(&name) {
            failures.push(format!(
                "golden {label}/{name} is no longer rendered; run with SATELLITE_BLESS=1 to remove it"
            ));
        }
    }
    failures
}

fn check_golden_case(case: &Case) {
    let mut failures = Vec::new();
    for version in VERSIONS {
        let files = render_case(case, version);
        failures.extend(compare_golden(
            &golden_root().join(case.name).join(version),
            &files,
        ));
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es) for case {:?}; if the change is intended, run \
         SATELLITE_BLESS=1 cargo nextest run -p satellite-agent --test render and review \
         `git diff agent/tests/golden`\n\n{}",
        failures.len(),
        case.name,
        failures.join("\n")
    );
}

// FIXME(lead): the goldens show current behaviour. Issues found while reading them (details
// in the report of the `puretests` branch):
// - `spec.kubelet.config` replaces top-level keys: overriding e.g. `authentication` drops the
//   rendered `x509.clientCAFile` (see `kubelet_config_override_replaces_whole_top_level_keys`).
// - `--register-with-taints` is still a flag on every version (deprecated in favour of the
//   KubeletConfiguration field `registerWithTaints`, which exists since 1.23,
//   kubernetes/kubernetes#105437); it still works, so the goldens keep it.
#[test]
fn golden_minimal() {
    check_golden_case(&CASES[0]);
}

#[test]
fn golden_rich() {
    check_golden_case(&CASES[1]);
}

// ---------------------------------------------------------------------------------------------
// Semantic checks of the same renderings (they explain what the goldens must show).

/// A rendered YAML or JSON file as a JSON value.
fn parse_value(what: &str, text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}\n{text}"))
}

fn minor(version: &str) -> u32 {
    KubeletVersion::parse(version).unwrap().minor
}

#[test]
fn runtime_endpoint_is_a_flag_before_1_27_and_a_config_field_from_1_27() {
    for case in CASES {
        for version in VERSIONS {
            let row = format!("{}/{version}", case.name);
            let files = render_case(case, version);
            let kc = parse_value(&row, &files["config.yaml"]);
            let flags: Vec<String> = serde_json::from_str(&files["flags.json"]).unwrap();
            let endpoint =
                parse_value(case.name, case.yaml)["spec"]["containerRuntime"]["endpoint"]
                    .as_str()
                    .unwrap_or("unix:///run/containerd/containerd.sock")
                    .to_owned();
            let flag = format!("--container-runtime-endpoint={endpoint}");
            if minor(version) >= 27 {
                // kubelet 1.27 removed --container-runtime ("unknown flag") and reads the
                // endpoint from the KubeletConfiguration.
                assert_eq!(kc["containerRuntimeEndpoint"], endpoint, "{row}");
                assert!(
                    !flags.iter().any(|f| f.starts_with("--container-runtime")),
                    "{row}: {flags:?}"
                );
            } else {
                // Before 1.24 the default runtime is docker; 1.24–1.26 accept only `remote`.
                assert!(kc.get("containerRuntimeEndpoint").is_none(), "{row}: {kc}");
                assert!(
                    flags.contains(&"--container-runtime=remote".to_owned()),
                    "{row}: {flags:?}"
                );
                assert!(flags.contains(&flag), "{row}: {flags:?}");
            }
        }
    }
}

#[test]
fn exec_plugin_api_is_v1beta1_before_1_22_and_v1_with_interactive_mode_after() {
    for case in CASES {
        for version in VERSIONS {
            let row = format!("{}/{version}", case.name);
            let files = render_case(case, version);
            let kubeconfig = parse_value(&row, &files["kubeconfig"]);
            let exec = &kubeconfig["users"][0]["user"]["exec"];
            if minor(version) >= 22 {
                assert_eq!(
                    exec["apiVersion"], "client.authentication.k8s.io/v1",
                    "{row}"
                );
                // client-go rejects a v1 exec config without interactiveMode.
                assert_eq!(exec["interactiveMode"], "Never", "{row}");
            } else {
                assert_eq!(
                    exec["apiVersion"], "client.authentication.k8s.io/v1beta1",
                    "{row}"
                );
                assert!(exec.get("interactiveMode").is_none(), "{row}: {exec}");
            }
        }
    }
}

#[test]
fn kubelet_files_carry_the_node_identity_and_no_secret() {
    let case = &CASES[1];
    for version in VERSIONS {
        let row = format!("rich/{version}");
        let files = render_case(case, version);
        let flags: Vec<String> = serde_json::from_str(&files["flags.json"]).unwrap();
        for want in [
            "--config=/etc/kubernetes/kubelet/config.yaml",
            "--kubeconfig=/etc/kubernetes/kubelet/kubeconfig",
            "--root-dir=/data/kubelet",
            "--cert-dir=/data/kubelet/pki",
            "--node-ip=10.20.30.40",
            "--hostname-override=fargate-ip-10-20-30-40.eu-central-1.compute.internal",
            "--node-labels=eks.amazonaws.com/compute-type=fargate,\
             k8s.amazonaws.com/accelerator=NVIDIA-A10G,nvidia.com/gpu.product=NVIDIA-A10G,\
             satellite.dev/agent-version=0.1.0,satellite.dev/spot=,tier=gpu",
            "--register-with-taints=nvidia.com/gpu=present:NoSchedule,dedicated:NoExecute",
        ] {
            assert!(
                flags.iter().any(|f| f == want),
                "{row}: {want} not in {flags:?}"
            );
        }
        // spec.kubelet.flags come last, so they win over rendered ones.
        assert_eq!(
            flags[flags.len() - 2..],
            ["--v=2", "--max-open-files=1000000"],
            "{row}"
        );

        let kc = parse_value(&row, &files["config.yaml"]);
        assert_eq!(
            kc["address"], "10.20.30.40",
            "{row}: serve only on the node IP"
        );
        assert_eq!(
            kc["clusterDNS"],
            serde_json::json!(["10.100.0.10"]),
            "{row}"
        );
        assert_eq!(kc["authentication"]["anonymous"]["enabled"], false, "{row}");
        assert_eq!(kc["authentication"]["webhook"]["enabled"], true, "{row}");
        assert_eq!(
            kc["authentication"]["x509"]["clientCAFile"], "/etc/satellite/pki/ca.crt",
            "{row}"
        );
        assert_eq!(kc["authorization"]["mode"], "Webhook", "{row}");
        assert_eq!(kc["serverTLSBootstrap"], true, "{row}");
        assert_eq!(kc["maxPods"], 64, "{row}: spec.kubelet.config merged");
        assert_eq!(kc["evictionHard"]["memory.available"], "500Mi", "{row}");

        let kubeconfig = parse_value(&row, &files["kubeconfig"]);
        let cluster = &kubeconfig["clusters"][0]["cluster"];
        assert_eq!(
            cluster["certificate-authority"],
            "/etc/satellite/pki/ca.crt"
        );
        assert!(cluster["server"].as_str().unwrap().starts_with("https://"));
        let exec = &kubeconfig["users"][0]["user"]["exec"];
        assert_eq!(
            exec["command"],
            "/opt/satellite/bin/satellite-credential-plugin"
        );
        let args: Vec<&str> = exec["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for pair in [
            ["--region", "eu-central-1"],
            ["--cluster-name", "gpu-lab"],
            [
                "--role-arn",
                "arn:aws:iam::210987654321:role/gpu/satellite-node",
            ],
            ["--session-name", "gpu-host-07"],
            ["--sts-endpoint", "https://sts.eu-central-1.amazonaws.com"],
            ["--profile", "satellite"],
            ["--cache-dir", "/var/cache/satellite/credentials"],
        ] {
            assert!(
                args.windows(2).any(|w| w == pair),
                "{row}: {pair:?} not in {args:?}"
            );
        }
        assert_eq!(
            exec["env"],
            serde_json::json!([
                {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/etc/satellite/aws-credentials"},
                {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
            ]),
            "{row}"
        );
        assert!(
            !files["kubeconfig"].contains("aws_secret_access_key")
                && !files["kubeconfig"].contains("token:"),
            "{row}: the kubeconfig must only reference secrets"
        );
        assert!(
            files["plan.txt"].contains("0600 /etc/kubernetes/kubelet/kubeconfig"),
            "{row}: {}",
            files["plan.txt"]
        );

        let cni = parse_value(&row, &files["10-satellite.conflist"]);
        assert_eq!(cni["plugins"][0]["subnet"], "10.213.0.0/20", "{row}");
        assert_eq!(
            cni["plugins"][0]["logFile"], "/var/log/satellite/cni.log",
            "{row}"
        );
        assert_eq!(files["ca.crt"], CA_PEM, "{row}");
        assert!(
            files["satellite-agent.service"].contains(
                "\nExecStart=/usr/local/bin/satellite-agent run -c /etc/satellite/node.yaml\n"
            ),
            "{row}"
        );
        for (key, value) in render::SYSCTLS {
            assert!(
                files["90-satellite.conf"].contains(&format!("\n{key} = {value}\n")),
                "{row}: {key}"
            );
        }
    }
}

#[test]
fn the_compute_type_label_cannot_be_overridden() {
    // kube-proxy and aws-node skip nodes labelled compute-type=fargate; a user label must not
    // turn that off.
    let yaml = MINIMAL.to_owned()
        + "  kubelet:\n    labels: {eks.amazonaws.com/compute-type: ec2, zone: a}\n";
    let config = config("compute-type override", &yaml);
    let resolved = resolved(&config, "1.31", "172.20.0.0/16");
    let flags = render::kubelet_flags(&config, &resolved, &render::Layout::new(&config)).unwrap();
    assert!(
        flags.contains(
            &"--node-labels=eks.amazonaws.com/compute-type=fargate,satellite.dev/agent-version=0.1.0,zone=a"
                .to_owned()
        ),
        "{flags:?}"
    );
}

#[test]
fn kube_proxy_serves_node_ports_on_the_node_ip_only_with_the_node_identity() {
    let rich = config("rich", RICH);
    let resolved = resolved(&rich, "1.31", "10.100.0.0/16");
    let layout = render::Layout::new(&rich);
    let spec = rich
        .spec
        .kube_proxy
        .as_ref()
        .expect("rich has spec.kubeProxy");
    let kpc = render::kube_proxy_configuration(&rich, spec, &resolved, &layout);
    assert_eq!(kpc["kind"], "KubeProxyConfiguration");
    // NodePorts on N only: never on the host's own (internet-facing) address.
    assert_eq!(
        kpc["nodePortAddresses"],
        serde_json::json!(["10.20.30.40/32"])
    );
    assert_eq!(kpc["bindAddress"], "10.20.30.40");
    assert_eq!(kpc["hostnameOverride"], resolved.node_name);
    // The node's own identity: kubelet's kubeconfig (exec plugin, no secret).
    assert_eq!(
        kpc["clientConnection"]["kubeconfig"],
        layout.kubeconfig.display().to_string()
    );
    for key in ["metricsBindAddress", "healthzBindAddress"] {
        let addr = kpc[key].as_str().unwrap_or_default();
        assert!(addr.starts_with("127.0.0.1:"), "{key} = {addr}");
    }
    assert_eq!(kpc["clusterCIDR"], "10.213.0.0/20");
    assert_eq!(kpc["iptables"], serde_json::json!({"syncPeriod": "10s"}));
    let plan = render::plan(&rich, &resolved).expect("render");
    let flags = plan
        .files()
        .iter()
        .find(|f| f.path == layout.kube_proxy_flags)
        .expect("kube-proxy flags planned");
    let args: Vec<String> = serde_json::from_str(&flags.contents).expect("flags JSON");
    assert_eq!(
        args,
        [format!("--config={}", layout.kube_proxy_config.display())]
    );
    // Without spec.kubeProxy nothing of kube-proxy is written.
    let minimal = config("minimal", MINIMAL);
    let layout = render::Layout::new(&minimal);
    let plan = render::plan(&minimal, &resolved_for(&minimal)).expect("render");
    assert!(
        plan.files()
            .iter()
            .all(|f| f.path != layout.kube_proxy_config && f.path != layout.kube_proxy_flags),
        "kube-proxy files without spec.kubeProxy"
    );
}

fn resolved_for(config: &NodeConfig) -> Resolved {
    resolved(config, "1.31", "172.20.0.0/16")
}

#[test]
fn kubelet_config_override_replaces_whole_top_level_keys() {
    // FIXME(lead): current behaviour, probably not the intended one. Overriding one nested
    // value of `authentication` drops the rendered `x509.clientCAFile` (and `anonymous`,
    // `webhook.cacheTTL`): kubelet then cannot authenticate the API server's client
    // certificate, so `kubectl logs/exec` get 401. Either merge objects recursively or reject
    // overrides of the keys the agent renders (address, authentication, authorization,
    // clusterDNS, containerRuntimeEndpoint, apiVersion, kind, …) in validate().
    let yaml = MINIMAL.to_owned()
        + "  kubelet:\n    config:\n      authentication: {webhook: {enabled: true}}\n";
    let config = config("authentication override", &yaml);
    let resolved = resolved(&config, "1.31", "172.20.0.0/16");
    let kc =
        render::kubelet_configuration(&config, &resolved, &render::Layout::new(&config)).unwrap();
    assert_eq!(
        kc["authentication"],
        serde_json::json!({"webhook": {"enabled": true}}),
        "top-level keys of spec.kubelet.config replace the rendered ones"
    );
}

#[test]
fn an_unusable_service_cidr_fails_the_render_not_the_host() {
    let config = config("minimal", MINIMAL);
    // A CIDR too small for the DNS address parses, but cannot be rendered.
    for cidr in ["172.20.0.0/29", "172.20.0.8/30"] {
        let resolved = resolved(&config, "1.31", cidr);
        let err = render::plan(&config, &resolved).expect_err(cidr);
        assert!(err.contains(cidr), "service CIDR {cidr:?}: {err}");
    }
    // What is not an IPv4 network cannot even reach the renderer.
    for cidr in ["fd00::/108", "172.20.0.1/16", ""] {
        assert!(ipv4_net(cidr).is_err(), "{cidr:?} parsed");
    }
}

// ---------------------------------------------------------------------------------------------
// Version branch points.

#[test]
fn version_branch_points() {
    // (version, has_runtime_endpoint_field, exec_api_version)
    let v1beta1 = "client.authentication.k8s.io/v1beta1";
    let v1 = "client.authentication.k8s.io/v1";
    let table = [
        ("1.20", false, v1beta1),
        ("1.21", false, v1beta1),
        ("1.22", false, v1),
        ("1.23", false, v1),
        ("1.25", false, v1),
        ("1.26", false, v1),
        ("1.27", true, v1),
        ("1.29", true, v1),
        ("1.31", true, v1),
        ("1.33", true, v1),
        ("1.34", true, v1),
        ("2.0", true, v1),
    ];
    for (version, runtime_field, exec) in table {
        let parsed = KubeletVersion::parse(version).unwrap();
        assert_eq!(
            parsed.has_runtime_endpoint_field(),
            runtime_field,
            "{version}: has_runtime_endpoint_field"
        );
        assert_eq!(
            parsed.exec_api_version(),
            exec,
            "{version}: exec_api_version"
        );
    }
    for listed in VERSIONS {
        assert!(
            table.iter().any(|(v, ..)| v == listed),
            "{listed} has no branch-point row"
        );
    }
}

#[test]
fn kubelet_version_parsing() {
    let ok = [
        ("Kubernetes v1.20.2", (1, 20)),
        ("Kubernetes v1.34.0\n", (1, 34)),
        ("v1.30.0-eks-036c24b", (1, 30)),
        ("Kubernetes v1.29.3+k3s1", (1, 29)),
        ("1.27", (1, 27)),
        ("1.9.11", (1, 9)),
    ];
    for (text, (major, minor)) in ok {
        let v = KubeletVersion::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!((v.major, v.minor), (major, minor), "{text:?}");
    }
    for text in ["", "Kubernetes", "Kubernetes vX.Y", "1", "v1.", "v1.x.2"] {
        assert!(
            KubeletVersion::parse(text).is_err(),
            "{text:?} must not parse"
        );
    }
    // Numeric, not lexical, order: 1.9 < 1.20 < 1.100.
    let [a, b, c] = ["1.9", "1.20", "1.100"].map(|v| KubeletVersion::parse(v).unwrap());
    assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
}

// ---------------------------------------------------------------------------------------------
// clusterDNS, labels, taints.

/// clusterDNS of a CIDR as written: parsed, then its `.10`.
fn cluster_dns(cidr: &str) -> Result<Ipv4Addr, String> {
    ipv4_net(cidr).and_then(satellite_agent::config::cluster_dns)
}

#[test]
fn cluster_dns_is_the_service_cidrs_dot_10() {
    let ok = [
        ("10.100.0.0/16", Ipv4Addr::new(10, 100, 0, 10)),
        ("172.20.0.0/16", Ipv4Addr::new(172, 20, 0, 10)),
        ("192.168.4.0/24", Ipv4Addr::new(192, 168, 4, 10)),
        ("10.0.0.0/8", Ipv4Addr::new(10, 0, 0, 10)),
        ("198.19.0.16/28", Ipv4Addr::new(198, 19, 0, 26)),
    ];
    for (cidr, want) in ok {
        assert_eq!(cluster_dns(cidr), Ok(want), "cluster_dns({cidr:?})");
    }
    // (cidr, substring of the error)
    let bad = [
        ("10.3.0.0/12", "host bits set; use 10.0.0.0/12"),
        ("10.100.0.1/16", "host bits set; use 10.100.0.0/16"),
        ("10.100.0.0/29", "too small"),
        ("10.100.0.8/30", "too small"),
        ("10.100.0.10/32", "too small"),
        ("10.100.0.0", "not an IPv4 CIDR"),
        ("10.100.0.0/", "not an IPv4 CIDR"),
        ("10.100.0.0/33", "not an IPv4 CIDR"),
        ("10.100.0.0/-1", "not an IPv4 CIDR"),
        ("10.100.0.0/16/1", "not an IPv4 CIDR"),
        ("10.100.0/16", "not an IPv4 CIDR"),
        ("256.0.0.0/8", "not an IPv4 CIDR"),
        ("fd00::/108", "not an IPv4 CIDR"),
        ("2001:db8::/64", "not an IPv4 CIDR"),
        ("service-cidr", "not an IPv4 CIDR"),
        ("", "not an IPv4 CIDR"),
    ];
    for (cidr, needle) in bad {
        match cluster_dns(cidr) {
            Ok(ip) => panic!("cluster_dns({cidr:?}) = {ip}, want an error with {needle:?}"),
            Err(e) => assert!(
                e.contains(needle),
                "cluster_dns({cidr:?}): {e:?} lacks {needle:?}"
            ),
        }
    }
}

fn dns_labels(parts: &[usize]) -> String {
    parts
        .iter()
        .map(|n| "a".repeat(*n))
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn label_syntax() {
    let prefix_253 = dns_labels(&[63, 63, 63, 61]);
    let prefix_254 = dns_labels(&[63, 63, 63, 62]);
    assert_eq!((prefix_253.len(), prefix_254.len()), (253, 254));
    let name_63 = format!(
        "a{}z",
        "-_.".repeat(20).chars().take(61).collect::<String>()
    );
    let name_64 = "n".repeat(64);
    let value_63 = "V".repeat(63);
    let value_64 = "V".repeat(64);

    let valid: Vec<(String, String)> = [
        ("app", "web"),
        ("tier", ""),
        ("nvidia.com/gpu.product", "NVIDIA-A10G"),
        ("k8s.amazonaws.com/accelerator", "NVIDIA-A10G"),
        ("eks.amazonaws.com/compute-type", "fargate"),
        ("satellite.dev/agent-version", "0.1.0"),
        ("A_b.c-D", "x_Y.z-9"),
        ("1", "0"),
        ("example.com/Name", "v"),
        ("a-b.c-d.e/f", "g"),
        ("x1.example/n", "v"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([
        (format!("{prefix_253}/name"), "v".to_owned()),
        (name_63.clone(), value_63.clone()),
        (format!("example.com/{name_63}"), String::new()),
    ])
    .collect();
    for (key, value) in &valid {
        assert_eq!(
            label(key, value),
            Ok(()),
            "label {key:?}={value:?} is valid Kubernetes syntax"
        );
    }

    // (key, value, substring of the error)
    let invalid: Vec<(String, String, &str)> = [
        ("", "x", "label name"),
        ("bad label", "x", "label name"),
        ("-app", "x", "label name"),
        ("app-", "x", "label name"),
        ("app.", "x", "label name"),
        ("a:b", "x", "label name"),
        ("a,b", "x", "label name"),
        ("a=b", "x", "label name"),
        ("gpü", "x", "label name"),
        ("example.com/", "x", "label name"),
        ("/name", "x", "label prefix"),
        ("Example.com/name", "x", "label prefix"),
        ("exa_mple.com/name", "x", "label prefix"),
        ("-example.com/name", "x", "label prefix"),
        ("example-.com/name", "x", "label prefix"),
        ("example..com/name", "x", "label prefix"),
        (".example.com/name", "x", "label prefix"),
        ("example.com./name", "x", "label prefix"),
        ("a/b/c", "x", "label prefix"),
        ("app", "-x", "label value"),
        ("app", "x-", "label value"),
        ("app", "x y", "label value"),
        ("app", "a,b=c", "label value"),
        ("app", "a:b", "label value"),
        ("app", "a/b", "label value"),
        ("app", " ", "label value"),
    ]
    .into_iter()
    .map(|(k, v, e)| (k.to_owned(), v.to_owned(), e))
    .chain([
        (name_64.clone(), "x".to_owned(), "label name"),
        (
            format!("example.com/{name_64}"),
            "x".to_owned(),
            "label name",
        ),
        (format!("{prefix_254}/name"), "x".to_owned(), "label prefix"),
        ("app".to_owned(), value_64.clone(), "label value"),
    ])
    .collect();
    for (key, value, needle) in &invalid {
        match label(key, value) {
            Ok(()) => panic!("label {key:?}={value:?} accepted; Kubernetes rejects it"),
            Err(e) => assert!(
                e.contains(needle),
                "label {key:?}={value:?}: error {e:?} lacks {needle:?}"
            ),
        }
    }
}

#[test]
fn taint_syntax() {
    let valid = [
        "nvidia.com/gpu=present:NoSchedule",
        "dedicated:NoExecute",
        "spot=true:PreferNoSchedule",
        "empty-value=:NoSchedule",
        "example.com/Key_1=v.2:NoExecute",
    ];
    for taint in valid {
        assert_eq!(
            Taint::new(taint).map(|_| ()),
            Ok(()),
            "taint {taint:?} is valid"
        );
    }
    // (taint, substring of the error)
    let long_value = format!("k={}:NoSchedule", "v".repeat(64));
    let invalid = [
        ("gpu", "key[=value]:Effect"),
        ("gpu=present", "key[=value]:Effect"),
        ("", "key[=value]:Effect"),
        ("gpu:Sometimes", "taint effect \"Sometimes\""),
        ("gpu:noschedule", "taint effect"),
        ("gpu=x:", "taint effect \"\""),
        ("gpu:NoSchedule ", "taint effect"),
        ("a=b:NoSchedule,c:NoExecute", "label value"),
        ("gpu:NoSchedule,other", "taint effect"),
        (":NoSchedule", "label name"),
        ("=x:NoSchedule", "label name"),
        ("bad key=x:NoSchedule", "label name"),
        ("a:b:NoSchedule", "label name"),
        ("k=v=w:NoSchedule", "label value"),
        ("k=bad value:NoSchedule", "label value"),
        (long_value.as_str(), "label value"),
        ("Example.com/k=v:NoSchedule", "label prefix"),
    ];
    for (taint, needle) in invalid {
        match Taint::new(taint).map(|_| ()) {
            Ok(()) => panic!("taint {taint:?} accepted; kubelet rejects it"),
            Err(e) => assert!(
                e.contains(needle),
                "taint {taint:?}: {e:?} lacks {needle:?}"
            ),
        }
    }
}
