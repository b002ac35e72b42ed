//! Address classification for the gateway's upstream dials, and recognition of IP
//! literals in odd spellings.
//!
//! The gateway resolves names itself and dials only vetted addresses (DESIGN.md §3 step 5).
//! [`classify`] says what kind of address an IP is (loopback, private, cloud metadata,
//! IPv4 embedded in IPv6, ...), [`permitted`] decides whether it may be dialed, and
//! [`parse_ip_literal`] / [`looks_like_ip`] make sure a host written as an IP in any
//! spelling a client library would accept (`127.1`, `0x7f000001`, `[::ffff:127.0.0.1]`,
//! `fe80::1%eth0`, ...) is handled as an IP and never as a name (DESIGN.md §5 items 6, 13).
//!
//! Hosts are expected to be ASCII already: callers apply UTS #46 mapping (which turns
//! full-width digits and dots into ASCII) before asking whether a host is an IP.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of address an IP is, for deciding whether the gateway may dial it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// Global unicast: the only class permitted by default.
    Global,
    /// The unspecified address: `0.0.0.0`, `::`.
    Unspecified,
    /// Loopback: `127.0.0.0/8`, `::1`.
    Loopback,
    /// Private networks: RFC 1918 `10/8`, `172.16/12`, `192.168/16`, unique local
    /// `fc00::/7` and deprecated site-local `fec0::/10`.
    Private,
    /// Link-local: `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud instance-metadata endpoint: `169.254.169.254`, `fd00:ec2::254`,
    /// `100.100.100.200`. Checked before link-local, unique-local and CGNAT.
    CloudMetadata,
    /// Shared address space (carrier-grade NAT): `100.64.0.0/10`.
    SharedCgnat,
    /// Multicast: `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// Limited broadcast: `255.255.255.255`.
    Broadcast,
    /// Documentation ranges: `192.0.2/24`, `198.51.100/24`, `203.0.113/24`,
    /// `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Benchmarking ranges: `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// Reserved or special-purpose: `0/8`, `240/4`, `192.0.0/24`, `192.88.99/24`,
    /// `100::/64`, the rest of `2001::/23`, and any IPv6 outside `2000::/3` not
    /// otherwise classified.
    Reserved,
    /// An IPv6 address that embeds an IPv4 address.
    Embedded {
        /// How the IPv4 address is embedded.
        via: Embedding,
        /// The embedded IPv4 address.
        v4: Ipv4Addr,
        /// The class of the embedded IPv4 address (never `Embedded`).
        inner: Box<AddrClass>,
    },
}

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Embedding {
    /// IPv4-mapped, `::ffff:0:0/96`: dialing it reaches the IPv4 address.
    Ipv4Mapped,
    /// Deprecated IPv4-compatible, `::/96` except `::` and `::1`.
    Ipv4Compatible,
    /// NAT64, `64:ff9b::/96` and local-use `64:ff9b:1::/48` (IPv4 in the last 32 bits).
    Nat64,
    /// 6to4, `2002::/16`, IPv4 in bits 16..48.
    SixToFour,
    /// Teredo, `2001::/32`, client IPv4 = last 32 bits XOR `0xffffffff`.
    Teredo,
}

impl Embedding {
    /// Machine code, as reported by [`AddrClass::code`].
    fn code(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "ipv4_mapped",
            Embedding::Ipv4Compatible => "ipv4_compatible",
            Embedding::Nat64 => "nat64",
            Embedding::SixToFour => "6to4",
            Embedding::Teredo => "teredo",
        }
    }

    /// Human text, as used by `AddrClass`'s `Display`.
    fn text(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "IPv4-mapped IPv6",
            Embedding::Ipv4Compatible => "IPv4-compatible IPv6",
            Embedding::Nat64 => "NAT64 IPv6",
            Embedding::SixToFour => "6to4 IPv6",
            Embedding::Teredo => "Teredo IPv6",
        }
    }
}

