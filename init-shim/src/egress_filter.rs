//! An nftables filter in the agent's network namespace: nothing leaves to a broadcast or
//! multicast address.
//!
//! Routes decide where unicast goes (all of it to the gateway, see [`crate::net`]), but
//! link-layer broadcast and multicast never consult them the same way: UDP to the
//! subnet's broadcast address or 255.255.255.255 (with `SO_BROADCAST`), or to a multicast
//! group (with `IP_MULTICAST_IF`, or `IP_PKTINFO` naming the interface), is put on the wire
//! for every host on the agent network, bypassing the gateway. None of that needs
//! privilege. So, on every interface but loopback, the output hook drops:
//!
//! * IPv4 to 224.0.0.0/3 (multicast, the reserved class E and 255.255.255.255);
//! * IPv4 to the broadcast address of each of the interface's subnets;
//! * IPv6 to ff00::/8, except the ICMPv6 the kernel itself sends for neighbour discovery
//!   and MLD (an unprivileged process cannot send those; it lost `CAP_NET_RAW`).
//!
//! A dropped packet fails the sender's `sendto` with `EPERM` at once. The agent cannot
//! remove the table: changing nftables needs `CAP_NET_ADMIN`, which it no longer has.
//!
//! The ruleset is built as one nf_tables netlink batch by pure functions (tested without a
//! namespace) and applied atomically: all of it or nothing. Only core nf_tables
//! expressions are used (meta, payload, bitwise, cmp, immediate), which every kernel with
//! nf_tables has.

#![forbid(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeVal;

use crate::net::IfAddr;

/// The table the shim owns in the agent's namespace (family `inet`).
pub const TABLE: &str = "bottleneck_agent";
/// Its only chain, on the output hook.
pub const CHAIN: &str = "egress";

/// How long the kernel may take to acknowledge the batch.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// ICMPv6 types the kernel sends to multicast addresses for the link to work: MLDv1 and
/// MLDv2 reports, router solicitation, neighbour solicitation and advertisement.
const ICMPV6_LINK_TYPES: [u8; 5] = [131, 143, 133, 135, 136];

/// Failure to install the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The netlink socket could not be opened or used.
    #[error("nftables netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused the batch (nothing was applied).
    #[error("the kernel refused the egress filter: {0}")]
    Refused(#[source] io::Error),
    /// The kernel did not answer in time, or answered something unreadable.
    #[error("no acknowledgement for the egress filter: {0}")]
    NoAck(String),
}

/// Installs the filter (replacing an earlier copy of the shim's table) and waits for the
/// kernel to acknowledge every message of the batch.
pub fn install(v4: &[IfAddr<Ipv4Addr>]) -> Result<(), FilterError> {
    let batch = Batch::ruleset(v4, 1);
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| FilterError::Socket(e.into()))?;
    let timeout = TimeVal::new(ACK_TIMEOUT.as_secs() as _, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| FilterError::Socket(e.into()))?;
    send(fd.as_raw_fd(), &batch.bytes, MsgFlags::empty())
        .map_err(|e| FilterError::Socket(e.into()))?;
    wait_for_acks(&fd, batch.acked)
}

/// Reads answers until every acknowledged message has its (successful) answer.
fn wait_for_acks(fd: &OwnedFd, mut pending: Vec<u32>) -> Result<(), FilterError> {
    let mut buf = vec![0u8; 64 * 1024];
    while !pending.is_empty() {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| FilterError::NoAck(format!("waiting for the kernel: {e}")))?;
        for answer in parse_answers(&buf[..n.min(buf.len())]).map_err(FilterError::NoAck)? {
            if answer.error != 0 {
                return Err(FilterError::Refused(io::Error::from_raw_os_error(
                    answer.error.saturating_neg(),
                )));
            }
            pending.retain(|&seq| seq != answer.seq);
        }
    }
    Ok(())
}

/// One `NLMSG_ERROR` answer: the sequence number it answers and the (negative) errno, 0
/// for an acknowledgement.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    seq: u32,
    error: i32,
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;

