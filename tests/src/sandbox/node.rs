//! A satellite node in the sandbox: this machine, joined the way an operator joins a GPU host.
//!
//! 1. [`write_config`]: a NodeConfig (`<work dir>/node/node.yaml`) naming the sandbox's
//!    cluster (endpoint + CA given, as nodeadm allows), the host user's credentials file and
//!    the node role, the node's ENI, and paths under the work dir.
//! 2. [`admin`] `authorize`: `satellite-agent admin authorize` maps the role to
//!    `system:node:<name>` in `kube-system/aws-auth` (cluster-admin side).
//! 3. [`join`]: `satellite-agent join` writes kubelet's files.
//! 4. [`start_agent`]: `satellite-agent run` (a sandbox process: `run/satellite-agent.pid`,
//!    `logs/satellite-agent.log`) installs the datapath (N on `lo`, tc NAT with the proxy as
//!    the peer) and supervises kubelet, which authenticates with our credential plugin's
//!    `k8s-aws-v1.` tokens through the sandbox's webhook.
//!
//! The cluster side runs in the VPC namespace: `admin authorize`, the serving-CSR approver
//! ([`start_approver`]) and `satellite-agent proxy` holding N ([`start_proxy`]), which passes
//! kubelet's port and the NodePort range through to the host's public address. The node runs
//! in the host namespace ([`super::topology`]). [`up`] does all of it and waits for the Node
//! to be Ready. The node's kubelet state, pods' cgroups (under the kubelet `cgroupRoot`
//! `/<namespace>`), its bpffs and files are removed by [`super::lifecycle::down`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{SandboxInfo, netns, processes, write_atomic};

/// The agent's process name (pid file, log).
pub const AGENT: &str = "satellite-agent";
/// The serving-CSR approver's process name (pid file, log).
pub const APPROVER: &str = "satellite-csr-approver";
/// The VPC-side proxy's process name (pid file, log).
pub const PROXY: &str = "satellite-proxy";
/// The node's processes, in the order `down` stops them (the agent first: it stops kubelet).
pub const PROCESSES: &[&str] = &[AGENT, APPROVER, PROXY];
/// The proxy's `/healthz` and `/metrics` (in the VPC namespace).
pub const PROXY_HEALTH: &str = "127.0.0.1:9901";
/// The ports the proxy passes through to the host: kubelet's and the NodePort range.
pub const PROXY_PORTS: &str = "10250,30000-32767";
/// The node's directory inside the work dir.
pub const NODE_DIR: &str = "node";
/// How long a joined node may take to become Ready (measured: ~6 s from `run`).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Label the sandbox's NodeConfig adds, to show `spec.kubelet.labels` at work.
pub const SANDBOX_LABEL: (&str, &str) = ("satellite.dev/sandbox", "true");
/// cgroup v1 hierarchies kubelet (cgroupfs driver) and runc create cgroups in.
const CGROUP_HIERARCHIES: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "systemd",
    "unified",
];

/// The binaries a node runs (built from this workspace).
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    /// `satellite-agent`.
    pub agent: PathBuf,
    /// `satellite-credential-plugin` (kubelet's kubeconfig `exec` runs it).
    pub credential_plugin: PathBuf,
    /// `satellite-cni` (linked into the sandbox's CNI plugin directory; containerd runs it).
    pub cni_plugin: PathBuf,
}

/// What [`up`] did.
#[derive(Debug, Clone)]
pub struct NodeUp {
    /// The Node's name, `fargate-ip-198-18-0-10.us-east-1.compute.internal`.
    pub name: String,
    /// From the start of `join` until the Node's `Ready` condition was `True`.
    pub join_to_ready: Duration,
}

/// The node name the agent derives from the node IP and region (the product's naming rule:
/// `fargate-ip-<a-b-c-d>.<region>.compute.internal`).
pub fn node_name(info: &SandboxInfo) -> String {
    format!(
        "fargate-ip-{}.{}.compute.internal",
        info.node_ip.replace('.', "-"),
        info.region
    )
}

