//! The rtnetlink requests the host datapath makes (links, IPv4 addresses, routes, tc
//! filters), over the `rtnetlink` crate. Every error is an [`io::Error`] carrying the kernel's
//! errno, so callers can tell `EEXIST`/`ENOENT` apart.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The main routing table (`RT_TABLE_MAIN`).
const RT_TABLE_MAIN: u32 = 254;

/// An rtnetlink connection in the calling task's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// An IPv4 address on a link.
#[derive(Debug, Clone)]
pub struct Address {
    /// The address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Whether it is a secondary address of its subnet (not the one the kernel picks as
    /// source).
    pub secondary: bool,
    message: AddressMessage,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone)]
pub struct Route {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Next hop, `None` for on-link routes.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index (0 when absent, e.g. multipath).
    pub oif: u32,
    /// `rtm_protocol`: who installed it.
    pub protocol: u8,
    message: RouteMessage,
}

impl Netlink {
    /// Opens a connection (its background task is spawned on the current tokio runtime).
    ///
    /// # Errors
    ///
    /// The socket error.
    pub fn open() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Wraps the handle of an existing connection (e.g. a multicast one).
    #[must_use]
    pub fn from_handle(handle: Handle) -> Self {
        Self { handle }
    }

    /// The index of link `name`, `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// Any netlink error but "no such device".
    pub async fn link_index(&self, name: &str) -> io::Result<Option<u32>> {
        let found: Result<Option<LinkMessage>, _> = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) => match to_io(e) {
                e if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
                e => Err(e),
            },
        }
    }

    /// The name of link `index`, `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// Any netlink error but "no such device".
    pub async fn link_name(&self, index: u32) -> io::Result<Option<String>> {
        let found = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link.and_then(|l| {
                l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                })
            })),
            Err(e) => match to_io(e) {
                e if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
                e => Err(e),
            },
        }
    }

    /// The IPv4 addresses of link `index`, primary ones first (kernel order otherwise).
    ///
    /// # Errors
    ///
    /// The netlink error.
    pub async fn addresses(&self, index: u32) -> io::Result<Vec<Address>> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(to_io)?;
        let mut addresses: Vec<Address> = messages
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|message| {
                // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
                // point-to-point links).
                let ip = message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some(Address {
                    ip,
                    prefix: message.header.prefix_len,
                    secondary: message
                        .header
                        .flags
                        .contains(netlink_packet_route::address::AddressHeaderFlags::Secondary),
                    message,
                })
            })
            .collect();
        addresses.sort_by_key(|a| a.secondary);
        Ok(addresses)
    }

    /// Adds `ip/prefix` to link `index`.
    ///
    /// # Errors
    ///
    /// The netlink error (`EEXIST` when already there).
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(to_io)
    }

    /// Deletes an address listed by [`Self::addresses`].
    ///
    /// # Errors
    ///
    /// The netlink error (`EADDRNOTAVAIL` when already gone).
    pub async fn delete_address(&self, address: &Address) -> io::Result<()> {
        self.handle
            .address()
            .del(address.message.clone())
            .execute()
            .await
            .map_err(to_io)
    }

    /// The IPv4 routes of the main table.
    ///
    /// # Errors
    ///
    /// The netlink error.
    pub async fn routes(&self) -> io::Result<Vec<Route>> {
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(to_io)?;
        Ok(messages
            .into_iter()
            .filter(|m| table(m) == RT_TABLE_MAIN)
            .map(route)
            .collect())
    }

    /// The route the kernel would use to reach `dst` out of link `oif` (`ip route get DST oif
    /// DEV`), `None` when there is none (`ENETUNREACH`/`EHOSTUNREACH`).
    ///
    /// # Errors
    ///
    /// Any other netlink error.
    pub async fn route_get(&self, dst: Ipv4Addr, oif: u32) -> io::Result<Option<Route>> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .output_interface(oif)
            .build();
        match self.handle.route().get(request).execute().try_next().await {
            Ok(found) => Ok(found.map(route)),
            Err(e) => match to_io(e) {
                e if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
                {
                    Ok(None)
                }
                e => Err(e),
            },
        }
    }

    /// Adds `dst/32` out of link `oif`, via `gateway` (or on-link), in the main table, tagged
    /// with `protocol`.
    ///
    /// # Errors
    ///
    /// The netlink error (`EEXIST` when a route to `dst/32` exists).
    pub async fn add_host_route(
        &self,
        dst: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
        oif: u32,
        protocol: u8,
    ) -> io::Result<()> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .output_interface(oif)
            .protocol(RouteProtocol::from(protocol));
        builder = match gateway {
            Some(gateway) => builder.gateway(gateway),
            None => builder.scope(RouteScope::Link),
        };
        self.handle
            .route()
            .add(builder.build())
            .execute()
            .await
            .map_err(to_io)
    }

    /// Deletes a route listed by [`Self::routes`].
    ///
    /// # Errors
    ///
    /// The netlink error (`ESRCH` when already gone).
    pub async fn delete_route(&self, route: &Route) -> io::Result<()> {
        self.handle
            .route()
            .del(route.message.clone())
            .execute()
            .await
            .map_err(to_io)
    }

    /// The filters on link `index`'s clsact `ingress` (or egress) hook; empty without a
    /// clsact qdisc.
    ///
    /// # Errors
    ///
    /// The netlink error.
    pub async fn filters(&self, index: u32, ingress: bool) -> io::Result<Vec<TcMessage>> {
        let mut filters = self.handle.traffic_filter(index as i32);
        let request = filters.get();
        let request = if ingress {
            request.ingress()
        } else {
            request.egress()
        };
        match request.execute().try_collect().await {
            Ok(messages) => Ok(messages),
            // No clsact qdisc: nothing attached.
            Err(e) => match to_io(e) {
                e if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
                    Ok(Vec::new())
                }
                e => Err(e),
            },
        }
    }

    /// The ids of the BPF programs attached as `cls_bpf` filters to link `index`'s clsact
    /// `ingress` (or egress) hook.
    ///
    /// # Errors
    ///
    /// The netlink error.
    pub async fn bpf_filter_ids(&self, index: u32, ingress: bool) -> io::Result<Vec<u32>> {
        Ok(self
            .filters(index, ingress)
            .await?
            .iter()
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                TcAttribute::Options(options) => Some(options),
                _ => None,
            })
            .flatten()
            .filter_map(|o| match o {
                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(*id),
                _ => None,
            })
            .collect())
    }

    /// Link `index`'s `clsact` qdisc, if it has one.
    ///
    /// # Errors
    ///
    /// The netlink error.
    pub async fn clsact(&self, index: u32) -> io::Result<Option<TcMessage>> {
        let qdiscs: Vec<TcMessage> = self
            .handle
            .qdisc()
            .get()
            .index(index as i32)
            .execute()
            .try_collect()
            .await
            .map_err(to_io)?;
        Ok(qdiscs.into_iter().find(|q| {
            q.header.index == index as i32
                && q.attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "clsact"))
        }))
    }

    /// Deletes a qdisc listed by [`Self::clsact`].
    ///
    /// # Errors
    ///
    /// The netlink error.
    pub async fn delete_qdisc(&self, qdisc: &TcMessage) -> io::Result<()> {
        let mut request = self.handle.qdisc().del(qdisc.header.index);
        *request.message_mut() = qdisc.clone();
        request.execute().await.map_err(to_io)
    }
}

fn table(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

fn route(message: RouteMessage) -> Route {
    let mut route = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: message.header.destination_prefix_length,
        gateway: None,
        oif: 0,
        protocol: u8::from(message.header.protocol),
        message: RouteMessage::default(),
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(dst)) => route.dst = *dst,
            RouteAttribute::Gateway(RouteAddress::Inet(gw)) => route.gateway = Some(*gw),
            RouteAttribute::Oif(oif) => route.oif = *oif,
            _ => {}
        }
    }
    route.message = message;
    route
}

/// The kernel's errno where there is one.
fn to_io(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
