//! The init shim and the gateway together (issue 5, test 6): the real `bottleneck-gateway`
//! in the gateway namespace of a Bare lab, the real `bottleneck-init` as PID 1 of a new PID
//! namespace in the agent namespace, and an agent (uid 1000) that reaches an allowed host
//! over HTTPS with curl, Python `urllib` and Node `fetch`, with no proxy variable and no
//! explicit trust option: the route goes through the gateway and the bottle CA is trusted
//! through the variables the shim exports.
//!
//! The gateway's DNS server is not there yet, so names resolve from a per-test hosts file
//! bind-mounted over /etc/hosts (the address only has to route to the gateway, which
//! decides by SNI and resolves the name itself through the lab DNS). Everything the shim
//! writes (/etc/passwd, /etc/group, /etc/resolv.conf, the system CA bundles, its trust
//! directory) is a per-test copy bind-mounted in the command's private mount namespace;
//! the test checks that the machine's own files are byte-identical afterwards.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bottleneck_lab::addr::{GATEWAY_AGENT_V4, GATEWAY_WAN_V4, GATEWAY_WAN_V6, ORIGIN_V4};
mod common;

use bottleneck_lab::shim::{AGENT_PATH, MachineFiles, ShimFiles, sections, shim_binary};
use bottleneck_lab::{ExecOutput, Lab, RequestRecord, RootSnapshot};
use common::Bottle;

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
    matches:
      - paths: [{type: prefix, value: /echo}]
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// The base64 body of a PEM certificate (to find it in a bundle whatever its framing).
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// True if a user other than the owner can reach and execute `path` (others' x bit on
/// the file and on every directory above it).
fn executable_by_others(path: &Path) -> bool {
    let others_x = |p: &Path| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    others_x(path) && path.ancestors().skip(1).all(others_x)
}

/// The first executable `node` on the test's PATH, symlinks resolved.
fn find_node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .and_then(|p| fs::canonicalize(p).ok())
}

fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Per-test files bind-mounted over the machine's in the shim's mount namespace.
struct Fixture {
    files: ShimFiles,
    /// World-writable: the agent and the test hand over through files here.
    sync_dir: PathBuf,
}

impl Fixture {
    fn new(lab: &Lab, ca_file: &Path) -> Fixture {
        let mut files = ShimFiles::new(lab, "shim", ca_file).unwrap();
        // No DNS on the gateway yet: the agent's names come from this file alone.
        let hosts = files
            .write(
                "hosts",
                &format!(
                    "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n\
                     {ORIGIN_V4} allowed.test other.allowed.test denied.test\n"
                ),
            )
            .unwrap();
        files.bind(hosts, "/etc/hosts");
        let sync_dir = files.subdir("sync", 0o1777).unwrap();
        Fixture { files, sync_dir }
    }

    /// Makes `binary` executable by the agent at a path it can reach: the binary itself if
    /// others can reach it, else a bind mount of it in the fixture.
    fn reachable(&mut self, binary: &Path, name: &str) -> PathBuf {
        if executable_by_others(binary) {
            return binary.to_owned();
        }
        let bin = self.files.dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let target = bin.join(name);
        fs::write(&target, b"").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        self.files.bind(binary, target.clone());
        target
    }
}

/// One HTTPS client the agent runs: its section name, the query that marks its request
/// at the origin, the shell command, and the start of its User-Agent.
struct Client {
    name: &'static str,
    command: String,
    user_agent: &'static str,
}

impl Client {
    fn path(&self) -> String {
        format!("/echo?client={}", self.name)
    }
}

