//! What a bottle is, independent of the backend: its name and the resources named after
//! it, its state directory and record, and the run configuration checked before anything
//! is created (policy, secrets, agent environment, volumes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bottleneck_policy::Policy;
use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;

/// Where bottles keep their state (a tmpfs on most systems: gone after a reboot, as are
/// the namespaces it describes).
pub const STATE_ROOT: &str = "/run/bottleneck";
/// The prefix of every network namespace, host interface and nftables table a bottle
/// creates.
pub const PREFIX: &str = "bn-";
/// The longest bottle name: `bn-NAME` must fit an interface name (15 bytes).
pub const MAX_NAME: usize = 11;
/// The agent's PATH unless `-e PATH` says otherwise: nothing under /root.
pub const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A problem with the configuration of a run: reported before anything is created, exit
/// status 3.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The policy did not load; the text is the policy crate's full report.
    #[error("{0}")]
    Policy(String),
    /// Secrets the policy names are not in the launcher's environment.
    #[error(
        "the policy names secrets that are not set in this environment: {}\n  hint: export {} before `bottleneck run` (they are given to the gateway only, never to the agent)",
        .0.join(", "),
        .0.iter().map(|v| format!("{v}=...")).collect::<Vec<_>>().join(" ")
    )]
    MissingSecrets(Vec<String>),
    /// A secret that cannot be sent in an HTTP header.
    #[error(
        "the secret in ${0} cannot be used in an HTTP header (control characters or non-ASCII)"
    )]
    UnusableSecret(String),
    /// `-e` named a secret.
    #[error(
        "-e {0}: the policy uses ${0} as a secret (token_ref); secrets go to the gateway only, never to the agent"
    )]
    SecretToAgent(String),
    /// `-e VAR` for a variable that is not set.
    #[error("-e {0}: ${0} is not set in this environment (use -e {0}=VALUE to give a value)")]
    UnsetVariable(String),
    /// `-e` with an invalid variable name.
    #[error("-e {0}: not a variable name (letters, digits and `_`, not starting with a digit)")]
    BadVariable(String),
    /// `-e BOTTLENECK_...`: those configure the shim.
    #[error("-e {0}: BOTTLENECK_* variables are reserved for the bottle's own set-up")]
    ReservedVariable(String),
    /// A malformed `-v`.
    #[error("-v {0}: expected SRC:DST or SRC:DST:ro with absolute paths")]
    BadVolume(String),
    /// A `-v` whose source or destination does not exist.
    #[error("-v {spec}: {path} does not exist (the destination is not created on the host)")]
    MissingVolumePath {
        /// The option as given.
        spec: String,
        /// The path that is missing.
        path: String,
    },
    /// The apple backend has no resolver to give the gateway container.
    #[error(
        "the apple backend needs a resolver for the gateway: the policy has no `dns.upstream` and no --gateway-dns was given\n  hint: add `dns: {{upstream: [IP]}}` to the policy, or pass --gateway-dns IP (the NAT network's own gateway does not resolve)"
    )]
    NoGatewayResolver,
    /// A bad `--name`.
    #[error(
        "--name {0}: a bottle name has 1-11 characters, lowercase letters, digits and `-`, and starts with a letter"
    )]
    BadName(String),
    /// The agent's user may not be root.
    #[error("--user {0}: the agent never runs as root")]
    RootUser(String),
    /// A bad `--user`.
    #[error("--user {0}: expected a user name or a UID")]
    BadUser(String),
    /// A helper executable was not found.
    #[error(
        "{0} not found next to {1} or on PATH\n  hint: build it with `cargo build --workspace` (it is installed alongside `bottleneck`)"
    )]
    MissingBinary(String, String),
    /// Not supported (yet) by this backend or on this system.
    #[error("{0}")]
    Unsupported(String),
    /// A file given in the configuration cannot be used.
    #[error("{0}: {1}")]
    File(String, String),
}

/// Shell-quotes one word for display (only when needed).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Checks a bottle name (see [`MAX_NAME`]).
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName(name.to_owned()))
    }
}

/// A fresh name, `b` and 6 hex digits from the clock and the process id.
pub fn generate_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = nanos.wrapping_mul(2_654_435_761) ^ std::process::id().wrapping_mul(40_503);
    format!("b{:06x}", mixed & 0xff_ffff)
}

