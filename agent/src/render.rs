//! Renders the node's files from a resolved NodeConfig: KubeletConfiguration, kubelet flags,
//! kubeconfig (exec credential plugin), cluster CA, sysctls, CNI conflist, systemd unit, and
//! with `spec.kubeProxy` a KubeProxyConfiguration and kube-proxy's flags.
//!
//! Pure functions of their inputs (no I/O), so `join --dry-run` and tests see exactly what
//! would be written.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{NodeConfig, cluster_dns};
use crate::fsplan::{FileSpec, Plan};
use crate::parse::kube::Taint;

/// Label the agent puts on its Node: these nodes present as Fargate-style compute.
pub const COMPUTE_TYPE_LABEL: (&str, &str) = ("eks.amazonaws.com/compute-type", "fargate");

/// Label carrying the agent version.
pub const AGENT_VERSION_LABEL: &str = "satellite.dev/agent-version";

/// Sysctls kubelet needs on these hosts (else "Failed to start ContainerManager").
pub const SYSCTLS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
];

/// A kubelet version, `major.minor` (from `kubelet --version`: `Kubernetes v1.20.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeletVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl KubeletVersion {
    /// Parses `Kubernetes v1.20.2` (or `v1.30.0-eks-…`, or `1.30`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let word = text
            .split_whitespace()
            .find(|w| {
                w.trim_start_matches('v')
                    .starts_with(|c: char| c.is_ascii_digit())
            })
            .ok_or_else(|| format!("no version in {text:?}"))?;
        let mut parts = word.trim_start_matches('v').split(['.', '-', '+']);
        let mut next = || -> Result<u32, String> {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("no major.minor version in {text:?}"))
        };
        Ok(KubeletVersion {
            major: next()?,
            minor: next()?,
        })
    }

    /// kubelet ≥ 1.27 removed `--container-runtime` and reads `containerRuntimeEndpoint` from
    /// the KubeletConfiguration (the field exists since 1.27).
    pub fn has_runtime_endpoint_field(self) -> bool {
        self >= KubeletVersion {
            major: 1,
            minor: 27,
        }
    }

    /// client.authentication.k8s.io/v1 exists since 1.22; older clients need v1beta1.
    pub fn exec_api_version(self) -> &'static str {
        if self
            >= (KubeletVersion {
                major: 1,
                minor: 22,
            })
        {
            "client.authentication.k8s.io/v1"
        } else {
            "client.authentication.k8s.io/v1beta1"
        }
    }
}

/// Everything the renderer needs beyond the NodeConfig, resolved by `join`.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// API server URL.
    pub api_server: String,
    /// Cluster CA, PEM.
    pub ca_pem: String,
    /// The service CIDR (for clusterDNS).
    pub service_cidr: ipnet::Ipv4Net,
    /// The node's VPC IP.
    pub node_ip: Ipv4Addr,
    /// The node name derived from it.
    pub node_name: String,
    /// The installed kubelet's version.
    pub kubelet_version: KubeletVersion,
    /// The config file the agent unit runs with.
    pub node_config_path: PathBuf,
    /// The agent binary the unit runs.
    pub agent_binary: PathBuf,
}

