//! Forcing the agent's traffic through the gateway, over rtnetlink.
//!
//! On the agent's interface:
//! * the link is brought up;
//! * a host route to the gateway (`<gw>/32 dev <if> scope link`) is added, the IPv4
//!   default route replaced by `default via <gw> dev <if>`, and then every other route
//!   of the main table that leaves through the interface (the connected subnet route
//!   above all) and every other default route is removed: any other address on the agent
//!   network, including the `.1` that Apple Container gives the host, is reached only
//!   through the gateway (DESIGN.md section 5, item 8);
//! * IPv6 is either disabled on the interface (`disable_ipv6`, falling back to removing
//!   its addresses and routes when `/proc/sys` is read-only) with every IPv6 default
//!   route removed, or routed the same way as IPv4 through the gateway's IPv6 address
//!   (item 7);
//! * ICMP redirects are refused (and router advertisements, when IPv6 is routed), so no
//!   on-link host can install another next hop later. These sysctls are best effort:
//!   a read-only `/proc/sys` gives a warning, not a failure.
//!
//! The result is read back and checked. Everything here runs on a current-thread tokio
//! runtime owned by [`Netlink`], which must be dropped ([`Netlink::close`]) before
//! privilege is dropped: capabilities are per thread and the process must be
//! single-threaded then.
//!
//! Deciding what to keep and what to remove is done by pure functions over
//! [`RouteInfo`], tested without a network namespace.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// What to do about IPv6 on the agent's interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// Route IPv6 through the gateway's IPv6 address (`BOTTLENECK_GATEWAY6`).
    Route,
    /// Disable IPv6 on the interface and remove every IPv6 default route.
    #[default]
    Disable,
}

/// An address with its prefix length, as assigned to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr<A> {
    /// The interface's own address.
    pub addr: A,
    /// The prefix length of its subnet.
    pub prefix: u8,
}

impl IfAddr<Ipv4Addr> {
    /// True if `ip` is in this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(ip) & mask
    }
}

impl IfAddr<Ipv6Addr> {
    /// True if `ip` is in this address's subnet.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix.min(128)))
            .unwrap_or(0);
        u128::from(self.addr) & mask == u128::from(ip) & mask
    }
}

impl<A: fmt::Display> fmt::Display for IfAddr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An interface with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// IPv4 addresses.
    pub v4: Vec<IfAddr<Ipv4Addr>>,
    /// IPv6 addresses (link-local included).
    pub v6: Vec<IfAddr<Ipv6Addr>>,
}

/// What IPv6 will look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V6Plan {
    /// Disabled on the interface.
    Disable,
    /// Routed through the gateway's IPv6 address.
    Route {
        /// The gateway's IPv6 address on the agent network.
        gateway: Ipv6Addr,
    },
}

/// A validated network configuration, ready to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The agent's interface.
    pub iface: Interface,
    /// The gateway's IPv4 address (on a connected subnet of `iface`).
    pub gateway: Ipv4Addr,
    /// The interface's own address on the gateway's subnet (source of the host route).
    pub source: Ipv4Addr,
    /// IPv6.
    pub v6: V6Plan,
}

