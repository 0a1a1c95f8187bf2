//! The sandbox's network: the mission's address picture in three network namespaces, so the
//! path the product exists for (API server → N → proxy → internet → the GPU cloud's 1:1 NAT →
//! tc NAT on the host → kubelet) carries real kubelet traffic.
//!
//! ```text
//!  VPC  <ns>                          internet  <ns>-inet                GPU host  <ns>-host
//!  lo    198.18.0.1   API server      vpc0 198.18.130.254/24             eth0 198.18.192.10/24 (S)
//!        198.18.0.10  N (the proxy)   gpu0 198.18.192.1/24   MTU 1280         MTU 1280
//!  wan0  198.18.130.1 public          nftables: P 198.18.128.10 ↔ S      lo   N /32 (the agent's
//!        endpoints (API server,            (the provider's 1:1 NAT)           datapath puts it there)
//!        STS/EC2 = moto)                                                  default via 198.18.192.1
//!        198.18.130.5 the proxy's
//!        public IP
//!  198.18.128.0/24 via 198.18.130.254 src 198.18.130.5
//! ```
//!
//! What each side can reach, as on the real thing:
//! - the host reaches the public endpoints (API server, STS, EC2) as an internet client: its
//!   packets leave with S, the NAT rewrites S → P;
//! - the VPC reaches the host only at P (the proxy dials P from its public IP, the datapath's
//!   peer); S and N on the host are not routed from the VPC, and the VPC's private addresses
//!   (198.18.0.0/24) are not routed from the internet;
//! - the internet namespace is "anyone else on the internet": it reaches P, where the host's
//!   datapath refuses the protected ports to anyone but the peers.
//!
//! Every address is in 198.18.0.0/15 and exists only inside these namespaces.

use anyhow::{Result, bail};

use super::{APISERVER_IP, NODE_IP, netns};

/// The VPC side of the link to the internet (in the VPC namespace).
pub const VPC_UPLINK: &str = "wan0";
/// The host's uplink (in the host namespace): the interface the datapath's tc programs sit on.
pub const HOST_UPLINK: &str = "eth0";
/// The public endpoints in the VPC namespace: the API server's public endpoint (EKS's
/// `endpointPublicAccess`) and AWS's (moto).
pub const PUBLIC_ENDPOINT_IP: &str = "198.18.130.1";
/// The proxy's public IP (an Elastic IP): the source of its connections to hosts, so the
/// datapath's peer.
pub const PROXY_PUBLIC_IP: &str = "198.18.130.5";
/// The internet router's address toward the VPC.
const ROUTER_VPC_IP: &str = "198.18.130.254";
/// The prefix of the VPC's side (public endpoints, the proxy's public IP).
const VPC_PUBLIC_NET: &str = "198.18.130.0/24";
/// The GPU cloud's public addresses (routed to the router).
const CLOUD_PUBLIC_NET: &str = "198.18.128.0/24";
/// The host's public address P (the provider's 1:1 NAT maps it to S).
pub const HOST_PUBLIC_IP: &str = "198.18.128.10";
/// The host's own address S on its NIC (the provider's private network).
pub const HOST_PRIVATE_IP: &str = "198.18.192.10";
/// The provider's gateway on that network.
const CLOUD_GATEWAY_IP: &str = "198.18.192.1";
/// The MTU of the provider's network (both ends of the router ↔ host hop): IPv6's minimum, as
/// tunnelled or overlay uplinks have.
pub const CLOUD_MTU: u32 = 1280;
/// The router's nftables table (the 1:1 NAT).
const NAT_TABLE: &str = "satellite-sandbox-nat";

/// The namespace of the GPU host for VPC namespace `vpc`: containerd, kubelet, the agent.
pub fn host_netns(vpc: &str) -> String {
    format!("{vpc}-host")
}

/// The namespace of the internet (and the provider's NAT) for VPC namespace `vpc`.
pub fn internet_netns(vpc: &str) -> String {
    format!("{vpc}-inet")
}

