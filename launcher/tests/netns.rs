//! `bottleneck run --backend netns` end to end, as a user runs it: the real `bottleneck`
//! binary builds the bottle, the real `bottleneck-gateway` and `bottleneck-init` run in
//! it, and the gateway's uplink is plugged into a lab's simulated internet (the lab's wan
//! namespace: its DNS, HTTPS origins and echo servers), so nothing leaves the machine and
//! the machine's own network is never changed (checked with `RootSnapshot`).
//!
//! Also: a SIGINT mid-run, a gateway that fails to start, a crashed launcher cleaned up
//! by `bottleneck rm`, `bottleneck logs` of a running bottle, configuration errors before
//! anything exists, `--dry-run`, and `bottleneck demo`.
//!
//! These need `bottleneck-gateway` and `bottleneck-init` built next to `bottleneck`
//! (`cargo test --workspace` builds them; otherwise `cargo build --workspace` first).
#![cfg(target_os = "linux")]
// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottleneck_lab::shim::sections;
use bottleneck_lab::{GatewayMode, Host, Lab, RequestRecord, RootSnapshot, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_bottleneck");

fn helpers_built() {
    let dir = Path::new(BIN).parent().unwrap();
    for name in ["bottleneck-gateway", "bottleneck-init"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: run `cargo build --workspace` first (`cargo test --workspace` builds it)",
            dir.join(name).display()
        );
    }
}

/// A unique bottle name per test and process.
fn bottle_name(tag: &str) -> String {
    format!("t{tag}{:x}", std::process::id() % 0xfffff)
}

fn policy(secret_var: &str) -> String {
    format!(
        r#"version: 1
routes:
  - host: allowed.test
    matches:
      - paths: [{{type: prefix, value: /echo}}]
  - host: other.allowed.test
    auth: {{scheme: Bearer, token_ref: {secret_var}}}
dns:
  upstream: [198.51.100.53:53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24]
"#
    )
}

/// What a bottle may leave behind, by name: its namespaces, the uplink veth in the wan,
/// its state directory.
fn leftovers(name: &str, wan: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.starts_with(&format!("bn-{name}-")) {
            out.push(format!("namespace {line}"));
        }
    }
    if let Some(wan) = wan {
        let links = Command::new("ip")
            .args(["-n", wan, "-o", "link"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&links.stdout).contains(&format!(" bn-{name}@")) {
            out.push(format!("veth bn-{name} in {wan}"));
        }
    }
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    if String::from_utf8_lossy(&links.stdout).contains(&format!(" bn-{name}@")) {
        out.push(format!("veth bn-{name} in the host"));
    }
    let tables = Command::new("nft").args(["list", "tables"]).output();
    if let Ok(t) = tables
        && String::from_utf8_lossy(&t.stdout).contains(&format!("bottleneck-{name}"))
    {
        out.push(format!("nft table bottleneck-{name}"));
    }
    if Path::new("/run/bottleneck").join(name).exists() {
        out.push(format!("/run/bottleneck/{name}"));
    }
    out
}

/// A launcher run; on drop (also in a panic) it is killed and the bottle removed.
struct Launch {
    child: Option<Child>,
    name: String,
}

