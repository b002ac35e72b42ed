//! Trusting the bottle's CA: validating it, adding it to the system bundles, writing a
//! combined bundle, and the environment variables that point common toolchains at it.
//!
//! The CA arrives as PEM text (`BOTTLENECK_CA`) or a PEM file (`BOTTLENECK_CA_FILE`). Each
//! certificate in it must be a CA certificate (basicConstraints `cA` true; if keyUsage is
//! present it must allow `keyCertSign`) that has not expired. A private key in the PEM is
//! refused: the CA key belongs to the gateway and must never reach the agent.
//!
//! Installation, all as root before privilege is dropped:
//! * every system bundle found ([`SYSTEM_BUNDLES`]: Debian/Ubuntu, Alpine, RHEL/Fedora,
//!   openSUSE paths; symlinks resolved, each file once) gets the CA appended unless it is
//!   already there (a restarted container does not grow its bundle), so tools reading the
//!   system store directly (OpenSSL's default path, Go, rustls-native-certs) trust it;
//! * `<trust dir>/ca.crt` holds the CA alone, `<trust dir>/ca-bundle.crt` the system roots
//!   (the first bundle found, if any) plus the CA;
//! * the agent's environment gets [`ENV_VARS`], each naming `ca-bundle.crt`.
//!
//! `SSL_CERT_DIR` is deliberately not set: the combined file already holds every root, the
//! system directory stays in effect for OpenSSL (it only adds roots), and pointing
//! `SSL_CERT_DIR` at a directory would make rustls-native-certs and Go read only that
//! directory instead of the file-plus-directory they use now.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files;

/// System CA bundles, in order of preference for the combined bundle.
///
/// The lab crate's shim fixture keeps a copy (`bottleneck_lab::shim::SYSTEM_BUNDLES`); a
/// unit test here checks that the two stay equal.
pub const SYSTEM_BUNDLES: [&str; 6] = [
    // Debian, Ubuntu, Alpine (ca-certificates), Arch (via symlink).
    "/etc/ssl/certs/ca-certificates.crt",
    // RHEL, CentOS, Fedora, Amazon Linux (the target of the next one).
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    // openSUSE.
    "/etc/ssl/ca-bundle.pem",
    // Alpine, LibreSSL, OpenBSD-style layouts.
    "/etc/ssl/cert.pem",
    // Older Fedora/RHEL OpenSSL default.
    "/etc/pki/tls/cert.pem",
];

/// Environment variables that point a toolchain at a CA bundle, all set to the combined
/// bundle (system roots plus the CA), so each tool trusts both.
pub const ENV_VARS: [&str; 14] = [
    // OpenSSL (curl built on it, Python's ssl, Ruby, PHP), Go, rustls-native-certs, uv.
    "SSL_CERT_FILE",
    // Node.js (Claude Code, Codex's npm wrapper, npm itself), Bun: added to the built-in roots.
    "NODE_EXTRA_CA_CERTS",
    // Python requests (pip's vendored copy too), Poetry.
    "REQUESTS_CA_BUNDLE",
    // curl and libcurl users.
    "CURL_CA_BUNDLE",
    // git over HTTPS.
    "GIT_SSL_CAINFO",
    // pip.
    "PIP_CERT",
    // Deno.
    "DENO_CERT",
    // AWS CLI and SDKs.
    "AWS_CA_BUNDLE",
    // cargo.
    "CARGO_HTTP_CAINFO",
    // npm's `cafile` (replaces npm's roots, hence the full bundle).
    "NPM_CONFIG_CAFILE",
    // Yarn 2+ (`httpsCaFilePath`).
    "YARN_HTTPS_CA_FILE_PATH",
    // gRPC core (Python/Ruby/C++ gRPC clients).
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    // httplib2 (Google API clients for Python).
    "HTTPLIB2_CA_CERTS",
    // Ruby Bundler.
    "BUNDLE_SSL_CA_CERT",
];

/// The file name of the CA alone inside the trust directory.
pub const CA_FILE_NAME: &str = "ca.crt";
/// The file name of the combined bundle inside the trust directory.
pub const BUNDLE_FILE_NAME: &str = "ca-bundle.crt";

/// One validated CA certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The subject, for messages.
    pub subject: String,
}

impl CaCert {
    /// The certificate as canonical PEM (64-column base64).
    pub fn pem(&self) -> String {
        to_pem("CERTIFICATE", &self.der)
    }
}

