//! The nftables ruleset of the gateway, rendered as one `nft -f -` script.
//!
//! Everything lives in one table, `table inet bottleneck` (the `inet` family covers IPv4
//! and IPv6 with the same rules, so there is no IPv6 bypass). The script declares the
//! table empty, deletes it and defines it again, all in one nft transaction: applying it
//! twice leaves exactly one copy of every rule, and a script that fails anywhere changes
//! nothing.
//!
//! What the table does, for packets arriving on the agent interface:
//!
//! * **prerouting (nat)**: TCP 80 to the HTTP listener, TCP 443 to the TLS listener, the
//!   ports of the policy's `tcp` rules to the TCP relay, UDP and TCP 53 to the DNS server,
//!   whatever destination address the agent chose. `redirect` rewrites the destination to
//!   the gateway's own address on the agent interface; the listener reads the original
//!   destination back with `SO_ORIGINAL_DST` (see [`super::sockopt`]).
//! * **forward (filter, policy drop)**: nothing the agent sends is routed. TCP is answered
//!   with a reset and everything else (QUIC on UDP 443, DNS-over-TLS on 853, any UDP, ICMP)
//!   with ICMP administratively-prohibited, so clients fail at once instead of waiting
//!   for a timeout.
//! * **input (filter)**: from the agent only the listener ports, DNS, neighbour discovery
//!   and ping are accepted; the rest is rejected the same way. Other interfaces are not
//!   filtered here.
//!
//! Rejections and redirects are counted in named counters ([`COUNTER_NAMES`]) that
//! [`super::apply::counters`] reads.

use std::collections::BTreeSet;

use super::error::FirewallError;

/// The nftables address family of the gateway's table.
pub const TABLE_FAMILY: &str = "inet";
/// The name of the gateway's table.
pub const TABLE_NAME: &str = "bottleneck";

/// Counter: new agent TCP connections to port 80 redirected to the HTTP listener.
pub const REDIRECTED_HTTP: &str = "redirected_http";
/// Counter: new agent TCP connections to port 443 redirected to the TLS listener.
pub const REDIRECTED_TLS: &str = "redirected_tls";
/// Counter: new agent TCP connections to `tcp` rule ports redirected to the relay.
pub const REDIRECTED_TCP: &str = "redirected_tcp";
/// Counter: new agent DNS flows (UDP and TCP port 53) redirected to the DNS server.
pub const REDIRECTED_DNS: &str = "redirected_dns";
/// Counter: agent TCP packets that would have been routed, answered with a reset.
pub const FORWARD_REJECTED_TCP: &str = "forward_rejected_tcp";
/// Counter: other agent packets that would have been routed (UDP, ICMP...), answered with
/// ICMP administratively-prohibited.
pub const FORWARD_REJECTED_OTHER: &str = "forward_rejected_other";
/// Counter: agent TCP packets to a gateway port that is not a listener, reset.
pub const INPUT_REJECTED_TCP: &str = "input_rejected_tcp";
/// Counter: other agent packets to the gateway itself that are not accepted, answered
/// with ICMP administratively-prohibited.
pub const INPUT_REJECTED_OTHER: &str = "input_rejected_other";

/// Every named counter the table declares.
pub const COUNTER_NAMES: [&str; 8] = [
    REDIRECTED_HTTP,
    REDIRECTED_TLS,
    REDIRECTED_TCP,
    REDIRECTED_DNS,
    FORWARD_REJECTED_TCP,
    FORWARD_REJECTED_OTHER,
    INPUT_REJECTED_TCP,
    INPUT_REJECTED_OTHER,
];

/// The ports the agent's traffic is captured on before any redirect: a `tcp` rule on one
/// of them could never be reached, so [`render`] refuses it.
const CAPTURED_PORTS: [(u16, &str); 3] = [(80, "HTTP"), (443, "TLS"), (53, "DNS")];