/// The names of everything a bottle creates, all derived from its name so that `rm` can
/// find them after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The bottle name.
    pub bottle: String,
    /// The agent's network namespace.
    pub agent_ns: String,
    /// The gateway's network namespace.
    pub gateway_ns: String,
    /// The uplink veth's end outside the gateway (in the host or the uplink namespace).
    pub uplink_iface: String,
    /// The host's nftables table (NAT uplink only), family `ip`.
    pub nft_table: String,
    /// The state directory.
    pub state_dir: PathBuf,
}

impl Names {
    /// The names for bottle `name` (already checked).
    pub fn new(name: &str) -> Names {
        Names {
            bottle: name.to_owned(),
            agent_ns: format!("{PREFIX}{name}-agent"),
            gateway_ns: format!("{PREFIX}{name}-gw"),
            uplink_iface: format!("{PREFIX}{name}"),
            nft_table: format!("bottleneck-{name}"),
            state_dir: Path::new(STATE_ROOT).join(name),
        }
    }

    /// The bottle name encoded in a namespace name, if it is one of ours.
    pub fn bottle_of_namespace(ns: &str) -> Option<&str> {
        let rest = ns.strip_prefix(PREFIX)?;
        rest.strip_suffix("-agent")
            .or_else(|| rest.strip_suffix("-gw"))
            .filter(|n| check_name(n).is_ok())
    }

    /// The state record's path.
    pub fn record_path(&self) -> PathBuf {
        self.state_dir.join("bottle.json")
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.state_dir.join("audit.jsonl")
    }
}

/// What a bottle's state directory records: enough for `ls` to describe it and for `rm`
/// to undo what the launcher changed outside the namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The bottle name.
    pub name: String,
    /// The launcher's pid (the bottle is stale once it is gone).
    pub launcher_pid: u32,
    /// Seconds since the epoch at creation.
    pub created: u64,
    /// The backend (`netns`).
    pub backend: String,
    /// The agent command.
    pub agent: Vec<String>,
    /// The policy file.
    pub policy: PathBuf,
    /// The uplink: `host` (NAT through the host) or `netns:NAME`.
    pub uplink: String,
    /// Whether the launcher turned the host's IPv4 forwarding on (to be turned off when
    /// the last such bottle goes).
    #[serde(default)]
    pub enabled_forwarding: bool,
}

/// Secrets by variable name, read from the launcher's environment. Debug never shows the
/// values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Loads and validates the policy (the messages of `bottleneck policy check`).
pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    Policy::load(path).map_err(|e| ConfigError::Policy(crate::policy_check::report(&e)))
}

/// The `token_ref` variables of the policy, each once, in order.
pub fn token_refs(policy: &Policy) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for auth in policy.routes().iter().filter_map(|r| r.auth()) {
        if !out.contains(&auth.token_ref) {
            out.push(auth.token_ref.clone());
        }
    }
    out
}

/// Reads every secret the policy names through `env`; every missing one is named.
pub fn read_secrets(
    policy: &Policy,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Secrets, ConfigError> {
    let mut secrets = BTreeMap::new();
    let mut missing = Vec::new();
    for var in token_refs(policy) {
        match env(&var) {
            Some(value) if !value.is_empty() => {
                // The gateway puts it in a header; refuse early what it would refuse.
                if !value
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
                {
                    return Err(ConfigError::UnusableSecret(var));
                }
                secrets.insert(var, value);
            }
            _ => missing.push(var),
        }
    }
    if missing.is_empty() {
        Ok(Secrets(secrets))
    } else {
        Err(ConfigError::MissingSecrets(missing))
    }
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Resolves `-e VAR` / `-e VAR=VALUE` into pairs, refusing secrets and reserved names.
pub fn agent_env(
    specs: &[String],
    secrets: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for spec in specs {
        let (name, value) = match spec.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (spec.as_str(), None),
        };
        if !is_var_name(name) {
            return Err(ConfigError::BadVariable(spec.clone()));
        }
        if secrets.iter().any(|s| s == name) {
            return Err(ConfigError::SecretToAgent(name.to_owned()));
        }
        if name.starts_with("BOTTLENECK_") {
            return Err(ConfigError::ReservedVariable(name.to_owned()));
        }
        let value = match value {
            Some(v) => v,
            None => env(name).ok_or_else(|| ConfigError::UnsetVariable(name.to_owned()))?,
        };
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// One `-v SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path.
    pub src: PathBuf,
    /// Where the agent sees it.
    pub dst: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Parses a `-v` option (paths must be absolute; existence is checked separately).
pub fn parse_volume(spec: &str) -> Result<Volume, ConfigError> {
    let bad = || ConfigError::BadVolume(spec.to_owned());
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, read_only) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => return Err(bad()),
    };
    if !src.starts_with('/') || !dst.starts_with('/') {
        return Err(bad());
    }
    Ok(Volume {
        src: src.into(),
        dst: dst.into(),
        read_only,
    })
}

/// Everything a run needs, checked: built by [`prepare`] before anything is created.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Resource names.
    pub names: Names,
    /// The policy file, absolute.
    pub policy_path: PathBuf,
    /// The secrets for the gateway.
    pub secrets: Secrets,
    /// The agent's extra environment.
    pub agent_env: Vec<(String, String)>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// The agent command.
    pub agent: Vec<String>,
    /// The agent's user.
    pub user: String,
    /// `--uplink-netns`.
    pub uplink_netns: Option<String>,
    /// Extra upstream CAs for the gateway.
    pub upstream_ca: Vec<PathBuf>,
    /// How long to wait for the gateway.
    pub gateway_timeout: std::time::Duration,
    /// `--egress=proxy`: the gateway also serves an explicit proxy and the agent gets the
    /// proxy variables (routing is forced all the same).
    pub proxy: bool,
}

