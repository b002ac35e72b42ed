//! The agent's account, read from the text of `/etc/passwd` and `/etc/group`.
//!
//! A static glibc binary must not call NSS (`getpwnam`, `getgrouplist`): the shim reads the
//! two files itself. Everything here is a pure function of the files' text, so it is tested
//! without touching the machine's own files.
//!
//! Lines are parsed like glibc's `files` backend: comments, blank lines and NIS compat
//! lines (`+`/`-`) are skipped, and so is any malformed line, except that a malformed line
//! for the very user asked for is an error (silently taking another entry would be wrong).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Who the agent runs as: a user name, or a numeric uid (with an optional gid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    /// A name looked up in `/etc/passwd` (e.g. `node`).
    Name(String),
    /// `UID` or `UID:GID`. A uid found in `/etc/passwd` takes that entry's name, home
    /// and (unless given) primary group; an unknown uid runs with gid = the given gid or
    /// the uid, home `/`.
    Id {
        /// The user id.
        uid: u32,
        /// The primary group id, if given.
        gid: Option<u32>,
    },
}

impl FromStr for UserSpec {
    type Err = LookupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(LookupError::BadSpec {
                spec: s.to_owned(),
                reason: "it is empty",
            });
        }
        let numeric = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if let Some((uid, gid)) = s.split_once(':') {
            if !numeric(uid) || !numeric(gid) {
                return Err(LookupError::BadSpec {
                    spec: s.to_owned(),
                    reason: "expected NAME, UID or UID:GID",
                });
            }
            return Ok(UserSpec::Id {
                uid: parse_id(uid, s)?,
                gid: Some(parse_id(gid, s)?),
            });
        }
        if numeric(s) {
            return Ok(UserSpec::Id {
                uid: parse_id(s, s)?,
                gid: None,
            });
        }
        if s.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control()) {
            return Err(LookupError::BadSpec {
                spec: s.to_owned(),
                reason: "a user name cannot contain spaces, commas or control characters",
            });
        }
        Ok(UserSpec::Name(s.to_owned()))
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserSpec::Name(n) => f.write_str(n),
            UserSpec::Id { uid, gid: None } => write!(f, "{uid}"),
            UserSpec::Id {
                uid,
                gid: Some(gid),
            } => write!(f, "{uid}:{gid}"),
        }
    }
}

fn parse_id(text: &str, spec: &str) -> Result<u32, LookupError> {
    match text.parse::<u32>() {
        // (uid_t)-1 means "unchanged" to setresuid: never a real id.
        Ok(u32::MAX) | Err(_) => Err(LookupError::BadSpec {
            spec: spec.to_owned(),
            reason: "ids must be numbers below 4294967295",
        }),
        Ok(id) => Ok(id),
    }
}

/// An id field of /etc/passwd or /etc/group. (uid_t)-1 is refused there as in a spec:
/// `setresuid(-1, ...)` would leave the shim's own (root) id in place.
fn file_id(text: &str) -> Option<u32> {
    text.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

/// One line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell (may be empty).
    pub shell: String,
}

/// One line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member user names.
    pub members: Vec<String>,
}

/// The account the agent runs as, with every group it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// User name (`USER`, `LOGNAME`); the decimal uid for a uid without an entry.
    pub name: String,
    /// User id (never 0).
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the primary group first, then each group listing the user,
    /// without duplicates.
    pub groups: Vec<u32>,
    /// Home directory (`HOME`).
    pub home: PathBuf,
}

/// Why the agent's account could not be determined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// The user spec itself is not valid.
    #[error("invalid user {spec:?}: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No entry for the name.
    #[error("user {name:?} does not exist in /etc/passwd")]
    NoSuchUser {
        /// The name asked for.
        name: String,
    },
    /// The entry for the user is malformed.
    #[error("the /etc/passwd entry for {name:?} (line {line}) is malformed: {reason}")]
    Malformed {
        /// The name asked for.
        name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The user is root (uid 0): the agent would own root's files (resolv.conf, the CA
    /// bundle) even without capabilities.
    #[error("user {name:?} has uid 0: the agent must not run as root")]
    Root {
        /// The name or spec asked for.
        name: String,
    },
}

