//! `up`, `status` and `down` of a sandbox in a work dir.
//!
//! Work dir layout: `sandbox.json` (the contract), `pki/`, `admin.kubeconfig`,
//! `host-credentials`, `etcd/`, `containerd/`, `cni/net.d/`, `node/` and `kubelet/` (a joined
//! node's files, its bpffs and kubelet state, see [`super::node`];
//! `down` unmounts and removes it), `run/*.pid`, `logs/*.log` (kept by `down`).
//!
//! The network is [`super::topology`]'s: the control plane, moto and the token webhook run
//! in the VPC namespace, containerd (and a joined node) in the host namespace.
//!
//! One file (over 500 lines): `up` and `down` are each other's inverse, step for step, and
//! are kept side by side so that every start has its stop.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{
    APISERVER_IP, APISERVER_PORT, CLUSTER_DNS, CLUSTER_NAME, CNI_BIN_DIR, INFO_FILE, NODE_IP,
    PAUSE_IMAGE, REGION, SERVICE_CIDR, SandboxInfo, config, fixtures, netns, netns_name, node, pki,
    processes, topology, write_atomic,
};
use crate::tools;

/// moto with authentication on (IAM, STS, EC2), on the public endpoint
/// ([`topology::PUBLIC_ENDPOINT_IP`]): AWS's endpoints are on the internet.
pub const MOTO_URL: &str = "http://198.18.130.1:5055";
/// moto with authentication off (EKS), on the public endpoint.
pub const MOTO_EKS_URL: &str = "http://198.18.130.1:5056";
/// The token webhook (`sandbox-authenticator`), inside the namespace; port as EKS's
/// aws-iam-authenticator.
pub const AUTHENTICATOR_ADDR: &str = "127.0.0.1:21362";
const ETCD_URL: &str = "http://127.0.0.1:2379";
const CONTROLLER_MANAGER_HEALTHZ: &str = "http://127.0.0.1:10252/healthz";
/// How long one component may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The components, in start order (`down` stops them in reverse).
pub const COMPONENTS: &[&str] = &[
    "etcd",
    "moto",
    "moto-eks",
    "containerd",
    "kube-apiserver",
    "sandbox-authenticator",
    "kube-controller-manager",
];

/// What `up` needs besides the work dir.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The work dir (created if missing; made absolute).
    pub work_dir: PathBuf,
    /// The `sandbox-authenticator` binary (built from this crate).
    pub authenticator_bin: PathBuf,
}

/// One component's state.
#[derive(Debug, Clone)]
pub struct ComponentStatus {
    /// Component name (one of [`COMPONENTS`]).
    pub name: &'static str,
    /// Its pid, when the recorded process is alive.
    pub pid: Option<i32>,
    /// Whether its health endpoint answers.
    pub healthy: bool,
}

impl std::fmt::Display for ComponentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.pid.map_or("-".to_owned(), |p| p.to_string());
        let state = match (self.pid, self.healthy) {
            (Some(_), true) => "healthy",
            (Some(_), false) => "UNHEALTHY",
            (None, _) => "stopped",
        };
        write!(f, "{:<24} pid {pid:<8} {state}", self.name)
    }
}

