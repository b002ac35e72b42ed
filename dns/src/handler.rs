//! The request handler: one decision per query name, then the cache or the upstream.
//!
//! Order of checks for each query (the first that applies answers it):
//!
//! 1. not a standard query: NOTIMP; not exactly one question: FORMERR; class not IN:
//!    REFUSED; the client already has too many queries in flight: REFUSED.
//! 2. a PTR question for a reverse name (`*.in-addr.arpa`, `*.ip6.arpa`): answered from
//!    the pins, never upstream: the agent gets back the allowed name it resolved, and
//!    reverse names cannot be used as a channel.
//! 3. the gate denies the name: NXDOMAIN, answered here, nothing sent upstream (every
//!    type, TXT included: the exfiltration shape is a long label under a denied zone).
//! 4. types that only serve tunnels, zone enumeration or ECH, for allowed names:
//!    * AXFR, IXFR: REFUSED, the standard answer to a transfer that is not permitted;
//!    * ANY, NULL, HTTPS, SVCB: NOERROR with no records (NODATA). NODATA, not REFUSED,
//!      because it is what a zone without such records answers: clients fall back to
//!      A/AAAA at once, whereas REFUSED makes stub resolvers retry other servers or fail
//!      the whole lookup. HTTPS/SVCB would hand out ECH keys, which hide the SNI the
//!      gateway decides on; NULL is the classic tunnel record; ANY is deprecated (RFC 8482);
//!    * any other type not listed below: NODATA as well.
//! 5. A, AAAA, CNAME, MX, SRV, TXT, PTR for allowed names: from the cache, else from the
//!    upstream with the CNAME chain checked link by link ([`crate::chain`]); the
//!    upstream's rcode is kept; addresses in the answer are pinned for every name of the
//!    chain ([`crate::pins`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Message, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use crate::cache::TtlClamp;
use crate::chain::name_key;
use crate::forward::EDNS_PAYLOAD;
use crate::gate::{QueryEntry, QueryLog};
use crate::limit::ClientLimiter;
use crate::pins::Pins;
use crate::resolver::Resolver;

/// Settings of the DNS server.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Upstream resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Deadline for one upstream question, all servers and retries included.
    pub upstream_deadline: Duration,
    /// Most answers cached.
    pub cache_entries: usize,
    /// TTL bounds for cached answers.
    pub ttl: TtlClamp,
    /// Negative-caching TTL when the upstream gives none (before clamping).
    pub negative_ttl: u32,
    /// Most queries in flight per client address.
    pub per_client_in_flight: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            upstreams: Vec::new(),
            upstream_deadline: Duration::from_secs(5),
            cache_entries: 10_000,
            ttl: TtlClamp { min: 5, max: 3600 },
            negative_ttl: 30,
            per_client_in_flight: 256,
        }
    }
}

/// The answer to one question, before it goes on the wire.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// Answer records.
    pub records: Vec<Record>,
    /// Whether the gate allowed the name (`false` for refusals before the gate, too).
    pub allowed: bool,
    /// Stable reason code for the audit.
    pub reason: &'static str,
    /// Time spent on the upstream, if it was asked.
    pub upstream: Option<Duration>,
    /// Whether the answer came from the cache.
    pub cached: bool,
}

impl Answer {
    fn local(rcode: ResponseCode, allowed: bool, reason: &'static str) -> Answer {
        Answer {
            rcode,
            records: Vec::new(),
            allowed,
            reason,
            upstream: None,
            cached: false,
        }
    }
}

/// The allowlist DNS handler. Shared by every listener of one server.
pub struct AllowlistHandler {
    resolver: Arc<Resolver>,
    log: Arc<dyn QueryLog>,
    pins: Arc<Pins>,
    limiter: ClientLimiter,
}

impl AllowlistHandler {
    /// A handler answering through `resolver` (whose gate decides every name), logging to
    /// `log` and pinning into `pins`.
    pub fn new(
        config: &DnsConfig,
        resolver: Arc<Resolver>,
        log: Arc<dyn QueryLog>,
        pins: Arc<Pins>,
    ) -> AllowlistHandler {
        AllowlistHandler {
            resolver,
            log,
            pins,
            limiter: ClientLimiter::new(config.per_client_in_flight),
        }
    }

    /// The pins this handler records.
    pub fn pins(&self) -> &Arc<Pins> {
        &self.pins
    }

