//! The audit stream: one JSON line per decision (tls, http, tcp, proxy, dns), stable field names,
//! never a secret. Operational logs go through `tracing`; this stream is for people and
//! tools that need to know what the agent tried and what the gateway did.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// One decision. Field names are a stable interface: add fields, never rename them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    /// `tls`, `http`, `https`, `tcp`, `proxy` or `dns`.
    pub kind: &'static str,
    /// The agent's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<SocketAddr>,
    /// Where the agent was connecting to before redirection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<SocketAddr>,
    /// The ClientHello's server name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The host the decision was about (normalised when valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path with the query elided (queries carry tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The policy's stable reason code, or a gateway code such as `authority_mismatch`.
    pub reason: &'static str,
    /// The route that governed the decision (its host pattern and line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// HTTP status returned to the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes returned to the agent.
    pub bytes_down: u64,
    /// Time from request (or connection) start to the end of the response, in ms.
    pub duration_ms: u64,
    /// The vetted upstream address dialled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    /// DNS: the query type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    /// DNS: the response code sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// DNS: how many answer records were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<usize>,
    /// DNS: whether the answer came from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// DNS: time spent waiting for the upstream resolver, in ms (absent: not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// `client_connection_limit`: connections refused since the previous such line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<u64>,
}

/// Where audit lines go. Cheap to clone; lines from concurrent tasks never interleave.
#[derive(Clone)]
pub struct Audit {
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Audit {
    /// Append to `path`, or write to stdout for `-`.
    pub fn open(path: &Path) -> io::Result<Audit> {
        if path == Path::new("-") {
            return Ok(Audit::to_writer(Box::new(io::stdout())));
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit::to_writer(Box::new(file)))
    }

    /// Write to any writer (tests use an in-memory buffer).
    pub fn to_writer(writer: Box<dyn Write + Send>) -> Audit {
        Audit {
            sink: Arc::new(Mutex::new(writer)),
        }
    }

    /// Write one record as one line, timestamped now if `ts` is empty.
    pub fn write(&self, mut record: Record) {
        if record.ts.is_empty() {
            record.ts = now_rfc3339();
        }
        let mut line = match serde_json::to_vec(&record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise an audit record");
                return;
            }
        };
        line.push(b'\n');
        let mut sink = match self.sink.lock() {
            Ok(sink) => sink,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = sink.write_all(&line).and_then(|()| sink.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// The path of a request target without its query string.
pub fn elide_query(target: &str) -> String {
    match target.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => target.to_owned(),
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::from(SystemTime::now());
    let format = time::format_description::well_known::Rfc3339;
    now.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_record_is_one_json_line_with_stable_names() {
        let buffer = Buffer::default();
        let audit = Audit::to_writer(Box::new(buffer.clone()));
        audit.write(Record {
            kind: "https",
            host: Some("a.example".into()),
            path: Some(elide_query("/v1/x?token=secret")),
            decision: "deny",
            reason: "no_match",
            status: Some(403),
            ..Record::default()
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(value["kind"], "https");
        assert_eq!(value["decision"], "deny");
        assert_eq!(value["reason"], "no_match");
        assert_eq!(value["status"], 403);
        assert_eq!(value["path"], "/v1/x?…");
        assert!(!text.contains("secret"));
        assert!(value["ts"].as_str().unwrap().ends_with('Z'));
    }
}
