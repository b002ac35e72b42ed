//! CNAME chains, followed link by link and cut at the first denied name.
//!
//! An allowed name may be an alias of a name the policy denies (`docs.allowed.example
//! CNAME tracker.denied.example`). Serving that chain would disclose the denied name, and
//! following it would send the denied name upstream. So every link's target goes through
//! the gate before it is served or asked for; the first denied target turns the whole
//! answer into NXDOMAIN with no records. Only records on the chain are served: anything
//! else an upstream put in the answer section (other names, unsolicited data) is dropped.

use std::collections::HashSet;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::gate::NameGate;

/// The longest chain followed (links), across all upstream replies.
pub const MAX_LINKS: usize = 8;

/// How a walk through one upstream reply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The chain is complete: serve what was collected (possibly no data: NODATA).
    Done,
    /// The chain goes on at this allowed name, but the reply holds nothing for it: ask.
    Follow(Name),
    /// A link points at a denied name (given): answer NXDOMAIN, disclose nothing.
    Cut(String),
    /// The chain is longer than [`MAX_LINKS`] or loops.
    TooLong,
}

/// What was collected from one reply.
#[derive(Clone, Debug)]
pub struct ChainWalk {
    /// The permitted CNAME records and the data records, in chain order.
    pub records: Vec<Record>,
    /// The chain's names after the starting name.
    pub names: Vec<String>,
    /// How the walk ended.
    pub end: Walk,
}

/// The form names take for the gate, the pins and the audit: lowercase ASCII, no
/// trailing dot.
pub fn name_key(name: &Name) -> String {
    let ascii = name.to_ascii();
    ascii
        .strip_suffix('.')
        .unwrap_or(&ascii)
        .to_ascii_lowercase()
}

/// Walk `answers` from `start` for `qtype`. `links_before` counts links already followed
/// in earlier replies, so the bound holds across the whole resolution.
pub fn walk(
    start: &Name,
    qtype: RecordType,
    answers: &[Record],
    gate: &dyn NameGate,
    links_before: usize,
) -> ChainWalk {
    let mut records = Vec::new();
    let mut names = Vec::new();
    let mut seen: HashSet<String> = HashSet::from([name_key(start)]);
    let mut current = start.clone();
    loop {
        let alias = (qtype != RecordType::CNAME)
            .then(|| {
                answers.iter().find_map(|r| match &r.data {
                    RData::CNAME(target) if same(&r.name, &current) => Some((r, target.0.clone())),
                    _ => None,
                })
            })
            .flatten();
        let Some((record, target)) = alias else {
            let data: Vec<Record> = answers
                .iter()
                .filter(|r| r.record_type() == qtype && same(&r.name, &current))
                .cloned()
                .collect();
            // A CNAME question's data is itself a link: its target must be allowed too.
            if let Some(denied) = data.iter().find_map(|r| match &r.data {
                RData::CNAME(target) if !gate.check(&name_key(&target.0)).allowed => {
                    Some(name_key(&target.0))
                }
                _ => None,
            }) {
                return ChainWalk {
                    records: Vec::new(),
                    names,
                    end: Walk::Cut(denied),
                };
            }
            let end = if data.is_empty() && !same(&current, start) {
                Walk::Follow(current)
            } else {
                Walk::Done
            };
            records.extend(data);
            return ChainWalk {
                records,
                names,
                end,
            };
        };
        let key = name_key(&target);
        if !gate.check(&key).allowed {
            return ChainWalk {
                records: Vec::new(),
                names,
                end: Walk::Cut(key),
            };
        }
        if !seen.insert(key.clone()) || links_before + names.len() + 1 > MAX_LINKS {
            return ChainWalk {
                records,
                names,
                end: Walk::TooLong,
            };
        }
        records.push(record.clone());
        names.push(key);
        current = target;
    }
}

/// Same name, ignoring case and whether either is fully qualified.
fn same(a: &Name, b: &Name) -> bool {
    a.eq_ignore_root(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GateDecision;
    use hickory_proto::rr::rdata::{A, CNAME};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 60, RData::CNAME(CNAME(name(target))))
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(name(owner), 60, RData::A(A::new(198, 51, 100, last)))
    }

    fn gate(name: &str) -> GateDecision {
        GateDecision {
            allowed: !name.ends_with("denied.test"),
            reason: "test",
        }
    }

    #[test]
    fn a_complete_allowed_chain_is_served_in_order() {
        let answers = [cname("www.a.test.", "cdn.a.test."), a("cdn.a.test.", 10)];
        let walk = walk(&name("WWW.a.test."), RecordType::A, &answers, &gate, 0);
        assert_eq!(walk.end, Walk::Done);
        assert_eq!(walk.records, answers.to_vec());
        assert_eq!(walk.names, vec!["cdn.a.test".to_string()]);
    }

    #[test]
    fn a_chain_into_a_denied_name_is_cut_and_discloses_nothing() {
        let answers = [
            cname("www.a.test.", "tracker.denied.test."),
            a("tracker.denied.test.", 10),
        ];
        let walk = walk(&name("www.a.test."), RecordType::A, &answers, &gate, 0);
        assert_eq!(walk.end, Walk::Cut("tracker.denied.test".into()));
        assert!(walk.records.is_empty());
    }

    #[test]
    fn a_chain_ending_at_an_allowed_name_without_data_asks_for_it() {
        let answers = [cname("www.a.test.", "cdn.a.test.")];
        let walk = walk(&name("www.a.test."), RecordType::A, &answers, &gate, 0);
        assert_eq!(walk.end, Walk::Follow(name("cdn.a.test.")));
        assert_eq!(walk.records.len(), 1);
    }

    #[test]
    fn records_off_the_chain_are_dropped() {
        let answers = [a("www.a.test.", 10), a("victim.b.test.", 66)];
        let walk = walk(&name("www.a.test."), RecordType::A, &answers, &gate, 0);
        assert_eq!(walk.records, vec![answers[0].clone()]);
    }

    #[test]
    fn a_looping_chain_ends() {
        let answers = [
            cname("x.a.test.", "y.a.test."),
            cname("y.a.test.", "x.a.test."),
        ];
        let walk = walk(&name("x.a.test."), RecordType::A, &answers, &gate, 0);
        assert_eq!(walk.end, Walk::TooLong);
    }

    #[test]
    fn the_link_bound_holds_across_replies() {
        let answers = [cname("x.a.test.", "y.a.test.")];
        let walk = walk(
            &name("x.a.test."),
            RecordType::A,
            &answers,
            &gate,
            MAX_LINKS,
        );
        assert_eq!(walk.end, Walk::TooLong);
    }

    #[test]
    fn a_cname_question_is_answered_only_when_the_target_is_allowed() {
        let allowed = [cname("x.a.test.", "y.a.test.")];
        let walk_allowed = walk(&name("x.a.test."), RecordType::CNAME, &allowed, &gate, 0);
        assert_eq!(walk_allowed.end, Walk::Done);
        assert_eq!(walk_allowed.records, allowed.to_vec());
        let denied = [cname("x.a.test.", "tracker.denied.test.")];
        let walk_denied = walk(&name("x.a.test."), RecordType::CNAME, &denied, &gate, 0);
        assert_eq!(walk_denied.end, Walk::Cut("tracker.denied.test".into()));
        assert!(walk_denied.records.is_empty());
    }
}
