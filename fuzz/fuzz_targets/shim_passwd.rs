//! The init shim's `/etc/passwd` and `/etc/group` reading, from arbitrary text.
//!
//! The input is `SPEC \0 PASSWD \0 GROUP` (each part lossily decoded as UTF-8; missing parts
//! are empty). The spec goes through `UserSpec::from_str`; when that refuses it, the raw
//! text is still looked up as a name, since `resolve` takes any `UserSpec`. Every name and
//! uid the passwd text mentions is looked up too, so the found-user paths are reached
//! without the fuzzer having to guess a matching spec.
//!
//! Nothing may panic, and every answer must agree with a plain re-reading of the text
//! following the module's documented rules: the first non-skipped line naming the user
//! decides (a malformed one is an error, with its 1-based line number), a uid takes the
//! first well-formed entry, the account is never root, an empty home becomes `/`, and the
//! groups are the primary one first, then each group listing the user, in file order,
//! without duplicates.
#![no_main]

use std::path::Path;

use bottleneck_init::passwd::{
    Account, LookupError, UserSpec, find_user, groups_of, parse_group, parse_passwd, resolve,
};
use libfuzzer_sys::fuzz_target;

/// A line the files backend skips: blank, a comment, or a NIS compat line.
fn skipped(line: &str) -> bool {
    let line = line.trim_end_matches('\r');
    line.trim().is_empty() || line.starts_with('#') || line.starts_with(['+', '-'])
}

/// An id field: a number, never (uid_t)-1 (which setresuid reads as "unchanged").
fn id(field: &str) -> Option<u32> {
    field.parse().ok().filter(|&id| id != u32::MAX)
}

/// A well-formed passwd line: `(name, uid, gid, home)`.
fn passwd_fields(line: &str) -> Option<(&str, u32, u32, &str)> {
    if skipped(line) {
        return None;
    }
    let fields: Vec<&str> = line.trim_end_matches('\r').split(':').collect();
    if fields.len() != 7 || fields[0].is_empty() {
        return None;
    }
    Some((fields[0], id(fields[2])?, id(fields[3])?, fields[5]))
}

/// A well-formed group line: `(name, gid, members)`.
fn group_fields(line: &str) -> Option<(&str, u32, Vec<&str>)> {
    if skipped(line) {
        return None;
    }
    let fields: Vec<&str> = line.trim_end_matches('\r').split(':').collect();
    if fields.len() != 4 || fields[0].is_empty() {
        return None;
    }
    let members = fields[3]
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    Some((fields[0], id(fields[2])?, members))
}

