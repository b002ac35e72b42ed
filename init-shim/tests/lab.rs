//! End-to-end tests of `bottleneck-init` in the agent namespace of a network lab.
//!
//! The shim runs as root, as PID 1 of a fresh PID namespace
//! (`unshare --pid --fork --mount-proc`), inside the private mount namespace that
//! `Lab::command` gives every command. The files it reads or writes are bind-mounted
//! there from per-test copies: /etc/passwd and /etc/group (with a `node` user, uid 1000),
//! /etc/resolv.conf and every system CA bundle the machine has; its trust directory is a
//! per-test directory (the lab's `ShimFiles`). Every test checks at its end that the
//! machine's own copies of those files are byte-identical and that no temporary file was
//! left next to them (the lab's `MachineFiles`).

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottleneck_lab::shim::{
    MachineFiles, NEW_PID_NAMESPACE, ShimFiles, UNDO_ATTEMPTS, undo_attempts_script,
};
use bottleneck_lab::{Exec, ExecOutput, GatewayMode, Host, Lab, require_root};

const SHIM: &str = env!("CARGO_BIN_EXE_bottleneck-init");
const GATEWAY6: &str = "2001:db8:a::1";

/// Panics unless the machine's own files are as in `machine` and `/etc/bottleneck` does
/// not exist.
fn assert_unchanged(machine: &MachineFiles) {
    machine.check_unchanged().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !Path::new("/etc/bottleneck").exists(),
        "/etc/bottleneck was created"
    );
}

/// A per-test directory with the files bind-mounted over the machine's.
struct Fixture {
    files: ShimFiles,
    /// World-writable: the agent creates `ran` here if it runs at all.
    marker_dir: PathBuf,
}

impl Fixture {
    fn new(lab: &Lab, name: &str) -> Fixture {
        let files = ShimFiles::with_groups(
            lab,
            &format!("init-{name}"),
            lab.ca_pem_path(),
            &["agents:x:1500:other,node"],
        )
        .unwrap();
        let marker_dir = files.subdir("marker", 0o1777).unwrap();
        Fixture { files, marker_dir }
    }

    fn marker(&self) -> PathBuf {
        self.marker_dir.join("ran")
    }

    /// An agent command that leaves the marker, then runs `script`.
    fn marking(&self, script: &str) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!("touch {} && {script}", self.marker().display()),
        ]
    }
}

/// How to start the shim.
struct Run<'a> {
    lab: &'a Lab,
    fx: &'a Fixture,
    env: Vec<(String, String)>,
    args: Vec<String>,
    pid1: bool,
    /// A command the shim runs under (after the bind mounts), e.g. setpriv.
    prefix: Vec<String>,
    /// Extra shell commands run as root before the shim (after the bind mounts).
    before: Vec<String>,
}

impl<'a> Run<'a> {
    fn new(lab: &'a Lab, fx: &'a Fixture) -> Run<'a> {
        Run {
            lab,
            fx,
            env: fx
                .files
                .env()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            args: Vec::new(),
            pid1: true,
            prefix: Vec::new(),
            before: Vec::new(),
        }
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    fn not_pid1(mut self) -> Self {
        self.pid1 = false;
        self
    }

    /// Runs the shim as `uid`:`gid` with no capabilities.
    fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.prefix = [
            "setpriv",
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
            "--",
        ]
        .map(String::from)
        .to_vec();
        self
    }

    /// Runs the shim as root without CAP_NET_ADMIN (dropped from the bounding set).
    fn without_net_admin(mut self) -> Self {
        self.prefix = ["setpriv", "--bounding-set", "-net_admin", "--"]
            .map(String::from)
            .to_vec();
        self
    }

    fn before(mut self, shell: &str) -> Self {
        self.before.push(shell.into());
        self
    }

    fn command<S: AsRef<str>>(self, agent: &[S]) -> Exec {
        let mut argv: Vec<String> = Vec::new();
        if !self.before.is_empty() {
            argv.extend([
                "sh".into(),
                "-c".into(),
                format!("{}; exec \"$@\"", self.before.join(" && ")),
                "before".into(),
            ]);
        }
        if self.pid1 {
            argv.extend(NEW_PID_NAMESPACE.map(String::from));
        }
        argv.extend(self.prefix);
        argv.push(SHIM.into());
        argv.extend(self.args);
        argv.push("--".into());
        argv.extend(agent.iter().map(|a| a.as_ref().to_owned()));
        let mut exec = self
            .lab
            .command(Host::Agent, &self.fx.files.bind_and_run(&argv))
            .timeout(Duration::from_secs(30));
        for (k, v) in &self.env {
            exec = exec.env(k, v);
        }
        exec
    }

    fn run<S: AsRef<str>>(self, agent: &[S]) -> ExecOutput {
        self.command(agent).run().expect("the shim ran")
    }
}

