//! Reading a CRL as a stream
//! (docs/architecture.md#dependencies-and-measured-choices): the DER is
//! walked once from any reader, the signature is checked over the TBS bytes
//! as they pass, and the revoked serials are matched against a set of
//! serials on the way, with no struct per entry and memory far below the
//! CRL's size.

use std::collections::HashSet;
use std::io::{BufReader, Read};

use chrono::{DateTime, NaiveDateTime, Utc};
use const_oid::ObjectIdentifier;
use der::Decode;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::Extensions;

use crate::domain::CertSerial;

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const ISSUING_DISTRIBUTION_POINT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.28");
const AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const CRL_REASON: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.21");
/// Clock skew tolerated on `thisUpdate`.
const SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Why a CRL cannot be relied on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("the CRL is not valid DER: {0}")]
    Malformed(String),
    #[error("the CRL is signed with an algorithm other than sha256WithRSAEncryption")]
    UnsupportedAlgorithm,
    #[error("the CRL is not issued by the expected CA")]
    WrongIssuer,
    #[error("the CRL's signature does not verify")]
    BadSignature,
    #[error("the CRL has no nextUpdate or is past it")]
    Stale,
    #[error("the CRL's thisUpdate is in the future")]
    NotYetValid,
    #[error("reading the CRL failed: {0}")]
    Io(String),
}

fn malformed(what: &str) -> CrlError {
    CrlError::Malformed(what.to_owned())
}

/// The CA a CRL must come from.
pub struct CrlIssuer {
    name_der: Vec<u8>,
    key_id: Option<Vec<u8>>,
    key: VerifyingKey<Sha256>,
}

impl CrlIssuer {
    pub fn from_certificate(ca: &Certificate) -> Result<Self, CrlError> {
        use der::Encode;
        use der::referenced::OwnedToRef;
        let name_der = ca
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        let public =
            rsa::RsaPublicKey::try_from(ca.tbs_certificate.subject_public_key_info.owned_to_ref())
                .map_err(|_| CrlError::Malformed("the CA key is not RSA".into()))?;
        let key_id = super::subject_key_id(ca).map_err(|e| CrlError::Malformed(e.to_string()))?;
        Ok(Self {
            name_der,
            key_id,
            key: VerifyingKey::<Sha256>::new(public),
        })
    }
}

/// Serials to look for. Serials of up to 16 bytes (all J-LIS has issued so
/// far) are kept as integers, so that a million of them take a few tens of
/// megabytes; longer ones as bytes.
#[derive(Default)]
pub struct SerialSet {
    short: HashSet<u128>,
    long: HashSet<Box<[u8]>>,
}

fn as_u128(magnitude: &[u8]) -> Option<u128> {
    (magnitude.len() <= 16).then(|| {
        magnitude
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    })
}

