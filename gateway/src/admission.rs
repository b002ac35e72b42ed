//! Admission: the bounds on agent connections, checked by every listener (transparent
//! TLS and HTTP, explicit proxy, TCP relay) before a byte is read.
//!
//! Two bounds: all connections at once (`--max-connections`; when reached, new connections
//! wait in the kernel's accept queue), and connections at once from one client address
//! (`--max-connections-per-client`; beyond it a connection is closed at once, so one agent
//! opening connections without end cannot starve the others). Slow clients are cut by the
//! listeners' own timeouts, which return their slots.
//!
//! A client hitting its bound is audited without flooding the audit log: one line
//! (`client_connection_limit`, `refused: 1`) at the first refusal, then one line when one
//! of its connections next closes, counting the refusals in between.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::{Audit, Record};

/// The audit reason of a connection refused by the per-client bound.
pub const CLIENT_LIMIT_REASON: &str = "client_connection_limit";

/// The connection bounds shared by every listener.
pub struct Admission {
    global: Arc<Semaphore>,
    /// The global bound, to wait for every slot when draining.
    global_max: usize,
    per_client_max: usize,
    /// Clients with at least one open connection; an entry is removed when its last
    /// connection closes, so the map never holds more than `global_max` entries.
    clients: Mutex<HashMap<IpAddr, ClientSlots>>,
    audit: Audit,
}

#[derive(Default)]
struct ClientSlots {
    open: usize,
    /// The client was refused since its last connection closed (a first line was written).
    limited: bool,
    /// Refusals not yet in an audit line.
    unreported: u64,
}

/// A connection's slots; returned when dropped.
pub struct Admitted {
    _global: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    client: IpAddr,
    kind: &'static str,
}

impl Admission {
    /// Bounds of `global` connections at once, `per_client` of them from one address.
    pub fn new(global: NonZeroUsize, per_client: NonZeroUsize, audit: Audit) -> Arc<Admission> {
        Arc::new(Admission {
            global: Arc::new(Semaphore::new(global.get())),
            global_max: global.get(),
            per_client_max: per_client.get(),
            clients: Mutex::new(HashMap::new()),
            audit,
        })
    }

