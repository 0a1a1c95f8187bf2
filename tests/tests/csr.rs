//! End-to-end: the serving-CSR approver (`satellite-agent admin approve-csrs`) against a real
//! kube-apiserver and kube-controller-manager (v1.20.2, the sandbox), with a joined satellite
//! node whose own credentials (kubelet's kubeconfig: our credential plugin's EKS tokens through
//! the sandbox's webhook, `system:node:<name>` in `system:nodes`) file forged
//! `kubernetes.io/kubelet-serving` CSRs, as a compromised node could.
//!
//! - Every forgery is denied with the rule it breaks as the condition's reason, never signed,
//!   and audited once; CSRs of nodes that are not satellite nodes and of other signers are
//!   left untouched (EKS decides those).
//! - `--dry-run` reports its decisions and writes nothing; an identity without the RBAC of
//!   `admin approver-rbac`, or one the API server does not know, is refused at start (exit 5)
//!   naming what it lacks; CSRs filed while the approver is down are decided once it is back,
//!   each exactly once across restarts.
//!
//! What kube-apiserver v1.20 accepts (`pkg/apis/certificates/validation`): `spec.request`
//! must hold a PEM `CERTIFICATE REQUEST` block whose DER Go's `x509.ParseCertificateRequest`
//! parses and whose self-signature verifies; garbage, bad DER and a broken signature are
//! refused at admission (`spec.request: Invalid value`). It reads only the first block and
//! allows PEM headers, so the unparseable requests that reach the approver are a request
//! followed by a second block, and a block with headers; both are denied with the parse error.
//!
//! Needs root and `cargo xtask sandbox install`; the agent and plugin binaries come from the
//! test's own target dir (`cargo xtask test` builds them).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rcgen::SanType;
use satellite_tests::netns;
use satellite_tests::sandbox::node::{self, NodeBinaries};
use satellite_tests::sandbox::testing::{TestSandbox, kubectl, poll, target_bin};
use satellite_tests::sandbox::{SandboxInfo, pki, processes, random_hex};
use serde_json::{Value, json};

/// The kubelet-serving signer.
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// What kubelet asks for (an ECDSA key; kubelet v1.20 adds key encipherment anyway).
const SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];
/// Another satellite-style node name, not registered.
const OTHER_NODE: &str = "fargate-ip-198-18-0-11.us-east-1.compute.internal";
/// The sandbox's admin user (static token, `system:masters`).
const ADMIN_USER: &str = "sandbox-admin";
/// The approver's ClusterRoleBinding (`admin approver-rbac`).
const APPROVER_BINDING: &str = "satellite:csr-approver";
/// Longest wait for one thing to happen.
const WAIT: Duration = Duration::from_secs(30);

/// A sandbox with a joined, Ready satellite node and the approver watching.
struct Cluster {
    info: SandboxInfo,
    bins: NodeBinaries,
    home: tempfile::TempDir,
    /// The node's name (`fargate-ip-198-18-0-10.us-east-1.compute.internal`).
    node: String,
    /// kubelet's kubeconfig: the node's own identity.
    node_kubeconfig: PathBuf,
    /// Last, so the sandbox goes down after everything else is dropped.
    _sandbox: TestSandbox,
}

impl Cluster {
    fn up() -> Cluster {
        let sandbox = TestSandbox::up(Path::new(env!("CARGO_BIN_EXE_sandbox-authenticator")));
        let info = sandbox.info.clone();
        let bins = NodeBinaries {
            agent: target_bin("satellite-agent", "satellite-agent"),
            credential_plugin: target_bin(
                "satellite-credential-plugin",
                "satellite-credential-plugin",
            ),
            cni_plugin: target_bin("satellite-cni", "satellite-cni"),
        };
        let started = Instant::now();
        let joined = node::up(&info, &bins).expect("node up");
        eprintln!(
            "node {} Ready in {:.1} s",
            joined.name,
            started.elapsed().as_secs_f64()
        );
        let cluster = Cluster {
            node_kubeconfig: info.work_dir.join("node/kubelet/kubeconfig"),
            node: joined.name,
            info,
            bins,
            home: tempfile::tempdir().expect("temp home"),
            _sandbox: sandbox,
        };
        // The Node carries the agent's labels (what makes it a satellite node to the
        // approver) once `run` has reconciled them.
        poll("the agent's labels on the Node", WAIT, || {
            let node = cluster.admin_json(&["get", "node", &cluster.node]);
            (node["metadata"]["labels"]["satellite.dev/agent-version"] == env!("CARGO_PKG_VERSION"))
                .then_some(())
        });
        cluster
    }

    fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        kubectl(&self.info, kubeconfig, self.home.path(), args)
    }

    fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl_as(&self.info.admin_kubeconfig, &all);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("kubectl JSON")
    }

    /// `kubectl create -f` of `manifest` as `kubeconfig`'s identity; its output.
    fn create_as(&self, kubeconfig: &Path, manifest: &Value) -> Output {
        let path = self
            .home
            .path()
            .join(format!("{}.json", random_hex(8).expect("random")));
        std::fs::write(&path, manifest.to_string()).expect("manifest");
        self.kubectl_as(
            kubeconfig,
            &["create", "-f", path.to_str().expect("utf-8 path")],
        )
    }

    fn create_or_panic(&self, kubeconfig: &Path, manifest: &Value) {
        let out = self.create_as(kubeconfig, manifest);
        assert!(
            out.status.success(),
            "creating {}: {}",
            manifest["metadata"]["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Files CSR `name` for `signer` with `request` (PEM bytes) as `kubeconfig`'s identity.
    fn file_csr(
        &self,
        kubeconfig: &Path,
        name: &str,
        request: &[u8],
        signer: &str,
        usages: &[&str],
    ) {
        self.create_or_panic(kubeconfig, &csr_manifest(name, request, signer, usages));
    }

    fn csr(&self, name: &str) -> Value {
        self.admin_json(&["get", "csr", name])
    }

    /// Waits until CSR `name` has an Approved or Denied condition; the CSR.
    fn wait_decided(&self, name: &str) -> Value {
        poll(&format!("CSR {name} decided"), WAIT, || {
            let csr = self.csr(name);
            (!conditions(&csr).is_empty()).then_some(csr)
        })
    }

    /// `satellite-agent ARGS` inside the namespace (one-shot); its output.
    fn agent(&self, args: &[&str]) -> Output {
        netns::command(&self.info.netns, &self.bins.agent)
            .args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run satellite-agent")
    }

    /// `satellite-agent admin approve-csrs --kubeconfig K --service-cidr <sandbox's> EXTRA…`.
    fn approve_csrs(&self, kubeconfig: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "admin",
            "approve-csrs",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8 path"),
            "--service-cidr",
            &self.info.service_cidr,
        ];
        args.extend(extra);
        self.agent(&args)
    }

    /// Whether the approver's user may `verb` `resource` (`kubectl auth can-i --as`).
    fn approver_can(&self, verb: &str, resource: &str) -> bool {
        let out = self.kubectl_as(
            &self.info.admin_kubeconfig,
            &["auth", "can-i", verb, resource, "--as", pki::APPROVER_USER],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    }

    /// The approver's log (every run of the sandbox process appends to it).
    fn approver_log(&self) -> String {
        std::fs::read_to_string(processes::log_file(&self.info.work_dir, node::APPROVER))
            .expect("approver log")
    }

    /// A PEM request with the node's own subject and `sans`.
    fn node_request(&self, sans: Vec<SanType>) -> String {
        request(
            &format!("system:node:{}", self.node),
            &["system:nodes"],
            sans,
        )
    }

    /// kubelet's own request: the node's name and IP.
    fn own_sans(&self) -> Vec<SanType> {
        vec![dns(&self.node), ip(&self.info.node_ip)]
    }
}

/// A forged CSR and what the approver must say about it.
struct Forgery {
    case: &'static str,
    request: Vec<u8>,
    usages: &'static [&'static str],
    /// Filed with the admin's credentials instead of the node's.
    by_admin: bool,
    reason: &'static str,
    /// In the Denied condition's message.
    message: String,
}

/// A unique CSR name for `case`.
fn unique(case: &str) -> String {
    format!("satellite-test-{case}-{}", random_hex(4).expect("random"))
}

fn csr_manifest(name: &str, request: &[u8], signer: &str, usages: &[&str]) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": signer,
            "usages": usages,
        },
    })
}

