//! The local sandbox cluster: a real Kubernetes v1.20.2 control plane (etcd, kube-apiserver,
//! kube-controller-manager), containerd, two moto servers (AWS stand-ins) and the EKS-style
//! token webhook, in network namespaces of their own laid out as the mission's address picture
//! ([`topology`]: the VPC, the internet with the GPU cloud's 1:1 NAT, the GPU host), so every
//! address comes from 198.18.0.0/15 without touching the host's network.
//!
//! - [`SandboxInfo`] is the contract: `sandbox up` writes it to `<work dir>/sandbox.json`, and
//!   everything else (the agent's tests, `cargo xtask sandbox exec`) reads it from there.
//! - [`lifecycle`] starts ([`lifecycle::up`]), checks ([`lifecycle::status`]) and stops
//!   ([`lifecycle::down`]) a sandbox; `cargo xtask sandbox` and the tests share it.
//! - [`crate::netns`] runs commands and threads inside the namespaces.
//!
//! The VPC namespace ([`SandboxInfo::netns`]) holds the control plane, moto and the proxy:
//! kube-apiserver listens on its private address `198.18.0.1` and on the public endpoint
//! [`topology::PUBLIC_ENDPOINT_IP`], moto on the public endpoint, etcd, the token webhook and
//! the controller-manager on `127.0.0.1`. containerd and a joined node run in
//! [`SandboxInfo::host_netns`].

pub mod config;
pub mod fixtures;
pub mod lifecycle;
pub mod node;
pub mod pki;
pub mod processes;
pub mod testing;
pub mod topology;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::netns;

/// The EKS cluster name (moto) and the `x-k8s-aws-id` tokens must carry.
pub const CLUSTER_NAME: &str = "sandbox";
/// The AWS region of every fixture.
pub const REGION: &str = "us-east-1";
/// The service CIDR (`--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The cluster DNS address a kubelet must be given: the service CIDR's `.10`.
pub const CLUSTER_DNS: &str = "198.19.0.10";
/// The node IP N: held by the proxy in the VPC namespace, and put on the host's `lo` by the
/// agent's datapath.
pub const NODE_IP: &str = "198.18.0.10";
/// kube-apiserver's private address in the VPC (its `--advertise-address`).
pub const APISERVER_IP: &str = "198.18.0.1";
/// kube-apiserver's secure port.
pub const APISERVER_PORT: u16 = 6443;
/// The VPC CIDR in moto (the public and the GPU cloud's addresses of [`topology`] are outside).
pub const VPC_CIDR: &str = "198.18.0.0/17";
/// The subnet CIDR in moto (the node IP is inside it).
pub const SUBNET_CIDR: &str = "198.18.0.0/24";
/// The locally built pause image (no registry can be reached).
pub const PAUSE_IMAGE: &str = "localhost/pause:local";
/// The locally built busybox image ([`crate::tools::busybox_image_tar`]), imported at `up`.
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:local";
/// The reference CNI plugins (Debian `containernetworking-plugins`), linked into each
/// sandbox's own plugin directory.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The IAM user whose long-lived keys stand for the GPU host's credentials.
pub const HOST_USER: &str = "satellite-host";
/// The IAM role the host user may assume (the node role).
pub const NODE_ROLE: &str = "satellite-node";
/// The file name of the contract inside the work dir.
pub const INFO_FILE: &str = "sandbox.json";