/// `sh -c SCRIPT` as an argv.
fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// The sections of an output separated by lines `==NAME==`; indexing a missing one
/// panics with the whole output.
struct Sections {
    map: BTreeMap<String, String>,
    all: String,
}

impl std::ops::Index<&str> for Sections {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        self.map
            .get(name)
            .unwrap_or_else(|| panic!("no section {name:?} in:\n{}", self.all))
    }
}

fn sections(out: &ExecOutput) -> Sections {
    Sections {
        map: bottleneck_lab::shim::sections(&out.stdout_str()),
        all: format!("{out:?}"),
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn assert_no_privilege(status: &str) {
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(status, cap),
            "0000000000000000",
            "{cap}: {status}"
        );
    }
    assert_eq!(status_field(status, "NoNewPrivs"), "1", "{status}");
}

/// The agent namespace's routes, as seen from a separate root command.
fn routes(lab: &Lab, v6: bool) -> String {
    let fam = if v6 { "-6" } else { "-4" };
    lab.exec(Host::Agent, &["ip", fam, "route"])
        .expect("ip route")
        .check()
        .expect("ip route ok")
        .stdout_str()
}

/// The base64 body of a PEM certificate (to find it in a bundle whatever its framing).
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn full_setup_drops_everything_and_routes_through_the_gateway() {
    if !require_root("full_setup_drops_everything_and_routes_through_the_gateway") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "full");
    let out = Run::new(&lab, &fx)
        .env("BOTTLENECK_EXTRA_SETTING", "must not reach the agent")
        .run(&sh(
            "echo ==status==; cat /proc/self/status; echo ==route==; ip route; \
             echo ==route6==; ip -6 route; echo ==resolv==; cat /etc/resolv.conf; \
             echo ==id==; id; echo ==env==; env; echo ==pid==; echo $PPID; \
             echo ==get==; ip route get 198.18.0.3; \
             echo ==curl==; curl -sS --max-time 10 --resolve allowed.test:443:198.51.100.10 \
               https://allowed.test/trust-check -o /dev/null -w '%{http_code}\\n'",
        ));
    assert!(out.success(), "{out:?}");
    let s = sections(&out);

    // No capability in any set, no_new_privs, node's uid/gid and groups.
    assert_no_privilege(&s["status"]);
    assert_eq!(status_field(&s["status"], "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(&s["status"], "Gid"), "1000\t1000\t1000\t1000");
    assert_eq!(
        s["id"].trim(),
        "uid=1000(node) gid=1000(node) groups=1000(node),1500(agents)"
    );
    // Signal dispositions as any command in the lab has them (no SIGPIPE ignored by
    // Rust's runtime leaking into the agent).
    let baseline = lab
        .exec(Host::Agent, &["cat", "/proc/self/status"])
        .unwrap()
        .stdout_str();
    assert_eq!(
        status_field(&s["status"], "SigIgn"),
        status_field(&baseline, "SigIgn")
    );
    assert_eq!(status_field(&s["status"], "SigBlk"), "0000000000000000");
    // The agent's parent is the shim, PID 1 of the namespace.
    assert_eq!(s["pid"].trim(), "1");

    // Default via the gateway; the connected /24 narrowed to a host route to it.
    let route = &s["route"];
    assert!(
        route
            .lines()
            .any(|l| l.trim() == "default via 198.18.0.1 dev eth0 proto static"),
        "{route}"
    );
    assert!(
        route
            .lines()
            .any(|l| l.starts_with("198.18.0.1 dev eth0") && l.contains("scope link")),
        "{route}"
    );
    assert!(!route.contains("198.18.0.0/24"), "{route}");
    assert_eq!(route.lines().count(), 2, "{route}");
    // Another on-link address goes through the gateway, not directly.
    assert!(
        s["get"].contains("198.18.0.3 via 198.18.0.1 dev eth0"),
        "{}",
        s["get"]
    );
    // IPv6 disabled by default: no route at all.
    assert_eq!(s["route6"].trim(), "", "{}", s["route6"]);

    // resolv.conf names only the gateway (written through the bind mount).
    let resolv = &s["resolv"];
    assert!(resolv.contains("nameserver 198.18.0.1\n"), "{resolv}");
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    assert_eq!(fs::read_to_string(&fx.files.resolv).unwrap(), *resolv);

    // Environment: the CA variables name a bundle with the CA; no BOTTLENECK_*.
    let env = &s["env"];
    assert!(!env.contains("BOTTLENECK_"), "{env}");
    assert!(
        env.contains(&format!("HOME={}\n", lab.home().display())),
        "{env}"
    );
    assert!(
        env.contains("USER=node\n") && env.contains("LOGNAME=node\n"),
        "{env}"
    );
    let bundle = fx.files.trust_dir.join("ca-bundle.crt");
    let ca_body = pem_body(lab.ca().cert_pem());
    for var in [
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "DENO_CERT",
    ] {
        assert!(
            env.contains(&format!("{var}={}\n", bundle.display())),
            "{var}: {env}"
        );
    }
    let bundle_text = fs::read_to_string(&bundle).unwrap();
    assert!(
        pem_body(&bundle_text).contains(&ca_body),
        "CA not in the bundle"
    );
    // ... and the system bundle (the per-test copy) got it too, the machine's did not.
    for (copy, original) in &fx.files.bundles {
        let copy_text = fs::read_to_string(copy).unwrap();
        assert!(
            pem_body(&copy_text).contains(&ca_body),
            "{}",
            copy.display()
        );
        assert!(!pem_body(&fs::read_to_string(original).unwrap()).contains(&ca_body));
        assert_eq!(copy_text, bundle_text);
    }
    // curl trusts the lab's CA through the variables alone (the lab's gateway routes).
    assert_eq!(s["curl"].trim(), "200", "{out:?}");
    assert!(out.stderr_str().is_empty(), "{out:?}");

    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn every_other_route_out_and_every_other_default_is_removed() {
    if !require_root("every_other_route_out_and_every_other_default_is_removed") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "extra");
    // A container with more than the engine's routes: an on-link route around the
    // gateway, a second default via another interface, a duplicate default via the
    // gateway with another metric, an IPv6 route.
    for cmd in [
        "link add side0 type veth peer name side1",
        "addr add 198.19.255.1/24 dev side0",
        "link set side0 up",
        "link set side1 up",
        "route add default via 198.19.255.2 dev side0 metric 50",
        "route add 198.19.0.0/24 dev eth0",
        "route add default via 198.18.0.1 dev eth0 metric 100",
        "-6 route add 2001:db8:b::/64 via 2001:db8:a::1",
    ] {
        let argv: Vec<&str> = std::iter::once("ip").chain(cmd.split(' ')).collect();
        lab.exec(Host::Agent, &argv).unwrap().check().unwrap();
    }
    let out = Run::new(&lab, &fx).run(&sh(
        "echo ==route==; ip route; echo ==route6==; ip -6 route; \
         echo ==get==; ip route get 198.19.0.7; ip route get 203.0.113.10",
    ));
    assert!(out.success(), "{out:?}");
    let s = sections(&out);
    let route = &s["route"];
    assert!(!route.contains("198.19.0.0/24"), "{route}");
    assert!(!route.contains("198.19.255.2"), "{route}");
    assert!(route.contains("default via 198.18.0.1 dev eth0"), "{route}");
    // The other interface's own subnet stays (it is not a way around the gateway on the
    // agent network); every default goes via the gateway.
    assert!(
        route
            .lines()
            .filter(|l| l.starts_with("default"))
            .all(|l| l.starts_with("default via 198.18.0.1 dev eth0")),
        "{route}"
    );
    // IPv6 is disabled on eth0 (the other interface keeps its link-local route).
    let r6 = &s["route6"];
    assert!(!r6.contains("eth0") && !r6.contains("default"), "{r6}");
    assert!(!r6.contains("2001:db8:b::/64"), "{r6}");
    let get = &s["get"];
    assert_eq!(get.matches("via 198.18.0.1 dev eth0").count(), 2, "{get}");
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn the_agent_cannot_undo_the_setup() {
    if !require_root("the_agent_cannot_undo_the_setup") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "undo");
    // A setuid-root copy of cat, and a copy of ip with file capabilities.
    let suid = fx.files.dir.join("suid-cat");
    fs::copy("/bin/cat", &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let fcaps = fx.files.dir.join("ip-netadmin");
    fs::copy(
        which("ip").unwrap_or_else(|| PathBuf::from("/usr/sbin/ip")),
        &fcaps,
    )
    .unwrap();
    // File capabilities and ambient capabilities need libcap's tools (libcap2-bin).
    let libcap = which("setcap").is_some() && which("capsh").is_some();
    if !libcap {
        let why = "setcap/capsh not installed (Debian package libcap2-bin): the \
                   file-capability and capsh attempts are not tried";
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{why}");
        }
        eprintln!("note: {why}");
    }
    if libcap {
        let set = std::process::Command::new("setcap")
            .arg("cap_net_admin,cap_net_raw+ep")
            .arg(&fcaps)
            .status()
            .unwrap();
        assert!(set.success(), "setcap on {} failed", fcaps.display());
    }
    let libcap_attempts = if libcap {
        format!(
            "capsh --addamb=cap_net_admin -- -c true; echo capsh_ambient=$?; \
             {fcaps} route replace default via 198.18.0.3; echo fcaps_route=$?; ",
            fcaps = fcaps.display()
        )
    } else {
        String::new()
    };

    let script = format!(
        "{undo}echo ==userns_links==; unshare -U -r -n ip -o link; echo ==after==; \
         setpriv --inh-caps +net_admin --ambient-caps +net_admin true; echo setpriv_ambient=$?; \
         {libcap_attempts} echo ==suid==; {suid} /proc/self/status; \
         echo ==route==; ip route",
        undo = undo_attempts_script(Ipv4Addr::new(198, 18, 0, 3)),
        suid = suid.display(),
    );
    let out = Run::new(&lab, &fx).run(&sh(&script));
    assert!(out.success(), "{out:?}");
    let text = out.stdout_str();
    let s = sections(&out);
    let rc = |name: &str| -> i32 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let mut attempts = UNDO_ATTEMPTS.to_vec();
    attempts.push("setpriv_ambient");
    if libcap {
        attempts.extend(["capsh_ambient", "fcaps_route"]);
    }
    for attempt in attempts {
        assert_ne!(rc(attempt), 0, "{attempt} succeeded: {out:?}");
    }
    // Each attempt was refused by the kernel (not, say, a missing tool).
    let stderr = out.stderr_str();
    let mut refusals = vec![
        "RTNETLINK answers: Operation not permitted",
        "unshare: unshare failed: Operation not permitted",
        "setpriv: apply capabilities: Operation not permitted",
    ];
    if libcap {
        // capsh cannot raise an ambient capability; exec of a binary with file
        // capabilities is refused outright under no_new_privs.
        refusals.extend([
            "failed to raise ambient",
            "ip-netadmin: Operation not permitted",
        ]);
    }
    for refusal in refusals {
        assert!(stderr.contains(refusal), "{refusal:?} missing: {stderr}");
    }
    assert_eq!(
        stderr
            .matches("RTNETLINK answers: Operation not permitted")
            .count(),
        4,
        "{stderr}"
    );
    // A new user+network namespace is empty: the real interface is not in it.
    assert!(!s["userns_links"].contains("eth0"), "{}", s["userns_links"]);
    // The setuid-root binary ran with the agent's ids and no capability.
    assert_no_privilege(&s["suid"]);
    assert_eq!(status_field(&s["suid"], "Uid"), "1000\t1000\t1000\t1000");
    // Nothing changed.
    assert!(
        s["route"].contains("default via 198.18.0.1 dev eth0"),
        "{}",
        s["route"]
    );
    assert_eq!(s["route"].lines().count(), 2, "{}", s["route"]);
    assert!(
        fs::read_to_string(&fx.files.resolv)
            .unwrap()
            .contains("nameserver 198.18.0.1")
    );
    assert!(
        !fs::read_to_string(&fx.files.resolv)
            .unwrap()
            .contains("203.0.113.53")
    );

    drop(lab);
    assert_unchanged(&machine);
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    })
}