    /// Accept the next connection within the bounds. `kind` names the listener in audit
    /// lines. `None`: nothing to serve this time (accept failed, or the client is at its
    /// bound and its connection was closed); call again.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
        kind: &'static str,
    ) -> Option<(TcpStream, SocketAddr, Admitted)> {
        let global = self.global.clone().acquire_owned().await.ok()?;
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, kind, "accept failed");
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return None;
            }
        };
        // Nagle plus delayed ACKs would add ~40 ms per exchange (DESIGN.md section 7).
        let _ = stream.set_nodelay(true);
        let admitted = self.admit(client, kind, global)?;
        Some((stream, client, admitted))
    }

    /// Take a per-client slot for a connection holding `global`, or refuse (and audit).
    fn admit(
        self: &Arc<Self>,
        client: SocketAddr,
        kind: &'static str,
        global: OwnedSemaphorePermit,
    ) -> Option<Admitted> {
        // The listeners are dual-stack: an IPv4 client arrives as ::ffff:a.b.c.d.
        let ip = client.ip().to_canonical();
        let first_refusal = {
            let mut clients = self.clients();
            let slots = clients.entry(ip).or_default();
            if slots.open < self.per_client_max {
                slots.open += 1;
                return Some(Admitted {
                    _global: global,
                    admission: self.clone(),
                    client: ip,
                    kind,
                });
            }
            let first = !slots.limited;
            slots.limited = true;
            if !first {
                slots.unreported += 1;
            }
            first
        };
        if first_refusal {
            tracing::warn!(%client, limit = self.per_client_max, kind, "client at its connection bound; refusing connections");
            self.audit_refusals(kind, ip, 1);
        }
        None
    }

    /// Connections open now from `client`.
    pub fn open_from(&self, client: IpAddr) -> usize {
        self.clients().get(&client).map_or(0, |slots| slots.open)
    }

    /// Wait (at most `timeout`) until every admitted connection has closed.
    pub async fn drain(&self, timeout: Duration) {
        let all = u32::try_from(self.global_max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(timeout, self.global.acquire_many(all)).await;
    }

    fn release(&self, client: IpAddr, kind: &'static str) {
        let unreported = {
            let mut clients = self.clients();
            let Some(slots) = clients.get_mut(&client) else {
                return;
            };
            slots.open = slots.open.saturating_sub(1);
            let unreported = std::mem::take(&mut slots.unreported);
            slots.limited = false;
            if slots.open == 0 {
                clients.remove(&client);
            }
            unreported
        };
        if unreported > 0 {
            self.audit_refusals(kind, client, unreported);
        }
    }

    fn audit_refusals(&self, kind: &'static str, client: IpAddr, refused: u64) {
        self.audit.write(Record {
            kind,
            client: Some(SocketAddr::new(client, 0)),
            decision: "deny",
            reason: CLIENT_LIMIT_REASON,
            refused: Some(refused),
            ..Record::default()
        });
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<IpAddr, ClientSlots>> {
        // The map stays consistent across a panic elsewhere: every update is one statement.
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.client, self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Lines {
        fn records(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn admission(global: usize, per_client: usize) -> (Arc<Admission>, Lines) {
        let lines = Lines::default();
        let audit = Audit::to_writer(Box::new(lines.clone()));
        let admission = Admission::new(
            NonZeroUsize::new(global).unwrap(),
            NonZeroUsize::new(per_client).unwrap(),
            audit,
        );
        (admission, lines)
    }

    fn permit(admission: &Admission) -> OwnedSemaphorePermit {
        admission.global.clone().try_acquire_owned().unwrap()
    }

    fn from(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[tokio::test]
    async fn a_client_at_its_bound_is_refused_while_another_client_is_admitted() {
        let (admission, _) = admission(16, 2);
        let a1 = admission.admit(from("10.0.0.1"), "tls", permit(&admission));
        let a2 = admission.admit(from("10.0.0.1"), "tls", permit(&admission));
        assert!(a1.is_some() && a2.is_some());
        assert!(
            admission
                .admit(from("10.0.0.1"), "http", permit(&admission))
                .is_none()
        );
        let b = admission.admit(from("10.0.0.2"), "tls", permit(&admission));
        assert!(b.is_some());
        assert_eq!(admission.open_from("10.0.0.1".parse().unwrap()), 2);
        drop(a1);
        assert!(
            admission
                .admit(from("10.0.0.1"), "tls", permit(&admission))
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_refused_connection_returns_its_global_slot() {
        let (admission, _) = admission(2, 1);
        let _a = admission.admit(from("10.0.0.1"), "tls", permit(&admission));
        for _ in 0..10 {
            assert!(
                admission
                    .admit(from("10.0.0.1"), "tls", permit(&admission))
                    .is_none()
            );
        }
        assert_eq!(admission.global.available_permits(), 1);
    }

    #[tokio::test]
    async fn refusals_are_audited_once_at_first_and_then_counted_when_a_connection_closes() {
        let (admission, lines) = admission(16, 1);
        let held = admission.admit(from("10.0.0.1"), "proxy", permit(&admission));
        for _ in 0..5 {
            assert!(
                admission
                    .admit(from("10.0.0.1"), "proxy", permit(&admission))
                    .is_none()
            );
        }
        let records = lines.records();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["reason"], CLIENT_LIMIT_REASON);
        assert_eq!(records[0]["decision"], "deny");
        assert_eq!(records[0]["refused"], 1);
        assert_eq!(records[0]["client"], "10.0.0.1:0");
        drop(held);
        let records = lines.records();
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[1]["refused"], 4);
        // A new episode starts with a new first line.
        let _held = admission.admit(from("10.0.0.1"), "proxy", permit(&admission));
        assert!(
            admission
                .admit(from("10.0.0.1"), "proxy", permit(&admission))
                .is_none()
        );
        assert_eq!(lines.records().len(), 3);
    }

    #[tokio::test]
    async fn clients_without_open_connections_leave_no_state() {
        let (admission, _) = admission(16, 4);
        let held: Vec<_> = (0..8)
            .map(|i| admission.admit(from(&format!("10.0.1.{i}")), "tcp", permit(&admission)))
            .collect();
        assert_eq!(admission.clients().len(), 8);
        drop(held);
        assert!(admission.clients().is_empty());
    }

    #[tokio::test]
    async fn accept_closes_a_connection_beyond_the_per_client_bound_at_once() {
        use tokio::io::AsyncReadExt;
        let (admission, _) = admission(16, 1);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _first = TcpStream::connect(addr).await.unwrap();
        let (_, _, held) = admission.accept(&listener, "tls").await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(admission.accept(&listener, "tls").await.is_none());
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
            .await
            .expect("the refused connection was not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        drop(held);
    }
}