impl SerialSet {
    pub fn insert(&mut self, serial: &CertSerial) {
        let bytes = serial_bytes(serial);
        match as_u128(&bytes) {
            Some(n) => {
                self.short.insert(n);
            }
            None => {
                self.long.insert(bytes.into_boxed_slice());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, magnitude: &[u8]) -> bool {
        match as_u128(magnitude) {
            Some(n) => self.short.contains(&n),
            None => self.long.contains(magnitude),
        }
    }
}

impl<'a> FromIterator<&'a CertSerial> for SerialSet {
    fn from_iter<I: IntoIterator<Item = &'a CertSerial>>(iter: I) -> Self {
        let mut set = Self::default();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

fn serial_bytes(serial: &CertSerial) -> Vec<u8> {
    let hex = serial.as_str();
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    hex::decode(padded).expect("a CertSerial is hex")
}

/// A revoked certificate the caller asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub serial: CertSerial,
    pub revoked_at: DateTime<Utc>,
    /// The CRLReason code, when the entry carries one.
    pub reason: Option<u8>,
}

/// What a verified CRL says, besides the matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSummary {
    pub this_update: DateTime<Utc>,
    pub next_update: DateTime<Utc>,
    pub crl_number: Option<u64>,
    pub entries: u64,
    /// For a partition: the directory name of the distribution point it
    /// covers (as `Name`'s display), from its issuingDistributionPoint.
    pub issuing_distribution_point: Option<String>,
}

/// The directory name an issuingDistributionPoint names, if that is what it names.
fn partition_name(der: &[u8]) -> Option<String> {
    use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
    use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
    let idp = IssuingDistributionPoint::from_der(der).ok()?;
    match idp.distribution_point? {
        DistributionPointName::FullName(names) => names.into_iter().find_map(|n| match n {
            GeneralName::DirectoryName(name) => Some(name.to_string()),
            _ => None,
        }),
        DistributionPointName::NameRelativeToCRLIssuer(_) => None,
    }
}

/// Reads the DER one TLV header at a time, hashing what passes while asked to.
struct Stream<R: Read> {
    inner: BufReader<R>,
    hasher: Option<Sha256>,
}

impl<R: Read> Stream<R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, CrlError> {
        let mut buf = vec![0u8; n];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), CrlError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => malformed("the CRL is cut short"),
            _ => CrlError::Io(e.to_string()),
        })?;
        if let Some(h) = &mut self.hasher {
            h.update(&*buf);
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, CrlError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    /// A tag and a definite length; returns (tag, length, header size).
    fn header(&mut self) -> Result<(u8, usize, usize), CrlError> {
        let tag = self.byte()?;
        if tag & 0x1f == 0x1f {
            return Err(malformed("high tag numbers do not occur in a CRL"));
        }
        let first = self.byte()?;
        if first < 0x80 {
            return Ok((tag, usize::from(first), 2));
        }
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return Err(malformed("an indefinite or oversized length"));
        }
        let mut len = 0usize;
        for _ in 0..count {
            len = (len << 8) | usize::from(self.byte()?);
        }
        Ok((tag, len, 2 + count))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<(usize, usize), CrlError> {
        let (t, len, header) = self.header()?;
        if t != tag {
            return Err(CrlError::Malformed(format!("expected {what}")));
        }
        Ok((len, header))
    }

    /// A whole TLV, header included, whose header was just read.
    fn tlv(&mut self, tag: u8, len: usize) -> Result<Vec<u8>, CrlError> {
        let value = self.bytes(len)?;
        let mut out = Vec::with_capacity(len + 6);
        out.push(tag);
        encode_length(len, &mut out);
        out.extend_from_slice(&value);
        Ok(out)
    }
}

fn encode_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn time(tag: u8, value: &[u8]) -> Result<DateTime<Utc>, CrlError> {
    let text = std::str::from_utf8(value).map_err(|_| malformed("a time is not ASCII"))?;
    let (format, text) = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx (RFC 5280).
            let year: u32 = text
                .get(0..2)
                .and_then(|y| y.parse().ok())
                .ok_or_else(|| malformed("a bad UTCTime"))?;
            let century = if year >= 50 { "19" } else { "20" };
            ("%Y%m%d%H%M%SZ", format!("{century}{text}"))
        }
        0x18 => ("%Y%m%d%H%M%SZ", text.to_owned()),
        _ => return Err(malformed("expected a time")),
    };
    NaiveDateTime::parse_from_str(&text, format)
        .map(|t| t.and_utc())
        .map_err(|_| malformed("a time does not parse"))
}

