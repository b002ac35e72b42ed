//! Leaf certificates per SNI, signed by the bottle CA and cached as ready rustls configs.
//!
//! Minting is on the new-connection path, so it is made cheap and rare:
//! * one ECDSA P-256 leaf key pair per [`LeafCache`] (per process), as mitmproxy does: key
//!   generation is the expensive part, and the key never leaves the gateway;
//! * a bounded cache of `Arc<ServerConfig>` per host, so a second connection for a host
//!   mints nothing, and concurrent first connections for one host mint once;
//! * one TLS session store shared by all configs (rustls only resumes a session for the
//!   SNI it was made for).
//!
//! Leaves are valid from an hour ago for 30 days (never beyond the CA), carry exactly the
//! host as dNSName SAN and serverAuth EKU, and are re-minted before they expire.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::ca::{BottleCa, random_serial};
use super::crypto_provider;

/// Leaf validity after minting.
const LEAF_VALIDITY: Duration = Duration::days(30);
/// Backdating, for clients whose clock is slightly behind.
const BACKDATE: Duration = Duration::hours(1);
/// A cached leaf is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::days(1);
/// Longest Common Name (RFC 5280 ub-common-name); longer hosts get only the SAN.
const MAX_CN_LEN: usize = 64;
/// Resumable TLS sessions kept across all hosts.
const SESSION_CACHE_SIZE: usize = 4096;
/// ALPN protocols offered to the agent, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a leaf certificate or its server config could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The host is not a DNS name that may appear in a dNSName SAN.
    #[error("cannot mint a certificate for {host:?}: not a valid DNS host name")]
    InvalidHost {
        /// The rejected host (possibly truncated).
        host: String,
    },
    /// The CA has expired, so no valid leaf can be signed.
    #[error("cannot mint a certificate: the bottle CA expired at {not_after}; create a new CA")]
    CaExpired {
        /// The CA's notAfter.
        not_after: OffsetDateTime,
    },
    /// The leaf key pair could not be generated when the cache was made.
    #[error("no leaf key pair (generating it failed: {0})")]
    LeafKey(String),
    /// Signing the leaf failed.
    #[error("cannot sign the leaf certificate for {host}: {source}")]
    Sign {
        /// The host.
        host: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// rustls refused the key or the config.
    #[error("cannot build the TLS server config: {0}")]
    Rustls(#[from] rustls::Error),
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The leaf key pair shared by all leaves, in rcgen form (to sign) and rustls form (to
/// serve).
struct LeafKey {
    key_pair: KeyPair,
    signing_key: Arc<dyn SigningKey>,
}

impl LeafKey {
    fn generate(provider: &CryptoProvider) -> Result<LeafKey, MintError> {
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| MintError::LeafKey(e.to_string()))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8))?;
        Ok(LeafKey {
            key_pair,
            signing_key,
        })
    }
}

/// A cached config and when to replace it.
#[derive(Clone)]
struct CachedLeaf {
    config: Arc<ServerConfig>,
    refresh_at: OffsetDateTime,
}

/// Minted leaf certificates per host, as rustls server configs, in a bounded cache.
pub struct LeafCache {
    ca: Arc<BottleCa>,
    provider: Arc<CryptoProvider>,
    /// The process's leaf key, or why it could not be made (reported by every mint).
    leaf_key: Result<LeafKey, String>,
    sessions: Arc<dyn StoresServerSessions>,
    cache: quick_cache::sync::Cache<String, CachedLeaf>,
    minted: AtomicU64,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("cached", &self.cache.len())
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache of at most `capacity` hosts (at least 1) signing with `ca`, with a fresh
    /// leaf key pair.
    ///
    /// Infallible for convenience: if the key pair cannot be generated (the system random
    /// generator failed), every [`Self::server_config`] call returns that error, so
    /// interception fails closed. Use [`Self::try_new`] to fail at start instead.
    pub fn new(ca: Arc<BottleCa>, capacity: usize) -> LeafCache {
        let provider = crypto_provider();
        let leaf_key = LeafKey::generate(&provider).map_err(|e| e.to_string());
        if let Err(e) = &leaf_key {
            tracing::error!(error = %e, "no leaf key pair: interception will fail");
        }
        LeafCache {
            ca,
            provider,
            leaf_key,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            cache: quick_cache::sync::Cache::new(capacity.max(1)),
            minted: AtomicU64::new(0),
        }
    }

    /// Like [`Self::new`], but fails if the leaf key pair cannot be generated.
    pub fn try_new(ca: Arc<BottleCa>, capacity: usize) -> Result<LeafCache, MintError> {
        let cache = Self::new(ca, capacity);
        match &cache.leaf_key {
            Ok(_) => Ok(cache),
            Err(e) => Err(MintError::LeafKey(e.clone())),
        }
    }