impl AddrClass {
    /// A stable machine code: "global", "unspecified", "loopback", "private", "link_local",
    /// "cloud_metadata", "shared_cgnat", "multicast", "broadcast", "documentation",
    /// "benchmarking", "reserved", and for `Embedded`: "ipv4_mapped", "ipv4_compatible",
    /// "nat64", "6to4", "teredo".
    pub fn code(&self) -> &'static str {
        match self {
            AddrClass::Global => "global",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link_local",
            AddrClass::CloudMetadata => "cloud_metadata",
            AddrClass::SharedCgnat => "shared_cgnat",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "documentation",
            AddrClass::Benchmarking => "benchmarking",
            AddrClass::Reserved => "reserved",
            AddrClass::Embedded { via, .. } => via.code(),
        }
    }
}

/// Human text, e.g. "loopback", "cloud metadata endpoint",
/// "IPv4-mapped IPv6 (embeds 127.0.0.1, loopback)".
impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            AddrClass::Global => "global unicast",
            AddrClass::Unspecified => "unspecified address",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private network",
            AddrClass::LinkLocal => "link-local",
            AddrClass::CloudMetadata => "cloud metadata endpoint",
            AddrClass::SharedCgnat => "shared address space (CGNAT)",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "documentation range",
            AddrClass::Benchmarking => "benchmarking range",
            AddrClass::Reserved => "reserved range",
            AddrClass::Embedded { via, v4, inner } => {
                return write!(f, "{} (embeds {v4}, {inner})", via.text());
            }
        };
        f.write_str(text)
    }
}

/// IPv4 ranges in priority order: the first match wins, no match means `Global`.
/// Exact addresses come first so that metadata, `0.0.0.0` and broadcast are not
/// swallowed by the wider link-local, CGNAT, `0/8` and `240/4` ranges.
const V4_RANGES: &[([u8; 4], u32, AddrClass)] = &[
    ([169, 254, 169, 254], 32, AddrClass::CloudMetadata),
    ([100, 100, 100, 200], 32, AddrClass::CloudMetadata),
    ([0, 0, 0, 0], 32, AddrClass::Unspecified),
    ([255, 255, 255, 255], 32, AddrClass::Broadcast),
    ([127, 0, 0, 0], 8, AddrClass::Loopback),
    ([10, 0, 0, 0], 8, AddrClass::Private),
    ([172, 16, 0, 0], 12, AddrClass::Private),
    ([192, 168, 0, 0], 16, AddrClass::Private),
    ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
    ([100, 64, 0, 0], 10, AddrClass::SharedCgnat),
    ([224, 0, 0, 0], 4, AddrClass::Multicast),
    ([192, 0, 2, 0], 24, AddrClass::Documentation),
    ([198, 51, 100, 0], 24, AddrClass::Documentation),
    ([203, 0, 113, 0], 24, AddrClass::Documentation),
    ([198, 18, 0, 0], 15, AddrClass::Benchmarking),
    ([0, 0, 0, 0], 8, AddrClass::Reserved),
    ([240, 0, 0, 0], 4, AddrClass::Reserved),
    ([192, 0, 0, 0], 24, AddrClass::Reserved),
    ([192, 88, 99, 0], 24, AddrClass::Reserved),
];

/// IPv6 ranges (after metadata, `::`, `::1` and the embedded forms) in priority order.
/// `2001:2::/48` precedes `2001::/23`, which covers it; whatever is left outside
/// `2000::/3` is `Reserved`.
const V6_RANGES: &[([u16; 8], u32, AddrClass)] = &[
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddrClass::Multicast),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddrClass::LinkLocal),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddrClass::Private),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddrClass::Private),
    (
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        AddrClass::Documentation,
    ),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, AddrClass::Documentation),
    ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, AddrClass::Benchmarking),
    ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, AddrClass::Reserved),
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, AddrClass::Reserved),
];

/// Whether `ip` lies in `net`/`len` (IPv4).
fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    // checked_shl: a /0 would shift by 32, which overflows; its mask is 0.
    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
    (ip.to_bits() ^ u32::from_be_bytes(net)) & mask == 0
}

/// Whether `ip` lies in `net`/`len` (IPv6).
fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
    (ip.to_bits() ^ Ipv6Addr::from(net).to_bits()) & mask == 0
}

/// Classify an IPv4 address (never `Embedded`).
fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    V4_RANGES
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map_or(AddrClass::Global, |(_, _, class)| class.clone())
}