/// Why the CA is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    /// No certificate in the PEM text.
    #[error("the CA PEM contains no certificate")]
    NoCertificate,
    /// A PEM block could not be decoded.
    #[error("the CA PEM is malformed (block {index}): {reason}")]
    Pem {
        /// 1-based block number.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// The PEM holds a private key.
    #[error(
        "the CA PEM contains a private key ({label}): only the certificate may be given to the \
         agent; the key stays with the gateway"
    )]
    PrivateKey {
        /// The PEM label.
        label: String,
    },
    /// A PEM block that is not a certificate.
    #[error("the CA PEM contains a {label:?} block; only CERTIFICATE blocks are accepted")]
    UnexpectedBlock {
        /// The PEM label.
        label: String,
    },
    /// The DER does not parse as an X.509 certificate.
    #[error("CA certificate {index} does not parse as X.509: {reason}")]
    X509 {
        /// 1-based certificate number.
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// Not a CA certificate.
    #[error("certificate {subject:?} is not a CA certificate ({reason})")]
    NotCa {
        /// Its subject.
        subject: String,
        /// Which check failed.
        reason: &'static str,
    },
    /// The certificate has expired.
    #[error("CA certificate {subject:?} expired at {not_after}")]
    Expired {
        /// Its subject.
        subject: String,
        /// Its notAfter.
        not_after: String,
    },
}

/// Failure to install the CA.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct TrustError {
    /// What was being done.
    pub what: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// Parses and validates CA certificates from PEM text (one or more `CERTIFICATE` blocks;
