//! Addresses that must be unicast: the node IP, peers, the host address, proxy targets.

use std::net::{IpAddr, Ipv4Addr};

/// `ip` unless it is unspecified, loopback, multicast or broadcast; `what` names its role in
/// the message (`"a peer"`, `"the node IP"`).
///
/// Errors: a message saying why `ip` cannot be `what`.
pub fn unicast_v4(what: &str, ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        Err(format!(
            "{ip} cannot be {what}: it must be a unicast, non-loopback address"
        ))
    } else {
        Ok(ip)
    }
}

/// Parses a unicast IPv4 or IPv6 address (not unspecified, multicast or broadcast; loopback
/// is allowed: proxy tests target it). `example` is shown in the message.
///
/// Errors: a message with the bad text and `example`.
pub fn unicast(raw: &str, example: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not an IP address; write e.g. {example}"))?;
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(format!(
            "{ip} is not a unicast address; write one address, e.g. {example}"
        ));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused() {
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255"] {
            assert!(unicast_v4("x", bad.parse().unwrap()).is_err(), "{bad}");
        }
        assert!(unicast_v4("x", Ipv4Addr::new(198, 18, 0, 1)).is_ok());
        assert!(unicast("::", "e.g.").is_err());
        assert!(unicast("ff02::1", "e.g.").is_err());
        assert!(unicast("nope", "e.g.").unwrap_err().contains("e.g."));
        assert!(unicast(" 198.18.0.1 ", "e.g.").is_ok());
    }
}