/// The IPv4 address an IPv6 address embeds, if any, and how.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let bits = ip.to_bits();
    // Truncating casts pick out 32-bit fields deliberately.
    let low32 = Ipv4Addr::from_bits(bits as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) {
        Some((Embedding::Ipv4Mapped, low32))
    } else if in_v6(ip, [0; 8], 96) {
        // `::` and `::1` are handled by the caller before this point.
        Some((Embedding::Ipv4Compatible, low32))
    } else if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
    {
        // Local-use NAT64 prefixes are in practice /96s carved from the /48.
        Some((Embedding::Nat64, low32))
    } else if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        Some((
            Embedding::SixToFour,
            Ipv4Addr::from_bits((bits >> 80) as u32),
        ))
    } else if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
        // Teredo obfuscates the client address by inverting every bit.
        Some((Embedding::Teredo, Ipv4Addr::from_bits(!(bits as u32))))
    } else {
        None
    }
}

/// Classify an IPv6 address.
fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        // AWS metadata over IPv6; would otherwise be plain unique-local.
        return AddrClass::CloudMetadata;
    }
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    if let Some((via, v4)) = embedded_v4(ip) {
        return AddrClass::Embedded {
            via,
            v4,
            inner: Box::new(classify_v4(v4)),
        };
    }
    if let Some((_, _, class)) = V6_RANGES.iter().find(|(net, len, _)| in_v6(ip, *net, *len)) {
        return class.clone();
    }
    // Only 2000::/3 is allocated for global unicast.
    if in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        AddrClass::Global
    } else {
        AddrClass::Reserved
    }
}

/// Classify an address. Embedded forms report the embedding and classify the embedded
/// IPv4 too (`inner` is never `Embedded`).
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether the gateway may dial `ip`: true iff an `allow` range contains it, or it is
/// `Global`.
///
/// For IPv4-mapped IPv6 (`::ffff:a.b.c.d`) the decision is exactly that of the IPv4
/// address `a.b.c.d` (dialing one reaches the other): the v4 form is classified and
/// range-matched. Every other `Embedded` form is not global (denied unless an `allow`
/// range contains the IPv6 address itself).
pub fn permitted(ip: IpAddr, allow: &[IpNet]) -> bool {
    // Canonicalise mapped addresses so that no IPv6 allow range can widen (or narrow)
    // what the IPv4 address would get.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    allow.iter().any(|net| net.contains(&ip)) || classify(ip) == AddrClass::Global
}

/// Recognise a host string that is an IP address in any spelling a client library or
/// resolver would accept, so it is never treated as a name.
///
/// * IPv4 `inet_aton` forms: 1 to 4 dot-separated parts, each decimal, octal (leading `0`)
///   or hex (`0x`/`0X` prefix), the last part filling the remaining bytes (`127.1`,
///   `2130706433`, `0x7f.1`, `0177.0.0.1`, `0x7f000001`), one trailing dot allowed
///   (`127.0.0.1.`).
/// * IPv6 with or without brackets (`::1`, `[::1]`, `[::ffff:127.0.0.1]`); zone ids
///   (`fe80::1%eth0`, `[fe80::1%25eth0]`) are stripped.
///
/// Returns `None` for names (`example.com`, `1.2.3.4.example`, `xn--bcher-kva.example`)
/// and for strings that are not valid IPs.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(rest) = host.strip_prefix('[') {
        // Brackets only ever wrap IPv6 (RFC 3986 IP-literal).
        return parse_ipv6_with_zone(rest.strip_suffix(']')?).map(IpAddr::V6);
    }
    if host.contains(':') {
        return parse_ipv6_with_zone(host).map(IpAddr::V6);
    }
    parse_ipv4_inet_aton(host).map(IpAddr::V4)
}

/// Parse IPv6, dropping a zone id (`%eth0`, or `%25eth0` as percent-encoded in URLs):
/// it names an interface and is not part of the address.
fn parse_ipv6_with_zone(s: &str) -> Option<Ipv6Addr> {
    let addr = match s.split_once('%') {
        Some((_, "")) => return None,
        Some((addr, _zone)) => addr,
        None => s,
    };
    addr.parse().ok()
}