/// Failure to inspect, validate or configure the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The runtime for netlink could not start.
    #[error("starting the netlink runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// A netlink request failed.
    #[error("netlink: {what}: {reason}")]
    Request {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        reason: String,
    },
    /// The named interface does not exist.
    #[error("interface {name:?} (BOTTLENECK_IFACE) does not exist")]
    NoSuchInterface {
        /// Its name.
        name: String,
    },
    /// No interface was named and none could be chosen.
    #[error(
        "no interface given (BOTTLENECK_IFACE) and none could be chosen: there is no IPv4 \
         default route and {reason}"
    )]
    NoInterface {
        /// Why the fallback did not work.
        reason: String,
    },
    /// The gateway is not an address on a directly connected subnet of the interface.
    #[error(
        "gateway {gateway} is not on a directly connected subnet of {iface} (its addresses: \
         {addresses})"
    )]
    GatewayNotOnLink {
        /// The gateway.
        gateway: IpAddr,
        /// The interface.
        iface: String,
        /// The interface's addresses of that family.
        addresses: String,
    },
    /// The gateway address cannot be a gateway.
    #[error("gateway {gateway} cannot be used: {reason}")]
    BadGateway {
        /// The gateway.
        gateway: IpAddr,
        /// Why.
        reason: &'static str,
    },
    /// IPv6 routing asked for without a gateway IPv6 address.
    #[error(
        "BOTTLENECK_IPV6=route needs the gateway's IPv6 address in BOTTLENECK_GATEWAY6 \
         (or use BOTTLENECK_IPV6=disable)"
    )]
    NoGateway6,
    /// A sysctl that must be written could not be.
    #[error("writing {path}: {source}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The routing table read back is not what was configured.
    #[error("the routing table is not as configured: {0}")]
    Verify(String),
}

/// What a route is, for deciding whether it stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Routing table id.
    pub table: u32,
    /// Destination and prefix length (prefix 0: a default route).
    pub dst: (IpAddr, u8),
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interfaces (one, or several for a multipath route).
    pub oifs: Vec<u32>,
    /// Route type (unicast, local, broadcast, ...).
    pub kind: RouteType,
}

impl RouteInfo {
    /// True for a default route (prefix length 0).
    pub fn is_default(&self) -> bool {
        self.dst.1 == 0
    }
}

impl fmt::Display for RouteInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            f.write_str("default")?;
        } else {
            write!(f, "{}/{}", self.dst.0, self.dst.1)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        for oif in &self.oifs {
            write!(f, " dev #{oif}")?;
        }
        if self.table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// The fate of one route of the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// One of the routes the shim installs.
    Ours,
    /// To be removed.
    Remove,
    /// Left alone (another table, or another interface's non-default route).
    Keep,
}

/// The main table's id.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// Decides a route's fate when the only routes allowed through interface `index` are a
/// host route to `gateway` and the default route via `gateway` (`gateway` `None`: no
/// route at all, IPv6 disabled). Every default route other than ours goes, on any
/// interface.
pub fn fate(route: &RouteInfo, index: u32, gateway: Option<IpAddr>) -> Fate {
    if route.table != MAIN_TABLE {
        return Fate::Keep;
    }
    let only_ours = route.oifs == [index];
    if let Some(gw) = gateway {
        let host_len = if gw.is_ipv4() { 32 } else { 128 };
        if only_ours && route.gateway.is_none() && route.dst == (gw, host_len) {
            return Fate::Ours;
        }
        if only_ours && route.is_default() && route.gateway == Some(gw) {
            return Fate::Ours;
        }
    }
    if route.is_default() || route.oifs.contains(&index) {
        return Fate::Remove;
    }
    Fate::Keep
}

