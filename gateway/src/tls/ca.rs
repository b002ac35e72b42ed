//! The bottle CA: the certificate authority that signs every intercepted host's leaf.
//!
//! It lives in `--ca-dir` as two files: [`CERT_FILE`] (`ca.pem`, the certificate, installed
//! in the agent's trust store) and [`KEY_FILE`] (`ca.key`, a PKCS#8 private key that must
//! not be readable by group or others). Loading fails closed with an error that names the
//! file and the fix: a missing, unreadable, non-PEM, mismatched, expired or non-CA file
//! means no interception rather than a half-working one. Loading also signs and verifies a
//! throwaway leaf, so a CA that rustls clients would reject is caught at start, not at the
//! first connection.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use super::{crypto_provider, der, hex, mint, random_bytes};

/// File name of the CA certificate inside the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode 0600) inside the CA directory.
pub const KEY_FILE: &str = "ca.key";

/// Validity of a newly created CA.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Backdating of a new CA, so clients with a slightly slow clock accept it.
const BACKDATE: Duration = Duration::hours(1);
/// Name used for the load-time self-test leaf (`.invalid` never resolves).
const SELF_TEST_HOST: &str = "bottleneck-ca-self-test.invalid";

/// Why the bottle CA cannot be loaded or created. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// One of the two CA files does not exist.
    #[error(
        "the CA {what} {} does not exist; create the bottle CA with `bottleneck-gateway ca init --ca-dir {}`",
        .path.display(), .dir.display()
    )]
    Missing {
        /// "certificate" or "private key".
        what: &'static str,
        /// The missing file.
        path: PathBuf,
        /// The CA directory.
        dir: PathBuf,
    },
    /// A CA file exists but cannot be read (permissions, I/O error, a directory).
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{} holds no PEM {what}: {reason}", .path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// "CERTIFICATE" or "PRIVATE KEY".
        what: &'static str,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key file holds a key that cannot be used (format or algorithm).
    #[error("{} is not a usable CA private key: {reason}", .path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why, and how to convert it where possible.
        reason: String,
    },
    /// The certificate's DER structure cannot be read.
    #[error("{} is not a valid X.509 certificate: {reason}", .path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "the private key {} does not match the certificate {} (their public keys differ); restore the matching pair or move both away and run `bottleneck-gateway ca init`",
        .key.display(), .cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The certificate cannot sign other certificates.
    #[error("{} is not a CA certificate: {reason}", .path.display())]
    NotCa {
        /// The certificate file.
        path: PathBuf,
        /// Which constraint is missing.
        reason: &'static str,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "the CA private key {} has mode {mode:04o}, open to group or others; it must be private to the gateway: run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    KeyModeTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The certificate is outside its validity period.
    #[error(
        "the CA certificate {} is valid only from {not_before} to {not_after}, not now; create a new CA",
        .path.display()
    )]
    NotValidNow {
        /// The certificate file.
        path: PathBuf,
        /// notBefore.
        not_before: OffsetDateTime,
        /// notAfter.
        not_after: OffsetDateTime,
    },
    /// A leaf signed by this CA does not verify (rcgen or rustls cannot use this CA).
    #[error("a certificate signed by the CA {} does not verify: {reason}", .path.display())]
    SelfTest {
        /// The certificate file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// `create` found an existing file and refuses to overwrite it.
    #[error(
        "refusing to overwrite {}: a CA file already exists there (load it, or move it away first)",
        .path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Writing a new CA file (or creating the directory) failed.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Generating the CA key or certificate failed.
    #[error("cannot generate the CA: {0}")]
    Generate(#[source] rcgen::Error),
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The loaded bottle CA: what minting leaves needs, plus the certificate for export.
#[derive(Debug)]
pub struct BottleCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
}

impl BottleCa {
    /// Loads `ca.pem` and `ca.key` from `dir`, checking that the key is mode 0600, matches
    /// the certificate, that the certificate is a CA valid now, and that a leaf it signs
    /// verifies.
    pub fn load(dir: &Path) -> Result<BottleCa, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let cert_pem = read_cert_file(dir, &cert_path)?;
        let key_pem = read_key_file(dir, &key_path)?;

        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CaError::NotPem {
                path: cert_path.clone(),
                what: "CERTIFICATE",
                reason: e.to_string(),
            })?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CaError::NotPem {
            path: key_path.clone(),
            what: "PRIVATE KEY",
            reason: e.to_string(),
        })?;
        let key = key_pair(&key_path, &key_der)?;
        Self::from_parts(cert_der, cert_pem, key, &cert_path, &key_path)
    }

    /// Creates a new CA in `dir` (created with mode 0700 if absent): ECDSA P-256, CA with
    /// pathlen 0, keyCertSign + cRLSign, valid from an hour ago for ten years. Both files are
    /// written atomically, the key with mode 0600 from its creation on; an existing file is
    /// never overwritten.
    pub fn create(dir: &Path) -> Result<BottleCa, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CaError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        for path in [&cert_path, &key_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(CaError::Exists { path: path.clone() });
            }
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let suffix = hex(&random_bytes::<4>().map_err(|_| CaError::Random)?);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("bottleneck bottle CA {suffix}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "bottleneck");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial().map_err(|_| CaError::Random)?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;

        // Key first: a crash in between leaves a key without a certificate, which `load`
        // reports as a missing certificate rather than trusting a certificate without key.
        write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        if let Err(e) = write_new(&cert_path, cert.pem().as_bytes(), 0o644) {
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        if let Ok(dir_file) = File::open(dir) {
            // Make the two new directory entries durable; failure only risks a re-create.
            let _ = dir_file.sync_all();
        }
        tracing::info!(dir = %dir.display(), cn = %format!("bottleneck bottle CA {suffix}"), "created the bottle CA");
        // Load what was written, so a created CA passes exactly the checks a loaded one does.
        Self::load(dir)
    }

    /// Loads the CA from `dir`, or creates it there if neither file exists. One file without
    /// the other is an error (never silently replaced).
    pub fn load_or_create(dir: &Path) -> Result<BottleCa, CaError> {
        let absent = |name: &str| matches!(fs::symlink_metadata(dir.join(name)), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if absent(CERT_FILE) && absent(KEY_FILE) {
            match Self::create(dir) {
                // Another process created it between the check and the write.
                Err(CaError::Exists { .. }) => {}
                other => return other,
            }
        }
        Self::load(dir)
    }

    /// The CA certificate as PEM, for export to the agent's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER), sent as the second element of every leaf chain.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The issuer that signs leaves.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// When the CA certificate expires; leaves never outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Checks the parts against each other and builds the issuer.
    fn from_parts(
        cert_der: CertificateDer<'static>,
        cert_pem: String,
        key: KeyPair,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<BottleCa, CaError> {
        let bad_cert = |reason: &str| CaError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: reason.to_string(),
        };
        let info = der::parse_certificate(&cert_der).map_err(bad_cert)?;
        match info.basic_constraints_ca {
            Some(true) => {}
            Some(false) => {
                return Err(CaError::NotCa {
                    path: cert_path.to_path_buf(),
                    reason: "basicConstraints says CA:FALSE",
                });
            }
            None => {
                return Err(CaError::NotCa {
                    path: cert_path.to_path_buf(),
                    reason: "it has no basicConstraints extension with CA:TRUE",
                });
            }
        }
        if info.public_key != key.der_bytes() {
            return Err(CaError::KeyMismatch {
                key: key_path.to_path_buf(),
                cert: cert_path.to_path_buf(),
            });
        }
        let now = OffsetDateTime::now_utc();
        if now < info.not_before || now >= info.not_after {
            return Err(CaError::NotValidNow {
                path: cert_path.to_path_buf(),
                not_before: info.not_before,
                not_after: info.not_after,
            });
        }
        let subject = info.subject.to_vec();
        let not_after = info.not_after;

        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| bad_cert(&e.to_string()))?;
        let usages = issuer.key_usages();
        if !usages.is_empty() && !usages.contains(&KeyUsagePurpose::KeyCertSign) {
            return Err(CaError::NotCa {
                path: cert_path.to_path_buf(),
                reason: "its keyUsage lacks keyCertSign",
            });
        }
        if not_after - now < Duration::days(30) {
            tracing::warn!(cert = %cert_path.display(), %not_after, "the bottle CA expires within 30 days");
        }
        let ca = BottleCa {
            issuer,
            cert_der,
            cert_pem,
            not_after,
        };
        ca.self_test(&subject, now)
            .map_err(|reason| CaError::SelfTest {
                path: cert_path.to_path_buf(),
                reason,
            })?;
        Ok(ca)
    }

    /// Signs a throwaway leaf and verifies it the way a rustls client would.
    fn self_test(&self, subject: &[u8], now: OffsetDateTime) -> Result<(), String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let (leaf, _) =
            mint::sign_leaf(self, SELF_TEST_HOST, &key, now).map_err(|e| e.to_string())?;
        let leaf_info = der::parse_certificate(&leaf).map_err(str::to_string)?;
        if leaf_info.issuer != subject {
            // rcgen re-encodes the subject it read; an exotic encoding would not round-trip.
            return Err("the CA subject name cannot be reproduced in leaf certificates".into());
        }
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| format!("not usable as a trust anchor: {e}"))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(SELF_TEST_HOST).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A random positive 16-byte serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, rustls::crypto::GetRandomFailed> {
    let mut bytes = random_bytes::<16>()?;
    // Positive and exactly 16 bytes long in DER: top bit clear, first byte non-zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Maps an open/read error of a CA file.
fn read_error(dir: &Path, path: &Path, what: &'static str, source: io::Error) -> CaError {
    if source.kind() == io::ErrorKind::NotFound {
        CaError::Missing {
            what,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    } else {
        CaError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads the certificate file as text.
fn read_cert_file(dir: &Path, path: &Path) -> Result<String, CaError> {
    let bytes = fs::read(path).map_err(|e| read_error(dir, path, "certificate", e))?;
    String::from_utf8(bytes).map_err(|_| CaError::NotPem {
        path: path.to_path_buf(),
        what: "CERTIFICATE",
        reason: "the file is not text".into(),
    })
}

/// Reads the key file, refusing it if group or others may access it. The mode is checked
/// on the opened file, so the file checked is the file read.
fn read_key_file(dir: &Path, path: &Path) -> Result<Vec<u8>, CaError> {
    let mut file = File::open(path).map_err(|e| read_error(dir, path, "private key", e))?;
    let meta = file.metadata().map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(CaError::KeyModeTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| CaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Turns the parsed key into a signing key pair, explaining unsupported formats.
fn key_pair(path: &Path, der: &PrivateKeyDer<'_>) -> Result<KeyPair, CaError> {
    let convert = |kind: &str| CaError::BadKey {
        path: path.to_path_buf(),
        reason: format!(
            "it is a {kind} key, but PKCS#8 (\"BEGIN PRIVATE KEY\") is required; convert it with `openssl pkcs8 -topk8 -nocrypt -in {0} -out {0}.pkcs8`",
            path.display()
        ),
    };
    match der {
        PrivateKeyDer::Pkcs8(_) => KeyPair::try_from(der).map_err(|e| CaError::BadKey {
            path: path.to_path_buf(),
            reason: format!("unsupported or corrupt PKCS#8 key ({e}); ECDSA P-256/P-384, Ed25519 and RSA are supported"),
        }),
        PrivateKeyDer::Sec1(_) => Err(convert("SEC1 (\"BEGIN EC PRIVATE KEY\")")),
        PrivateKeyDer::Pkcs1(_) => Err(convert("PKCS#1 (\"BEGIN RSA PRIVATE KEY\")")),
        _ => Err(convert("non-PKCS#8")),
    }
}

/// Writes a new file atomically without ever replacing an existing one: the content goes
/// to a temporary file created with `mode`, which is then hard-linked to `path` (linking,
/// unlike rename, fails if `path` exists) and unlinked.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let write_err = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let suffix = hex(&random_bytes::<6>().map_err(|_| CaError::Random)?);
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("ca");
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}-{suffix}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CaError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(write_err(e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A unique directory under the system temp dir, removed on drop.
    pub(crate) struct TestDir(pub(crate) PathBuf);

    impl TestDir {
        pub(crate) fn new(tag: &str) -> TestDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let rand = hex(&random_bytes::<4>().expect("random"));
            let path = std::env::temp_dir().join(format!(
                "bottleneck-{tag}-{}-{n}-{rand}",
                std::process::id()
            ));
            fs::create_dir_all(&path).expect("create test dir");
            TestDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str) {
        fs::write(dir.join(CERT_FILE), cert_pem).expect("write cert");
        let key_path = dir.join(KEY_FILE);
        fs::write(&key_path, key_pem).expect("write key");
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn ca_create_then_load_round_trips() {
        let dir = TestDir::new("ca-roundtrip");
        let created = BottleCa::create(dir.path()).expect("create");
        let key_mode = fs::metadata(dir.path().join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        assert!(
            created
                .cert_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        let loaded = BottleCa::load(dir.path()).expect("load");
        assert_eq!(loaded.cert_pem(), created.cert_pem());
        assert_eq!(loaded.cert_der(), created.cert_der());
        let info = der::parse_certificate(loaded.cert_der()).expect("parse");
        assert_eq!(info.basic_constraints_ca, Some(true));
        assert!(info.not_after - OffsetDateTime::now_utc() > Duration::days(3649));
        assert!(
            String::from_utf8_lossy(info.subject).contains("bottleneck bottle CA "),
            "CN missing"
        );
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn ca_two_creates_get_different_names_and_keys() {
        let (a, b) = (TestDir::new("ca-a"), TestDir::new("ca-b"));
        let ca_a = BottleCa::create(a.path()).expect("create a");
        let ca_b = BottleCa::create(b.path()).expect("create b");
        let (ia, ib) = (
            der::parse_certificate(ca_a.cert_der()).expect("a"),
            der::parse_certificate(ca_b.cert_der()).expect("b"),
        );
        assert_ne!(ia.subject, ib.subject);
        assert_ne!(ia.public_key, ib.public_key);
    }

    #[test]
    fn ca_load_refuses_group_readable_key() {
        let dir = TestDir::new("ca-mode");
        BottleCa::create(dir.path()).expect("create");
        let key_path = dir.path().join(KEY_FILE);
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = BottleCa::load(dir.path()).expect_err("0644 key must be refused");
        assert!(
            matches!(err, CaError::KeyModeTooOpen { mode: 0o644, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("0644"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 600 {}", key_path.display())),
            "{msg}"
        );
    }

    #[test]
    fn ca_load_refuses_key_of_another_ca() {
        let (a, b) = (TestDir::new("ca-mis-a"), TestDir::new("ca-mis-b"));
        BottleCa::create(a.path()).expect("create a");
        BottleCa::create(b.path()).expect("create b");
        fs::copy(b.path().join(KEY_FILE), a.path().join(KEY_FILE)).expect("copy key");
        let err = BottleCa::load(a.path()).expect_err("mismatched key must be refused");
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn ca_load_refuses_non_ca_certificate() {
        for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
            let dir = TestDir::new("ca-leaf");
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec!["leaf.test".to_string()]).expect("params");
            params.is_ca = is_ca;
            let cert = params.self_signed(&key).expect("sign");
            write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
            let err = BottleCa::load(dir.path()).expect_err("a leaf is not a CA");
            assert!(matches!(err, CaError::NotCa { .. }), "{err:?}");
            assert!(err.to_string().contains("is not a CA certificate"), "{err}");
        }
    }

    #[test]
    fn ca_load_refuses_ca_without_key_cert_sign() {
        let dir = TestDir::new("ca-ku");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("sign");
        write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
        let err = BottleCa::load(dir.path()).expect_err("no keyCertSign");
        assert!(matches!(err, CaError::NotCa { .. }), "{err:?}");
    }

    #[test]
    fn ca_load_refuses_expired_ca() {
        let dir = TestDir::new("ca-expired");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).expect("sign");
        write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
        let err = BottleCa::load(dir.path()).expect_err("expired");
        assert!(matches!(err, CaError::NotValidNow { .. }), "{err:?}");
    }

    #[test]
    fn ca_accepts_an_externally_made_ca() {
        // A CA made elsewhere (own name, no pathlen, RSA-free P-384 key) loads and signs.
        let dir = TestDir::new("ca-external");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example Org");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let cert = params.self_signed(&key).expect("sign");
        write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
        let ca = BottleCa::load(dir.path()).expect("load");
        assert_eq!(ca.not_after(), rcgen::date_time_ymd(2090, 1, 1));
    }

    #[test]
    fn ca_missing_files_name_the_path() {
        let dir = TestDir::new("ca-missing");
        let nowhere = dir.path().join("no-such-dir");
        let err = BottleCa::load(&nowhere).expect_err("missing dir");
        assert!(
            matches!(&err, CaError::Missing { what: "certificate", path, .. } if *path == nowhere.join(CERT_FILE)),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&nowhere.join(CERT_FILE).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("bottleneck-gateway ca init"), "{msg}");

        BottleCa::create(dir.path()).expect("create");
        fs::remove_file(dir.path().join(KEY_FILE)).expect("rm key");
        let err = BottleCa::load(dir.path()).expect_err("missing key");
        assert!(
            matches!(&err, CaError::Missing { what: "private key", path, .. } if *path == dir.path().join(KEY_FILE)),
            "{err:?}"
        );
        // load_or_create must not paper over half a CA.
        let err = BottleCa::load_or_create(dir.path()).expect_err("half a CA");
        assert!(matches!(err, CaError::Missing { .. }), "{err:?}");
    }

    #[test]
    fn ca_load_reports_unreadable_and_non_pem_files() {
        let dir = TestDir::new("ca-garbage");
        write_pair(dir.path(), "not a certificate\n", "not a key\n");
        let err = BottleCa::load(dir.path()).expect_err("garbage");
        assert!(
            matches!(
                err,
                CaError::NotPem {
                    what: "CERTIFICATE",
                    ..
                }
            ),
            "{err:?}"
        );

        let real = TestDir::new("ca-garbage-real");
        let ca = BottleCa::create(real.path()).expect("create");
        write_pair(
            dir.path(),
            ca.cert_pem(),
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
        );
        let err = BottleCa::load(dir.path()).expect_err("sec1 garbage");
        assert!(
            matches!(err, CaError::NotPem { .. } | CaError::BadKey { .. }),
            "{err:?}"
        );

        // A directory where the key should be.
        fs::remove_file(dir.path().join(KEY_FILE)).expect("rm");
        fs::create_dir(dir.path().join(KEY_FILE)).expect("mkdir");
        let err = BottleCa::load(dir.path()).expect_err("dir as key");
        assert!(
            matches!(err, CaError::Read { .. } | CaError::KeyModeTooOpen { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn ca_create_refuses_to_overwrite() {
        let dir = TestDir::new("ca-overwrite");
        let first = BottleCa::create(dir.path()).expect("create");
        let key_before = fs::read(dir.path().join(KEY_FILE)).expect("key");
        let err = BottleCa::create(dir.path()).expect_err("second create");
        assert!(matches!(err, CaError::Exists { .. }), "{err:?}");
        assert_eq!(
            fs::read(dir.path().join(KEY_FILE)).expect("key"),
            key_before
        );
        let again = BottleCa::load_or_create(dir.path()).expect("load_or_create");
        assert_eq!(again.cert_pem(), first.cert_pem());

        // Only a key present (as after a crash between the two writes): still no overwrite.
        fs::remove_file(dir.path().join(CERT_FILE)).expect("rm cert");
        assert!(matches!(
            BottleCa::create(dir.path()),
            Err(CaError::Exists { .. })
        ));
    }

    #[test]
    fn ca_load_or_create_creates_a_missing_dir() {
        let dir = TestDir::new("ca-loc");
        let nested = dir.path().join("a/b");
        let created = BottleCa::load_or_create(&nested).expect("create");
        let mode = fs::metadata(&nested).expect("dir").permissions().mode();
        assert_eq!(mode & 0o077, 0, "new CA dir must be private, mode {mode:o}");
        let loaded = BottleCa::load_or_create(&nested).expect("load");
        assert_eq!(created.cert_pem(), loaded.cert_pem());
    }
}
