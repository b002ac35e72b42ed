//! The netns backend's plan: every command that builds a bottle's networks, with the
//! command that undoes it, and the exact command lines of the gateway and the agent.
//!
//! Pure functions of the configuration, so `--dry-run` prints exactly what a real run
//! executes and unit tests can check it without root.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::bottle::{Names, Volume};

/// The gateway's address on the agent network (DESIGN.md section 6's agent range).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The agent's address.
pub const AGENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The agent network's prefix length: it holds only the agent and the gateway.
pub const AGENT_PREFIX: u8 = 24;
/// The gateway's interface on the agent network.
pub const GATEWAY_AGENT_IFACE: &str = "eth1";
/// The gateway's uplink interface.
pub const GATEWAY_UPLINK_IFACE: &str = "eth0";
/// The agent's only interface.
pub const AGENT_IFACE: &str = "eth0";
/// The gateway's explicit proxy port (`--egress=proxy`), on its agent-side address.
pub const PROXY_PORT: u16 = 3128;

/// The proxy URL the agent gets with `--egress=proxy`.
pub fn proxy_url() -> String {
    format!("http://{GATEWAY_V4}:{PROXY_PORT}")
}

/// The proxy variables of `--egress=proxy` (both spellings: tools read one or the other).
pub fn proxy_env() -> Vec<(String, String)> {
    let url = proxy_url();
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    vec![
        ("HTTP_PROXY".into(), url.clone()),
        ("HTTPS_PROXY".into(), url.clone()),
        ("http_proxy".into(), url.clone()),
        ("https_proxy".into(), url),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
    ]
}

/// Binds `MODE SRC DST` triples (MODE `rw` or `ro`; `mask` hides DST: an empty read-only
/// tmpfs over a directory, /dev/null over anything else) up to `--`, then execs the rest.
/// Runs as `sh -c` inside a private mount namespace: the machine's files are never
/// written.
pub const BIND_WRAPPER: &str = r#"while [ "$1" != -- ]; do
  if [ "$1" = mask ]; then
    if [ -d "$3" ]; then
      mount -t tmpfs -o ro,size=4k,mode=755 bottleneck-mask "$3"
    else
      mount --bind /dev/null "$3"
    fi || { echo "bottleneck: cannot mask $3" >&2; exit 125; }
    shift 3; continue
  fi
  mount --bind "$2" "$3" || { echo "bottleneck: cannot bind-mount $2 over $3" >&2; exit 125; }
  if [ "$1" = ro ]; then
    mount -o remount,bind,ro "$3" || { echo "bottleneck: cannot make $3 read-only" >&2; exit 125; }
  fi
  shift 3
done
shift
exec "$@""#;

/// Where the gateway's uplink goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// A veth to the host's root namespace, NATed (masquerade) through the host's own
    /// routing by an nftables table of the bottle's own.
    Host {
        /// Whether the host's IPv4 forwarding must be switched on (it was off).
        enable_forwarding: bool,
    },
    /// A veth into an existing namespace acting as the internet (tests, the demo).
    Netns(String),
}

impl Uplink {
    /// `host` or `netns:NAME`, as recorded in the state.
    pub fn describe(&self) -> String {
        match self {
            Uplink::Host { .. } => "host".into(),
            Uplink::Netns(ns) => format!("netns:{ns}"),
        }
    }
}

/// One command line with optional standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Fed to standard input (`ip -batch -`, `nft -f -`).
    pub stdin: Option<String>,
}

impl Cmd {
    /// A command without input.
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Cmd {
        Cmd {
            argv: argv.iter().map(|s| s.as_ref().to_owned()).collect(),
            stdin: None,
        }
    }

    /// A command reading `input` on stdin.
    pub fn with_stdin<S: AsRef<str>>(argv: &[S], input: String) -> Cmd {
        Cmd {
            stdin: Some(input),
            ..Cmd::new(argv)
        }
    }
}

pub use crate::bottle::shell_quote as quote;

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.argv.iter().map(|w| quote(w)).collect();
        f.write_str(&words.join(" "))?;
        if let Some(input) = &self.stdin {
            write!(f, " <<'EOF'\n{}EOF", input)?;
        }
        Ok(())
    }
}

/// A set-up command and the command that undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does, for people.
    pub what: String,
    /// The command.
    pub cmd: Cmd,
    /// Undoes it (None: undone by an earlier undo, e.g. addresses go with their link).
    pub undo: Option<Cmd>,
}

/// The uplink's /30: `198.19.K.1` outside the gateway, `198.19.K.2` in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkNet {
    /// K.
    pub index: u8,
}

