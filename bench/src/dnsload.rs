//! A DNS load generator: one UDP socket, many queries in flight, answers matched by id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use crate::error::{BenchError, Result};
use crate::load::Timing;

/// A query unanswered this long is counted lost and its id reused.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The outcome of a DNS flood.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsResult {
    /// The name asked (type A).
    pub name: String,
    /// Queries in flight at once.
    pub window: usize,
    /// Answers received in the measured window.
    pub answered: u64,
    /// Queries that got no answer within [`QUERY_TIMEOUT`].
    pub lost: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Answers per second.
    pub per_second: f64,
    /// Answers with rcode NOERROR and at least one record.
    pub with_records: u64,
    /// Answers with rcode NXDOMAIN or REFUSED.
    pub denied: u64,
    /// Queries that reached the lab's upstream DNS server during the flood.
    pub upstream_queries: u64,
}

/// A DNS query for `name`, type A, class IN, recursion desired.
pub fn encode_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The id, rcode and answer count of a DNS message, if it is long enough to be one.
pub fn decode_answer(msg: &[u8]) -> Option<(u16, u8, u16)> {
    if msg.len() < 12 {
        return None;
    }
    Some((
        u16::from_be_bytes([msg[0], msg[1]]),
        msg[3] & 0x0f,
        u16::from_be_bytes([msg[6], msg[7]]),
    ))
}

/// Floods `server` with A queries for `name`, `window` in flight; `upstream` reads the
/// upstream server's query counter (before and after the measured window).
pub async fn flood(
    server: SocketAddr,
    name: &str,
    window: usize,
    timing: Timing,
    upstream: impl Fn() -> u64,
) -> Result<DnsResult> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| BenchError::Http("bind address".into()))?;
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| BenchError::io("binding the DNS client socket", e))?;
    socket
        .connect(server)
        .await
        .map_err(|e| BenchError::io(format!("connecting to {server}"), e))?;
    let window = window.clamp(1, 60_000);
    let mut in_flight: HashMap<u16, Instant> = HashMap::with_capacity(window);
    let mut next_id: u16 = 1;
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let from = start + timing.warmup;
    let end = from + timing.measure;
    let mut upstream_from = None;
    let (mut answered, mut lost, mut with_records, mut denied) = (0u64, 0u64, 0u64, 0u64);
    let mut last_sweep = Instant::now();
    while Instant::now() < end {
        let now = Instant::now();
        let measuring = now >= from;
        if measuring && upstream_from.is_none() {
            upstream_from = Some(upstream());
        }
        while in_flight.len() < window {
            while in_flight.contains_key(&next_id) {
                next_id = next_id.wrapping_add(1);
            }
            let q = encode_query(next_id, name);
            socket
                .send(&q)
                .await
                .map_err(|e| BenchError::io("sending a DNS query", e))?;
            in_flight.insert(next_id, Instant::now());
            next_id = next_id.wrapping_add(1);
        }
        match tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if let Some((id, rcode, ancount)) = decode_answer(&buf[..n])
                    && in_flight.remove(&id).is_some()
                    && Instant::now() >= from
                    && Instant::now() <= end
                {
                    answered += 1;
                    match rcode {
                        0 if ancount > 0 => with_records += 1,
                        3 | 5 => denied += 1,
                        _ => {}
                    }
                }
            }
            Ok(Err(e)) => return Err(BenchError::io("receiving a DNS answer", e)),
            Err(_) => {}
        }
        if last_sweep.elapsed() > Duration::from_millis(100) {
            last_sweep = Instant::now();
            let before = in_flight.len();
            in_flight.retain(|_, sent| sent.elapsed() < QUERY_TIMEOUT);
            if Instant::now() >= from {
                lost += (before - in_flight.len()) as u64;
            }
        }
    }
    let upstream_queries = upstream().saturating_sub(upstream_from.unwrap_or(0));
    let seconds = timing.measure.as_secs_f64();
    Ok(DnsResult {
        name: name.to_owned(),
        window,
        answered,
        lost,
        seconds,
        per_second: answered as f64 / seconds,
        with_records,
        denied,
        upstream_queries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_has_the_expected_shape() {
        let q = encode_query(0x1234, "allowed.test");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(q[12], 7);
        assert_eq!(&q[13..20], b"allowed");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
        let mut answer = q.clone();
        answer[3] = 0x83;
        answer[7] = 1;
        assert_eq!(decode_answer(&answer), Some((0x1234, 3, 1)));
        assert_eq!(decode_answer(&[0; 5]), None);
    }
}