impl Launch {
    fn spawn(args: &[String], env: &[(&str, &str)], name: &str) -> Launch {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Launch {
            child: Some(cmd.spawn().unwrap()),
            name: name.to_owned(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for the exit (bounded) and returns (status code, stdout, stderr).
    fn wait(&mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                let mut err = String::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.code(), out, err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("bottleneck did not finish within {timeout:?}; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the test did, the bottle goes (a no-op when it is already gone).
        let _ = Command::new(BIN)
            .args(["rm", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A world-writable directory in the lab for the agent's hand-over files.
fn sync_dir(lab: &Lab) -> PathBuf {
    let dir = lab.dir().join("sync");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn wait_for_file(path: &Path, launch: &mut Launch, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(status) = launch.child.as_mut().unwrap().try_wait().unwrap() {
            let (_, out, err) = launch.wait(Duration::from_secs(1));
            panic!(
                "bottleneck exited ({status}) before {}:\n{out}\n{err}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids_in(ns: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn run_args(name: &str, policy: &Path, lab: &Lab, agent: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--backend".into(),
        "netns".into(),
        "--egress=transparent".into(),
        "--policy".into(),
        policy.display().to_string(),
        "--name".into(),
        name.into(),
        "--uplink-netns".into(),
        lab.namespace(Host::Wan).into(),
        "--upstream-ca".into(),
        lab.ca_pem_path().display().to_string(),
        "--".into(),
    ];
    args.extend(agent.iter().map(|s| s.to_string()));
    args
}

#[test]
fn run_enforces_the_policy_hides_the_secret_and_leaves_nothing_behind() {
    if !require_root("run_enforces_the_policy_hides_the_secret_and_leaves_nothing_behind") {
        return;
    }
    helpers_built();
    let root = RootSnapshot::take().unwrap();
    let lab = Lab::new(GatewayMode::Bare).unwrap();
    let wan = lab.namespace(Host::Wan).to_owned();
    let name = bottle_name("run");
    let secret = format!("s3cret-{}-{:?}", std::process::id(), Instant::now());
    let policy_path = lab.dir().join("policy.yaml");
    fs::write(&policy_path, policy("LAB_API_KEY")).unwrap();
    let sync = sync_dir(&lab);
    let (ready, go) = (sync.join("ready"), sync.join("go"));
    let script = format!(
        "echo ==user==; id -u\n\
         echo ==env==; env\n\
         C='curl -sS --max-time 10 -w \\n%{{http_code}}\\n'\n\
         echo ==allowed==; $C https://allowed.test/echo/a\n\
         echo ==notpath==; $C -o /dev/null https://allowed.test/other\n\
         echo ==denieddns==; getent hosts denied.test || echo nxdomain\n\
         echo ==denied==; $C --resolve denied.test:443:198.51.100.10 -D - https://denied.test/\n\
         echo ==inject==; $C -H 'Authorization: Bearer agent-value' https://other.allowed.test/x\n\
         echo ==direct==; $C http://198.51.100.7:7/ ; echo exit=$?\n\
         echo ==masked==; [ -S /run/docker.sock ] && echo docker-socket; \
         ls -A /run/dbus 2>/dev/null | sed 's/^/dbus:/'; echo checked\n\
         touch {ready}\n\
         i=0; while [ ! -e {go} ]; do i=$((i+1)); [ $i -lt 600 ] || exit 90; sleep 0.05; done\n\
         echo ==end==\n\
         exit 42\n",
        ready = ready.display(),
        go = go.display()
    );
    let mut launch = Launch::spawn(
        &run_args(&name, &policy_path, &lab, &["sh", "-c", &script]),
        &[("LAB_API_KEY", &secret)],
        &name,
    );
    wait_for_file(&ready, &mut launch, Duration::from_secs(60));

    // While everything runs: the secret is on no command line of any process, in no
    // environment of the agent's namespace (the shim included), yet in the gateway's.
    let mut cmdlines = 0;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            cmdlines += 1;
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&secret),
                "the secret is on the command line of pid {:?}: {:?}",
                entry.file_name(),
                String::from_utf8_lossy(&cmdline)
            );
        }
    }
    assert!(cmdlines > 10);
    let agent_pids = pids_in(&format!("bn-{name}-agent"));
    assert!(!agent_pids.is_empty());
    for pid in &agent_pids {
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains(&secret),
            "the secret is in the environment of agent-side pid {pid}"
        );
    }
    let gateway_pids = pids_in(&format!("bn-{name}-gw"));
    let gateway_has_it = gateway_pids.iter().any(|pid| {
        String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
            .contains(&format!("LAB_API_KEY={secret}"))
    });
    assert!(gateway_has_it, "the gateway did not get the secret");
    // And no other process holds it in its environment, but the launcher.
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == launch.pid() as u32 || gateway_pids.contains(&pid) {
            continue;
        }
        let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains(&secret),
            "pid {pid} has the secret in its environment: {:?}",
            fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default()
        );
    }

    // `bottleneck ls` and `bottleneck logs` of the running bottle.
    let ls = Command::new(BIN).arg("ls").output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&name) && l.contains("running") && l.contains(&wan)),
        "{ls}"
    );
    let logs = Command::new(BIN).args(["logs", &name]).output().unwrap();
    assert_eq!(logs.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.starts_with("TIME"), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("DENY") && l.contains("denied.test") && l.contains("no_route")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("allow") && l.contains("GET /echo/a") && l.contains("200")),
        "{logs}"
    );
    assert!(
        !logs.contains('\x1b'),
        "no colours when stdout is not a tty"
    );
    let audit = fs::read_to_string(format!("/run/bottleneck/{name}/audit.jsonl")).unwrap();
    assert!(audit.contains("other.allowed.test"), "{audit}");
    assert!(!audit.contains(&secret), "the secret is in the audit log");

    fs::write(&go, b"").unwrap();
    let (code, out, err) = launch.wait(Duration::from_secs(60));
    assert_eq!(code, Some(42), "the agent's exit status\n{out}\n{err}");
    let s = sections(&out);
    assert!(s.contains_key("end"), "{out}\n{err}");
    assert_ne!(s["user"].trim(), "0", "the agent ran as root");
    assert!(!s["env"].contains(&secret) && !s["env"].contains("LAB_API_KEY"));
    assert!(!s["env"].contains("BOTTLENECK_"), "{}", s["env"]);

    let (body, status) = s["allowed"].trim_end().rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}");
    let echo: RequestRecord = serde_json::from_str(body).unwrap();
    assert_eq!(echo.path, "/echo/a");
    assert!(
        echo.peer_addr.starts_with("198.19."),
        "the origin saw {}, not the gateway's uplink",
        echo.peer_addr
    );
    assert_eq!(s["notpath"].trim(), "403", "{out}");
    assert_eq!(s["denieddns"].trim(), "nxdomain", "{out}");
    assert!(s["denied"].contains("x-bottleneck-deny: no_route"), "{out}");
    assert!(s["denied"].trim_end().ends_with("403"), "{out}");
    let (body, status) = s["inject"].trim_end().rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}");
    let echo: RequestRecord = serde_json::from_str(body).unwrap();
    assert_eq!(
        echo.header_all("authorization"),
        [format!("Bearer {secret}").as_str()],
        "the gateway replaced the agent's credential"
    );
    assert!(s["direct"].contains("exit=7"), "{out}");
    // Host sockets that reach the network without a packet of the agent's own are hidden.
    assert!(s["masked"].contains("checked"), "{out}");
    if Path::new("/run/docker.sock").exists() {
        assert!(!s["masked"].contains("docker-socket"), "{out}");
    } else {
        eprintln!("not checked: /run/docker.sock does not exist here");
    }
    let host_dbus = fs::read_dir("/run/dbus").map(|d| d.count()).unwrap_or(0);
    if host_dbus > 0 {
        assert!(!s["masked"].contains("dbus:"), "{out}");
    } else {
        eprintln!("not checked: /run/dbus is empty or missing here");
    }
    assert_eq!(lab.echo().tcp_connections(), 0);
    assert!(
        !lab.https()
            .log()
            .iter()
            .any(|r| r.sni.as_deref() == Some("denied.test"))
    );

    // Progress with timings on stderr, then nothing left behind.
    for step in ["networks", "CA", "gateway", "agent", "cleanup"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("bottleneck: {step}")) && l.contains(" ms")),
            "no progress line for {step}:\n{err}"
        );
    }
    assert_eq!(leftovers(&name, Some(&wan)), Vec::<String>::new());
    drop(launch);
    drop(lab);
    let diff = root.diff(&RootSnapshot::take().unwrap());
    assert!(diff.is_empty(), "the machine's network changed: {diff:#?}");
}