/// Validates the policy, the secrets and every option, using `env` for the launcher's
/// environment. Nothing is created.
pub fn prepare(
    args: &RunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<RunConfig, ConfigError> {
    let policy = load_policy(&args.policy)?;
    let secrets = read_secrets(&policy, &env)?;
    let name = match &args.name {
        Some(name) => {
            check_name(name)?;
            name.clone()
        }
        None => generate_name(),
    };
    let agent_env = agent_env(&args.env, &token_refs(&policy), &env)?;
    let mut volumes = Vec::new();
    for spec in &args.volumes {
        let volume = parse_volume(spec)?;
        // The destination is the agent's view: on the host only for the netns backend.
        let netns = args.backend.is_none_or(|b| b == crate::cli::Backend::Netns)
            && cfg!(target_os = "linux");
        let paths = if netns {
            vec![&volume.src, &volume.dst]
        } else {
            vec![&volume.src]
        };
        for path in paths {
            if !path.exists() {
                return Err(ConfigError::MissingVolumePath {
                    spec: spec.clone(),
                    path: path.display().to_string(),
                });
            }
        }
        volumes.push(volume);
    }
    check_user(&args.user)?;
    let policy_path = std::path::absolute(&args.policy)
        .map_err(|e| ConfigError::File(args.policy.display().to_string(), e.to_string()))?;
    let mut upstream_ca = Vec::new();
    for ca in &args.upstream_ca {
        let abs = std::path::absolute(ca)
            .map_err(|e| ConfigError::File(ca.display().to_string(), e.to_string()))?;
        if !abs.is_file() {
            return Err(ConfigError::File(
                ca.display().to_string(),
                "not a readable file".into(),
            ));
        }
        upstream_ca.push(abs);
    }
    Ok(RunConfig {
        names: Names::new(&name),
        policy_path,
        secrets,
        agent_env,
        volumes,
        agent: args.agent.clone(),
        user: args.user.clone(),
        uplink_netns: args.uplink_netns.clone(),
        upstream_ca,
        gateway_timeout: std::time::Duration::from_secs(args.gateway_timeout.max(1)),
        proxy: args.egress == crate::cli::Egress::Proxy,
    })
}

/// The agent's user: a name or a UID, never root.
pub fn check_user(user: &str) -> Result<(), ConfigError> {
    if user == "root" || user == "0" || user.starts_with("0:") {
        return Err(ConfigError::RootUser(user.to_owned()));
    }
    let ok = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadUser(user.to_owned()))
    }
}

