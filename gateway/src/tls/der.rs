//! A minimal, strict DER reader for the few X.509 fields the CA checks need: the subject,
//! the validity period, the public key and basicConstraints.
//!
//! rcgen parses certificates with x509-parser internally but does not expose the parsed
//! basicConstraints, validity or public key, and x509-parser is not a direct dependency of
//! this crate. This reader walks the fixed structure of RFC 5280 `TBSCertificate` only; it
//! never panics on hostile input (the CA file is user-supplied).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Why a certificate could not be read.
pub(crate) type DerError = &'static str;

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;

/// DER content of the OID 2.5.29.19 (basicConstraints).
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// One tag-length-value element: its tag, its content, and its whole encoding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
    pub(crate) raw: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and the rest.
pub(crate) fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or("truncated element")?;
    if tag & 0x1f == 0x1f {
        // X.509 certificates only use low tag numbers.
        return Err("unsupported multi-byte tag");
    }
    let (&first, mut rest) = rest.split_first().ok_or("truncated length")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err("indefinite length is not DER");
        }
        if count > 4 {
            return Err("length too large");
        }
        let (bytes, after) = rest.split_at_checked(count).ok_or("truncated length")?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (content, rest) = rest.split_at_checked(len).ok_or("truncated content")?;
    // `rest` is a suffix of `input`, so this is exactly the element's encoding.
    let raw = input
        .get(..input.len() - rest.len())
        .ok_or("truncated content")?;
    Ok((Tlv { tag, content, raw }, rest))
}

/// Reads one element that must carry `tag`.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(Tlv<'a>, &'a [u8]), DerError> {
    let (tlv, rest) = read_tlv(input)?;
    if tlv.tag != tag {
        return Err(what);
    }
    Ok((tlv, rest))
}

/// What the CA checks need from a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo<'a> {
    /// The issuer Name, whole encoding.
    pub(crate) issuer: &'a [u8],
    /// The subject Name, whole encoding (compared byte for byte with leaf issuers).
    pub(crate) subject: &'a [u8],
    /// notBefore.
    pub(crate) not_before: OffsetDateTime,
    /// notAfter.
    pub(crate) not_after: OffsetDateTime,
    /// The subjectPublicKey bits (without the unused-bits octet).
    pub(crate) public_key: &'a [u8],
    /// basicConstraints cA, or `None` without the extension.
    pub(crate) basic_constraints_ca: Option<bool>,
}

/// Parses the parts of an X.509 certificate that [`CertInfo`] holds.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<CertInfo<'_>, DerError> {
    let (cert, rest) = expect(der, TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate");
    }
    let (tbs, _) = expect(
        cert.content,
        TAG_SEQUENCE,
        "tbsCertificate is not a SEQUENCE",
    )?;
    let mut fields = tbs.content;

    let (first, after) = read_tlv(fields)?;
    if first.tag == TAG_VERSION {
        fields = after;
    }
    let (_serial, fields) = expect(fields, TAG_INTEGER, "serialNumber is not an INTEGER")?;
    let (_sig, fields) = expect(
        fields,
        TAG_SEQUENCE,
        "signature algorithm is not a SEQUENCE",
    )?;
    let (issuer, fields) = expect(fields, TAG_SEQUENCE, "issuer is not a Name")?;
    let (validity, fields) = expect(fields, TAG_SEQUENCE, "validity is not a SEQUENCE")?;
    let (subject, fields) = expect(fields, TAG_SEQUENCE, "subject is not a Name")?;
    let (spki, mut fields) = expect(
        fields,
        TAG_SEQUENCE,
        "subjectPublicKeyInfo is not a SEQUENCE",
    )?;

    let (not_before, after) = read_tlv(validity.content)?;
    let (not_after, _) = read_tlv(after)?;
    let not_before = parse_time(not_before)?;
    let not_after = parse_time(not_after)?;

    let (_alg, after) = expect(
        spki.content,
        TAG_SEQUENCE,
        "public key algorithm is not a SEQUENCE",
    )?;
    let (bits, _) = expect(
        after,
        TAG_BIT_STRING,
        "subjectPublicKey is not a BIT STRING",
    )?;
    let public_key = match bits.content.split_first() {
        Some((0, key)) => key,
        _ => return Err("subjectPublicKey has unused bits"),
    };

    let mut basic_constraints_ca = None;
    while !fields.is_empty() {
        let (field, after) = read_tlv(fields)?;
        fields = after;
        if field.tag == TAG_EXTENSIONS {
            basic_constraints_ca = find_basic_constraints(field.content)?;
        }
    }

    Ok(CertInfo {
        issuer: issuer.raw,
        subject: subject.raw,
        not_before,
        not_after,
        public_key,
        basic_constraints_ca,
    })
}

