//! The approver's judgement of one CSR, a pure function of the CSR, the Nodes it names and
//! the [`Policy`]: approve, deny (with a reason), or leave alone.
//!
//! Rules (all must hold to approve a `kubernetes.io/kubelet-serving` CSR of a satellite node):
//! 1. the signer's own rules (Kubernetes "Certificate Signing Requests", kubelet-serving
//!    signer): subject O exactly `[system:nodes]`, one CN `system:node:<n>`, usages exactly
//!    {digital signature, key encipherment, server auth} or {digital signature, server auth},
//!    no email, URI or other SANs;
//! 2. the requester is the node itself: username = CN, in group `system:nodes`;
//! 3. `<n>` is a satellite node: a Node with the Fargate compute-type label and the agent's
//!    version label, named `fargate-ip-<a-b-c-d>.<region>.compute.internal`;
//! 4. every DNS SAN equals `<n>`; every IP SAN is in the Node's `status.addresses` and equals
//!    the IP its name encodes; no service-CIDR IP, no `kubernetes*` / `*.svc` / cluster-domain
//!    name; at least one SAN;
//! 5. `expirationSeconds`, when set, is at most [`Policy::max_expiration`].
//!
//! A CSR of a node that is not a satellite node (neither its CN nor its requester names one)
//! is left for EKS; one whose Node is not registered yet is left for a later look.
//!
//! Model: k0s's `pkg/component/controller/csrapprover.go` (checks the signer's rules, the
//! requester and the SANs against the Node), made stricter: SANs must match the Node exactly.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;

use super::request::ParsedRequest;
use crate::config::node_ip_from_name;
use crate::render::{AGENT_VERSION_LABEL, COMPUTE_TYPE_LABEL};

/// The signer whose CSRs the approver judges.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The prefix of node usernames and serving-certificate CNs.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group every node identity is in (and the only O a kubelet certificate may carry).
pub const NODES_GROUP: &str = "system:nodes";
/// The usage sets the kubelet-serving signer accepts (RSA keys add key encipherment).
const ALLOWED_USAGES: [&[&str]; 2] = [
    &["digital signature", "key encipherment", "server auth"],
    &["digital signature", "server auth"],
];

/// What the approver accepts beyond a Node's own identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The cluster's service CIDRs: no serving certificate may name an address in them
    /// (EKS's defaults are 10.100.0.0/16 and 172.20.0.0/16).
    pub service_cidrs: Vec<IpNet>,
    /// The cluster DNS domain (`cluster.local`): no serving certificate may name it.
    pub cluster_domain: String,
    /// The longest `spec.expirationSeconds` approved.
    pub max_expiration: Duration,
}

/// What to do with one CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve: every rule holds for satellite node `node`.
    Approve {
        /// The node name.
        node: String,
    },
    /// Deny with a `Denied` condition carrying `reason` and `message`.
    Deny {
        /// The condition reason.
        reason: DenyReason,
        /// Every rule that failed, `; `-separated.
        message: String,
    },
    /// Leave the CSR alone.
    Skip(Skip),
}

/// Why a CSR is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Another signer's CSR.
    OtherSigner,
    /// Already approved, denied or failed (by us or anyone).
    Decided,
    /// Names no satellite node: EKS (or another approver) decides it.
    NotSatellite,
    /// Names node `0`, which is not registered yet; looked at again later.
    NodeNotRegistered(String),
}

/// The `reason` of a `Denied` condition: the first rule that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `spec.request` is not a valid, self-signed PKCS#10 request.
    InvalidRequest,
    /// The subject is not `O=system:nodes, CN=system:node:<n>`.
    InvalidSubject,
    /// The usages are not one of the kubelet-serving sets.
    InvalidUsages,
    /// The requester is not the node the certificate names.
    RequesterMismatch,
    /// The CN names a node that is not a satellite node.
    NotSatelliteNode,
    /// An email, URI or other SAN kind, or no SAN at all.
    InvalidSubjectAltNames,
    /// A DNS SAN other than the node's name (or a cluster-internal name).
    DnsNameMismatch,
    /// An IP SAN that is not the node's own address (or is a service address).
    IpAddressMismatch,
    /// `expirationSeconds` is above the approver's cap.
    ExpirationTooLong,
}

impl DenyReason {
    /// The CamelCase condition reason (`SatelliteIpAddressMismatch`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidRequest => "SatelliteInvalidRequest",
            DenyReason::InvalidSubject => "SatelliteInvalidSubject",
            DenyReason::InvalidUsages => "SatelliteInvalidUsages",
            DenyReason::RequesterMismatch => "SatelliteRequesterMismatch",
            DenyReason::NotSatelliteNode => "SatelliteNotSatelliteNode",
            DenyReason::InvalidSubjectAltNames => "SatelliteInvalidSubjectAltNames",
            DenyReason::DnsNameMismatch => "SatelliteDnsNameMismatch",
            DenyReason::IpAddressMismatch => "SatelliteIpAddressMismatch",
            DenyReason::ExpirationTooLong => "SatelliteExpirationTooLong",
        }
    }
}

