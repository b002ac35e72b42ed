//! The wan's authoritative DNS server for the lab's `*.test` names, and a small client.
//!
//! The server answers over UDP and TCP from an in-memory zone that tests can extend
//! ([`DnsServer::add_a`] and friends). It counts every message it receives (in total and
//! per query name) and keeps a bounded log, so a test can assert that a name the gateway
//! denied never reached the simulated internet. Messages are parsed and built with
//! hickory-proto; malformed input gets FORMERR (or is dropped if it has no header) and
//! never panics the server.
//!
//! Built-in zone (see [`crate::addr`] for the addresses):
//!
//! | name | records |
//! |---|---|
//! | `allowed.test` | A [`ORIGIN_V4`], AAAA [`ORIGIN_V6`] |
//! | `other.allowed.test` | A [`OTHER_ORIGIN_V4`], AAAA [`OTHER_ORIGIN_V6`] |
//! | `txt.allowed.test` | TXT `bottleneck-lab=txt` |
//! | `denied.test` | A [`ORIGIN_V4`], AAAA [`ORIGIN_V6`] (so only the gateway can block it) |
//! | `private.test` | A [`PRIVATE_V4`], AAAA [`PRIVATE_V6`] (SSRF bait; never dialed) |
//! | `rebind.test` | A alternating [`ORIGIN_V4`] / 127.0.0.1, AAAA [`ORIGIN_V6`] / ::1, TTL 1 |
//! | `cname.test` | CNAME `allowed.test` |
//! | `http.test` | A [`HTTP_ORIGIN_V4`], AAAA [`HTTP_ORIGIN_V6`] |
//! | `echo.test` | A [`ECHO_V4`], AAAA [`ECHO_V6`] |
//! | `ns.test` | A [`DNS_V4`], AAAA [`DNS_V6`] |
//! | `wrongcert.test`, `expired.test`, `selfsigned.test` | A [`ORIGIN_V4`], AAAA [`ORIGIN_V6`]; the origin's certificate is wrong on purpose |
//!
//! Every other name is NXDOMAIN.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

pub use hickory_proto::op::ResponseCode;
pub use hickory_proto::rr::RecordType;

use crate::addr::*;
use crate::error::{LabError, Result};

/// TTL of ordinary zone records.
pub const DEFAULT_TTL: u32 = 60;
/// TTL of alternating (rebinding) records.
pub const REBIND_TTL: u32 = 1;
/// How many recent queries [`DnsServer::log`] keeps.
pub const LOG_LIMIT: usize = 1000;
/// How many distinct names get their own counter (others still count in the total).
const NAME_COUNTER_LIMIT: usize = 4096;
/// Largest UDP payload the server advertises and sends with EDNS.
const EDNS_PAYLOAD: u16 = 1232;
/// Concurrent TCP connections per listener.
const TCP_CONNECTIONS: usize = 128;
/// A TCP client idle this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The transport a query arrived on or is sent over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// DNS over UDP.
    Udp,
    /// DNS over TCP (two-byte length prefix).
    Tcp,
}

/// One received query, as logged by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryRecord {
    /// The query name, lowercased, without the trailing dot (empty if unparseable).
    pub name: String,
    /// The query type (`None` if the message could not be parsed).
    pub qtype: Option<RecordType>,
    /// UDP or TCP.
    pub transport: Transport,
    /// Who sent it.
    pub client: SocketAddr,
    /// The response code sent back (`None` if no answer was sent).
    pub rcode: Option<ResponseCode>,
}

/// Data for one name.
#[derive(Clone, Debug)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Txt(String),
}

/// A name whose A/AAAA answers alternate between two addresses on successive queries.
#[derive(Clone, Debug)]
struct Alternating {
    v4: [Ipv4Addr; 2],
    v6: [Ipv6Addr; 2],
    served_v4: u64,
    served_v6: u64,
}

#[derive(Debug, Default)]
struct Zone {
    names: HashMap<String, Vec<Data>>,
    alternating: HashMap<String, Alternating>,
}

