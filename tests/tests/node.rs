//! End-to-end: this machine joins the sandbox cluster as a satellite node, with every part
//! real: `satellite-agent admin authorize` edits the live `aws-auth`, `join` resolves the ENI
//! in moto (EC2, SigV4 checked) and writes kubelet's files, `run` supervises a real kubelet
//! v1.20.2 against containerd, and kubelet authenticates with `k8s-aws-v1.` tokens from our
//! credential plugin through the sandbox's EKS-style webhook.
//!
//! Needs root and `cargo xtask sandbox install`; the agent and plugin binaries come from the
//! test's own target dir (`cargo xtask test` builds them).

use std::path::Path;
use std::time::{Duration, Instant};

use satellite_tests::netns;
use satellite_tests::sandbox::node::{self, NodeBinaries};
use satellite_tests::sandbox::testing::{TestSandbox, kubectl, poll, target_bin};
use satellite_tests::sandbox::{BUSYBOX_IMAGE, SandboxInfo, processes};
use serde_json::Value;

/// A mapping that is not ours: `admin authorize|revoke` must keep it byte for byte.
/// The web pod's `hostPort`.
const HOST_PORT: u16 = 30080;
/// The NodePort of the httpd Service (kube-proxy on the node).
const NODE_PORT: u16 = 30081;
const OTHER_MAPPING: &str = "- rolearn: arn:aws:iam::123456789012:role/ops-admins\n  username: ops:{{SessionName}}\n  groups:\n  - ops\n";

fn admin_json(info: &SandboxInfo, home: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl(info, &info.admin_kubeconfig, home, &all);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl JSON")
}