/// `<work dir>/node/node.yaml`.
pub fn config_path(info: &SandboxInfo) -> PathBuf {
    info.work_dir.join(NODE_DIR).join("node.yaml")
}

/// The kubelet `cgroupRoot` of the sandbox's node: `/<namespace>`, so two sandboxes' kubelets
/// never share cgroups and `down` finds every one of them.
pub fn cgroup_root(netns: &str) -> String {
    format!("/{netns}")
}

/// The NodeConfig for this sandbox (YAML).
///
/// Sandbox-specific choices: AWS endpoints point at the sandbox's moto servers; the cluster
/// endpoint and CA are given (moto's DescribeCluster returns placeholders); kubelet uses the
/// `cgroupfs` driver and `oomScoreAdj: 0` (no systemd and no CAP_SYS_RESOURCE here), and
/// absolute eviction thresholds (the default 10–15 % of a shared build machine's disk is
/// often not free, and kubelet would evict every pod).
pub fn config_yaml(info: &SandboxInfo, bins: &NodeBinaries) -> Result<String> {
    use base64::Engine as _;
    let ca = std::fs::read(&info.ca_file)
        .with_context(|| format!("reading {}", info.ca_file.display()))?;
    let node = info.work_dir.join(NODE_DIR);
    let d = |p: &str| node.join(p).display().to_string();
    Ok(format!(
        "# Written by the sandbox: this machine as a satellite node of the sandbox cluster.
apiVersion: satellite.dev/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: {cluster}
    region: {region}
    apiServerEndpoint: {endpoint}
    certificateAuthority: {ca}
    cidr: {service_cidr}
    awsEndpoints:
      sts: {moto}
      ec2: {moto}
      eks: {moto_eks}
  identity:
    roleArn: {role}
    credentialsFile: {creds}
    sessionName: sandbox-node
  node:
    eniId: {eni}
  kubelet:
    binary: {kubelet}
    config:
      cgroupDriver: cgroupfs
      cgroupRoot: {cgroup_root}
      oomScoreAdj: 0
      evictionHard:
        memory.available: 100Mi
        nodefs.available: 1Gi
        imagefs.available: 1Gi
    labels:
      {label_key}: \"{label_value}\"
  kubeProxy:
    binary: {kube_proxy}
  datapath:
    peers: [{proxy}]
    uplink: {uplink}
    bpffsDir: {bpffs}
    stateDir: {datapath_state}
  containerRuntime:
    endpoint: unix://{containerd}
  paths:
    kubeletDir: {kubelet_dir}
    pkiDir: {pki}
    kubeletConfigDir: {kubelet_config}
    cniConfigDir: {cni_conf}
    cniBinDir: {cni_bin}
    cniStateDir: {cni_state}
    cniLogFile: {cni_log}
    sysctlDir: {sysctl}
    systemdDir: {systemd}
    credentialPlugin: {plugin}
    credentialCacheDir: {cache}
",
        cluster = info.cluster_name,
        region = info.region,
        endpoint = info.apiserver_url,
        ca = base64::engine::general_purpose::STANDARD.encode(ca),
        service_cidr = info.service_cidr,
        moto = info.moto_url,
        moto_eks = info.moto_eks_url,
        role = info.role_arn,
        creds = info.host_access_key_file.display(),
        eni = info.node_eni_id,
        kubelet = info.kubelet_bin.display(),
        kube_proxy = info.kube_proxy_bin.display(),
        cgroup_root = cgroup_root(&info.netns),
        label_key = SANDBOX_LABEL.0,
        label_value = SANDBOX_LABEL.1,
        proxy = info.proxy_address,
        uplink = super::topology::HOST_UPLINK,
        bpffs = bpffs_dir(info).display(),
        datapath_state = d("datapath"),
        containerd = info.containerd_socket.display(),
        kubelet_dir = info.work_dir.join("kubelet").display(),
        pki = d("pki"),
        kubelet_config = d("kubelet"),
        cni_conf = info.cni_conf_dir.display(),
        cni_bin = info.cni_bin_dir.display(),
        cni_state = d("cni-state"),
        cni_log = info.work_dir.join("logs/satellite-cni.log").display(),
        sysctl = d("sysctl.d"),
        systemd = d("systemd"),
        plugin = bins.credential_plugin.display(),
        cache = d("credential-cache"),
    ))
}