#[derive(Debug, Default)]
struct Stats {
    per_name: HashMap<String, u64>,
    log: VecDeque<QueryRecord>,
}

#[derive(Debug, Default)]
struct State {
    zone: Mutex<Zone>,
    stats: Mutex<Stats>,
    total: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lowercase, no trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn check_name(name: &str) -> Result<String> {
    let n = normalize(name);
    Name::from_ascii(&n)
        .map_err(|e| LabError::Invalid(format!("DNS name {name:?}: {e}")))
        .map(|_| n)
}

/// Handle on the lab's DNS server: its zone and its counters. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct DnsServer {
    state: Arc<State>,
}

impl DnsServer {
    /// A server with the built-in zone (see the module docs).
    pub fn with_default_zone() -> Self {
        let server = DnsServer::default();
        {
            let mut zone = lock(&server.state.zone);
            let mut both = |name: &str, v4: Ipv4Addr, v6: Ipv6Addr| {
                zone.names
                    .insert(name.to_owned(), vec![Data::A(v4), Data::Aaaa(v6)]);
            };
            both("allowed.test", ORIGIN_V4, ORIGIN_V6);
            both("other.allowed.test", OTHER_ORIGIN_V4, OTHER_ORIGIN_V6);
            both("denied.test", ORIGIN_V4, ORIGIN_V6);
            both("private.test", PRIVATE_V4, PRIVATE_V6);
            both("http.test", HTTP_ORIGIN_V4, HTTP_ORIGIN_V6);
            both("echo.test", ECHO_V4, ECHO_V6);
            both("ns.test", DNS_V4, DNS_V6);
            // Origins whose certificate is wrong on purpose (see `ca::FAULTY_NAMES`).
            for name in ["wrongcert.test", "expired.test", "selfsigned.test"] {
                both(name, ORIGIN_V4, ORIGIN_V6);
            }
            zone.names.insert(
                "txt.allowed.test".to_owned(),
                vec![Data::Txt("bottleneck-lab=txt".to_owned())],
            );
            zone.names.insert(
                "cname.test".to_owned(),
                vec![Data::Cname("allowed.test".to_owned())],
            );
            zone.alternating.insert(
                "rebind.test".to_owned(),
                Alternating {
                    v4: [ORIGIN_V4, Ipv4Addr::LOCALHOST],
                    v6: [ORIGIN_V6, Ipv6Addr::LOCALHOST],
                    served_v4: 0,
                    served_v6: 0,
                },
            );
        }
        server
    }

    fn add(&self, name: &str, data: Data) -> Result<()> {
        let name = check_name(name)?;
        let mut zone = lock(&self.state.zone);
        let entry = zone.names.entry(name).or_default();
        if matches!(data, Data::Cname(_)) {
            entry.clear();
        } else {
            entry.retain(|d| !matches!(d, Data::Cname(_)));
        }
        entry.push(data);
        Ok(())
    }