impl UplinkNet {
    /// The outside end's address.
    pub fn outside(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.index, 1)
    }
    /// The gateway's end.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.index, 2)
    }
    /// The subnet, `198.19.K.0/30`.
    pub fn subnet(self) -> String {
        format!("198.19.{}.0/30", self.index)
    }

    /// A /30 in 198.19.0.0/16 not used by any address in `ip -4 -o addr` output, searched
    /// from a start derived from the bottle's name, so that two bottles set up at the
    /// same moment (each seeing the other's subnet not yet used) rarely pick the same.
    pub fn pick(ip_addr_output: &str, name: &str) -> Option<UplinkNet> {
        let start = name
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 255;
        (0..255u32)
            .filter_map(|i| u8::try_from((start + i) % 255 + 1).ok())
            .map(|index| UplinkNet { index })
            .find(|n| !ip_addr_output.contains(&format!(" 198.19.{}.", n.index)))
    }
}

/// The nftables table that NATs a host uplink: masquerade for the bottle's /30 only, and
/// nothing forwarded into the uplink that the bottle did not start.
pub fn nft_table(names: &Names, net: UplinkNet) -> String {
    format!(
        "table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{iface}\" masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{iface}\" ip saddr {subnet} accept\n\
         \t\toifname \"{iface}\" ct state established,related accept\n\
         \t\toifname \"{iface}\" drop\n\
         \t\tiifname \"{iface}\" drop\n\
         \t}}\n\
         }}\n",
        table = names.nft_table,
        subnet = net.subnet(),
        iface = names.uplink_iface,
    )
}