/// Paths of the rendered files (absolute, before the root prefix).
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<pki>/ca.crt`.
    pub ca: PathBuf,
    /// `<kubelet config dir>/config.yaml`.
    pub kubelet_config: PathBuf,
    /// `<kubelet config dir>/kubeconfig`.
    pub kubeconfig: PathBuf,
    /// `<kubelet config dir>/flags.json`: kubelet's argv, read by `run`.
    pub kubelet_flags: PathBuf,
    /// `<kubelet config dir>/kube-proxy.yaml`: the KubeProxyConfiguration.
    pub kube_proxy_config: PathBuf,
    /// `<kubelet config dir>/kube-proxy-flags.json`: kube-proxy's argv, read by `run`.
    pub kube_proxy_flags: PathBuf,
    /// `<sysctl dir>/90-satellite.conf`.
    pub sysctl: PathBuf,
    /// `<cni config dir>/10-satellite.conflist`.
    pub cni: PathBuf,
    /// `<systemd dir>/satellite-agent.service`.
    pub unit: PathBuf,
}

impl Layout {
    /// The layout for `config`'s paths.
    pub fn new(config: &NodeConfig) -> Layout {
        let paths = &config.spec.paths;
        Layout {
            ca: paths.pki_dir.join("ca.crt"),
            kubelet_config: paths.kubelet_config_dir.join("config.yaml"),
            kubeconfig: paths.kubelet_config_dir.join("kubeconfig"),
            kubelet_flags: paths.kubelet_config_dir.join("flags.json"),
            kube_proxy_config: paths.kubelet_config_dir.join("kube-proxy.yaml"),
            kube_proxy_flags: paths.kubelet_config_dir.join("kube-proxy-flags.json"),
            sysctl: paths.sysctl_dir.join("90-satellite.conf"),
            cni: paths.cni_config_dir.join("10-satellite.conflist"),
            unit: paths.systemd_dir.join("satellite-agent.service"),
        }
    }
}

/// Renders every file for `config` + `resolved` into a [`Plan`].
///
/// Errors: a message when a value cannot be rendered (e.g. an unusable service CIDR).
pub fn plan(config: &NodeConfig, resolved: &Resolved) -> Result<Plan, String> {
    let layout = Layout::new(config);
    let mut plan = Plan::default();
    plan.add(FileSpec::new(&layout.ca, resolved.ca_pem.clone(), 0o644));
    plan.add(FileSpec::new(
        &layout.kubelet_config,
        yaml(&kubelet_configuration(config, resolved, &layout)?)?,
        0o644,
    ));
    plan.add(FileSpec::new(
        &layout.kubeconfig,
        yaml(&kubeconfig(config, resolved, &layout))?,
        0o600,
    ));
    let flags = kubelet_flags(config, resolved, &layout)?;
    plan.add(FileSpec::new(
        &layout.kubelet_flags,
        argv_json(&flags)?,
        0o644,
    ));
    if let Some(kube_proxy) = &config.spec.kube_proxy {
        let proxy_config = kube_proxy_configuration(config, kube_proxy, resolved, &layout);
        plan.add(FileSpec::new(
            &layout.kube_proxy_config,
            yaml(&proxy_config)?,
            0o644,
        ));
        let flags = [format!("--config={}", layout.kube_proxy_config.display())];
        plan.add(FileSpec::new(
            &layout.kube_proxy_flags,
            argv_json(&flags)?,
            0o644,
        ));
    }
    plan.add(FileSpec::new(&layout.sysctl, sysctl_conf(), 0o644));
    plan.add(FileSpec::new(&layout.cni, cni_conflist(config)?, 0o644));
    plan.add(FileSpec::new(&layout.unit, agent_unit(resolved), 0o644));
    Ok(plan)
}

/// A flags file (`flags.json`, `kube-proxy-flags.json`): the argv as a pretty JSON array,
/// which `run` reads back.
fn argv_json(args: &[String]) -> Result<String, String> {
    Ok(serde_json::to_string_pretty(args).map_err(|e| e.to_string())? + "\n")
}

/// The KubeletConfiguration (kubelet.config.k8s.io/v1beta1) as JSON, with
/// `spec.kubelet.config` merged over it (top-level keys replace).
pub fn kubelet_configuration(
    config: &NodeConfig,
    resolved: &Resolved,
    layout: &Layout,
) -> Result<Value, String> {
    let dns = cluster_dns(resolved.service_cidr)?;
    let mut kc = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // Serve only on the node IP: port 10250 must not face the internet.
        "address": resolved.node_ip.to_string(),
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": layout.ca},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [dns.to_string()],
        "serverTLSBootstrap": true,
        "cgroupDriver": "systemd",
    });
    if resolved.kubelet_version.has_runtime_endpoint_field() {
        kc["containerRuntimeEndpoint"] = json!(config.spec.container_runtime_endpoint);
    }
    for (key, value) in &config.spec.kubelet.config {
        kc[key] = value.clone();
    }
    Ok(kc)
}

/// The KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) as JSON, with
/// `spec.kubeProxy.config` merged over it (top-level keys replace).
///
/// kube-proxy authenticates with kubelet's kubeconfig: the node's own identity, whose
/// aws-auth groups include `system:node-proxier` (as EKS's Fargate mapping does). NodePorts
/// open on N only (`nodePortAddresses`), never on the host's own address S, which faces the
/// internet; metrics and healthz stay on loopback; conntrack limits are left to the host
/// (`maxPerCore: 0`).
pub fn kube_proxy_configuration(
    config: &NodeConfig,
    kube_proxy: &crate::config::KubeProxySpec,
    resolved: &Resolved,
    layout: &Layout,
) -> Value {
    let mut kpc = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": layout.kubeconfig},
        "hostnameOverride": resolved.node_name,
        "bindAddress": resolved.node_ip.to_string(),
        "clusterCIDR": config.spec.pod_cidr.to_string(),
        "mode": "iptables",
        "nodePortAddresses": [format!("{}/32", resolved.node_ip)],
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
        "conntrack": {"maxPerCore": 0},
    });
    for (key, value) in &kube_proxy.config {
        kpc[key] = value.clone();
    }
    kpc
}

/// kubelet's command line (without the binary): rendered flags, then `spec.kubelet.flags`.
pub fn kubelet_flags(
    config: &NodeConfig,
    resolved: &Resolved,
    layout: &Layout,
) -> Result<Vec<String>, String> {
    let kubelet = &config.spec.kubelet;
    let mut labels: BTreeMap<&str, &str> = kubelet
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    labels.insert(COMPUTE_TYPE_LABEL.0, COMPUTE_TYPE_LABEL.1);
    // At registration already (`run` keeps it afterwards): the serving-CSR approver judges
    // only nodes that carry it, and kubelet files its CSR seconds after registering.
    labels.insert(AGENT_VERSION_LABEL, env!("CARGO_PKG_VERSION"));
    let mut flags = vec![
        format!("--config={}", layout.kubelet_config.display()),
        format!("--kubeconfig={}", layout.kubeconfig.display()),
        format!("--root-dir={}", config.spec.paths.kubelet_dir.display()),
        // kubelet's serving certificate lives under its root dir: `--cert-dir` defaults to
        // /var/lib/kubelet/pki whatever `--root-dir` says, so a node with another kubeletDir
        // would share (and reuse) the host's default one.
        format!(
            "--cert-dir={}",
            config.spec.paths.kubelet_dir.join("pki").display()
        ),
        format!("--node-ip={}", resolved.node_ip),
        format!("--hostname-override={}", resolved.node_name),
        format!(
            "--node-labels={}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ];
    if !kubelet.taints.is_empty() {
        let taints: Vec<&str> = kubelet.taints.iter().map(Taint::as_str).collect();
        flags.push(format!("--register-with-taints={}", taints.join(",")));
    }
    if !resolved.kubelet_version.has_runtime_endpoint_field() {
        flags.push("--container-runtime=remote".into());
        flags.push(format!(
            "--container-runtime-endpoint={}",
            config.spec.container_runtime_endpoint
        ));
    }
    flags.extend(kubelet.flags.iter().cloned());
    Ok(flags)
}

/// kubelet's kubeconfig: the cluster with its CA file, and a user whose `exec` runs the
/// credential plugin for the node role (no secret in the file: only paths and names).
pub fn kubeconfig(config: &NodeConfig, resolved: &Resolved, layout: &Layout) -> Value {
    let cluster = &config.spec.cluster;
    let identity = &config.spec.identity;
    let mut args = vec![
        "--region".to_owned(),
        cluster.region.to_string(),
        "eks".into(),
        "get-token".into(),
        "--cluster-name".into(),
        cluster.name.as_str().to_owned(),
        "--role-arn".into(),
        identity.role_arn.to_string(),
        "--cache-dir".into(),
        config.spec.paths.credential_cache_dir.display().to_string(),
    ];
    if let Some(name) = &identity.session_name {
        args.extend(["--session-name".into(), name.as_str().to_owned()]);
    }
    if let Some(sts) = &cluster.aws_endpoints.sts {
        args.extend(["--sts-endpoint".into(), sts.to_string()]);
    }
    if let Some(profile) = &identity.profile {
        args.extend(["--profile".into(), profile.clone()]);
    }
    let mut env = Vec::new();
    if let Some(file) = &identity.credentials_file {
        env.push(json!({"name": "AWS_SHARED_CREDENTIALS_FILE", "value": file}));
        // The credentials file is the only source: never fall through to instance metadata.
        env.push(json!({"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}));
    }
    let mut exec = json!({
        "apiVersion": resolved.kubelet_version.exec_api_version(),
        "command": config.spec.paths.credential_plugin,
        "args": args,
        "env": env,
    });
    if resolved.kubelet_version.exec_api_version().ends_with("/v1") {
        exec["interactiveMode"] = json!("Never");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster.name.as_str(), "cluster": {
            "server": resolved.api_server,
            "certificate-authority": layout.ca,
        }}],
        "users": [{"name": "kubelet", "user": {"exec": exec}}],
        "contexts": [{"name": "kubelet", "context": {"cluster": cluster.name.as_str(), "user": "kubelet"}}],
        "current-context": "kubelet",
    })
}

/// `/etc/sysctl.d/90-satellite.conf`.
pub fn sysctl_conf() -> String {
    let mut out = String::from("# Written by satellite-agent join: kubelet requires these.\n");
    for (key, value) in SYSCTLS {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// The CNI conflist for `satellite-cni` (`cni-plugin/`): ptp-style veths with addresses from
/// `spec.podCidr`, pod egress masqueraded behind the host, host ports (`portMappings`).
///
/// `cniVersion` stays 1.0.0 (with `cniVersions` offering 1.1.0): libcni 1.1 — containerd 1.6,
/// cnitool — cannot read 1.1.0 results.
pub fn cni_conflist(config: &NodeConfig) -> Result<String, String> {
    let pod_cidr = config.spec.pod_cidr.to_string();
    let paths = &config.spec.paths;
    let conflist = json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "satellite",
        "plugins": [{
            "type": "satellite-cni",
            "subnet": pod_cidr,
            "masquerade": true,
            "dataDir": paths.cni_state_dir,
            "logFile": paths.cni_log_file,
            "capabilities": {"portMappings": true},
        }],
    });
    serde_json::to_string_pretty(&conflist)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// The systemd unit that runs the agent (which runs kubelet).
pub fn agent_unit(resolved: &Resolved) -> String {
    format!(
        "# Written by satellite-agent join.\n\
         [Unit]\n\
         Description=satellite agent (EKS node outside AWS): supervises kubelet\n\
         Documentation=https://github.com/satellite-eks/satellite\n\
         Wants=network-online.target containerd.service\n\
         After=network-online.target containerd.service\n\
         \n\
         [Service]\n\
         Type=notify\n\
         ExecStart={} run -c {}\n\
         Restart=always\n\
         RestartSec=5\n\
         KillMode=mixed\n\
         TimeoutStopSec=60\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        resolved.agent_binary.display(),
        resolved.node_config_path.display()
    )
}

fn yaml(value: &Value) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// A path under `root` (`/` → unchanged).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}