    /// Adds an A record (names are case-insensitive; a trailing dot is optional).
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) -> Result<()> {
        self.add(name, Data::A(ip))
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) -> Result<()> {
        self.add(name, Data::Aaaa(ip))
    }

    /// Adds an A or AAAA record, whichever `ip` is.
    pub fn add_ip(&self, name: &str, ip: IpAddr) -> Result<()> {
        match ip {
            IpAddr::V4(v4) => self.add_a(name, v4),
            IpAddr::V6(v6) => self.add_aaaa(name, v6),
        }
    }

    /// Makes `name` a CNAME for `target` (replacing its other records).
    pub fn add_cname(&self, name: &str, target: &str) -> Result<()> {
        let target = check_name(target)?;
        self.add(name, Data::Cname(target))
    }

    /// Adds a TXT record with one character-string (at most 255 bytes).
    pub fn add_txt(&self, name: &str, text: &str) -> Result<()> {
        if text.len() > 255 {
            return Err(LabError::Invalid(format!(
                "TXT string of {} bytes (max 255)",
                text.len()
            )));
        }
        self.add(name, Data::Txt(text.to_owned()))
    }

    /// Makes `name` answer A/AAAA queries alternately with `first` and `second` (per
    /// family), TTL [`REBIND_TTL`], like `rebind.test`.
    pub fn add_alternating(
        &self,
        name: &str,
        first: (Ipv4Addr, Ipv6Addr),
        second: (Ipv4Addr, Ipv6Addr),
    ) -> Result<()> {
        let name = check_name(name)?;
        let mut zone = lock(&self.state.zone);
        zone.names.remove(&name);
        zone.alternating.insert(
            name,
            Alternating {
                v4: [first.0, second.0],
                v6: [first.1, second.1],
                served_v4: 0,
                served_v6: 0,
            },
        );
        Ok(())
    }

    /// Removes every record of `name` (it becomes NXDOMAIN).
    pub fn remove(&self, name: &str) {
        let name = normalize(name);
        let mut zone = lock(&self.state.zone);
        zone.names.remove(&name);
        zone.alternating.remove(&name);
    }

    /// Messages received so far (including malformed ones).
    pub fn queries(&self) -> u64 {
        self.state.total.load(Ordering::Relaxed)
    }

    /// Queries received for `name` (case-insensitive, trailing dot optional).
    pub fn queries_for(&self, name: &str) -> u64 {
        lock(&self.state.stats)
            .per_name
            .get(&normalize(name))
            .copied()
            .unwrap_or(0)
    }

    /// The most recent queries (at most [`LOG_LIMIT`]), oldest first.
    pub fn log(&self) -> Vec<QueryRecord> {
        lock(&self.state.stats).log.iter().cloned().collect()
    }

    /// Clears the counters and the log (the zone is kept).
    pub fn reset_counters(&self) {
        let mut stats = lock(&self.state.stats);
        stats.per_name.clear();
        stats.log.clear();
        self.state.total.store(0, Ordering::Relaxed);
    }

    fn record(&self, record: QueryRecord) {
        let mut stats = lock(&self.state.stats);
        if !record.name.is_empty() {
            if let Some(n) = stats.per_name.get_mut(&record.name) {
                *n += 1;
            } else if stats.per_name.len() < NAME_COUNTER_LIMIT {
                stats.per_name.insert(record.name.clone(), 1);
            }
        }
        if stats.log.len() >= LOG_LIMIT {
            stats.log.pop_front();
        }
        stats.log.push_back(record);
    }

    /// Answers one wire-format message; `None` means "send nothing".
    pub(crate) fn handle(
        &self,
        wire: &[u8],
        transport: Transport,
        client: SocketAddr,
    ) -> Option<Vec<u8>> {
        self.state.total.fetch_add(1, Ordering::Relaxed);
        let mut log = QueryRecord {
            name: String::new(),
            qtype: None,
            transport,
            client,
            rcode: None,
        };
        // The largest UDP response the client accepts: 512 bytes, or its EDNS payload
        // size capped at what this server advertises.
        let mut udp_limit = 512u16;
        let response = match Message::from_vec(wire) {
            Ok(request) if request.metadata.message_type == MessageType::Query => {
                if let Some(q) = request.queries.first() {
                    log.name = normalize(&q.name().to_ascii());
                    log.qtype = Some(q.query_type());
                }
                udp_limit = request.max_payload().min(EDNS_PAYLOAD);
                Some(self.answer(&request))
            }
            // Responses are never answered (no reflection loops).
            Ok(_) => None,
            // Unparseable: FORMERR if there is at least an id to answer to.
            Err(_) if wire.len() >= 12 => Some(Message::error_msg(
                u16::from_be_bytes([wire[0], wire[1]]),
                OpCode::Query,
                ResponseCode::FormErr,
            )),
            Err(_) => None,
        };
        let bytes = response.and_then(|response| {
            log.rcode = Some(response.metadata.response_code);
            let max = match transport {
                Transport::Udp => usize::from(udp_limit),
                Transport::Tcp => usize::from(u16::MAX),
            };
            match response.to_vec() {
                Ok(bytes) if bytes.len() <= max => Some(bytes),
                Ok(_) => response.truncate().to_vec().ok(),
                Err(_) => {
                    Message::error_msg(response.metadata.id, OpCode::Query, ResponseCode::ServFail)
                        .to_vec()
                        .ok()
                }
            }
        });
        self.record(log);
        bytes
    }

    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.authoritative = true;
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            response.set_edns(edns);
        }
        response.add_queries(request.queries.iter().cloned());
        let code = if request.metadata.op_code != OpCode::Query {
            ResponseCode::NotImp
        } else if request.queries.len() != 1 {
            ResponseCode::FormErr
        } else {
            self.resolve(&request.queries[0], &mut response)
        };
        response.metadata.response_code = code;
        response
    }

    /// Fills the answer (and, for negative answers, the authority) section.
    fn resolve(&self, query: &Query, response: &mut Message) -> ResponseCode {
        if query.query_class() != DNSClass::IN {
            return ResponseCode::Refused;
        }
        let qtype = query.query_type();
        let mut owner = query.name().clone();
        let mut current = normalize(&owner.to_ascii());
        let mut zone = lock(&self.state.zone);
        // Follow CNAMEs inside the zone, at most a few hops (loops end here too).
        for _ in 0..8 {
            if let Some(alt) = zone.alternating.get_mut(&current) {
                let (want_a, want_aaaa) = wants_addresses(qtype);
                if want_a {
                    let ip = alt.v4[(alt.served_v4 % 2) as usize];
                    alt.served_v4 += 1;
                    response.add_answer(Record::from_rdata(
                        owner.clone(),
                        REBIND_TTL,
                        RData::A(A(ip)),
                    ));
                }
                if want_aaaa {
                    let ip = alt.v6[(alt.served_v6 % 2) as usize];
                    alt.served_v6 += 1;
                    response.add_answer(Record::from_rdata(
                        owner.clone(),
                        REBIND_TTL,
                        RData::AAAA(AAAA(ip)),
                    ));
                }
                return self.finish(response, &current, true);
            }
            let Some(records) = zone.names.get(&current) else {
                return self.finish(response, &current, false);
            };
            if qtype != RecordType::CNAME
                && let Some(Data::Cname(target)) =
                    records.iter().find(|d| matches!(d, Data::Cname(_)))
            {
                let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
                    return ResponseCode::ServFail;
                };
                response.add_answer(Record::from_rdata(
                    owner,
                    DEFAULT_TTL,
                    RData::CNAME(CNAME(target_name.clone())),
                ));
                owner = target_name;
                current = target.clone();
                continue;
            }
            for data in records {
                let rdata = match (data, qtype) {
                    (Data::A(ip), RecordType::A | RecordType::ANY) => RData::A(A(*ip)),
                    (Data::Aaaa(ip), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*ip)),
                    (Data::Txt(t), RecordType::TXT | RecordType::ANY) => {
                        RData::TXT(TXT::new(vec![t.clone()]))
                    }
                    (Data::Cname(t), RecordType::CNAME | RecordType::ANY) => {
                        match Name::from_ascii(format!("{t}.")) {
                            Ok(n) => RData::CNAME(CNAME(n)),
                            Err(_) => continue,
                        }
                    }
                    _ => continue,
                };
                response.add_answer(Record::from_rdata(owner.clone(), DEFAULT_TTL, rdata));
            }
            return self.finish(response, &current, true);
        }
        ResponseCode::ServFail
    }

    /// NOERROR if the final name exists, else NXDOMAIN; negative answers under `.test`
    /// carry the zone's SOA so resolvers can cache them.
    fn finish(&self, response: &mut Message, name: &str, exists: bool) -> ResponseCode {
        let negative = !exists
            || response
                .answers
                .iter()
                .all(|r| r.record_type() == RecordType::CNAME);
        if negative
            && (name == "test" || name.ends_with(".test"))
            && let Some(soa) = soa_record()
        {
            response.add_authority(soa);
        }
        if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        }
    }
}