/// Walks `[3] EXPLICIT Extensions` and returns basicConstraints cA if present.
fn find_basic_constraints(explicit: &[u8]) -> Result<Option<bool>, DerError> {
    let (list, _) = expect(explicit, TAG_SEQUENCE, "extensions are not a SEQUENCE")?;
    let mut rest = list.content;
    while !rest.is_empty() {
        let (ext, after) = expect(rest, TAG_SEQUENCE, "extension is not a SEQUENCE")?;
        rest = after;
        let (oid, mut inner) = expect(ext.content, TAG_OID, "extension id is not an OID")?;
        if oid.content != OID_BASIC_CONSTRAINTS {
            continue;
        }
        let (next, after) = read_tlv(inner)?;
        if next.tag == TAG_BOOLEAN {
            inner = after; // the `critical` flag
        }
        let (value, _) = expect(
            inner,
            TAG_OCTET_STRING,
            "extension value is not an OCTET STRING",
        )?;
        let (constraints, _) = expect(
            value.content,
            TAG_SEQUENCE,
            "basicConstraints is not a SEQUENCE",
        )?;
        // cA BOOLEAN DEFAULT FALSE: an empty SEQUENCE means CA:FALSE.
        return Ok(Some(match read_tlv(constraints.content) {
            Ok((flag, _)) if flag.tag == TAG_BOOLEAN => flag.content.iter().any(|&b| b != 0),
            _ => false,
        }));
    }
    Ok(None)
}

/// Parses UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tlv: Tlv<'_>) -> Result<OffsetDateTime, DerError> {
    let text = tlv.content;
    let (year, rest) = match tlv.tag {
        TAG_UTC_TIME => {
            let (yy, rest) = text.split_at_checked(2).ok_or("truncated UTCTime")?;
            let yy = digits(yy)? as i32;
            // RFC 5280 4.1.2.5.1: YY >= 50 means 19YY.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        TAG_GENERALIZED_TIME => {
            let (yyyy, rest) = text
                .split_at_checked(4)
                .ok_or("truncated GeneralizedTime")?;
            (digits(yyyy)? as i32, rest)
        }
        _ => return Err("validity time is neither UTCTime nor GeneralizedTime"),
    };
    if rest.len() != 11 || rest.last() != Some(&b'Z') {
        return Err("validity time is not of the form ...HHMMSSZ");
    }
    let field = |i: usize| rest.get(i..i + 2).ok_or("truncated time").and_then(digits);
    let month = Month::try_from(field(0)? as u8).map_err(|_| "invalid month")?;
    let date =
        Date::from_calendar_date(year, month, field(2)? as u8).map_err(|_| "invalid date")?;
    let time = Time::from_hms(field(4)? as u8, field(6)? as u8, field(8)? as u8)
        .map_err(|_| "invalid time")?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Decimal value of ASCII digits (at most 4 of them).
fn digits(text: &[u8]) -> Result<u32, DerError> {
    text.iter().try_fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + u32::from(b - b'0'))
        } else {
            Err("non-digit in time")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn cert(is_ca: IsCa) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().expect("keygen");
        let mut params = CertificateParams::new(vec!["leaf.test".to_string()]).expect("params");
        params.is_ca = is_ca;
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2061, 4, 5);
        let cert = params.self_signed(&key).expect("sign");
        (cert.der().to_vec(), key)
    }

    #[test]
    fn der_reads_ca_fields() {
        use rcgen::PublicKeyData;
        let (der, key) = cert(IsCa::Ca(BasicConstraints::Constrained(0)));
        let info = parse_certificate(&der).expect("parse");
        assert_eq!(info.basic_constraints_ca, Some(true));
        assert_eq!(info.public_key, key.der_bytes());
        assert_eq!(info.not_before, rcgen::date_time_ymd(2001, 2, 3));
        assert_eq!(info.not_after, rcgen::date_time_ymd(2061, 4, 5));
    }

    #[test]
    fn der_reads_non_ca_fields() {
        assert_eq!(
            parse_certificate(&cert(IsCa::NoCa).0)
                .expect("parse")
                .basic_constraints_ca,
            None
        );
        let explicit = cert(IsCa::ExplicitNoCa).0;
        assert_eq!(
            parse_certificate(&explicit)
                .expect("parse")
                .basic_constraints_ca,
            Some(false)
        );
    }

    #[test]
    fn der_truncations_never_panic() {
        let (der, _) = cert(IsCa::Ca(BasicConstraints::Unconstrained));
        for end in 0..der.len() {
            assert!(
                parse_certificate(&der[..end]).is_err(),
                "prefix {end} parsed"
            );
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = parse_certificate(&bad);
        }
    }
}