    /// The server config presenting a leaf for exactly `host` (chain leaf + CA, ALPN h2
    /// and http/1.1, no client auth). Minted on first use, then served from the cache.
    ///
    /// `host` is expected to be normalised and checked by the caller; it is still
    /// validated (a DNS name, no wildcard, no IP literal, no trailing dot) and matched
    /// case-insensitively. Concurrent first calls for one host wait for a single mint.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, MintError> {
        self.server_config_at(host, OffsetDateTime::now_utc())
    }

    /// How many leaf certificates this cache has minted (never counts cache hits).
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// How many hosts are cached now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The CA the leaves are signed with.
    pub fn ca(&self) -> &Arc<BottleCa> {
        &self.ca
    }

    /// [`Self::server_config`] with an explicit clock, so expiry can be tested.
    fn server_config_at(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<ServerConfig>, MintError> {
        let host = valid_host(host)?;
        if let Some(leaf) = self.cache.get(host.as_ref()) {
            if now < leaf.refresh_at {
                return Ok(leaf.config);
            }
            // Near expiry: drop it and mint afresh below (a racing caller may mint too).
            self.cache.remove(host.as_ref());
        }
        let leaf = self
            .cache
            .get_or_insert_with(host.as_ref(), || self.mint(&host, now))?;
        Ok(leaf.config)
    }

    /// Signs a leaf for `host` and wraps it in a server config.
    fn mint(&self, host: &str, now: OffsetDateTime) -> Result<CachedLeaf, MintError> {
        let key = self
            .leaf_key
            .as_ref()
            .map_err(|e| MintError::LeafKey(e.clone()))?;
        let (leaf, not_after) = sign_leaf(&self.ca, host, &key.key_pair, now)?;
        let chain = vec![leaf, self.ca.cert_der().clone()];
        let certified = CertifiedKey::new(chain, key.signing_key.clone());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.sessions.clone();
        self.minted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host, "minted a leaf certificate");
        // Refresh a day before expiry, or halfway there for a leaf capped by a dying CA.
        let margin = REFRESH_MARGIN.min((not_after - now) / 2);
        Ok(CachedLeaf {
            config: Arc::new(config),
            refresh_at: not_after - margin,
        })
    }
}