fn clients(node: Option<&Path>) -> Vec<Client> {
    let url = |name: &str| format!("https://allowed.test/echo?client={name}");
    let mut clients = vec![Client {
        name: "curl",
        command: format!("curl -sS --max-time 20 '{}'", url("curl")),
        user_agent: "curl/",
    }];
    let python = Path::new("/usr/bin/python3");
    if python.exists() {
        clients.push(Client {
            name: "python",
            command: format!(
                "{} -c 'import urllib.request; \
                 print(urllib.request.urlopen(\"{}\", timeout=20).read().decode())'",
                python.display(),
                url("python")
            ),
            user_agent: "Python-urllib/",
        });
    } else if ci() {
        panic!("/usr/bin/python3 is missing (CI is set: the Python client must run)");
    } else {
        eprintln!("SKIPPED: the Python urllib client (/usr/bin/python3 does not exist)");
    }
    match node {
        Some(node) => clients.push(Client {
            name: "node",
            command: format!(
                "{} -e 'fetch(\"{}\").then(r => r.text()).then(t => console.log(t))\
                 .catch(e => {{ console.error(e, e.cause); process.exit(1); }})'",
                node.display(),
                url("node")
            ),
            user_agent: "node",
        }),
        None => eprintln!("SKIPPED: the Node fetch client (no `node` on PATH)"),
    }
    clients
}

