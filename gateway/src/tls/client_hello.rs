//! Reading the agent's TLS ClientHello without consuming it.
//!
//! The TLS listener must decide on the SNI before it knows what to do with the connection:
//! passthrough splices the original bytes to the upstream, interception hands the untouched
//! socket to rustls. So the ClientHello is only peeked ([`peek_client_hello`]) and parsed
//! ([`parse`]) from a copy.
//!
//! The parser is strict where ambiguity could be abused (duplicate extensions, two host
//! names, non-ASCII names, lengths that do not add up are all [`HelloError::Malformed`]),
//! reassembles a ClientHello fragmented over several handshake records, and is bounded:
//! the whole ClientHello, record headers included, must fit in [`MAX_CLIENT_HELLO_BYTES`]
//! (one full 16 KiB record plus its header); anything larger is `Malformed`. Real
//! ClientHellos, post-quantum key shares included, are well under 4 KiB.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// Upper bound on the bytes a ClientHello may occupy, record headers included.
pub const MAX_CLIENT_HELLO_BYTES: usize = MAX_RECORD_PAYLOAD + RECORD_HEADER_LEN;

/// TLS record header: type, version, length.
const RECORD_HEADER_LEN: usize = 5;
/// Largest plaintext record payload (RFC 8446 5.1).
const MAX_RECORD_PAYLOAD: usize = 16 * 1024;
/// ContentType handshake.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// HandshakeType client_hello.
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// Handshake message header: type and 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// First buffer size for peeking; grown to what the record headers announce.
const INITIAL_PEEK_BUFFER: usize = 4096;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// NameType host_name (RFC 6066).
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the gateway needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `host_name` entry of the server_name extension, exactly as sent (printable
    /// ASCII, not yet normalised); `None` without the extension.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in the client's order (empty without the extension).
    pub alpn: Vec<Vec<u8>>,
    /// Whether the encrypted_client_hello extension (0xfe0d) is present: the SNI seen is
    /// then only the outer, public name.
    pub has_ech: bool,
    /// ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// The version field of the first record header.
    pub record_version: u16,
    /// The supported_versions extension (0x0304 = TLS 1.3), empty without it.
    pub supported_versions: Vec<u16>,
    /// How many bytes from the start of the stream the ClientHello's records occupy.
    pub len: usize,
}

/// Why a buffer does not (yet) hold a usable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// More bytes are needed: the buffer must hold at least `needed` bytes in total
    /// (a lower bound; the next parse may ask for more).
    #[error("incomplete ClientHello: at least {needed} bytes needed")]
    Incomplete {
        /// Minimum total buffer length for the parse to progress.
        needed: usize,
    },
    /// The stream does not start with a TLS handshake record carrying a ClientHello
    /// (plain HTTP on 443, SSLv2, another protocol).
    #[error("not a TLS ClientHello")]
    NotTls,
    /// A TLS handshake that breaks the ClientHello syntax or the limits.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Why [`peek_client_hello`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// No complete ClientHello arrived in time.
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    /// The client closed its side before sending a complete ClientHello.
    #[error(
        "the client closed the connection after {received} bytes, before a complete ClientHello"
    )]
    Closed {
        /// Bytes received before the close.
        received: usize,
    },
    /// The socket failed.
    #[error("reading the ClientHello failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a usable ClientHello (never `Incomplete`).
    #[error(transparent)]
    Hello(#[from] HelloError),
}