/// The groups the module promises: `primary`, then each well-formed group listing `user`.
fn expected_groups(group: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut groups = vec![primary];
    for (_, gid, members) in group.lines().filter_map(group_fields) {
        if members.contains(&user) && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    groups
}

fn check_spec(text: &str) -> Option<UserSpec> {
    match text.parse::<UserSpec>() {
        Ok(spec) => {
            // Display and FromStr agree.
            assert_eq!(spec.to_string().parse::<UserSpec>().as_ref(), Ok(&spec));
            match &spec {
                UserSpec::Name(name) => {
                    assert_eq!(name, text.trim());
                    assert!(!name.is_empty());
                    assert!(!name.bytes().all(|b| b.is_ascii_digit()));
                    assert!(
                        !name.contains(|c: char| {
                            c.is_whitespace() || c.is_control() || c == ',' || c == ':'
                        }),
                        "{name:?}"
                    );
                }
                UserSpec::Id { uid, gid } => {
                    assert_ne!(*uid, u32::MAX);
                    assert_ne!(*gid, Some(u32::MAX));
                }
            }
            Some(spec)
        }
        Err(LookupError::BadSpec { spec, .. }) => {
            assert_eq!(spec, text.trim());
            None
        }
        Err(other) => panic!("from_str only refuses with BadSpec, yet: {other}"),
    }
}

fn check_account(account: &Account) {
    assert_ne!(account.uid, 0, "an account is never root");
    assert!(
        account.uid != u32::MAX && account.gid != u32::MAX,
        "(uid_t)-1 is no id"
    );
    assert!(!account.home.as_os_str().is_empty(), "an empty home is /");
    assert_eq!(account.groups.first(), Some(&account.gid));
    for (i, g) in account.groups.iter().enumerate() {
        assert!(!account.groups[..i].contains(g), "duplicate group {g}");
    }
}

fn check_lookup(passwd: &str, group: &str, spec: &UserSpec) {
    let found = find_user(passwd, spec);
    let resolved = resolve(passwd, group, spec);
    if let Ok(account) = &resolved {
        check_account(account);
    }
    match spec {
        UserSpec::Name(wanted) => {
            let line = passwd.lines().enumerate().find(|(_, l)| {
                !skipped(l) && l.trim_end_matches('\r').split(':').next() == Some(wanted.as_str())
            });
            match line {
                None => {
                    let no_such_user = || LookupError::NoSuchUser {
                        name: wanted.clone(),
                    };
                    assert_eq!(found, Err(no_such_user()));
                    assert_eq!(resolved, Err(no_such_user()));
                }
                Some((i, line)) => match passwd_fields(line) {
                    None => {
                        assert!(
                            matches!(&found, Err(LookupError::Malformed { name, line, .. })
                                if name == wanted && *line == i + 1),
                            "{found:?} for line {}",
                            i + 1
                        );
                        assert_eq!(resolved.err(), found.err());
                    }
                    Some((name, uid, gid, home)) => {
                        let Ok(Some(entry)) = &found else {
                            panic!("line {} names {wanted:?}, yet {found:?}", i + 1);
                        };
                        assert_eq!(
                            (
                                entry.name.as_str(),
                                entry.uid,
                                entry.gid,
                                entry.home.as_str()
                            ),
                            (name, uid, gid, home)
                        );
                        if uid == 0 {
                            assert!(matches!(resolved, Err(LookupError::Root { .. })));
                        } else {
                            let home = if home.is_empty() { "/" } else { home };
                            let account = resolved.expect("a well-formed non-root entry");
                            assert_eq!(account.name, *wanted);
                            assert_eq!((account.uid, account.gid), (uid, gid));
                            assert_eq!(account.home, Path::new(home));
                            assert_eq!(account.groups, expected_groups(group, wanted, gid));
                        }
                    }
                },
            }
        }
        UserSpec::Id { uid, gid } => {
            let entry = passwd
                .lines()
                .filter_map(passwd_fields)
                .find(|(_, u, _, _)| u == uid);
            let Ok(found) = found else {
                panic!("a uid lookup never fails, yet {found:?}");
            };
            assert_eq!(
                found
                    .as_ref()
                    .map(|e| (e.name.as_str(), e.uid, e.gid, e.home.as_str())),
                entry
            );
            if *uid == 0 {
                assert!(matches!(resolved, Err(LookupError::Root { .. })));
                return;
            }
            let account = resolved.expect("a non-zero uid always resolves");
            assert_eq!(account.uid, *uid);
            match entry {
                Some((name, _, entry_gid, home)) => {
                    let home = if home.is_empty() { "/" } else { home };
                    let gid = gid.unwrap_or(entry_gid);
                    assert_eq!(account.name, name);
                    assert_eq!(account.gid, gid);
                    assert_eq!(account.home, Path::new(home));
                    assert_eq!(account.groups, expected_groups(group, name, gid));
                }
                None => {
                    let gid = gid.unwrap_or(*uid);
                    assert_eq!(
                        account,
                        Account {
                            name: uid.to_string(),
                            uid: *uid,
                            gid,
                            groups: vec![gid],
                            home: "/".into(),
                        }
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (spec_text, passwd, group) = (next(), next(), next());

    // The parsers keep exactly the well-formed lines.
    let entries = parse_passwd(&passwd);
    let expected: Vec<_> = passwd.lines().filter_map(passwd_fields).collect();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.uid, e.gid, e.home.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    let groups = parse_group(&group);
    let expected: Vec<_> = group.lines().filter_map(group_fields).collect();
    assert_eq!(
        groups
            .iter()
            .map(|g| (
                g.name.as_str(),
                g.gid,
                g.members.iter().map(String::as_str).collect()
            ))
            .collect::<Vec<_>>(),
        expected
    );

    // Groups of any name, even one no passwd line has.
    let primary = spec_text.len() as u32;
    let of = groups_of(&group, spec_text.trim(), primary);
    assert_eq!(of, expected_groups(&group, spec_text.trim(), primary));
    for (i, g) in of.iter().enumerate() {
        assert!(!of[..i].contains(g), "duplicate group {g}");
    }

    let spec = check_spec(&spec_text).unwrap_or_else(|| UserSpec::Name(spec_text.clone()));
    check_lookup(&passwd, &group, &spec);
    if let UserSpec::Id { uid, gid: None } = spec {
        check_lookup(
            &passwd,
            &group,
            &UserSpec::Id {
                uid,
                gid: Some(uid ^ 1),
            },
        );
    }

    // Every user the passwd text names, by name and by uid (bounded: inputs are small).
    for line in passwd.lines().take(64) {
        let name = line
            .trim_end_matches('\r')
            .split(':')
            .next()
            .unwrap_or_default();
        check_lookup(&passwd, &group, &UserSpec::Name(name.to_owned()));
        if let Some((_, uid, _, _)) = passwd_fields(line) {
            check_lookup(&passwd, &group, &UserSpec::Id { uid, gid: None });
        }
    }
});
