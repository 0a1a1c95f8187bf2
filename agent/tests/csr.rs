//! The serving-CSR approver's judgement ([`satellite_agent::csr::decide`]) on real PKCS#10
//! requests built with rcgen, the way kubelet builds its own (CN `system:node:<n>`, O
//! `system:nodes`, DNS + IP SANs), and on forged ones.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use kube::api::ObjectMeta;
use rcgen::SanType;
use satellite_agent::config::node_ip_from_name;
use satellite_agent::csr::decide::{
    Decision, DenyReason, KUBELET_SERVING_SIGNER, Policy, Skip, decide,
};
use satellite_agent::csr::request::{ParsedRequest, RequestError};

const NODE: &str = "fargate-ip-198-18-0-10.us-east-1.compute.internal";
const NODE_IP: &str = "198.18.0.10";
const OTHER: &str = "fargate-ip-198-18-0-11.us-east-1.compute.internal";
const SERVING: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

fn policy() -> Policy {
    Policy {
        service_cidrs: vec!["10.100.0.0/16".parse().unwrap()],
        cluster_domain: "cluster.local".into(),
        max_expiration: Duration::from_secs(86_400 * 365),
    }
}

/// A PEM request for `cn` / `orgs` with `sans`.
fn request(cn: &str, orgs: &[&str], sans: Vec<SanType>) -> String {
    satellite_tests::sandbox::pki::certificate_request(cn, orgs, sans).1
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn ip(addr: &str) -> SanType {
    SanType::IpAddress(addr.parse().unwrap())
}

/// kubelet's own request for `NODE`.
fn kubelet_request() -> String {
    request(
        &format!("system:node:{NODE}"),
        &["system:nodes"],
        vec![dns(NODE), ip(NODE_IP)],
    )
}

fn csr(pem: &str, username: &str, usages: &[&str]) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some("csr-test".into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.as_bytes().to_vec()),
            signer_name: KUBELET_SERVING_SIGNER.into(),
            usages: Some(usages.iter().map(|u| (*u).to_owned()).collect()),
            username: Some(username.into()),
            groups: Some(vec!["system:nodes".into(), "system:authenticated".into()]),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    }
}

fn own_csr(pem: &str) -> CertificateSigningRequest {
    csr(pem, &format!("system:node:{NODE}"), &SERVING)
}

fn satellite_node(name: &str, addresses: &[&str]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("eks.amazonaws.com/compute-type".into(), "fargate".into()),
                ("satellite.dev/agent-version".into(), "0.1.0".into()),
            ])),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|a| NodeAddress {
                        type_: "InternalIP".into(),
                        address: (*a).into(),
                    })
                    .chain([NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    }])
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

fn nodes() -> BTreeMap<String, Node> {
    BTreeMap::from([
        (NODE.to_owned(), satellite_node(NODE, &[NODE_IP])),
        (OTHER.to_owned(), satellite_node(OTHER, &["198.18.0.11"])),
    ])
}

