//! A satellite node in the sandbox: this machine, joined the way an operator joins a GPU host.
//!
//! 1. [`write_config`]: a NodeConfig (`<work dir>/node/node.yaml`) naming the sandbox's
//!    cluster (endpoint + CA given, as nodeadm allows), the host user's credentials file and
//!    the node role, the node's ENI, and paths under the work dir.
//! 2. [`admin`] `authorize`: `satellite-agent admin authorize` maps the role to
//!    `system:node:<name>` in `kube-system/aws-auth` (cluster-admin side).
//! 3. [`join`]: `satellite-agent join` writes kubelet's files.
//! 4. [`start_agent`]: `satellite-agent run` (a sandbox process: `run/satellite-agent.pid`,
//!    `logs/satellite-agent.log`) supervises kubelet, which authenticates with our credential
//!    plugin's `k8s-aws-v1.` tokens through the sandbox's webhook.
//!
//! [`up`] does all four and waits for the Node to be Ready. Everything runs inside the
//! sandbox's namespace; the node's kubelet state, pods' cgroups (under the kubelet
//! `cgroupRoot` `/<namespace>`) and files are removed by [`super::lifecycle::down`].

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
        cgroup_root = cgroup_root(&info.netns),
        label_key = SANDBOX_LABEL.0,
        label_value = SANDBOX_LABEL.1,
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

/// `satellite-agent admin authorize|revoke -c node.yaml --node-ip <ip>` with the admin
/// kubeconfig, inside the namespace. `action` is `authorize` or `revoke`.
pub fn admin(info: &SandboxInfo, bins: &NodeBinaries, action: &str) -> Result<()> {
    agent(
        info,
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

/// `satellite-agent join -c node.yaml` inside the namespace; returns its stderr summary.
pub fn join(info: &SandboxInfo, bins: &NodeBinaries) -> Result<String> {
    agent(
        info,
        bins,
        &["join", "-c", &config_path(info).display().to_string()],
    )
}

/// Starts `satellite-agent run` as a sandbox process (a no-op when it is running); returns
/// its pid. Creates the kubelet `cgroupRoot` first (kubelet refuses a missing one).
pub fn start_agent(info: &SandboxInfo, bins: &NodeBinaries) -> Result<i32> {
    if let Some(pid) = processes::running(&info.work_dir, AGENT) {
        return Ok(pid);
    }
    create_cgroup_root(&info.netns)?;
    let mut cmd = netns::daemon_command(&info.netns, &bins.agent);
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
        info,
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

/// Stops the agent (SIGTERM: it stops kubelet first). Safe when it is not running.
pub fn stop_agent(info: &SandboxInfo) {
    processes::stop(&info.work_dir, AGENT);
}

/// Pids of the kubelet processes inside the sandbox's namespace.
pub fn kubelet_pids(info: &SandboxInfo) -> Vec<i32> {
    // /proc/<pid>/exe is the resolved path; the contract's goes through a symlink.
    let Ok(kubelet) = info.kubelet_bin.canonicalize() else {
        return Vec::new();
    };
    netns::pids_inside(&info.netns)
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

/// Kills what the node's pods left running once kubelet and containerd are gone: every
/// process in the node's cgroups (pod processes live in their own network namespaces, so
/// the sandbox's namespace sweep misses them), and removes the pod network namespaces
/// containerd bind-mounted under `/run/netns` for them. Waits up to 5 s for the cgroups to
/// empty.
pub fn kill_pods(netns: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let pids = cgroup_pids(netns);
    if pids.is_empty() {
        return Ok(());
    }
    let sandbox_ns = std::fs::metadata(netns::path(netns)).map(|m| m.ino()).ok();
    let pod_namespaces: std::collections::BTreeSet<u64> = pids
        .iter()
        .filter_map(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|m| m.ino())
        .filter(|ino| Some(*ino) != sandbox_ns)
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

/// Runs `satellite-agent ARGS` inside the namespace; its stderr on success, an error with
/// its stderr otherwise.
fn agent(info: &SandboxInfo, bins: &NodeBinaries, args: &[&str]) -> Result<String> {
    agent_output(info, bins, args).map(|(_, stderr)| stderr)
}

/// Like [`agent`], returning stdout.
fn agent_stdout(info: &SandboxInfo, bins: &NodeBinaries, args: &[&str]) -> Result<String> {
    agent_output(info, bins, args).map(|(stdout, _)| stdout)
}

fn agent_output(
    info: &SandboxInfo,
    bins: &NodeBinaries,
    args: &[&str],
) -> Result<(String, String)> {
    let out = netns::command(&info.netns, &bins.agent)
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
