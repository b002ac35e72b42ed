//! The socket options that go with the ruleset: reading a redirected connection's
//! original destination, and marking the gateway's own upstream sockets.
//!
//! After `redirect`, an accepted connection's local address is the listener's; conntrack
//! still knows where the agent meant to go, and `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6) reads it back. The kernel hands back a `sockaddr_in` /
//! `sockaddr_in6` with the address and port in network byte order.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// The destination the client originally addressed, for a connection accepted on a
/// listener that `redirect` sent it to (for a connection that was not redirected, the
/// local address itself).
///
/// IPv4 sockets use `SO_ORIGINAL_DST`, IPv6 sockets `IP6T_SO_ORIGINAL_DST`; a connection
/// accepted on a dual-stack IPv6 listener from an IPv4 client (local address
/// `::ffff:a.b.c.d`) is tracked as IPv4, so it is asked with the IPv4 option and the
/// answer is a plain IPv4 address. Fails with `ENOENT` if conntrack has no entry for the
/// connection.
pub fn original_dst(stream: &impl AsFd) -> io::Result<SocketAddr> {
    let fd = stream.as_fd();
    let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    let tracked_as_v4 = match local.family() {
        Some(AddressFamily::Inet) => true,
        Some(AddressFamily::Inet6) => local
            .as_sockaddr_in6()
            .is_some_and(|a| a.ip().to_ipv4_mapped().is_some()),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("original destination of a non-IP socket ({other:?})"),
            ));
        }
    };
    if tracked_as_v4 {
        v4_from_raw(&getsockopt(&fd, sockopt::OriginalDst)?).map(SocketAddr::V4)
    } else {
        v6_from_raw(&getsockopt(&fd, sockopt::Ip6tOriginalDst)?).map(SocketAddr::V6)
    }
}

/// Converts the kernel's `sockaddr_in` (address and port in network byte order).
fn v4_from_raw(raw: &libc::sockaddr_in) -> io::Result<SocketAddrV4> {
    if i32::from(raw.sin_family) != libc::AF_INET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SO_ORIGINAL_DST returned address family {}", raw.sin_family),
        ));
    }
    // `s_addr` holds the four address bytes in wire order; reading them back in native
    // order yields exactly those bytes.
    let ip = Ipv4Addr::from(raw.sin_addr.s_addr.to_ne_bytes());
    Ok(SocketAddrV4::new(ip, u16::from_be(raw.sin_port)))
}

/// Converts the kernel's `sockaddr_in6` (port and flow label in network byte order, the
/// scope id in host order).
fn v6_from_raw(raw: &libc::sockaddr_in6) -> io::Result<SocketAddrV6> {
    if i32::from(raw.sin6_family) != libc::AF_INET6 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "IP6T_SO_ORIGINAL_DST returned address family {}",
                raw.sin6_family
            ),
        ));
    }
    Ok(SocketAddrV6::new(
        Ipv6Addr::from(raw.sin6_addr.s6_addr),
        u16::from_be(raw.sin6_port),
        u32::from_be(raw.sin6_flowinfo),
        raw.sin6_scope_id,
    ))
}

/// Sets `SO_MARK` on an upstream socket (before `connect`), so the firewall can tell
/// the gateway's own traffic from the agent's. Needs CAP_NET_ADMIN.
pub fn set_mark(socket: &impl AsFd, mark: u32) -> io::Result<()> {
    Ok(setsockopt(socket, sockopt::Mark, &mark)?)
}

/// Reads a socket's `SO_MARK` (0 if none was set).
pub fn mark(socket: &impl AsFd) -> io::Result<u32> {
    Ok(getsockopt(socket, sockopt::Mark)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_original_destinations_are_read_in_network_byte_order() {
        let raw = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            // 443 = 0x01bb, most significant byte first on the wire.
            sin_port: u16::from_ne_bytes([0x01, 0xbb]),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([198, 51, 100, 10]),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            v4_from_raw(&raw).unwrap(),
            "198.51.100.10:443".parse().unwrap()
        );
    }

    #[test]
    fn ipv6_original_destinations_are_read_in_network_byte_order() {
        let ip: Ipv6Addr = "2001:db8:100::10".parse().unwrap();
        let raw = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: u16::from_ne_bytes([0x00, 0x50]),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: ip.octets(),
            },
            sin6_scope_id: 0,
        };
        assert_eq!(
            SocketAddr::V6(v6_from_raw(&raw).unwrap()),
            "[2001:db8:100::10]:80".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn a_wrong_address_family_is_an_error_not_garbage() {
        let raw = libc::sockaddr_in {
            sin_family: libc::AF_INET6 as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        assert_eq!(
            v4_from_raw(&raw).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn original_dst_of_a_non_ip_socket_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            original_dst(&a).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
