//! The sandbox's PKI, generated with `rcgen` (ECDSA P-256): a cluster CA (also the signer of
//! kube-controller-manager's CSR controllers), kube-apiserver's serving certificate, its client
//! certificate for the kubelet API (as EKS's API server presents one), the service-account
//! signing key and the static tokens. Files under `<work dir>/pki/`; private
//! keys and tokens 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::write_atomic;

/// The user of kube-apiserver's kubelet client certificate (kubeadm's name), bound to the
/// built-in ClusterRole `system:kubelet-api-admin` when the sandbox starts.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The serving-CSR approver's user (a static token, no groups: only the RBAC that
/// `satellite-agent admin approver-rbac` prints authorises it).
pub const APPROVER_USER: &str = "satellite:csr-approver";

/// A PKCS#10 certificate request (RFC 2986) for subject `O=orgs…, CN=cn` with `sans`, signed
/// with a fresh ECDSA P-256 key: its DER and PEM. What kubelet files for its serving
/// certificate, or any forgery of it, for the approver's tests.
pub fn certificate_request(cn: &str, orgs: &[&str], sans: Vec<SanType>) -> (Vec<u8>, String) {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for org in orgs {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    let key = KeyPair::generate().expect("an ECDSA P-256 key");
    let csr = params
        .serialize_request(&key)
        .expect("a request of valid parameters");
    let pem = csr.pem().expect("PEM of a request");
    (csr.der().to_vec(), pem)
}

/// Paths of the generated material.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// CA private key (PKCS#8 PEM, 0600).
    pub ca_key: PathBuf,
    /// kube-apiserver serving certificate (PEM).
    pub apiserver_cert: PathBuf,
    /// Its key (0600).
    pub apiserver_key: PathBuf,
    /// kube-apiserver's client certificate for kubelets (`--kubelet-client-certificate`):
    /// user [`KUBELET_CLIENT_USER`], no group, so only RBAC authorises it on the kubelet API.
    pub kubelet_client_cert: PathBuf,
    /// Its key (0600).
    pub kubelet_client_key: PathBuf,
    /// Service-account token signing key (0600).
    pub sa_key: PathBuf,
    /// Its public key.
    pub sa_pub: PathBuf,
    /// kube-apiserver `--token-auth-file` (CSV, 0600).
    pub token_file: PathBuf,
    /// The admin (`system:masters`) bearer token.
    pub admin_token: String,
    /// kube-controller-manager's bearer token (user `system:kube-controller-manager`).
    pub controller_manager_token: String,
    /// The CSR approver's bearer token (user [`APPROVER_USER`]).
    pub approver_token: String,
}

/// Generates a fresh PKI under `<work_dir>/pki`, replacing any previous one.
///
/// `apiserver_ips` and `apiserver_dns` become the serving certificate's SANs.
pub fn generate(work_dir: &Path, apiserver_ips: &[IpAddr], apiserver_dns: &[&str]) -> Result<Pki> {
    let dir = work_dir.join("pki");
    let now = OffsetDateTime::now_utc();
    let file = |name: &str| dir.join(name);

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("satellite-sandbox-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(3650);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().context("generating the apiserver key")?;
    let mut server = CertificateParams::default();
    server.distinguished_name = name("kube-apiserver");
    server.subject_alt_names = apiserver_dns
        .iter()
        .map(|d| Ok(SanType::DnsName((*d).try_into()?)))
        .collect::<Result<Vec<_>, rcgen::Error>>()
        .context("apiserver DNS SANs")?;
    server
        .subject_alt_names
        .extend(apiserver_ips.iter().map(|ip| SanType::IpAddress(*ip)));
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::hours(1);
    server.not_after = now + Duration::days(365);
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the apiserver certificate")?;

    let client_key = KeyPair::generate().context("generating the kubelet client key")?;
    let mut client = CertificateParams::default();
    client.distinguished_name = name(KUBELET_CLIENT_USER);
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.not_before = now - Duration::hours(1);
    client.not_after = now + Duration::days(365);
    let client_cert = client
        .signed_by(&client_key, &issuer)
        .context("signing the kubelet client certificate")?;

    let sa_key = KeyPair::generate().context("generating the service-account key")?;

    let pki = Pki {
        ca_cert: file("ca.crt"),
        ca_key: file("ca.key"),
        apiserver_cert: file("apiserver.crt"),
        apiserver_key: file("apiserver.key"),
        kubelet_client_cert: file("apiserver-kubelet-client.crt"),
        kubelet_client_key: file("apiserver-kubelet-client.key"),
        sa_key: file("sa.key"),
        sa_pub: file("sa.pub"),
        token_file: file("tokens.csv"),
        admin_token: super::random_hex(32)?,
        controller_manager_token: super::random_hex(32)?,
        approver_token: super::random_hex(32)?,
    };
    write_atomic(&pki.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    write_atomic(&pki.ca_key, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&pki.apiserver_cert, server_cert.pem().as_bytes(), 0o644)?;
    write_atomic(
        &pki.apiserver_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(
        &pki.kubelet_client_cert,
        client_cert.pem().as_bytes(),
        0o644,
    )?;
    write_atomic(
        &pki.kubelet_client_key,
        client_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&pki.sa_key, sa_key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&pki.sa_pub, sa_key.public_key_pem().as_bytes(), 0o644)?;
    // token,user,uid,"groups"
    let tokens = format!(
        "{},sandbox-admin,sandbox-admin,\"system:masters\"\n{},system:kube-controller-manager,system:kube-controller-manager\n{},{APPROVER_USER},{APPROVER_USER}\n",
        pki.admin_token, pki.controller_manager_token, pki.approver_token
    );
    write_atomic(&pki.token_file, tokens.as_bytes(), 0o600)?;
    Ok(pki)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
