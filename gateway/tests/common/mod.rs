//! Shared by the gateway's lab tests: the real gateway started in a lab's gateway namespace.
//! Each test crate uses part of it, hence `dead_code` is allowed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use bottleneck_lab::{ExecOutput, GatewayMode, Host, Lab, LabProcess};

/// A lab with the gateway running in its gateway namespace.
pub struct Bottle {
    pub lab: Lab,
    pub gateway: Option<LabProcess>,
    pub ca_pem: PathBuf,
    pub audit: PathBuf,
}

impl Bottle {
    /// Start the gateway with `policy` and these extra environment variables.
    pub fn start_with_env(policy: &str, env: &[(&str, &str)]) -> Bottle {
        Bottle::start_with_args(policy, env, &[])
    }

    /// Start the gateway with `policy`, extra environment variables and extra flags.
    pub fn start_with_args(policy: &str, env: &[(&str, &str)], extra: &[&str]) -> Bottle {
        let lab = Lab::new(GatewayMode::Bare).unwrap();
        let policy_path = lab.dir().join("policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let ca_dir = lab.dir().join("bottle-ca");
        let audit = lab.dir().join("audit.jsonl");
        let argv: Vec<String> = vec![
            env!("CARGO_BIN_EXE_bottleneck-gateway").into(),
            "--policy".into(),
            policy_path.display().to_string(),
            "--agent-iface".into(),
            "eth1".into(),
            "--ca-dir".into(),
            ca_dir.display().to_string(),
            "--upstream-ca".into(),
            lab.ca_pem_path().display().to_string(),
            "--audit-log".into(),
            audit.display().to_string(),
        ];
        let argv: Vec<String> = argv
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect();
        let mut command = lab
            .command(Host::Gateway, &argv)
            .timeout(Duration::from_secs(600));
        for (key, value) in env {
            command = command.env(key, value);
        }
        let mut gateway = command.spawn().unwrap();
        if let Err(e) = gateway.wait_for_output("bottleneck-gateway ready", Duration::from_secs(20))
        {
            let out = gateway.kill();
            panic!("gateway did not start: {e}\n{out:?}");
        }
        Bottle {
            lab,
            gateway: Some(gateway),
            ca_pem: ca_dir.join("ca.pem"),
            audit,
        }
    }

    /// curl in the agent namespace; `-w` appends the status and HTTP version.
    pub fn curl(&self, args: &[&str]) -> ExecOutput {
        let mut argv: Vec<String> = vec![
            "curl".into(),
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            "--cacert".into(),
            self.ca_pem.display().to_string(),
            "-w".into(),
            "\n%{http_code} %{http_version}".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.lab.exec(Host::Agent, &argv).unwrap()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

impl Drop for Bottle {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            let out = gateway.kill();
            if std::thread::panicking() {
                eprintln!("gateway output:\n{out:?}");
            }
        }
    }
}