/// Parses the ClientHello at the start of `buf` (the first bytes of a connection).
///
/// Returns [`HelloError::Incomplete`] while `buf` is a prefix of a possibly valid
/// ClientHello, and decides [`HelloError::NotTls`] from as few bytes as possible. Bytes
/// after the ClientHello's last record are ignored. Never panics.
pub fn parse(buf: &[u8]) -> Result<ClientHelloInfo, HelloError> {
    let mut pos = 0;
    // Handshake bytes gathered so far when the message spans records (rare); a hello in
    // one record is parsed in place.
    let mut joined: Option<Vec<u8>> = None;
    let mut record_version = 0;
    loop {
        let first = pos == 0;
        let Some(header) = buf.get(pos..pos + RECORD_HEADER_LEN) else {
            check_partial_header(buf.get(pos..).unwrap_or_default(), first)?;
            return Err(HelloError::Incomplete {
                needed: pos + RECORD_HEADER_LEN,
            });
        };
        check_partial_header(header, first)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(HelloError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(HelloError::Malformed("record longer than 16 KiB"));
        }
        let end = pos + RECORD_HEADER_LEN + len;
        if end > MAX_CLIENT_HELLO_BYTES {
            return Err(HelloError::Malformed("ClientHello longer than 16 KiB"));
        }
        if first {
            record_version = u16::from_be_bytes([header[1], header[2]]);
            // Decide NotTls as soon as the handshake type is visible.
            if let Some(&kind) = buf.get(RECORD_HEADER_LEN)
                && kind != HANDSHAKE_CLIENT_HELLO
            {
                return Err(HelloError::NotTls);
            }
        }
        let Some(payload) = buf.get(pos + RECORD_HEADER_LEN..end) else {
            return Err(HelloError::Incomplete { needed: end });
        };
        pos = end;
        let handshake: &[u8] = match &mut joined {
            None => payload,
            Some(joined) => {
                joined.extend_from_slice(payload);
                joined.as_slice()
            }
        };
        if handshake.len() >= HANDSHAKE_HEADER_LEN {
            let body_len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            let total = HANDSHAKE_HEADER_LEN + body_len;
            if let Some(body) = handshake.get(HANDSHAKE_HEADER_LEN..total) {
                let mut info = parse_body(body)?;
                info.record_version = record_version;
                info.len = pos;
                return Ok(info);
            }
            // The rest comes in further records, each with its own header.
            let needed = pos + RECORD_HEADER_LEN + (total - handshake.len());
            if needed > MAX_CLIENT_HELLO_BYTES {
                return Err(HelloError::Malformed("ClientHello longer than 16 KiB"));
            }
        }
        if joined.is_none() {
            joined = Some(payload.to_vec());
        }
    }
}

/// Checks the record header bytes present so far (possibly fewer than five).
fn check_partial_header(header: &[u8], first: bool) -> Result<(), HelloError> {
    // On the first record a mismatch means another protocol; later it is a broken hello.
    let wrong = if first {
        HelloError::NotTls
    } else {
        HelloError::Malformed("ClientHello interrupted by a non-handshake record")
    };
    match header {
        [kind, ..] if *kind != CONTENT_HANDSHAKE => Err(wrong),
        // Every TLS and SSLv3 record version has major version 3.
        [_, major, ..] if *major != 0x03 => Err(wrong),
        _ => Ok(()),
    }
}

/// A cursor over a complete handshake message; running short is `Malformed`.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(HelloError::Malformed(what))?;
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }
}

/// Parses the ClientHello body (after the handshake header).
fn parse_body(body: &[u8]) -> Result<ClientHelloInfo, HelloError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("truncated legacy_version")?;
    r.take(32, "truncated random")?;
    if r.vec8("truncated legacy_session_id")?.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec16("truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed(
            "cipher_suites empty or of odd length",
        ));
    }
    if r.vec8("truncated legacy_compression_methods")?.is_empty() {
        return Err(HelloError::Malformed("no compression methods"));
    }
    let mut info = ClientHelloInfo {
        sni: None,
        alpn: Vec::new(),
        has_ech: false,
        legacy_version,
        record_version: 0,
        supported_versions: Vec::new(),
        len: 0,
    };
    // Pre-TLS 1.2 hellos may end here, without an extensions block.
    if r.is_empty() {
        return Ok(info);
    }
    let mut exts = Reader::new(r.vec16("extensions length exceeds the message")?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("trailing bytes after the extensions"));
    }
    let mut seen = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16("truncated extension type")?;
        let data = exts.vec16("extension length exceeds the extensions block")?;
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => info.sni = parse_server_name(data)?,
            EXT_ALPN => info.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => info.supported_versions = parse_versions(data)?,
            EXT_ENCRYPTED_CLIENT_HELLO => info.has_ech = true,
            _ => {}
        }
    }
    // RFC 8446 4.2: at most one extension of each type. A second server_name in
    // particular could make the gateway and the upstream read different names.
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(HelloError::Malformed("duplicate extension"));
    }
    Ok(info)
}