/// The network set-up steps, in order.
pub fn network_steps(names: &Names, uplink: &Uplink, net: UplinkNet) -> Vec<Step> {
    let gw = &names.gateway_ns;
    let agent = &names.agent_ns;
    let mut steps = vec![
        Step {
            what: format!("gateway namespace {gw}"),
            cmd: Cmd::new(&["ip", "netns", "add", gw]),
            undo: Some(Cmd::new(&["ip", "netns", "del", gw])),
        },
        Step {
            what: format!("agent namespace {agent}"),
            cmd: Cmd::new(&["ip", "netns", "add", agent]),
            undo: Some(Cmd::new(&["ip", "netns", "del", agent])),
        },
        Step {
            what: format!(
                "agent network: {gw} {GATEWAY_AGENT_IFACE} {GATEWAY_V4}/{AGENT_PREFIX} <-> {agent} {AGENT_IFACE} {AGENT_V4}/{AGENT_PREFIX}"
            ),
            cmd: Cmd::with_stdin(
                &["ip", "-n", gw, "-batch", "-"],
                format!(
                    "link set lo up\n\
                     link add {GATEWAY_AGENT_IFACE} type veth peer name {AGENT_IFACE} netns {agent}\n\
                     link set {GATEWAY_AGENT_IFACE} up\n\
                     addr add {GATEWAY_V4}/{AGENT_PREFIX} dev {GATEWAY_AGENT_IFACE}\n"
                ),
            ),
            // The veth goes with its namespaces.
            undo: None,
        },
        Step {
            what: format!("agent interface {AGENT_IFACE} (the shim adds the route)"),
            cmd: Cmd::with_stdin(
                &["ip", "-n", agent, "-batch", "-"],
                format!(
                    "link set lo up\n\
                     link set {AGENT_IFACE} up\n\
                     addr add {AGENT_V4}/{AGENT_PREFIX} dev {AGENT_IFACE}\n"
                ),
            ),
            undo: None,
        },
    ];
    let iface = &names.uplink_iface;
    let (outside_ip, outside_label): (Vec<&str>, String) = match uplink {
        Uplink::Host { .. } => (vec!["ip"], "the host".into()),
        Uplink::Netns(ns) => (vec!["ip", "-n", ns.as_str()], format!("namespace {ns}")),
    };
    let with = |rest: &[&str]| -> Vec<String> {
        outside_ip
            .iter()
            .chain(rest.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    steps.push(Step {
        what: format!("uplink veth {iface} in {outside_label} <-> {gw} {GATEWAY_UPLINK_IFACE}"),
        cmd: Cmd::new(&with(&[
            "link",
            "add",
            iface,
            "type",
            "veth",
            "peer",
            "name",
            GATEWAY_UPLINK_IFACE,
            "netns",
            gw,
        ])),
        undo: Some(Cmd::new(&with(&["link", "del", iface]))),
    });
    let outside_cidr = format!("{}/30", net.outside());
    steps.push(Step {
        what: format!("uplink address {outside_cidr} on {iface}"),
        cmd: Cmd::with_stdin(
            &with(&["-batch", "-"]),
            format!("addr add {outside_cidr} dev {iface}\nlink set {iface} up\n"),
        ),
        undo: None,
    });
    steps.push(Step {
        what: format!(
            "gateway uplink {GATEWAY_UPLINK_IFACE} {}/30, default via {}",
            net.gateway(),
            net.outside()
        ),
        cmd: Cmd::with_stdin(
            &["ip", "-n", gw, "-batch", "-"],
            format!(
                "link set {GATEWAY_UPLINK_IFACE} up\n\
                 addr add {}/30 dev {GATEWAY_UPLINK_IFACE}\n\
                 route add default via {}\n",
                net.gateway(),
                net.outside()
            ),
        ),
        undo: None,
    });
    if let Uplink::Host { enable_forwarding } = uplink {
        steps.push(Step {
            what: format!(
                "host NAT: table ip {} (masquerade {} only)",
                names.nft_table,
                net.subnet()
            ),
            cmd: Cmd::with_stdin(&["nft", "-f", "-"], nft_table(names, net)),
            undo: Some(Cmd::new(&[
                "nft",
                "delete",
                "table",
                "ip",
                &names.nft_table,
            ])),
        });
        if *enable_forwarding {
            steps.push(Step {
                what: "host IPv4 forwarding on (it was off; restored when the last bottle goes)"
                    .into(),
                cmd: Cmd::new(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
                undo: Some(Cmd::new(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])),
            });
        }
    }
    steps
}

/// The paths of a bottle's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The state directory.
    pub dir: PathBuf,
    /// The bottle CA (key and certificate; mode 0700, for the gateway only).
    pub ca_dir: PathBuf,
    /// The agent's copy of the CA certificate.
    pub agent_ca: PathBuf,
    /// The gateway's resolv.conf (bind-mounted in its own mount namespace).
    pub gateway_resolv: PathBuf,
    /// The gateway's stderr.
    pub gateway_log: PathBuf,
    /// The audit log.
    pub audit: PathBuf,
    /// The agent's per-bottle files (passwd, group, resolv.conf, CA bundles, ...).
    pub agent_dir: PathBuf,
    /// Where the shim writes ca.crt and ca-bundle.crt.
    pub trust_dir: PathBuf,
}

impl StatePaths {
    /// The paths under `names.state_dir`.
    pub fn new(names: &Names) -> StatePaths {
        let dir = names.state_dir.clone();
        StatePaths {
            ca_dir: dir.join("ca"),
            agent_ca: dir.join("agent").join("ca.pem"),
            gateway_resolv: dir.join("gateway-resolv.conf"),
            gateway_log: dir.join("gateway.log"),
            audit: names.audit_path(),
            agent_dir: dir.join("agent"),
            trust_dir: dir.join("agent").join("trust"),
            dir,
        }
    }
}

/// The command creating the bottle CA.
pub fn ca_command(gateway_bin: &Path, paths: &StatePaths) -> Cmd {
    Cmd::new(&[
        &gateway_bin.display().to_string(),
        "ca-init",
        "--ca-dir",
        &paths.ca_dir.display().to_string(),
    ])
}

/// The gateway's command line (its secrets travel in its environment, never here).
pub fn gateway_command(
    names: &Names,
    gateway_bin: &Path,
    policy: &Path,
    paths: &StatePaths,
    upstream_ca: &[PathBuf],
    proxy: bool,
) -> Cmd {
    let mut argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &names.gateway_ns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        BIND_WRAPPER,
        "bottleneck-gateway-mounts",
        "rw",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.push(paths.gateway_resolv.display().to_string());
    argv.push("/etc/resolv.conf".into());
    argv.push("--".into());
    argv.push(gateway_bin.display().to_string());
    for (flag, value) in [
        ("--policy", policy.display().to_string()),
        ("--agent-iface", GATEWAY_AGENT_IFACE.to_owned()),
        ("--ca-dir", paths.ca_dir.display().to_string()),
        ("--audit-log", paths.audit.display().to_string()),
        ("--drain-seconds", "2".to_owned()),
    ] {
        argv.push(flag.into());
        argv.push(value);
    }
    for ca in upstream_ca {
        argv.push("--upstream-ca".into());
        argv.push(ca.display().to_string());
    }
    if proxy {
        argv.push("--listen-proxy".into());
        argv.push(format!("{GATEWAY_V4}:{PROXY_PORT}"));
    }
    Cmd { argv, stdin: None }
}

/// How a path is mounted in the agent's private mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// A read-write bind mount.
    ReadWrite,
    /// A read-only bind mount.
    ReadOnly,
    /// Hidden: an empty read-only tmpfs over a directory, /dev/null over a file or socket.
    Mask,
}

