//! The rtnetlink operations the plugin needs (links, IPv4 addresses and routes), each one
//! request on a [`NetlinkSocket`]. Errors are the kernel's errno; callers add context.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::socket::NetlinkSocket;

/// An rtnetlink socket in one network namespace.
pub struct Rtnl(NetlinkSocket);

/// What the plugin reads back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network address.
    pub dst: Ipv4Addr,
    /// Destination prefix length (0 for the default route).
    pub prefix: u8,
    /// Output interface.
    pub oif: u32,
    /// Next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Preferred source address, if any.
    pub src: Option<Ipv4Addr>,
    /// `RT_SCOPE_LINK` (directly reachable) rather than universe.
    pub link_scope: bool,
}

impl Rtnl {
    /// An rtnetlink socket in the calling thread's namespace.
    pub fn open() -> io::Result<Self> {
        NetlinkSocket::open(NETLINK_ROUTE).map(Self)
    }

    /// An rtnetlink socket in namespace `netns`.
    pub fn open_in(netns: BorrowedFd<'_>) -> io::Result<Self> {
        NetlinkSocket::open_in(NETLINK_ROUTE, netns).map(Self)
    }

    /// The link called `name`, or `None` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.0.get(RouteNetlinkMessage::GetLink(msg)) {
            Ok(RouteNetlinkMessage::NewLink(link)) => Ok(Some(link_of(&link))),
            Ok(other) => Err(io::Error::other(format!(
                "unexpected answer to RTM_GETLINK: {other:?}"
            ))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link with ifindex `index`, or `None`.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.0.get(RouteNetlinkMessage::GetLink(msg)) {
            Ok(RouteNetlinkMessage::NewLink(link)) => Ok(Some(link_of(&link))),
            Ok(other) => Err(io::Error::other(format!(
                "unexpected answer to RTM_GETLINK: {other:?}"
            ))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair in one request: `host` here and `peer` directly inside `peer_netns`
    /// (so no temporary name ever exists), both with `mtu`; `host` is up, `peer` is brought up
    /// with [`Rtnl::set_up`] (the kernel refuses to open a veth end before its peer is linked:
    /// `veth_open` returns `ENOTCONN`).
    ///
    /// Errors: `EEXIST` when either name is taken.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        mtu: u32,
        peer_netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = vec![
            LinkAttribute::IfName(peer.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(peer_netns.as_raw_fd()),
        ];
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName(host.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        self.0
            .request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Sets link `index` administratively up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.0.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Deletes the link called `name`; `Ok(false)` when it does not exist. Deleting one end of
    /// a veth pair deletes both, with their addresses and routes.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.0.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `addr/prefix` to link `index` (`EEXIST` when already there).
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes = vec![
            AddressAttribute::Local(addr.into()),
            AddressAttribute::Address(addr.into()),
        ];
        self.0.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The IPv4 addresses (address, prefix length) of link `index`.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let all = self.0.dump(RouteNetlinkMessage::GetAddress(msg))?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => {
                            Some((*ip, a.header.prefix_len))
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) `route` in the main table.
    pub fn add_route(&mut self, route: &Route) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = route.prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = if route.link_scope {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        msg.header.kind = RouteType::Unicast;
        if route.prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(route.dst)));
        }
        msg.attributes.push(RouteAttribute::Oif(route.oif));
        if let Some(gw) = route.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(src) = route.src {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
        }
        self.0.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Every IPv4 unicast route of the main table.
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let all = self.0.dump(RouteNetlinkMessage::GetRoute(msg))?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table == RouteHeader::RT_TABLE_MAIN
                        && r.header.kind == RouteType::Unicast =>
                {
                    Some(route_of(&r))
                }
                _ => None,
            })
            .collect())
    }
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(mac) => {
                link.mac = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
            _ => {}
        }
    }
    link
}

fn route_of(msg: &RouteMessage) -> Route {
    let mut route = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: msg.header.destination_prefix_length,
        oif: 0,
        gateway: None,
        src: None,
        link_scope: msg.header.scope == RouteScope::Link,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => route.src = Some(*ip),
            RouteAttribute::Oif(oif) => route.oif = *oif,
            RouteAttribute::MultiPath(hops) => {
                if let Some(hop) = hops.first() {
                    route.oif = hop.interface_index;
                }
            }
            _ => {}
        }
    }
    route
}