/// The `NLMSG_ERROR` messages of one datagram; other messages are skipped.
fn parse_answers(mut data: &[u8]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(format!(
                "a netlink message claims {len} bytes of {}",
                data.len()
            ));
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        if kind == NLMSG_ERROR {
            let Some(code) = data.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4) else {
                return Err("a netlink error message without its code".into());
            };
            let error = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            answers.push(Answer { seq, error });
        }
        data = data.get(align(len)..).unwrap_or_default();
    }
    Ok(answers)
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

// nfnetlink / nf_tables constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IFNAMSIZ: usize = 16;

/// An nf_tables batch: the bytes to send and the sequence numbers the kernel will
/// acknowledge.
#[derive(Debug)]
struct Batch {
    bytes: Vec<u8>,
    acked: Vec<u32>,
    seq: u32,
}

impl Batch {
    /// The whole filter, sequence numbers from `first_seq`.
    fn ruleset(v4: &[IfAddr<Ipv4Addr>], first_seq: u32) -> Batch {
        let mut batch = Batch {
            bytes: Vec::new(),
            acked: Vec::new(),
            seq: first_seq,
        };
        batch.message(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES, &[]);
        // Create, delete, create: the delete cannot fail for a missing table, and a copy
        // left by an earlier run is replaced rather than doubled.
        let table = attr_str(1, TABLE);
        batch.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
        batch.nft(NFT_MSG_DELTABLE, 0, &table);
        batch.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
        let hook = [attr_u32(1, NF_INET_LOCAL_OUT), attr_u32(2, 0)].concat();
        let chain = [
            attr_str(1, TABLE),
            attr_str(3, CHAIN),
            nested(4, &hook),
            attr_u32(5, NF_ACCEPT),
            attr_str(7, "filter"),
        ]
        .concat();
        batch.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &chain);
        for rule in rules(v4) {
            let body = [
                attr_str(1, TABLE),
                attr_str(2, CHAIN),
                nested(4, &rule.concat()),
            ]
            .concat();
            // Appended, in order: without APPEND each rule would go first.
            batch.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &body);
        }
        batch.message(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES, &[]);
        batch
    }

    /// An nf_tables message (family inet), acknowledged.
    fn nft(&mut self, msg: u16, flags: u16, attrs: &[u8]) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        self.acked.push(self.seq);
        self.message(kind, NLM_F_ACK | flags, NFPROTO_INET, 0, attrs);
    }

    /// A netlink message with an nfgenmsg header.
    fn message(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) {
        let len = NLMSG_HDRLEN + 4 + attrs.len();
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len32.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.bytes.extend_from_slice(&self.seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, res_id (big-endian).
        self.bytes.extend_from_slice(&[family, 0]);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        self.bytes.extend_from_slice(attrs);
        self.bytes.resize(self.bytes.len() + (align(len) - len), 0);
        self.seq += 1;
    }
}

/// The rules, each a list of expressions (`NFTA_LIST_ELEM`s).
fn rules(v4: &[IfAddr<Ipv4Addr>]) -> Vec<Vec<Vec<u8>>> {
    let not_loopback = || {
        let mut lo = [0u8; IFNAMSIZ];
        lo[..2].copy_from_slice(b"lo");
        vec![meta(NFT_META_OIFNAME), cmp(NFT_CMP_NEQ, &lo)]
    };
    let family = |nfproto: u8| vec![meta(NFT_META_NFPROTO), cmp(NFT_CMP_EQ, &[nfproto])];
    let mut rules = Vec::new();
    for icmp_type in ICMPV6_LINK_TYPES {
        let mut rule = family(NFPROTO_IPV6);
        rule.extend([
            meta(NFT_META_L4PROTO),
            cmp(NFT_CMP_EQ, &[IPPROTO_ICMPV6]),
            payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1),
            cmp(NFT_CMP_EQ, &[icmp_type]),
            verdict(NF_ACCEPT),
        ]);
        rules.push(rule);
    }
    // IPv4 destination (offset 16) in 224.0.0.0/3.
    let mut rule = not_loopback();
    rule.extend(family(NFPROTO_IPV4));
    rule.extend([
        payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
        bitwise(&[0xe0, 0, 0, 0]),
        cmp(NFT_CMP_EQ, &[0xe0, 0, 0, 0]),
        verdict(NF_DROP),
    ]);
    rules.push(rule);
    for broadcast in subnet_broadcasts(v4) {
        let mut rule = not_loopback();
        rule.extend(family(NFPROTO_IPV4));
        rule.extend([
            payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
            cmp(NFT_CMP_EQ, &broadcast.octets()),
            verdict(NF_DROP),
        ]);
        rules.push(rule);
    }
    // IPv6 destination (offset 24) in ff00::/8.
    let mut rule = not_loopback();
    rule.extend(family(NFPROTO_IPV6));
    rule.extend([
        payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 1),
        cmp(NFT_CMP_EQ, &[0xff]),
        verdict(NF_DROP),
    ]);
    rules.push(rule);
    rules
}