#[test]
fn proxy_egress_gives_the_agent_proxy_variables_and_the_same_policy() {
    if !require_root("proxy_egress_gives_the_agent_proxy_variables_and_the_same_policy") {
        return;
    }
    helpers_built();
    let lab = Lab::new(GatewayMode::Bare).unwrap();
    let wan = lab.namespace(Host::Wan).to_owned();
    let name = bottle_name("px");
    let policy_path = lab.dir().join("policy.yaml");
    fs::write(&policy_path, policy("LAB_API_KEY")).unwrap();
    let script = "echo ==env==; env | grep -i _proxy | sort\n\
         C='curl -sS --max-time 10 -w \\n%{http_code}\\n'\n\
         echo ==allowed==; $C https://allowed.test/echo/p\n\
         echo ==denied==; $C https://denied.test/ 2>&1; echo exit=$?\n\
         echo ==end==\n";
    let mut args = run_args(&name, &policy_path, &lab, &["sh", "-c", script]);
    let at = args
        .iter()
        .position(|a| a == "--egress=transparent")
        .unwrap();
    args[at] = "--egress=proxy".into();
    let mut launch = Launch::spawn(&args, &[("LAB_API_KEY", "x")], &name);
    let (code, out, err) = launch.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}\n{err}");
    let s = sections(&out);
    assert!(
        s["env"].contains("HTTPS_PROXY=http://198.18.0.1:3128")
            && s["env"].contains("https_proxy=http://198.18.0.1:3128"),
        "{out}"
    );
    let (body, status) = s["allowed"].trim_end().rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}\n{err}");
    let echo: RequestRecord = serde_json::from_str(body).unwrap();
    assert_eq!(echo.sni.as_deref(), Some("allowed.test"));
    // The CONNECT to a denied host is refused by the proxy.
    assert!(!s["denied"].contains("exit=0"), "{out}");
    assert!(s["denied"].contains("403"), "{out}");
    assert_eq!(leftovers(&name, Some(&wan)), Vec::<String>::new());
}