/// Creates the three namespaces, their links, addresses, routes and the provider's 1:1 NAT.
/// Expects none of them to exist (`down` runs first); fails with the command that failed.
pub fn create(vpc: &str) -> Result<()> {
    let host = host_netns(vpc);
    let inet = internet_netns(vpc);
    for ns in [vpc, inet.as_str(), host.as_str()] {
        netns::create(ns, &[])?;
    }
    // The VPC: the API server's private address and N on lo; the public side on the uplink.
    let ip = |ns: &str, args: &[&str]| {
        let mut all = vec!["-n", ns];
        all.extend(args);
        netns::ip(&all).map(drop)
    };
    for addr in [APISERVER_IP, NODE_IP] {
        ip(vpc, &["addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
    }
    // Created inside the namespaces: the names never meet another sandbox's in the root one.
    ip(
        vpc,
        &[
            "link", "add", VPC_UPLINK, "type", "veth", "peer", "name", "vpc0", "netns", &inet,
        ],
    )?;
    let mtu = CLOUD_MTU.to_string();
    ip(
        &inet,
        &[
            "link",
            "add",
            "gpu0",
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            HOST_UPLINK,
            "mtu",
            &mtu,
            "netns",
            &host,
        ],
    )?;
    for addr in [PUBLIC_ENDPOINT_IP, PROXY_PUBLIC_IP] {
        ip(
            vpc,
            &["addr", "add", &format!("{addr}/24"), "dev", VPC_UPLINK],
        )?;
    }
    ip(vpc, &["link", "set", VPC_UPLINK, "up"])?;
    ip(
        vpc,
        &[
            "route",
            "add",
            CLOUD_PUBLIC_NET,
            "via",
            ROUTER_VPC_IP,
            "src",
            PROXY_PUBLIC_IP,
        ],
    )?;
    // The internet: a router between the VPC and the provider, doing the provider's NAT.
    ip(
        &inet,
        &["addr", "add", &format!("{ROUTER_VPC_IP}/24"), "dev", "vpc0"],
    )?;
    ip(
        &inet,
        &[
            "addr",
            "add",
            &format!("{CLOUD_GATEWAY_IP}/24"),
            "dev",
            "gpu0",
        ],
    )?;
    for dev in ["vpc0", "gpu0"] {
        ip(&inet, &["link", "set", dev, "up"])?;
    }
    // The provider's public prefix goes toward its hosts: the route lookup of the router's
    // own packets to P happens before their DNAT (forwarded ones are DNATed before it).
    ip(&inet, &["route", "add", CLOUD_PUBLIC_NET, "dev", "gpu0"])?;
    sysctl(&inet, "net.ipv4.ip_forward=1")?;
    nft(&inet, &nat_ruleset())?;
    // The GPU host: S on its NIC, everything else through the provider's gateway.
    ip(
        &host,
        &[
            "addr",
            "add",
            &format!("{HOST_PRIVATE_IP}/24"),
            "dev",
            HOST_UPLINK,
        ],
    )?;
    ip(&host, &["link", "set", HOST_UPLINK, "up"])?;
    ip(&host, &["route", "add", "default", "via", CLOUD_GATEWAY_IP])?;
    Ok(())
}

/// Deletes the three namespaces (with their links, routes and the NAT table). `Ok` for those
/// that do not exist.
pub fn delete(vpc: &str) -> Result<()> {
    let mut errors = Vec::new();
    for ns in [host_netns(vpc), internet_netns(vpc), vpc.to_owned()] {
        if let Err(e) = netns::delete(&ns) {
            errors.push(format!("{ns}: {e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("deleting the sandbox's namespaces: {}", errors.join("; "));
    }
    Ok(())
}

/// The provider's 1:1 NAT (as Lambda Cloud's or any cloud's public IPs): P → S for what
/// arrives (also from the router itself), S → P for what leaves toward the internet.
/// Connection tracking undoes each for the replies.
fn nat_ruleset() -> String {
    format!(
        "table ip {NAT_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {HOST_PUBLIC_IP} dnat to {HOST_PRIVATE_IP}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {HOST_PUBLIC_IP} dnat to {HOST_PRIVATE_IP}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {HOST_PRIVATE_IP} ip daddr {VPC_PUBLIC_NET} snat to {HOST_PUBLIC_IP}
  }}
}}
"
    )
}

fn sysctl(ns: &str, setting: &str) -> Result<()> {
    netns::run(netns::command(ns, "sysctl").args(["-qw", setting])).map(drop)
}

/// `nft -f -` with `ruleset` inside `ns` (Debian `nftables`, which `cargo xtask sandbox
/// install` installs).
fn nft(ns: &str, ruleset: &str) -> Result<()> {
    netns::run_with_stdin(
        netns::command(ns, "nft").args(["-f", "-"]),
        ruleset.as_bytes(),
    )
    .map(drop)
}