/// True for an IPv6 link-local unicast address (fe80::/10).
fn is_link_local6(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Validates the gateway(s) against the interface and returns the plan.
pub fn plan(
    iface: Interface,
    gateway: Ipv4Addr,
    ipv6: Ipv6Mode,
    gateway6: Option<Ipv6Addr>,
) -> Result<Plan, NetError> {
    let bad = |reason| NetError::BadGateway {
        gateway: IpAddr::V4(gateway),
        reason,
    };
    if gateway.is_unspecified()
        || gateway.is_loopback()
        || gateway.is_multicast()
        || gateway.is_broadcast()
    {
        return Err(bad("not a unicast address"));
    }
    if iface.v4.iter().any(|a| a.addr == gateway) {
        return Err(bad("it is the agent's own address"));
    }
    let Some(own) = iface.v4.iter().find(|a| a.contains(gateway)) else {
        return Err(NetError::GatewayNotOnLink {
            gateway: IpAddr::V4(gateway),
            iface: iface.name.clone(),
            addresses: list(&iface.v4),
        });
    };
    if own.prefix <= 30 {
        let host_bits = u32::MAX >> own.prefix;
        let g = u32::from(gateway);
        if g & host_bits == 0 {
            return Err(bad("it is the subnet's network address"));
        }
        if g & host_bits == host_bits {
            return Err(bad("it is the subnet's broadcast address"));
        }
    }
    let source = own.addr;
    let v6 = match ipv6 {
        Ipv6Mode::Disable => V6Plan::Disable,
        Ipv6Mode::Route => {
            let gw6 = gateway6.ok_or(NetError::NoGateway6)?;
            let bad6 = |reason| NetError::BadGateway {
                gateway: IpAddr::V6(gw6),
                reason,
            };
            if gw6.is_unspecified() || gw6.is_loopback() || gw6.is_multicast() {
                return Err(bad6("not a unicast address"));
            }
            if iface.v6.iter().any(|a| a.addr == gw6) {
                return Err(bad6("it is the agent's own address"));
            }
            let on_link = if is_link_local6(gw6) {
                iface.v6.iter().any(|a| is_link_local6(a.addr))
            } else {
                iface
                    .v6
                    .iter()
                    .any(|a| !is_link_local6(a.addr) && a.contains(gw6))
            };
            if !on_link {
                return Err(NetError::GatewayNotOnLink {
                    gateway: IpAddr::V6(gw6),
                    iface: iface.name.clone(),
                    addresses: list(&iface.v6),
                });
            }
            V6Plan::Route { gateway: gw6 }
        }
    };
    Ok(Plan {
        iface,
        gateway,
        source,
        v6,
    })
}

fn list<A: fmt::Display>(addrs: &[IfAddr<A>]) -> String {
    if addrs.is_empty() {
        return "none".to_owned();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the agent's interface index when none is named: the output interface of the
/// IPv4 default route of the main table (the lowest-metric one first in the dump), else
/// the one interface with a subnet containing `gateway`.
pub fn choose_interface(
    routes: &[RouteInfo],
    interfaces: &[Interface],
    gateway: Ipv4Addr,
) -> Result<u32, NetError> {
    if let Some(oif) = routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.is_default() && r.dst.0.is_ipv4())
        .find_map(|r| r.oifs.first().copied())
    {
        return Ok(oif);
    }
    let on_link: Vec<&Interface> = interfaces
        .iter()
        .filter(|i| i.v4.iter().any(|a| a.contains(gateway)))
        .collect();
    match on_link.as_slice() {
        [one] => Ok(one.index),
        [] => Err(NetError::NoInterface {
            reason: format!("no interface has a subnet containing the gateway {gateway}"),
        }),
        many => Err(NetError::NoInterface {
            reason: format!(
                "several interfaces have a subnet containing the gateway {gateway}: {}",
                many.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Summarises a route message; `None` for families other than IPv4/IPv6.
pub fn route_info(msg: &RouteMessage) -> Option<RouteInfo> {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let mut info = RouteInfo {
        table: u32::from(msg.header.table),
        dst: (unspecified, msg.header.destination_prefix_length),
        gateway: None,
        oifs: Vec::new(),
        kind: msg.header.kind,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => info.table = *t,
            RouteAttribute::Destination(a) => {
                if let Some(a) = ip(a) {
                    info.dst.0 = a;
                }
            }
            RouteAttribute::Gateway(a) => info.gateway = ip(a),
            RouteAttribute::Oif(i) => info.oifs.push(*i),
            RouteAttribute::MultiPath(hops) => {
                info.oifs.extend(hops.iter().map(|h| h.interface_index));
            }
            _ => {}
        }
    }
    Some(info)
}

/// Warnings and changes from applying a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Routes removed (for messages).
    pub removed: Vec<String>,
    /// Best-effort steps that did not work.
    pub warnings: Vec<String>,
}

/// A netlink connection on its own current-thread runtime.
pub struct Netlink {
    handle: Handle,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

fn request_error(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Request {
        what,
        reason: describe(&e),
    }
}

fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

impl Netlink {
    /// Starts the runtime and opens the netlink socket.
    pub fn open() -> Result<Netlink, NetError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetError::Runtime)?;
        let (connection, handle, _) = {
            let _entered = runtime.enter();
            rtnetlink::new_connection().map_err(NetError::Socket)?
        };
        runtime.spawn(connection);
        Ok(Netlink { handle, runtime })
    }

    /// Closes the socket and shuts the runtime down (it has no threads of its own; this
    /// returns when everything it owned is gone).
    pub fn close(self) {
        let Netlink { handle, runtime } = self;
        drop(handle);
        drop(runtime);
    }

    /// Every interface with its addresses, by index.
    fn interfaces(&self) -> Result<Vec<Interface>, NetError> {
        let handle = self.handle.clone();
        self.runtime.block_on(async move {
            let links: Vec<_> = handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(request_error("listing interfaces"))?;
            let addrs: Vec<AddressMessage> = handle
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(request_error("listing addresses"))?;
            let mut by_index: BTreeMap<u32, Interface> = BTreeMap::new();
            for link in links {
                let name = link
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                by_index.insert(
                    link.header.index,
                    Interface {
                        index: link.header.index,
                        name,
                        v4: Vec::new(),
                        v6: Vec::new(),
                    },
                );
            }
            for msg in addrs {
                let Some(iface) = by_index.get_mut(&msg.header.index) else {
                    continue;
                };
                let mut address = None;
                let mut local = None;
                for attr in &msg.attributes {
                    match attr {
                        AddressAttribute::Address(a) => address = Some(*a),
                        AddressAttribute::Local(a) => local = Some(*a),
                        _ => {}
                    }
                }
                // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
                // point-to-point links).
                match local.or(address) {
                    Some(IpAddr::V4(addr)) => iface.v4.push(IfAddr {
                        addr,
                        prefix: msg.header.prefix_len,
                    }),
                    Some(IpAddr::V6(addr)) => iface.v6.push(IfAddr {
                        addr,
                        prefix: msg.header.prefix_len,
                    }),
                    None => {}
                }
            }
            Ok(by_index.into_values().collect())
        })
    }

    /// The routes of one family, every table, with their raw messages.
    fn routes(&self, v6: bool) -> Result<Vec<(RouteInfo, RouteMessage)>, NetError> {
        let handle = self.handle.clone();
        let request = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let family = if v6 { "IPv6" } else { "IPv4" };
        self.runtime.block_on(async move {
            let msgs: Vec<RouteMessage> = handle
                .route()
                .get(request)
                .execute()
                .try_collect()
                .await
                .map_err(request_error(format!("listing {family} routes")))?;
            Ok(msgs
                .into_iter()
                .filter_map(|m| route_info(&m).map(|i| (i, m)))
                .collect())
        })
    }

    /// Finds the agent's interface: by name, or as [`choose_interface`] says.
    pub fn interface(&self, name: Option<&str>, gateway: Ipv4Addr) -> Result<Interface, NetError> {
        let interfaces = self.interfaces()?;
        let index = match name {
            Some(name) => {
                return interfaces
                    .into_iter()
                    .find(|i| i.name == name)
                    .ok_or_else(|| NetError::NoSuchInterface {
                        name: name.to_owned(),
                    });
            }
            None => {
                let routes: Vec<RouteInfo> =
                    self.routes(false)?.into_iter().map(|(i, _)| i).collect();
                choose_interface(&routes, &interfaces, gateway)?
            }
        };
        interfaces
            .into_iter()
            .find(|i| i.index == index)
            .ok_or_else(|| NetError::NoInterface {
                reason: format!("the default route's interface #{index} vanished"),
            })
    }

    fn run<F>(&self, what: impl Into<String>, fut: F) -> Result<(), NetError>
    where
        F: std::future::Future<Output = Result<(), rtnetlink::Error>>,
    {
        self.runtime.block_on(fut).map_err(request_error(what))
    }

    /// Applies `plan` and checks the result.
    pub fn apply(&self, plan: &Plan) -> Result<Applied, NetError> {
        let mut applied = Applied::default();
        let index = plan.iface.index;
        let name = plan.iface.name.as_str();
        let h = &self.handle;

        self.run(
            format!("bringing {name} up"),
            h.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute(),
        )?;
        for path in [
            "ipv4/conf/all/accept_redirects".to_owned(),
            format!("ipv4/conf/{name}/accept_redirects"),
        ] {
            best_effort_sysctl(&path, "0", &mut applied);
        }

        // IPv4: host route to the gateway, default via the gateway, then narrow.
        let gw = plan.gateway;
        let host = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(gw, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .pref_source(plan.source)
            .build();
        self.run(
            format!("adding the host route {gw}/32 dev {name}"),
            h.route().add(host).replace().execute(),
        )?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        self.run(
            format!("replacing the IPv4 default route with one via {gw} dev {name}"),
            h.route().add(default).replace().execute(),
        )?;
        self.remove_unwanted(false, index, Some(IpAddr::V4(gw)), &mut applied)?;

        match plan.v6 {
            V6Plan::Disable => self.disable_v6(&plan.iface, &mut applied)?,
            V6Plan::Route { gateway: gw6 } => {
                for path in [
                    format!("ipv6/conf/{name}/accept_ra"),
                    format!("ipv6/conf/{name}/accept_redirects"),
                    "ipv6/conf/all/accept_redirects".to_owned(),
                ] {
                    best_effort_sysctl(&path, "0", &mut applied);
                }
                if !is_link_local6(gw6) {
                    let host = RouteMessageBuilder::<Ipv6Addr>::new()
                        .destination_prefix(gw6, 128)
                        .output_interface(index)
                        .build();
                    self.run(
                        format!("adding the host route {gw6}/128 dev {name}"),
                        h.route().add(host).replace().execute(),
                    )?;
                }
                let default = RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(gw6)
                    .output_interface(index)
                    .build();
                self.run(
                    format!("replacing the IPv6 default route with one via {gw6} dev {name}"),
                    h.route().add(default).replace().execute(),
                )?;
                self.remove_unwanted(true, index, Some(IpAddr::V6(gw6)), &mut applied)?;
            }
        }
        self.verify(plan)?;
        Ok(applied)
    }

    /// Removes every main-table route of one family whose [`fate`] is `Remove`.
    fn remove_unwanted(
        &self,
        v6: bool,
        index: u32,
        gateway: Option<IpAddr>,
        applied: &mut Applied,
    ) -> Result<(), NetError> {
        for (info, msg) in self.routes(v6)? {
            if fate(&info, index, gateway) != Fate::Remove {
                continue;
            }
            match self
                .runtime
                .block_on(self.handle.route().del(msg).execute())
            {
                Ok(()) => applied.removed.push(info.to_string()),
                // Gone already (removed with an address, or by the kernel).
                Err(e) if errno(&e) == Some(nix::libc::ESRCH) => {}
                Err(e) => {
                    return Err(NetError::Request {
                        what: format!("removing the route {info}"),
                        reason: describe(&e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Disables IPv6 on the interface (or strips it when /proc/sys is read-only) and
    /// removes every IPv6 default route.
    fn disable_v6(&self, iface: &Interface, applied: &mut Applied) -> Result<(), NetError> {
        let path = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", iface.name);
        let written = if sysctl_is(&path, "1") {
            Ok(())
        } else {
            std::fs::write(&path, "1")
        };
        match written {
            Ok(()) => {}
            // No IPv6 in this kernel or namespace: nothing can leave by IPv6.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                applied.warnings.push(format!(
                    "cannot write {path} ({e}); removing {}'s IPv6 addresses and routes instead",
                    iface.name
                ));
                self.strip_v6(iface)?;
            }
        }
        // Both: every IPv6 default route, and (after a fallback) anything left via the
        // interface.
        self.remove_unwanted(true, iface.index, None, applied)
    }

    /// Fallback when `disable_ipv6` cannot be written: no new link-local address, every
    /// IPv6 address of the interface removed (their routes go with them).
    fn strip_v6(&self, iface: &Interface) -> Result<(), NetError> {
        let index = iface.index;
        let h = &self.handle;
        let addr_gen_none = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        self.run(
            format!("setting addrgenmode none on {}", iface.name),
            h.link().set(addr_gen_none).execute(),
        )?;
        let handle = h.clone();
        let addrs: Vec<AddressMessage> = self
            .runtime
            .block_on(async move {
                handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect()
                    .await
            })
            .map_err(request_error("listing IPv6 addresses"))?;
        for msg in addrs {
            if msg.header.family != AddressFamily::Inet6 {
                continue;
            }
            let what = format!("removing an IPv6 address of {}", iface.name);
            match self.runtime.block_on(h.address().del(msg).execute()) {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(nix::libc::EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(NetError::Request {
                        what,
                        reason: describe(&e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads the routes back: nothing left to remove, and our default route (and host
    /// route, for a gateway that is not link-local) present. A second copy of one of
    /// ours (the same route with another metric) is harmless and accepted.
    fn verify(&self, plan: &Plan) -> Result<(), NetError> {
        let index = plan.iface.index;
        let check = |v6: bool, gateway: Option<IpAddr>| {
            let routes = self.routes(v6)?;
            let leftover: Vec<String> = routes
                .iter()
                .filter(|(i, _)| fate(i, index, gateway) == Fate::Remove)
                .map(|(i, _)| i.to_string())
                .collect();
            if !leftover.is_empty() {
                return Err(NetError::Verify(format!(
                    "routes that bypass the gateway remain: {}",
                    leftover.join("; ")
                )));
            }
            let Some(gw) = gateway else {
                return Ok(());
            };
            let ours = |default: bool| {
                routes.iter().any(|(i, _)| {
                    i.is_default() == default && fate(i, index, gateway) == Fate::Ours
                })
            };
            let needs_host = match gw {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => !is_link_local6(v6),
            };
            if !ours(true) || (needs_host && !ours(false)) {
                return Err(NetError::Verify(format!(
                    "the routes via {gw} on {} are missing after adding them",
                    plan.iface.name
                )));
            }
            Ok(())
        };
        check(false, Some(IpAddr::V4(plan.gateway)))?;
        match plan.v6 {
            V6Plan::Disable => check(true, None),
            V6Plan::Route { gateway } => check(true, Some(IpAddr::V6(gateway))),
        }
    }
}

/// Whether the sysctl file at `path` already holds `value` (a container engine may have
/// set it, with /proc/sys then mounted read-only).
fn sysctl_is(path: &str, value: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|current| current.trim() == value)
}

/// Writes `/proc/sys/net/<path>` unless it already holds `value`; a failure becomes a
/// warning.
fn best_effort_sysctl(path: &str, value: &str, applied: &mut Applied) {
    let full = format!("/proc/sys/net/{path}");
    if sysctl_is(&full, value) {
        return;
    }
    match std::fs::write(&full, value) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => applied
            .warnings
            .push(format!("cannot write {full} ({e}); left as it is")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);

    fn eth0() -> Interface {
        Interface {
            index: 2,
            name: "eth0".into(),
            v4: vec![IfAddr {
                addr: Ipv4Addr::new(198, 18, 0, 2),
                prefix: 24,
            }],
            v6: vec![
                IfAddr {
                    addr: Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 2),
                    prefix: 64,
                },
                IfAddr {
                    addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
                    prefix: 64,
                },
            ],
        }
    }

    fn route(dst: &str, gw: Option<&str>, oifs: &[u32], table: u32) -> RouteInfo {
        let (ip, len) = dst.split_once('/').unwrap();
        RouteInfo {
            table,
            dst: (ip.parse().unwrap(), len.parse().unwrap()),
            gateway: gw.map(|g| g.parse().unwrap()),
            oifs: oifs.to_vec(),
            kind: RouteType::Unicast,
        }
    }

    #[test]
    fn gateway_must_be_on_a_connected_subnet() {
        let p = plan(eth0(), GW, Ipv6Mode::Disable, None).unwrap();
        assert_eq!(p.source, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.v6, V6Plan::Disable);
        let err = plan(
            eth0(),
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv6Mode::Disable,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, NetError::GatewayNotOnLink { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("198.18.1.1") && msg.contains("198.18.0.2/24"),
            "{msg}"
        );
        let mut no_v4 = eth0();
        no_v4.v4.clear();
        let err = plan(no_v4, GW, Ipv6Mode::Disable, None).unwrap_err();
        assert!(err.to_string().contains("addresses: none"), "{err}");
    }

    #[test]
    fn gateway_cannot_be_special() {
        for (gw, why) in [
            ("198.18.0.2", "own address"),
            ("198.18.0.0", "network address"),
            ("198.18.0.255", "broadcast address"),
            ("0.0.0.0", "unicast"),
            ("127.0.0.1", "unicast"),
            ("224.0.0.1", "unicast"),
        ] {
            let err = plan(eth0(), gw.parse().unwrap(), Ipv6Mode::Disable, None).unwrap_err();
            assert!(err.to_string().contains(why), "{gw}: {err}");
        }
        // A /31 has no network or broadcast address.
        let mut p2p = eth0();
        p2p.v4 = vec![IfAddr {
            addr: Ipv4Addr::new(198, 18, 0, 3),
            prefix: 31,
        }];
        plan(p2p, Ipv4Addr::new(198, 18, 0, 2), Ipv6Mode::Disable, None).unwrap();
    }

    #[test]
    fn ipv6_route_mode_needs_an_on_link_gateway6() {
        let err = plan(eth0(), GW, Ipv6Mode::Route, None).unwrap_err();
        assert!(matches!(err, NetError::NoGateway6), "{err}");
        let p = plan(eth0(), GW, Ipv6Mode::Route, Some(GW6)).unwrap();
        assert_eq!(p.v6, V6Plan::Route { gateway: GW6 });
        let far: Ipv6Addr = "2001:db8:b::1".parse().unwrap();
        let err = plan(eth0(), GW, Ipv6Mode::Route, Some(far)).unwrap_err();
        assert!(matches!(err, NetError::GatewayNotOnLink { .. }), "{err}");
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        plan(eth0(), GW, Ipv6Mode::Route, Some(ll)).unwrap();
        let mut no_v6 = eth0();
        no_v6.v6.clear();
        assert!(plan(no_v6, GW, Ipv6Mode::Route, Some(ll)).is_err());
    }

    #[test]
    fn narrowing_keeps_only_our_routes_on_the_interface() {
        let gw = Some(IpAddr::V4(GW));
        let main = MAIN_TABLE;
        assert_eq!(
            fate(&route("0.0.0.0/0", Some("198.18.0.1"), &[2], main), 2, gw),
            Fate::Ours
        );
        assert_eq!(
            fate(&route("198.18.0.1/32", None, &[2], main), 2, gw),
            Fate::Ours
        );
        // The connected subnet route goes: same-subnet hosts only via the gateway.
        assert_eq!(
            fate(&route("198.18.0.0/24", None, &[2], main), 2, gw),
            Fate::Remove
        );
        // Another default (other gateway, other interface, multipath) goes.
        assert_eq!(
            fate(&route("0.0.0.0/0", Some("198.18.0.3"), &[2], main), 2, gw),
            Fate::Remove
        );
        assert_eq!(
            fate(&route("0.0.0.0/0", Some("10.0.0.1"), &[3], main), 2, gw),
            Fate::Remove
        );
        assert_eq!(
            fate(
                &route("0.0.0.0/0", Some("198.18.0.1"), &[2, 3], main),
                2,
                gw
            ),
            Fate::Remove
        );
        // Any other route through the interface goes.
        assert_eq!(
            fate(
                &route("203.0.113.0/24", Some("198.18.0.3"), &[2], main),
                2,
                gw
            ),
            Fate::Remove
        );
        // Other tables (local: the interface's own and broadcast addresses) stay, and so
        // do other interfaces' non-default routes.
        assert_eq!(
            fate(&route("198.18.0.2/32", None, &[2], 255), 2, gw),
            Fate::Keep
        );
        assert_eq!(
            fate(&route("10.1.0.0/16", None, &[3], main), 2, gw),
            Fate::Keep
        );
    }

    #[test]
    fn ipv6_disabled_removes_every_default() {
        let main = MAIN_TABLE;
        assert_eq!(
            fate(&route("::/0", Some("2001:db8:a::1"), &[2], main), 2, None),
            Fate::Remove
        );
        assert_eq!(
            fate(&route("::/0", Some("fe80::1"), &[7], main), 2, None),
            Fate::Remove
        );
        assert_eq!(
            fate(&route("2001:db8:a::/64", None, &[2], main), 2, None),
            Fate::Remove
        );
        assert_eq!(
            fate(&route("fd00::/8", None, &[7], main), 2, None),
            Fate::Keep
        );
        let gw6 = Some(IpAddr::V6(GW6));
        assert_eq!(
            fate(&route("2001:db8:a::1/128", None, &[2], main), 2, gw6),
            Fate::Ours
        );
        assert_eq!(
            fate(&route("fe80::/64", None, &[2], main), 2, gw6),
            Fate::Remove
        );
    }

    #[test]
    fn interface_choice() {
        let lo = Interface {
            index: 1,
            name: "lo".into(),
            v4: vec![IfAddr {
                addr: Ipv4Addr::LOCALHOST,
                prefix: 8,
            }],
            v6: vec![],
        };
        let ifaces = vec![lo, eth0()];
        let default = route("0.0.0.0/0", Some("198.18.0.1"), &[2], MAIN_TABLE);
        assert_eq!(choose_interface(&[default], &ifaces, GW).unwrap(), 2);
        // No default route: the interface on the gateway's subnet.
        assert_eq!(choose_interface(&[], &ifaces, GW).unwrap(), 2);
        let err = choose_interface(&[], &ifaces, Ipv4Addr::new(198, 19, 0, 1)).unwrap_err();
        assert!(matches!(err, NetError::NoInterface { .. }), "{err}");
        let mut twin = eth0();
        twin.index = 3;
        twin.name = "eth1".into();
        let err = choose_interface(&[], &[eth0(), twin], GW).unwrap_err();
        assert!(err.to_string().contains("eth0, eth1"), "{err}");
    }

    #[test]
    fn subnet_math() {
        let a = IfAddr {
            addr: Ipv4Addr::new(198, 18, 0, 2),
            prefix: 0,
        };
        assert!(a.contains(Ipv4Addr::new(203, 0, 113, 1)));
        let a = IfAddr {
            addr: Ipv4Addr::new(198, 18, 0, 2),
            prefix: 32,
        };
        assert!(!a.contains(Ipv4Addr::new(198, 18, 0, 1)));
        let b = IfAddr {
            addr: GW6,
            prefix: 64,
        };
        assert!(b.contains("2001:db8:a::ffff".parse().unwrap()));
        assert!(!b.contains("2001:db8:b::1".parse().unwrap()));
    }
}
