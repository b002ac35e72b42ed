//! The apple backend against a fake `container` CLI (`tests/fake/container`, shaped after
//! ../shared/APPLE-CONTAINER.md) first on PATH: the exact command sequence, flag order
//! (the egress network before the agent network), labels, secrets never on a command
//! line, the gateway address read from inspect JSON, and cleanup after a failure at every
//! step. No Mac is needed; nothing here needs root.
// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bottleneck");
const SECRET: &str = "apple-secret-value-0123456789";

/// A temporary world: the fake CLI on PATH, its state, TMPDIR for the bottle state.
struct World {
    dir: PathBuf,
}

/// The fake is a Python script: without /usr/bin/python3 the tests skip (outside CI).
fn fake_available(test: &str) -> bool {
    if Path::new("/usr/bin/python3").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: /usr/bin/python3 is missing (the fake `container` needs it)");
    }
    eprintln!("skipping {test}: /usr/bin/python3 is missing (the fake `container` needs it)");
    false
}

impl World {
    fn new(tag: &str) -> World {
        let dir = std::env::temp_dir().join(format!("bn-apple-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["bin", "fake", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/container");
        // A symlink, not a copy: writing an executable while other test threads fork
        // makes exec fail with ETXTBSY ("text file busy") until their children exec.
        std::os::unix::fs::symlink(&fake, dir.join("bin/container")).unwrap();
        fs::write(
            dir.join("policy.yaml"),
            "version: 1\nroutes:\n  - host: api.example.com\n    auth: {scheme: Bearer, token_ref: API_KEY}\n\
             dns:\n  upstream: [203.0.113.53]\n",
        )
        .unwrap();
        World { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    fn state_dir(&self, name: &str) -> PathBuf {
        self.path("tmp").join("bottleneck-state").join(name)
    }

    fn bottleneck(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", path)
            .env("TMPDIR", self.path("tmp"))
            .env("FAKE_STATE", self.path("fake"))
            .env("FAKE_RECORD_ENV", "API_KEY,FOO")
            .env("FOO", "bar");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Every recorded call: (argv joined by spaces, recorded environment).
    fn calls(&self) -> Vec<(String, Value)> {
        fs::read_to_string(self.path("fake/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let argv: Vec<String> = v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect();
                (argv.join(" "), v["env"].clone())
            })
            .collect()
    }

    /// The ids of the fake's containers and networks.
    fn resources(&self) -> (Vec<String>, Vec<String>) {
        let text = fs::read_to_string(self.path("fake/state.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ids = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x["id"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        (ids("containers"), ids("networks"))
    }

    /// Runs the fake directly (to prepare resources that are not the bottle's).
    fn fake(&self, args: &[&str]) {
        let out = Command::new(self.path("bin/container"))
            .args(args)
            .env("FAKE_STATE", self.path("fake"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run_args(world: &World) -> Vec<String> {
    [
        "run",
        "--backend",
        "apple",
        "--egress=transparent",
        "--policy",
        &world.path("policy.yaml").display().to_string(),
        "--name",
        "b1",
        "--image",
        "agent:1",
        "--gateway-image",
        "gw:1",
        "-e",
        "FOO",
        "--",
        "claude",
        "--print",
        "hello",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn expected_sequence(world: &World) -> Vec<String> {
    let state = world.state_dir("b1").display().to_string();
    vec![
        "system status --format json".into(),
        "network create --internal --label bottleneck.bottle=b1 --label bottleneck.role=agent-net bn-b1-agentnet".into(),
        "network create --label bottleneck.bottle=b1 --label bottleneck.role=egress-net bn-b1-egress".into(),
        format!(
            "run --detach --name bn-b1-gw --label bottleneck.bottle=b1 --label bottleneck.role=gateway \
             --network bn-b1-egress --network bn-b1-agentnet --dns 203.0.113.53 --cap-add CAP_NET_ADMIN \
             --env API_KEY --volume {state}/gateway:/etc/bottleneck:ro --volume {state}/ca:/var/lib/bottleneck/ca \
             --volume {state}/audit:/var/log/bottleneck gw:1 --policy /etc/bottleneck/policy.yaml \
             --agent-iface eth1 --ca-dir /var/lib/bottleneck/ca --audit-log /var/log/bottleneck/audit.jsonl"
        ),
        "logs bn-b1-gw".into(),
        "inspect bn-b1-gw".into(),
        // The gateway's address on the agent network: the fake's first network
        // (192.168.100.0/24), its first container (.2), read from `192.168.100.2\/24`.
        format!(
            "run --name bn-b1-agent --label bottleneck.bottle=b1 --label bottleneck.role=agent \
             --network bn-b1-agentnet --cap-add CAP_NET_ADMIN --env BOTTLENECK_GATEWAY=192.168.100.2 \
             --env BOTTLENECK_CA_FILE=/etc/bottleneck-ca/ca.pem --env BOTTLENECK_USER=node --env FOO \
             --volume {state}/agent-ca:/etc/bottleneck-ca:ro agent:1 claude --print hello"
        ),
        "stop bn-b1-agent".into(),
        "delete --force bn-b1-agent".into(),
        "stop bn-b1-gw".into(),
        "delete --force bn-b1-gw".into(),
        "network delete bn-b1-egress".into(),
        "network delete bn-b1-agentnet".into(),
    ]
}

#[test]
fn a_run_issues_the_verified_sequence_and_removes_everything() {
    if !fake_available("a_run_issues_the_verified_sequence_and_removes_everything") {
        return;
    }
    let world = World::new("seq");
    let args = run_args(&world);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.bottleneck(
        &args,
        &[
            ("API_KEY", SECRET),
            ("FOO", "bar"),
            ("FAKE_AGENT_EXIT", "7"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "the agent's status\n{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fake agent ran in bn-b1-agent"),
        "the agent's stdout is passed through"
    );
    let calls = world.calls();
    let argvs: Vec<String> = calls.iter().map(|c| c.0.clone()).collect();
    assert_eq!(argvs, expected_sequence(&world), "{stderr}");

    // The secret: in the gateway's `container run` environment (copied by the CLI from
    // `--env API_KEY`), on no command line, never in the agent's.
    assert!(!argvs.iter().any(|a| a.contains(SECRET)));
    let gateway_call = &calls[3];
    assert_eq!(gateway_call.1["API_KEY"], SECRET);
    let agent_call = &calls[6];
    assert!(agent_call.1.get("API_KEY").is_none(), "{:?}", agent_call.1);
    assert_eq!(agent_call.1["FOO"], "bar");
    assert!(!argvs.iter().any(|a| a.contains("FOO=bar")));

    // Progress, then nothing left: no container, no network, no state directory.
    for step in ["networks", "gateway", "CA", "cleanup"] {
        assert!(
            stderr.contains(&format!("bottleneck: {step}")),
            "{step}: {stderr}"
        );
    }
    assert_eq!(world.resources(), (vec![], vec![]));
    assert!(!world.state_dir("b1").exists());
}

#[test]
fn a_failure_at_any_step_removes_exactly_what_was_created_containers_first() {
    if !fake_available("a_failure_at_any_step_removes_exactly_what_was_created_containers_first") {
        return;
    }
    // (the call that fails, what must be undone, in order)
    let cases: [(&str, &[&str]); 6] = [
        ("network create --internal", &[]),
        ("bn-b1-egress", &["network delete bn-b1-agentnet"]),
        (
            "run --detach --name bn-b1-gw",
            &[
                "stop bn-b1-gw",
                "delete --force bn-b1-gw",
                "network delete bn-b1-egress",
                "network delete bn-b1-agentnet",
            ],
        ),
        (
            "logs bn-b1-gw",
            &[
                "stop bn-b1-gw",
                "delete --force bn-b1-gw",
                "network delete bn-b1-egress",
                "network delete bn-b1-agentnet",
            ],
        ),
        (
            "inspect bn-b1-gw",
            &[
                "stop bn-b1-gw",
                "delete --force bn-b1-gw",
                "network delete bn-b1-egress",
                "network delete bn-b1-agentnet",
            ],
        ),
        (
            "run --name bn-b1-agent",
            &[
                "stop bn-b1-agent",
                "delete --force bn-b1-agent",
                "stop bn-b1-gw",
                "delete --force bn-b1-gw",
                "network delete bn-b1-egress",
                "network delete bn-b1-agentnet",
            ],
        ),
    ];
    for (failing, undo) in cases {
        let world = World::new("fail");
        // Somebody else's resources, one even carrying our label: never touched.
        world.fake(&[
            "network",
            "create",
            "--label",
            "bottleneck.bottle=b1",
            "other-net",
        ]);
        world.fake(&[
            "run",
            "--detach",
            "--name",
            "other",
            "--label",
            "bottleneck.bottle=b1",
            "img",
        ]);
        let args = run_args(&world);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = world.bottleneck(&args, &[("API_KEY", SECRET), ("FAKE_FAIL", failing)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{failing}: {stderr}");
        let argvs: Vec<String> = world.calls().into_iter().map(|c| c.0).collect();
        let at = argvs
            .iter()
            .position(|a| a.contains(failing))
            .unwrap_or_else(|| panic!("{failing} never ran: {argvs:?}"));
        // Setup stopped at the failure; then exactly the undo, in order.
        let expected = expected_sequence(&world);
        let prefix: Vec<&String> = argvs.iter().skip(2).take(at - 2).collect();
        let expected_prefix: Vec<&String> = expected.iter().take(at - 2).collect();
        assert_eq!(prefix, expected_prefix, "{failing}");
        assert_eq!(&argvs[at + 1..], undo, "{failing}: {stderr}");
        assert_eq!(
            world.resources(),
            (vec!["other".to_owned()], vec!["other-net".to_owned()]),
            "{failing}"
        );
        assert!(!world.state_dir("b1").exists(), "{failing}");
        assert!(stderr.contains("injected failure"), "{failing}: {stderr}");
    }
}

#[test]
fn a_gateway_that_reports_an_error_fails_the_run_at_once() {
    if !fake_available("a_gateway_that_reports_an_error_fails_the_run_at_once") {
        return;
    }
    let world = World::new("gwerr");
    let args = run_args(&world);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.bottleneck(
        &args,
        &[
            ("API_KEY", SECRET),
            (
                "FAKE_GATEWAY_LOG",
                "bottleneck-gateway: policy.yaml:3:5: routes[0].hots: unknown key",
            ),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown key"), "{stderr}");
    let argvs: Vec<String> = world.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(argvs.iter().filter(|a| a.starts_with("logs ")).count(), 1);
    assert!(
        !argvs
            .iter()
            .any(|a| a.starts_with("run --name bn-b1-agent"))
    );
    assert_eq!(world.resources(), (vec![], vec![]));
}

#[test]
fn a_policy_without_a_resolver_is_a_configuration_error_before_anything_is_called() {
    if !fake_available(
        "a_policy_without_a_resolver_is_a_configuration_error_before_anything_is_called",
    ) {
        return;
    }
    let world = World::new("nodns");
    fs::write(
        world.path("policy.yaml"),
        "version: 1\nroutes:\n  - host: api.example.com\n    auth: {scheme: Bearer, token_ref: API_KEY}\n",
    )
    .unwrap();
    let args = run_args(&world);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.bottleneck(&args, &[("API_KEY", SECRET)]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dns.upstream") && stderr.contains("--gateway-dns"),
        "{stderr}"
    );
    assert!(world.calls().is_empty(), "{:?}", world.calls());

    // --gateway-dns supplies it.
    let mut args = run_args(&world);
    args.insert(1, "--gateway-dns=203.0.113.54".into());
    args.insert(1, "--dry-run".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.bottleneck(&args, &[("API_KEY", SECRET)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--dns 203.0.113.54"),
        "{out:?}"
    );
}

#[test]
fn a_stopped_container_system_is_a_configuration_error_before_anything_is_created() {
    if !fake_available(
        "a_stopped_container_system_is_a_configuration_error_before_anything_is_created",
    ) {
        return;
    }
    let world = World::new("down");
    let args = run_args(&world);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.bottleneck(
        &args,
        &[("API_KEY", SECRET), ("FAKE_SYSTEM", "not running")],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container system start"));
    let argvs: Vec<String> = world.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(argvs, ["system status --format json"]);
}

#[test]
fn ls_and_rm_find_bottles_by_label_and_name_prefix() {
    if !fake_available("ls_and_rm_find_bottles_by_label_and_name_prefix") {
        return;
    }
    let world = World::new("rm");
    for b in ["b1", "b2"] {
        world.fake(&[
            "network",
            "create",
            "--internal",
            "--label",
            &format!("bottleneck.bottle={b}"),
            "--label",
            "bottleneck.role=agent-net",
            &format!("bn-{b}-agentnet"),
        ]);
        for (role, name) in [("gateway", "gw"), ("agent", "agent")] {
            world.fake(&[
                "run",
                "--detach",
                "--name",
                &format!("bn-{b}-{name}"),
                "--label",
                &format!("bottleneck.bottle={b}"),
                "--label",
                &format!("bottleneck.role={role}"),
                "--network",
                &format!("bn-{b}-agentnet"),
                "img",
            ]);
        }
    }
    world.fake(&["run", "--detach", "--name", "unrelated", "img"]);
    let ls = world.bottleneck(&["ls", "--backend", "apple"], &[]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("b1 ") && l.contains("bn-b1-gw")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("b2 ")), "{text}");
    assert!(!text.contains("unrelated"), "{text}");

    let start = world.calls().len();
    let rm = world.bottleneck(&["rm", "--backend", "apple", "b1"], &[]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let argvs: Vec<String> = world.calls().into_iter().skip(start).map(|c| c.0).collect();
    assert_eq!(
        argvs,
        [
            "list --all --format json",
            "network list --format json",
            "stop bn-b1-agent",
            "delete --force bn-b1-agent",
            "stop bn-b1-gw",
            "delete --force bn-b1-gw",
            "network delete bn-b1-agentnet",
        ]
    );
    let (containers, networks) = world.resources();
    assert_eq!(containers, ["bn-b2-gw", "bn-b2-agent", "unrelated"]);
    assert_eq!(networks, ["bn-b2-agentnet"]);

    let missing = world.bottleneck(&["rm", "--backend", "apple", "b1"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    let all = world.bottleneck(&["rm", "--backend", "apple", "--all"], &[]);
    assert!(all.status.success());
    assert_eq!(world.resources(), (vec!["unrelated".to_owned()], vec![]));
}

#[test]
fn dry_run_prints_the_sequence_and_calls_nothing() {
    if !fake_available("dry_run_prints_the_sequence_and_calls_nothing") {
        return;
    }
    let world = World::new("dry");
    let mut args = run_args(&world);
    args.insert(1, "--dry-run".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = world.bottleneck(&args, &[("API_KEY", SECRET), ("FOO", "bar")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("container network create --internal"),
        "{text}"
    );
    assert!(
        text.contains("--network bn-b1-egress --network bn-b1-agentnet --dns 203.0.113.53"),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !text.contains("bar"), "{text}");
    assert!(world.calls().is_empty());
}
