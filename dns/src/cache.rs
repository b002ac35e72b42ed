//! Answers kept for their TTL, so repeated lookups do not reach the upstream.
//!
//! TTLs are clamped to `[min, max]` ([`TtlClamp`]): a zero-TTL answer would otherwise send
//! every query upstream, and a week-long TTL would pin a stale address. Negative answers
//! (NXDOMAIN, NODATA) are kept too, for the upstream's negative TTL within the same clamp.
//! The cache is bounded (entries, not bytes: answers are small after filtering).
//! Each entry remembers the names of its CNAME chain: the handler re-checks them on every
//! hit, so a policy reload that denies a link takes effect at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Record, RecordType};
use quick_cache::sync::Cache;

/// Bounds applied to every TTL before caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlClamp {
    /// Shortest time an answer is cached, in seconds.
    pub min: u32,
    /// Longest time an answer is cached, in seconds.
    pub max: u32,
}

impl TtlClamp {
    /// `ttl` within the bounds.
    pub fn apply(self, ttl: u32) -> u32 {
        ttl.clamp(self.min, self.max.max(self.min))
    }
}

/// A filtered answer as served to the agent.
#[derive(Clone, Debug)]
pub struct Cached {
    /// Response code.
    pub rcode: ResponseCode,
    /// Answer records (the permitted CNAME chain and the data), TTLs as received.
    pub answers: Vec<Record>,
    /// Every name of the chain after the query name (each one was allowed when cached).
    pub chain: Vec<String>,
    /// Why the answer is what it is (for the audit of cached hits).
    pub reason: &'static str,
    stored: Instant,
    expires: Instant,
}

impl Cached {
    /// An answer to keep for `ttl` seconds (already clamped).
    pub fn new(
        rcode: ResponseCode,
        answers: Vec<Record>,
        chain: Vec<String>,
        reason: &'static str,
        ttl: u32,
    ) -> Cached {
        let stored = Instant::now();
        Cached {
            rcode,
            answers,
            chain,
            reason,
            stored,
            expires: stored + Duration::from_secs(u64::from(ttl)),
        }
    }

    /// The records with their TTLs reduced by the time spent in the cache (at least 1 s).
    pub fn aged_answers(&self, now: Instant) -> Vec<Record> {
        let age =
            u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX);
        let remaining = u32::try_from(self.expires.saturating_duration_since(now).as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        self.answers
            .iter()
            .map(|record| {
                let mut record = record.clone();
                record.ttl = record.ttl.saturating_sub(age).clamp(1, remaining);
                record
            })
            .collect()
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.expires
    }
}

/// The answer cache, keyed by query name and type.
pub struct AnswerCache {
    entries: Cache<(LowerName, RecordType), Arc<Cached>>,
    clamp: TtlClamp,
}

impl AnswerCache {
    /// A cache of at most `capacity` answers with this TTL clamp.
    pub fn new(capacity: usize, clamp: TtlClamp) -> AnswerCache {
        AnswerCache {
            entries: Cache::new(capacity.max(1)),
            clamp,
        }
    }

    /// The TTL clamp in force.
    pub fn clamp(&self) -> TtlClamp {
        self.clamp
    }

    /// A fresh answer for (`name`, `qtype`), if any.
    pub fn get(&self, name: &LowerName, qtype: RecordType) -> Option<Arc<Cached>> {
        let key = (name.clone(), qtype);
        let hit = self.entries.get(&key)?;
        if hit.fresh(Instant::now()) {
            Some(hit)
        } else {
            self.entries.remove(&key);
            None
        }
    }

    /// Keep `answer` for (`name`, `qtype`).
    pub fn insert(&self, name: LowerName, qtype: RecordType, answer: Cached) {
        self.entries.insert((name, qtype), Arc::new(answer));
    }

    /// How many answers are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData};
    use std::str::FromStr;

    fn a_record(ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_str("a.test.").unwrap(),
            ttl,
            RData::A(A::new(198, 51, 100, 10)),
        )
    }

    #[test]
    fn ttls_are_clamped() {
        let clamp = TtlClamp { min: 5, max: 3600 };
        assert_eq!(clamp.apply(0), 5);
        assert_eq!(clamp.apply(60), 60);
        assert_eq!(clamp.apply(604_800), 3600);
    }

    #[test]
    fn an_expired_answer_is_not_served() {
        let cache = AnswerCache::new(8, TtlClamp { min: 0, max: 60 });
        let name = LowerName::from(Name::from_str("a.test.").unwrap());
        cache.insert(
            name.clone(),
            RecordType::A,
            Cached::new(
                ResponseCode::NoError,
                vec![a_record(0)],
                vec![],
                "allowed",
                0,
            ),
        );
        assert!(cache.get(&name, RecordType::A).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn served_ttls_count_down_and_never_reach_zero() {
        let answer = Cached::new(
            ResponseCode::NoError,
            vec![a_record(60)],
            vec![],
            "allowed",
            60,
        );
        let later = answer.stored + Duration::from_secs(20);
        assert_eq!(answer.aged_answers(later)[0].ttl, 40);
        let much_later = answer.stored + Duration::from_secs(59) + Duration::from_millis(900);
        assert_eq!(answer.aged_answers(much_later)[0].ttl, 1);
    }
}