/// Finds a helper executable (`bottleneck-gateway`, `bottleneck-init`): next to the
/// running executable first (they are built and installed together), else on PATH.
pub fn find_binary(name: &str) -> Result<PathBuf, ConfigError> {
    let me = std::env::current_exe().ok();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = me.as_deref().and_then(Path::parent) {
        dirs.push(dir.to_owned());
        // Test executables live in target/<profile>/deps.
        if dir.ends_with("deps")
            && let Some(parent) = dir.parent()
        {
            dirs.push(parent.to_owned());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in &dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ConfigError::MissingBinary(
        name.to_owned(),
        me.map(|p| p.display().to_string())
            .unwrap_or_else(|| "bottleneck".into()),
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "version: 1\nroutes:\n  - host: a.test\n    auth: {scheme: Bearer, token_ref: A_TOKEN}\n  - host: b.test\n    auth: {scheme: token, token_ref: B_TOKEN}\n  - host: c.test\n    auth: {scheme: token, token_ref: A_TOKEN}\n";

    fn policy() -> Policy {
        Policy::from_yaml(POLICY, "p.yaml").unwrap()
    }

    #[test]
    fn names_are_short_enough_for_interfaces_and_parse_back() {
        check_name("demo").unwrap();
        check_name("a-1").unwrap();
        check_name("abcdefghijk").unwrap();
        for bad in [
            "",
            "1abc",
            "Abc",
            "abc_d",
            "abcdefghijkl",
            "ab-",
            "a/b",
            "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let names = Names::new("abcdefghijk");
        assert!(names.uplink_iface.len() <= 15);
        assert_eq!(names.agent_ns, "bn-abcdefghijk-agent");
        assert_eq!(
            Names::bottle_of_namespace(&names.agent_ns),
            Some("abcdefghijk")
        );
        assert_eq!(
            Names::bottle_of_namespace(&names.gateway_ns),
            Some("abcdefghijk")
        );
        assert_eq!(Names::bottle_of_namespace("bnlab-1-0-agent"), None);
        assert_eq!(Names::bottle_of_namespace("bn-x-other"), None);
        check_name(&generate_name()).unwrap();
    }

    #[test]
    fn every_missing_secret_is_named_once() {
        assert_eq!(token_refs(&policy()), ["A_TOKEN", "B_TOKEN"]);
        let err = read_secrets(&policy(), |_| None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("A_TOKEN, B_TOKEN"), "{text}");
        assert!(text.contains("never to the agent"), "{text}");
        let err = read_secrets(&policy(), |v| (v == "A_TOKEN").then(|| "x".into())).unwrap_err();
        assert!(matches!(err, ConfigError::MissingSecrets(v) if v == ["B_TOKEN"]));
        let empty = read_secrets(&policy(), |_| Some(String::new())).unwrap_err();
        assert!(matches!(empty, ConfigError::MissingSecrets(v) if v.len() == 2));
        let bad = read_secrets(&policy(), |_| Some("a\r\nb".into())).unwrap_err();
        assert!(matches!(bad, ConfigError::UnusableSecret(_)));
        let ok = read_secrets(&policy(), |v| Some(format!("secret-{v}"))).unwrap();
        assert_eq!(ok.0["B_TOKEN"], "secret-B_TOKEN");
        // Debug shows names, never values.
        assert!(!format!("{ok:?}").contains("secret-"));
    }

    #[test]
    fn agent_env_refuses_secrets_and_reserved_names() {
        let secrets = vec!["A_TOKEN".to_owned()];
        let env = |v: &str| (v == "HOME_X").then(|| "/x".to_owned());
        let ok = agent_env(&["HOME_X".into(), "B=1=2".into()], &secrets, env).unwrap();
        assert_eq!(
            ok,
            [("HOME_X".into(), "/x".into()), ("B".into(), "1=2".into())]
        );
        assert!(matches!(
            agent_env(&["A_TOKEN".into()], &secrets, env),
            Err(ConfigError::SecretToAgent(_))
        ));
        assert!(matches!(
            agent_env(&["A_TOKEN=x".into()], &secrets, env),
            Err(ConfigError::SecretToAgent(_))
        ));
        assert!(matches!(
            agent_env(&["BOTTLENECK_GATEWAY=1".into()], &secrets, env),
            Err(ConfigError::ReservedVariable(_))
        ));
        assert!(matches!(
            agent_env(&["UNSET".into()], &secrets, env),
            Err(ConfigError::UnsetVariable(_))
        ));
        assert!(matches!(
            agent_env(&["1X".into()], &secrets, env),
            Err(ConfigError::BadVariable(_))
        ));
    }

    #[test]
    fn volumes() {
        assert_eq!(
            parse_volume("/a:/b:ro").unwrap(),
            Volume {
                src: "/a".into(),
                dst: "/b".into(),
                read_only: true
            }
        );
        assert!(!parse_volume("/a:/b").unwrap().read_only);
        for bad in ["/a", "a:/b", "/a:b", "/a:/b:x", "/a:/b:ro:z"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users() {
        check_user("node").unwrap();
        check_user("1000").unwrap();
        check_user("1000:1000").unwrap();
        assert!(matches!(check_user("root"), Err(ConfigError::RootUser(_))));
        assert!(matches!(check_user("0"), Err(ConfigError::RootUser(_))));
        assert!(matches!(check_user("0:0"), Err(ConfigError::RootUser(_))));
        assert!(check_user("a b").is_err());
    }
}