/// Whether `node` is a satellite node: the Fargate compute-type label, the agent's version
/// label, and a name that encodes an IPv4 address.
pub fn is_satellite(node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(COMPUTE_TYPE_LABEL.0) == Some(COMPUTE_TYPE_LABEL.1)
        && label(AGENT_VERSION_LABEL).is_some_and(|v| !v.is_empty())
        && node
            .metadata
            .name
            .as_deref()
            .and_then(node_ip_from_name)
            .is_some()
}

/// Whether the CSR has a terminal condition (Approved, Denied or Failed) or a certificate.
pub fn is_decided(csr: &CertificateSigningRequest) -> bool {
    csr.status.as_ref().is_some_and(|s| {
        s.certificate.is_some()
            || s.conditions.iter().flatten().any(|c| {
                matches!(c.type_.as_str(), "Approved" | "Denied" | "Failed") && c.status == "True"
            })
    })
}

/// Why `csr` is left alone before any Node is looked at: another signer's, or already
/// decided. `None`: [`decide`] needs the Nodes of [`named_nodes`].
pub fn early_skip(csr: &CertificateSigningRequest) -> Option<Skip> {
    if csr.spec.signer_name != KUBELET_SERVING_SIGNER {
        Some(Skip::OtherSigner)
    } else if is_decided(csr) {
        Some(Skip::Decided)
    } else {
        None
    }
}

/// The node names a CSR concerns: its requester's (`system:node:<n>`) and its CN's, when they
/// have that form. The caller looks these Nodes up for [`decide`].
pub fn named_nodes(csr: &CertificateSigningRequest) -> BTreeSet<String> {
    node_names(
        csr,
        ParsedRequest::from_pem(&csr.spec.request.0).ok().as_ref(),
    )
}

fn node_names(
    csr: &CertificateSigningRequest,
    request: Option<&ParsedRequest>,
) -> BTreeSet<String> {
    let username = csr.spec.username.as_deref().into_iter();
    let cns = request
        .into_iter()
        .flat_map(|r| r.common_names.iter().map(String::as_str));
    username
        .chain(cns)
        .filter_map(|n| n.strip_prefix(NODE_USER_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Judges `csr`; `nodes` holds the registered Nodes among [`named_nodes`] (absent: not
/// found).
pub fn decide(
    csr: &CertificateSigningRequest,
    nodes: &BTreeMap<String, Node>,
    policy: &Policy,
) -> Decision {
    if let Some(skip) = early_skip(csr) {
        return Decision::Skip(skip);
    }
    let parsed = ParsedRequest::from_pem(&csr.spec.request.0);
    let names = node_names(csr, parsed.as_ref().ok());
    let satellite: Vec<&Node> = names
        .iter()
        .filter_map(|n| nodes.get(n))
        .filter(|n| is_satellite(n))
        .collect();
    if satellite.is_empty() {
        // Not registered yet: perhaps a satellite node a moment from now.
        if let Some(missing) = names.iter().find(|n| !nodes.contains_key(*n)) {
            return Decision::Skip(Skip::NodeNotRegistered(missing.clone()));
        }
        return Decision::Skip(Skip::NotSatellite);
    }
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            return Decision::Deny {
                reason: DenyReason::InvalidRequest,
                message: e.to_string(),
            };
        }
    };
    let mut problems = Problems::default();
    let node_name = check_subject(&request, &mut problems);
    check_usages(csr, &mut problems);
    check_requester(csr, node_name, &mut problems);
    let node = node_name.and_then(|n| nodes.get(n));
    match (node_name, node) {
        (Some(n), Some(node)) if is_satellite(node) => {
            check_names(&request, n, node, policy, &mut problems)
        }
        (Some(n), _) => problems.push(
            DenyReason::NotSatelliteNode,
            format!("the CN names node {n:?}, which is not a registered satellite node"),
        ),
        (None, _) => {}
    }
    if let Some(seconds) = csr.spec.expiration_seconds {
        let cap = policy.max_expiration.as_secs();
        if u64::try_from(seconds).map_or(true, |s| s > cap) {
            problems.push(
                DenyReason::ExpirationTooLong,
                format!("expirationSeconds {seconds} is above the approver's cap of {cap} s"),
            );
        }
    }
    match problems.first {
        None => Decision::Approve {
            node: node_name.unwrap_or_default().to_owned(),
        },
        Some(reason) => Decision::Deny {
            reason,
            message: problems.messages.join("; "),
        },
    }
}

/// Every failed rule, in order; the first one's reason goes on the condition.
#[derive(Default)]
struct Problems {
    first: Option<DenyReason>,
    messages: Vec<String>,
}

impl Problems {
    fn push(&mut self, reason: DenyReason, message: String) {
        self.first.get_or_insert(reason);
        self.messages.push(message);
    }
}

/// Checks O and CN; returns `<n>` of a well-formed CN.
fn check_subject<'r>(request: &'r ParsedRequest, problems: &mut Problems) -> Option<&'r str> {
    if request.organizations != [NODES_GROUP] {
        problems.push(
            DenyReason::InvalidSubject,
            format!(
                "subject O is {:?}, not exactly [{NODES_GROUP:?}]",
                request.organizations
            ),
        );
    }
    match request.common_names.as_slice() {
        [cn] => match cn.strip_prefix(NODE_USER_PREFIX) {
            Some(n) if !n.is_empty() => return Some(n),
            _ => problems.push(
                DenyReason::InvalidSubject,
                format!("subject CN {cn:?} is not {NODE_USER_PREFIX}<node name>"),
            ),
        },
        cns => problems.push(
            DenyReason::InvalidSubject,
            format!("subject has {} CNs ({cns:?}), not one", cns.len()),
        ),
    }
    None
}

