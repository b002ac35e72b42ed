//! Arbitrary bytes as the first flight of a connection: `client_hello::parse` must never
//! panic, must respect its bounds, and any SNI it returns must be printable ASCII.
#![no_main]

use bottleneck_gateway::tls::client_hello::{HelloError, MAX_CLIENT_HELLO_BYTES, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(info) => {
            if let Some(sni) = &info.sni {
                assert!(
                    sni.bytes().all(|b| b.is_ascii_graphic()),
                    "non-ASCII SNI {sni:?}"
                );
            }
            assert!(info.len <= data.len() && info.len <= MAX_CLIENT_HELLO_BYTES);
            assert!(info.alpn.iter().all(|p| !p.is_empty()));
        }
        Err(HelloError::Incomplete { needed }) => {
            // A prefix: more bytes are needed, never more than the bound.
            assert!(needed > data.len() && needed <= MAX_CLIENT_HELLO_BYTES);
        }
        Err(HelloError::NotTls | HelloError::Malformed(_)) => {}
    }
});