#[test]
fn ipv6_disabled_by_default_leaves_no_v6_path() {
    if !require_root("ipv6_disabled_by_default_leaves_no_v6_path") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "v6off");
    // Before: the lab's agent reaches the v6 origin through the routing gateway.
    let before = lab
        .exec(
            Host::Agent,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "http://[2001:db8:100::80]/",
            ],
        )
        .unwrap();
    assert!(before.success(), "{before:?}");
    let out = Run::new(&lab, &fx).run(&sh(
        "echo ==route6==; ip -6 route; echo ==addr6==; ip -6 addr show dev eth0; \
         echo ==get==; ip -6 route get 2001:db8:a::1 2>&1; \
         echo ==curl==; curl -sS --max-time 5 -o /dev/null http://[2001:db8:100::80]/ 2>&1; \
         echo rc=$?; curl -sS --max-time 5 -o /dev/null http://[2001:db8:a::1]/ 2>&1; echo rc=$?",
    ));
    assert!(out.success(), "{out:?}");
    let s = sections(&out);
    assert_eq!(s["route6"].trim(), "", "{out:?}");
    assert_eq!(s["addr6"].trim(), "", "{out:?}");
    assert!(s["get"].contains("unreachable"), "{out:?}");
    let curl = &s["curl"];
    assert_eq!(curl.matches("rc=7").count(), 2, "{curl}");
    assert!(!curl.contains("refused"), "{curl}");
    // The sysctl, read back by root in the namespace.
    let sysctl = lab
        .exec(
            Host::Agent,
            &["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"],
        )
        .unwrap();
    assert_eq!(sysctl.stdout_str().trim(), "1");
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn ipv6_route_mode_goes_through_the_gateway_only() {
    if !require_root("ipv6_route_mode_goes_through_the_gateway_only") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "v6route");
    let out = Run::new(&lab, &fx)
        .env("BOTTLENECK_IPV6", "route")
        .env("BOTTLENECK_GATEWAY6", GATEWAY6)
        .run(&sh(
            "echo ==route6==; ip -6 route; echo ==get==; ip -6 route get 2001:db8:a::3; \
             echo ==curl==; curl -sS --max-time 5 -o /dev/null -w '%{http_code}\\n' \
             http://[2001:db8:100::80]/",
        ));
    assert!(out.success(), "{out:?}");
    let s = sections(&out);
    let r6 = &s["route6"];
    assert!(
        r6.lines()
            .any(|l| l.starts_with("default via 2001:db8:a::1 dev eth0")),
        "{r6}"
    );
    assert!(
        r6.lines().any(|l| l.starts_with("2001:db8:a::1 dev eth0")),
        "{r6}"
    );
    assert!(
        !r6.contains("2001:db8:a::/64") && !r6.contains("fe80::/64"),
        "{r6}"
    );
    assert_eq!(r6.lines().count(), 2, "{r6}");
    assert!(
        s["get"].contains("via 2001:db8:a::1 dev eth0"),
        "{}",
        s["get"]
    );
    // Neighbour discovery still works with only the host route: the v6 origin answers.
    assert_eq!(s["curl"].trim(), "200", "{out:?}");
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn signals_exit_codes_and_orphans() {
    if !require_root("signals_exit_codes_and_orphans") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "signals");

    // SIGTERM to PID 1 (sent from inside the namespace) reaches the agent, whose own
    // exit status becomes the shim's.
    let out = Run::new(&lab, &fx).run(&sh("trap 'echo got-term; exit 7' TERM; kill -TERM 1; \
         i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; exit 3"));
    assert_eq!(out.code(), Some(7), "{out:?}");
    assert!(out.stdout_str().contains("got-term"), "{out:?}");
    // Other forwarded signals too.
    let out = Run::new(&lab, &fx).run(&sh(
        "trap 'exit 11' USR1; trap 'exit 12' HUP; kill -HUP 1; \
         i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; exit 3",
    ));
    assert_eq!(out.code(), Some(12), "{out:?}");

    // Plain exit codes, and 128+N for a signal death.
    let out = Run::new(&lab, &fx).run(&sh("exit 42"));
    assert_eq!(out.code(), Some(42), "{out:?}");
    let out = Run::new(&lab, &fx).run(&sh("kill -KILL $$"));
    assert_eq!(out.code(), Some(137), "{out:?}");
    let out = Run::new(&lab, &fx).run(&sh("kill -TERM $$"));
    assert_eq!(out.code(), Some(143), "{out:?}");

    // Orphaned grandchildren are re-parented to PID 1 and reaped: no zombie is left.
    let out = Run::new(&lab, &fx).run(&sh(
        "for i in 1 2 3; do (sleep 0.1 &) ; done; (sh -c 'exit 0' &); sleep 1; \
         z=0; for f in /proc/[0-9]*/stat; do \
           s=$(cut -d' ' -f3 \"$f\" 2>/dev/null); [ \"$s\" = Z ] && z=$((z+1)); \
         done; echo zombies=$z; ls -d /proc/[0-9]* | wc -l",
    ));
    assert!(out.success(), "{out:?}");
    assert!(out.stdout_str().contains("zombies=0"), "{out:?}");
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn every_failure_exits_before_the_agent_runs() {
    if !require_root("every_failure_exits_before_the_agent_runs") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "fail");
    let original_routes = routes(&lab, false);
    let original_routes6 = routes(&lab, true);
    let original_resolv = fs::read_to_string(&fx.files.resolv).unwrap();
    let leaf = lab.ca().issue(&["leaf.test"]).unwrap().cert_pem;
    let agent = fx.marking("echo the agent ran");

    let cases: Vec<(&str, Run, i32, &str)> = vec![
        (
            "gateway off the subnet",
            Run::new(&lab, &fx).env("BOTTLENECK_GATEWAY", "198.18.1.1"),
            2,
            "not on a directly connected subnet of eth0",
        ),
        (
            "gateway is the agent itself",
            Run::new(&lab, &fx).env("BOTTLENECK_GATEWAY", "198.18.0.2"),
            2,
            "own address",
        ),
        (
            "no gateway",
            Run::new(&lab, &fx).unset("BOTTLENECK_GATEWAY"),
            2,
            "no gateway",
        ),
        (
            "unknown user",
            Run::new(&lab, &fx).env("BOTTLENECK_USER", "claude"),
            2,
            "user \"claude\" does not exist",
        ),
        (
            "root as the agent",
            Run::new(&lab, &fx).env("BOTTLENECK_USER", "root"),
            2,
            "uid 0",
        ),
        (
            "CA that is not PEM",
            Run::new(&lab, &fx)
                .unset("BOTTLENECK_CA_FILE")
                .env("BOTTLENECK_CA", "not a certificate"),
            2,
            "contains no certificate",
        ),
        (
            "CA that is a leaf",
            Run::new(&lab, &fx)
                .unset("BOTTLENECK_CA_FILE")
                .env("BOTTLENECK_CA", &leaf),
            2,
            "is not a CA certificate",
        ),
        (
            "CA file missing",
            Run::new(&lab, &fx).env("BOTTLENECK_CA_FILE", "/nonexistent/ca.pem"),
            2,
            "/nonexistent/ca.pem",
        ),
        (
            "unprivileged (nobody)",
            Run::new(&lab, &fx).run_as(65534, 65534),
            2,
            "not enough privilege: CAP_NET_ADMIN, CAP_SETUID, CAP_SETGID, CAP_SETPCAP missing",
        ),
        (
            "root without CAP_NET_ADMIN",
            Run::new(&lab, &fx).without_net_admin(),
            2,
            "not enough privilege: CAP_NET_ADMIN missing",
        ),
        (
            "nonexistent interface",
            Run::new(&lab, &fx).env("BOTTLENECK_IFACE", "nosuch0"),
            2,
            "interface \"nosuch0\" (BOTTLENECK_IFACE) does not exist",
        ),
        (
            "IPv6 routing without a v6 gateway",
            Run::new(&lab, &fx).env("BOTTLENECK_IPV6", "route"),
            2,
            "BOTTLENECK_GATEWAY6",
        ),
        (
            "bad IPv6 mode",
            Run::new(&lab, &fx).env("BOTTLENECK_IPV6", "sometimes"),
            2,
            "invalid value 'sometimes'",
        ),
    ];
    for (name, run, code, message) in cases {
        let out = run.run(&agent);
        assert_eq!(out.code(), Some(code), "{name}: {out:?}");
        let stderr = out.stderr_str();
        assert!(stderr.contains(message), "{name}: {stderr}");
        if code == 2 && !message.starts_with("invalid value") {
            assert!(
                stderr.starts_with("bottleneck-init: error: "),
                "{name}: {stderr}"
            );
            assert!(stderr.contains("nothing was changed"), "{name}: {stderr}");
        }
        assert!(!fx.marker().exists(), "{name}: the agent ran");
        assert_eq!(
            routes(&lab, false),
            original_routes,
            "{name}: IPv4 routes changed"
        );
        assert_eq!(
            routes(&lab, true),
            original_routes6,
            "{name}: IPv6 routes changed"
        );
        assert_eq!(
            fs::read_to_string(&fx.files.resolv).unwrap(),
            original_resolv,
            "{name}"
        );
        assert!(!fx.files.trust_dir.exists(), "{name}: trust dir written");
    }

    // A failure after setup began (the trust directory cannot be created): exit 1, and
    // still the agent never runs.
    let out = Run::new(&lab, &fx)
        .env("BOTTLENECK_TRUST_DIR", "/proc/bottleneck-trust")
        .run(&agent);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr_str().contains("/proc/bottleneck-trust"),
        "{out:?}"
    );
    assert!(!out.stderr_str().contains("nothing was changed"), "{out:?}");
    assert!(!fx.marker().exists(), "the agent ran");

    // The agent's command missing: 127, not executable: 126.
    let out = Run::new(&lab, &fx).run(&["no-such-agent-command"]);
    assert_eq!(out.code(), Some(127), "{out:?}");
    assert!(out.stderr_str().contains("command not found"), "{out:?}");
    let out = Run::new(&lab, &fx).run(&["/etc/passwd"]);
    assert_eq!(out.code(), Some(126), "{out:?}");
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn drop_only_changes_nothing_but_privilege() {
    if !require_root("drop_only_changes_nothing_but_privilege") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "droponly");
    let original_routes = routes(&lab, false);
    let original_resolv = fs::read_to_string(&fx.files.resolv).unwrap();
    let script = "echo ==status==; cat /proc/self/status; echo ==id==; id; \
                  echo ==try==; ip route replace default via 198.18.0.3; echo rc=$?; \
                  ip route del 198.18.0.0/24 dev eth0; echo rc=$?; \
                  echo ==route==; ip route; echo ==env==; env; echo ==pid==; echo $$";

    // Not PID 1 (as under `docker exec`), the container's BOTTLENECK_* in the
    // environment: the shim becomes the command, nothing else changes.
    let out = Run::new(&lab, &fx)
        .arg("--drop-only")
        .not_pid1()
        .run(&sh(script));
    assert!(out.success(), "{out:?}");
    let s = sections(&out);
    assert_no_privilege(&s["status"]);
    let baseline = lab
        .exec(Host::Agent, &["cat", "/proc/self/status"])
        .unwrap()
        .stdout_str();
    assert_eq!(
        status_field(&s["status"], "SigIgn"),
        status_field(&baseline, "SigIgn")
    );
    // The shim became the command: the agent's shell is the process the lab started.
    assert_ne!(s["pid"].trim(), "1");
    assert_eq!(
        s["id"].trim(),
        "uid=1000(node) gid=1000(node) groups=1000(node),1500(agents)"
    );
    assert_eq!(s["try"].matches("rc=2").count(), 2, "{out:?}");
    assert!(
        out.stderr_str().contains("Operation not permitted"),
        "{out:?}"
    );
    assert!(!out.stderr_str().contains("warning"), "{out:?}");
    assert_eq!(routes(&lab, false), original_routes);
    assert_eq!(s["route"], original_routes);
    assert_eq!(
        fs::read_to_string(&fx.files.resolv).unwrap(),
        original_resolv
    );
    assert!(!fx.files.trust_dir.exists());
    assert!(!s["env"].contains("BOTTLENECK_"), "{}", s["env"]);
    assert!(!s["env"].contains("SSL_CERT_FILE"), "{}", s["env"]);
    for (copy, original) in &fx.files.bundles {
        assert_eq!(fs::read(copy).unwrap(), fs::read(original).unwrap());
    }

    // After a full run has written the trust directory, a drop-only process is pointed at
    // the same bundle.
    let full = Run::new(&lab, &fx).run(&["true"]);
    assert!(full.success(), "{full:?}");
    let out = Run::new(&lab, &fx)
        .arg("--drop-only")
        .not_pid1()
        .run(&sh("env; cat /proc/self/status"));
    assert!(out.success(), "{out:?}");
    let bundle = fx.files.trust_dir.join("ca-bundle.crt");
    assert!(
        out.stdout_str()
            .contains(&format!("SSL_CERT_FILE={}\n", bundle.display())),
        "{out:?}"
    );
    assert_no_privilege(&out.stdout_str());
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn not_pid1_and_read_only_proc_sys() {
    if !require_root("not_pid1_and_read_only_proc_sys") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "rosys");
    // Not PID 1, and /proc/sys read-only as in a Docker container: IPv6 is stripped
    // through netlink instead of the sysctl, with a warning. The orphan lives 2 s so a
    // loaded machine's slow /proc scan still finds it (a 0.3 s orphan was gone in time).
    let out = Run::new(&lab, &fx)
        .not_pid1()
        .before("mount -o bind,ro /proc/sys /proc/sys")
        .run(&sh(
            "echo ==route6==; ip -6 route; echo ==addr6==; ip -6 addr show dev eth0; \
             echo ==route==; ip route; echo ==orphans==; (sleep 2 &); sleep 0.2; \
             children() { for f in /proc/[0-9]*/status; do \
               awk -v pp=$PPID -v st=\"$1\" '/^Name:/{n=$2} /^State:/{s=$2} /^PPid:/{p=$2} \
               END{if (p==pp && n==\"sleep\" && (st==\"\" || s==st)) print}' \"$f\" 2>/dev/null; \
             done | wc -l; }; \
             echo adopted=$(children); sleep 2.5; echo zombies=$(children Z)",
        ));
    assert!(out.success(), "{out:?}");
    let stderr = out.stderr_str();
    assert!(stderr.contains("warning: not running as PID 1"), "{stderr}");
    assert_eq!(
        stderr.matches("not running as PID 1").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("disable_ipv6"), "{stderr}");
    let s = sections(&out);
    assert_eq!(s["route6"].trim(), "", "{out:?}");
    assert_eq!(s["addr6"].trim(), "", "{out:?}");
    assert!(
        s["route"].contains("default via 198.18.0.1 dev eth0"),
        "{out:?}"
    );
    assert!(!s["route"].contains("198.18.0.0/24"), "{out:?}");
    // The orphan was adopted by the shim (a child subreaper), then reaped.
    assert!(s["orphans"].contains("adopted=1\n"), "{out:?}");
    assert!(s["orphans"].contains("zombies=0\n"), "{out:?}");
    drop(lab);
    assert_unchanged(&machine);
}