/// A mount in the agent's private mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The per-bottle file (or the volume's source; `-` for a mask).
    pub src: PathBuf,
    /// What it covers.
    pub dst: PathBuf,
    /// How.
    pub mode: BindMode,
}

impl Bind {
    /// A read-write bind of `src` over `dst`.
    pub fn rw(src: impl Into<PathBuf>, dst: impl Into<PathBuf>) -> Bind {
        Bind {
            src: src.into(),
            dst: dst.into(),
            mode: BindMode::ReadWrite,
        }
    }

    /// Hides `dst`.
    pub fn mask(dst: impl Into<PathBuf>) -> Bind {
        Bind {
            src: "-".into(),
            dst: dst.into(),
            mode: BindMode::Mask,
        }
    }
}

impl From<&Volume> for Bind {
    fn from(v: &Volume) -> Bind {
        Bind {
            src: v.src.clone(),
            dst: v.dst.clone(),
            mode: if v.read_only {
                BindMode::ReadOnly
            } else {
                BindMode::ReadWrite
            },
        }
    }
}

/// The agent's command line: `bottleneck-init` as PID 1 of a new PID namespace, in the
/// agent's network namespace and a private mount namespace holding `binds`.
pub fn agent_command(names: &Names, shim: &Path, binds: &[Bind], agent: &[String]) -> Cmd {
    let mut argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &names.agent_ns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        "sh",
        "-c",
        BIND_WRAPPER,
        "bottleneck-agent-mounts",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for bind in binds {
        argv.push(
            match bind.mode {
                BindMode::ReadWrite => "rw",
                BindMode::ReadOnly => "ro",
                BindMode::Mask => "mask",
            }
            .into(),
        );
        argv.push(bind.src.display().to_string());
        argv.push(bind.dst.display().to_string());
    }
    argv.push("--".into());
    argv.push(shim.display().to_string());
    argv.push("--".into());
    argv.extend(agent.iter().cloned());
    Cmd { argv, stdin: None }
}