/// Walks a DER CRL from `reader`: checks that `issuer` signed it with
/// sha256WithRSAEncryption and that it is current at `now`, and returns the
/// entries whose serials are in `wanted`.
pub fn check_crl<R: Read>(
    reader: R,
    issuer: &CrlIssuer,
    wanted: &SerialSet,
    now: DateTime<Utc>,
) -> Result<(CrlSummary, Vec<Revoked>), CrlError> {
    let mut s = Stream {
        inner: BufReader::with_capacity(256 * 1024, reader),
        hasher: None,
    };
    s.expect(0x30, "the CertificateList")?;
    // Everything of the TBSCertList, its header included, is what was signed.
    s.hasher = Some(Sha256::new());
    let (tbs_len, _) = s.expect(0x30, "the TBSCertList")?;
    let mut left = tbs_len;
    let take = |s: &mut Stream<R>, left: &mut usize| -> Result<(u8, usize), CrlError> {
        let (tag, len, header) = s.header()?;
        *left = left
            .checked_sub(header + len)
            .ok_or_else(|| malformed("a field runs past the TBSCertList"))?;
        Ok((tag, len))
    };

    let (mut tag, mut len) = take(&mut s, &mut left)?;
    if tag == 0x02 {
        let version = s.bytes(len)?;
        if version != [1] {
            return Err(malformed("only v2 CRLs are read"));
        }
        (tag, len) = take(&mut s, &mut left)?;
    }
    if tag != 0x30 {
        return Err(malformed("expected the signature algorithm"));
    }
    let algorithm = s.tlv(tag, len)?;
    check_algorithm(&algorithm)?;
    let (tag, len) = take(&mut s, &mut left)?;
    if tag != 0x30 {
        return Err(malformed("expected the issuer"));
    }
    if s.tlv(tag, len)? != issuer.name_der {
        return Err(CrlError::WrongIssuer);
    }
    let (tag, len) = take(&mut s, &mut left)?;
    let this_update = time(tag, &s.bytes(len)?)?;
    let mut next_update = None;
    let mut entries = 0u64;
    let mut matches = Vec::new();
    let mut crl_number = None;
    let mut issuing_distribution_point = None;
    let mut key_id = None;
    while left > 0 {
        let (tag, len) = take(&mut s, &mut left)?;
        match tag {
            0x17 | 0x18 if next_update.is_none() && entries == 0 => {
                next_update = Some(time(tag, &s.bytes(len)?)?)
            }
            0x30 => {
                entries = walk_entries(&mut s, len, wanted, &mut matches)?;
            }
            0xa0 => {
                let raw = s.bytes(len)?;
                let extensions = Extensions::from_der(&raw)
                    .map_err(|_| malformed("the CRL extensions do not parse"))?;
                for ext in extensions {
                    if ext.extn_id == CRL_NUMBER {
                        let n = der::asn1::Uint::from_der(ext.extn_value.as_bytes())
                            .map_err(|_| malformed("the CRL number does not parse"))?;
                        let bytes = n.as_bytes();
                        if bytes.len() <= 8 {
                            crl_number =
                                Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
                        }
                    } else if ext.extn_id == AUTHORITY_KEY_ID {
                        let aki = x509_cert::ext::pkix::AuthorityKeyIdentifier::from_der(
                            ext.extn_value.as_bytes(),
                        )
                        .map_err(|_| malformed("the authority key identifier does not parse"))?;
                        key_id = aki.key_identifier.map(|k| k.as_bytes().to_vec());
                    } else if ext.extn_id == ISSUING_DISTRIBUTION_POINT {
                        issuing_distribution_point =
                            Some(partition_name(ext.extn_value.as_bytes()).ok_or_else(|| {
                                malformed("the issuing distribution point is not a directory name")
                            })?);
                    } else if ext.critical {
                        return Err(malformed("an unknown critical CRL extension"));
                    }
                }
            }
            _ => return Err(malformed("an unexpected field in the TBSCertList")),
        }
    }
    let digest = s.hasher.take().expect("hashing the TBS").finalize();

    let (tag, len, _) = s.header()?;
    if tag != 0x30 {
        return Err(malformed("expected the outer signature algorithm"));
    }
    let outer_algorithm = s.tlv(tag, len)?;
    if outer_algorithm != algorithm {
        return Err(malformed("the two signature algorithms differ"));
    }
    let (bits_len, _) = s.expect(0x03, "the signature")?;
    let bits = s.bytes(bits_len)?;
    let (unused, signature) = bits
        .split_first()
        .ok_or_else(|| malformed("an empty signature"))?;
    if *unused != 0 {
        return Err(malformed("the signature is not whole bytes"));
    }
    let mut trailing = [0u8; 1];
    if s.inner
        .read(&mut trailing)
        .map_err(|e| CrlError::Io(e.to_string()))?
        != 0
    {
        return Err(malformed("bytes after the CRL"));
    }

    // Several CA generations share a name: the key identifier tells them apart.
    if let (Some(expected), Some(found)) = (&issuer.key_id, &key_id)
        && expected != found
    {
        return Err(CrlError::WrongIssuer);
    }
    let signature = Signature::try_from(signature).map_err(|_| CrlError::BadSignature)?;
    issuer
        .key
        .verify_prehash(&digest, &signature)
        .map_err(|_| CrlError::BadSignature)?;
    let next_update = next_update.ok_or(CrlError::Stale)?;
    if now >= next_update {
        return Err(CrlError::Stale);
    }
    if this_update > now + SKEW {
        return Err(CrlError::NotYetValid);
    }
    Ok((
        CrlSummary {
            this_update,
            next_update,
            crl_number,
            entries,
            issuing_distribution_point,
        },
        matches,
    ))
}

