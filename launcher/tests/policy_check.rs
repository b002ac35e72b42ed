//! `bottleneck policy check` as a user runs it: the real binary, real files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(file: &str) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args(["policy", "check"])
        .arg(repo_root().join(file))
        .output();
    match run {
        Ok(output) => output,
        Err(e) => panic!("cannot run bottleneck: {e}"),
    }
}

#[test]
fn every_example_policy_is_valid_and_listed() {
    for file in ["examples/policy.yaml", "examples/routes.yaml"] {
        let out = check(file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("valid"), "{stdout}");
        assert!(stdout.contains("api.anthropic.com"), "{stdout}");
    }
}

#[test]
fn the_example_policy_is_shown_normalised() {
    let out = check("examples/policy.yaml");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("*.pythonhosted.org"), "{stdout}");
    assert!(
        stdout.contains("[auth Bearer from $ANTHROPIC_TOKEN]"),
        "{stdout}"
    );
    assert!(stdout.contains("[tls passthrough]"), "{stdout}");
    assert!(stdout.contains("[tcp 22]"), "{stdout}");
    assert!(stdout.contains("dns upstream: 203.0.113.53:53"), "{stdout}");
}

#[test]
fn every_mistake_is_reported_with_file_line_column_and_the_exit_code_is_3() {
    let out = check("launcher/tests/fixtures/mistakes.yaml");
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty(), "nothing is printed as if valid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = [
        "mistakes.yaml:4:5: routes[0].auth: credentials cannot be injected into a passthrough route",
        "mistakes.yaml:6:11: routes[1].host: invalid host",
        "mistakes.yaml:7:5: routes[2].hosts: unknown key `hosts`",
        "did you mean `host`?",
        "mistakes.yaml:7:5: routes[2]: missing key `host`",
        "mistakes.yaml:9:11: routes[3].tcp[0]: port 0 is out of range",
        "mistakes.yaml:9:18: routes[3].tcp[2]: port 70000 is out of range",
        "mistakes.yaml:11:38: routes[3].matches[0].paths[0].value: invalid regular expression",
        "mistakes.yaml:12:11: routes[4].host: duplicate host `api.example.com`; it is already a route at line 3",
        "8 problems; the policy was not loaded",
    ];
    for line in expected {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

#[test]
fn a_missing_file_is_a_configuration_error_naming_the_file() {
    let out = check("examples/does-not-exist.yaml");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read policy file"), "{stderr}");
    assert!(stderr.contains("does-not-exist.yaml"), "{stderr}");
}
