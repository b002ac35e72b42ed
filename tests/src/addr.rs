//! The lab's address plan.
//!
//! Every address the lab assigns comes from ranges that cannot lead off this machine:
//! the benchmarking range 198.18.0.0/15 for the agent network, the documentation ranges
//! 198.51.100.0/24 and 203.0.113.0/24 for the simulated internet, and 2001:db8::/32 for
//! IPv6. 192.0.2.0/24 is deliberately absent: on the project's machines it is the real
//! uplink. Tests should use these constants rather than spelling addresses out.
//!
//! ```text
//!   agent netns            gateway netns                      wan netns
//!  eth0 198.18.0.2  ---- eth1 198.18.0.1    eth0 198.51.100.1 ---- eth0 198.51.100.2
//!       2001:db8:a::2         2001:db8:a::1      2001:db8:100::1        2001:db8:100::2
//!                                                                    + service addresses
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The agent's address on its only interface (`eth0`).
pub const AGENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The agent's IPv6 address on `eth0`.
pub const AGENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 2);
/// The agent network (IPv4), holding only the agent and the gateway.
pub const AGENT_NET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 24);
/// The agent network (IPv6).
pub const AGENT_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0), 64);
/// The whole range the agent side may use; the wan routes it back to the gateway.
pub const AGENT_RANGE_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);

/// The gateway's agent-side address (`eth1`): the agent's default route and, once a
/// gateway runs, its resolver.
pub const GATEWAY_AGENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The gateway's agent-side IPv6 address (`eth1`).
pub const GATEWAY_AGENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);
/// The gateway's wan-side address (`eth0`).
pub const GATEWAY_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The gateway's wan-side IPv6 address (`eth0`).
pub const GATEWAY_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

/// The wan host's own address on `eth0` (the gateway's next hop).
pub const WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The wan host's own IPv6 address on `eth0`.
pub const WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
/// The wan network (IPv4) between the gateway and the simulated internet.
pub const WAN_NET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 51, 100, 0), 24);
/// The wan network (IPv6).
pub const WAN_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0), 64);
/// The second "public" range, reached through the wan host (IPv4).
pub const OTHER_NET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(203, 0, 113, 0), 24);
/// The second "public" range, reached through the wan host (IPv6); the gateway routes
/// the /48 and the wan host holds a /64 of it.
pub const OTHER_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0), 48);

/// The lab's authoritative DNS server (UDP and TCP port 53).
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
/// The lab's authoritative DNS server over IPv6.
pub const DNS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x53);
/// The main HTTPS origin (port 443, also plain HTTP on port 80); `allowed.test`.
pub const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The main HTTPS origin over IPv6.
pub const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
/// An HTTPS origin in the other public range (port 443 and 80); `other.allowed.test`.
pub const OTHER_ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The other-range origin over IPv6.
pub const OTHER_ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x10);
/// The plain-HTTP origin (port 80 only); `http.test`.
pub const HTTP_ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
/// The plain-HTTP origin over IPv6.
pub const HTTP_ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x80);
/// The TCP and UDP echo servers (port 7); `echo.test`.
pub const ECHO_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The echo servers over IPv6.
pub const ECHO_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);

/// The address `private.test` resolves to: an RFC 1918 address no lab host owns. It exists
/// for SSRF tests and must never be dialed.
pub const PRIVATE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The unique-local IPv6 address `private.test` resolves to (also never dialed).
pub const PRIVATE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

/// The port of the DNS server.
pub const DNS_PORT: u16 = 53;
/// The port of the HTTPS origins.
pub const HTTPS_PORT: u16 = 443;
/// The port of the plain-HTTP origins.
pub const HTTP_PORT: u16 = 80;
/// The port of the TCP and UDP echo servers.
pub const ECHO_PORT: u16 = 7;

/// Addresses that serve HTTPS on [`HTTPS_PORT`].
pub const HTTPS_ORIGINS: [IpAddr; 4] = [
    IpAddr::V4(ORIGIN_V4),
    IpAddr::V6(ORIGIN_V6),
    IpAddr::V4(OTHER_ORIGIN_V4),
    IpAddr::V6(OTHER_ORIGIN_V6),
];
/// Addresses that serve plain HTTP on [`HTTP_PORT`]: the HTTPS origins plus the
/// dedicated plain-HTTP origin.
pub const HTTP_ORIGINS: [IpAddr; 6] = [
    IpAddr::V4(ORIGIN_V4),
    IpAddr::V6(ORIGIN_V6),
    IpAddr::V4(OTHER_ORIGIN_V4),
    IpAddr::V6(OTHER_ORIGIN_V6),
    IpAddr::V4(HTTP_ORIGIN_V4),
    IpAddr::V6(HTTP_ORIGIN_V6),
];

/// The lab DNS server's IPv4 socket address.
pub const fn dns_v4() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(DNS_V4), DNS_PORT)
}

/// The lab DNS server's IPv6 socket address.
pub const fn dns_v6() -> SocketAddr {
    SocketAddr::new(IpAddr::V6(DNS_V6), DNS_PORT)
}

/// True if `ip` lies in one of the ranges the lab may use (198.18.0.0/15,
/// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, loopback). Every interface address
/// the lab assigns is one; tests can use this to check their own destinations. (DNS
/// records may point elsewhere on purpose, e.g. `private.test`, as SSRF bait.)
pub fn is_lab_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 198 && o[1] == 51 && o[2] == 100)
                || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0] == 0x2001 && s[1] == 0xdb8)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_service_address_is_a_lab_address() {
        for ip in HTTP_ORIGINS.iter().chain(HTTPS_ORIGINS.iter()) {
            assert!(is_lab_address(*ip), "{ip}");
        }
        for ip in [
            IpAddr::V4(AGENT_V4),
            IpAddr::V6(AGENT_V6),
            IpAddr::V4(GATEWAY_AGENT_V4),
            IpAddr::V4(GATEWAY_WAN_V4),
            IpAddr::V4(WAN_V4),
            IpAddr::V4(DNS_V4),
            IpAddr::V6(DNS_V6),
            IpAddr::V4(ECHO_V4),
            IpAddr::V4(Ipv4Addr::new(198, 19, 255, 255)),
        ] {
            assert!(is_lab_address(ip), "{ip}");
        }
    }

    #[test]
    fn the_uplink_and_real_resolvers_are_not_lab_addresses() {
        for ip in [
            "192.0.2.1",
            "192.0.2.2",
            "17.5.6.7",
            "11.22.33.44",
            "198.20.0.1",
            "10.0.0.1",
            "2001:4860::8888",
            "fd00::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_lab_address(ip), "{ip}");
        }
    }
}