/// A PEM PKCS#10 request (fresh ECDSA P-256 key) for `cn` / `orgs` with `sans`.
fn request(cn: &str, orgs: &[&str], sans: Vec<SanType>) -> String {
    pki::certificate_request(cn, orgs, sans).1
}

/// `der` as a PEM block labelled `label`.
fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("DNS name"))
}

fn ip(addr: &str) -> SanType {
    SanType::IpAddress(addr.parse().expect("IP"))
}

fn conditions(csr: &Value) -> Vec<Value> {
    csr["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_certificate(csr: &Value) -> bool {
    csr["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The approver's audit lines for CSR `name` (target `audit`, message "CSR decision").
fn audit_lines<'l>(log: &'l str, name: &str) -> Vec<&'l str> {
    let field = format!("csr=\"{name}\"");
    log.lines()
        .filter(|l| l.contains("CSR decision") && l.contains(&field))
        .collect()
}

/// Asserts `csr` is Denied with `reason` and a message containing `message`, unsigned.
fn assert_denied(csr: &Value, reason: &str, message: &str) {
    let conditions = conditions(csr);
    assert_eq!(conditions.len(), 1, "one condition: {csr}");
    let denied = &conditions[0];
    assert_eq!(denied["type"], "Denied", "{csr}");
    assert_eq!(denied["status"], "True", "{csr}");
    assert_eq!(denied["reason"], reason, "{csr}");
    let text = denied["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(message),
        "message {text:?} does not say {message:?}"
    );
    assert!(!has_certificate(csr), "a denied CSR was signed: {csr}");
}

/// Asserts `csr` has no condition, no certificate, and `resource_version`.
fn assert_untouched(csr: &Value, resource_version: &Value) {
    assert!(conditions(csr).is_empty(), "decided: {csr}");
    assert!(!has_certificate(csr), "signed: {csr}");
    assert_eq!(
        &csr["metadata"]["resourceVersion"], resource_version,
        "changed: {csr}"
    );
}

#[test]
#[ignore = "needs root and the sandbox install (cargo xtask sandbox install)"]
fn forged_serving_csrs_are_denied_and_other_nodes_csrs_left_alone() {
    let c = Cluster::up();
    let node = c.node.clone();
    let node_ip = c.info.node_ip.clone();
    let own_cn = format!("system:node:{node}");

    // What EKS decides, not us: a CSR of an EC2 node (its Node registered, not ours), of an
    // EKS Fargate node (compute-type label, no agent-version label), and another signer's
    // CSR from the satellite node itself. Filed first, so the forgeries after them prove the
    // approver had its chance.
    let ec2 = "ip-10-0-0-5.ec2.internal";
    let fargate = "fargate-ip-198-18-0-20.us-east-1.compute.internal";
    for (name, labels) in [
        (ec2, json!({})),
        (
            fargate,
            json!({"eks.amazonaws.com/compute-type": "fargate"}),
        ),
    ] {
        c.create_or_panic(
            &c.info.admin_kubeconfig,
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}),
        );
    }
    let foreign = [
        (
            unique("ec2-node"),
            request(
                &format!("system:node:{ec2}"),
                &["system:nodes"],
                vec![dns(ec2), ip("10.0.0.5")],
            ),
            SERVING_SIGNER,
            SERVING,
            &c.info.admin_kubeconfig,
        ),
        (
            unique("fargate-node"),
            request(
                &format!("system:node:{fargate}"),
                &["system:nodes"],
                vec![dns(fargate), ip("198.18.0.20")],
            ),
            SERVING_SIGNER,
            SERVING,
            &c.info.admin_kubeconfig,
        ),
        (
            unique("client-signer"),
            c.node_request(vec![]),
            "kubernetes.io/kube-apiserver-client",
            &["digital signature", "key encipherment", "client auth"][..],
            &c.node_kubeconfig,
        ),
    ];
    let mut foreign_versions = Vec::new();
    for (name, pem, signer, usages, kubeconfig) in &foreign {
        c.file_csr(kubeconfig, name, pem.as_bytes(), signer, usages);
        foreign_versions.push(c.csr(name)["metadata"]["resourceVersion"].clone());
    }

    // Refused at admission, never seen by the approver: garbage, a PEM block of bad DER, and a
    // request whose self-signature does not verify (the DER's last byte is the signature's).
    let (mut tampered, _) = pki::certificate_request(&own_cn, &["system:nodes"], c.own_sans());
    *tampered.last_mut().expect("DER") ^= 0x01;
    for (case, request, says) in [
        (
            "garbage",
            b"not a certificate request".to_vec(),
            "PEM block type must be CERTIFICATE REQUEST",
        ),
        (
            "bad-der",
            pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x01").into_bytes(),
            "asn1",
        ),
        (
            "bad-signature",
            pem("CERTIFICATE REQUEST", &tampered).into_bytes(),
            "verification",
        ),
    ] {
        let out = c.create_as(
            &c.node_kubeconfig,
            &csr_manifest(&unique(case), &request, SERVING_SIGNER, SERVING),
        );
        let text = stderr(&out);
        assert!(!out.status.success(), "{case} accepted");
        assert!(
            text.contains("spec.request: Invalid value") && text.contains(says),
            "{case}: {text}"
        );
    }

    // What it accepts and the approver cannot use: a request with a second PEM block after it
    // (kube-apiserver and the signer read the first only), and a block with PEM headers (Go's
    // encoding/pem allows them, RFC 7468 does not).
    let two_blocks = format!(
        "{}{}",
        c.node_request(c.own_sans()),
        c.node_request(vec![dns("evil.example.com")])
    );
    let (own_der, _) = pki::certificate_request(&own_cn, &["system:nodes"], c.own_sans());
    let with_headers = pem("CERTIFICATE REQUEST", &own_der).replacen(
        "-----\n",
        "-----\nComment: satellite test\n\n",
        1,
    );

    let forgeries = [
        Forgery {
            case: "other-node-cn",
            request: request(
                &format!("system:node:{OTHER_NODE}"),
                &["system:nodes"],
                vec![dns(OTHER_NODE), ip("198.18.0.11")],
            )
            .into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteRequesterMismatch",
            message: format!(
                "requested by \"{own_cn}\", not by the node system:node:{OTHER_NODE} itself"
            ),
        },
        Forgery {
            case: "extra-ip",
            request: c
                .node_request(vec![dns(&node), ip(&node_ip), ip("198.18.0.99")])
                .into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteIpAddressMismatch",
            message: format!(
                "IP SAN 198.18.0.99 is not the address the node's name encodes ({node_ip})"
            ),
        },
        Forgery {
            case: "extra-dns",
            request: c
                .node_request(vec![dns(&node), dns("evil.example.com"), ip(&node_ip)])
                .into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteDnsNameMismatch",
            message: format!("DNS SAN \"evil.example.com\" is not the node's name \"{node}\""),
        },
        Forgery {
            case: "client-auth",
            request: c.node_request(c.own_sans()).into_bytes(),
            usages: &[
                "digital signature",
                "key encipherment",
                "server auth",
                "client auth",
            ],
            by_admin: false,
            reason: "SatelliteInvalidUsages",
            message: "\"client auth\"".into(),
        },
        Forgery {
            case: "service-ip",
            request: c
                .node_request(vec![dns(&node), ip(&node_ip), ip("198.19.0.1")])
                .into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteIpAddressMismatch",
            message: "IP SAN 198.19.0.1 is in the service CIDR 198.19.0.0/16".into(),
        },
        Forgery {
            case: "kubernetes-svc",
            request: c
                .node_request(vec![
                    dns(&node),
                    dns("kubernetes.default.svc"),
                    ip(&node_ip),
                ])
                .into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteDnsNameMismatch",
            message: "DNS SAN \"kubernetes.default.svc\" is a cluster-internal name".into(),
        },
        Forgery {
            case: "two-blocks",
            request: two_blocks.into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteInvalidRequest",
            message: "more than one PEM block".into(),
        },
        Forgery {
            case: "pem-headers",
            request: with_headers.into_bytes(),
            usages: SERVING,
            by_admin: false,
            reason: "SatelliteInvalidRequest",
            message: "spec.request is not a PEM CERTIFICATE REQUEST".into(),
        },
        // The node's own, valid request, filed by someone else.
        Forgery {
            case: "not-the-node",
            request: c.node_request(c.own_sans()).into_bytes(),
            usages: SERVING,
            by_admin: true,
            reason: "SatelliteRequesterMismatch",
            message: format!("requested by \"{ADMIN_USER}\", not by the node {own_cn} itself"),
        },
    ];
    let started = Instant::now();
    let names: Vec<String> = forgeries
        .iter()
        .map(|f| {
            let name = unique(f.case);
            let kubeconfig = if f.by_admin {
                &c.info.admin_kubeconfig
            } else {
                &c.node_kubeconfig
            };
            c.file_csr(kubeconfig, &name, &f.request, SERVING_SIGNER, f.usages);
            name
        })
        .collect();
    for (forgery, name) in forgeries.iter().zip(&names) {
        let csr = c.wait_decided(name);
        eprintln!("{}: {}", forgery.case, conditions(&csr)[0]["message"]);
        assert_denied(&csr, forgery.reason, &forgery.message);
        if !forgery.by_admin {
            assert_eq!(csr["spec"]["username"], own_cn.as_str(), "{csr}");
        }
    }
    eprintln!(
        "{} forgeries denied {:.1} s after the first was filed",
        names.len(),
        started.elapsed().as_secs_f64()
    );

    // Denied is final: still unsigned once kube-controller-manager's signer has seen them, and
    // one audit line each.
    std::thread::sleep(Duration::from_secs(2));
    let log = c.approver_log();
    for (forgery, name) in forgeries.iter().zip(&names) {
        assert_denied(&c.csr(name), forgery.reason, &forgery.message);
        let lines = audit_lines(&log, name);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(
            lines[0].contains("decision=\"Denied\"")
                && lines[0].contains(&format!("reason=\"{}\"", forgery.reason)),
            "{}",
            lines[0]
        );
    }

    // The other nodes' and signers' CSRs: never written to, never audited.
    for ((name, ..), version) in foreign.iter().zip(&foreign_versions) {
        assert_untouched(&c.csr(name), version);
        assert!(audit_lines(&log, name).is_empty(), "{name} audited: {log}");
    }
}