/// Starts a sandbox in `opts.work_dir` and returns its contract (also written to
/// `sandbox.json`). A sandbox already up and healthy is left alone; a partial one is torn down
/// first. Needs root; fails with the component's log path when one does not come up.
pub fn up(opts: &UpOptions) -> Result<SandboxInfo> {
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let work_dir = opts.work_dir.canonicalize()?;
    // Keys, tokens and credentials live here.
    std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o700))?;
    let _lock = lock(&work_dir)?;
    if let Ok(info) = SandboxInfo::load(&work_dir)
        && status(&work_dir).iter().all(|c| c.healthy)
    {
        return Ok(info);
    }
    down_locked(&work_dir)?;
    preflight(&work_dir, &opts.authenticator_bin)?;
    let _ = std::fs::remove_dir_all(work_dir.join("logs"));
    let ns = netns_name(&work_dir);
    let t0 = Instant::now();
    let host_ns = topology::host_netns(&ns);
    topology::create(&ns)?;

    let apiserver_url = format!("https://{}:{APISERVER_PORT}", topology::PUBLIC_ENDPOINT_IP);
    let pki = pki::generate(
        &work_dir,
        &[
            APISERVER_IP.parse()?,
            topology::PUBLIC_ENDPOINT_IP.parse()?,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "198.19.0.1".parse()?,
        ],
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    )?;
    let admin_kubeconfig = work_dir.join("admin.kubeconfig");
    write_atomic(
        &admin_kubeconfig,
        config::kubeconfig(
            &apiserver_url,
            &pki.ca_cert,
            "sandbox-admin",
            &pki.admin_token,
        )
        .as_bytes(),
        0o600,
    )?;
    let kcm_kubeconfig = work_dir.join("pki/controller-manager.kubeconfig");
    write_atomic(
        &kcm_kubeconfig,
        config::kubeconfig(
            &apiserver_url,
            &pki.ca_cert,
            "system:kube-controller-manager",
            &pki.controller_manager_token,
        )
        .as_bytes(),
        0o600,
    )?;
    let approver_kubeconfig = work_dir.join("pki/csr-approver.kubeconfig");
    write_atomic(
        &approver_kubeconfig,
        config::kubeconfig(
            &apiserver_url,
            &pki.ca_cert,
            pki::APPROVER_USER,
            &pki.approver_token,
        )
        .as_bytes(),
        0o600,
    )?;
    let webhook_config = work_dir.join("pki/token-webhook.kubeconfig");
    write_atomic(
        &webhook_config,
        config::token_webhook(&format!("http://{AUTHENTICATOR_ADDR}/authenticate")).as_bytes(),
        0o644,
    )?;
    let containerd_dir = work_dir.join("containerd");
    let cni_conf_dir = work_dir.join("cni/net.d");
    std::fs::create_dir_all(&cni_conf_dir)?;
    let cni_bin_dir = cni_bin_dir(&work_dir)?;
    let containerd_config = containerd_dir.join("config.toml");
    write_atomic(
        &containerd_config,
        config::containerd(&containerd_dir, PAUSE_IMAGE, &cni_bin_dir, &cni_conf_dir).as_bytes(),
        0o644,
    )?;
    let containerd_socket = containerd_dir.join("containerd.sock");

    // etcd, both motos and containerd do not depend on each other: start all, then wait.
    let etcd_dir = work_dir.join("etcd");
    start(&work_dir, &ns, "etcd", "etcd", |c| {
        c.args(["--name", "sandbox", "--data-dir"])
            .arg(&etcd_dir)
            .args([
                "--listen-client-urls",
                ETCD_URL,
                "--advertise-client-urls",
                ETCD_URL,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "sandbox=http://127.0.0.1:2380",
            ]);
    })?;
    let moto_bin = tools::venv().join("bin/moto_server");
    for (name, url) in [("moto", MOTO_URL), ("moto-eks", MOTO_EKS_URL)] {
        let port = url.rsplit(':').next().unwrap_or_default();
        start(&work_dir, &ns, name, &moto_bin, |c| {
            c.args(["-H", topology::PUBLIC_ENDPOINT_IP, "-p", port])
                .env("AWS_EC2_METADATA_DISABLED", "true");
        })?;
    }
    // containerd belongs to the GPU host.
    start(&work_dir, &host_ns, "containerd", "containerd", |c| {
        c.arg("--config").arg(&containerd_config);
    })?;
    wait_healthy(&work_dir, &ns, "etcd")?;
    wait_healthy(&work_dir, &ns, "moto")?;
    wait_healthy(&work_dir, &ns, "moto-eks")?;
    wait_healthy(&work_dir, &ns, "containerd")?;

    progress(&t0, "etcd, moto, containerd healthy");
    let fx = fixtures::create(&ns, MOTO_URL, MOTO_EKS_URL)?;
    fixtures::enable_auth(&ns, MOTO_URL)?;
    let host_access_key_file = work_dir.join("host-credentials");
    write_atomic(
        &host_access_key_file,
        config::aws_credentials(&fx.access_key_id, &fx.secret_access_key).as_bytes(),
        0o600,
    )?;
    import_image(&containerd_socket, &tools::pause_image_tar())?;
    import_image(&containerd_socket, &tools::busybox_image_tar())?;
    progress(
        &t0,
        "AWS fixtures created, moto auth on, pause and busybox images imported",
    );

    start(
        &work_dir,
        &ns,
        "kube-apiserver",
        tools::kubernetes_bin_dir().join("kube-apiserver"),
        |c| {
            c.arg(format!("--etcd-servers={ETCD_URL}"))
                // Its private address and the public endpoint (only inside the VPC's namespace).
                .arg("--bind-address=0.0.0.0")
                .arg(format!("--advertise-address={APISERVER_IP}"))
                .arg(format!("--secure-port={APISERVER_PORT}"))
                .arg(flag("tls-cert-file", &pki.apiserver_cert))
                .arg(flag("tls-private-key-file", &pki.apiserver_key))
                .arg(flag("client-ca-file", &pki.ca_cert))
                .arg(flag("token-auth-file", &pki.token_file))
                .arg("--enable-bootstrap-token-auth")
                .arg("--authorization-mode=Node,RBAC")
                .arg("--enable-admission-plugins=NodeRestriction")
                .arg("--allow-privileged=true")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(flag("service-account-key-file", &pki.sa_pub))
                .arg(flag("service-account-signing-key-file", &pki.sa_key))
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg(flag("kubelet-certificate-authority", &pki.ca_cert))
                .arg(flag("kubelet-client-certificate", &pki.kubelet_client_cert))
                .arg(flag("kubelet-client-key", &pki.kubelet_client_key))
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg(flag(
                    "authentication-token-webhook-config-file",
                    &webhook_config,
                ))
                .arg("--authentication-token-webhook-version=v1")
                // Short, so a mapping added to aws-auth takes effect within seconds.
                .arg("--authentication-token-webhook-cache-ttl=2s")
                .arg("--profiling=false");
        },
    )?;
    wait_healthy(&work_dir, &ns, "kube-apiserver")?;
    cluster_rbac(&work_dir, &ns)?;
    progress(&t0, "kube-apiserver ready");

    start(
        &work_dir,
        &ns,
        "sandbox-authenticator",
        &opts.authenticator_bin,
        |c| {
            c.args([
                "--listen",
                AUTHENTICATOR_ADDR,
                "--cluster-name",
                CLUSTER_NAME,
            ])
            .arg("--kubeconfig")
            .arg(&admin_kubeconfig)
            .args(["--moto-url", MOTO_URL])
            .env("RUST_LOG", "info");
        },
    )?;
    start(
        &work_dir,
        &ns,
        "kube-controller-manager",
        tools::kubernetes_bin_dir().join("kube-controller-manager"),
        |c| {
            c.arg(flag("kubeconfig", &kcm_kubeconfig))
                .arg(flag("authentication-kubeconfig", &kcm_kubeconfig))
                .arg(flag("authorization-kubeconfig", &kcm_kubeconfig))
                // Deployments and Services (endpoints, EndpointSlices: kube-proxy's input)
                // too; pods are bound with `nodeName` (the sandbox runs no scheduler).
                .arg("--controllers=csrsigning,csrapproving,csrcleaner,nodelifecycle,bootstrapsigner,tokencleaner,serviceaccount,serviceaccount-token,deployment,replicaset,endpoint,endpointslice")
                .arg(flag("cluster-signing-cert-file", &pki.ca_cert))
                .arg(flag("cluster-signing-key-file", &pki.ca_key))
                .arg(flag("root-ca-file", &pki.ca_cert))
                .arg(flag("service-account-private-key-file", &pki.sa_key))
                .arg("--use-service-account-credentials=true")
                .arg(format!("--cluster-name={CLUSTER_NAME}"))
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--leader-elect=false")
                .arg("--bind-address=127.0.0.1")
                .arg("--address=127.0.0.1")
                .arg("--port=10252")
                .arg("--profiling=false");
        },
    )?;
    wait_healthy(&work_dir, &ns, "sandbox-authenticator")?;
    wait_healthy(&work_dir, &ns, "kube-controller-manager")?;

    let info = SandboxInfo {
        internet_netns: topology::internet_netns(&ns),
        host_netns: host_ns,
        netns: ns,
        cluster_name: CLUSTER_NAME.into(),
        region: REGION.into(),
        apiserver_url,
        ca_file: pki.ca_cert.clone(),
        admin_kubeconfig,
        approver_kubeconfig,
        service_cidr: SERVICE_CIDR.into(),
        cluster_dns: CLUSTER_DNS.into(),
        node_ip: NODE_IP.into(),
        host_address: topology::HOST_PRIVATE_IP.into(),
        public_address: topology::HOST_PUBLIC_IP.into(),
        proxy_address: topology::PROXY_PUBLIC_IP.into(),
        moto_url: MOTO_URL.into(),
        moto_eks_url: MOTO_EKS_URL.into(),
        subnet_id: fx.subnet_id,
        security_group_ids: vec![fx.security_group_id],
        node_eni_id: fx.node_eni_id,
        host_access_key_file,
        role_arn: fx.role_arn,
        containerd_socket,
        kubelet_bin: tools::kubernetes_bin_dir().join("kubelet"),
        kube_proxy_bin: tools::kubernetes_bin_dir().join("kube-proxy"),
        pause_image: PAUSE_IMAGE.into(),
        cni_bin_dir,
        cni_conf_dir,
        work_dir: work_dir.clone(),
    };
    write_atomic(
        &work_dir.join(INFO_FILE),
        serde_json::to_string_pretty(&info)?.as_bytes(),
        0o644,
    )?;
    Ok(info)
}