#[test]
fn an_agent_started_by_the_shim_reaches_allowed_hosts_through_the_gateway_trusting_its_ca() {
    if !bottleneck_lab::require_root(
        "an_agent_started_by_the_shim_reaches_allowed_hosts_through_the_gateway_trusting_its_ca",
    ) {
        return;
    }
    let started = Instant::now();
    let shim = shim_binary().unwrap_or_else(|e| panic!("{e}"));
    let machine = MachineFiles::take();
    let root = RootSnapshot::take().expect("root snapshot");

    let bottle = Bottle::start_with_env(POLICY, &[]);
    let gateway_ready = started.elapsed();
    let lab = &bottle.lab;
    let bottle_ca = fs::read_to_string(&bottle.ca_pem).expect("the gateway wrote its CA");
    let ca_body = pem_body(&bottle_ca);
    let mut fx = Fixture::new(lab, &bottle.ca_pem);
    let node = find_node().map(|n| fx.reachable(&n, "node"));
    let clients = clients(node.as_deref());

    let ready = fx.sync_dir.join("ready");
    let go = fx.sync_dir.join("go");
    let mut script = format!(
        "touch {ready}\n\
         i=0; while [ ! -e {go} ]; do\n\
           i=$((i+1)); [ $i -lt 1200 ] || {{ echo 'agent: no go' >&2; exit 90; }}; sleep 0.05\n\
         done\n\
         echo ==id==; id -u\n\
         echo ==env==; env\n",
        ready = ready.display(),
        go = go.display(),
    );
    for client in &clients {
        script.push_str(&format!(
            "echo =={name}==; {command} || echo '{name} failed:' $?; echo\n",
            name = client.name,
            command = client.command,
        ));
    }
    script.push_str(
        "echo ==denied==; curl -sS --max-time 20 -o /dev/null -w '%{http_code}' \
         https://denied.test/echo || echo ' curl failed:' $?; echo\necho ==end==\n",
    );

    let before = lab.https().requests();
    let agent_started = Instant::now();
    let mut agent = fx
        .files
        .command(lab, &shim, &["sh", "-c", &script])
        .env("PATH", AGENT_PATH)
        .env("BOTTLENECK_USER", "node")
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("the shim started");

    // The shim has set up and the agent waits: take the CA back out of the system
    // bundles, so curl and Python can trust it only through the exported variables
    // (Node never reads the system bundle: its roots are built in).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if agent.try_wait().unwrap().is_some() || Instant::now() > deadline {
            panic!("the agent did not start: {:?}", agent.kill());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let setup = agent_started.elapsed();
    for (copy, original) in &fx.files.bundles {
        assert!(
            pem_body(&fs::read_to_string(copy).unwrap()).contains(&ca_body),
            "the shim did not add the CA to {}",
            original.display()
        );
        // In place: the bind mount holds this inode.
        fs::write(copy, fs::read(original).unwrap()).unwrap();
    }
    fs::write(&go, b"").unwrap();
    if agent
        .wait_timeout(Duration::from_secs(100))
        .unwrap()
        .is_none()
    {
        panic!("the agent did not finish: {:?}", agent.kill());
    }
    let out: ExecOutput = agent.kill();
    let agent_ran = agent_started.elapsed();
    assert!(out.success(), "{out:?}");
    let s = sections(&out.stdout_str());
    let section = |name: &str| -> &str {
        s.get(name)
            .unwrap_or_else(|| panic!("no section {name:?} in {out:?}"))
    };
    assert!(s.contains_key("end"), "{out:?}");

    // The agent: uid 1000, no proxy variable, the CA variables naming the shim's bundle.
    assert_eq!(section("id").trim(), "1000", "{out:?}");
    let env: BTreeMap<&str, &str> = section("env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let proxies: Vec<&&str> = env
        .keys()
        .filter(|k| k.to_ascii_lowercase().ends_with("_proxy"))
        .collect();
    assert!(proxies.is_empty(), "proxy variables: {proxies:?}");
    assert!(!env.keys().any(|k| k.starts_with("BOTTLENECK_")), "{env:?}");
    let bundle = fx.files.trust_dir.join("ca-bundle.crt");
    for var in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert_eq!(
            env.get(var).copied(),
            Some(bundle.to_str().unwrap()),
            "{var}: {env:?}"
        );
    }
    assert!(pem_body(&fs::read_to_string(&bundle).unwrap()).contains(&ca_body));
    for (copy, original) in &fx.files.bundles {
        assert!(
            !pem_body(&fs::read_to_string(copy).unwrap()).contains(&ca_body),
            "{} still held the CA while the clients ran",
            original.display()
        );
    }
    // The shim pointed the agent's resolver at the gateway (through the bind mount).
    assert!(
        fs::read_to_string(&fx.files.resolv)
            .unwrap()
            .contains(&format!("nameserver {GATEWAY_AGENT_V4}\n"))
    );

    // Each client got the origin's echo of its own request, relayed by the gateway.
    for client in &clients {
        let body = section(client.name).trim();
        let echo: RequestRecord = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{}: no echo JSON ({e}): {out:?}", client.name));
        assert_eq!(echo.path, client.path(), "{out:?}");
        assert_eq!(echo.sni.as_deref(), Some("allowed.test"), "{out:?}");
        assert!(
            echo.header("user-agent")
                .is_some_and(|ua| ua.starts_with(client.user_agent)),
            "{}: {:?}",
            client.name,
            echo.header("user-agent")
        );
        let peer = echo.peer().unwrap().ip();
        assert!(
            peer == IpAddr::V4(GATEWAY_WAN_V4) || peer == IpAddr::V6(GATEWAY_WAN_V6),
            "{}: the origin saw {peer}, not the gateway",
            client.name
        );
    }

    // The origin counted exactly those requests, and nothing for the denied host.
    assert_eq!(section("denied").trim(), "403", "{out:?}");
    assert_eq!(
        lab.https().requests(),
        before + clients.len() as u64,
        "{:?}",
        lab.https().log()
    );
    let log = lab.https().log();
    let mut seen: Vec<String> = log[log.len() - clients.len()..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    seen.sort();
    let mut expected: Vec<String> = clients.iter().map(Client::path).collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(
        log.iter().all(|r| r.sni.as_deref() == Some("allowed.test")),
        "{log:?}"
    );
    let audit = bottle.audit_text();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"host\":\"denied.test\"") && l.contains("\"decision\":\"deny\"")),
        "{audit}"
    );

    drop(bottle);
    machine.check_unchanged().unwrap_or_else(|e| panic!("{e}"));
    let diff = root.diff(&RootSnapshot::take().expect("root snapshot"));
    assert!(diff.is_empty(), "the machine changed: {diff:#?}");
    eprintln!(
        "clients: {names:?}; gateway ready after {gateway_ready:?}, shim setup {setup:?}, \
         agent done after {agent_ran:?}, total {total:?}",
        names = clients.iter().map(|c| c.name).collect::<Vec<_>>(),
        total = started.elapsed(),
    );
}