/// server_name (RFC 6066 3): the single host_name entry, as printable ASCII.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut ext = Reader::new(data);
    let mut list = Reader::new(ext.vec16("truncated server_name list")?);
    if !ext.is_empty() {
        return Err(HelloError::Malformed("trailing bytes in server_name"));
    }
    if list.is_empty() {
        return Err(HelloError::Malformed("empty server_name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8("truncated server_name entry")?;
        let name = list.vec16("server_name entry length exceeds the list")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err(HelloError::Malformed(
                "more than one host_name in server_name",
            ));
        }
        if name.is_empty() {
            return Err(HelloError::Malformed("empty host_name"));
        }
        // Printable ASCII only: no UTF-8 (IDNs travel as punycode), no controls or spaces
        // that could confuse logs or the policy.
        if !name.iter().all(u8::is_ascii_graphic) {
            return Err(HelloError::Malformed("host_name is not printable ASCII"));
        }
        host = Some(name.iter().map(|&b| char::from(b)).collect());
    }
    Ok(host)
}

/// application_layer_protocol_negotiation (RFC 7301 3.1).
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, HelloError> {
    let mut ext = Reader::new(data);
    let mut list = Reader::new(ext.vec16("truncated ALPN list")?);
    if !ext.is_empty() {
        return Err(HelloError::Malformed("trailing bytes in ALPN"));
    }
    if list.is_empty() {
        return Err(HelloError::Malformed("empty ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("ALPN protocol length exceeds the list")?;
        if name.is_empty() {
            return Err(HelloError::Malformed("empty ALPN protocol name"));
        }
        protocols.push(name.to_vec());
    }
    Ok(protocols)
}

/// supported_versions in a ClientHello (RFC 8446 4.2.1).
fn parse_versions(data: &[u8]) -> Result<Vec<u16>, HelloError> {
    let mut ext = Reader::new(data);
    let list = ext.vec8("truncated supported_versions")?;
    if !ext.is_empty() || list.is_empty() || list.len() % 2 != 0 {
        return Err(HelloError::Malformed("bad supported_versions list"));
    }
    Ok(list
        .chunks_exact(2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .collect())
}

/// Waits for the ClientHello on `stream` and parses it, consuming nothing: afterwards the
/// socket still starts with the ClientHello, for rustls or for splicing.
///
/// Bounded by `timeout` and by [`MAX_CLIENT_HELLO_BYTES`]. Waiting for the rest of a
/// hello split over TCP segments sleeps until new bytes arrive: tokio's `peek` would
/// return the same bytes again at once (a peek never clears read readiness), so this peeks
/// with `MSG_PEEK` inside `try_io` and reports "no progress" as `WouldBlock`, which clears
/// the readiness until the next segment (or FIN) arrives.
pub async fn peek_client_hello(
    stream: &TcpStream,
    timeout: Duration,
) -> Result<ClientHelloInfo, PeekError> {
    tokio::time::timeout(timeout, peek_until_parsed(stream))
        .await
        .unwrap_or(Err(PeekError::Timeout(timeout)))
}

async fn peek_until_parsed(stream: &TcpStream) -> Result<ClientHelloInfo, PeekError> {
    let mut buf = vec![0u8; INITIAL_PEEK_BUFFER];
    let mut seen = 0;
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        // After a FIN all data is already queued, so no progress then means it is over.
        let closed = ready.is_read_closed();
        let peeked = stream.try_io(Interest::READABLE, || {
            let n =
                recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)?;
            // n == 0 is end of stream, reported as such below.
            if n == seen && n != 0 && n < buf.len() && !closed {
                // Nothing new: clear readiness so the next wait sleeps until data arrives.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match peeked {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(PeekError::Closed { received: 0 });
        }
        let Some(data) = buf.get(..n) else {
            return Err(io::Error::other("recv reported more bytes than the buffer holds").into());
        };
        match parse(data) {
            Ok(info) => return Ok(info),
            Err(HelloError::Incomplete { needed }) => {
                if n == seen && closed {
                    return Err(PeekError::Closed { received: n });
                }
                seen = n;
                // `parse` never asks for more than the bound.
                if needed > buf.len() {
                    buf.resize(needed.min(MAX_CLIENT_HELLO_BYTES), 0);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the ClientHello from a stream that cannot be peeked (a CONNECT tunnel): returns
/// it parsed, with every byte read so far, which the caller replays in front of the stream
/// (see [`crate::rewind::Rewind`]). Same bounds as [`peek_client_hello`].
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(ClientHelloInfo, Vec<u8>), PeekError> {
    let read = async {
        let mut buf = Vec::with_capacity(INITIAL_PEEK_BUFFER);
        let mut chunk = [0u8; INITIAL_PEEK_BUFFER];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(PeekError::Closed {
                    received: buf.len(),
                });
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            match parse(&buf) {
                Ok(info) => return Ok((info, buf)),
                Err(HelloError::Incomplete { .. }) if buf.len() < MAX_CLIENT_HELLO_BYTES => {}
                Err(HelloError::Incomplete { .. }) => {
                    return Err(HelloError::Malformed("ClientHello larger than the limit").into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(PeekError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::BottleCa;
    use crate::tls::ca::tests::TestDir;
    use crate::tls::crypto_provider;
    use crate::tls::mint::LeafCache;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The first flight of a real rustls client.
    fn rustls_hello(name: ServerName<'static>, alpn: &[&[u8]]) -> Vec<u8> {
        let config = client_config(RootCertStore::empty(), alpn);
        let mut conn = ClientConnection::new(config, name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    fn named(host: &str) -> ServerName<'static> {
        ServerName::try_from(host.to_string()).expect("server name")
    }

    /// A handcrafted ClientHello record with the given extensions.
    fn crafted_hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext_bytes = Vec::new();
        for (kind, data) in exts {
            ext_bytes.extend_from_slice(&kind.to_be_bytes());
            ext_bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext_bytes.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext_bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        records(&handshake, MAX_RECORD_PAYLOAD)
    }

    /// Frames handshake bytes into records of at most `size` bytes.
    fn records(handshake: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in handshake.chunks(size) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn sni_ext(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    #[test]
    fn hello_from_rustls_has_sni_and_alpn() {
        let bytes = rustls_hello(named("allowed.test"), &[b"h2", b"http/1.1"]);
        let info = parse(&bytes).expect("parse");
        assert_eq!(info.sni.as_deref(), Some("allowed.test"));
        assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(!info.has_ech);
        assert_eq!(info.legacy_version, 0x0303);
        assert!(info.supported_versions.contains(&0x0304));
        assert_eq!(info.len, bytes.len());
    }

    #[test]
    fn hello_for_an_ip_address_has_no_sni() {
        let ip = ServerName::IpAddress(
            "203.0.113.7"
                .parse::<std::net::IpAddr>()
                .expect("ip")
                .into(),
        );
        let info = parse(&rustls_hello(ip, &[])).expect("parse");
        assert_eq!(info.sni, None);
        assert!(info.alpn.is_empty());
    }

    #[test]
    fn hello_split_at_every_byte_is_incomplete_until_complete() {
        let bytes = rustls_hello(named("allowed.test"), &[b"h2"]);
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Err(HelloError::Incomplete { needed }) => {
                    assert!(
                        needed > cut && needed <= bytes.len(),
                        "cut {cut}: needed {needed}"
                    );
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert!(parse(&bytes).is_ok());
        // Bytes after the hello (a too-eager client) are not part of it.
        let mut more = bytes.clone();
        more.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
        assert_eq!(parse(&more).expect("parse").len, bytes.len());
    }

    #[test]
    fn hello_fragmented_over_records_is_reassembled() {
        let bytes = rustls_hello(named("frag.allowed.test"), &[b"http/1.1"]);
        let handshake = &bytes[RECORD_HEADER_LEN..];
        for size in [1, 3, 100, 511] {
            let framed = records(handshake, size);
            let info = parse(&framed).expect("reassembled");
            assert_eq!(info.sni.as_deref(), Some("frag.allowed.test"));
            assert_eq!(info.len, framed.len());
            if size >= 100 {
                for cut in 0..framed.len() {
                    assert!(
                        matches!(parse(&framed[..cut]), Err(HelloError::Incomplete { needed }) if needed > cut),
                        "size {size} cut {cut}"
                    );
                }
            }
        }
        // A record of another type in the middle of the hello is malformed.
        let mut framed = records(handshake, 100);
        framed.splice(105..105, [0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert_eq!(
            parse(&framed),
            Err(HelloError::Malformed(
                "ClientHello interrupted by a non-handshake record"
            ))
        );
    }

    #[test]
    fn hello_garbage_is_not_tls() {
        for garbage in [
            &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
            b"G",
            b"\x16\x02",
            b"\x80\x2e\x01\x03\x01", // SSLv2-compatible hello
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x16\x03\x03\x00\x30\x02", // a ServerHello
            b"\x17\x03\x03\x00\x05hello",
        ] {
            assert_eq!(parse(garbage), Err(HelloError::NotTls), "{garbage:?}");
        }
        assert_eq!(parse(b""), Err(HelloError::Incomplete { needed: 5 }));
        assert_eq!(
            parse(b"\x16\x03"),
            Err(HelloError::Incomplete { needed: 5 })
        );
    }

    #[test]
    fn hello_with_ech_extension() {
        let ech = vec![0x00, 0x00, 0x01, 0x00, 0x01, 0x2a, 0x00, 0x00, 0x00, 0x00];
        let bytes = crafted_hello(&[
            (EXT_SERVER_NAME, sni_ext(&[(0, b"public.example")])),
            (EXT_ENCRYPTED_CLIENT_HELLO, ech),
        ]);
        let info = parse(&bytes).expect("parse");
        assert!(info.has_ech);
        assert_eq!(info.sni.as_deref(), Some("public.example"));
    }

    #[test]
    fn hello_server_name_rules() {
        let sni =
            |names: &[(u8, &[u8])]| parse(&crafted_hello(&[(EXT_SERVER_NAME, sni_ext(names))]));
        assert_eq!(
            sni(&[(0, b"a.test")]).expect("ok").sni.as_deref(),
            Some("a.test")
        );
        // Unknown name types are skipped.
        assert_eq!(
            sni(&[(7, b"x"), (0, b"a.test")])
                .expect("ok")
                .sni
                .as_deref(),
            Some("a.test")
        );
        for bad in [
            &[(0u8, &b"a.test"[..]), (0, b"b.test")][..],
            &[(0, "exämple.test".as_bytes())],
            &[(0, b"a test")],
            &[(0, b"a\0.test")],
            &[(0, b"")],
            &[],
        ] {
            assert!(matches!(sni(bad), Err(HelloError::Malformed(_))), "{bad:?}");
        }
        let twice = crafted_hello(&[
            (EXT_SERVER_NAME, sni_ext(&[(0, b"a.test")])),
            (EXT_SERVER_NAME, sni_ext(&[(0, b"b.test")])),
        ]);
        assert_eq!(
            parse(&twice),
            Err(HelloError::Malformed("duplicate extension"))
        );
        let no_exts = crafted_hello(&[]);
        assert_eq!(parse(&no_exts).expect("ok").sni, None);
    }

    #[test]
    fn hello_truncated_lengths_are_malformed() {
        let good = crafted_hello(&[
            (EXT_SERVER_NAME, sni_ext(&[(0, b"a.test")])),
            (EXT_ALPN, vec![0, 3, 2, b'h', b'2']),
        ]);
        assert!(parse(&good).is_ok());
        // Each inner length made one larger than the data: never a panic, always Malformed.
        let body_start = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN;
        let exts_len_at = body_start + 2 + 32 + 1 + 4 + 2;
        let sni_ext_len_at = exts_len_at + 2 + 2;
        let sni_list_len_at = sni_ext_len_at + 2;
        let sni_name_len_at = sni_list_len_at + 3;
        for at in [
            exts_len_at,
            sni_ext_len_at,
            sni_list_len_at,
            sni_name_len_at,
        ] {
            let mut bad = good.clone();
            bad[at + 1] = bad[at + 1].wrapping_add(1);
            assert!(
                matches!(parse(&bad), Err(HelloError::Malformed(_))),
                "length at {at}"
            );
        }
        // Any single corrupted byte, and any shortened handshake length: no panic.
        for i in 0..good.len() {
            for value in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = value;
                let _ = parse(&bad);
            }
        }
        let mut short = good.clone();
        short[8] -= 3; // handshake length shorter than the body inside it
        assert!(matches!(parse(&short), Err(HelloError::Malformed(_))));
    }

    #[test]
    fn hello_limits() {
        assert_eq!(
            parse(b"\x16\x03\x01\x40\x01\x01"),
            Err(HelloError::Malformed("record longer than 16 KiB"))
        );
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x00"),
            Err(HelloError::Malformed("empty handshake record"))
        );
        // A handshake announcing more than fits in 16 KiB of records.
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x04\x01\x01\x00\x00"),
            Err(HelloError::Malformed("ClientHello longer than 16 KiB"))
        );
        let mut too_many = crafted_hello(&[(0x1234, vec![0; 3000])]);
        let handshake = too_many.split_off(RECORD_HEADER_LEN);
        assert_eq!(
            parse(&records(&handshake, 1)),
            Err(HelloError::Malformed("ClientHello longer than 16 KiB"))
        );
    }

    async fn loopback() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// Peek, then finish the handshake with a minted leaf; returns the client's ALPN.
    async fn intercept_once(
        listener: &TcpListener,
        addr: std::net::SocketAddr,
        leaves: &LeafCache,
        client: Arc<ClientConfig>,
        sni: &'static str,
        serve_as: Option<&str>,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        let client_task = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await?;
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(named(sni), tcp)
                .await?;
            tls.write_all(b"ping").await?;
            let mut pong = [0u8; 4];
            tls.read_exact(&mut pong).await?;
            assert_eq!(&pong, b"pong");
            Ok::<_, io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let info = peek_client_hello(&tcp, Duration::from_secs(5))
            .await
            .expect("peek");
        assert_eq!(info.sni.as_deref(), Some(sni));
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
            .await
            .expect("the peek consumed nothing, so rustls reads the whole ClientHello");
        assert_eq!(start.client_hello().server_name(), Some(sni));
        let config = leaves.server_config(serve_as.unwrap_or(sni)).expect("mint");
        let server = async {
            let mut tls = start.into_stream(config).await?;
            let mut ping = [0u8; 4];
            tls.read_exact(&mut ping).await?;
            tls.write_all(b"pong").await?;
            tls.flush().await?;
            Ok::<_, io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        };
        let (server_alpn, client_alpn) = tokio::join!(server, client_task);
        let client_alpn = client_alpn.expect("client task")?;
        assert_eq!(server_alpn.ok(), Some(client_alpn.clone()));
        Ok(client_alpn)
    }

    #[tokio::test]
    async fn peek_then_intercept_with_minted_leaf() {
        let dir = TestDir::new("hello-intercept");
        let ca = Arc::new(BottleCa::create(dir.path()).expect("CA"));
        let leaves = LeafCache::try_new(ca.clone(), 100).expect("leaves");
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.cert_der().clone())
            .expect("trust the bottle CA");
        let h2 = client_config(roots.clone(), &[b"h2", b"http/1.1"]);
        let h1 = client_config(roots.clone(), &[b"http/1.1"]);
        let none = client_config(roots.clone(), &[]);
        let (listener, addr) = loopback().await;

        let alpn = intercept_once(&listener, addr, &leaves, h2.clone(), "allowed.test", None).await;
        assert_eq!(alpn.expect("verified handshake"), Some(b"h2".to_vec()));
        assert_eq!(leaves.minted(), 1);

        let alpn = intercept_once(&listener, addr, &leaves, h1, "allowed.test", None).await;
        assert_eq!(alpn.expect("second connection"), Some(b"http/1.1".to_vec()));
        assert_eq!(
            leaves.minted(),
            1,
            "the second connection for one SNI mints nothing"
        );

        let alpn = intercept_once(&listener, addr, &leaves, none, "other.test", None).await;
        assert_eq!(alpn.expect("no ALPN offered"), None);
        assert_eq!(leaves.minted(), 2);

        // The client really verifies: a leaf for another name is rejected. (A fresh client
        // config, else it would resume its allowed.test session and see no certificate.)
        let h2 = client_config(roots, &[b"h2"]);
        let err = intercept_once(
            &listener,
            addr,
            &leaves,
            h2,
            "allowed.test",
            Some("other.test"),
        )
        .await
        .expect_err("wrong leaf must fail verification");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(leaves.minted(), 2);
    }

    #[tokio::test]
    async fn peek_waits_for_a_split_hello_and_consumes_nothing() {
        let hello = rustls_hello(named("split.allowed.test"), &[b"h2"]);
        let (listener, addr) = loopback().await;
        let sent = hello.clone();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            for chunk in [&sent[..3], &sent[3..40], &sent[40..]] {
                tcp.write_all(chunk).await.expect("write");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tcp
        });
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let started = std::time::Instant::now();
        let info = peek_client_hello(&tcp, Duration::from_secs(5))
            .await
            .expect("peek");
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "returned before the last chunk"
        );
        assert_eq!(info.sni.as_deref(), Some("split.allowed.test"));
        assert_eq!(info.len, hello.len());
        let mut read = vec![0u8; info.len];
        tcp.read_exact(&mut read).await.expect("read");
        assert_eq!(read, hello, "the peek must leave every byte in the socket");
        drop(client.await.expect("client"));
    }

    #[tokio::test]
    async fn peek_times_out_on_a_silent_client() {
        let (listener, addr) = loopback().await;
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"\x16\x03\x01").await.expect("write");
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let err = peek_client_hello(&tcp, Duration::from_millis(200))
            .await
            .expect_err("timeout");
        assert!(matches!(err, PeekError::Timeout(_)), "{err:?}");
        client.abort();
    }

    #[tokio::test]
    async fn peek_reports_a_close_at_once() {
        let (listener, addr) = loopback().await;
        for partial in [&b""[..], b"\x16\x03\x01"] {
            let client = tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                tcp.write_all(partial).await.expect("write");
                tcp.shutdown().await.expect("shutdown");
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
            let (tcp, _) = listener.accept().await.expect("accept");
            let started = std::time::Instant::now();
            let err = peek_client_hello(&tcp, Duration::from_secs(5))
                .await
                .expect_err("closed");
            assert!(
                matches!(err, PeekError::Closed { received } if received == partial.len()),
                "{err:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "waited for the timeout"
            );
            client.abort();
        }
    }

    #[tokio::test]
    async fn peek_reports_plain_http_as_not_tls() {
        let (listener, addr) = loopback().await;
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let err = peek_client_hello(&tcp, Duration::from_secs(5))
            .await
            .expect_err("not TLS");
        assert!(
            matches!(err, PeekError::Hello(HelloError::NotTls)),
            "{err:?}"
        );
        client.abort();
    }
}