fn progress(t0: &Instant, what: &str) {
    eprintln!("sandbox: {what} ({:.1} s)", t0.elapsed().as_secs_f64());
}

/// Each component's pid (if alive) and health.
pub fn status(work_dir: &Path) -> Vec<ComponentStatus> {
    let ns = netns_name(work_dir);
    COMPONENTS
        .iter()
        .map(|name| {
            let pid = processes::running(work_dir, name);
            ComponentStatus {
                name,
                pid,
                healthy: pid.is_some() && healthy(work_dir, &ns, name),
            }
        })
        .collect()
}

/// Stops everything the sandbox in `work_dir` started (SIGTERM, SIGKILL after a bound) and
/// any other process left in its namespace (a node's kubelet, containerd shims), unmounts
/// everything under the work dir, deletes the namespace (with its iptables chains) and the
/// runtime state (`sandbox.json`, `pki/`, `etcd/`, `containerd/`, `kubelet/`, `cni/`, `run/`,
/// credentials). Logs stay. Safe to run twice and on a work dir that never saw `up`.
pub fn down(work_dir: &Path) -> Result<()> {
    if !work_dir.exists() {
        return Ok(());
    }
    let work_dir = work_dir.canonicalize()?;
    let _lock = lock(&work_dir)?;
    down_locked(&work_dir)
}

