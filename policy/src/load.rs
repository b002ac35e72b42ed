//! The strict schema walk: YAML tree in, validated [`Policy`] or every problem out.
//!
//! Each check reports the key path, line and column and says how to fix the mistake. The
//! walk keeps going after a problem so one run lists them all, but it only returns a
//! policy when there were none: never a partial policy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use regex::RegexBuilder;

use crate::error::{Diagnostic, LoadError};
use crate::host::{HostError, HostIndex, HostPattern};
use crate::model::{
    Auth, AuthScheme, Format, GitRule, HeaderRule, Match, PathRule, Policy, Route, TlsMode,
};
use crate::yaml::{self, Node, PlainKind, Pos, Value, plain_scalar_kind};

/// No policy is this large; the bound keeps a wrong path (a log file, /dev/zero) from
/// being read into memory.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Compiled size limit for one path regex; keeps a hostile pattern from eating memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The policy format version this build reads.
const VERSION: i64 = 1;

/// Read and load a policy file.
pub(crate) fn load_file(path: &Path) -> Result<Policy, LoadError> {
    use std::io::Read;
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            limit: MAX_POLICY_BYTES,
        });
    }
    let name = path.display().to_string();
    match String::from_utf8(bytes) {
        Ok(text) => load_str(&text, &name),
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line = valid.matches('\n').count() + 1;
            // Columns count characters, as in every other diagnostic.
            let column = valid.chars().rev().take_while(|&c| c != '\n').count() + 1;
            Err(LoadError::Invalid {
                file: name,
                diagnostics: vec![Diagnostic {
                    line,
                    column,
                    key_path: String::new(),
                    message: "the file is not valid UTF-8".into(),
                    hint: Some("save the policy as UTF-8 text".into()),
                }],
            })
        }
    }
}

/// Load a policy from text; `file` names it in messages.
pub(crate) fn load_str(text: &str, file: &str) -> Result<Policy, LoadError> {
    let invalid = |diagnostics| LoadError::Invalid {
        file: file.to_owned(),
        diagnostics,
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(invalid(vec![Diagnostic {
                line: 1,
                column: 1,
                key_path: String::new(),
                message: "the policy is empty".into(),
                hint: Some("start with `version: 1` and a `routes:` list".into()),
            }]));
        }
        Err(e) => {
            let hint = e.first.map(|p| {
                format!(
                    "the key first appears at line {}, column {}",
                    p.line, p.column
                )
            });
            return Err(invalid(vec![Diagnostic {
                line: e.pos.line,
                column: e.pos.column,
                key_path: String::new(),
                message: e.message,
                hint,
            }]));
        }
    };
    let mut walk = Walk::default();
    let policy = walk.policy(&root);
    if walk.diagnostics.is_empty()
        && let Some(policy) = policy
    {
        return Ok(policy);
    }
    walk.diagnostics.sort_by_key(|d| (d.line, d.column));
    Err(invalid(walk.diagnostics))
}

/// Collects diagnostics while walking the tree.
#[derive(Default)]
struct Walk {
    diagnostics: Vec<Diagnostic>,
}

