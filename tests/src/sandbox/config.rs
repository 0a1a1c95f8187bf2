//! Configuration files the sandbox renders: kubeconfigs, the token-webhook config and
//! containerd's config. Pure functions returning text, so they are unit-tested without a host.

use std::path::Path;

/// A kubeconfig for `server` trusting `ca_file`, authenticating with a bearer `token`.
///
/// The token is inline: write the result with mode 0600.
pub fn kubeconfig(server: &str, ca_file: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}@sandbox
  context:
    cluster: sandbox
    user: {user}
current-context: {user}@sandbox
",
        ca = ca_file.display()
    )
}

/// kube-apiserver's `--authentication-token-webhook-config-file`: a kubeconfig whose cluster is
/// the webhook's URL (`http://127.0.0.1:<port>/authenticate`, inside the namespace).
pub fn token_webhook(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox-authenticator
  cluster:
    server: {url}
users:
- name: kube-apiserver
contexts:
- name: webhook
  context:
    cluster: sandbox-authenticator
    user: kube-apiserver
current-context: webhook
"
    )
}

/// An AWS shared-credentials file with one profile, `default`. Write it with mode 0600.
pub fn aws_credentials(access_key_id: &str, secret_access_key: &str) -> String {
    format!(
        "[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"
    )
}

/// containerd 1.6 configuration (version 2) with everything under `dir`: root, state,
/// sockets, the `opt` plugin dir. The CRI plugin uses `pause_image`, overlayfs, runc v2 with
/// cgroupfs (`SystemdCgroup = false`), CNI binaries in `cni_bin_dir` and configs in
/// `cni_conf_dir`, and `restrict_oom_score_adj = true` (required where the runtime lacks
/// CAP_SYS_RESOURCE: without it runc fails with "can't get final child's PID from pipe").
pub fn containerd(
    dir: &Path,
    pause_image: &str,
    cni_bin_dir: &Path,
    cni_conf_dir: &Path,
) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
"#,
        bin = cni_bin_dir.display(),
        conf = cni_conf_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_is_toml_with_the_required_settings() {
        let text = containerd(
            Path::new("/w/containerd"),
            "localhost/pause:local",
            Path::new("/usr/lib/cni"),
            Path::new("/w/cni/net.d"),
        );
        assert!(text.contains("restrict_oom_score_adj = true"));
        assert!(text.contains("SystemdCgroup = false"));
        assert!(text.contains(r#"address = "/w/containerd/containerd.sock""#));
    }

    #[test]
    fn kubeconfig_names_server_ca_and_token() {
        let text = kubeconfig(
            "https://198.18.0.1:6443",
            Path::new("/w/ca.crt"),
            "admin",
            "t0k",
        );
        assert!(text.contains("server: https://198.18.0.1:6443"));
        assert!(text.contains("certificate-authority: /w/ca.crt"));
        assert!(text.contains("token: t0k"));
    }
}