fn check_algorithm(tlv: &[u8]) -> Result<(), CrlError> {
    let id = x509_cert::spki::AlgorithmIdentifierOwned::from_der(tlv)
        .map_err(|_| malformed("the signature algorithm does not parse"))?;
    if id.oid != SHA256_WITH_RSA {
        return Err(CrlError::UnsupportedAlgorithm);
    }
    Ok(())
}

/// Walks `len` bytes of revokedCertificates; returns how many entries.
fn walk_entries<R: Read>(
    s: &mut Stream<R>,
    len: usize,
    wanted: &SerialSet,
    matches: &mut Vec<Revoked>,
) -> Result<u64, CrlError> {
    let mut left = len;
    let mut count = 0u64;
    // One buffer for every entry: nothing is allocated per entry.
    let mut buffer = vec![0u8; 256];
    while left > 0 {
        let (entry_len, header) = s.expect(0x30, "a revoked certificate")?;
        left = left
            .checked_sub(header + entry_len)
            .ok_or_else(|| malformed("an entry runs past the list"))?;
        if entry_len > buffer.len() {
            if entry_len > 64 * 1024 {
                return Err(malformed("an entry is implausibly large"));
            }
            buffer.resize(entry_len, 0);
        }
        s.fill(&mut buffer[..entry_len])?;
        let entry = &buffer[..entry_len];
        count += 1;
        let (serial, rest) = tlv_value(entry, 0x02)?;
        let magnitude = strip_sign(serial);
        if wanted.is_empty() || !wanted.contains(magnitude) {
            // The serial is all most entries are read for; the rest is skipped unparsed.
            continue;
        }
        let (date_tag, _) = rest
            .first()
            .map(|t| (*t, ()))
            .ok_or_else(|| malformed("an entry without a date"))?;
        let (date, rest) = tlv_value(rest, date_tag)?;
        let revoked_at = time(date_tag, date)?;
        let reason = if rest.is_empty() {
            None
        } else {
            entry_reason(rest)?
        };
        matches.push(Revoked {
            serial: CertSerial::from_be_bytes(magnitude)
                .map_err(|_| malformed("a serial is not positive"))?,
            revoked_at,
            reason,
        });
    }
    Ok(count)
}

fn strip_sign(serial: &[u8]) -> &[u8] {
    let zeros = serial.iter().take_while(|b| **b == 0).count();
    &serial[zeros.min(serial.len().saturating_sub(1))..]
}

/// The value of the TLV at the start of `bytes` with `tag`, and what follows.
fn tlv_value(bytes: &[u8], tag: u8) -> Result<(&[u8], &[u8]), CrlError> {
    let (&t, rest) = bytes
        .split_first()
        .ok_or_else(|| malformed("a field is missing"))?;
    if t != tag {
        return Err(malformed("an unexpected tag in an entry"));
    }
    let (&first, rest) = rest
        .split_first()
        .ok_or_else(|| malformed("a length is missing"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed("a bad length in an entry"));
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(malformed("an entry field runs past its entry"));
    }
    Ok(rest.split_at(len))
}

fn entry_reason(extensions_tlv: &[u8]) -> Result<Option<u8>, CrlError> {
    let extensions = Extensions::from_der(extensions_tlv)
        .map_err(|_| malformed("entry extensions do not parse"))?;
    for ext in extensions {
        if ext.extn_id == CRL_REASON {
            let value = ext.extn_value.as_bytes();
            // ENUMERATED, one byte.
            return match value {
                [0x0a, 0x01, code] => Ok(Some(*code)),
                _ => Err(malformed("a CRL reason does not parse")),
            };
        }
    }
    Ok(None)
}