/// What a running sandbox offers, written to `<work dir>/sandbox.json` by `sandbox up`.
///
/// Paths are absolute. Every URL is reachable only inside the sandbox's namespaces: run
/// clients with [`SandboxInfo::command`] (the VPC; or `cargo xtask sandbox exec -- …`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// The VPC's network namespace (`ip netns`), `satsb-<8 hex>` derived from the work dir:
    /// the control plane, moto, the approver and the proxy.
    pub netns: String,
    /// The GPU host's namespace ([`topology::host_netns`]): containerd, kubelet, the agent.
    pub host_netns: String,
    /// The internet's namespace ([`topology::internet_netns`]): the router with the GPU
    /// cloud's 1:1 NAT, and anyone else on the internet.
    pub internet_netns: String,
    /// The EKS cluster name ([`CLUSTER_NAME`]).
    pub cluster_name: String,
    /// The AWS region ([`REGION`]).
    pub region: String,
    /// The API server's public endpoint, `https://198.18.130.1:6443` (reached from the VPC
    /// and, through the internet, from the host).
    pub apiserver_url: String,
    /// The cluster CA certificate (PEM) that signs the apiserver's serving cert and, through
    /// kube-controller-manager, kubelet CSRs.
    pub ca_file: PathBuf,
    /// A kubeconfig (0600) for a `system:masters` user with a static token.
    pub admin_kubeconfig: PathBuf,
    /// A kubeconfig (0600) for [`pki::APPROVER_USER`], which has no rights until the
    /// approver's RBAC is applied.
    pub approver_kubeconfig: PathBuf,
    /// [`SERVICE_CIDR`].
    pub service_cidr: String,
    /// [`CLUSTER_DNS`].
    pub cluster_dns: String,
    /// [`NODE_IP`].
    pub node_ip: String,
    /// The host's own address S ([`topology::HOST_PRIVATE_IP`], on its uplink).
    pub host_address: String,
    /// The host's public address P ([`topology::HOST_PUBLIC_IP`], the provider's NAT).
    pub public_address: String,
    /// The proxy's public address ([`topology::PROXY_PUBLIC_IP`]): the datapath's peer.
    pub proxy_address: String,
    /// moto with request authentication on (IAM, STS, EC2): `http://198.18.130.1:5055`.
    pub moto_url: String,
    /// moto with authentication off (EKS; moto's EKS reads fail with auth on).
    pub moto_eks_url: String,
    /// The subnet (198.18.0.0/24) in the sandbox VPC.
    pub subnet_id: String,
    /// Security groups of the sandbox VPC for node ENIs.
    pub security_group_ids: Vec<String>,
    /// The node's ENI in that subnet; its primary private IP is [`NODE_IP`].
    pub node_eni_id: String,
    /// An AWS shared-credentials file (0600), profile `default`, with the keys of IAM user
    /// [`HOST_USER`].
    pub host_access_key_file: PathBuf,
    /// ARN of role [`NODE_ROLE`], assumable with the host user's keys.
    pub role_arn: String,
    /// containerd's CRI socket.
    pub containerd_socket: PathBuf,
    /// The kubelet binary (v1.20.2) built from the same source as the control plane.
    pub kubelet_bin: PathBuf,
    /// The kube-proxy binary, built with kubelet (the agent supervises it on the node).
    pub kube_proxy_bin: PathBuf,
    /// [`PAUSE_IMAGE`], already imported into containerd's `k8s.io` namespace.
    pub pause_image: String,
    /// The CNI plugin directory containerd uses: `<work dir>/cni/bin`, the reference plugins of
    /// [`CNI_BIN_DIR`] linked in (a node adds `satellite-cni`).
    pub cni_bin_dir: PathBuf,
    /// The CNI configuration directory containerd reads (empty at first; the node's CNI
    /// config goes there).
    pub cni_conf_dir: PathBuf,
    /// The sandbox's work dir (logs under `logs/`, pid files under `run/`).
    pub work_dir: PathBuf,
}

impl SandboxInfo {
    /// Reads `<work_dir>/sandbox.json`.
    ///
    /// Errors when the file is missing (the sandbox is not up: run `cargo xtask sandbox up`)
    /// or is not this shape.
    pub fn load(work_dir: &Path) -> Result<SandboxInfo> {
        let path = work_dir.join(INFO_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is the sandbox up? run `cargo xtask sandbox up --work-dir {}`)",
                path.display(),
                work_dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// `program` to be run inside the sandbox's VPC namespace with `KUBECONFIG` = the admin
    /// kubeconfig and `AWS_EC2_METADATA_DISABLED=true`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = netns::command(&self.netns, program);
        cmd.env("KUBECONFIG", &self.admin_kubeconfig)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }
}

/// The namespace name for a work dir: `satsb-` + the first 8 hex digits of the SHA-256 of
/// its absolute path (unique per work dir, within the 15-byte interface-name budget).
pub fn netns_name(work_dir: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(work_dir.as_os_str().as_encoded_bytes());
    format!("satsb-{}", &hex::encode(digest)[..8])
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory with `mode`,
/// fsynced, then renamed over `path`. Readers see the old or the new file, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    satellite_fsutil::write_atomic(path, bytes, mode)
        .with_context(|| format!("writing {}", path.display()))
}

/// `n` random bytes from the kernel, hex-encoded (tokens).
pub fn random_hex(n: usize) -> Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}