/// Checks that `host` can be a dNSName SAN, lower-casing it if needed.
fn valid_host(host: &str) -> Result<Cow<'_, str>, MintError> {
    let invalid = || MintError::InvalidHost {
        host: host.chars().take(256).collect(),
    };
    // DnsName accepts a trailing dot, which SNI forbids (RFC 6066) and a SAN should not
    // carry; it rejects wildcards and all-numeric (IP-like) names.
    if host.ends_with('.') || DnsName::try_from(host).is_err() {
        return Err(invalid());
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

/// Signs a leaf for `host` (already validated) with `key`'s public key, returning the
/// certificate and its notAfter.
pub(crate) fn sign_leaf(
    ca: &BottleCa,
    host: &str,
    key: &impl PublicKeyData,
    now: OffsetDateTime,
) -> Result<(CertificateDer<'static>, OffsetDateTime), MintError> {
    // Certificates carry whole seconds; keep the returned notAfter equal to the encoded one.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let not_after = (now + LEAF_VALIDITY).min(ca.not_after());
    if not_after <= now {
        return Err(MintError::CaExpired {
            not_after: ca.not_after(),
        });
    }
    let san = host.try_into().map_err(|source| MintError::Sign {
        host: host.to_string(),
        source,
    })?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::DnsName(san)];
    params.distinguished_name = DistinguishedName::new();
    if host.len() <= MAX_CN_LEN {
        params.distinguished_name.push(DnType::CommonName, host);
    }
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    params.serial_number = Some(random_serial().map_err(|_| MintError::Random)?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(key, ca.issuer())
        .map_err(|source| MintError::Sign {
            host: host.to_string(),
            source,
        })?;
    Ok((cert.der().clone(), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::tests::TestDir;
    use crate::tls::der;

    fn cache(tag: &str, capacity: usize) -> (TestDir, LeafCache) {
        let dir = TestDir::new(tag);
        let ca = Arc::new(BottleCa::create(dir.path()).expect("create CA"));
        (dir, LeafCache::try_new(ca, capacity).expect("leaf cache"))
    }

    fn leaf_key(leaves: &LeafCache) -> &KeyPair {
        &leaves.leaf_key.as_ref().expect("leaf key").key_pair
    }

    #[test]
    fn mint_caches_per_host() {
        let (_dir, leaves) = cache("mint-cache", 100);
        let a = leaves.server_config("allowed.test").expect("mint");
        let b = leaves.server_config("allowed.test").expect("cached");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(leaves.minted(), 1);
        let upper = leaves
            .server_config("Allowed.TEST")
            .expect("case-insensitive");
        assert!(Arc::ptr_eq(&a, &upper));
        assert_eq!(leaves.minted(), 1);
        leaves.server_config("other.test").expect("mint other");
        assert_eq!(leaves.minted(), 2);
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn mint_leaf_fields() {
        let (_dir, leaves) = cache("mint-fields", 10);
        let now = OffsetDateTime::now_utc();
        let (leaf, not_after) =
            sign_leaf(&leaves.ca, "pypi.org", leaf_key(&leaves), now).expect("sign");
        let info = der::parse_certificate(&leaf).expect("parse");
        let ca_info = der::parse_certificate(leaves.ca.cert_der()).expect("parse CA");
        assert_eq!(info.issuer, ca_info.subject);
        assert_eq!(info.public_key, leaf_key(&leaves).der_bytes());
        assert_eq!(info.basic_constraints_ca, None);
        assert_eq!(not_after, info.not_after);
        let now_s = now.replace_nanosecond(0).expect("ns");
        assert_eq!(info.not_before, now_s - BACKDATE);
        assert_eq!(info.not_after, now_s + LEAF_VALIDITY);
        // SAN, serverAuth EKU (1.3.6.1.5.5.7.3.1) and the host appear in the DER.
        let contains = |needle: &[u8]| leaf.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"\x82\x08pypi.org"), "dNSName SAN missing");
        assert!(contains(&[
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01
        ]));
    }

    #[test]
    fn mint_never_outlives_the_ca() {
        let (_dir, leaves) = cache("mint-cap", 10);
        let ca_end = leaves.ca.not_after();
        let (_, not_after) = sign_leaf(
            &leaves.ca,
            "a.test",
            leaf_key(&leaves),
            ca_end - Duration::days(2),
        )
        .expect("sign");
        assert_eq!(not_after, ca_end);
        let err = sign_leaf(&leaves.ca, "a.test", leaf_key(&leaves), ca_end).expect_err("expired");
        assert!(matches!(err, MintError::CaExpired { .. }), "{err:?}");
    }

    #[test]
    fn mint_refreshes_leaves_near_expiry() {
        let (_dir, leaves) = cache("mint-refresh", 10);
        let now = OffsetDateTime::now_utc();
        let first = leaves.server_config_at("a.test", now).expect("mint");
        let later = leaves
            .server_config_at("a.test", now + Duration::days(28))
            .expect("still cached");
        assert!(Arc::ptr_eq(&first, &later));
        assert_eq!(leaves.minted(), 1);
        let renewed = leaves
            .server_config_at("a.test", now + Duration::days(29) + Duration::minutes(1))
            .expect("renewed");
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert_eq!(leaves.minted(), 2);
    }

    #[test]
    fn mint_rejects_invalid_hosts() {
        let (_dir, leaves) = cache("mint-invalid", 10);
        let long = format!("{}.test", "a".repeat(300));
        for host in [
            "",
            "*.example.com",
            "*",
            "203.0.113.7",
            "::1",
            "[::1]",
            "a..b",
            "host.",
            "-a.test",
            "a b.test",
            "ex\u{e4}mple.test",
            "a\0.test",
            long.as_str(),
        ] {
            let err = leaves.server_config(host).expect_err(host);
            assert!(
                matches!(err, MintError::InvalidHost { .. }),
                "{host:?}: {err:?}"
            );
        }
        assert_eq!(leaves.minted(), 0);
        // Long but valid: 4 labels of 63 = 255 chars is too long, 3 of 63 + tld is fine.
        let ok = format!("{0}.{0}.{0}.test", "b".repeat(63));
        leaves
            .server_config(&ok)
            .expect("long valid host gets a SAN-only leaf");
    }

    #[test]
    fn mint_once_for_concurrent_first_requests() {
        let (_dir, leaves) = cache("mint-concurrent", 10);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| leaves.server_config("same.test").expect("mint"));
            }
        });
        assert_eq!(leaves.minted(), 1);
    }

    #[test]
    fn mint_cache_is_bounded() {
        let (_dir, leaves) = cache("mint-bounded", 4);
        for i in 0..50 {
            leaves.server_config(&format!("h{i}.test")).expect("mint");
        }
        assert!(leaves.cached() <= 8, "cached {}", leaves.cached());
        assert_eq!(leaves.minted(), 50);
    }
}
