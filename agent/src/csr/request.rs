//! The PKCS#10 request inside a CSR's `spec.request`, parsed into what the approver judges:
//! subject CN and O, and the requested subjectAltNames by kind.
//!
//! Source: RFC 2986 (PKCS#10), RFC 5280 §4.2.1.6 (subjectAltName), and the Kubernetes CSR API
//! (`spec.request` is a PEM `CERTIFICATE REQUEST`).

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;

/// What a certificate request asks for. Only what the approver needs; every SAN kind the
/// request carries is kept, so none can slip through unjudged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedRequest {
    /// Every subject commonName value (a valid kubelet request has exactly one).
    pub common_names: Vec<String>,
    /// Every subject organization value.
    pub organizations: Vec<String>,
    /// dNSName SANs.
    pub dns_names: Vec<String>,
    /// iPAddress SANs (IPv4 and IPv6).
    pub ip_addresses: Vec<IpAddr>,
    /// rfc822Name SANs.
    pub email_addresses: Vec<String>,
    /// uniformResourceIdentifier SANs.
    pub uris: Vec<String>,
    /// Any other SAN kind (otherName, directoryName, …), as x509-parser prints it.
    pub other_names: Vec<String>,
}

/// Why `spec.request` is not a usable certificate request. The approver denies such a CSR
/// with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not one PEM block of type `CERTIFICATE REQUEST`.
    #[error("spec.request is not a PEM CERTIFICATE REQUEST: {0}")]
    Pem(String),
    /// The DER inside is not a PKCS#10 request.
    #[error("spec.request is not a PKCS#10 certificate request: {0}")]
    Der(String),
    /// The request's self-signature does not verify with its own public key.
    #[error("the request's signature does not verify with its public key: {0}")]
    Signature(String),
    /// A subject attribute or SAN is not valid text.
    #[error("the request's {0} is not valid UTF-8 text")]
    Text(&'static str),
}

impl ParsedRequest {
    /// Parses a PEM `CERTIFICATE REQUEST` (the bytes of a CSR's `spec.request`) and verifies
    /// its self-signature (proof of possession of the key).
    ///
    /// Errors: [`RequestError`] saying which layer is wrong.
    pub fn from_pem(pem: &[u8]) -> Result<ParsedRequest, RequestError> {
        let (rest, pem) =
            x509_parser::pem::parse_x509_pem(pem).map_err(|e| RequestError::Pem(e.to_string()))?;
        if pem.label != "CERTIFICATE REQUEST" {
            return Err(RequestError::Pem(format!(
                "the block is {:?}, not CERTIFICATE REQUEST",
                pem.label
            )));
        }
        if !rest.iter().all(u8::is_ascii_whitespace) {
            return Err(RequestError::Pem("more than one PEM block".into()));
        }
        let (trailing, request) = X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| RequestError::Der(e.to_string()))?;
        if !trailing.is_empty() {
            return Err(RequestError::Der(format!(
                "{} bytes after the request",
                trailing.len()
            )));
        }
        request
            .verify_signature()
            .map_err(|e| RequestError::Signature(e.to_string()))?;
        let info = &request.certification_request_info;
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>, what| {
            attr.as_str()
                .map(str::to_owned)
                .map_err(|_| RequestError::Text(what))
        };
        let mut parsed = ParsedRequest {
            common_names: info
                .subject
                .iter_common_name()
                .map(|a| text(a, "commonName"))
                .collect::<Result<_, _>>()?,
            organizations: info
                .subject
                .iter_organization()
                .map(|a| text(a, "organization"))
                .collect::<Result<_, _>>()?,
            ..ParsedRequest::default()
        };
        for extension in request.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                for name in &san.general_names {
                    parsed.push(name)?;
                }
            }
        }
        Ok(parsed)
    }

    fn push(&mut self, name: &GeneralName<'_>) -> Result<(), RequestError> {
        match name {
            GeneralName::DNSName(dns) => self.dns_names.push((*dns).to_owned()),
            GeneralName::RFC822Name(email) => self.email_addresses.push((*email).to_owned()),
            GeneralName::URI(uri) => self.uris.push((*uri).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => self.ip_addresses.push(IpAddr::from(
                    <[u8; 4]>::try_from(*bytes).map_err(|_| RequestError::Text("IP SAN"))?,
                )),
                16 => self.ip_addresses.push(IpAddr::from(
                    <[u8; 16]>::try_from(*bytes).map_err(|_| RequestError::Text("IP SAN"))?,
                )),
                n => self
                    .other_names
                    .push(format!("an iPAddress SAN of {n} bytes")),
            },
            other => self.other_names.push(other.to_string()),
        }
        Ok(())
    }
}
