//! The real `bottleneck-init` in a lab's agent namespace, for the matrix's shim cells
//! (rows 7, 8 and 16), and a neighbour host on the agent network.
//!
//! The shim runs as root, as PID 1 of a fresh PID namespace (`unshare --pid --fork
//! --mount-proc`), inside the private mount namespace every lab command gets. The files it
//! reads (/etc/passwd and /etc/group, with a `node` user, uid 1000) and writes
//! (/etc/resolv.conf, every system CA bundle) are per-lab copies bind-mounted over the
//! machine's files there ([`ShimFiles`], from the lab crate); its trust directory is a lab
//! directory. [`ShimFixture::unchanged`] proves the machine's own copies are
//! byte-identical. This fixture adds the agent's ways back to privilege (setuid and
//! file-capability binaries) and a probe script.
//!
//! The [`Neighbour`] is another host on the agent's L2 network (as the container host is on
//! an Apple Container network): a macvlan of the gateway's agent-side interface in a
//! namespace of its own, so frames the agent addresses to it never pass through the
//! gateway's namespace. It answers TCP on port 80 (`neighbour\n`) and counts those
//! connections and the UDP datagrams to its ports 9 and 5353 (broadcasts included).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottleneck_lab::shim::{MachineFiles, ShimFiles, shim_binary};
use bottleneck_lab::{Exec, ExecOutput, Host, Lab};

pub use bottleneck_lab::shim::{AGENT_PATH, AGENT_UID};

/// Per-lab copies of the files the shim reads and writes ([`ShimFiles`]), and the
/// binaries the agent tries to regain privilege with.
pub struct ShimFixture {
    /// The files bind-mounted over the machine's (in the lab directory `shim`).
    pub files: ShimFiles,
    /// A setuid-root copy of `ip`.
    pub suid_ip: PathBuf,
    /// A setuid-root copy of `cat`.
    pub suid_cat: PathBuf,
    /// A copy of the python3 interpreter with the file capabilities
    /// `cap_net_admin,cap_net_raw+ep` (run it with `PYTHONHOME=/usr`). Not a copy of `ip`:
    /// iproute2 drops file capabilities itself when run by a non-root user.
    pub fcaps_python: PathBuf,
    /// [`PROBE_PY`], readable by the agent.
    pub probe_py: PathBuf,
    shim: PathBuf,
    machine: MachineFiles,
}

/// `python3 probe.py NAME,tcp|udp,HOST,PORT[,broadcast|,mcastif] ...`: one attempt each
/// (`mcastif`: IPv4 multicast out of eth0 named with `IP_MULTICAST_IF`), printing
/// `NAME=answered <first bytes>` (TCP: connected, sent a request head, got a reply),
/// `NAME=sent` (UDP: the kernel took the datagram), `NAME=closed` or
/// `NAME=failed <error>`. HOST may carry a zone (`fe80::1%eth0`).
pub const PROBE_PY: &str = r#"import socket,struct,sys
for spec in sys.argv[1:]:
    name,kind,host,port=spec.split(',')[:4]
    try:
        fam,typ,_,_,addr=socket.getaddrinfo(host,int(port),0,socket.SOCK_STREAM if kind=='tcp' else socket.SOCK_DGRAM)[0]
        s=socket.socket(fam,typ); s.settimeout(2)
        if spec.endswith(',broadcast'): s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)
        if spec.endswith(',mcastif'): s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_IF,struct.pack('4s4si',bytes(4),bytes(4),socket.if_nametoindex('eth0')))
        if kind=='tcp':
            s.connect(addr); s.sendall(b'GET / HTTP/1.1\r\nHost: neighbour.test\r\nConnection: close\r\n\r\n')
            d=s.recv(64); r=('answered '+repr(d[:40])) if d else 'closed'
        else:
            s.sendto(b'probe-'+name.encode(),addr); r='sent'
    except Exception as e:
        r='failed '+type(e).__name__+': '+str(e)
    print(name+'='+r,flush=True)
"#;