/// Parses one passwd line. `None`: a line to skip silently (blank, comment, NIS compat);
/// `Some(Err)`: malformed, with the name field (if any) for error reporting.
fn parse_passwd_line(line: &str) -> Option<Result<PasswdEntry, (String, &'static str)>> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    let name = fields[0].to_owned();
    if fields.len() != 7 {
        return Some(Err((name, "expected 7 colon-separated fields")));
    }
    if name.is_empty() {
        return Some(Err((name, "empty user name")));
    }
    let Some(uid) = file_id(fields[2]) else {
        return Some(Err((name, "the uid is not a number below 4294967295")));
    };
    let Some(gid) = file_id(fields[3]) else {
        return Some(Err((name, "the gid is not a number below 4294967295")));
    };
    Some(Ok(PasswdEntry {
        name,
        uid,
        gid,
        home: fields[5].to_owned(),
        shell: fields[6].to_owned(),
    }))
}

/// Every well-formed entry of a passwd file, in order.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(parse_passwd_line)
        .filter_map(Result::ok)
        .collect()
}

/// Every well-formed entry of a group file, in order.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
                return None;
            }
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 4 || fields[0].is_empty() {
                return None;
            }
            let gid = file_id(fields[2])?;
            let members = fields[3]
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid,
                members,
            })
        })
        .collect()
}

/// Finds the passwd entry for `spec`: by name (a malformed line for that name is an
/// error), or by uid (`None` if no entry has it).
pub fn find_user(passwd: &str, spec: &UserSpec) -> Result<Option<PasswdEntry>, LookupError> {
    match spec {
        UserSpec::Name(wanted) => {
            for (i, line) in passwd.lines().enumerate() {
                match parse_passwd_line(line) {
                    Some(Ok(entry)) if entry.name == *wanted => return Ok(Some(entry)),
                    Some(Err((name, reason))) if name == *wanted => {
                        return Err(LookupError::Malformed {
                            name: name.clone(),
                            line: i + 1,
                            reason,
                        });
                    }
                    _ => {}
                }
            }
            Err(LookupError::NoSuchUser {
                name: wanted.clone(),
            })
        }
        UserSpec::Id { uid, .. } => Ok(parse_passwd(passwd).into_iter().find(|e| e.uid == *uid)),
    }
}

/// The groups of a user: `primary` first, then every group whose member list names
/// `user`, in file order, without duplicates.
pub fn groups_of(group: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut groups = vec![primary];
    for entry in parse_group(group) {
        if entry.members.iter().any(|m| m == user) && !groups.contains(&entry.gid) {
            groups.push(entry.gid);
        }
    }
    groups
}

