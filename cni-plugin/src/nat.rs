//! Pod egress masquerading and host ports, programmed as nf_tables objects over netlink
//! (`netlink-packet-netfilter`), in one table per network, `ip satellite-cni-<name>`. In nft
//! syntax (what `nft list table ip satellite-cni-<name>` prints, with `S` the subnet):
//!
//! ```text
//! map hostports    { type inet_proto . inet_service : ipv4_addr . inet_service }
//! map hostports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//! chain prerouting  { type nat hook prerouting priority dstnat;   # and the same in
//!     fib daddr type local dnat ip to meta l4proto . th dport map @hostports   # chain output
//!     dnat ip to ip daddr . meta l4proto . th dport map @hostports_ip }
//! chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr S ip daddr != S masquerade          # pod egress (when "masquerade")
//!     ct status dnat ip saddr S ip daddr S masquerade }   # hairpin: a pod to its own host port
//! ```
//!
//! Each attachment's host ports are map elements (key protocol + host port [+ host IP], value
//! pod address + container port), added and removed one attachment at a time. Every rule
//! carries a comment naming its purpose, rule-format version and subnet; ADD compares the
//! table's rules with the configuration's and rewrites them (in the same transaction as its
//! elements) only when they differ. Every change is one nfnetlink batch: the kernel applies it
//! whole or not at all.
//!
//! Why maps and not one rule per host port, as the reference `portmap` plugin does with
//! iptables chains: adding and removing a map element is exact (no rule handles to find, no
//! chain to list) and a lookup costs the same for 1 or 1000 ports.
//!
//! One file (over 500 lines): the table, its chains and sets and the messages that change
//! them are one nf_tables object; ADD, DEL, CHECK and GC all edit the same structure.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, GenMessage, Hook,
    InetHookNumber, ListAttribute, Lookup, Meta, MetaKey, NfTablesMessage, Operator, Payload,
    Register, RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::config::{NetConf, PortMapping};
use crate::error::{Error, Result};
use crate::ipam::Allocation;
use crate::netlink::socket::NetlinkSocket;

const MAP_ANY: &str = "hostports";
const MAP_IP: &str = "hostports_ip";

/// nft's data type ids (`src/datatype.h`), concatenated 6 bits each as nft does, so
/// `nft list` shows the maps' types. The kernel only stores them.
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;

/// `NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`.
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
/// `RTN_LOCAL`: what `fib daddr type` yields for a local address.
const RTN_LOCAL: u32 = 2;
/// `IPS_DST_NAT` (conntrack status bit).
const IPS_DST_NAT: u32 = 0x20;
/// `NFT_NAT_DNAT`, `NFPROTO_IPV4` (the kernel sets the "addresses" and "ports specified" range
/// flags itself when the registers are given).
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
/// Chain priorities `dstnat` and `srcnat`.
const PRIO_DSTNAT: i32 = -100;
const PRIO_SRCNAT: i32 = 100;

/// An nfnetlink socket and the names of one network's table.
pub struct Nat {
    socket: NetlinkSocket,
    table: String,
    subnet: ipnet::Ipv4Net,
    masquerade: bool,
}

impl Nat {
    /// Opens an nfnetlink socket in this (the host's) namespace for `conf`'s table.
    pub fn open(conf: &NetConf) -> Result<Self> {
        let socket = NetlinkSocket::open(NETLINK_NETFILTER)
            .map_err(|e| Error::netlink("opening an nfnetlink socket", e))?;
        Ok(Self {
            socket,
            table: table_name(&conf.name),
            subnet: conf.subnet,
            masquerade: conf.masquerade,
        })
    }