fn admin_apply(info: &SandboxInfo, home: &Path, manifest: &str) {
    let path = home.join("manifest.yaml");
    std::fs::write(&path, manifest).expect("manifest");
    let out = kubectl(
        info,
        &info.admin_kubeconfig,
        home,
        &["apply", "-f", path.to_str().expect("utf-8")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node's Lease `spec.renewTime` (kubelet renews it every 10 s).
fn lease_renew_time(info: &SandboxInfo, home: &Path, name: &str) -> String {
    admin_json(info, home, &["-n", "kube-node-lease", "get", "lease", name])["spec"]["renewTime"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Connects to `addr` from namespace `ns` and reads until the peer closes (5 s read timeout).
fn read_all(ns: &str, addr: String) -> std::io::Result<String> {
    netns::run_in(ns, move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr.as_str())?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text)?;
        Ok(text)
    })
    .map_err(std::io::Error::other)?
}

/// `kubectl ARGS` (admin) as a child with piped stdout, stdin null unless `stdin`.
fn kubectl_child(
    info: &SandboxInfo,
    home: &Path,
    args: &[&str],
    stdin: bool,
) -> std::process::Child {
    info.command("kubectl")
        .env("HOME", home)
        .args(args)
        .stdin(if stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl")
}

/// Lines `child` prints within `window`, each with when it arrived; the child is killed after.
fn lines_within(mut child: std::process::Child, window: Duration) -> Vec<(Duration, String)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send((started.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Some(left) = window.checked_sub(started.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// kubelet's streaming API through the API server (→ N → proxy → NAT → tc → kubelet):
/// `exec` (plain, then `-i` with a 1 MiB round trip checked by SHA-256), `logs`, `logs -f`
/// for 5 s (lines keep arriving), `attach`, `port-forward`. `when` names the situation.
fn kubelet_api_works(info: &SandboxInfo, home: &Path, when: &str) {
    use sha2::Digest as _;
    let exec = poll(
        &format!("kubectl exec answers {when}"),
        Duration::from_secs(30),
        || {
            let out = kubectl(
                info,
                &info.admin_kubeconfig,
                home,
                &[
                    "exec",
                    "web",
                    "--",
                    "/bin/busybox",
                    "echo",
                    "satellite-exec",
                ],
            );
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert_eq!(exec.trim(), "satellite-exec", "{when}");

    let mut payload = vec![0u8; 1 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut payload,
    )
    .expect("random payload");
    let mut child = kubectl_child(
        info,
        home,
        &["exec", "-i", "web", "--", "/bin/busybox", "cat"],
        true,
    );
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sent = payload.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &sent));
    let out = child.wait_with_output().expect("kubectl exec -i");
    writer.join().expect("writer").expect("stdin written");
    assert!(
        out.status.success(),
        "kubectl exec -i {when}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&out.stdout)),
        hex::encode(sha2::Sha256::digest(&payload)),
        "1 MiB through exec -i {when}: {} bytes back",
        out.stdout.len()
    );

    let logs = kubectl(info, &info.admin_kubeconfig, home, &["logs", "web"]);
    assert!(
        logs.status.success(),
        "kubectl logs {when}: {}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let followed = lines_within(
        kubectl_child(info, home, &["logs", "-f", "--tail=1", "ticker"], false),
        Duration::from_secs(5),
    );
    let late = followed
        .iter()
        .filter(|(at, line)| *at > Duration::from_secs(2) && line == "tick")
        .count();
    assert!(
        late >= 5,
        "kubectl logs -f {when}: {late} ticks after 2 s: {followed:?}"
    );
    let attached = lines_within(
        kubectl_child(info, home, &["attach", "ticker"], false),
        Duration::from_secs(5),
    );
    assert!(
        attached.iter().filter(|(_, l)| l == "tick").count() >= 5,
        "kubectl attach {when}: {attached:?}"
    );

    let mut forward = kubectl_child(info, home, &["port-forward", "pod/web", ":8080"], false);
    let mut stdout = std::io::BufReader::new(forward.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("port-forward output");
    // Drained until kubectl ends: it writes a line per connection and dies on a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let local = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("kubectl port-forward {when}: {first:?}"))
        .to_owned();
    let answer = read_all(&info.netns, local);
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(
        answer.expect("port-forward connection").trim(),
        "satellite-pod",
        "kubectl port-forward {when}"
    );
}

#[test]
#[ignore = "needs root and the sandbox install (cargo xtask sandbox install)"]
fn node_joins_runs_pods_survives_kubelet_crash_and_is_revoked() {
    let sandbox = TestSandbox::up(Path::new(env!("CARGO_BIN_EXE_sandbox-authenticator")));
    let info = sandbox.info.clone();
    let home = tempfile::tempdir().expect("temp home");
    let bins = NodeBinaries {
        agent: target_bin("satellite-agent", "satellite-agent"),
        credential_plugin: target_bin("satellite-credential-plugin", "satellite-credential-plugin"),
        cni_plugin: target_bin("satellite-cni", "satellite-cni"),
    };
    admin_apply(
        &info,
        home.path(),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: aws-auth, namespace: kube-system}}\ndata:\n  mapRoles: |\n{}",
            OTHER_MAPPING
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        ),
    );

    // authorize → join → run → Ready.
    let joined = node::up(&info, &bins).expect("node up");
    let name = node::node_name(&info);
    assert_eq!(joined.name, name);
    eprintln!(
        "join → Ready in {:.1} s",
        joined.join_to_ready.as_secs_f64()
    );
    let agent_pid = processes::running(&info.work_dir, node::AGENT).expect("agent running");
    // A second join with the same NodeConfig changes nothing.
    let again = node::join(&info, &bins).expect("second join");
    assert!(again.contains(": 0 file(s) written"), "{again}");

    // The Node: its VPC IP, the NodeConfig's labels, and the agent's (reconciled by `run`
    // within seconds of registration).
    let node_json = poll("the agent's labels", Duration::from_secs(30), || {
        let node = admin_json(&info, home.path(), &["get", "node", &name]);
        (node["metadata"]["labels"]["satellite.dev/agent-version"] == env!("CARGO_PKG_VERSION"))
            .then_some(node)
    });
    let addresses = node_json["status"]["addresses"]
        .as_array()
        .expect("addresses");
    assert!(
        addresses
            .iter()
            .any(|a| a["type"] == "InternalIP" && a["address"] == info.node_ip.as_str()),
        "{addresses:?}"
    );
    let labels = &node_json["metadata"]["labels"];
    assert_eq!(labels["eks.amazonaws.com/compute-type"], "fargate");
    assert_eq!(labels[node::SANDBOX_LABEL.0], node::SANDBOX_LABEL.1);

    // Authenticated by our token through the webhook, not by a certificate or bootstrap
    // token: kubelet's kubeconfig holds only the exec plugin, and the CSR kubelet filed for
    // its serving certificate carries the AWS identity the webhook verified.
    let kubeconfig_path = info.work_dir.join("node/kubelet/kubeconfig");
    let kubeconfig = std::fs::read_to_string(&kubeconfig_path).expect("kubelet kubeconfig");
    assert!(kubeconfig.contains("exec:"), "{kubeconfig}");
    for credential in ["client-certificate", "client-key", "token:", "password"] {
        assert!(
            !kubeconfig.contains(credential),
            "{credential} in {kubeconfig}"
        );
    }
    let node_csrs = || -> Vec<Value> {
        let list = admin_json(&info, home.path(), &["get", "csr"]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["spec"]["username"] == format!("system:node:{name}"))
            .cloned()
            .collect()
    };
    // Filed because kubelet's `--cert-dir` is under this node's kubeletDir: a certificate an
    // earlier run left elsewhere on the host is never reused.
    let csr = poll("kubelet's serving CSR", Duration::from_secs(30), || {
        node_csrs().into_iter().next()
    });
    let extra = &csr["spec"]["extra"];
    assert_eq!(
        extra["canonicalArn"][0], info.role_arn,
        "CSR not authenticated through the webhook: {csr}"
    );
    assert_eq!(extra["sessionName"][0], "sandbox-node");
    assert!(
        csr["spec"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:nodes")),
        "{csr}"
    );

    // A pod bound to the node runs and gets an address from the pod CIDR through our CNI
    // plugin (containerd runs it with the conflist `join` rendered).
    admin_apply(
        &info,
        home.path(),
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pause, namespace: default}}\nspec:\n  nodeName: {name}\n  automountServiceAccountToken: false\n  containers:\n  - {{name: pause, image: \"{}\", imagePullPolicy: Never}}\n",
            info.pause_image
        ),
    );
    let pod_ip = poll("pod Running", Duration::from_secs(60), || {
        let pod = admin_json(&info, home.path(), &["get", "pod", "pause"]);
        (pod["status"]["phase"] == "Running")
            .then(|| pod["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    });
    assert!(pod_ip.starts_with("10.88."), "pod IP {pod_ip}");

    // A pod with a host port (kubelet → containerd → our plugin's portMappings): it reaches
    // the host (a server on N, which the datapath put on the host's lo), and is reached at
    // N:30080 from the VPC: through the proxy, the internet, the provider's NAT and the
    // datapath's tc NAT.
    let node_ip = info.node_ip.clone();
    let listener = netns::run_in(&info.host_netns, move || {
        std::net::TcpListener::bind((node_ip.as_str(), 0))
    })
    .and_then(|bound| Ok(bound?))
    .expect("a listener on the host");
    let probe_port = listener.local_addr().expect("listener address").port();
    let (from_pod_tx, from_pod) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, peer)) = listener.accept() {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stream, &mut text);
            let _ = from_pod_tx.send((peer.ip(), text));
        }
    });
    admin_apply(
        &info,
        home.path(),
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\nspec:\n  nodeName: {name}\n  automountServiceAccountToken: false\n  containers:\n  - name: web\n    image: \"{BUSYBOX_IMAGE}\"\n    imagePullPolicy: Never\n    command: [/bin/busybox, sh, -c, \"echo from-pod | /bin/busybox nc {node_ip} {probe_port}; exec /bin/busybox nc -ll -p 8080 -e /bin/busybox echo satellite-pod\"]\n    ports: [{{containerPort: 8080, hostPort: {HOST_PORT}, protocol: TCP}}]\n",
            node_ip = info.node_ip,
        ),
    );
    admin_apply(
        &info,
        home.path(),
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: ticker, namespace: default}}\nspec:\n  nodeName: {name}\n  automountServiceAccountToken: false\n  containers:\n  - name: ticker\n    image: \"{BUSYBOX_IMAGE}\"\n    imagePullPolicy: Never\n    command: [/bin/busybox, sh, -c, \"while true; do echo tick; /bin/busybox sleep 0.2; done\"]\n"
        ),
    );
    let web_ip = poll("web pod Running", Duration::from_secs(60), || {
        let pod = admin_json(&info, home.path(), &["get", "pod", "web"]);
        (pod["status"]["phase"] == "Running")
            .then(|| pod["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    });
    let (peer, text) = from_pod
        .recv_timeout(Duration::from_secs(30))
        .expect("the pod connected to the host");
    assert_eq!(text.trim(), "from-pod");
    assert_eq!(peer.to_string(), web_ip, "pod → host is not masqueraded");
    let host_port = format!("{}:{HOST_PORT}", info.node_ip);
    let answer = poll("N:30080 answers", Duration::from_secs(30), || {
        read_all(&info.netns, host_port.clone())
            .ok()
            .filter(|t| !t.is_empty())
    });
    assert_eq!(answer.trim(), "satellite-pod");
    // NodePort: a Deployment (2 busybox replicas bound to the node, each answering with its
    // pod name) behind a NodePort Service, programmed by the kube-proxy the agent supervises
    // with the node's identity; reached at N:30081 from the VPC through the proxy, both
    // replicas.
    admin_apply(
        &info,
        home.path(),
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: httpd, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: httpd}}}}
  template:
    metadata: {{labels: {{app: httpd}}}}
    spec:
      nodeName: {name}
      automountServiceAccountToken: false
      containers:
      - name: httpd
        image: \"{BUSYBOX_IMAGE}\"
        imagePullPolicy: Never
        command: [/bin/busybox, nc, -ll, -p, \"8080\", -e, /bin/busybox, hostname]
---
apiVersion: v1
kind: Service
metadata: {{name: httpd, namespace: default}}
spec:
  type: NodePort
  selector: {{app: httpd}}
  ports: [{{port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]
"
        ),
    );
    poll("2 ready httpd endpoints", Duration::from_secs(90), || {
        let endpoints = admin_json(&info, home.path(), &["get", "endpoints", "httpd"]);
        let ready = endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["addresses"].as_array().map_or(0, Vec::len))
            .sum::<usize>();
        (ready == 2).then_some(())
    });
    let mut answered = std::collections::BTreeSet::new();
    poll(
        "both replicas answer at N:30081 through the proxy",
        Duration::from_secs(60),
        || {
            let answer = read_all(&info.netns, format!("{}:{NODE_PORT}", info.node_ip)).ok();
            if let Some(pod) = answer.filter(|t| t.starts_with("httpd-")) {
                answered.insert(pod.trim().to_owned());
            }
            (answered.len() == 2).then_some(())
        },
    );

    // Anyone else on the internet reaches the host's public address (a listener on S, an
    // unprotected port, answers through the provider's NAT), but not its protected ports
    // (kubelet's, the NodePort range): the datapath accepts them from the proxy only.
    let host_address = info.host_address.clone();
    let open = netns::run_in(&info.host_netns, move || {
        std::net::TcpListener::bind((host_address.as_str(), 0))
    })
    .and_then(|bound| Ok(bound?))
    .expect("a listener on S");
    let public = format!(
        "{}:{}",
        info.public_address,
        open.local_addr().expect("address").port()
    );
    let reached = netns::run_in(&info.internet_netns, move || {
        std::net::TcpStream::connect_timeout(
            &public.parse().expect("address"),
            Duration::from_secs(5),
        )
    })
    .expect("the internet namespace");
    assert!(
        reached.is_ok(),
        "P unreachable from the internet: {reached:?}"
    );
    drop(open);
    for port in [HOST_PORT, NODE_PORT, 10250] {
        let public = format!("{}:{port}", info.public_address);
        let reached = netns::run_in(&info.internet_netns, move || {
            std::net::TcpStream::connect_timeout(
                &public.parse().expect("address"),
                Duration::from_secs(2),
            )
            .is_ok()
        })
        .expect("the internet namespace");
        assert!(
            !reached,
            "{}:{port} reachable from the internet",
            info.public_address
        );
    }

    // kubectl logs/exec: the API server reaches kubelet with its kubelet client certificate
    // (authorised through RBAC, as on EKS) and trusts kubelet's serving certificate once its
    // CSR is approved and signed. Approved by `satellite-agent admin approve-csrs --watch`,
    // running as its own user with only the RBAC `admin approver-rbac` prints.
    let csr_name = csr["metadata"]["name"]
        .as_str()
        .expect("CSR name")
        .to_owned();
    let issued = poll(
        "the serving CSR approved and its certificate issued",
        Duration::from_secs(30),
        || {
            let csr = admin_json(&info, home.path(), &["get", "csr", &csr_name]);
            csr["status"]["certificate"]
                .as_str()
                .is_some()
                .then_some(csr)
        },
    );
    let approved = issued["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Approved"))
        .unwrap_or_else(|| panic!("no Approved condition: {issued}"));
    assert_eq!(approved["reason"], "SatelliteNodeVerified", "{issued}");
    let seconds = |v: &Value| {
        v.as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("timestamp {v}"))
            .as_second()
    };
    let latency =
        seconds(&approved["lastUpdateTime"]) - seconds(&issued["metadata"]["creationTimestamp"]);
    eprintln!("serving CSR {csr_name} approved {latency} s after creation (1 s resolution)");
    assert!(
        latency <= 2,
        "approved {latency} s after creation: {issued}"
    );
    let approver_log = std::fs::read_to_string(processes::log_file(&info.work_dir, node::APPROVER))
        .expect("approver log");
    assert_eq!(
        approver_log
            .lines()
            .filter(|l| l.contains("CSR decision") && l.contains(&csr_name))
            .count(),
        1,
        "one audit line for {csr_name}: {approver_log}"
    );
    let through_proxy = node::proxy_metric(&info, "satellite_proxy_connections_accepted_total")
        .expect("proxy metrics");
    kubelet_api_works(&info, home.path(), "with the approved serving certificate");
    // The API server reached kubelet at N, which in the VPC is the proxy's.
    let after_proxy = node::proxy_metric(&info, "satellite_proxy_connections_accepted_total")
        .expect("proxy metrics");
    assert!(
        after_proxy > through_proxy,
        "exec and logs did not pass the proxy ({through_proxy} → {after_proxy} connections)"
    );

    // kubelet killed → the agent starts a new one, which talks to the API server again.
    let before = node::kubelet_pids(&info);
    assert_eq!(before.len(), 1, "one kubelet: {before:?}");
    let renewed_before = lease_renew_time(&info, home.path(), &name);
    processes::signal_group(before[0], libc::SIGKILL);
    let after = poll("a new kubelet", Duration::from_secs(30), || {
        let pids = node::kubelet_pids(&info);
        (pids.len() == 1 && pids != before).then_some(pids)
    });
    eprintln!("kubelet {} killed, {} started", before[0], after[0]);
    poll(
        "lease renewed by the new kubelet",
        Duration::from_secs(60),
        || (lease_renew_time(&info, home.path(), &name) > renewed_before).then_some(()),
    );
    node::wait_ready(&info, &name, Duration::from_secs(60)).expect("Ready after restart");
    // The new kubelet reuses its serving certificate: no new CSR, and its API still works.
    kubelet_api_works(&info, home.path(), "after a kubelet restart");
    assert_eq!(
        node_csrs().len(),
        1,
        "the restarted kubelet filed a new serving CSR"
    );
    assert_eq!(
        processes::running(&info.work_dir, node::AGENT),
        Some(agent_pid),
        "the agent itself kept running"
    );

    // The agent killed (SIGKILL, no teardown) and its children with it, as systemd's
    // control-group kill does (kubelet would die anyway on its next write to the agent's
    // pipe): the pinned datapath still carries the VPC's traffic to the pods (the host port
    // through the proxy, NAT and tc) with no agent and no kubelet.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(agent_pid, libc::SIGKILL) };
    poll("the agent gone", Duration::from_secs(10), || {
        processes::running(&info.work_dir, node::AGENT)
            .is_none()
            .then_some(())
    });
    for orphan in node::kubelet_pids(&info) {
        processes::signal_group(orphan, libc::SIGKILL);
    }
    poll("the orphaned kubelet gone", Duration::from_secs(10), || {
        node::kubelet_pids(&info).is_empty().then_some(())
    });
    assert_eq!(
        read_all(&info.netns, host_port.clone())
            .expect("N:30080 with the agent down")
            .trim(),
        "satellite-pod",
        "the pinned datapath without its agent"
    );
    // A new agent adopts the pins and starts kubelet again.
    node::start_agent(&info, &bins).expect("agent restarted");
    node::wait_ready(&info, &name, Duration::from_secs(60)).expect("Ready with a new agent");
    kubelet_api_works(&info, home.path(), "with a restarted agent (pins adopted)");
    assert_eq!(
        node_csrs().len(),
        1,
        "a new kubelet filed a new serving CSR"
    );

    // Agent stopped (SIGTERM) → kubelet stopped.
    node::stop_agent(&info);
    poll("kubelet stopped", Duration::from_secs(30), || {
        node::kubelet_pids(&info).is_empty().then_some(())
    });

    // Revoke: the node's own credentials are rejected; the other mapping is untouched.
    let probe = ["get", "node", name.as_str(), "-o", "name"];
    let out = kubectl(&info, &kubeconfig_path, home.path(), &probe);
    assert!(
        out.status.success(),
        "node credentials before revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node::admin(&info, &bins, "revoke").expect("revoke");
    let rejected = poll("node credentials rejected", Duration::from_secs(20), || {
        let out = kubectl(&info, &kubeconfig_path, home.path(), &probe);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success()).then_some(stderr)
    });
    assert!(
        rejected.contains("Unauthorized") || rejected.contains("Forbidden"),
        "{rejected}"
    );
    let aws_auth = admin_json(
        &info,
        home.path(),
        &["-n", "kube-system", "get", "configmap", "aws-auth"],
    );
    let map_roles = aws_auth["data"]["mapRoles"].as_str().unwrap_or_default();
    assert!(!map_roles.contains(&name), "{map_roles}");
    let kept: Vec<Value> = serde_saphyr::from_str(map_roles).expect("mapRoles YAML");
    let other: Vec<Value> = serde_saphyr::from_str(OTHER_MAPPING).expect("YAML");
    assert_eq!(kept, other, "revoke changed other aws-auth entries");

    // Down removes the node too: its pods' processes, cgroups and network namespaces.
    let cgroup = Path::new("/sys/fs/cgroup/pids").join(&info.netns);
    drop(sandbox);
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    assert!(node::kubelet_pids(&info).is_empty(), "kubelet left behind");
    for ns in [&info.netns, &info.host_netns, &info.internet_netns] {
        assert!(!netns::exists(ns), "namespace {ns} left behind");
    }
}