/// Parse IPv4 the way `inet_aton` (and the WHATWG URL host parser) does.
fn parse_ipv4_inet_aton(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut parts = [0u32; 4];
    let mut count = 0;
    for label in s.split('.') {
        // More than four parts is not an address.
        *parts.get_mut(count)? = parse_ipv4_part(label)?;
        count += 1;
    }
    let (&last, leading) = parts.get(..count)?.split_last()?;
    // Leading parts are one byte each; the last part fills the remaining bytes.
    let mut value: u32 = 0;
    for &part in leading {
        if part > 0xff {
            return None;
        }
        value = (value << 8) | part;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    // checked_shl: with a single part the shift would be 32, and `value` is 0 anyway.
    let value = value.checked_shl(last_bits).unwrap_or(0) | last;
    Some(Ipv4Addr::from_bits(value))
}

/// One `inet_aton` part: `0x`-prefixed hex (digits may be empty, meaning 0, as in
/// WHATWG), `0`-prefixed octal, or decimal. Overflowing `u32` is rejected.
fn parse_ipv4_part(label: &str) -> Option<u32> {
    let (digits, radix) = if let Some(hex) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        (hex, 16)
    } else if let Some(octal) = label.strip_prefix('0').filter(|rest| !rest.is_empty()) {
        (octal, 8)
    } else if label.is_empty() {
        // "1..2": empty parts are invalid.
        return None;
    } else {
        (label, 10)
    };
    // Digit by digit rather than `from_str_radix`, which would also accept a '+' sign.
    digits.chars().try_fold(0u32, |acc, c| {
        acc.checked_mul(radix)?.checked_add(c.to_digit(radix)?)
    })
}