/// Writes [`config_yaml`] to [`config_path`] (0600: it names the credentials file), and
/// installs `satellite-cni` into the sandbox's CNI plugin directory (a symlink), as a node's
/// package would.
pub fn write_config(info: &SandboxInfo, bins: &NodeBinaries) -> Result<PathBuf> {
    let link = info.cni_bin_dir.join("satellite-cni");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&bins.cni_plugin, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    let path = config_path(info);
    write_atomic(&path, config_yaml(info, bins)?.as_bytes(), 0o600)?;
    Ok(path)
}

/// The node's bpffs mount point (`<work dir>/node/bpffs`), the datapath's `bpffsDir`: a
/// bpffs of its own, so pins never meet another sandbox's and `down` releases them by
/// unmounting.
pub fn bpffs_dir(info: &SandboxInfo) -> PathBuf {
    info.work_dir.join(NODE_DIR).join("bpffs")
}

/// `satellite-agent admin authorize|revoke -c node.yaml --node-ip <ip>` with the admin
/// kubeconfig, in the VPC namespace. `action` is `authorize` or `revoke`.
pub fn admin(info: &SandboxInfo, bins: &NodeBinaries, action: &str) -> Result<()> {
    agent(
        &info.netns,
        bins,
        &[
            "admin",
            action,
            "-c",
            &config_path(info).display().to_string(),
            "--node-ip",
            &info.node_ip,
            "--kubeconfig",
            &info.admin_kubeconfig.display().to_string(),
        ],
    )
    .map(drop)
}

/// `satellite-agent join -c node.yaml` in the host namespace; returns its stderr summary.
pub fn join(info: &SandboxInfo, bins: &NodeBinaries) -> Result<String> {
    agent(
        &info.host_netns,
        bins,
        &["join", "-c", &config_path(info).display().to_string()],
    )
}

/// Starts `satellite-agent run` in the host namespace as a sandbox process (a no-op when it
/// is running); returns its pid. Creates the kubelet `cgroupRoot` first (kubelet refuses a
/// missing one) and mounts the node's bpffs ([`bpffs_dir`]) unless it is mounted.
pub fn start_agent(info: &SandboxInfo, bins: &NodeBinaries) -> Result<i32> {
    if let Some(pid) = processes::running(&info.work_dir, AGENT) {
        return Ok(pid);
    }
    create_cgroup_root(&info.netns)?;
    mount_bpffs(&bpffs_dir(info))?;
    let mut cmd = netns::daemon_command(&info.host_netns, &bins.agent);
    cmd.args(["run", "-c"])
        .arg(config_path(info))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("KUBECONFIG");
    processes::spawn(&info.work_dir, AGENT, cmd)
}

/// Applies the approver's ClusterRole and binding (for [`super::pki::APPROVER_USER`]) and
/// starts `satellite-agent admin approve-csrs --watch` as a sandbox process (a no-op when it
/// is running); returns its pid.
pub fn start_approver(info: &SandboxInfo, bins: &NodeBinaries) -> Result<i32> {
    let rbac = agent_stdout(
        &info.netns,
        bins,
        &[
            "admin",
            "approver-rbac",
            "--user",
            super::pki::APPROVER_USER,
        ],
    )?;
    super::lifecycle::kubectl_apply(&info.work_dir, &info.netns, &rbac)
        .context("applying the approver's RBAC")?;
    if let Some(pid) = processes::running(&info.work_dir, APPROVER) {
        return Ok(pid);
    }
    let mut cmd = netns::daemon_command(&info.netns, &bins.agent);
    cmd.args(["admin", "approve-csrs", "--watch", "--kubeconfig"])
        .arg(&info.approver_kubeconfig)
        .args(["--service-cidr", &info.service_cidr])
        .env_remove("KUBECONFIG");
    processes::spawn(&info.work_dir, APPROVER, cmd)
}