/// The results of a [`PROBE_PY`] run by name.
pub fn probe_results(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The first `name` on the usual system PATH.
fn system_tool(name: &str) -> PathBuf {
    AGENT_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found in {AGENT_PATH}"))
}

impl ShimFixture {
    /// Writes the fixture into `lab`'s directory; the agent will trust `ca_file` (the
    /// bottle CA).
    pub fn new(lab: &Lab, ca_file: &Path) -> ShimFixture {
        let machine = MachineFiles::take();
        let files = ShimFiles::new(lab, "shim", ca_file).unwrap();
        let dir = &files.dir;

        // The agent's ways back to privilege: setuid-root copies of ip and cat, and a copy
        // of python3 with file capabilities (setcap, from libcap2-bin).
        let copy = |tool: &str, name: &str, mode: u32| {
            let p = dir.join(name);
            let real = std::fs::canonicalize(system_tool(tool)).unwrap();
            std::fs::copy(real, &p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let suid_ip = copy("ip", "suid-ip", 0o4755);
        let suid_cat = copy("cat", "suid-cat", 0o4755);
        let fcaps_python = copy("python3", "fcaps-python", 0o755);
        let setcap = std::process::Command::new(system_tool("setcap"))
            .arg("cap_net_admin,cap_net_raw+ep")
            .arg(&fcaps_python)
            .status()
            .unwrap();
        assert!(
            setcap.success(),
            "setcap on {} failed",
            fcaps_python.display()
        );

        let probe_py = files.write("probe.py", PROBE_PY).unwrap();

        ShimFixture {
            probe_py,
            files,
            suid_ip,
            suid_cat,
            fcaps_python,
            shim: shim_binary().unwrap_or_else(|e| panic!("{e}")),
            machine,
        }
    }

    /// `sh -c script` as the agent: the real shim as PID 1 of a new PID namespace in
    /// `lab`'s agent namespace sets the network up, drops every privilege, switches to
    /// `node` and runs it. `env` adds shim settings (`BOTTLENECK_IPV6`...).
    pub fn command(&self, lab: &Lab, env: &[(&str, &str)], script: &str) -> Exec {
        let mut exec = self
            .files
            .command(lab, &self.shim, &["sh", "-c", script])
            .timeout(Duration::from_secs(40))
            .env("PATH", AGENT_PATH);
        for (k, v) in env {
            exec = exec.env(k, v);
        }
        exec
    }

    /// Runs [`ShimFixture::command`]; Err if the shim itself failed (status 1, 2, 125..)
    /// rather than the agent's script.
    pub fn run(&self, lab: &Lab, env: &[(&str, &str)], script: &str) -> Result<ExecOutput, String> {
        let out = self
            .command(lab, env, script)
            .run()
            .map_err(|e| format!("the shim did not run: {e}"))?;
        let stderr = out.stderr_str();
        if stderr.contains("bottleneck-init: error") || out.code() == Some(125) {
            return Err(format!("the shim failed: {out:?}"));
        }
        Ok(out)
    }

    /// Err unless the machine's own files are byte-identical to when the fixture was made.
    pub fn unchanged(&self) -> Result<(), String> {
        self.machine.check_unchanged().map_err(|e| e.to_string())
    }
}

/// Puts the agent namespace's network back as the lab built it (the shim narrows it: the
/// connected /24 and /64 removed, IPv6 disabled or routed, its egress filter added), so
/// each shim cell starts from a container engine's setup.
pub fn restore_agent_network(lab: &Lab) -> Result<(), String> {
    let script = "set -e; echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; \
                  ip -6 addr replace 2001:db8:a::2/64 dev eth0 nodad; \
                  ip route replace 198.18.0.0/24 dev eth0 proto kernel scope link src 198.18.0.2; \
                  ip route replace default via 198.18.0.1 dev eth0; \
                  ip -6 route replace default via 2001:db8:a::1 dev eth0; \
                  nft delete table inet bottleneck_agent 2>/dev/null || true";
    let out = lab
        .exec(Host::Agent, &["sh", "-c", script])
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(format!("restoring the agent network: {out:?}"))
    }
}

/// Another host on the agent network, outside the gateway's namespace.
pub struct Neighbour {
    namespace: String,
    /// Its MAC address.
    pub mac: String,
    /// Its IPv6 link-local address.
    pub link_local: Ipv6Addr,
    tcp: Arc<AtomicU64>,
    udp: Arc<AtomicU64>,
    /// The first bytes of every datagram received, as lossy text.
    datagrams: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Neighbour {
    /// Its IPv4 address on the agent network.
    pub const V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    /// Its IPv6 address on the agent network.
    pub const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 3);
    /// The TCP port it answers on.
    pub const TCP_PORT: u16 = 80;
    /// The UDP ports it counts datagrams on.
    pub const UDP_PORTS: [u16; 2] = [9, 5353];

    /// Creates the neighbour's namespace (`<lab id>-nbr`, swept with the lab's if this
    /// process dies) and a macvlan of the gateway's eth1 in it, and starts its listeners.
    pub fn start(lab: &Lab) -> Neighbour {
        let namespace = format!("{}-nbr", lab.id());
        let gw = lab.namespace(Host::Gateway);
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ip(&["netns", "add", &namespace]);
        let mut neighbour = Neighbour {
            namespace: namespace.clone(),
            mac: String::new(),
            link_local: Ipv6Addr::UNSPECIFIED,
            tcp: Arc::new(AtomicU64::new(0)),
            udp: Arc::new(AtomicU64::new(0)),
            datagrams: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let n = namespace.as_str();
        ip(&[
            "-n", gw, "link", "add", "nbr0", "link", "eth1", "type", "macvlan", "mode", "bridge",
        ]);
        ip(&["-n", gw, "link", "set", "nbr0", "netns", n]);
        ip(&[
            "netns",
            "exec",
            n,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.nbr0.accept_dad=0",
            "net.ipv4.ip_forward=0",
            "net.ipv6.conf.all.forwarding=0",
        ]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&["-n", n, "addr", "add", "198.18.0.3/24", "dev", "nbr0"]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            "2001:db8:a::3/64",
            "dev",
            "nbr0",
            "nodad",
        ]);
        ip(&["-n", n, "link", "set", "nbr0", "up"]);
        let link = ip(&["-n", n, "-o", "link", "show", "nbr0"]);
        neighbour.mac = link
            .split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        let addrs = ip(&[
            "-n", n, "-o", "-6", "addr", "show", "dev", "nbr0", "scope", "link",
        ]);
        neighbour.link_local = addrs
            .split("inet6 ")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no link-local address on the neighbour: {addrs}"));

        let (tcp, udp): (TcpListener, Vec<UdpSocket>) = bottleneck_lab::netns::run_in(n, || {
            // TCP dual-stack (a new namespace has net.ipv6.bindv6only = 0). UDP gets one
            // socket per family on the wildcard address (they receive broadcasts and
            // multicast to the all-hosts/all-nodes groups): IPv4 multicast is never
            // delivered to a dual-stack IPv6 socket.
            let tcp =
                TcpListener::bind(SocketAddr::from(([0u16; 8], Neighbour::TCP_PORT))).unwrap();
            tcp.set_nonblocking(true).unwrap();
            std::fs::write("/proc/sys/net/ipv6/bindv6only", "1").unwrap();
            let udp = Neighbour::UDP_PORTS
                .iter()
                .flat_map(|port| {
                    [
                        SocketAddr::from(([0u16; 8], *port)),
                        SocketAddr::from(([0u8; 4], *port)),
                    ]
                })
                .map(|addr| {
                    let s = UdpSocket::bind(addr).unwrap();
                    s.set_nonblocking(true).unwrap();
                    s
                })
                .collect();
            (tcp, udp)
        })
        .unwrap();
        let (t, u, log, stop) = (
            neighbour.tcp.clone(),
            neighbour.udp.clone(),
            neighbour.datagrams.clone(),
            neighbour.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                while let Ok((mut stream, _)) = tcp.accept() {
                    t.fetch_add(1, Ordering::SeqCst);
                    use std::io::Write;
                    let _ = stream.write_all(b"neighbour\n");
                }
                for s in &udp {
                    while let Ok((len, _)) = s.recv_from(&mut buf) {
                        u.fetch_add(1, Ordering::SeqCst);
                        let text = String::from_utf8_lossy(&buf[..len.min(64)]).into_owned();
                        if let Ok(mut log) = log.lock() {
                            log.push(text);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        neighbour
    }

    /// TCP connections and UDP datagrams received so far.
    pub fn counts(&self) -> (u64, u64) {
        // Let the poller catch up with what just arrived.
        std::thread::sleep(Duration::from_millis(40));
        (
            self.tcp.load(Ordering::SeqCst),
            self.udp.load(Ordering::SeqCst),
        )
    }
}

impl Neighbour {
    /// The datagrams received so far (their first 64 bytes, lossy).
    pub fn datagrams(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(40));
        self.datagrams.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}
