//! The per-lab test certificate authority and the origin's certificate selection.
//!
//! Each lab mints its own CA (ECDSA P-256) so no two labs, and no two runs, trust each
//! other's certificates. The HTTPS origins pick their certificate by SNI: a leaf for the
//! exact name the client asked for is minted on first use and cached (bounded); clients
//! that send no SNI (connections by IP) get a default leaf covering the lab's names and
//! the origin addresses.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{LabError, Result};

/// At most this many per-SNI leaves are cached by one origin; later names are minted per
/// handshake instead (still correct, only slower).
const LEAF_CACHE_LIMIT: usize = 256;

/// A test CA: its certificate and the key that signs leaves.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    label: String,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate and its private key, signed by a [`TestCa`].
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Leaf {
    fn clone(&self) -> Self {
        Leaf {
            cert_pem: self.cert_pem.clone(),
            cert_der: self.cert_der.clone(),
            key_pem: self.key_pem.clone(),
            key_der: self.key_der.clone_key(),
        }
    }
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf").finish_non_exhaustive()
    }
}

/// Sets the validity window: from January 1st of last year to January 1st three years
/// on, computed from the clock without a date library (a day's error in the year estimate
/// is harmless).
fn set_validity(params: &mut CertificateParams) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 3, 1, 1);
}

/// A deliberate defect in an issued leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A valid leaf.
    None,
    /// Validity ended in 2002.
    Expired,
    /// Signed by its own key, not by the lab CA.
    SelfSigned,
}

/// Names whose origin certificate is wrong on purpose, and how (the origins choose certificates by SNI):
/// `wrongcert.test` gets a certificate for other names.
pub const FAULTY_NAMES: [(&str, Fault); 2] = [
    ("expired.test", Fault::Expired),
    ("selfsigned.test", Fault::SelfSigned),
];

impl TestCa {
    /// Generates a new CA whose common name contains `label` (e.g. the lab's id).
    pub fn new(label: &str) -> Result<Self> {
        let err = |source| LabError::Certificate {
            subject: format!("test CA {label}"),
            source,
        };
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("bottleneck lab test CA {label}"),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "bottleneck lab");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            label: label.to_owned(),
        })
    }

    /// The CA certificate, PEM (what clients pass as `--cacert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a server leaf for `names`: DNS names (wildcards allowed) and/or IP literals.
    /// The first name is also the subject common name.
    pub fn issue(&self, names: &[&str]) -> Result<Leaf> {
        self.issue_with(names, Fault::None)
    }

    /// Issues a leaf with a deliberate fault (for the origins that test upstream
    /// verification): expired, or signed by itself instead of the CA.
    pub fn issue_with(&self, names: &[&str], fault: Fault) -> Result<Leaf> {
        let subject = names.join(",");
        let err = |source| LabError::Certificate {
            subject: subject.clone(),
            source,
        };
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(owned).map_err(err)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, (*first).to_owned());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        if fault == Fault::Expired {
            params.not_before = date_time_ymd(2001, 1, 1);
            params.not_after = date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().map_err(err)?;
        let cert = match fault {
            Fault::SelfSigned => params.self_signed(&key).map_err(err)?,
            Fault::None | Fault::Expired => params.signed_by(&key, &self.issuer).map_err(err)?,
        };
        Ok(Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

impl Leaf {
    /// The leaf (followed by nothing: clients trust the CA directly) as a rustls
    /// certified key.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>> {
        let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            self.key_der.clone_key(),
        ))?;
        Ok(Arc::new(CertifiedKey::new(
            vec![self.cert_der.clone()],
            key,
        )))
    }
}

/// Chooses the origin's certificate by SNI, minting and caching leaves from the lab CA;
/// `wrongcert.test` and the [`FAULTY_NAMES`] get the wrong certificate on purpose.
pub(crate) struct SniResolver {
    ca: Arc<TestCa>,
    default: Arc<CertifiedKey>,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    /// `default_names` go into the leaf served to clients without SNI.
    pub(crate) fn new(ca: Arc<TestCa>, default_names: &[&str]) -> Result<Self> {
        let default = ca.issue(default_names)?.certified_key()?;
        Ok(SniResolver {
            ca,
            default,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn leaf_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if name == "wrongcert.test" {
            return Some(self.default.clone());
        }
        let fault = FAULTY_NAMES
            .iter()
            .find(|(faulty, _)| *faulty == name)
            .map_or(Fault::None, |(_, fault)| *fault);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = cache.get(&name) {
            return Some(found.clone());
        }
        let minted = self
            .ca
            .issue_with(&[name.as_str()], fault)
            .and_then(|leaf| leaf.certified_key())
            .ok()?;
        if cache.len() < LEAF_CACHE_LIMIT {
            cache.insert(name, minted.clone());
        }
        Some(minted)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match client_hello.server_name() {
            // A name the CA cannot put in a certificate falls back to the default leaf,
            // which the client will reject: the right outcome for a bad name.
            Some(name) => self.leaf_for(name).or_else(|| Some(self.default.clone())),
            None => Some(self.default.clone()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_for_names_and_addresses_can_be_issued() {
        let ca = TestCa::new("unit").expect("CA");
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let leaf = ca.issue(&[
            "allowed.test",
            "*.allowed.test",
            "198.51.100.10",
            "2001:db8::1",
        ]);
        assert!(
            matches!(&leaf, Ok(l) if l.certified_key().is_ok()),
            "{leaf:?}"
        );
    }
}