/// Starts `satellite-agent proxy` in the VPC namespace as a sandbox process (a no-op when it
/// is running): it listens on N for [`PROXY_PORTS`] and passes each connection through to the
/// host's public address, from its own public address (the datapath's peer). Returns its pid
/// once it listens on N:10250.
pub fn start_proxy(info: &SandboxInfo, bins: &NodeBinaries) -> Result<i32> {
    if let Some(pid) = processes::running(&info.work_dir, PROXY) {
        return Ok(pid);
    }
    let mut cmd = netns::daemon_command(&info.netns, &bins.agent);
    cmd.args(["proxy", "--map"])
        .arg(format!(
            "{}={}:{PROXY_PORTS}",
            info.node_ip, info.public_address
        ))
        .args(["--health", PROXY_HEALTH])
        .env("RUST_LOG", "info");
    let pid = processes::spawn(&info.work_dir, PROXY, cmd)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let kubelet_port = format!("{}:10250", info.node_ip);
    loop {
        let addr = kubelet_port.clone();
        let listening = netns::run_in(&info.netns, move || {
            std::net::TcpStream::connect_timeout(
                &addr.parse().expect("socket address"),
                Duration::from_millis(200),
            )
            .is_ok()
        })?;
        if listening {
            return Ok(pid);
        }
        if processes::running(&info.work_dir, PROXY).is_none() || Instant::now() > deadline {
            bail!(
                "satellite-agent proxy is not listening on {kubelet_port}; see {}",
                processes::log_file(&info.work_dir, PROXY).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum of every series of proxy metric `name` (e.g.
/// `satellite_proxy_connections_accepted_total`), read from its `/metrics` in the VPC
/// namespace.
pub fn proxy_metric(info: &SandboxInfo, name: &str) -> Result<f64> {
    let text = netns::run_in(&info.netns, || {
        ureq::get(format!("http://{PROXY_HEALTH}/metrics"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
    })?
    .context("GET the proxy's /metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Stops the agent (SIGTERM: it stops kubelet first). Safe when it is not running.
pub fn stop_agent(info: &SandboxInfo) {
    processes::stop(&info.work_dir, AGENT);
}

/// Pids of the kubelet processes inside the sandbox's host namespace.
pub fn kubelet_pids(info: &SandboxInfo) -> Vec<i32> {
    // /proc/<pid>/exe is the resolved path; the contract's goes through a symlink.
    let Ok(kubelet) = info.kubelet_bin.canonicalize() else {
        return Vec::new();
    };
    netns::pids_inside(&info.host_netns)
        .into_iter()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == kubelet))
        .collect()
}

/// Whether Node `name` exists and its `Ready` condition is `True` (admin kubeconfig).
pub fn node_ready(info: &SandboxInfo, name: &str) -> Result<bool> {
    let out = info
        .command("kubectl")
        .args(["get", "node", name, "-o", "json", "--request-timeout=5s"])
        .stdin(Stdio::null())
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        return Ok(false);
    }
    let node: Value = serde_json::from_slice(&out.stdout).context("kubectl printed no JSON")?;
    Ok(node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits until Node `name` is Ready; fails after `timeout`, or when the agent has exited,
/// naming its log.
pub fn wait_ready(info: &SandboxInfo, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let log = processes::log_file(&info.work_dir, AGENT);
    while !node_ready(info, name)? {
        if processes::running(&info.work_dir, AGENT).is_none() {
            bail!("satellite-agent exited; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!(
                "node {name} not Ready within {timeout:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Joins this machine to the sandbox as a node and waits until it is Ready: NodeConfig,
/// `admin authorize`, `join`, `run`. Idempotent: a second call changes nothing and finds the
/// node Ready.
pub fn up(info: &SandboxInfo, bins: &NodeBinaries) -> Result<NodeUp> {
    let name = node_name(info);
    write_config(info, bins)?;
    start_approver(info, bins)?;
    start_proxy(info, bins)?;
    admin(info, bins, "authorize")?;
    let t0 = Instant::now();
    join(info, bins)?;
    start_agent(info, bins)?;
    wait_ready(info, &name, READY_TIMEOUT)?;
    Ok(NodeUp {
        name,
        join_to_ready: t0.elapsed(),
    })
}

/// Waits until kubelet's serving CSR (`kubernetes.io/kubelet-serving`, requested by
/// `system:node:<name>`) has its certificate issued; returns the CSR's name. Fails after
/// `timeout`, naming the approver's log.
pub fn wait_serving_certificate(
    info: &SandboxInfo,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let requester = format!("system:node:{name}");
    loop {
        let list = kubectl_json(info, &["get", "csr"])?;
        let issued = list["items"].as_array().into_iter().flatten().find(|c| {
            c["spec"]["username"] == requester.as_str()
                && c["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                && c["status"]["certificate"].is_string()
        });
        if let Some(csr) = issued {
            return Ok(csr["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned());
        }
        if Instant::now() > deadline {
            bail!(
                "no serving certificate issued for {name} within {timeout:?}; see {}",
                processes::log_file(&info.work_dir, APPROVER).display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs pod `pod` (busybox printing `message`, bound to node `name`) to completion and
/// returns `kubectl logs` of it: the API server → N → proxy → NAT → tc → kubelet path, with
/// kubelet's approved serving certificate. The pod is deleted afterwards.
pub fn pod_logs(info: &SandboxInfo, name: &str, pod: &str, message: &str) -> Result<String> {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default}}\nspec:\n  nodeName: {name}\n  restartPolicy: Never\n  automountServiceAccountToken: false\n  containers:\n  - name: main\n    image: \"{}\"\n    imagePullPolicy: Never\n    command: [/bin/busybox, echo, \"{message}\"]\n",
        super::BUSYBOX_IMAGE
    );
    super::lifecycle::kubectl_apply(&info.work_dir, &info.netns, &manifest)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let phase = kubectl_json(info, &["get", "pod", pod])?["status"]["phase"].clone();
        if phase == "Succeeded" || phase == "Failed" {
            let out = info
                .command("kubectl")
                .args(["logs", pod])
                .stdin(Stdio::null())
                .output()
                .context("running kubectl logs")?;
            if !out.status.success() {
                bail!(
                    "kubectl logs {pod}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            bail!("pod {pod} did not complete within 60 s (phase {phase})");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = info
        .command("kubectl")
        .args(["delete", "pod", pod, "--wait=false"])
        .stdin(Stdio::null())
        .output();
    Ok(logs)
}

/// `kubectl ARGS -o json` with the admin kubeconfig in the VPC namespace.
fn kubectl_json(info: &SandboxInfo, args: &[&str]) -> Result<Value> {
    let out = info
        .command("kubectl")
        .args(args)
        .args(["-o", "json", "--request-timeout=5s"])
        .stdin(Stdio::null())
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("kubectl printed no JSON")
}

/// Kills what the node's pods left running once kubelet and containerd are gone: every
/// process in the node's cgroups (pod processes live in their own network namespaces, so
/// the sandbox's namespace sweep misses them), and removes the pod network namespaces
/// containerd bind-mounted under `/run/netns` for them. `netns`: the sandbox's (VPC)
/// namespace, which names the cgroups; `host_netns`: the node's. Waits up to 5 s for the
/// cgroups to empty.
pub fn kill_pods(netns: &str, host_netns: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let pids = cgroup_pids(netns);
    if pids.is_empty() {
        return Ok(());
    }
    let host_ns = std::fs::metadata(netns::path(host_netns))
        .map(|m| m.ino())
        .ok();
    let pod_namespaces: std::collections::BTreeSet<u64> = pids
        .iter()
        .filter_map(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|m| m.ino())
        .filter(|ino| Some(*ino) != host_ns)
        .collect();
    for pid in &pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cgroup_pids(netns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // stat follows the bind mount to the nsfs inode of the namespace itself.
        if std::fs::metadata(&path).is_ok_and(|m| pod_namespaces.contains(&m.ino())) {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            std::fs::remove_file(&path)
                .with_context(|| format!("removing pod namespace {}", path.display()))?;
        }
    }
    Ok(())
}

/// Every pid in the node's cgroups (any hierarchy).
fn cgroup_pids(netns: &str) -> Vec<i32> {
    let mut dirs = Vec::new();
    for hierarchy in CGROUP_HIERARCHIES {
        collect_dirs(&node_cgroup(hierarchy, netns), &mut dirs);
    }
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn node_cgroup(hierarchy: &str, netns: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(cgroup_root(netns).trim_start_matches('/'))
}

/// Removes the node's cgroups (`/<namespace>` in every hierarchy), deepest first. Called by
/// `down` once every process of the sandbox is gone ([`kill_pods`]); a cgroup still in use
/// is reported.
pub fn remove_cgroups(netns: &str) -> Result<()> {
    let mut dirs = Vec::new();
    for hierarchy in CGROUP_HIERARCHIES {
        collect_dirs(&node_cgroup(hierarchy, netns), &mut dirs);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing cgroup {}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_owned());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

/// Creates `/<namespace>` in every mounted cgroup hierarchy (a cpuset cgroup needs its
/// parent's `cpus` and `mems` before tasks can join its children).
fn create_cgroup_root(netns: &str) -> Result<()> {
    let root = Path::new("/sys/fs/cgroup");
    for hierarchy in CGROUP_HIERARCHIES {
        let parent = root.join(hierarchy);
        if !parent.join("cgroup.procs").exists() {
            continue;
        }
        let dir = node_cgroup(hierarchy, netns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if *hierarchy == "cpuset" {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read_to_string(parent.join(file))?;
                std::fs::write(dir.join(file), value.trim())
                    .with_context(|| format!("writing {}", dir.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// Mounts a bpffs on `dir` (created if missing) unless one is mounted there.
fn mount_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let shown = dir.display().to_string();
    if mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(shown.as_str()))
    {
        return Ok(());
    }
    netns::run(
        std::process::Command::new("mount")
            .args(["-t", "bpf", "satellite-sandbox"])
            .arg(dir),
    )
    .map(drop)
}

/// Runs `satellite-agent ARGS` inside namespace `ns`; its stderr on success, an error with
/// its stderr otherwise.
fn agent(ns: &str, bins: &NodeBinaries, args: &[&str]) -> Result<String> {
    agent_output(ns, bins, args).map(|(_, stderr)| stderr)
}

/// Like [`agent`], returning stdout.
fn agent_stdout(ns: &str, bins: &NodeBinaries, args: &[&str]) -> Result<String> {
    agent_output(ns, bins, args).map(|(stdout, _)| stdout)
}

fn agent_output(ns: &str, bins: &NodeBinaries, args: &[&str]) -> Result<(String, String)> {
    let out = netns::command(ns, &bins.agent)
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bins.agent.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!(
            "satellite-agent {} failed ({}): {}",
            args[..2.min(args.len())].join(" "),
            out.status,
            stderr.trim()
        );
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}