#[test]
fn values_already_set_behind_a_read_only_proc_sys_give_no_warning() {
    if !require_root("values_already_set_behind_a_read_only_proc_sys_give_no_warning") {
        return;
    }
    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "preset");
    // What a container engine started with the right sysctls looks like to the shim.
    let out = Run::new(&lab, &fx)
        .not_pid1()
        .before(
            "for f in ipv4/conf/all/accept_redirects ipv4/conf/eth0/accept_redirects; do \
               echo 0 > /proc/sys/net/$f; done; \
             echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; \
             mount -o bind,ro /proc/sys /proc/sys",
        )
        .run(&sh("ip route"));
    assert!(out.success(), "{out:?}");
    let stderr = out.stderr_str();
    assert!(!stderr.contains("cannot write"), "{stderr}");
    assert!(
        out.stdout_str().contains("default via 198.18.0.1 dev eth0"),
        "{out:?}"
    );
    drop(lab);
    assert_unchanged(&machine);
}

/// The ELF program header types of a binary.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let phoff = u64_at(0x20);
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect()
}

/// Builds the static binary (`init-shim/build-static.sh`, about 2-3 minutes from a cold
/// cache on 2 cores), checks it is static (no PT_INTERP) and at most 3 MB, runs it as
/// PID 1 in a lab, and prints the median time from its exec to the agent's exec over 20
/// runs. Ignored by default for the build time: `cargo test -p bottleneck-init --test
/// lab -- --ignored --nocapture`.
#[test]
#[ignore = "builds the release static binary (minutes); run with --ignored"]
fn static_binary_is_static_small_and_fast() {
    if !require_root("static_binary_is_static_small_and_fast") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-static.sh");
    let out = std::process::Command::new(&script)
        .output()
        .expect("build-static.sh ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rel = String::from_utf8(out.stdout).unwrap();
    let binary = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel.trim());
    let bytes = fs::read(&binary).unwrap();
    const PT_INTERP: u32 = 3;
    assert!(
        !program_header_types(&bytes).contains(&PT_INTERP),
        "{} has an ELF interpreter: not static",
        binary.display()
    );
    println!(
        "static binary: {} bytes ({})",
        bytes.len(),
        binary.display()
    );
    assert!(bytes.len() <= 3 << 20, "{} bytes > 3 MiB", bytes.len());

    let machine = MachineFiles::take();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let fx = Fixture::new(&lab, "static");
    let binary = binary.canonicalize().unwrap().display().to_string();
    let ns = |run: &dyn Fn() -> ExecOutput| -> Vec<u64> {
        (0..20)
            .map(|_| {
                let out = run();
                assert!(out.success(), "{out:?}");
                let t: Vec<u64> = out
                    .stdout_str()
                    .split_whitespace()
                    .map(|n| n.parse().unwrap())
                    .collect();
                t[1] - t[0]
            })
            .collect()
    };
    // `date +%s%N` just before exec'ing X, and as the first thing X runs: the difference
    // with X = the agent directly is the baseline, with X = the shim running the agent
    // the extra is the shim's time from its exec to the agent's exec.
    let timed = |with_shim: bool| {
        let binary = binary.clone();
        let fx = &fx;
        let lab = &lab;
        move || {
            let inner = if with_shim {
                format!("exec {binary} -- date +%s%N")
            } else {
                "exec date +%s%N".to_owned()
            };
            let argv = fx.files.as_pid1(&sh(&format!("date +%s%N; {inner}")));
            let mut exec = lab.command(Host::Agent, &argv);
            for (k, v) in fx.files.env() {
                exec = exec.env(k, v);
            }
            exec.run().unwrap()
        }
    };
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let base = median(ns(&timed(false)));
    let shim = median(ns(&timed(true)));
    println!(
        "exec-to-exec: median {:.2} ms with the shim, {:.2} ms baseline, shim adds {:.2} ms",
        shim as f64 / 1e6,
        base as f64 / 1e6,
        shim.saturating_sub(base) as f64 / 1e6
    );
    drop(lab);
    assert_unchanged(&machine);
}