fn check_usages(csr: &CertificateSigningRequest, problems: &mut Problems) {
    let usages: BTreeSet<&str> = csr
        .spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let allowed = ALLOWED_USAGES
        .iter()
        .any(|set| usages == set.iter().copied().collect::<BTreeSet<_>>());
    if !allowed {
        problems.push(
            DenyReason::InvalidUsages,
            format!(
                "usages {usages:?} are not {:?} or {:?}",
                ALLOWED_USAGES[0], ALLOWED_USAGES[1]
            ),
        );
    }
}

fn check_requester(
    csr: &CertificateSigningRequest,
    node_name: Option<&str>,
    problems: &mut Problems,
) {
    let username = csr.spec.username.as_deref().unwrap_or_default();
    if let Some(n) = node_name
        && username != format!("{NODE_USER_PREFIX}{n}")
    {
        problems.push(
            DenyReason::RequesterMismatch,
            format!("requested by {username:?}, not by the node {NODE_USER_PREFIX}{n} itself"),
        );
    }
    if !csr.spec.groups.iter().flatten().any(|g| g == NODES_GROUP) {
        problems.push(
            DenyReason::RequesterMismatch,
            format!("requester {username:?} is not in group {NODES_GROUP}"),
        );
    }
}

/// The SAN rules against satellite node `n` (`node`).
fn check_names(
    request: &ParsedRequest,
    n: &str,
    node: &Node,
    policy: &Policy,
    problems: &mut Problems,
) {
    for (kind, names) in [
        ("email", &request.email_addresses),
        ("URI", &request.uris),
        ("other", &request.other_names),
    ] {
        if !names.is_empty() {
            problems.push(
                DenyReason::InvalidSubjectAltNames,
                format!("{kind} SANs {names:?} are not allowed in a kubelet serving certificate"),
            );
        }
    }
    if request.dns_names.is_empty() && request.ip_addresses.is_empty() {
        problems.push(
            DenyReason::InvalidSubjectAltNames,
            "no DNS or IP SAN: a serving certificate names the node".into(),
        );
    }
    let domain = policy.cluster_domain.trim_matches('.').to_ascii_lowercase();
    for dns in &request.dns_names {
        let lower = dns.to_ascii_lowercase();
        let internal = lower == "kubernetes"
            || lower.starts_with("kubernetes.")
            || lower.ends_with(".svc")
            || lower.contains(".svc.")
            || (!domain.is_empty() && (lower == domain || lower.ends_with(&format!(".{domain}"))));
        if internal {
            problems.push(
                DenyReason::DnsNameMismatch,
                format!("DNS SAN {dns:?} is a cluster-internal name"),
            );
        } else if dns != n {
            problems.push(
                DenyReason::DnsNameMismatch,
                format!("DNS SAN {dns:?} is not the node's name {n:?}"),
            );
        }
    }
    let named_ip = node_ip_from_name(n).map(IpAddr::V4);
    let addresses: BTreeSet<IpAddr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| a.address.parse().ok())
        .collect();
    for ip in &request.ip_addresses {
        if let Some(cidr) = policy.service_cidrs.iter().find(|c| c.contains(ip)) {
            problems.push(
                DenyReason::IpAddressMismatch,
                format!("IP SAN {ip} is in the service CIDR {cidr}"),
            );
        } else if Some(*ip) != named_ip {
            problems.push(
                DenyReason::IpAddressMismatch,
                format!(
                    "IP SAN {ip} is not the address the node's name encodes ({})",
                    named_ip.map_or("none".into(), |a| a.to_string())
                ),
            );
        } else if !addresses.contains(ip) {
            problems.push(
                DenyReason::IpAddressMismatch,
                format!("IP SAN {ip} is not in the Node's status.addresses {addresses:?}"),
            );
        }
    }
}
