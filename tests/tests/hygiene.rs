//! The lab cleans up after itself: after a panic, after a SIGKILL (the next lab sweeps),
//! and it never changes the machine's own network configuration or files.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottleneck_lab::netns::list_namespaces;
use bottleneck_lab::{GatewayMode, Host, Lab, RootSnapshot, require_root};

fn root_links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip -o link");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lab_leaves_no_namespace_or_link_behind_even_after_a_panic() {
    if !require_root("lab_leaves_no_namespace_or_link_behind_even_after_a_panic") {
        return;
    }
    let links_before = root_links();
    // The lab's namespace names and directory, recorded before the panic.
    type Seen = Option<(Vec<String>, std::path::PathBuf)>;
    let seen: Mutex<Seen> = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(GatewayMode::Router).expect("lab");
        *seen.lock().unwrap() = Some((lab.namespaces().to_vec(), lab.dir().to_owned()));
        let listed = list_namespaces().expect("list");
        assert!(lab.namespaces().iter().all(|n| listed.contains(n)));
        assert!(lab.dir().exists());
        panic!("deliberate panic with a live lab");
    }));
    assert!(result.is_err(), "the closure was meant to panic");
    let (names, dir) = seen.lock().unwrap().take().expect("lab was built");
    let listed = list_namespaces().expect("list");
    for name in &names {
        assert!(
            !listed.contains(name),
            "{name} survived the panic: {listed:?}"
        );
    }
    assert!(!dir.exists(), "{} survived the panic", dir.display());
    assert_eq!(root_links(), links_before);
}

#[test]
fn root_namespace_is_untouched() {
    if !require_root("root_namespace_is_untouched") {
        return;
    }
    let before = RootSnapshot::take().expect("snapshot");
    let links = before.entries.get("ip -o link").cloned().flatten();
    assert!(links.is_some_and(|l| l.contains(": lo:")), "{before:?}");
    assert!(before.entries["/etc/resolv.conf"].is_some(), "{before:?}");
    {
        let lab = Lab::new(GatewayMode::Router).expect("lab");
        let out = lab
            .exec(
                Host::Agent,
                &[
                    "curl",
                    "-sS",
                    "--fail",
                    "--max-time",
                    "10",
                    "--cacert",
                    lab.ca_pem_path().to_str().expect("utf-8"),
                    "https://allowed.test/echo",
                ],
            )
            .expect("curl ran");
        assert!(out.success(), "{out:?}");
        // Inside, the lab's resolv.conf is visible; outside, the machine's is unchanged.
        let out = lab
            .exec(Host::Agent, &["cat", "/etc/resolv.conf"])
            .expect("cat ran");
        assert!(
            out.stdout_str().contains("nameserver 198.51.100.53"),
            "{out:?}"
        );
        let mid = RootSnapshot::take().expect("snapshot");
        assert_eq!(before.diff(&mid), Vec::<String>::new());
    }
    let after = RootSnapshot::take().expect("snapshot");
    assert_eq!(before.diff(&after), Vec::<String>::new());
    assert!(
        !std::path::Path::new("/etc/netns").exists()
            || std::fs::read_dir("/etc/netns")
                .expect("read /etc/netns")
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with("bnlab-")),
        "the lab must not use /etc/netns"
    );
}

/// Env var that turns [`helper_builds_a_lab_and_waits_to_be_killed`] into the victim.
const HELPER_ENV: &str = "BNLAB_SIGKILL_HELPER";

/// Not a test on its own: when re-run by the test below with `HELPER_ENV` set, it builds
/// a lab, prints its namespace names and directory, and sleeps until SIGKILLed.
#[test]
fn helper_builds_a_lab_and_waits_to_be_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    println!("LAB {} {}", lab.namespaces().join(" "), lab.dir().display());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn namespaces_of_a_sigkilled_run_are_swept_by_the_next_lab() {
    if !require_root("namespaces_of_a_sigkilled_run_are_swept_by_the_next_lab") {
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_builds_a_lab_and_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness prints "test NAME ... " on the same line first.
            if let Some(at) = line.find("LAB ") {
                let _ = tx.send(line[at + 4..].to_owned());
                return;
            }
        }
    });
    let started = Instant::now();
    let line = rx.recv_timeout(Duration::from_secs(30));
    child.kill().expect("SIGKILL the helper");
    child.wait().expect("reap the helper");
    let line = line.expect("the helper printed its lab");
    let mut parts: Vec<String> = line.split(' ').map(str::to_owned).collect();
    let dir = std::path::PathBuf::from(parts.pop().expect("dir"));
    let names = parts;
    assert_eq!(names.len(), 3);
    let listed = list_namespaces().expect("list");
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "helper's lab missing: {listed:?}"
    );
    assert!(dir.exists());

    // The next lab sweeps what the dead process left.
    let _lab = Lab::new(GatewayMode::Bare).expect("lab");
    let listed = list_namespaces().expect("list");
    for name in &names {
        assert!(!listed.contains(name), "{name} was not swept: {listed:?}");
    }
    assert!(!dir.exists(), "{} was not swept", dir.display());
    eprintln!("sigkill round trip in {:?}", started.elapsed());
}

/// The state letter of /proc/PID/stat (`None` if the process is gone).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn processes_left_in_a_namespace_die_with_the_lab() {
    if !require_root("processes_left_in_a_namespace_die_with_the_lab") {
        return;
    }
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    // A daemon in its own session escapes the command's process group on purpose.
    let out = lab
        .exec(
            Host::Gateway,
            &[
                "sh",
                "-c",
                // The pid file appears only once the daemon has left our process group.
                r#"setsid sh -c 'echo $$ > "$HOME/daemon.pid"; exec sleep 300' \
                     >/dev/null 2>&1 </dev/null &
                   while [ ! -s "$HOME/daemon.pid" ]; do sleep 0.01; done
                   cat "$HOME/daemon.pid""#,
            ],
        )
        .expect("sh ran");
    let pid: u32 = out.stdout_str().trim().parse().expect("a pid");
    assert!(matches!(process_state(pid), Some(s) if s != 'Z'), "{out:?}");
    drop(lab);
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(process_state(pid), Some(s) if s != 'Z') {
        assert!(Instant::now() < deadline, "pid {pid} survived the lab");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_lab_can_be_built_and_dropped_inside_a_tokio_runtime() {
    if !require_root("a_lab_can_be_built_and_dropped_inside_a_tokio_runtime") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let lab = Lab::new(GatewayMode::Router).expect("lab");
        let names = lab.namespaces().to_vec();
        let reply = lab
            .dns_query(
                Host::Agent,
                bottleneck_lab::addr::dns_v4(),
                "allowed.test",
                bottleneck_lab::RecordType::A,
            )
            .expect("query");
        assert_eq!(reply.ips().len(), 1);
        drop(lab);
        let listed = list_namespaces().expect("list");
        assert!(names.iter().all(|n| !listed.contains(n)));
    });
}