impl Walk {
    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.diagnostics.push(Diagnostic {
            line: pos.line,
            column: pos.column,
            key_path: path.to_owned(),
            message: message.into(),
            hint,
        });
    }

    fn type_error(&mut self, node: &Node, path: &str, expected: &str, hint: Option<String>) {
        let found = node.value.type_name();
        let hint = hint.unwrap_or_else(|| format!("write {expected} here"));
        self.error(
            node.pos,
            path,
            format!("expected {expected}, found {found}"),
            Some(hint),
        );
    }

    /// The entries of a mapping with only `known` keys; unknown keys are reported.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
        hint: Option<&str>,
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.type_error(node, path, "a mapping", hint.map(str::to_owned));
            return None;
        };
        let mut fields = Fields {
            pos: node.pos,
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Value::Scalar { text, .. } = &key.value else {
                continue;
            };
            if known.contains(&text.as_str()) {
                fields.entries.push((text.as_str(), key.pos, value));
            } else {
                let mut hint = format!("known keys here: {}", known.join(", "));
                if let Some(near) = closest(text, known) {
                    hint = format!("did you mean `{near}`? {hint}");
                }
                self.error(
                    key.pos,
                    &join(path, text),
                    format!("unknown key `{text}`"),
                    Some(hint),
                );
            }
        }
        Some(fields)
    }

    fn seq<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                let hint = "write a list: `[a, b]`, or one `- item` per line".to_owned();
                self.type_error(node, path, &format!("a list of {what}"), Some(hint));
                None
            }
        }
    }

    /// A non-empty list; an empty one is reported with `hint`.
    fn nonempty_seq<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
        hint: &str,
    ) -> Option<&'n [Node]> {
        let items = self.seq(node, path, what)?;
        if items.is_empty() {
            self.error(node.pos, path, "the list is empty", Some(hint.to_owned()));
            return None;
        }
        Some(items)
    }

    fn string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.value {
            Value::Scalar { text, plain: false } => Some(text),
            Value::Scalar { text, plain: true } if plain_scalar_kind(text) == PlainKind::Str => {
                Some(text)
            }
            Value::Scalar { text, .. } => {
                let hint = format!("quote it if you mean the text: \"{text}\"");
                self.type_error(node, path, "a string", Some(hint));
                None
            }
            _ => {
                let hint = "write a single value here, not a list or a mapping".to_owned();
                self.type_error(node, path, "a string", Some(hint));
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        if let Value::Scalar { text, plain: true } = &node.value
            && plain_scalar_kind(text) == PlainKind::Bool
        {
            return Some(text.eq_ignore_ascii_case("true"));
        }
        let hint = "write `true` or `false`, without quotes".to_owned();
        self.type_error(node, path, "true or false", Some(hint));
        None
    }

    fn int(&mut self, node: &Node, path: &str) -> Option<i64> {
        if let Value::Scalar { text, plain: true } = &node.value
            && plain_scalar_kind(text) == PlainKind::Int
        {
            let parsed = if let Some(hex) = text.strip_prefix("0x") {
                i64::from_str_radix(hex, 16)
            } else if let Some(oct) = text.strip_prefix("0o") {
                i64::from_str_radix(oct, 8)
            } else {
                text.parse()
            };
            if let Ok(n) = parsed {
                return Some(n);
            }
            self.error(node.pos, path, format!("`{text}` is out of range"), None);
            return None;
        }
        let hint = "write the number without quotes".to_owned();
        self.type_error(node, path, "a whole number", Some(hint));
        None
    }

    fn policy(&mut self, root: &Node) -> Option<Policy> {
        let Value::Map(entries) = &root.value else {
            self.type_error(
                root,
                "",
                "a mapping with `version` and `routes`",
                Some("see examples/ for the policy format".into()),
            );
            return None;
        };
        let has_version = entries
            .iter()
            .any(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == "version"));
        let (format, fields) = if has_version {
            let known = ["version", "routes", "dns", "allow_ranges"];
            (Format::V1, self.mapping(root, "", &known, None)?)
        } else {
            let fields = self.mapping(root, "", &["routes", "dns", "allow_ranges"], None)?;
            for key in ["dns", "allow_ranges"] {
                if let Some((pos, _)) = fields.get(key) {
                    self.error(
                        pos,
                        key,
                        format!("`{key}` needs a versioned policy"),
                        Some("add `version: 1` at the top of the file".into()),
                    );
                }
            }
            (Format::BotBottleRoutes, fields)
        };

        let mut routes = None;
        let mut dns_upstream = Vec::new();
        let mut allow_ranges = Vec::new();
        for (key, _, value) in &fields.entries {
            match *key {
                "version" => {
                    if let Some(v) = self.int(value, "version")
                        && v != VERSION
                    {
                        self.error(
                            value.pos,
                            "version",
                            format!("unsupported policy version {v}"),
                            Some(format!("this bottleneck reads `version: {VERSION}`")),
                        );
                    }
                }
                "routes" => routes = self.routes(value),
                "dns" => dns_upstream = self.dns(value),
                "allow_ranges" => allow_ranges = self.allow_ranges(value),
                _ => {}
            }
        }
        if !fields.has("routes") {
            self.error(
                fields.pos,
                "",
                "missing key `routes`",
                Some("add `routes: []` to deny everything, or list the hosts to allow".into()),
            );
        }
        let routes = routes?;
        let index = HostIndex::new(routes.iter().map(|r| &r.host));
        Some(Policy {
            routes,
            index,
            dns_upstream,
            allow_ranges,
            format,
        })
    }

    fn routes(&mut self, node: &Node) -> Option<Vec<Route>> {
        let items = self.seq(node, "routes", "routes")?;
        let mut routes = Vec::with_capacity(items.len());
        let mut seen: HashMap<HostPattern, usize> = HashMap::new();
        let mut complete = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("routes[{i}]");
            let (host, route) = self.route(item, &path);
            // Duplicates are checked on every host that parsed, even when the rest of its
            // route did not, so one run reports them all.
            if let Some((host, pos)) = host {
                if let Some(first_line) = seen.get(&host) {
                    self.error(
                        pos,
                        &format!("{path}.host"),
                        format!(
                            "duplicate host `{host}`; it is already a route at line {first_line}"
                        ),
                        Some(
                            "merge the two routes into one (list several `matches` entries)".into(),
                        ),
                    );
                    complete = false;
                    continue;
                }
                seen.insert(host, pos.line);
            }
            match route {
                Some(route) => routes.push(route),
                None => complete = false,
            }
        }
        complete.then_some(routes)
    }

    /// One route, and its host (with the host value's position) whenever the host parsed.
    fn route(&mut self, node: &Node, path: &str) -> (Option<(HostPattern, Pos)>, Option<Route>) {
        let known = ["host", "auth", "matches", "git", "tls", "tcp"];
        let Some(fields) = self.mapping(
            node,
            path,
            &known,
            Some("a route is a mapping such as `{host: example.com}`"),
        ) else {
            return (None, None);
        };
        let errors_before = self.diagnostics.len();

        let host = match fields.get("host") {
            Some((_, value)) => self.host(value, &join(path, "host")),
            None => {
                self.error(
                    fields.pos,
                    path,
                    "missing key `host`",
                    Some("every route names its host, e.g. `host: api.example.com`".into()),
                );
                None
            }
        };
        let tls = match fields.get("tls") {
            Some((_, value)) => self.tls(value, &join(path, "tls")),
            None => Some(TlsMode::Intercept),
        };
        let auth = fields
            .get("auth")
            .and_then(|(_, v)| self.auth(v, &join(path, "auth")));
        let matches = fields
            .get("matches")
            .map(|(_, v)| self.matches(v, &join(path, "matches")))
            .unwrap_or_default();
        let git = fields
            .get("git")
            .and_then(|(_, v)| self.git(v, &join(path, "git")))
            .unwrap_or_default();
        let tcp = fields
            .get("tcp")
            .map(|(_, v)| self.tcp(v, &join(path, "tcp")))
            .unwrap_or_default();

        if tls == Some(TlsMode::Passthrough) {
            for key in ["auth", "matches", "git"] {
                if let Some((pos, _)) = fields.get(key) {
                    let why = match key {
                        "auth" => {
                            "credentials cannot be injected into a passthrough route: the gateway never sees its requests"
                        }
                        "matches" => {
                            "methods and paths cannot be checked on a passthrough route: the gateway never sees its requests"
                        }
                        _ => {
                            "git rules cannot be enforced on a passthrough route: the gateway never sees its requests"
                        }
                    };
                    self.error(
                        pos,
                        &join(path, key),
                        why,
                        Some(format!(
                            "remove `{key}`, or remove `tls: passthrough` so the gateway intercepts"
                        )),
                    );
                }
            }
        }

        let host = host.zip(fields.get("host").map(|(_, value)| value.pos));
        if self.diagnostics.len() > errors_before {
            return (host, None);
        }
        let route = match (&host, tls) {
            (Some((pattern, pos)), Some(tls)) => Some(Route {
                host: pattern.clone(),
                auth,
                matches,
                git,
                tls,
                tcp,
                line: pos.line,
            }),
            _ => None,
        };
        (host, route)
    }

    fn host(&mut self, node: &Node, path: &str) -> Option<HostPattern> {
        let raw = self.string(node, path)?;
        match HostPattern::parse(raw) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                let hint = match &e {
                    HostError::Empty => "write the host name, e.g. `api.example.com`".to_owned(),
                    HostError::IpLiteral(_) | HostError::MalformedIp(_) => {
                        "bottleneck decides by name; route the name, and list private address ranges the name may resolve to in `allow_ranges`".to_owned()
                    }
                    HostError::HasPort(_) => {
                        "remove the port: HTTP (80) and HTTPS (443) are implied; list other ports in `tcp: [port]`".to_owned()
                    }
                    HostError::MisplacedWildcard(_) | HostError::BareWildcard => {
                        "a wildcard may only be the whole first label, as in `*.example.com`".to_owned()
                    }
                    HostError::Invalid(..) => {
                        "a host is a DNS name such as `api.example.com` (no scheme, path or spaces)".to_owned()
                    }
                };
                let message = match e {
                    // Show what was written; the address alone hides the odd spelling.
                    HostError::IpLiteral(ip) => {
                        format!("invalid host: `{raw}` is an IP address ({ip}), not a name")
                    }
                    e => format!("invalid host: {e}"),
                };
                self.error(node.pos, path, message, Some(hint));
                None
            }
        }
    }

    fn tls(&mut self, node: &Node, path: &str) -> Option<TlsMode> {
        match self.string(node, path)? {
            "intercept" => Some(TlsMode::Intercept),
            "passthrough" => Some(TlsMode::Passthrough),
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("unknown tls mode `{other}`"),
                    Some("use `intercept` (the default) or `passthrough`".into()),
                );
                None
            }
        }
    }

    fn auth(&mut self, node: &Node, path: &str) -> Option<Auth> {
        let fields = self.mapping(
            node,
            path,
            &["scheme", "token_ref"],
            Some("e.g. `{scheme: Bearer, token_ref: MY_TOKEN}`"),
        )?;
        let scheme = match fields.get("scheme") {
            Some((_, v)) => {
                let p = join(path, "scheme");
                match self.string(v, &p)? {
                    s if s.eq_ignore_ascii_case("bearer") => Some(AuthScheme::Bearer),
                    s if s.eq_ignore_ascii_case("token") => Some(AuthScheme::Token),
                    other => {
                        self.error(
                            v.pos,
                            &p,
                            format!("unknown auth scheme `{other}`"),
                            Some("use `Bearer` or `token`".into()),
                        );
                        None
                    }
                }
            }
            None => {
                self.error(
                    fields.pos,
                    path,
                    "missing key `scheme`",
                    Some("add `scheme: Bearer` or `scheme: token`".into()),
                );
                None
            }
        };
        let token_ref = match fields.get("token_ref") {
            Some((_, v)) => {
                let p = join(path, "token_ref");
                let name = self.string(v, &p)?;
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.error(
                        v.pos,
                        &p,
                        format!("`{name}` is not an environment variable name"),
                        Some("token_ref names the gateway environment variable that holds the secret, e.g. `GITHUB_TOKEN`; never the secret itself".into()),
                    );
                    return None;
                }
                Some(name.to_owned())
            }
            None => {
                self.error(
                    fields.pos,
                    path,
                    "missing key `token_ref`",
                    Some("add `token_ref: NAME_OF_ENV_VAR`".into()),
                );
                None
            }
        };
        Some(Auth {
            scheme: scheme?,
            token_ref: token_ref?,
        })
    }

    fn matches(&mut self, node: &Node, path: &str) -> Vec<Match> {
        let hint = "remove `matches` to allow every method and path";
        let Some(items) = self.nonempty_seq(node, path, "match entries", hint) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(fields) = self.mapping(item, &p, &["paths", "methods", "headers"], None)
            else {
                continue;
            };
            if fields.entries.is_empty() {
                self.error(
                    item.pos,
                    &p,
                    "an empty match entry would allow everything",
                    Some(
                        "give it `paths`, `methods` or `headers`, or remove `matches` altogether"
                            .into(),
                    ),
                );
                continue;
            }
            let mut entry = Match::default();
            for (key, _, value) in &fields.entries {
                let kp = join(&p, key);
                match *key {
                    "paths" => entry.paths = self.paths(value, &kp),
                    "methods" => entry.methods = self.methods(value, &kp),
                    "headers" => entry.headers = self.headers(value, &kp),
                    _ => {}
                }
            }
            out.push(entry);
        }
        out
    }

    fn paths(&mut self, node: &Node, path: &str) -> Vec<PathRule> {
        let hint = "remove `paths` to allow every path";
        let Some(items) = self.nonempty_seq(node, path, "paths", hint) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(fields) = self.mapping(
                item,
                &p,
                &["type", "value"],
                Some("e.g. `{type: prefix, value: /v1/}`"),
            ) else {
                continue;
            };
            let (Some((_, ty)), Some((_, value))) = (fields.get("type"), fields.get("value"))
            else {
                self.error(
                    item.pos,
                    &p,
                    "a path needs both `type` and `value`",
                    Some("e.g. `{type: prefix, value: /v1/}`".into()),
                );
                continue;
            };
            let (tp, vp) = (join(&p, "type"), join(&p, "value"));
            let (Some(ty_text), Some(text)) = (self.string(ty, &tp), self.string(value, &vp))
            else {
                continue;
            };
            let rule = match ty_text {
                "exact" | "prefix" => {
                    if !text.starts_with('/') {
                        self.error(
                            value.pos,
                            &vp,
                            format!("path `{text}` does not start with `/`"),
                            Some(format!(
                                "write the path part of the URL, e.g. `/{}`",
                                text.trim_start_matches('/')
                            )),
                        );
                        continue;
                    }
                    if text.contains('?') || text.contains('#') {
                        self.error(
                            value.pos,
                            &vp,
                            "paths are matched without the query string",
                            Some("remove everything from `?` or `#` on".into()),
                        );
                        continue;
                    }
                    if ty_text == "exact" {
                        PathRule::Exact(text.to_owned())
                    } else {
                        PathRule::Prefix(text.to_owned())
                    }
                }
                "regex" => {
                    let anchored = format!("^(?:{text})$");
                    match RegexBuilder::new(&anchored)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                    {
                        Ok(re) => PathRule::Regex(re),
                        Err(e) => {
                            let rendered = e.to_string();
                            let last = rendered.lines().last().unwrap_or_default();
                            let detail = last.trim_start_matches("error: ").to_owned();
                            self.error(
                                value.pos,
                                &vp,
                                format!("invalid regular expression `{text}`: {detail}"),
                                Some(
                                    "regexes use Rust `regex` syntax and must match the whole path"
                                        .into(),
                                ),
                            );
                            continue;
                        }
                    }
                }
                other => {
                    self.error(
                        ty.pos,
                        &tp,
                        format!("unknown path type `{other}`"),
                        Some("use `exact`, `prefix` or `regex`".into()),
                    );
                    continue;
                }
            };
            out.push(rule);
        }
        out
    }

    fn methods(&mut self, node: &Node, path: &str) -> Vec<String> {
        let hint = "remove `methods` to allow every method";
        let Some(items) = self.nonempty_seq(node, path, "methods", hint) else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(text) = self.string(item, &p) else {
                continue;
            };
            if !is_token(text) {
                self.error(
                    item.pos,
                    &p,
                    format!("`{text}` is not an HTTP method"),
                    Some("e.g. GET, POST, PUT".into()),
                );
                continue;
            }
            let method = text.to_ascii_uppercase();
            if method == "TRACE" {
                self.error(
                    item.pos,
                    &p,
                    "TRACE is always denied (it echoes injected credentials back)",
                    Some("remove it".into()),
                );
                continue;
            }
            if !out.contains(&method) {
                out.push(method);
            }
        }
        out
    }

    fn headers(&mut self, node: &Node, path: &str) -> Vec<HeaderRule> {
        let hint = "remove `headers` to require no header";
        let Some(items) = self.nonempty_seq(node, path, "headers", hint) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(fields) = self.mapping(
                item,
                &p,
                &["name", "value"],
                Some("e.g. `{name: anthropic-version, value: \"2023-06-01\"}`"),
            ) else {
                continue;
            };
            let (Some((_, name)), Some((_, value))) = (fields.get("name"), fields.get("value"))
            else {
                self.error(
                    item.pos,
                    &p,
                    "a header needs both `name` and `value`",
                    Some("e.g. `{name: anthropic-version, value: \"2023-06-01\"}`".into()),
                );
                continue;
            };
            let (np, vp) = (join(&p, "name"), join(&p, "value"));
            let (Some(name_text), Some(value_text)) =
                (self.string(name, &np), self.string(value, &vp))
            else {
                continue;
            };
            if !is_token(name_text) {
                self.error(
                    name.pos,
                    &np,
                    format!("`{name_text}` is not a valid header name"),
                    Some("a header name is one word of letters, digits and `-`, e.g. `anthropic-version`".into()),
                );
                continue;
            }
            if value_text
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0)
            {
                self.error(
                    value.pos,
                    &vp,
                    "header values cannot contain line breaks or NUL",
                    Some("write the value on one line".into()),
                );
                continue;
            }
            out.push(HeaderRule {
                name: name_text.to_ascii_lowercase(),
                value: value_text.to_owned(),
            });
        }
        out
    }

    fn git(&mut self, node: &Node, path: &str) -> Option<GitRule> {
        let fields = self.mapping(
            node,
            path,
            &["fetch"],
            Some("e.g. `{fetch: true}`; push is never allowed"),
        )?;
        let fetch = match fields.get("fetch") {
            Some((_, v)) => self.bool(v, &join(path, "fetch"))?,
            None => false,
        };
        Some(GitRule { fetch })
    }

    fn tcp(&mut self, node: &Node, path: &str) -> Vec<u16> {
        let Some(items) = self.nonempty_seq(
            node,
            path,
            "ports",
            "remove `tcp` if no raw TCP port is needed",
        ) else {
            return Vec::new();
        };
        let mut ports = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(n) = self.int(item, &p) else {
                continue;
            };
            let port = match u16::try_from(n) {
                Ok(port) if port != 0 => port,
                _ => {
                    self.error(
                        item.pos,
                        &p,
                        format!("port {n} is out of range"),
                        Some("ports are 1 to 65535".into()),
                    );
                    continue;
                }
            };
            if port == 80 || port == 443 {
                self.error(
                    item.pos,
                    &p,
                    format!("port {port} is served by the HTTP/TLS listeners, not the TCP relay"),
                    Some("remove it: the route already allows HTTP and HTTPS; use `tls: passthrough` to skip interception".into()),
                );
                continue;
            }
            if ports.contains(&port) {
                self.error(
                    item.pos,
                    &p,
                    format!("port {port} is listed twice"),
                    Some("remove the duplicate".into()),
                );
                continue;
            }
            ports.push(port);
        }
        ports.sort_unstable();
        ports
    }

    fn dns(&mut self, node: &Node) -> Vec<SocketAddr> {
        let Some(fields) = self.mapping(node, "dns", &["upstream"], None) else {
            return Vec::new();
        };
        let Some((_, upstream)) = fields.get("upstream") else {
            return Vec::new();
        };
        let Some(items) = self.nonempty_seq(
            upstream,
            "dns.upstream",
            "resolver addresses",
            "remove `upstream` to use the gateway's own resolv.conf",
        ) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("dns.upstream[{i}]");
            let Some(text) = self.string(item, &p) else {
                continue;
            };
            let addr = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match addr {
                Some(addr) if addr.port() != 0 => out.push(addr),
                _ => self.error(
                    item.pos,
                    &p,
                    format!("`{text}` is not a resolver address"),
                    Some("write an IP address, optionally with a port: `203.0.113.53` or `[2001:db8::53]:5353`".into()),
                ),
            }
        }
        out
    }

    fn allow_ranges(&mut self, node: &Node) -> Vec<IpNet> {
        let Some(items) = self.seq(node, "allow_ranges", "CIDR ranges") else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("allow_ranges[{i}]");
            let Some(text) = self.string(item, &p) else {
                continue;
            };
            let net = text
                .parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
            match net {
                Some(net) if net.trunc() == net => out.push(net),
                Some(net) => self.error(
                    item.pos,
                    &p,
                    format!("`{text}` has host bits set"),
                    Some(format!("did you mean `{}`?", net.trunc())),
                ),
                None => self.error(
                    item.pos,
                    &p,
                    format!("`{text}` is not a CIDR range"),
                    Some("write e.g. `10.20.0.0/16` or `fd00:1::/64`".into()),
                ),
            }
        }
        out
    }
}

/// The known keys of one mapping, with their key positions and values.
struct Fields<'n> {
    pos: Pos,
    entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<(Pos, &'n Node)> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|&(_, pos, node)| (pos, node))
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// An RFC 9110 token (method and header-name syntax).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The known key nearest to a misspelt one, if it is close enough to be a typo.
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|&(d, k)| d <= 2 && d < k.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