    /// Answer one question (steps 2 to 5 of the module documentation).
    pub async fn answer(&self, query: &LowerQuery) -> Answer {
        let qtype = query.query_type();
        let name: &Name = query.original().name();
        if qtype == RecordType::PTR
            && let Ok(net) = name.parse_arpa_name()
        {
            return self.ptr_from_pins(name, net.addr(), net.prefix_len() == net.max_prefix_len());
        }
        let key = name_key(name);
        let decision = self.resolver.gate().check(&key);
        if !decision.allowed {
            return Answer::local(ResponseCode::NXDomain, false, decision.reason);
        }
        match qtype {
            RecordType::AXFR | RecordType::IXFR => {
                Answer::local(ResponseCode::Refused, true, "zone_transfer_refused")
            }
            RecordType::ANY | RecordType::NULL | RecordType::HTTPS | RecordType::SVCB => {
                Answer::local(ResponseCode::NoError, true, "qtype_suppressed")
            }
            RecordType::A
            | RecordType::AAAA
            | RecordType::CNAME
            | RecordType::MX
            | RecordType::SRV
            | RecordType::TXT
            | RecordType::PTR => {
                let resolution = self.resolver.resolve(name, qtype, decision.reason).await;
                self.pin(&key, &resolution.chain, &resolution.records);
                Answer {
                    rcode: resolution.rcode,
                    records: resolution.records,
                    allowed: true,
                    reason: resolution.reason,
                    upstream: resolution.upstream,
                    cached: resolution.cached,
                }
            }
            _ => Answer::local(ResponseCode::NoError, true, "qtype_not_served"),
        }
    }

    /// PTR for an address: the allowed names it is pinned for, or NXDOMAIN.
    fn ptr_from_pins(&self, name: &Name, ip: IpAddr, whole_address: bool) -> Answer {
        let names: Vec<String> = if whole_address {
            self.pins
                .names_for(ip)
                .into_iter()
                .filter(|n| self.resolver.gate().check(n).allowed)
                .collect()
        } else {
            Vec::new()
        };
        if names.is_empty() {
            return Answer::local(ResponseCode::NXDomain, false, "ptr_not_pinned");
        }
        let records = names
            .iter()
            .filter_map(|n| Name::from_ascii(format!("{n}.")).ok())
            .map(|target| Record::from_rdata(name.clone(), 60, RData::PTR(PTR(target))))
            .collect();
        Answer {
            records,
            ..Answer::local(ResponseCode::NoError, true, "ptr_from_pins")
        }
    }

    /// Pin every address in `records` for the query name and every name of its chain.
    fn pin(&self, key: &str, chain: &[String], records: &[Record]) {
        let mut names: Option<Vec<String>> = None;
        for record in records {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            let names = names.get_or_insert_with(|| {
                std::iter::once(key.to_owned())
                    .chain(chain.iter().cloned())
                    .collect()
            });
            self.pins.pin(names, ip, record.ttl);
        }
    }
}

/// The question section for the response, encoded afresh from the parsed question.
/// hickory echoes the request's raw question bytes, which turn into a malformed response
/// when the client compressed its question (pointers into its own message; found by the
/// `dns_query` fuzz target).
fn reencoded_question(request: &Request) -> Option<Queries> {
    let mut bytes = Vec::new();
    // One encoder per question: a name is never compressed against another, so no offset
    // depends on where these bytes end up.
    for query in request.queries.queries() {
        let mut one = Vec::new();
        query.emit(&mut BinEncoder::new(&mut one)).ok()?;
        bytes.extend_from_slice(&one);
    }
    Queries::read(&mut BinDecoder::new(&bytes), request.queries.len()).ok()
}

/// The EDNS record of a response: our payload limit, never above what the client offered.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|theirs| {
        let mut ours = Edns::new();
        ours.set_max_payload(theirs.max_payload().clamp(512, EDNS_PAYLOAD));
        ours
    })
}

/// Whether a response with these answers fits the client's UDP limit: 512 bytes, or
/// the EDNS payload negotiated in [`response_edns`].
fn fits_udp(request: &Request, records: &[Record], edns: Option<&Edns>) -> bool {
    if records.is_empty() {
        return true;
    }
    let limit = usize::from(edns.map_or(512, Edns::max_payload));
    // Most answers are a few small records: an upper bound on their size settles it
    // without encoding the message twice.
    let questions: usize = request
        .queries
        .queries()
        .iter()
        .map(|q| q.original().name().len() + 1 + 4)
        .sum();
    let upper_bound = records
        .iter()
        .map(record_upper_bound)
        .fold(12 + questions + 11, usize::saturating_add);
    if upper_bound <= limit {
        return true;
    }
    let mut message = Message::response(request.metadata.id, OpCode::Query);
    message.add_queries(
        request
            .queries
            .queries()
            .iter()
            .map(|q| q.original().clone()),
    );
    message.add_answers(records.iter().cloned());
    if let Some(edns) = edns {
        message.set_edns(edns.clone());
    }
    message.to_vec().is_ok_and(|bytes| bytes.len() <= limit)
}