/// The shim's environment (besides PATH and the user's `-e` variables).
pub fn shim_env(paths: &StatePaths, user: &str) -> Vec<(String, String)> {
    vec![
        ("BOTTLENECK_GATEWAY".into(), GATEWAY_V4.to_string()),
        (
            "BOTTLENECK_CA_FILE".into(),
            paths.agent_ca.display().to_string(),
        ),
        ("BOTTLENECK_USER".into(), user.to_owned()),
        (
            "BOTTLENECK_TRUST_DIR".into(),
            paths.trust_dir.display().to_string(),
        ),
        ("BOTTLENECK_IFACE".into(), AGENT_IFACE.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_subnets_skip_used_ones() {
        let out = "2: eth0    inet 192.0.2.10/24 scope global eth0\n\
                   9: bn-a    inet 198.19.1.1/30 scope global bn-a\n";
        let first = UplinkNet::pick("", "a").unwrap();
        let used = format!(
            "9: bn-a    inet 198.19.{}.1/30 scope global bn-a\n",
            first.index
        );
        let second = UplinkNet::pick(&used, "a").unwrap();
        assert_ne!(first, second);
        assert_eq!(second.index, first.index % 255 + 1);
        assert!(UplinkNet::pick(out, "b").is_some_and(|n| n.index != 1));
        let everything: String = (1..=255).map(|k| format!(" 198.19.{k}.1/30\n")).collect();
        assert_eq!(UplinkNet::pick(&everything, "a"), None);
        // Different names usually start in different places.
        assert_ne!(UplinkNet::pick("", "alpha"), UplinkNet::pick("", "beta"));
        let n = UplinkNet { index: 7 };
        assert_eq!(n.outside().to_string(), "198.19.7.1");
        assert_eq!(n.gateway().to_string(), "198.19.7.2");
        assert_eq!(n.subnet(), "198.19.7.0/30");
    }

    #[test]
    fn host_uplink_steps_create_and_undo_everything_outside_the_namespaces() {
        let names = Names::new("demo");
        let steps = network_steps(
            &names,
            &Uplink::Host {
                enable_forwarding: true,
            },
            UplinkNet { index: 3 },
        );
        let text: Vec<String> = steps.iter().map(|s| s.cmd.to_string()).collect();
        let all = text.join("\n");
        assert!(all.contains("ip netns add bn-demo-gw"), "{all}");
        assert!(all.contains("ip netns add bn-demo-agent"), "{all}");
        assert!(
            all.contains("link add eth1 type veth peer name eth0 netns bn-demo-agent"),
            "{all}"
        );
        assert!(all.contains("addr add 198.18.0.1/24 dev eth1"), "{all}");
        assert!(all.contains("addr add 198.18.0.2/24 dev eth0"), "{all}");
        assert!(
            all.contains("ip link add bn-demo type veth peer name eth0 netns bn-demo-gw"),
            "{all}"
        );
        assert!(all.contains("route add default via 198.19.3.1"), "{all}");
        assert!(all.contains("table ip bottleneck-demo"), "{all}");
        assert!(
            all.contains("ip saddr 198.19.3.0/30 oifname != \"bn-demo\" masquerade"),
            "{all}"
        );
        assert!(all.contains("net.ipv4.ip_forward=1"), "{all}");
        // Everything created outside a bottle namespace has an undo.
        let undos: Vec<String> = steps
            .iter()
            .filter_map(|s| s.undo.as_ref().map(Cmd::to_string))
            .collect();
        assert_eq!(
            undos,
            [
                "ip netns del bn-demo-gw",
                "ip netns del bn-demo-agent",
                "ip link del bn-demo",
                "nft delete table ip bottleneck-demo",
                "sysctl -q -w net.ipv4.ip_forward=0",
            ]
        );
        // Nothing touches 192.0.2.0/24 or a public resolver.
        assert!(!all.contains("192.0.2."));
    }

    #[test]
    fn forwarding_is_left_alone_when_already_on_and_netns_uplinks_touch_no_host_state() {
        let names = Names::new("x");
        let steps = network_steps(
            &names,
            &Uplink::Host {
                enable_forwarding: false,
            },
            UplinkNet { index: 1 },
        );
        assert!(!steps.iter().any(|s| s.cmd.to_string().contains("sysctl")));
        let steps = network_steps(&names, &Uplink::Netns("wan".into()), UplinkNet { index: 1 });
        let all: Vec<String> = steps.iter().map(|s| s.cmd.to_string()).collect();
        assert!(
            !all.iter()
                .any(|c| c.contains("nft") || c.contains("sysctl"))
        );
        assert!(
            all.iter()
                .any(|c| c == "ip -n wan link add bn-x type veth peer name eth0 netns bn-x-gw")
        );
        // Every `ip` command outside the bottle's namespaces runs in `wan`.
        for c in &all {
            if c.starts_with("ip ") && !c.contains("bn-x-") {
                assert!(c.starts_with("ip -n wan "), "{c}");
            }
        }
    }

    #[test]
    fn gateway_and_agent_command_lines() {
        let names = Names::new("demo");
        let paths = StatePaths::new(&names);
        let gw = gateway_command(
            &names,
            Path::new("/bin/bottleneck-gateway"),
            Path::new("/p.yaml"),
            &paths,
            &[PathBuf::from("/wan-ca.pem")],
            false,
        );
        let text = gw.to_string();
        assert!(
            text.starts_with("ip netns exec bn-demo-gw unshare --mount"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "rw /run/bottleneck/demo/gateway-resolv.conf /etc/resolv.conf -- \
                 /bin/bottleneck-gateway --policy /p.yaml --agent-iface eth1 \
                 --ca-dir /run/bottleneck/demo/ca --audit-log /run/bottleneck/demo/audit.jsonl \
                 --drain-seconds 2 --upstream-ca /wan-ca.pem"
            ),
            "{text}"
        );
        let agent = agent_command(
            &names,
            Path::new("/bin/bottleneck-init"),
            &[
                Bind::rw("/run/bottleneck/demo/agent/resolv.conf", "/etc/resolv.conf"),
                Bind::mask("/run/docker.sock"),
            ],
            &["sh".into(), "-c".into(), "echo hi".into()],
        );
        let text = agent.to_string();
        assert!(
            text.starts_with(
                "ip netns exec bn-demo-agent unshare --mount --propagation private --pid --fork \
                 --kill-child --mount-proc -- sh -c "
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "bottleneck-agent-mounts rw /run/bottleneck/demo/agent/resolv.conf \
                 /etc/resolv.conf mask - /run/docker.sock -- /bin/bottleneck-init -- sh -c 'echo hi'"
            ),
            "{text}"
        );
        let env = shim_env(&paths, "node");
        assert!(env.contains(&("BOTTLENECK_GATEWAY".into(), "198.18.0.1".into())));
        assert!(env.contains(&("BOTTLENECK_USER".into(), "node".into())));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("abc/d-e.f"), "abc/d-e.f");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
