//! Byte splicing between the agent and an upstream, for the paths that do not look inside
//! (TLS passthrough, the TCP relay): both directions at once, bytes counted per direction
//! for the audit, and an idle timeout so a silent connection does not hold a slot forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What a splice moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Bytes from the agent to the upstream.
    pub up: u64,
    /// Bytes from the upstream to the agent.
    pub down: u64,
    /// Whether the splice ended because neither side sent anything for the idle time.
    pub idled_out: bool,
}

/// Copy both ways until both sides close, one fails, or nothing moves for `idle`.
pub async fn splice<A, B>(
    agent: &mut A,
    upstream: &mut B,
    idle: Duration,
) -> (Moved, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut agent = Counted::new(agent, started, last.clone());
    let mut upstream = Counted::new(upstream, started, last.clone());
    let result = {
        let copy = tokio::io::copy_bidirectional(&mut agent, &mut upstream);
        tokio::pin!(copy);
        let tick = (idle / 4).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                result = &mut copy => break result.map(|_| false),
                () = tokio::time::sleep(tick) => {
                    let quiet = started.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                    if quiet >= idle {
                        break Ok(true);
                    }
                }
            }
        }
    };
    let moved = |idled_out| Moved {
        up: agent.read,
        down: upstream.read,
        idled_out,
    };
    match result {
        Ok(idled_out) => (moved(idled_out), None),
        Err(e) => (moved(false), Some(e)),
    }
}

/// A stream that counts the bytes read from it and notes when anything moved.
struct Counted<'a, S> {
    inner: &'a mut S,
    read: u64,
    started: Instant,
    /// Milliseconds since `started` of the last read or write on either side.
    last: Arc<AtomicU64>,
}

impl<'a, S> Counted<'a, S> {
    fn new(inner: &'a mut S, started: Instant, last: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            read: 0,
            started,
            last,
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            self.read += got as u64;
            self.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn bytes_are_counted_per_direction_until_both_sides_close() {
        let (mut agent, mut agent_far) = duplex(1024);
        let (mut upstream, mut upstream_far) = duplex(1024);
        let relay = tokio::spawn(async move {
            splice(&mut agent_far, &mut upstream_far, Duration::from_secs(5)).await
        });
        agent.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream.read_exact(&mut got).await.unwrap();
        upstream.write_all(b"hi back!").await.unwrap();
        let mut back = [0u8; 8];
        agent.read_exact(&mut back).await.unwrap();
        drop(agent);
        drop(upstream);
        let (moved, error) = relay.await.unwrap();
        assert!(error.is_none(), "{error:?}");
        assert_eq!((moved.up, moved.down, moved.idled_out), (5, 8, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_splice_ends_after_the_idle_time() {
        let (_agent, mut agent_far) = duplex(1024);
        let (_upstream, mut upstream_far) = duplex(1024);
        let (moved, error) =
            splice(&mut agent_far, &mut upstream_far, Duration::from_secs(60)).await;
        assert!(moved.idled_out);
        assert!(error.is_none());
    }
}