#[test]
#[ignore = "needs root and the sandbox install (cargo xtask sandbox install)"]
fn dry_run_writes_nothing_no_rights_exits_5_and_a_restart_misses_nothing() {
    let c = Cluster::up();
    let node = c.node.clone();
    let node_ip = c.info.node_ip.clone();
    processes::stop(&c.info.work_dir, node::APPROVER);
    assert_eq!(processes::running(&c.info.work_dir, node::APPROVER), None);

    // Without its binding the approver's identity may do nothing: refused at start, exit 5,
    // every missing permission and the fix named.
    let out = c.kubectl_as(
        &c.info.admin_kubeconfig,
        &["delete", "clusterrolebinding", APPROVER_BINDING],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    poll("the binding's removal in effect", WAIT, || {
        (!c.approver_can("list", "certificatesigningrequests.certificates.k8s.io")).then_some(())
    });
    let started = Instant::now();
    let refused = c.approve_csrs(&c.info.approver_kubeconfig, &["--watch"]);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(5), "{text}");
    for missing in [
        "list certificates.k8s.io/certificatesigningrequests",
        "get certificates.k8s.io/certificatesigningrequests",
        "watch certificates.k8s.io/certificatesigningrequests",
        "get core/nodes",
        "update certificates.k8s.io/certificatesigningrequests/approval",
        "approve certificates.k8s.io/signers \"kubernetes.io/kubelet-serving\"",
    ] {
        assert!(text.contains(missing), "{missing:?} not named: {text}");
    }
    assert!(
        text.contains("satellite-agent admin approver-rbac"),
        "{text}"
    );
    assert!(!text.contains("CSR decision"), "{text}");
    eprintln!(
        "refused without RBAC in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // An identity the API server does not know (an IAM role aws-auth does not map): refused,
    // exit 5, naming aws-auth.
    let known = std::fs::read_to_string(&c.info.approver_kubeconfig).expect("kubeconfig");
    let unknown: String = known
        .lines()
        .map(|l| match l.split_once("token: ") {
            Some((indent, _)) => format!("{indent}token: {}\n", random_hex(32).expect("random")),
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(known, unknown, "no token line in {known}");
    let unknown_path = c.home.path().join("unknown.kubeconfig");
    std::fs::write(&unknown_path, unknown).expect("kubeconfig");
    let refused = c.approve_csrs(&unknown_path, &["--watch"]);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(5), "{text}");
    assert!(
        text.contains("did not accept the approver's credentials")
            && text.contains("kube-system/aws-auth")
            && text.contains("401"),
        "{text}"
    );

    // A node may read CSRs but not approve them: a node cannot use the approver to approve
    // its own forgeries.
    let refused = c.approve_csrs(&c.node_kubeconfig, &[]);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(5), "{text}");
    assert!(
        text.contains("update certificates.k8s.io/certificatesigningrequests/approval")
            && text
                .contains("approve certificates.k8s.io/signers \"kubernetes.io/kubelet-serving\""),
        "{text}"
    );
    assert!(
        !text.contains("list certificates.k8s.io/certificatesigningrequests"),
        "{text}"
    );

    // Filed while no approver runs: a valid request and three forgeries.
    let valid = unique("valid");
    c.file_csr(
        &c.node_kubeconfig,
        &valid,
        c.node_request(c.own_sans()).as_bytes(),
        SERVING_SIGNER,
        SERVING,
    );
    let extra_dns = unique("extra-dns");
    c.file_csr(
        &c.node_kubeconfig,
        &extra_dns,
        c.node_request(vec![dns(&node), dns("evil.example.com"), ip(&node_ip)])
            .as_bytes(),
        SERVING_SIGNER,
        SERVING,
    );
    let client_auth = unique("client-auth");
    c.file_csr(
        &c.node_kubeconfig,
        &client_auth,
        c.node_request(c.own_sans()).as_bytes(),
        SERVING_SIGNER,
        &["digital signature", "server auth", "client auth"],
    );
    let service_ip = unique("service-ip");
    c.file_csr(
        &c.node_kubeconfig,
        &service_ip,
        c.node_request(vec![dns(&node), ip("198.19.0.1")])
            .as_bytes(),
        SERVING_SIGNER,
        SERVING,
    );
    let while_down = [
        (valid.as_str(), "Approved", "SatelliteNodeVerified"),
        (extra_dns.as_str(), "Denied", "SatelliteDnsNameMismatch"),
        (client_auth.as_str(), "Denied", "SatelliteInvalidUsages"),
        (service_ip.as_str(), "Denied", "SatelliteIpAddressMismatch"),
    ];
    let versions: Vec<Value> = while_down
        .iter()
        .map(|(name, ..)| c.csr(name)["metadata"]["resourceVersion"].clone())
        .collect();

    // The binding back (what `admin approver-rbac` prints), the approver still stopped.
    let rbac = c.agent(&["admin", "approver-rbac", "--user", pki::APPROVER_USER]);
    assert!(rbac.status.success(), "{}", stderr(&rbac));
    let path = c.home.path().join("approver-rbac.yaml");
    std::fs::write(&path, &rbac.stdout).expect("manifest");
    let out = c.kubectl_as(
        &c.info.admin_kubeconfig,
        &["apply", "-f", path.to_str().expect("utf-8 path")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    poll("the binding in effect", WAIT, || {
        c.approver_can("list", "certificatesigningrequests.certificates.k8s.io")
            .then_some(())
    });

    // --dry-run (one pass): each decision on stderr, marked as a dry run; nothing written.
    let dry = c.approve_csrs(&c.info.approver_kubeconfig, &["--dry-run"]);
    let text = stderr(&dry);
    assert!(dry.status.success(), "{text}");
    for (name, decision, reason) in while_down {
        let lines = audit_lines(&text, name);
        assert_eq!(lines.len(), 1, "{name}: {text}");
        for field in [
            format!("decision=\"{decision}\""),
            format!("reason=\"{reason}\""),
            "dry_run=true".to_owned(),
        ] {
            assert!(lines[0].contains(&field), "{field} not in {}", lines[0]);
        }
    }
    assert!(text.contains("would be decided (dry run)"), "{text}");
    for ((name, ..), version) in while_down.iter().zip(&versions) {
        assert_untouched(&c.csr(name), version);
    }

    // The approver back: every CSR filed while it was down is decided (its first list finds
    // them), and the valid one is signed.
    let restarted = Instant::now();
    node::start_approver(&c.info, &c.bins).expect("approver started");
    for (name, decision, reason) in while_down {
        let csr = c.wait_decided(name);
        let condition = &conditions(&csr)[0];
        assert_eq!(conditions(&csr).len(), 1, "{csr}");
        assert_eq!(condition["type"], decision, "{csr}");
        assert_eq!(condition["reason"], reason, "{csr}");
    }
    eprintln!(
        "{} CSRs filed while down decided {:.1} s after the restart",
        while_down.len(),
        restarted.elapsed().as_secs_f64()
    );
    let signed = poll("the valid CSR signed", WAIT, || {
        let csr = c.csr(&valid);
        has_certificate(&csr).then_some(csr)
    });
    assert_eq!(signed["spec"]["username"], format!("system:node:{node}"));
    for (name, decision, _) in &while_down[1..] {
        assert_eq!(*decision, "Denied");
        assert!(!has_certificate(&c.csr(name)), "{name} signed");
    }

    // The watch is live after the first list, and a second restart decides nothing twice:
    // one CSR filed after each restart, each decided.
    let mut later = Vec::new();
    for round in 0..2 {
        if round == 1 {
            processes::stop(&c.info.work_dir, node::APPROVER);
            node::start_approver(&c.info, &c.bins).expect("approver restarted");
        }
        let name = unique("extra-ip");
        c.file_csr(
            &c.node_kubeconfig,
            &name,
            c.node_request(vec![dns(&node), ip(&node_ip), ip("198.18.0.99")])
                .as_bytes(),
            SERVING_SIGNER,
            SERVING,
        );
        assert_denied(
            &c.wait_decided(&name),
            "SatelliteIpAddressMismatch",
            "IP SAN 198.18.0.99",
        );
        later.push(name);
    }

    // Exactly one audit line per CSR over the three runs of the approver (the one `up`
    // started, and two restarts), none a dry run.
    let log = c.approver_log();
    assert_eq!(
        log.matches("watching kubelet-serving CSRs").count(),
        3,
        "three approver runs: {log}"
    );
    for name in while_down
        .iter()
        .map(|(n, ..)| *n)
        .chain(later.iter().map(String::as_str))
    {
        let lines = audit_lines(&log, name);
        assert_eq!(
            lines.len(),
            1,
            "{name} decided {} times: {lines:?}",
            lines.len()
        );
        assert!(lines[0].contains("dry_run=false"), "{}", lines[0]);
    }
}