/// text outside the blocks is ignored). `now` is seconds since the Unix epoch.
pub fn parse_ca(pem: &[u8], now: i64) -> Result<Vec<CaCert>, CaError> {
    let mut certs = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| CaError::Pem {
            index: i + 1,
            reason: e.to_string(),
        })?;
        if block.label.contains("PRIVATE KEY") {
            return Err(CaError::PrivateKey { label: block.label });
        }
        if block.label != "CERTIFICATE" {
            return Err(CaError::UnexpectedBlock { label: block.label });
        }
        certs.push(validate_ca_der(&block.contents, certs.len() + 1, now)?);
    }
    if certs.is_empty() {
        return Err(CaError::NoCertificate);
    }
    Ok(certs)
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn validate_ca_der(der: &[u8], index: usize, now: i64) -> Result<CaCert, CaError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CaError::X509 {
        index,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CaError::X509 {
            index,
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    let subject = cert.subject().to_string();
    let not_ca = |reason| CaError::NotCa {
        subject: subject.clone(),
        reason,
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(Some(_)) => return Err(not_ca("basicConstraints has cA=false")),
        Ok(None) => return Err(not_ca("no basicConstraints extension")),
        Err(_) => return Err(not_ca("basicConstraints is malformed or repeated")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(not_ca("keyUsage does not allow keyCertSign"));
        }
        Ok(_) => {}
        Err(_) => return Err(not_ca("keyUsage is malformed or repeated")),
    }
    let not_after = cert.validity().not_after;
    if not_after.timestamp() < now {
        return Err(CaError::Expired {
            subject,
            not_after: not_after.to_string(),
        });
    }
    Ok(CaCert {
        der: der.to_vec(),
        subject,
    })
}

/// PEM encoding with 64-column base64 lines.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// `existing` with each CA appended unless its PEM is already in it (`None`: nothing to
/// add). A missing final newline is supplied before appending.
pub fn with_ca(existing: &str, cas: &[CaCert]) -> Option<String> {
    let missing: Vec<(String, &CaCert)> = cas
        .iter()
        .map(|ca| (ca.pem(), ca))
        .filter(|(pem, _)| !existing.contains(pem.trim_end()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut out = existing.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (pem, ca) in &missing {
        let subject: String = ca
            .subject
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let _ = writeln!(out, "# bottleneck CA: {subject}");
        out.push_str(pem);
    }
    Some(out)
}

/// The existing system bundles among `candidates`, resolved through symlinks, each file
/// once, in the order given.
pub fn find_system_bundles<S: AsRef<Path>>(candidates: &[S]) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for candidate in candidates {
        let Ok(real) = std::fs::canonicalize(candidate.as_ref()) else {
            continue;
        };
        if real.is_file() && seen.insert(real.clone()) {
            out.push(real);
        }
    }
    out
}

/// The environment variables that point toolchains at `bundle`.
pub fn env_vars(bundle: &Path) -> Vec<(String, PathBuf)> {
    ENV_VARS
        .iter()
        .map(|name| ((*name).to_owned(), bundle.to_owned()))
        .collect()
}

/// What [`install`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The combined bundle (system roots plus the CA) the environment points at.
    pub bundle: PathBuf,
    /// The CA alone.
    pub ca_file: PathBuf,
    /// System bundles the CA was appended to (already-present ones are not listed).
    pub system_updated: Vec<PathBuf>,
}

/// Installs `cas`: appended to each system bundle among `candidates` (normally
/// [`SYSTEM_BUNDLES`]), written alone and as a combined bundle into `trust_dir`.
pub fn install<S: AsRef<Path>>(
    cas: &[CaCert],
    candidates: &[S],
    trust_dir: &Path,
) -> Result<Installed, TrustError> {
    let err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| TrustError { what, path, source }
    };
    let mut system_updated = Vec::new();
    let mut primary: Option<String> = None;
    for bundle in find_system_bundles(candidates) {
        let text = std::fs::read(&bundle).map_err(err("reading the system CA bundle", &bundle))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let updated = match with_ca(&text, cas) {
            Some(new) => {
                files::replace(&bundle, new.as_bytes(), 0o644)
                    .map_err(err("adding the CA to the system bundle", &bundle))?;
                system_updated.push(bundle);
                new
            }
            None => text,
        };
        primary.get_or_insert(updated);
    }

    std::fs::create_dir_all(trust_dir).map_err(err("creating", trust_dir))?;
    let ca_file = trust_dir.join(CA_FILE_NAME);
    let ca_pem: String = cas.iter().map(CaCert::pem).collect();
    files::replace(&ca_file, ca_pem.as_bytes(), 0o644).map_err(err("writing", &ca_file))?;
    let bundle = trust_dir.join(BUNDLE_FILE_NAME);
    let combined = match primary {
        // The primary system bundle already has the CA appended.
        Some(text) => with_ca(&text, cas).unwrap_or(text),
        None => ca_pem,
    };
    files::replace(&bundle, combined.as_bytes(), 0o644).map_err(err("writing", &bundle))?;
    Ok(Installed {
        bundle,
        ca_file,
        system_updated,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    fn cert(ca: Option<IsCa>, usages: Vec<KeyUsagePurpose>, days: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["test.example".to_owned()]).unwrap();
        if let Some(ca) = ca {
            params.is_ca = ca;
        }
        params.key_usages = usages;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn ca_pem() -> String {
        cert(
            Some(IsCa::Ca(BasicConstraints::Unconstrained)),
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
            30,
        )
        .0
    }

    #[test]
    fn a_ca_certificate_is_accepted() {
        let pem = ca_pem();
        let cas = parse_ca(pem.as_bytes(), unix_now()).unwrap();
        assert_eq!(cas.len(), 1);
        // Canonical re-encoding equals rcgen's PEM (64 columns, LF).
        assert_eq!(cas[0].pem().trim(), pem.trim());
        // Comments around the block and a second CA are fine.
        let two = format!("# bottle CA\n{pem}\nsome text\n{}", ca_pem());
        assert_eq!(parse_ca(two.as_bytes(), unix_now()).unwrap().len(), 2);
    }

    #[test]
    fn bad_pem_is_refused() {
        assert_eq!(parse_ca(b"", unix_now()), Err(CaError::NoCertificate));
        assert_eq!(
            parse_ca(b"not a pem at all\n", unix_now()),
            Err(CaError::NoCertificate)
        );
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert!(matches!(
            parse_ca(truncated.as_bytes(), unix_now()),
            Err(CaError::Pem { index: 1, .. })
        ));
        let garbage = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_ca(garbage.as_bytes(), unix_now()),
            Err(CaError::Pem { .. })
        ));
        let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_ca(not_der.as_bytes(), unix_now()),
            Err(CaError::X509 { index: 1, .. })
        ));
    }

    #[test]
    fn private_keys_and_other_blocks_are_refused() {
        let (pem, key) = cert(
            Some(IsCa::Ca(BasicConstraints::Unconstrained)),
            vec![KeyUsagePurpose::KeyCertSign],
            30,
        );
        let err = parse_ca(format!("{pem}{key}").as_bytes(), unix_now()).unwrap_err();
        assert!(matches!(err, CaError::PrivateKey { .. }), "{err}");
        let csr =
            "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8=\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(
            parse_ca(csr.as_bytes(), unix_now()),
            Err(CaError::UnexpectedBlock { .. })
        ));
    }

    #[test]
    fn a_certificate_that_is_not_a_ca_is_refused() {
        let (leaf, _) = cert(None, vec![KeyUsagePurpose::DigitalSignature], 30);
        let err = parse_ca(leaf.as_bytes(), unix_now()).unwrap_err();
        assert!(
            matches!(
                err,
                CaError::NotCa {
                    reason: "no basicConstraints extension",
                    ..
                }
            ),
            "{err}"
        );
        let (explicit, _) = cert(Some(IsCa::ExplicitNoCa), vec![], 30);
        assert!(matches!(
            parse_ca(explicit.as_bytes(), unix_now()),
            Err(CaError::NotCa {
                reason: "basicConstraints has cA=false",
                ..
            })
        ));
        let (no_sign, _) = cert(
            Some(IsCa::Ca(BasicConstraints::Unconstrained)),
            vec![KeyUsagePurpose::DigitalSignature],
            30,
        );
        assert!(matches!(
            parse_ca(no_sign.as_bytes(), unix_now()),
            Err(CaError::NotCa {
                reason: "keyUsage does not allow keyCertSign",
                ..
            })
        ));
        // A CA followed by a leaf: the whole input is refused.
        let mixed = format!("{}{leaf}", ca_pem());
        assert!(parse_ca(mixed.as_bytes(), unix_now()).is_err());
    }

    #[test]
    fn an_expired_ca_is_refused() {
        let pem = ca_pem();
        let later = unix_now() + 31 * 86_400;
        let err = parse_ca(pem.as_bytes(), later).unwrap_err();
        assert!(matches!(err, CaError::Expired { .. }), "{err}");
    }

    #[test]
    fn pem_encoding_pads_correctly() {
        assert_eq!(
            to_pem("X", b"f"),
            "-----BEGIN X-----\nZg==\n-----END X-----\n"
        );
        assert_eq!(to_pem("X", b"fo").lines().nth(1), Some("Zm8="));
        assert_eq!(to_pem("X", b"foo").lines().nth(1), Some("Zm9v"));
        let long = to_pem("X", &[0u8; 100]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn appending_is_idempotent() {
        let cas = parse_ca(ca_pem().as_bytes(), unix_now()).unwrap();
        let system = "-----BEGIN CERTIFICATE-----\nroot1\n-----END CERTIFICATE-----";
        let once = with_ca(system, &cas).unwrap();
        assert!(once.starts_with(system));
        assert!(once.contains("\n# bottleneck CA: "));
        assert!(once.contains(cas[0].pem().as_str()));
        assert_eq!(with_ca(&once, &cas), None);
        assert_eq!(
            with_ca("", &cas)
                .unwrap()
                .matches("BEGIN CERTIFICATE")
                .count(),
            1
        );
    }

    #[test]
    fn bundle_assembly_in_a_directory() {
        let dir = std::env::temp_dir().join(format!("bninit-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let debian = dir.join("etc/ca-certificates.crt");
        let alias = dir.join("etc/cert.pem");
        let system = "-----BEGIN CERTIFICATE-----\nroot1\n-----END CERTIFICATE-----\n";
        std::fs::write(&debian, system).unwrap();
        std::os::unix::fs::symlink(&debian, &alias).unwrap();
        let cas = parse_ca(ca_pem().as_bytes(), unix_now()).unwrap();
        let candidates = [alias.clone(), debian.clone(), dir.join("etc/missing.pem")];
        assert_eq!(find_system_bundles(&candidates), vec![debian.clone()]);
        if !nix::unistd::geteuid().is_root() {
            // install() chowns to root.
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let trust = dir.join("trust");
        let done = install(&cas, &candidates, &trust).unwrap();
        assert_eq!(done.system_updated, vec![debian.clone()]);
        assert!(std::fs::symlink_metadata(&alias).unwrap().is_symlink());
        let updated = std::fs::read_to_string(&debian).unwrap();
        assert!(updated.starts_with(system) && updated.contains(&cas[0].pem()));
        let bundle = std::fs::read_to_string(&done.bundle).unwrap();
        assert_eq!(bundle, updated);
        assert_eq!(
            std::fs::read_to_string(&done.ca_file).unwrap(),
            cas[0].pem()
        );
        // Again (a restarted container): nothing appended twice.
        let again = install(&cas, &candidates, &trust).unwrap();
        assert!(again.system_updated.is_empty());
        assert_eq!(std::fs::read_to_string(&debian).unwrap(), updated);
        assert_eq!(std::fs::read_to_string(&again.bundle).unwrap(), updated);
        // No system bundle at all: the combined bundle is the CA alone.
        let bare = install(&cas, &[dir.join("none")], &dir.join("trust2")).unwrap();
        assert_eq!(std::fs::read_to_string(&bare.bundle).unwrap(), cas[0].pem());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_vars_all_point_at_the_bundle() {
        let vars = env_vars(Path::new("/etc/bottleneck/ca-bundle.crt"));
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        for required in [
            "NODE_EXTRA_CA_CERTS",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
            "DENO_CERT",
        ] {
            assert!(names.contains(&required), "{required}");
        }
        assert!(!names.contains(&"SSL_CERT_DIR"));
        assert!(
            vars.iter()
                .all(|(_, p)| p == Path::new("/etc/bottleneck/ca-bundle.crt"))
        );
    }

    /// The lab crate keeps a copy of [`SYSTEM_BUNDLES`] for its shim fixture (it cannot
    /// depend on this crate); this list is the source of truth.
    #[test]
    fn the_lab_fixture_knows_the_same_system_bundles() {
        assert_eq!(SYSTEM_BUNDLES, bottleneck_lab::shim::SYSTEM_BUNDLES);
        assert_eq!(
            find_system_bundles(&SYSTEM_BUNDLES),
            bottleneck_lab::shim::system_bundles()
        );
    }
}