fn denied(decision: &Decision) -> (DenyReason, &str) {
    match decision {
        Decision::Deny { reason, message } => (*reason, message.as_str()),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn approves_kubelets_own_request_with_either_usage_set() {
    let pem = kubelet_request();
    assert_eq!(
        decide(&own_csr(&pem), &nodes(), &policy()),
        Decision::Approve { node: NODE.into() }
    );
    let ecdsa = csr(
        &pem,
        &format!("system:node:{NODE}"),
        &["digital signature", "server auth"],
    );
    assert!(matches!(
        decide(&ecdsa, &nodes(), &policy()),
        Decision::Approve { .. }
    ));
    // Only the IP, or only the name, is a valid serving certificate too.
    let ip_only = request(
        &format!("system:node:{NODE}"),
        &["system:nodes"],
        vec![ip(NODE_IP)],
    );
    assert!(matches!(
        decide(&own_csr(&ip_only), &nodes(), &policy()),
        Decision::Approve { .. }
    ));
}

#[test]
fn denies_each_forgery_with_its_reason() {
    let cn = format!("system:node:{NODE}");
    let own = |sans| own_csr(&request(&cn, &["system:nodes"], sans));
    let cases: Vec<(&str, CertificateSigningRequest, DenyReason, &str)> = vec![
        (
            "another node's name",
            own_csr(&request(
                &format!("system:node:{OTHER}"),
                &["system:nodes"],
                vec![dns(OTHER), ip("198.18.0.11")],
            )),
            DenyReason::RequesterMismatch,
            "not by the node",
        ),
        (
            "an extra IP SAN",
            own(vec![dns(NODE), ip(NODE_IP), ip("198.18.0.99")]),
            DenyReason::IpAddressMismatch,
            "198.18.0.99",
        ),
        (
            "an extra DNS SAN",
            own(vec![dns(NODE), dns("evil.example.com"), ip(NODE_IP)]),
            DenyReason::DnsNameMismatch,
            "evil.example.com",
        ),
        (
            "a service-CIDR IP",
            own(vec![dns(NODE), ip(NODE_IP), ip("10.100.0.1")]),
            DenyReason::IpAddressMismatch,
            "service CIDR",
        ),
        (
            "kubernetes.default.svc",
            own(vec![dns(NODE), dns("kubernetes.default.svc"), ip(NODE_IP)]),
            DenyReason::DnsNameMismatch,
            "cluster-internal",
        ),
        (
            "a cluster-domain name",
            own(vec![dns(NODE), dns("web.default.cluster.local")]),
            DenyReason::DnsNameMismatch,
            "cluster-internal",
        ),
        (
            "an email SAN",
            own(vec![
                dns(NODE),
                SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            ]),
            DenyReason::InvalidSubjectAltNames,
            "email",
        ),
        (
            "a URI SAN",
            own(vec![
                dns(NODE),
                SanType::URI("spiffe://cluster/ns/x".try_into().unwrap()),
            ]),
            DenyReason::InvalidSubjectAltNames,
            "URI",
        ),
        (
            "no SAN",
            own(vec![]),
            DenyReason::InvalidSubjectAltNames,
            "no DNS or IP SAN",
        ),
        (
            "O=system:masters",
            own_csr(&request(
                &cn,
                &["system:nodes", "system:masters"],
                vec![dns(NODE)],
            )),
            DenyReason::InvalidSubject,
            "system:masters",
        ),
        (
            "client auth usage",
            csr(
                &kubelet_request(),
                &cn,
                &["digital signature", "key encipherment", "client auth"],
            ),
            DenyReason::InvalidUsages,
            "client auth",
        ),
        (
            "server and client auth",
            csr(
                &kubelet_request(),
                &cn,
                &[
                    "digital signature",
                    "key encipherment",
                    "server auth",
                    "client auth",
                ],
            ),
            DenyReason::InvalidUsages,
            "client auth",
        ),
        (
            "a requester outside system:nodes",
            {
                let mut c = own_csr(&kubelet_request());
                c.spec.groups = Some(vec!["system:authenticated".into()]);
                c
            },
            DenyReason::RequesterMismatch,
            "not in group system:nodes",
        ),
        (
            "a long expiration",
            {
                let mut c = own_csr(&kubelet_request());
                c.spec.expiration_seconds = Some(86_400 * 400);
                c
            },
            DenyReason::ExpirationTooLong,
            "cap",
        ),
        (
            "an unparseable request",
            own_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgcmVxdWVzdA==\n-----END CERTIFICATE REQUEST-----\n",
            ),
            DenyReason::InvalidRequest,
            "PKCS#10",
        ),
    ];
    for (what, csr, reason, needle) in cases {
        let decision = decide(&csr, &nodes(), &policy());
        let (got, message) = denied(&decision);
        assert_eq!(got, reason, "{what}: {message}");
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
    }
    // An IP that is the one the name encodes, but that the Node does not report.
    let mut moved = nodes();
    moved.insert(NODE.into(), satellite_node(NODE, &["198.18.0.77"]));
    let decision = decide(&own(vec![dns(NODE), ip(NODE_IP)]), &moved, &policy());
    let (got, message) = denied(&decision);
    assert_eq!(got, DenyReason::IpAddressMismatch, "{message}");
    assert!(message.contains("status.addresses"), "{message}");
}

#[test]
fn a_tampered_request_fails_its_signature_check() {
    let pem = kubelet_request();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    // Flip a bit of the signature (the DER's last byte).
    *der.last_mut().unwrap() ^= 1;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    assert!(matches!(
        ParsedRequest::from_pem(tampered.as_bytes()),
        Err(RequestError::Signature(_))
    ));
    let (reason, _) = denied(&decide(&own_csr(&tampered), &nodes(), &policy()));
    assert_eq!(reason, DenyReason::InvalidRequest);
}

#[test]
fn parses_what_kubelet_asks_for() {
    let parsed = ParsedRequest::from_pem(kubelet_request().as_bytes()).unwrap();
    assert_eq!(parsed.common_names, [format!("system:node:{NODE}")]);
    assert_eq!(parsed.organizations, ["system:nodes"]);
    assert_eq!(parsed.dns_names, [NODE]);
    assert_eq!(parsed.ip_addresses, [NODE_IP.parse::<IpAddr>().unwrap()]);
    assert!(parsed.email_addresses.is_empty() && parsed.uris.is_empty());
    assert!(matches!(
        ParsedRequest::from_pem(b"not pem"),
        Err(RequestError::Pem(_))
    ));
}

#[test]
fn leaves_other_nodes_signers_and_decided_csrs_alone() {
    let pem = kubelet_request();
    // A Node without the satellite labels (a managed node group's, a Fargate pod's).
    let mut plain = satellite_node(NODE, &[NODE_IP]);
    plain.metadata.labels = Some(BTreeMap::from([(
        "eks.amazonaws.com/compute-type".into(),
        "fargate".into(),
    )]));
    let eks_nodes = BTreeMap::from([(NODE.to_owned(), plain)]);
    assert_eq!(
        decide(&own_csr(&pem), &eks_nodes, &policy()),
        Decision::Skip(Skip::NotSatellite)
    );
    assert_eq!(
        decide(&own_csr(&pem), &BTreeMap::new(), &policy()),
        Decision::Skip(Skip::NodeNotRegistered(NODE.into()))
    );
    let mut client = own_csr(&pem);
    client.spec.signer_name = "kubernetes.io/kube-apiserver-client-kubelet".into();
    assert_eq!(
        decide(&client, &nodes(), &policy()),
        Decision::Skip(Skip::OtherSigner)
    );
    let mut decided = own_csr(&pem);
    decided.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![CertificateSigningRequestCondition {
            type_: "Denied".into(),
            status: "True".into(),
            ..CertificateSigningRequestCondition::default()
        }]),
        certificate: None,
    });
    assert_eq!(
        decide(&decided, &nodes(), &policy()),
        Decision::Skip(Skip::Decided)
    );
    // A satellite node asking in the name of a node that is not one is denied, not skipped.
    let forged = csr(
        &request(
            "system:node:ip-10-0-0-5.ec2.internal",
            &["system:nodes"],
            vec![dns("ip-10-0-0-5.ec2.internal")],
        ),
        &format!("system:node:{NODE}"),
        &SERVING,
    );
    let (reason, _) = denied(&decide(&forged, &nodes(), &policy()));
    assert_eq!(reason, DenyReason::RequesterMismatch);
}

#[test]
fn node_names_encode_exactly_one_ip() {
    assert_eq!(
        node_ip_from_name(NODE),
        Some("198.18.0.10".parse().unwrap())
    );
    for bad in [
        "fargate-ip-198-18-0-010.us-east-1.compute.internal",
        "fargate-ip-198-18-0.us-east-1.compute.internal",
        "fargate-ip-198-18-0-10.compute.internal",
        "fargate-ip-198-18-0-10.us-east-1.compute.internal.evil",
        "ip-198-18-0-10.ec2.internal",
        "fargate-ip-198-18-0-256.us-east-1.compute.internal",
    ] {
        assert_eq!(node_ip_from_name(bad), None, "{bad}");
    }
}
