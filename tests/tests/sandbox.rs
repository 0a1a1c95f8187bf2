//! End-to-end: the sandbox cluster with real components (etcd, kube-apiserver,
//! kube-controller-manager, containerd, moto) and EKS-style authentication through
//! `sandbox-authenticator`, driven by kubectl and our credential plugin.
//!
//! Needs root and `cargo xtask sandbox install` (which `cargo xtask test` runs). The credential
//! plugin binary is taken from the same target directory as this test
//! (`<target>/<profile>/satellite-credential-plugin`); `cargo xtask test` (nextest
//! `--workspace --all-targets`) builds it, or run `cargo build -p satellite-credential-plugin`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use satellite_tests::netns;
use satellite_tests::sandbox::testing::{self, TestSandbox, kubectl};
use satellite_tests::sandbox::{SandboxInfo, lifecycle, processes};

fn plugin_bin() -> PathBuf {
    testing::target_bin("satellite-credential-plugin", "satellite-credential-plugin")
}

/// A kubeconfig (0600) for the sandbox whose user runs our credential plugin for `role_arn`,
/// with the host user's keys (from the shared-credentials file) and moto as STS.
fn exec_kubeconfig(info: &SandboxInfo, dir: &Path, cluster: &str, session: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: node
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {plugin}
      args: [--region, {region}, eks, get-token, --cluster-name, {cluster}, --role-arn, {role}, --session-name, {session}, --cache-dir, {cache}]
      env:
      - {{name: AWS_SHARED_CREDENTIALS_FILE, value: {creds}}}
      - {{name: AWS_CONFIG_FILE, value: /dev/null}}
      - {{name: AWS_EC2_METADATA_DISABLED, value: 'true'}}
      - {{name: AWS_ENDPOINT_URL_STS, value: '{sts}'}}
      interactiveMode: Never
contexts:
- name: node
  context: {{cluster: sandbox, user: node}}
current-context: node
",
        server = info.apiserver_url,
        ca = info.ca_file.display(),
        plugin = plugin_bin().display(),
        region = info.region,
        role = info.role_arn,
        cache = dir.join("cache").display(),
        creds = info.host_access_key_file.display(),
        sts = info.moto_url,
    );
    let path = dir.join(format!("{cluster}-{session}.kubeconfig"));
    satellite_tests::sandbox::write_atomic(&path, text.as_bytes(), 0o600).expect("kubeconfig");
    path
}