/// The directed broadcast address of each subnet (none for /31 and /32), each once.
fn subnet_broadcasts(v4: &[IfAddr<Ipv4Addr>]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for a in v4.iter().filter(|a| a.prefix <= 30) {
        let host_bits = u32::MAX.checked_shr(u32::from(a.prefix)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(a.addr) | host_bits);
        if !out.contains(&broadcast) {
            out.push(broadcast);
        }
    }
    out
}

fn expr(name: &str, data: &[u8]) -> Vec<u8> {
    nested(1, &[attr_str(1, name), nested(2, data)].concat())
}

fn meta(key: u32) -> Vec<u8> {
    expr("meta", &[attr_u32(2, key), attr_u32(1, NFT_REG_1)].concat())
}

fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
    expr(
        "payload",
        &[
            attr_u32(1, NFT_REG_1),
            attr_u32(2, base),
            attr_u32(3, offset),
            attr_u32(4, len),
        ]
        .concat(),
    )
}

/// `reg1 = reg1 & mask` (xor 0).
fn bitwise(mask: &[u8]) -> Vec<u8> {
    let len = u32::try_from(mask.len()).unwrap_or(u32::MAX);
    expr(
        "bitwise",
        &[
            attr_u32(1, NFT_REG_1),
            attr_u32(2, NFT_REG_1),
            attr_u32(3, len),
            nested(4, &attr(1, mask)),
            nested(5, &attr(1, &vec![0; mask.len()])),
        ]
        .concat(),
    )
}

fn cmp(op: u32, value: &[u8]) -> Vec<u8> {
    expr(
        "cmp",
        &[
            attr_u32(1, NFT_REG_1),
            attr_u32(2, op),
            nested(3, &attr(1, value)),
        ]
        .concat(),
    )
}

fn verdict(code: u32) -> Vec<u8> {
    let verdict = nested(2, &attr_u32(1, code));
    expr(
        "immediate",
        &[attr_u32(1, NFT_REG_VERDICT), nested(2, &verdict)].concat(),
    )
}

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity(align(len));
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align(len), 0);
    out
}

fn nested(kind: u16, payload: &[u8]) -> Vec<u8> {
    attr(kind | NLA_F_NESTED, payload)
}

/// A big-endian u32 attribute (nf_tables' convention for numbers).
fn attr_u32(kind: u16, value: u32) -> Vec<u8> {
    attr(kind, &value.to_be_bytes())
}