fn down_locked(work_dir: &Path) -> Result<()> {
    let ns = netns_name(work_dir);
    // The info file goes first: from now on the sandbox is not "up" for readers.
    let _ = std::fs::remove_file(work_dir.join(INFO_FILE));
    let host_ns = topology::host_netns(&ns);
    // A joined node first: the agent stops its kubelet while the API server is still there.
    for name in node::PROCESSES {
        processes::stop(work_dir, name);
    }
    for name in COMPONENTS.iter().rev() {
        processes::stop(work_dir, name);
    }
    for namespace in [&host_ns, &topology::internet_netns(&ns), &ns] {
        kill_namespace_processes(namespace);
    }
    node::kill_pods(&ns, &host_ns)?;
    netns::unmount_under(work_dir)?;
    node::remove_cgroups(&ns)?;
    topology::delete(&ns)?;
    for entry in [
        node::NODE_DIR,
        "pki",
        "etcd",
        "containerd",
        "kubelet",
        "cni",
        "run",
        "admin.kubeconfig",
        "host-credentials",
    ] {
        let path = work_dir.join(entry);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// SIGTERM to every process still inside the namespace, SIGKILL to those alive 5 s later.
fn kill_namespace_processes(ns: &str) {
    let pids = netns::pids_inside(ns);
    if pids.is_empty() {
        return;
    }
    for pid in &pids {
        processes::signal_group(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns::pids_inside(ns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in netns::pids_inside(ns) {
        processes::signal_group(pid, libc::SIGKILL);
    }
}

/// `<work dir>/cni/bin`: the reference plugins of [`CNI_BIN_DIR`] (containerd's CRI needs
/// `loopback`) as symlinks, so a node can add its own plugin without touching the host's
/// directory.
fn cni_bin_dir(work_dir: &Path) -> Result<PathBuf> {
    let dir = work_dir.join("cni/bin");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(CNI_BIN_DIR)
        .with_context(|| format!("reading {CNI_BIN_DIR} (run `cargo xtask sandbox install`)"))?
    {
        let entry = entry?;
        let link = dir.join(entry.file_name());
        if !link.exists() {
            std::os::unix::fs::symlink(entry.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(dir)
}

/// Checks what `up` needs before anything starts, naming the fix.
fn preflight(work_dir: &Path, authenticator_bin: &Path) -> Result<()> {
    netns::require_root("the sandbox")?;
    let install = "run `cargo xtask sandbox install`";
    for component in tools::KUBE_COMPONENTS {
        let bin = tools::kubernetes_bin_dir().join(component);
        if !bin.exists() {
            bail!("{} is missing: {install}", bin.display());
        }
    }
    for path in [
        tools::pause_image_tar(),
        tools::busybox_image_tar(),
        tools::venv().join("bin/moto_server"),
        tools::venv().join("bin/aws"),
    ] {
        if !path.exists() {
            bail!("{} is missing: {install}", path.display());
        }
    }
    for program in ["etcd", "containerd", "ctr", "runc", "ip", "nft"] {
        if !on_path(program) {
            bail!("{program} is not on PATH: {install}");
        }
    }
    if !authenticator_bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p satellite-tests --bin sandbox-authenticator`",
            authenticator_bin.display()
        );
    }
    // sun_path holds 108 bytes including the NUL.
    let socket = work_dir.join("containerd/containerd.sock.ttrpc");
    if socket.as_os_str().len() > 100 {
        bail!(
            "work dir {} is too long for containerd's unix sockets; choose a shorter --work-dir",
            work_dir.display()
        );
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

fn start(
    work_dir: &Path,
    ns: &str,
    name: &str,
    program: impl AsRef<std::ffi::OsStr>,
    configure: impl FnOnce(&mut Command),
) -> Result<()> {
    let mut cmd = netns::daemon_command(ns, program);
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    configure(&mut cmd);
    processes::spawn(work_dir, name, cmd)?;
    Ok(())
}

fn wait_healthy(work_dir: &Path, ns: &str, name: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if processes::running(work_dir, name).is_none() {
            bail!(
                "{name} exited during start-up; see {}",
                processes::log_file(work_dir, name).display()
            );
        }
        if healthy(work_dir, ns, name) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not become healthy within {START_TIMEOUT:?}; see {}",
                processes::log_file(work_dir, name).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Binds kube-apiserver's kubelet client identity to `system:kubelet-api-admin`, so `kubectl
/// logs/exec/port-forward` are authorised by the kubelet's webhook authorizer through RBAC, as
/// on EKS; and group `system:node-proxier` to the ClusterRole of that name, as EKS does for
/// Fargate's kube-proxy (`eks:kube-proxy-fargate`): satellite nodes' kube-proxy runs with the
/// node's identity, in that group. Idempotent (`kubectl apply`).
fn cluster_rbac(work_dir: &Path, ns: &str) -> Result<()> {
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: eks:kube-proxy-fargate
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:node-proxier
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:node-proxier
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: satellite-sandbox:kubelet-api-admin
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: {}
",
        pki::KUBELET_CLIENT_USER
    );
    kubectl_apply(work_dir, ns, &binding).with_context(|| {
        format!(
            "binding {} to system:kubelet-api-admin",
            pki::KUBELET_CLIENT_USER
        )
    })
}

/// `kubectl apply -f -` of `manifest` with the admin kubeconfig, inside the namespace.
///
/// Errors: kubectl could not run, or failed (its stderr is the message).
pub fn kubectl_apply(work_dir: &Path, ns: &str, manifest: &str) -> Result<()> {
    netns::run_with_stdin(
        netns::command(ns, "kubectl")
            .arg("--kubeconfig")
            .arg(work_dir.join("admin.kubeconfig"))
            .args(["apply", "-f", "-"]),
        manifest.as_bytes(),
    )
    .map(drop)
}

/// Probes a component's health endpoint (inside the namespace).
fn healthy(work_dir: &Path, ns: &str, name: &str) -> bool {
    match name {
        "etcd" => http_ok(ns, &format!("{ETCD_URL}/health")),
        // The dashboard: cheap (data.json is megabytes once IAM is used).
        "moto" => http_ok(ns, &format!("{MOTO_URL}/moto-api/")),
        "moto-eks" => http_ok(ns, &format!("{MOTO_EKS_URL}/moto-api/")),
        "containerd" => {
            std::os::unix::net::UnixStream::connect(work_dir.join("containerd/containerd.sock"))
                .is_ok()
        }
        "kube-apiserver" => {
            // /readyz through kubectl with the admin kubeconfig (checks TLS and auth too).
            netns::command(ns, "kubectl")
                .arg("--kubeconfig")
                .arg(work_dir.join("admin.kubeconfig"))
                .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }
        "sandbox-authenticator" => http_ok(ns, &format!("http://{AUTHENTICATOR_ADDR}/healthz")),
        "kube-controller-manager" => http_ok(ns, CONTROLLER_MANAGER_HEALTHZ),
        _ => false,
    }
}

fn http_ok(ns: &str, url: &str) -> bool {
    let url = url.to_owned();
    netns::run_in(ns, move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        agent.get(&url).call().is_ok()
    })
    .unwrap_or(false)
}

/// Imports a docker-archive image into containerd's `k8s.io` namespace (what the CRI plugin
/// uses).
fn import_image(socket: &Path, tar: &Path) -> Result<()> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(tar)
        .stdin(Stdio::null())
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr images import {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// An exclusive `flock` on `<work dir>/.lock`, held while the guard lives, so two `up`/`down`
/// on one work dir never interleave.
fn lock(work_dir: &Path) -> Result<std::fs::File> {
    satellite_fsutil::lock(&work_dir.join(".lock"))
        .with_context(|| format!("locking {}", work_dir.display()))
}