/// A kubeconfig (0600) presenting a fixed bearer token.
fn token_kubeconfig(info: &SandboxInfo, dir: &Path, name: &str, token: &str) -> PathBuf {
    let text = satellite_tests::sandbox::config::kubeconfig(
        &info.apiserver_url,
        &info.ca_file,
        name,
        token,
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    satellite_tests::sandbox::write_atomic(&path, text.as_bytes(), 0o600).expect("kubeconfig");
    path
}

/// Our plugin, run inside the namespace with the host user's access key and `secret`
/// (no AssumeRole): a token signed by an IAM user key.
fn user_token(
    info: &SandboxInfo,
    home: &Path,
    access_key_id: &str,
    secret: &str,
    cluster: &str,
) -> String {
    let out = netns::command(&info.netns, plugin_bin())
        .env_clear()
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ENDPOINT_URL_STS", &info.moto_url)
        .args([
            "--region",
            &info.region,
            "eks",
            "get-token",
            "--cluster-name",
            cluster,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run the credential plugin");
    assert!(
        out.status.success(),
        "plugin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ExecCredential JSON");
    json["status"]["token"]
        .as_str()
        .expect("status.token")
        .to_owned()
}

fn host_access_key_id(info: &SandboxInfo) -> String {
    let text = std::fs::read_to_string(&info.host_access_key_file).expect("host credentials");
    text.lines()
        .find_map(|l| l.strip_prefix("aws_access_key_id = "))
        .expect("aws_access_key_id")
        .to_owned()
}

const FORBIDDEN_PROBE: &[&str] = &["get", "--raw", "/api/v1/namespaces/kube-system/secrets"];

#[test]
#[ignore = "needs root and the sandbox install (cargo xtask sandbox install)"]
fn sandbox_authenticates_mapped_eks_tokens_only_and_down_cleans_up() {
    let sandbox = TestSandbox::up(Path::new(env!("CARGO_BIN_EXE_sandbox-authenticator")));
    let info = sandbox.info.clone();
    let home = tempfile::tempdir().expect("temp home");

    // Healthy, and a second `up` is a no-op.
    let before: Vec<_> = lifecycle::status(&info.work_dir);
    assert!(before.iter().all(|c| c.healthy), "{before:?}");
    let started = Instant::now();
    lifecycle::up(&lifecycle::UpOptions {
        work_dir: info.work_dir.clone(),
        authenticator_bin: PathBuf::from(env!("CARGO_BIN_EXE_sandbox-authenticator")),
    })
    .expect("second up");
    let after = lifecycle::status(&info.work_dir);
    assert_eq!(
        before.iter().map(|c| c.pid).collect::<Vec<_>>(),
        after.iter().map(|c| c.pid).collect::<Vec<_>>(),
        "a second up must not restart anything"
    );
    eprintln!(
        "second up (no-op) in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // The admin works.
    let admin = kubectl(
        &info,
        &info.admin_kubeconfig,
        home.path(),
        &["get", "ns", "kube-system", "-o", "name"],
    );
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );

    // A node token for the assumed role: 401 while aws-auth does not map the role.
    let node = exec_kubeconfig(&info, home.path(), &info.cluster_name, "node-1");
    let out = kubectl(&info, &node, home.path(), FORBIDDEN_PROBE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Unauthorized"),
        "before mapping: {stderr}"
    );

    // The admin maps the role; the same kind of token now authenticates as the mapped user,
    // which RBAC then forbids to list secrets (403 naming the user).
    let aws_auth = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: aws-auth, namespace: kube-system}}\ndata:\n  mapRoles: |\n    - rolearn: {}\n      username: satellite:{{{{SessionName}}}}\n      groups: [satellite-nodes]\n",
        info.role_arn
    );
    let manifest = home.path().join("aws-auth.yaml");
    std::fs::write(&manifest, aws_auth).expect("manifest");
    let apply = kubectl(
        &info,
        &info.admin_kubeconfig,
        home.path(),
        &["apply", "-f", manifest.to_str().expect("utf-8")],
    );
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    // kube-apiserver caches webhook answers (also negative ones) for 2 s; a new token is
    // minted each call anyway, but one minted in the same second would be the same string.
    std::thread::sleep(Duration::from_millis(2100));
    let out = kubectl(&info, &node, home.path(), FORBIDDEN_PROBE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(r#"User "satellite:node-1" cannot list resource "secrets""#),
        "after mapping: {stderr}"
    );

    // A token for another cluster (signed for x-k8s-aws-id=other) is rejected.
    let other = exec_kubeconfig(&info, home.path(), "other", "node-1");
    let out = kubectl(&info, &other, home.path(), FORBIDDEN_PROBE);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "wrong cluster accepted"
    );

    // A token with the host user's real key id but a wrong secret is rejected, even though the
    // user is mapped.
    let key_id = host_access_key_id(&info);
    let users = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: aws-auth, namespace: kube-system}\ndata:\n  mapUsers: |\n    - userarn: arn:aws:iam::123456789012:user/satellite-host\n      username: host\n";
    std::fs::write(&manifest, users).expect("manifest");
    let apply = kubectl(
        &info,
        &info.admin_kubeconfig,
        home.path(),
        &["apply", "-f", manifest.to_str().expect("utf-8")],
    );
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let forged = user_token(
        &info,
        home.path(),
        &key_id,
        "not-the-secret",
        &info.cluster_name,
    );
    let kc = token_kubeconfig(&info, home.path(), "forged", &forged);
    let out = kubectl(&info, &kc, home.path(), FORBIDDEN_PROBE);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "forged token accepted"
    );
    let log = std::fs::read_to_string(processes::log_file(&info.work_dir, "sandbox-authenticator"))
        .unwrap_or_default();
    assert!(
        log.contains("signature mismatch"),
        "authenticator log: {log}"
    );

    // Down: no namespace, no processes, no mounts; twice is fine.
    let pids: Vec<i32> = lifecycle::status(&info.work_dir)
        .iter()
        .filter_map(|c| c.pid)
        .collect();
    lifecycle::down(&info.work_dir).expect("down");
    lifecycle::down(&info.work_dir).expect("second down");
    for ns in [&info.netns, &info.host_netns, &info.internet_netns] {
        assert!(!netns::exists(ns), "namespace {ns} left behind");
    }
    for pid in pids {
        assert!(
            processes::start_time(pid).is_none() || is_zombie(pid),
            "pid {pid} survived down"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = info.work_dir.display().to_string();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
    assert!(!info.work_dir.join("sandbox.json").exists());
    drop(sandbox);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}