/// Resolves `spec` to an [`Account`] from the text of `/etc/passwd` and `/etc/group`
/// (either may be empty when the file does not exist).
pub fn resolve(passwd: &str, group: &str, spec: &UserSpec) -> Result<Account, LookupError> {
    let entry = find_user(passwd, spec)?;
    let account = match (spec, entry) {
        (_, Some(entry)) => {
            let gid = match spec {
                UserSpec::Id { gid: Some(g), .. } => *g,
                _ => entry.gid,
            };
            Account {
                groups: groups_of(group, &entry.name, gid),
                uid: entry.uid,
                gid,
                home: PathBuf::from(if entry.home.is_empty() {
                    "/"
                } else {
                    entry.home.as_str()
                }),
                name: entry.name,
            }
        }
        (UserSpec::Id { uid, gid }, None) => {
            let gid = gid.unwrap_or(*uid);
            Account {
                name: uid.to_string(),
                uid: *uid,
                gid,
                groups: vec![gid],
                home: PathBuf::from("/"),
            }
        }
        (UserSpec::Name(name), None) => {
            return Err(LookupError::NoSuchUser { name: name.clone() });
        }
    };
    if account.uid == 0 {
        return Err(LookupError::Root {
            name: spec.to_string(),
        });
    }
    Ok(account)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without colons
alsobroken:x:notanumber:1::/:/bin/sh
+nisuser::::::
node:x:1000:1000::/home/node:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
homeless:x:1001:1001:::
";
    const GROUP: &str = "\
root:x:0:
node:x:1000:
docker:x:999:node,other
staff:x:50:other, node
bad:x:nan:node
agents:x:1500:node
dup:x:1000:node
";

    fn spec(s: &str) -> UserSpec {
        s.parse().unwrap()
    }

    #[test]
    fn named_user_with_supplementary_groups() {
        let a = resolve(PASSWD, GROUP, &spec("node")).unwrap();
        assert_eq!(a.name, "node");
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.home, PathBuf::from("/home/node"));
        // primary first, member groups in file order, the malformed group skipped, the
        // duplicate of the primary gid not repeated.
        assert_eq!(a.groups, vec![1000, 999, 50, 1500]);
    }

    #[test]
    fn missing_user_is_an_error() {
        assert_eq!(
            resolve(PASSWD, GROUP, &spec("claude")),
            Err(LookupError::NoSuchUser {
                name: "claude".into()
            })
        );
        assert_eq!(
            resolve("", "", &spec("node")),
            Err(LookupError::NoSuchUser {
                name: "node".into()
            })
        );
    }

    #[test]
    fn malformed_lines_are_skipped_but_not_for_the_wanted_user() {
        assert_eq!(parse_passwd(PASSWD).len(), 5);
        let err = resolve(PASSWD, GROUP, &spec("alsobroken")).unwrap_err();
        assert_eq!(
            err,
            LookupError::Malformed {
                name: "alsobroken".into(),
                line: 6,
                reason: "the uid is not a number below 4294967295"
            }
        );
        assert!(err.to_string().contains("line 6"), "{err}");
        // A line without enough fields whose first field is the name.
        let err = resolve("node:x:1000\n", "", &spec("node")).unwrap_err();
        assert!(
            matches!(err, LookupError::Malformed { line: 1, .. }),
            "{err}"
        );
    }

    /// Found by the shim_passwd fuzz target: (uid_t)-1 in a file line was taken as an id,
    /// which setresuid reads as "unchanged" (the shim's root) and only the later check of
    /// the dropped ids caught, after the network was set up.
    #[test]
    fn an_id_of_4294967295_in_passwd_or_group_is_malformed_not_unchanged() {
        for line in [
            "node:x:4294967295:1000::/home/node:/bin/sh\n",
            "node:x:1000:4294967295::/home/node:/bin/sh\n",
        ] {
            let err = resolve(line, "", &spec("node")).unwrap_err();
            assert!(
                matches!(err, LookupError::Malformed { line: 1, .. }),
                "{err}"
            );
        }
        assert!(parse_group("bad:x:4294967295:node\n").is_empty());
    }

    #[test]
    fn numeric_uid_given_directly() {
        // Known uid: takes the entry's name, home and primary group.
        let a = resolve(PASSWD, GROUP, &spec("1000")).unwrap();
        assert_eq!(a.name, "node");
        assert_eq!(a.groups, vec![1000, 999, 50, 1500]);
        // Known uid with an explicit gid.
        let a = resolve(PASSWD, GROUP, &spec("1000:50")).unwrap();
        assert_eq!((a.uid, a.gid), (1000, 50));
        assert_eq!(a.groups, vec![50, 999, 1500, 1000]);
        // Unknown uid: runs with gid = uid (or the given gid), home /.
        let a = resolve(PASSWD, GROUP, &spec("4242")).unwrap();
        assert_eq!(
            a,
            Account {
                name: "4242".into(),
                uid: 4242,
                gid: 4242,
                groups: vec![4242],
                home: PathBuf::from("/"),
            }
        );
        let a = resolve("", "", &spec("4242:7")).unwrap();
        assert_eq!((a.uid, a.gid, a.groups.clone()), (4242, 7, vec![7]));
    }

    #[test]
    fn empty_home_becomes_root_dir() {
        let a = resolve(PASSWD, GROUP, &spec("homeless")).unwrap();
        assert_eq!(a.home, PathBuf::from("/"));
        assert_eq!(a.groups, vec![1001]);
    }

    #[test]
    fn root_is_refused() {
        assert!(matches!(
            resolve(PASSWD, GROUP, &spec("root")),
            Err(LookupError::Root { .. })
        ));
        assert!(matches!(
            resolve(PASSWD, GROUP, &spec("0")),
            Err(LookupError::Root { .. })
        ));
        assert!(matches!(
            resolve("", "", &spec("0:1000")),
            Err(LookupError::Root { .. })
        ));
    }

    #[test]
    fn bad_specs() {
        for bad in [
            "",
            " ",
            "1000:",
            ":1000",
            "a:b",
            "1000:x",
            "no body",
            "a,b",
            "4294967295",
        ] {
            assert!(
                matches!(bad.parse::<UserSpec>(), Err(LookupError::BadSpec { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(spec("node"), UserSpec::Name("node".into()));
        assert_eq!(spec("1000:1001").to_string(), "1000:1001");
    }

    #[test]
    fn crlf_and_group_member_spaces() {
        let a = resolve(
            "node:x:1000:1000::/home/node:/bin/sh\r\n",
            "g:x:7:node\r\n",
            &spec("node"),
        )
        .unwrap();
        assert_eq!(a.groups, vec![1000, 7]);
    }
}