/// True if `host` is shaped like an IP literal even when it does not parse as one: its
/// last dot-separated label (ignoring one trailing dot) is all decimal digits or
/// `0x`-hex, or it contains `:` or starts with `[`.
///
/// Hosts shaped like IPs must never be treated as names (WHATWG URL treats such hosts as
/// IPv4 and rejects the invalid ones), so callers treat
/// `looks_like_ip(h) && parse_ip_literal(h).is_none()` as an invalid host.
pub fn looks_like_ip(host: &str) -> bool {
    if host.starts_with('[') || host.contains(':') {
        return true;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit_once('.').map_or(host, |(_, last)| last);
    let is_decimal = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    // As in WHATWG's "ends in a number", a bare "0x" counts as hex.
    let is_hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    is_decimal || is_hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("bad test address {s:?}: {e}"),
        }
    }

    fn v4(s: &str) -> Ipv4Addr {
        match s.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("bad test address {s:?}: {e}"),
        }
    }

    fn net(s: &str) -> IpNet {
        match s.parse() {
            Ok(net) => net,
            Err(e) => panic!("bad test range {s:?}: {e}"),
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| net(s)).collect()
    }

    fn embedded(via: Embedding, addr: &str, inner: AddrClass) -> AddrClass {
        AddrClass::Embedded {
            via,
            v4: v4(addr),
            inner: Box::new(inner),
        }
    }

    fn assert_classes(cases: &[(&str, AddrClass)]) {
        for (addr, want) in cases {
            assert_eq!(classify(ip(addr)), *want, "classify({addr})");
        }
    }

    #[test]
    fn every_plain_class_has_ipv4_and_ipv6_examples() {
        use AddrClass::*;
        assert_classes(&[
            ("11.22.33.44", Global),
            ("17.5.6.7", Global),
            ("2a01:4f8::1", Global),
            ("2a00:1450:4001::1", Global),
            ("0.0.0.0", Unspecified),
            ("::", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("::1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("169.254.1.1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("ff02::1", Multicast),
            ("ff05::1:3", Multicast),
            ("255.255.255.255", Broadcast),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("3fff:fff::1", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("2001:2::1", Benchmarking),
            ("2001:2:0:ffff::1", Benchmarking),
            ("0.1.2.3", Reserved),
            ("240.0.0.1", Reserved),
            ("254.255.255.255", Reserved),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            ("100::1", Reserved),
            ("100::ffff:1", Reserved),
            ("2001:10::1", Reserved),
            ("2001:20::1", Reserved),
            ("2001:1ff::1", Reserved),
            ("4000::1", Reserved),
            ("1234::1", Reserved),
            ("5f00::1", Reserved),
        ]);
    }

    #[test]
    fn range_boundaries_fall_on_the_right_side() {
        use AddrClass::*;
        assert_classes(&[
            ("172.15.255.255", Global),
            ("172.32.0.0", Global),
            ("100.63.255.255", Global),
            ("100.128.0.0", Global),
            ("169.253.255.255", Global),
            ("169.255.0.0", Global),
            ("198.17.255.255", Global),
            ("198.20.0.0", Global),
            ("223.255.255.255", Global),
            ("11.0.0.0", Global),
            ("3fff:1000::1", Global),
            ("2001:200::1", Global),
            ("2001:3::1", Reserved),
            ("fdff::1", Private),
            ("fe7f::1", Reserved),
            ("fbff::1", Reserved),
            ("1fff::1", Reserved),
            ("3fff:ffff::1", Global),
        ]);
    }

    #[test]
    fn metadata_addresses_are_classified_before_link_local() {
        use AddrClass::*;
        assert_classes(&[
            ("169.254.169.254", CloudMetadata),
            ("169.254.169.253", LinkLocal),
            ("fd00:ec2::254", CloudMetadata),
            ("fd00:ec2::253", Private),
            ("100.100.100.200", CloudMetadata),
            ("100.100.100.201", SharedCgnat),
        ]);
    }

    #[test]
    fn every_embedding_reports_its_ipv4_and_inner_class() {
        use AddrClass::*;
        use Embedding::*;
        assert_classes(&[
            (
                "::ffff:127.0.0.1",
                embedded(Ipv4Mapped, "127.0.0.1", Loopback),
            ),
            ("::ffff:7f00:1", embedded(Ipv4Mapped, "127.0.0.1", Loopback)),
            (
                "::ffff:169.254.169.254",
                embedded(Ipv4Mapped, "169.254.169.254", CloudMetadata),
            ),
            (
                "::ffff:11.22.33.44",
                embedded(Ipv4Mapped, "11.22.33.44", Global),
            ),
            (
                "::ffff:0.0.0.0",
                embedded(Ipv4Mapped, "0.0.0.0", Unspecified),
            ),
            (
                "::127.0.0.1",
                embedded(Ipv4Compatible, "127.0.0.1", Loopback),
            ),
            ("::2", embedded(Ipv4Compatible, "0.0.0.2", Reserved)),
            ("::10.0.0.1", embedded(Ipv4Compatible, "10.0.0.1", Private)),
            ("64:ff9b::10.0.0.1", embedded(Nat64, "10.0.0.1", Private)),
            (
                "64:ff9b::11.22.33.44",
                embedded(Nat64, "11.22.33.44", Global),
            ),
            (
                "64:ff9b:1::a9fe:a9fe",
                embedded(Nat64, "169.254.169.254", CloudMetadata),
            ),
            ("2002:7f00:1::", embedded(SixToFour, "127.0.0.1", Loopback)),
            (
                "2002:c0a8:101::1",
                embedded(SixToFour, "192.168.1.1", Private),
            ),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                embedded(Teredo, "192.0.2.45", Documentation),
            ),
            (
                "2001:0:1:2:3:4:80ff:fffe",
                embedded(Teredo, "127.0.0.1", Loopback),
            ),
        ]);
    }

    #[test]
    fn codes_are_stable_for_every_class() {
        use AddrClass::*;
        use Embedding::*;
        let cases = [
            (Global, "global"),
            (Unspecified, "unspecified"),
            (Loopback, "loopback"),
            (Private, "private"),
            (LinkLocal, "link_local"),
            (CloudMetadata, "cloud_metadata"),
            (SharedCgnat, "shared_cgnat"),
            (Multicast, "multicast"),
            (Broadcast, "broadcast"),
            (Documentation, "documentation"),
            (Benchmarking, "benchmarking"),
            (Reserved, "reserved"),
            (embedded(Ipv4Mapped, "127.0.0.1", Loopback), "ipv4_mapped"),
            (
                embedded(Ipv4Compatible, "0.0.0.2", Reserved),
                "ipv4_compatible",
            ),
            (embedded(Nat64, "11.22.33.44", Global), "nat64"),
            (embedded(SixToFour, "127.0.0.1", Loopback), "6to4"),
            (embedded(Teredo, "192.0.2.45", Documentation), "teredo"),
        ];
        for (class, code) in cases {
            assert_eq!(class.code(), code, "{class:?}");
        }
    }

    #[test]
    fn display_text_explains_the_class() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "cloud metadata endpoint"),
            ("11.22.33.44", "global unicast"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            (
                "::ffff:127.0.0.1",
                "IPv4-mapped IPv6 (embeds 127.0.0.1, loopback)",
            ),
            (
                "64:ff9b::a9fe:a9fe",
                "NAT64 IPv6 (embeds 169.254.169.254, cloud metadata endpoint)",
            ),
            (
                "2002:a00:1::",
                "6to4 IPv6 (embeds 10.0.0.1, private network)",
            ),
        ];
        for (addr, text) in cases {
            assert_eq!(classify(ip(addr)).to_string(), text, "{addr}");
        }
    }

    #[test]
    fn only_global_addresses_are_permitted_without_allow_ranges() {
        let cases = [
            ("11.22.33.44", true),
            ("2a01:4f8::1", true),
            ("10.0.0.1", false),
            ("fd00::1", false),
            ("127.0.0.1", false),
            ("::1", false),
            ("169.254.169.254", false),
            ("fd00:ec2::254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
        ];
        for (addr, want) in cases {
            assert_eq!(permitted(ip(addr), &[]), want, "{addr}");
        }
    }

    #[test]
    fn allow_ranges_permit_private_addresses() {
        let allow = nets(&["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]);
        let cases = [
            ("10.1.2.3", true),
            ("fd12::1", true),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("192.168.1.1", false),
            ("fc00::1", false),
            ("11.22.33.44", true),
        ];
        for (addr, want) in cases {
            assert_eq!(permitted(ip(addr), &allow), want, "{addr}");
        }
    }

    #[test]
    fn mapped_ipv6_is_permitted_exactly_like_its_ipv4() {
        let allows = [
            nets(&[]),
            nets(&["10.0.0.0/8"]),
            nets(&["::ffff:0:0/96"]),
            nets(&["::/0"]),
            nets(&["0.0.0.0/0"]),
            nets(&["127.0.0.0/8", "fd00::/8"]),
        ];
        let addrs = [
            "11.22.33.44",
            "10.0.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "0.0.0.0",
        ];
        for allow in &allows {
            for addr in addrs {
                let plain = v4(addr);
                let mapped = IpAddr::V6(plain.to_ipv6_mapped());
                assert_eq!(
                    permitted(mapped, allow),
                    permitted(IpAddr::V4(plain), allow),
                    "{mapped} vs {plain} with {allow:?}"
                );
            }
        }
        assert!(permitted(ip("::ffff:11.22.33.44"), &[]));
        assert!(!permitted(ip("::ffff:10.0.0.1"), &[]));
        assert!(permitted(ip("::ffff:10.0.0.1"), &nets(&["10.0.0.0/8"])));
        // An IPv6 range over the mapped block does not open the IPv4 address.
        assert!(!permitted(ip("::ffff:10.0.0.1"), &nets(&["::ffff:0:0/96"])));
    }

    #[test]
    fn other_embedded_forms_are_permitted_only_by_a_range_over_the_ipv6_address() {
        let cases = [
            ("64:ff9b::11.22.33.44", &[][..], false),
            ("64:ff9b::11.22.33.44", &["11.22.33.0/24"][..], false),
            ("64:ff9b::11.22.33.44", &["64:ff9b::/96"][..], true),
            ("64:ff9b::10.0.0.1", &["10.0.0.0/8"][..], false),
            ("2002:808:808::1", &[][..], false),
            ("2002:808:808::1", &["2002::/16"][..], true),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", &[][..], false),
            ("::11.22.33.44", &["11.22.33.44/32"][..], false),
        ];
        for (addr, allow, want) in cases {
            assert_eq!(
                permitted(ip(addr), &nets(allow)),
                want,
                "{addr} with {allow:?}"
            );
        }
    }

    #[test]
    fn embedded_loopback_is_never_permitted() {
        let addrs = [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::",
            "2001:0:1:2:3:4:80ff:fffe",
        ];
        let allows = [
            nets(&[]),
            nets(&["10.0.0.0/8", "192.168.0.0/16", "fc00::/7"]),
        ];
        for allow in &allows {
            for addr in addrs {
                assert!(!permitted(ip(addr), allow), "{addr} with {allow:?}");
            }
        }
    }

    #[test]
    fn odd_ipv4_spellings_are_recognised_as_ips() {
        let cases = [
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("127.1.", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("00.00.00.00", "0.0.0.0"),
            ("192.168.257", "192.168.1.1"),
            ("169.254.43518", "169.254.169.254"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("0xA9.0376.0xa9fe", "169.254.169.254"),
            ("4294967295", "255.255.255.255"),
            ("255.16777215", "255.255.255.255"),
            ("000000000000000000000000010.1", "8.0.0.1"),
        ];
        for (host, want) in cases {
            assert_eq!(parse_ip_literal(host), Some(ip(want)), "{host}");
            assert!(looks_like_ip(host), "{host}");
        }
    }

    #[test]
    fn ipv6_literals_are_recognised_with_or_without_brackets_and_zones() {
        let cases = [
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
            ("::ffff:7f00:1", "::ffff:127.0.0.1"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fe80::1%25eth0]", "fe80::1"),
            ("FE80::1%en0", "fe80::1"),
            ("[2001:DB8::1]", "2001:db8::1"),
            ("fd00:ec2::254", "fd00:ec2::254"),
        ];
        for (host, want) in cases {
            assert_eq!(parse_ip_literal(host), Some(ip(want)), "{host}");
            assert!(looks_like_ip(host), "{host}");
        }
    }

    #[test]
    fn invalid_ip_spellings_are_not_ips_but_still_look_like_ips() {
        let cases = [
            "256.1.1.1",
            "1.256.1.1",
            "1.2.3.256",
            "1.2.65536",
            "1.16777216",
            "0x1ffffffff",
            "4294967296",
            "99999999999999999999999999",
            "0x10000000000000000000000000",
            "1..2",
            "1.2.3.4.5",
            "08.0.0.1",
            "09",
            "1.2.3.08",
            "[127.0.0.1]",
            "[::1",
            "::1]",
            "[::1]:443",
            "fe80::1%",
            "[fe80::1%]",
            ":::1",
            "1:2:3:4:5:6:7:8:9",
            "::ffff:127.1",
            "[]",
            "+1.2.3.4",
            " 127.0.0.1",
            "\u{0661}\u{0662}\u{0667}.0.0.1",
        ];
        for host in cases {
            assert_eq!(parse_ip_literal(host), None, "{host}");
            assert!(looks_like_ip(host), "{host}");
        }
    }

    #[test]
    fn names_are_not_ip_literals() {
        let cases = [
            "example.com",
            "1.2.3.4.example",
            "xn--bcher-kva.example",
            "localhost",
            "0x7f.example",
            "123.com",
            "deadbeef",
            "example.0xg",
            "a1.b2",
            "example.com.",
        ];
        for host in cases {
            assert_eq!(parse_ip_literal(host), None, "{host}");
            assert!(!looks_like_ip(host), "{host}");
        }
    }

    #[test]
    fn garbage_is_neither_an_ip_nor_ip_shaped() {
        let cases = [
            "",
            ".",
            "1.2.3.4..",
            "1.2.3.-4",
            "127.0.0.1 ",
            "127.0.0.1%eth0",
            "0x7g",
            "\u{0661}\u{0662}\u{0667}.0.0.x",
        ];
        for host in cases {
            assert_eq!(parse_ip_literal(host), None, "{host:?}");
            assert!(!looks_like_ip(host), "{host:?}");
        }
    }

    #[test]
    fn hosts_ending_in_a_number_or_with_a_colon_look_like_ips() {
        let cases = [
            "example.123",
            "example.0x1f",
            "foo.0x",
            "1.2.3.4.",
            "[junk",
            "a:b",
        ];
        for host in cases {
            assert!(looks_like_ip(host), "{host}");
        }
    }
}