    /// Makes the table match the configuration (creating the table, maps and chains and
    /// rewriting the rules only when they differ) and adds `alloc`'s host ports, in one
    /// transaction. Without masquerading, host ports or an existing table, does nothing.
    ///
    /// Errors: [`Error::HostPortInUse`] when a host port is mapped to another address;
    /// [`Error::Netlink`] otherwise.
    pub fn apply(&mut self, alloc: &Allocation) -> Result<()> {
        let rules = self.rules();
        let wanted: Vec<(&str, &str)> = rules
            .iter()
            .map(|r| (r.chain, r.comment.as_str()))
            .collect();
        let current = self.current_rules()?;
        if current.is_empty() && !self.masquerade && alloc.port_mappings.is_empty() {
            // Nothing to do, and no table from an earlier configuration to bring up to date.
            return Ok(());
        }
        let mut batch = Batch::default();
        // Rewriting rules deletes the old ones, and the kernel frees deleted objects after an
        // RCU grace period that the next close of an nfnetlink socket waits for (~10 ms on a
        // busy host): rewrite only when the configuration changed.
        if current.len() != wanted.len()
            || current
                .iter()
                .zip(&wanted)
                .any(|((c1, t1), (c2, t2))| c1 != c2 || t1 != t2)
        {
            self.push_base(&mut batch, rules);
        }
        let first_element = batch.len();
        if first_element == 0 && alloc.port_mappings.is_empty() {
            return Ok(());
        }
        for mapping in &alloc.port_mappings {
            // Without NLM_F_EXCL an identical element (a repeated ADD) is accepted, and one
            // with the same key but another pod's address fails with EBUSY.
            batch.push(
                self.element(NfTablesMessage::NewSetElement, Some(alloc.ip), mapping),
                NLM_F_CREATE,
            );
        }
        match self.commit(batch) {
            Ok(()) => Ok(()),
            Err((index, errno)) => {
                if index >= first_element
                    && matches!(errno, libc::EBUSY | libc::EEXIST)
                    && let Some(m) = alloc.port_mappings.get(index - first_element)
                {
                    return Err(Error::HostPortInUse {
                        protocol: m.protocol.clone(),
                        port: m.host_port,
                    });
                }
                Err(Error::netlink(
                    format!("programming nf_tables table ip {}", self.table),
                    io::Error::from_raw_os_error(errno),
                ))
            }
        }
    }

    /// The rules this configuration needs, in chain order, each tagged with a comment that
    /// identifies it (rule format version, purpose, subnet).
    fn rules(&self) -> Vec<Rule> {
        let tag = |what: &str| format!("satellite-cni/{RULES_VERSION} {what} {}", self.subnet);
        let net = self.subnet.network().octets().to_vec();
        let mask = self.subnet.netmask().octets().to_vec();
        let mut rules = Vec::new();
        for chain in ["prerouting", "output"] {
            rules.push(Rule::new(chain, tag("hostports"), dnat_any()));
            rules.push(Rule::new(chain, tag("hostports-ip"), dnat_ip()));
        }
        if self.masquerade {
            let mut egress = in_subnet(12, &net, &mask, Operator::Equal);
            egress.extend(in_subnet(16, &net, &mask, Operator::NotEqual));
            egress.push(masq());
            rules.push(Rule::new("postrouting", tag("masquerade"), egress));
        }
        let mut hairpin = vec![
            ct_status(),
            Expressions::Bitwise(vec![
                Bitwise::SourceRegister(Register::Reg32_00),
                Bitwise::DestinationRegister(Register::Reg32_00),
                Bitwise::Length(4),
                Bitwise::Mask(DataAttribute::Value(IPS_DST_NAT.to_ne_bytes().to_vec())),
                Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
            ]),
            cmp(Operator::NotEqual, vec![0; 4]),
        ];
        hairpin.extend(in_subnet(12, &net, &mask, Operator::Equal));
        hairpin.extend(in_subnet(16, &net, &mask, Operator::Equal));
        hairpin.push(masq());
        rules.push(Rule::new("postrouting", tag("hairpin"), hairpin));
        rules
    }