fn wants_addresses(qtype: RecordType) -> (bool, bool) {
    match qtype {
        RecordType::A => (true, false),
        RecordType::AAAA => (false, true),
        RecordType::ANY => (true, true),
        _ => (false, false),
    }
}

fn soa_record() -> Option<Record> {
    let zone = Name::from_ascii("test.").ok()?;
    let soa = SOA::new(
        Name::from_ascii("ns.test.").ok()?,
        Name::from_ascii("hostmaster.test.").ok()?,
        1,
        3600,
        600,
        86400,
        DEFAULT_TTL,
    );
    Some(Record::from_rdata(zone, DEFAULT_TTL, RData::SOA(soa)))
}

/// Serves UDP queries on `socket` until the runtime shuts down (the lab runs it in the wan
/// namespace; other crates run it on loopback as a fake upstream).
pub async fn serve_udp(server: DnsServer, socket: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        if let Some(reply) = server.handle(&buf[..len], Transport::Udp, peer) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// Serves TCP queries on `listener` until the runtime shuts down.
pub async fn serve_tcp(server: DnsServer, listener: tokio::net::TcpListener) {
    let limit = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_tcp_connection(server, stream, peer).await;
        });
    }
}

async fn serve_tcp_connection(
    server: DnsServer,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 {
            return Ok(());
        }
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..len])).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(reply) = server.handle(&buf[..len], Transport::Tcp, peer) else {
            continue;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        tokio::time::timeout(TCP_IDLE, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
}

/// A parsed DNS response, with helpers for the common assertions.
#[derive(Clone, Debug)]
pub struct DnsReply {
    /// The whole message.
    pub message: Message,
}

impl DnsReply {
    /// The response code.
    pub fn rcode(&self) -> ResponseCode {
        self.message.metadata.response_code
    }

    /// True if the TC (truncated) bit is set.
    pub fn truncated(&self) -> bool {
        self.message.metadata.truncation
    }

    /// Addresses in A and AAAA answers, in order.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    /// CNAME targets in the answers (without the trailing dot), in order.
    pub fn cnames(&self) -> Vec<String> {
        self.message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some(normalize(&c.0.to_ascii())),
                _ => None,
            })
            .collect()
    }

    /// TXT answers, each record's strings concatenated (lossy UTF-8).
    pub fn txts(&self) -> Vec<String> {
        self.message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The smallest TTL among the answers.
    pub fn min_ttl(&self) -> Option<u32> {
        self.message.answers.iter().map(|r| r.ttl).min()
    }
}

