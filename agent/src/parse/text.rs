//! Text values of configuration files: https URLs, endpoint overrides, base64 PEM bundles,
//! absolute paths, IPv4 CIDRs.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ipnet::Ipv4Net;

/// An `https://host[:port]` URL, kept as written (a kubeconfig gets exactly this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl(String);

impl HttpsUrl {
    /// Parses `url`.
    ///
    /// Errors: not a URL, or not https with a host.
    pub fn new(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            return Err(format!("{url:?} must be an https://host[:port] URL"));
        }
        Ok(HttpsUrl(url.to_owned()))
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS endpoint override (`http[s]://host[:port]`, no path), kept as written, with its
/// parsed form (the rules of the credential plugin's `--sts-endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    text: String,
    url: url::Url,
}

impl Endpoint {
    /// Parses `text`.
    ///
    /// Errors: the credential plugin's message for a bad endpoint.
    pub fn new(text: &str) -> Result<Self, String> {
        let url =
            satellite_credential_plugin::input::parse_endpoint(text).map_err(|e| e.to_string())?;
        Ok(Endpoint {
            text: text.to_owned(),
            url,
        })
    }

    /// The endpoint as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Decodes base64 of a PEM certificate bundle (DescribeCluster's `certificateAuthority.data`,
/// nodeadm's `certificateAuthority`) into the PEM text.
///
/// Errors: not base64, or not a PEM certificate.
pub fn base64_pem(data: &str) -> Result<String, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            format!("not base64 ({e}); paste DescribeCluster's certificateAuthority.data")
        })?;
    match String::from_utf8(pem) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(pem),
        _ => Err("decodes to something other than a PEM certificate".into()),
    }
}

/// `path` if it is absolute.
///
/// Errors: `… must be an absolute path`.
pub fn absolute(path: &Path) -> Result<PathBuf, String> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Err(format!("{} must be an absolute path", path.display()))
    }
}

/// Parses an IPv4 network in CIDR form; host bits must be zero.
///
/// Errors: not an IPv4 CIDR, or host bits set (the message gives the network to write).
pub fn ipv4_net(cidr: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = cidr
        .parse()
        .map_err(|_| format!("{cidr:?} is not an IPv4 CIDR such as 10.100.0.0/16"))?;
    if net.addr() != net.network() {
        return Err(format!("{cidr} has host bits set; use {}", net.trunc()));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(ipv4_net("10.100.0.0/16").unwrap().prefix_len(), 16);
        assert!(
            ipv4_net("10.100.0.1/16")
                .unwrap_err()
                .contains("use 10.100.0.0/16")
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/64", "x/8"] {
            assert!(ipv4_net(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_pem() {
        assert!(HttpsUrl::new("https://a.example:6443").is_ok());
        assert!(HttpsUrl::new("http://a.example").is_err());
        assert_eq!(
            HttpsUrl::new("https://198.18.0.1:6443").unwrap().as_str(),
            "https://198.18.0.1:6443"
        );
        assert!(base64_pem("!!").is_err());
        assert!(base64_pem("aGVsbG8=").is_err());
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let data = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(base64_pem(&data).unwrap(), pem);
    }
}