/// A NUL-terminated string attribute.
fn attr_str(kind: u16, value: &str) -> Vec<u8> {
    let mut payload = value.as_bytes().to_vec();
    payload.push(0);
    attr(kind, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str, prefix: u8) -> IfAddr<Ipv4Addr> {
        IfAddr {
            addr: text.parse().unwrap(),
            prefix,
        }
    }

    /// (type, flags, seq, family) of each message of a batch.
    fn messages(bytes: &[u8]) -> Vec<(u16, u16, u32, u8)> {
        let mut out = Vec::new();
        let mut data = bytes;
        while !data.is_empty() {
            let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
            assert!(len >= NLMSG_HDRLEN + 4 && len <= data.len(), "{len}");
            out.push((
                u16::from_ne_bytes(data[4..6].try_into().unwrap()),
                u16::from_ne_bytes(data[6..8].try_into().unwrap()),
                u32::from_ne_bytes(data[8..12].try_into().unwrap()),
                data[16],
            ));
            data = &data[align(len)..];
        }
        out
    }

    #[test]
    fn the_batch_replaces_the_table_atomically_and_every_change_is_acknowledged() {
        let batch = Batch::ruleset(&[v4("198.18.0.2", 24)], 7);
        let msgs = messages(&batch.bytes);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        let nft = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
        // 5 ICMPv6 accepts, class D/E, one subnet broadcast, IPv6 multicast.
        let rules = 5 + 1 + 1 + 1;
        let mut expected = vec![
            NFNL_MSG_BATCH_BEGIN,
            nft(NFT_MSG_NEWTABLE),
            nft(NFT_MSG_DELTABLE),
            nft(NFT_MSG_NEWTABLE),
            nft(NFT_MSG_NEWCHAIN),
        ];
        expected.extend(std::iter::repeat_n(nft(NFT_MSG_NEWRULE), rules));
        expected.push(NFNL_MSG_BATCH_END);
        assert_eq!(kinds, expected);
        let seqs: Vec<u32> = msgs.iter().map(|m| m.2).collect();
        assert_eq!(seqs, (7..7 + msgs.len() as u32).collect::<Vec<_>>());
        // Everything between begin and end is acknowledged, inet family.
        assert_eq!(batch.acked, seqs[1..seqs.len() - 1]);
        for m in &msgs[1..msgs.len() - 1] {
            assert_ne!(m.1 & NLM_F_ACK, 0);
            assert_eq!(m.3, NFPROTO_INET);
        }
        // Rules keep their order (the ICMPv6 accepts before the drops).
        for m in msgs.iter().filter(|m| m.0 == nft(NFT_MSG_NEWRULE)) {
            assert_ne!(m.1 & NLM_F_APPEND, 0);
        }
    }

    #[test]
    fn each_subnet_broadcast_is_dropped_but_host_routes_have_none() {
        assert_eq!(
            subnet_broadcasts(&[
                v4("198.18.0.2", 24),
                v4("198.18.0.9", 24),
                v4("198.19.1.1", 16),
                v4("198.18.5.1", 31),
                v4("198.18.6.1", 32),
            ]),
            vec![
                "198.18.0.255".parse::<Ipv4Addr>().unwrap(),
                "198.19.255.255".parse().unwrap()
            ]
        );
        let bytes = Batch::ruleset(&[v4("198.18.0.2", 24)], 1).bytes;
        assert!(bytes.windows(4).any(|w| w == [198, 18, 0, 255]));
    }

    #[test]
    fn attributes_are_padded_to_four_bytes_and_nests_are_flagged() {
        let a = attr_str(1, "lo");
        assert_eq!(a.len(), 8);
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), 7);
        let n = nested(4, &a);
        assert_eq!(u16::from_ne_bytes([n[2], n[3]]), 4 | NLA_F_NESTED);
        assert_eq!(attr_u32(2, 3)[4..], [0, 0, 0, 3]);
    }

    #[test]
    fn kernel_answers_are_read_by_sequence_and_a_short_message_is_an_error() {
        let mut data = Vec::new();
        for (seq, error) in [(3u32, 0i32), (4, -22)] {
            data.extend_from_slice(&36u32.to_ne_bytes());
            data.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            data.extend_from_slice(&0u16.to_ne_bytes());
            data.extend_from_slice(&seq.to_ne_bytes());
            data.extend_from_slice(&0u32.to_ne_bytes());
            data.extend_from_slice(&error.to_ne_bytes());
            data.extend_from_slice(&[0; 16]);
        }
        assert_eq!(
            parse_answers(&data).unwrap(),
            vec![Answer { seq: 3, error: 0 }, Answer { seq: 4, error: -22 }]
        );
        // Cut short: the header claims more than arrived.
        assert!(parse_answers(&data[..20]).is_err());
        let mut lying = data.clone();
        lying[0..4].copy_from_slice(&500u32.to_ne_bytes());
        assert!(parse_answers(&lying).is_err());
    }
}