/// Sends one query for `name`/`rtype` to `server` from the calling thread's network
/// namespace and waits at most `timeout` for the matching response. Use
/// [`crate::Lab::dns_query`] to send it from inside a lab namespace.
pub fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    transport: Transport,
    timeout: Duration,
) -> Result<DnsReply> {
    let context = format!("query {name} {rtype} via {server}/{transport:?}");
    let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| LabError::dns(&context, e))?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname, rtype));
    let id = message.metadata.id;
    let wire = message.to_vec().map_err(|e| LabError::dns(&context, e))?;
    let io = |what: &str, e: std::io::Error| LabError::dns(&context, format!("{what}: {e}"));
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let reply = match transport {
        Transport::Udp => {
            let local: SocketAddr = match server {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(local).map_err(|e| io("bind", e))?;
            socket.connect(server).map_err(|e| io("connect", e))?;
            socket.send(&wire).map_err(|e| io("send", e))?;
            let mut buf = vec![0u8; 65535];
            loop {
                if Instant::now() >= deadline {
                    return Err(LabError::Timeout {
                        what: context,
                        after: timeout,
                    });
                }
                socket
                    .set_read_timeout(Some(left()))
                    .map_err(|e| io("set timeout", e))?;
                match socket.recv(&mut buf) {
                    Ok(n) => match Message::from_vec(&buf[..n]) {
                        Ok(m) if m.metadata.id == id => break m,
                        _ => continue,
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(io("receive", e)),
                }
            }
        }
        Transport::Tcp => {
            use std::io::{Read, Write};
            let mut stream =
                TcpStream::connect_timeout(&server, left()).map_err(|e| io("connect", e))?;
            stream
                .set_read_timeout(Some(left()))
                .map_err(|e| io("set timeout", e))?;
            stream
                .set_write_timeout(Some(left()))
                .map_err(|e| io("set timeout", e))?;
            let len = u16::try_from(wire.len()).map_err(|e| LabError::dns(&context, e))?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&wire);
            stream.write_all(&framed).map_err(|e| io("send", e))?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).map_err(|e| io("receive", e))?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).map_err(|e| io("receive", e))?;
            let m = Message::from_vec(&buf).map_err(|e| LabError::dns(&context, e))?;
            if m.metadata.id != id {
                return Err(LabError::dns(&context, "response id does not match"));
            }
            m
        }
    };
    Ok(DnsReply { message: reply })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ask(server: &DnsServer, name: &str, rtype: RecordType) -> DnsReply {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii(format!("{name}.")).unwrap(),
            rtype,
        ));
        let wire = m.to_vec().unwrap();
        let client: SocketAddr = (Ipv4Addr::LOCALHOST, 1).into();
        let reply = server.handle(&wire, Transport::Udp, client).unwrap();
        DnsReply {
            message: Message::from_vec(&reply).unwrap(),
        }
    }

    #[test]
    fn zone_answers_and_counts() {
        let s = DnsServer::with_default_zone();
        let r = ask(&s, "Allowed.Test", RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NoError);
        assert_eq!(r.ips(), vec![IpAddr::V4(ORIGIN_V4)]);
        let r = ask(&s, "cname.test", RecordType::AAAA);
        assert_eq!(r.cnames(), vec!["allowed.test".to_owned()]);
        assert_eq!(r.ips(), vec![IpAddr::V6(ORIGIN_V6)]);
        let r = ask(&s, "txt.allowed.test", RecordType::TXT);
        assert_eq!(r.txts(), vec!["bottleneck-lab=txt".to_owned()]);
        let r = ask(&s, "nope.test", RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NXDomain);
        assert_eq!(r.message.authorities.len(), 1);
        let r = ask(&s, "allowed.test", RecordType::MX);
        assert_eq!(r.rcode(), ResponseCode::NoError);
        assert!(r.message.answers.is_empty());
        assert_eq!(s.queries(), 5);
        assert_eq!(s.queries_for("allowed.test."), 2);
        assert_eq!(s.queries_for("nope.test"), 1);
    }

    #[test]
    fn rebind_alternates_per_family() {
        let s = DnsServer::with_default_zone();
        let got: Vec<_> = (0..4)
            .map(|_| ask(&s, "rebind.test", RecordType::A).ips())
            .collect();
        let origin = vec![IpAddr::V4(ORIGIN_V4)];
        let local = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        assert_eq!(got, vec![origin.clone(), local.clone(), origin, local]);
        assert_eq!(
            ask(&s, "rebind.test", RecordType::A).min_ttl(),
            Some(REBIND_TTL)
        );
    }

    #[test]
    fn garbage_gets_formerr_or_silence() {
        let s = DnsServer::with_default_zone();
        let client: SocketAddr = (Ipv4Addr::LOCALHOST, 1).into();
        assert_eq!(s.handle(&[1, 2, 3], Transport::Udp, client), None);
        let reply = s.handle(&[0xab; 40], Transport::Udp, client);
        let reply = reply.and_then(|r| Message::from_vec(&r).ok());
        assert!(
            matches!(&reply, Some(m) if m.metadata.response_code == ResponseCode::FormErr
                && m.metadata.id == 0xabab),
            "{reply:?}"
        );
        assert_eq!(s.queries(), 2);
    }

    #[test]
    fn added_records_are_served() {
        let s = DnsServer::with_default_zone();
        assert!(s.add_a("new.test", Ipv4Addr::new(198, 51, 100, 99)).is_ok());
        assert_eq!(
            ask(&s, "NEW.test", RecordType::A).ips(),
            vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 99))]
        );
        s.remove("new.test");
        assert_eq!(
            ask(&s, "new.test", RecordType::A).rcode(),
            ResponseCode::NXDomain
        );
        assert!(
            s.add_a("bad name with spaces..", Ipv4Addr::LOCALHOST)
                .is_err()
        );
    }
}