/// The ICMPv6 types accepted from the agent on input (as an nft set).
const ICMPV6_ACCEPTED: &str = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, \
     echo-request, mld-listener-report, mld2-listener-report }";

/// What the firewall needs to know: the agent interface, the local listener ports and the
/// mark of the gateway's own upstream sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The gateway's interface on the agent network (e.g. `eth1`).
    pub agent_iface: String,
    /// The transparent HTTP listener; agent TCP 80 is redirected here.
    pub http_port: u16,
    /// The transparent TLS listener; agent TCP 443 is redirected here.
    pub tls_port: u16,
    /// The DNS server (UDP and TCP); agent port 53 to any address is redirected here.
    pub dns_port: u16,
    /// The raw TCP relay; agent TCP to any of [`FirewallConfig::tcp_ports`] lands here.
    pub tcp_relay_port: u16,
    /// The ports named by the policy's `tcp` rules.
    pub tcp_ports: Vec<u16>,
    /// The explicit proxy listener, accepted on input if set (never redirected to).
    pub proxy_port: Option<u16>,
    /// The `SO_MARK` the gateway sets on its own upstream sockets (non-zero).
    pub upstream_mark: u32,
}

/// Checks that `name` is a Linux interface name that cannot change the meaning of the
/// script it is quoted into.
///
/// Linux allows 1 to 15 bytes without `/`, `:` or whitespace; this is stricter (letters,
/// digits, `-`, `_`, `.`), because in nft a `"` would end the string, and `*` would turn
/// `iifname` into a prefix match covering other interfaces.
pub fn validate_interface(name: &str) -> Result<(), FirewallError> {
    let invalid = |reason| {
        Err(FirewallError::InvalidInterface {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 15 {
        return invalid("it is longer than 15 bytes (Linux IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not interface names");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return invalid("only ASCII letters, digits, `-`, `_` and `.` are accepted");
    }
    Ok(())
}

/// The TCP ports of the gateway's listeners, in a fixed order, after checking that they
/// are non-zero and distinct (two redirects to one listener would mix protocols).
fn listener_ports(cfg: &FirewallConfig) -> Result<Vec<u16>, FirewallError> {
    let mut named = vec![
        ("http_port", cfg.http_port),
        ("tls_port", cfg.tls_port),
        ("tcp_relay_port", cfg.tcp_relay_port),
        ("dns_port", cfg.dns_port),
    ];
    if let Some(port) = cfg.proxy_port {
        named.push(("proxy_port", port));
    }
    for (i, (what, port)) in named.iter().enumerate() {
        if *port == 0 {
            return Err(FirewallError::InvalidConfig(format!("{what} is 0")));
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, p)| p == port) {
            return Err(FirewallError::InvalidConfig(format!(
                "{what} and {other} are both {port}: each listener needs its own port"
            )));
        }
    }
    Ok(named.into_iter().map(|(_, p)| p).collect())
}

/// The `tcp` rule ports, deduplicated and sorted, after checking that none is 0 or one
/// that an earlier redirect already captures.
fn relay_ports(cfg: &FirewallConfig) -> Result<BTreeSet<u16>, FirewallError> {
    let mut ports = BTreeSet::new();
    for &port in &cfg.tcp_ports {
        if port == 0 {
            return Err(FirewallError::InvalidConfig(
                "a tcp rule names port 0".into(),
            ));
        }
        if let Some((_, what)) = CAPTURED_PORTS.iter().find(|(p, _)| *p == port) {
            return Err(FirewallError::InvalidConfig(format!(
                "a tcp rule names port {port}, which is always redirected to the {what} \
                 listener; a raw TCP relay cannot share it"
            )));
        }
        ports.insert(port);
    }
    Ok(ports)
}

fn port_set<'a>(ports: impl IntoIterator<Item = &'a u16>) -> String {
    let list: Vec<String> = ports.into_iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Renders the whole ruleset as one nft script (for `nft -f -`).
///
/// The script is idempotent (the table is declared, deleted and redefined in the same
/// transaction) and atomic (nft applies all of it or nothing). Fails before anything runs
/// if the interface name or a port is invalid.
pub fn render(cfg: &FirewallConfig) -> Result<String, FirewallError> {
    validate_interface(&cfg.agent_iface)?;
    let listeners = listener_ports(cfg)?;
    let relay = relay_ports(cfg)?;
    if cfg.upstream_mark == 0 {
        // Mark 0 is what every unmarked packet carries: a `meta mark 0 return` would
        // exempt all agent traffic from the redirects.
        return Err(FirewallError::InvalidConfig(
            "upstream_mark is 0, which every unmarked packet carries".into(),
        ));
    }

    let iif = format!("iifname \"{}\"", cfg.agent_iface);
    let mut s = String::new();
    let mut line = |text: &str| {
        s.push_str(text);
        s.push('\n');
    };

    line(&format!(
        "# bottleneck-gateway firewall for agent interface {:?} (generated; one transaction)",
        cfg.agent_iface
    ));
    // Declaring the table first makes the delete succeed when it does not exist yet; the
    // delete then drops any previous version, so re-applying never duplicates rules.
    line(&format!("table {TABLE_FAMILY} {TABLE_NAME} {{}}"));
    line(&format!("delete table {TABLE_FAMILY} {TABLE_NAME}"));
    line(&format!("table {TABLE_FAMILY} {TABLE_NAME} {{"));
    for name in COUNTER_NAMES {
        line(&format!("\tcounter {name} {{}}"));
    }

    line("");
    line("\tchain prerouting {");
    line("\t\ttype nat hook prerouting priority dstnat; policy accept;");
    // The gateway's own upstream sockets carry this mark. Locally generated packets never
    // traverse prerouting, so in the sidecar topology this rule does not fire; it is there
    // for topologies where the gateway's own traffic re-enters through the agent
    // interface inside the same namespace (a veth or bridge hop keeps the mark within a
    // namespace), so the gateway can never capture its own upstream connections. An agent
    // cannot forge it: the kernel clears the mark when a packet crosses namespaces.
    line(&format!("\t\tmeta mark 0x{:08x} return", cfg.upstream_mark));
    line(&format!(
        "\t\t{iif} tcp dport 80 counter name \"{REDIRECTED_HTTP}\" redirect to :{}",
        cfg.http_port
    ));
    line(&format!(
        "\t\t{iif} tcp dport 443 counter name \"{REDIRECTED_TLS}\" redirect to :{}",
        cfg.tls_port
    ));
    if !relay.is_empty() {
        line(&format!(
            "\t\t{iif} tcp dport {} counter name \"{REDIRECTED_TCP}\" redirect to :{}",
            port_set(&relay),
            cfg.tcp_relay_port
        ));
    }
    // Port 53 to any address: an agent that ignores resolv.conf and asks another resolver
    // still gets the gateway's allowlist answers.
    for proto in ["udp", "tcp"] {
        line(&format!(
            "\t\t{iif} {proto} dport 53 counter name \"{REDIRECTED_DNS}\" redirect to :{}",
            cfg.dns_port
        ));
    }
    line("\t}");

    line("");
    line("\tchain forward {");
    // Policy drop: nothing is routed between the agent and the outside; the gateway's
    // listeners are the only way out. Agent packets are rejected rather than dropped so
    // that clients fail fast (TCP reset; ICMP for QUIC, DoT over UDP, everything else).
    line("\t\ttype filter hook forward priority filter; policy drop;");
    line(&format!(
        "\t\t{iif} meta l4proto tcp counter name \"{FORWARD_REJECTED_TCP}\" reject with tcp reset"
    ));
    line(&format!(
        "\t\t{iif} counter name \"{FORWARD_REJECTED_OTHER}\" reject with icmpx admin-prohibited"
    ));
    line("\t}");

    line("");
    line("\tchain input {");
    line("\t\ttype filter hook input priority filter; policy accept;");
    // Only the agent interface is filtered; the wan side and loopback are the host's
    // business.
    line(&format!("\t\tiifname != \"{}\" accept", cfg.agent_iface));
    line("\t\tct state established,related accept");
    // After `redirect`, input sees the rewritten (listener) port. Only redirected
    // connections may reach the transparent listeners (`ct status dnat`): an agent that
    // dials 15080 directly is rejected like any other port. The explicit proxy is the one
    // listener the agent addresses itself.
    let redirected: Vec<u16> = listeners
        .iter()
        .copied()
        .filter(|p| Some(*p) != cfg.proxy_port)
        .collect();
    line(&format!(
        "\t\ttcp dport {} ct status dnat accept",
        port_set(&redirected)
    ));
    line(&format!(
        "\t\tudp dport {} ct status dnat accept",
        cfg.dns_port
    ));
    if let Some(port) = cfg.proxy_port {
        line(&format!("\t\ttcp dport {port} accept"));
    }
    // Neighbour discovery is what IPv6 needs to reach the gateway at all; ping is
    // harmless and helps diagnosis. Router solicitations and multicast listener reports
    // are link-local chatter every IPv6 host sends when its interface comes up; they
    // carry nothing anywhere, and accepting them keeps the rejection counters to real
    // attempts.
    line("\t\ticmp type echo-request accept");
    line(&format!("\t\ticmpv6 type {ICMPV6_ACCEPTED} accept"));
    line(&format!(
        "\t\tmeta l4proto tcp counter name \"{INPUT_REJECTED_TCP}\" reject with tcp reset"
    ));
    line(&format!(
        "\t\tcounter name \"{INPUT_REJECTED_OTHER}\" reject with icmpx admin-prohibited"
    ));
    line("\t}");
    line("}");
    Ok(s)
}

/// The script that removes the table, succeeding whether or not it exists.
pub fn remove_script() -> &'static str {
    "table inet bottleneck {}\ndelete table inet bottleneck\n"
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> FirewallConfig {
        FirewallConfig {
            agent_iface: "eth1".into(),
            http_port: 8080,
            tls_port: 8443,
            dns_port: 5353,
            tcp_relay_port: 8022,
            tcp_ports: vec![2222, 22, 22],
            proxy_port: Some(3128),
            upstream_mark: 0xb077,
        }
    }

    #[test]
    fn a_bad_interface_name_is_rejected_before_nft_runs() {
        for bad in [
            "",
            "sixteen-chars-xx",
            "eth1\"",
            "eth1\" accept",
            "eth 1",
            "eth/1",
            "eth*",
            "eth1\n",
            "eth1;",
            "eth:1",
            ".",
            "..",
            "ethé",
        ] {
            let cfg = FirewallConfig {
                agent_iface: bad.into(),
                ..sample()
            };
            let err = render(&cfg).expect_err(bad);
            assert!(
                matches!(&err, FirewallError::InvalidInterface { name, .. } if name == bad),
                "{bad:?}: {err}"
            );
        }
        for good in ["eth1", "veth0a1b2c3", "br-1234.5", "a", "fifteen-chars-x"] {
            validate_interface(good).expect(good);
        }
    }

    #[test]
    fn the_script_replaces_the_table_in_one_transaction() {
        let script = render(&sample()).unwrap();
        let lines: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "table inet bottleneck {}");
        assert_eq!(lines[1], "delete table inet bottleneck");
        assert_eq!(lines[2], "table inet bottleneck {");
        assert_eq!(
            script.matches("table inet bottleneck {").count(),
            2,
            "{script}"
        );
        assert_eq!(remove_script().lines().collect::<Vec<_>>(), lines[..2]);
    }

    #[test]
    fn agent_ports_are_redirected_to_the_listeners() {
        let script = render(&sample()).unwrap();
        for expected in [
            "meta mark 0x0000b077 return",
            "iifname \"eth1\" tcp dport 80 counter name \"redirected_http\" redirect to :8080",
            "iifname \"eth1\" tcp dport 443 counter name \"redirected_tls\" redirect to :8443",
            "iifname \"eth1\" tcp dport { 22, 2222 } counter name \"redirected_tcp\" redirect to :8022",
            "iifname \"eth1\" udp dport 53 counter name \"redirected_dns\" redirect to :5353",
            "iifname \"eth1\" tcp dport 53 counter name \"redirected_dns\" redirect to :5353",
            "type nat hook prerouting priority dstnat; policy accept;",
        ] {
            assert!(
                script.contains(expected),
                "missing {expected:?} in\n{script}"
            );
        }
        // The mark exemption comes before any redirect.
        let mark = script.find("meta mark").unwrap();
        let first_redirect = script.find("redirect to").unwrap();
        assert!(mark < first_redirect);
    }

    #[test]
    fn everything_else_from_the_agent_is_rejected_not_dropped() {
        let script = render(&sample()).unwrap();
        for expected in [
            "type filter hook forward priority filter; policy drop;",
            "iifname \"eth1\" meta l4proto tcp counter name \"forward_rejected_tcp\" reject with tcp reset",
            "iifname \"eth1\" counter name \"forward_rejected_other\" reject with icmpx admin-prohibited",
            "iifname != \"eth1\" accept",
            "ct state established,related accept",
            "tcp dport { 8080, 8443, 8022, 5353 } ct status dnat accept",
            "udp dport 5353 ct status dnat accept",
            "tcp dport 3128 accept",
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, echo-request, mld-listener-report, mld2-listener-report } accept",
            "meta l4proto tcp counter name \"input_rejected_tcp\" reject with tcp reset",
            "counter name \"input_rejected_other\" reject with icmpx admin-prohibited",
        ] {
            assert!(
                script.contains(expected),
                "missing {expected:?} in\n{script}"
            );
        }
        for name in COUNTER_NAMES {
            assert!(
                script.contains(&format!("\tcounter {name} {{}}\n")),
                "{name}"
            );
        }
    }

    #[test]
    fn without_tcp_rules_or_proxy_there_is_no_relay_redirect_and_no_proxy_port() {
        let cfg = FirewallConfig {
            tcp_ports: vec![],
            proxy_port: None,
            ..sample()
        };
        let script = render(&cfg).unwrap();
        assert!(!script.contains("redirected_tcp\" redirect"), "{script}");
        assert!(
            script.contains("tcp dport { 8080, 8443, 8022, 5353 } ct status dnat accept"),
            "{script}"
        );
        assert!(!script.contains("3128"), "{script}");
    }

    #[test]
    fn unusable_ports_and_marks_are_rejected() {
        let cases = [
            FirewallConfig {
                http_port: 0,
                ..sample()
            },
            FirewallConfig {
                proxy_port: Some(0),
                ..sample()
            },
            FirewallConfig {
                tls_port: 8080,
                ..sample()
            },
            FirewallConfig {
                proxy_port: Some(5353),
                ..sample()
            },
            FirewallConfig {
                tcp_ports: vec![22, 0],
                ..sample()
            },
            FirewallConfig {
                tcp_ports: vec![443],
                ..sample()
            },
            FirewallConfig {
                tcp_ports: vec![53],
                ..sample()
            },
            FirewallConfig {
                upstream_mark: 0,
                ..sample()
            },
        ];
        for cfg in cases {
            let err = render(&cfg).expect_err("invalid");
            assert!(
                matches!(err, FirewallError::InvalidConfig(_)),
                "{cfg:?}: {err}"
            );
        }
        let err = render(&FirewallConfig {
            tls_port: 8080,
            ..sample()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid firewall configuration: tls_port and http_port are both 8080: each \
             listener needs its own port"
        );
    }
}