/// The most bytes `record` can take on the wire (no name compression assumed), or
/// `usize::MAX` for data whose size is not bounded cheaply (the message is then encoded).
fn record_upper_bound(record: &Record) -> usize {
    let name = |n: &Name| n.len() + 1;
    let data = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::CNAME(target) => name(&target.0),
        RData::PTR(target) => name(&target.0),
        RData::MX(mx) => 2 + name(&mx.exchange),
        RData::SRV(srv) => 6 + name(&srv.target),
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        _ => return usize::MAX,
    };
    (name(&record.name) + 10).saturating_add(data)
}

fn transport(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
        _ => "other",
    }
}

#[async_trait::async_trait]
impl RequestHandler for AllowlistHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let client = request.src();
        let queries = request.queries.queries();
        let question = match queries {
            [only] => Some(only),
            _ => None,
        };
        let answer = if request.metadata.op_code != OpCode::Query {
            Answer::local(ResponseCode::NotImp, false, "not_a_query")
        } else if question.is_none() {
            Answer::local(ResponseCode::FormErr, false, "not_one_question")
        } else if question.is_some_and(|q| q.query_class() != DNSClass::IN) {
            Answer::local(ResponseCode::Refused, false, "class_not_in")
        } else if let Some(query) = question {
            match self.limiter.try_acquire(client.ip()) {
                Some(_slot) => self.answer(query).await,
                None => Answer::local(ResponseCode::Refused, false, "client_busy"),
            }
        } else {
            Answer::local(ResponseCode::FormErr, false, "not_one_question")
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.recursion_available = true;
        metadata.authoritative = false;
        let edns = response_edns(request);
        // Over UDP, an answer that does not fit is sent empty with TC set (RFC 2181
        // section 9), so the OPT record still fits and the client retries over TCP.
        let fits = request.protocol() != Protocol::Udp
            || fits_udp(request, &answer.records, edns.as_ref());
        metadata.truncation = !fits;
        let records: &[Record] = if fits { &answer.records } else { &[] };
        let echoed = reencoded_question(request);
        let mut builder = match &echoed {
            Some(queries) => MessageResponseBuilder::new(queries, None),
            None => MessageResponseBuilder::from_message_request(request),
        };
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(metadata, records.iter(), [], [], []);
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(%client, error = %e, "cannot send a DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        };
        self.log.record(&QueryEntry {
            client,
            transport: transport(request.protocol()),
            name: question
                .map(|q| name_key(q.original().name()))
                .unwrap_or_default(),
            qtype: question.map(LowerQuery::query_type),
            allowed: answer.allowed,
            reason: answer.reason,
            rcode: answer.rcode,
            answers: answer.records.len(),
            upstream: answer.upstream,
            cached: answer.cached,
            duration: started.elapsed(),
        });
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SRV, TXT};
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    use std::str::FromStr;

    #[test]
    fn the_size_bound_is_never_below_the_encoded_size() {
        let name = |s: &str| Name::from_str(s).unwrap();
        let owner = name("www.allowed.test.");
        let records = [
            RData::A(A::new(198, 51, 100, 10)),
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            RData::CNAME(CNAME(name("cdn.allowed.test."))),
            RData::PTR(PTR(name("allowed.test"))),
            RData::MX(MX::new(10, name("mx.allowed.test."))),
            RData::SRV(SRV::new(1, 2, 443, name("svc.allowed.test."))),
            RData::TXT(TXT::new(vec!["a".repeat(200), String::new(), "b".into()])),
        ];
        for data in records {
            let record = Record::from_rdata(owner.clone(), 60, data);
            let mut bytes = Vec::new();
            record.emit(&mut BinEncoder::new(&mut bytes)).unwrap();
            assert!(
                record_upper_bound(&record) >= bytes.len(),
                "{record:?}: bound {} < {}",
                record_upper_bound(&record),
                bytes.len()
            );
        }
    }
}