    /// (chain, comment) of every rule now in the table, in order; empty when there is no
    /// table.
    fn current_rules(&mut self) -> Result<Vec<(String, String)>> {
        let request = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(self.table.clone())],
            }),
        );
        let answers = match self.socket.dump(request) {
            Ok(answers) => answers,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::netlink(
                    format!("listing the rules of table ip {}", self.table),
                    e,
                ));
            }
        };
        Ok(answers
            .iter()
            .filter_map(|m| match &m.inner {
                NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(rule)) => {
                    let mut chain = None;
                    let mut comment = String::new();
                    for attr in &rule.attributes {
                        match attr {
                            RuleAttribute::Chain(c) => chain = Some(c.clone()),
                            RuleAttribute::UserData(data) => comment = parse_comment(data),
                            _ => {}
                        }
                    }
                    chain.map(|c| (c, comment))
                }
                _ => None,
            })
            .collect())
    }

    /// Table, maps and chains (created if missing), the chains flushed, and `rules`.
    fn push_base(&self, batch: &mut Batch, rules: Vec<Rule>) {
        batch.push(
            NfTablesMessage::NewTable(TableMessage {
                attributes: vec![TableAttribute::Name(self.table.clone())],
            }),
            NLM_F_CREATE,
        );
        for (name, key_type, key_len) in [
            (MAP_ANY, concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 8),
            (
                MAP_IP,
                concat(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
                12,
            ),
        ] {
            let id = batch.next_id();
            batch.push(
                NfTablesMessage::NewSet(SetMessage {
                    attributes: vec![
                        SetAttribute::Table(self.table.clone()),
                        SetAttribute::Name(name.into()),
                        SetAttribute::Flags(SetFlags::Map),
                        SetAttribute::KeyType(key_type),
                        SetAttribute::KeyLen(key_len),
                        SetAttribute::DataType(concat(&[TYPE_IPADDR, TYPE_INET_SERVICE])),
                        SetAttribute::DataLen(8),
                        SetAttribute::Id(id),
                    ],
                }),
                NLM_F_CREATE,
            );
        }
        let chains = [
            ("prerouting", InetHookNumber::PreRouting, PRIO_DSTNAT),
            ("output", InetHookNumber::LocalOut, PRIO_DSTNAT),
            ("postrouting", InetHookNumber::PostRouting, PRIO_SRCNAT),
        ];
        for (chain, hook, priority) in chains {
            batch.push(
                NfTablesMessage::NewChain(ChainMessage {
                    attributes: vec![
                        ChainAttribute::Table(self.table.clone()),
                        ChainAttribute::Name(chain.into()),
                        ChainAttribute::Type("nat".into()),
                        ChainAttribute::Hook(vec![
                            Hook::Number(hook.into()),
                            // The kernel reads the priority as a signed 32-bit value.
                            Hook::Priority(priority as u32),
                        ]),
                        ChainAttribute::Policy(1), // NF_ACCEPT
                    ],
                }),
                NLM_F_CREATE,
            );
            // A DELRULE naming only the chain flushes it.
            batch.push(
                NfTablesMessage::DeleteRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(self.table.clone()),
                        RuleAttribute::Chain(chain.into()),
                    ],
                }),
                0,
            );
        }
        for rule in rules {
            batch.push(
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(self.table.clone()),
                        RuleAttribute::Chain(rule.chain.into()),
                        RuleAttribute::Expressions(
                            rule.exprs.into_iter().map(Into::into).collect(),
                        ),
                        RuleAttribute::UserData(comment_udata(&rule.comment)),
                    ],
                }),
                NLM_F_CREATE | NLM_F_APPEND,
            );
        }
    }

    /// Removes `alloc`'s host ports: each element that still maps to `alloc`'s address, in its
    /// own transaction. An element that is gone, or that maps the port to another pod (a host
    /// port this pod was refused, or one reused after this pod's DEL) is left alone.
    pub fn unmap_ports(&mut self, alloc: &Allocation) -> Result<()> {
        for mapping in &alloc.port_mappings {
            let ours = element_value(alloc.ip, mapping);
            match self.mapped_to(mapping)? {
                Some(value) if value == ours => {}
                Some(_) => {
                    tracing::info!(
                        port = mapping.host_port,
                        protocol = %mapping.protocol,
                        "host port maps to another pod; leaving it"
                    );
                    continue;
                }
                None => continue,
            }
            let mut batch = Batch::default();
            batch.push(
                self.element(NfTablesMessage::DeleteSetElement, None, mapping),
                0,
            );
            match self.commit(batch) {
                Ok(()) | Err((_, libc::ENOENT)) => {}
                Err((_, errno)) => {
                    return Err(Error::netlink(
                        format!(
                            "removing host port {}/{} from table ip {}",
                            mapping.protocol, mapping.host_port, self.table
                        ),
                        io::Error::from_raw_os_error(errno),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that every host port of `alloc` is mapped to it.
    pub fn check_ports(&mut self, alloc: &Allocation) -> Result<()> {
        for mapping in &alloc.port_mappings {
            if self.mapped_to(mapping)? != Some(element_value(alloc.ip, mapping)) {
                return Err(Error::CheckFailed(format!(
                    "host port {}/{} is not mapped to {}:{}",
                    mapping.protocol, mapping.host_port, alloc.ip, mapping.container_port
                )));
            }
        }
        Ok(())
    }

    /// The value (address and port slots) `mapping`'s host port maps to now, if any.
    fn mapped_to(&mut self, mapping: &PortMapping) -> Result<Option<Vec<u8>>> {
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            self.element(NfTablesMessage::GetSetElement, None, mapping),
        );
        match self.socket.get(msg) {
            Ok(answer) => Ok(element_data(&answer)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(Error::netlink(
                format!(
                    "reading host port {}/{} in table ip {}",
                    mapping.protocol, mapping.host_port, self.table
                ),
                e,
            )),
        }
    }

    /// A set element message of `kind` for `mapping`; with the value (pod address and port)
    /// only when `ip` is given (NEWSETELEM), the key alone otherwise (DELSETELEM, GETSETELEM).
    fn element(
        &self,
        kind: fn(SetElementMessage) -> NfTablesMessage,
        ip: Option<Ipv4Addr>,
        mapping: &PortMapping,
    ) -> NfTablesMessage {
        let (set, key) = element_key(mapping);
        let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key))];
        if let Some(ip) = ip {
            attrs.push(SetElementAttribute::Data(DataAttribute::Value(
                element_value(ip, mapping),
            )));
        }
        kind(SetElementMessage {
            attributes: vec![
                SetElementList::Table(self.table.clone()),
                SetElementList::Set(set.into()),
                SetElementList::Elements(vec![ListAttribute::Element(attrs)]),
            ],
        })
    }

    /// Sends `batch` as one transaction; on failure, the index (in `batch`) and errno of the
    /// first message the kernel rejected.
    fn commit(&mut self, batch: Batch) -> Result<(), (usize, i32)> {
        let subsys = libc::NFNL_SUBSYS_NFTABLES as u16;
        let control = |m: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, subsys),
                m,
            )
        };
        let mut messages = vec![(control(ControlMessage::BatchBegin), NLM_F_REQUEST)];
        for (msg, flags) in batch.messages {
            messages.push((
                NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0), msg),
                NLM_F_REQUEST | NLM_F_ACK | flags,
            ));
        }
        messages.push((control(ControlMessage::BatchEnd), NLM_F_REQUEST));
        let fence = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
        );
        match self.socket.batch(messages, fence) {
            Ok(failures) => match failures.first() {
                // Index 0 is BATCH_BEGIN.
                Some(&(index, errno)) => Err((index.saturating_sub(1), errno)),
                None => Ok(()),
            },
            Err(e) => Err((usize::MAX, e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
}

/// One rule: its chain, its identifying comment, its expressions.
struct Rule {
    chain: &'static str,
    comment: String,
    exprs: Vec<Expressions>,
}

impl Rule {
    fn new(chain: &'static str, comment: String, exprs: Vec<Expressions>) -> Self {
        Self {
            chain,
            comment,
            exprs,
        }
    }
}

/// Version of the rules' shape; a change makes every node rewrite its rules once.
const RULES_VERSION: u32 = 1;

/// A rule comment in libnftnl's user-data format (`NFTNL_UDATA_RULE_COMMENT` = 0, length,
/// NUL-terminated text), so `nft list` shows it as `comment "…"`.
fn comment_udata(comment: &str) -> Vec<u8> {
    let text = &comment.as_bytes()[..comment.len().min(254)];
    let mut out = vec![0, (text.len() + 1) as u8];
    out.extend(text);
    out.push(0);
    out
}

/// The comment in a rule's user data (empty if there is none).
fn parse_comment(udata: &[u8]) -> String {
    let mut rest = udata;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let Some(value) = tail.get(..len) else { break };
        if *kind == 0 {
            return String::from_utf8_lossy(value.strip_suffix(&[0]).unwrap_or(value)).into_owned();
        }
        rest = &tail[len..];
    }
    String::new()
}

/// The table of network `name`.
pub fn table_name(name: &str) -> String {
    format!("satellite-cni-{name}")
}

#[derive(Default)]
struct Batch {
    messages: Vec<(NfTablesMessage, u16)>,
    ids: u32,
}

impl Batch {
    fn push(&mut self, msg: NfTablesMessage, flags: u16) {
        self.messages.push((msg, flags));
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn next_id(&mut self) -> u32 {
        self.ids += 1;
        self.ids
    }
}

fn concat(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// The map and key of a mapping: (proto, port) or (host IP, proto, port), each field in its
/// own 4-byte register slot as nf_tables lays out concatenations.
fn element_key(m: &PortMapping) -> (&'static str, Vec<u8>) {
    let mut key = Vec::with_capacity(12);
    if let Some(ip) = m.host_ip {
        key.extend(ip.octets());
    }
    key.extend([m.proto_number(), 0, 0, 0]);
    key.extend(m.host_port.to_be_bytes());
    key.extend([0, 0]);
    (if m.host_ip.is_some() { MAP_IP } else { MAP_ANY }, key)
}

/// The value of a mapping: pod address + container port (4-byte slots).
fn element_value(ip: Ipv4Addr, m: &PortMapping) -> Vec<u8> {
    let mut value = ip.octets().to_vec();
    value.extend(m.container_port.to_be_bytes());
    value.extend([0, 0]);
    value
}

fn element_data(answer: &NetfilterMessage) -> Option<Vec<u8>> {
    let NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(msg)) = &answer.inner else {
        return None;
    };
    msg.attributes.iter().find_map(|list| match list {
        SetElementList::Elements(elements) => elements.iter().find_map(|e| match e {
            ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
                SetElementAttribute::Data(DataAttribute::Value(v)) => Some(v.clone()),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

fn other(name: &str, attrs: &[(u16, u32)]) -> Expressions {
    Expressions::Other {
        expression_type: name.into(),
        attributes: attrs
            .iter()
            .map(|(kind, value)| DefaultNla::new(*kind, value.to_be_bytes().to_vec()))
            .collect(),
    }
}

fn payload(base: u32, offset: u32, len: u32, reg: Register) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(reg),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

fn cmp(op: Operator, data: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg32_00),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
}

/// `ip saddr|daddr (op) net/mask` for the header field at `offset` (12 saddr, 16 daddr).
fn in_subnet(offset: u32, net: &[u8], mask: &[u8], op: Operator) -> Vec<Expressions> {
    vec![
        payload(BASE_NETWORK, offset, 4, Register::Reg32_00),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg32_00),
            Bitwise::DestinationRegister(Register::Reg32_00),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(mask.to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ]),
        cmp(op, net.to_vec()),
    ]
}

fn meta_l4proto(reg: Register) -> Expressions {
    Expressions::Meta(vec![
        Meta::DestinationRegister(reg),
        Meta::Key(MetaKey::L4Proto),
    ])
}

/// `dnat ip to <regs 8, 9>`: address from 32-bit register 0, port from register 1.
fn dnat_from_regs() -> Expressions {
    // NFTA_NAT_TYPE, NFTA_NAT_FAMILY, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_PROTO_MIN
    other(
        "nat",
        &[
            (1, NFT_NAT_DNAT),
            (2, NFPROTO_IPV4),
            (3, u32::from(Register::Reg32_00)),
            (5, u32::from(Register::Reg32_01)),
        ],
    )
}

fn lookup(set: &str) -> Expressions {
    Expressions::Lookup(vec![
        Lookup::Set(set.into()),
        Lookup::SourceRegister(Register::Reg32_00),
        Lookup::DestinationRegister(Register::Reg32_00),
    ])
}

/// `fib daddr type local dnat ip to meta l4proto . th dport map @hostports`
fn dnat_any() -> Vec<Expressions> {
    vec![
        // NFTA_FIB_DREG, NFTA_FIB_RESULT (NFT_FIB_RESULT_ADDRTYPE), NFTA_FIB_FLAGS (DADDR)
        other(
            "fib",
            &[(1, u32::from(Register::Reg32_00)), (2, 3), (3, 1 << 1)],
        ),
        cmp(Operator::Equal, RTN_LOCAL.to_ne_bytes().to_vec()),
        meta_l4proto(Register::Reg32_00),
        payload(BASE_TRANSPORT, 2, 2, Register::Reg32_01),
        lookup(MAP_ANY),
        dnat_from_regs(),
    ]
}

/// `dnat ip to ip daddr . meta l4proto . th dport map @hostports_ip`
fn dnat_ip() -> Vec<Expressions> {
    vec![
        payload(BASE_NETWORK, 16, 4, Register::Reg32_00),
        meta_l4proto(Register::Reg32_01),
        payload(BASE_TRANSPORT, 2, 2, Register::Reg32_02),
        lookup(MAP_IP),
        dnat_from_regs(),
    ]
}

/// `ct status` into 32-bit register 0 (NFTA_CT_DREG, NFTA_CT_KEY = NFT_CT_STATUS = 2).
fn ct_status() -> Expressions {
    other("ct", &[(1, u32::from(Register::Reg32_00)), (2, 2)])
}

fn masq() -> Expressions {
    Expressions::Other {
        expression_type: "masq".into(),
        attributes: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_use_register_slots() {
        let m = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None,
        };
        assert_eq!(
            element_key(&m),
            (MAP_ANY, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0])
        );
        assert_eq!(
            element_value(Ipv4Addr::new(10, 0, 0, 2), &m),
            vec![10, 0, 0, 2, 0, 80, 0, 0]
        );
        let m = PortMapping {
            host_ip: Some(Ipv4Addr::new(198, 18, 0, 1)),
            protocol: "udp".into(),
            ..m
        };
        assert_eq!(
            element_key(&m).1,
            vec![198, 18, 0, 1, 17, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(
            concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            (12 << 6) | 13
        );
    }
}
