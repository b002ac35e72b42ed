//! TLS on the agent side: the bottle CA, minted leaf certificates, the ClientHello peek.
//!
//! * [`ca`]: load or create the bottle CA in `--ca-dir` (key mode 0600 enforced).
//! * [`mint`]: leaf certificates per SNI signed by that CA, as ready rustls server configs,
//!   cached so a host is minted once.
//! * [`client_hello`]: parse the first TLS flight without consuming it (SNI, ALPN, ECH), so
//!   the listener can decide before choosing passthrough or interception.

use std::sync::{Arc, OnceLock};

use rustls::crypto::{CryptoProvider, GetRandomFailed};

pub mod ca;
pub mod client_hello;
mod der;
pub mod mint;

/// The rustls crypto provider behind every TLS config of the gateway.
///
/// Always ring, passed explicitly rather than through the process default, so no other
/// provider that a dependency enables can be picked by accident.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// `N` bytes from the provider's CSPRNG (serial numbers, CA name suffix, temp file names).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], GetRandomFailed> {
    let mut bytes = [0u8; N];
    crypto_provider().secure_random.fill(&mut bytes)?;
    Ok(bytes)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