#[test]
fn sigint_mid_run_stops_the_agent_and_removes_everything() {
    if !require_root("sigint_mid_run_stops_the_agent_and_removes_everything") {
        return;
    }
    helpers_built();
    let lab = Lab::new(GatewayMode::Bare).unwrap();
    let wan = lab.namespace(Host::Wan).to_owned();
    let name = bottle_name("int");
    let policy_path = lab.dir().join("policy.yaml");
    fs::write(&policy_path, policy("LAB_API_KEY")).unwrap();
    let sync = sync_dir(&lab);
    let ready = sync.join("ready");
    let script = format!("touch {}; sleep 120", ready.display());
    let mut launch = Launch::spawn(
        &run_args(&name, &policy_path, &lab, &["sh", "-c", &script]),
        &[("LAB_API_KEY", "x")],
        &name,
    );
    wait_for_file(&ready, &mut launch, Duration::from_secs(60));
    assert!(!leftovers(&name, Some(&wan)).is_empty());
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launch.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, _out, err) = launch.wait(Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("stopped by a signal"), "{err}");
    assert!(err.contains("bottleneck: cleanup"), "{err}");
    assert_eq!(leftovers(&name, Some(&wan)), Vec::<String>::new());
}

#[test]
fn exec_runs_in_the_agent_without_any_capability() {
    if !require_root("exec_runs_in_the_agent_without_any_capability") {
        return;
    }
    helpers_built();
    let lab = Lab::new(GatewayMode::Bare).unwrap();
    let name = bottle_name("exe");
    let policy_path = lab.dir().join("policy.yaml");
    fs::write(&policy_path, policy("LAB_API_KEY")).unwrap();
    let sync = sync_dir(&lab);
    let ready = sync.join("ready");
    let script = format!("touch {}; sleep 120", ready.display());
    let mut launch = Launch::spawn(
        &run_args(&name, &policy_path, &lab, &["sh", "-c", &script]),
        &[("LAB_API_KEY", "x")],
        &name,
    );
    wait_for_file(&ready, &mut launch, Duration::from_secs(60));
    let probe = "id -un; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
                 grep nameserver /etc/resolv.conf; echo pid1=$(cat /proc/1/comm); \
                 ip link set lo down 2>/dev/null && echo CHANGED || echo refused; \
                 echo ca=$SSL_CERT_FILE; exit 7";
    let out = Command::new(BIN)
        .args(["exec", &name, "--", "sh", "-c", probe])
        .env("LAB_API_KEY", "x")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{text}\n{err}");
    assert!(text.starts_with("node\n"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("CapBnd:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(
        text.contains("nameserver 198.18.0.1"),
        "the bottle's resolv.conf: {text}"
    );
    assert!(
        text.contains("pid1=bottleneck-init"),
        "the agent's PID namespace: {text}"
    );
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains("ca=") && text.contains("ca-bundle.crt"),
        "{text}"
    );
    assert!(!text.contains("LAB_API_KEY"), "{text}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launch.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (_, _, err) = launch.wait(Duration::from_secs(30));
    assert!(err.contains("bottleneck: cleanup"), "{err}");
    let missing = Command::new(BIN)
        .args(["exec", "--backend", "netns", &name, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no running bottle"),
        "{missing:?}"
    );
}

#[test]
fn a_gateway_that_fails_to_start_is_reported_and_everything_is_removed() {
    if !require_root("a_gateway_that_fails_to_start_is_reported_and_everything_is_removed") {
        return;
    }
    helpers_built();
    let lab = Lab::new(GatewayMode::Bare).unwrap();
    let wan = lab.namespace(Host::Wan).to_owned();
    let name = bottle_name("gwf");
    let policy_path = lab.dir().join("policy.yaml");
    fs::write(&policy_path, policy("LAB_API_KEY")).unwrap();
    // An upstream CA file that is not PEM: the gateway refuses to start.
    let bad_ca = lab.dir().join("not-a-ca.pem");
    fs::write(&bad_ca, "not a certificate\n").unwrap();
    let mut args = run_args(&name, &policy_path, &lab, &["sh", "-c", "echo agent-ran"]);
    let at = args.iter().position(|a| a == "--upstream-ca").unwrap();
    args[at + 1] = bad_ca.display().to_string();
    let mut launch = Launch::spawn(&args, &[("LAB_API_KEY", "x")], &name);
    let (code, out, err) = launch.wait(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(!out.contains("agent-ran"), "the agent must not run: {out}");
    assert!(err.contains("error: gateway:"), "{err}");
    assert!(err.contains("bottleneck: cleanup"), "{err}");
    assert_eq!(leftovers(&name, Some(&wan)), Vec::<String>::new());
}

#[test]
fn rm_removes_what_a_killed_launcher_left_behind() {
    if !require_root("rm_removes_what_a_killed_launcher_left_behind") {
        return;
    }
    helpers_built();
    let lab = Lab::new(GatewayMode::Bare).unwrap();
    let wan = lab.namespace(Host::Wan).to_owned();
    let name = bottle_name("rm");
    let policy_path = lab.dir().join("policy.yaml");
    fs::write(&policy_path, policy("LAB_API_KEY")).unwrap();
    let sync = sync_dir(&lab);
    let ready = sync.join("ready");
    let script = format!("touch {}; sleep 120", ready.display());
    let mut launch = Launch::spawn(
        &run_args(&name, &policy_path, &lab, &["sh", "-c", &script]),
        &[("LAB_API_KEY", "x")],
        &name,
    );
    wait_for_file(&ready, &mut launch, Duration::from_secs(60));
    // A crash: no chance to clean up.
    let mut child = launch.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let left = leftovers(&name, Some(&wan));
    assert!(left.len() >= 3, "{left:?}");
    let ls = Command::new(BIN).arg("ls").output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&name) && l.contains("stale")),
        "{ls}"
    );
    let rm = Command::new(BIN).args(["rm", &name]).output().unwrap();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert_eq!(leftovers(&name, Some(&wan)), Vec::<String>::new());
    // The agent and the gateway processes went with it.
    let agent_still_there = Command::new("pgrep")
        .args(["-f", &ready.display().to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(!agent_still_there, "the agent survived `bottleneck rm`");
    let again = Command::new(BIN).args(["rm", &name]).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "no such bottle any more");
}

#[test]
fn configuration_errors_exit_3_before_anything_is_created() {
    let dir = std::env::temp_dir().join(format!("bn-launcher-cfg-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let policy_path = dir.join("policy.yaml");
    fs::write(&policy_path, policy("CFG_TEST_KEY")).unwrap();
    let name = bottle_name("cfg");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["run", "--policy"])
            .arg(&policy_path)
            .args(["--name", &name])
            .args(extra)
            .args(["--", "true"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let missing = run(&[], &[]);
    assert_eq!(missing.status.code(), Some(3));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("CFG_TEST_KEY"), "{err}");
    let to_agent = run(&["-e", "CFG_TEST_KEY"], &[("CFG_TEST_KEY", "v")]);
    assert_eq!(to_agent.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&to_agent.stderr).contains("secrets go to the gateway only"));
    let proxy = run(
        &["--backend", "apple", "--egress=proxy"],
        &[("CFG_TEST_KEY", "v")],
    );
    assert_eq!(proxy.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&proxy.stderr).contains("not yet supported by the apple"));
    let root = run(&["--user", "root"], &[("CFG_TEST_KEY", "v")]);
    assert_eq!(root.status.code(), Some(3));
    fs::write(&policy_path, "version: 1\nroutes:\n  - hots: x\n").unwrap();
    let bad = run(&[], &[]);
    assert_eq!(bad.status.code(), Some(3));
    let check = Command::new(BIN)
        .args(["policy", "check"])
        .arg(&policy_path)
        .output()
        .unwrap();
    // The same messages as `bottleneck policy check`.
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(leftovers(&name, None).is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    helpers_built();
    let dir = std::env::temp_dir().join(format!("bn-launcher-dry-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let policy_path = dir.join("policy.yaml");
    fs::write(&policy_path, policy("DRY_TEST_KEY")).unwrap();
    let name = bottle_name("dry");
    let out = Command::new(BIN)
        .env("DRY_TEST_KEY", "dry-secret-value")
        .args(["run", "--dry-run", "--policy"])
        .arg(&policy_path)
        .args([
            "--name",
            &name,
            "-v",
            "/tmp:/mnt:ro",
            "--",
            "claude",
            "--print",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        format!("ip netns add bn-{name}-gw"),
        format!("ip netns add bn-{name}-agent"),
        format!("ip link add bn-{name} type veth peer name eth0 netns bn-{name}-gw"),
        format!("table ip bottleneck-{name}"),
        "masquerade".into(),
        "--agent-iface eth1".into(),
        "DRY_TEST_KEY=<from this environment>".into(),
        "--pid --fork --kill-child --mount-proc".into(),
        "ro /tmp /mnt".into(),
        "-- claude --print".into(),
        format!("nft delete table ip bottleneck-{name}"),
        format!("ip netns del bn-{name}-agent"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("dry-secret-value"),
        "the plan shows the secret"
    );
    // (Other tests run in parallel: only this bottle's names are checked.)
    assert!(leftovers(&name, None).is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_runs_and_shows_every_case() {
    if !require_root("the_demo_runs_and_shows_every_case") {
        return;
    }
    helpers_built();
    let root = RootSnapshot::take().unwrap();
    let mut launch = Launch::spawn(&["demo".to_string()], &[], "demo-none");
    let (code, out, err) = launch.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{out}\n{err}");
    for case in [
        "[ok     ] allowed host",
        "[ok     ] denied host",
        "x-bottleneck-deny: no_route",
        "[ok     ] credential injected",
        "[ok     ] DNS exfiltration",
        "NXDOMAIN",
        "[ok     ] direct IP",
        "[ok     ] UDP",
        "[ok     ] at the origins",
        "TIME     KIND  VERDICT HOST",
        "demo finished",
    ] {
        assert!(out.contains(case), "missing {case:?} in:\n{out}\n{err}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    // The audit table shows both verdicts with their reasons.
    assert!(
        out.lines()
            .any(|l| l.contains("DENY") && l.contains("no_route"))
    );
    assert!(
        out.lines()
            .any(|l| l.contains("allow") && l.contains("POST /v1/messages"))
    );
    // The bottle it built is gone, and the machine's network is as it was.
    let demo_bottles: Vec<String> = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with("bn-demo-"))
    .map(str::to_owned)
    .collect();
    assert!(demo_bottles.is_empty(), "{demo_bottles:?}");
    let diff = root.diff(&RootSnapshot::take().unwrap());
    assert!(diff.is_empty(), "the machine's network changed: {diff:#?}");
}
