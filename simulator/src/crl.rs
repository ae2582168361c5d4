//! The simulator's CRLs: the full list and one partition per municipality
//! (the distribution point in each certificate), signed by the CA,
//! published daily and on demand, served with an ETag.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use der::Encode;
use der::asn1::{BitString, GeneralizedTime, OctetString, Uint, UtcTime};
use kihon4_core::jpki::CrlPartition;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::{Digest, Sha256};
use x509_cert::Version;
use x509_cert::crl::{RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, CrlReason};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::DynSignatureAlgorithmIdentifier;
use x509_cert::time::Time;

use crate::ca::Ca;
use crate::store::Revocation;

/// How long a CRL may be relied on: published daily, with two hours' grace.
pub const VALIDITY: chrono::Duration = chrono::Duration::hours(26);

/// One published CRL and its ETag.
#[derive(Clone, Debug)]
pub struct CrlFile {
    pub der: Vec<u8>,
    pub etag: String,
}

impl CrlFile {
    pub fn new(der: Vec<u8>) -> Self {
        let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&der)[..16]));
        Self { der, etag }
    }
}

/// What the simulator serves until the next publication.
#[derive(Clone, Debug)]
pub struct Published {
    pub number: u64,
    pub this_update: DateTime<Utc>,
    pub entries: usize,
    pub full: CrlFile,
    /// By partition id.
    pub partitions: BTreeMap<String, (CrlPartition, CrlFile)>,
}

/// A partition's stable id: part of the SHA-256 of its municipality.
pub fn partition_id(p: &CrlPartition) -> String {
    hex::encode(&Sha256::digest(format!("{}/{}", p.prefecture, p.city).as_bytes())[..8])
}

fn x509_time(t: DateTime<Utc>) -> anyhow::Result<Time> {
    let since = Duration::from_secs(u64::try_from(t.timestamp())?);
    Ok(if t.year() < 2050 {
        Time::UtcTime(UtcTime::from_unix_duration(since)?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_unix_duration(since)?)
    })
}

/// The CRLReason for one of the codes the simulator uses.
pub fn reason(code: u8) -> CrlReason {
    match code {
        1 => CrlReason::KeyCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        _ => CrlReason::Unspecified,
    }
}

fn extension<T: Encode>(
    id: der::asn1::ObjectIdentifier,
    critical: bool,
    value: &T,
) -> anyhow::Result<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// Builds and signs one CRL over `entries`; with `partition`, an
/// issuingDistributionPoint names the municipality it covers.
pub fn build(
    ca: &Ca,
    number: u64,
    this_update: DateTime<Utc>,
    entries: &[&Revocation],
    partition: Option<&CrlPartition>,
) -> anyhow::Result<Vec<u8>> {
    use const_oid::AssociatedOid;
    let revoked = entries
        .iter()
        .map(|r| {
            let serial = hex::decode(padded(r.serial.as_str()))?;
            Ok(RevokedCert {
                serial_number: SerialNumber::new(&serial)?,
                revocation_date: x509_time(r.revoked_at)?,
                crl_entry_extensions: Some(vec![extension(
                    CrlReason::OID,
                    false,
                    &reason(r.reason),
                )?]),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut extensions = vec![
        extension(
            AuthorityKeyIdentifier::OID,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca.key_id.clone())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?,
        extension(
            CrlNumber::OID,
            false,
            &CrlNumber(Uint::new(&number.to_be_bytes())?),
        )?,
    ];
    if let Some(p) = partition {
        let idp = IssuingDistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![
                GeneralName::DirectoryName(p.directory_name()?),
            ])),
            only_contains_user_certs: true,
            only_contains_ca_certs: false,
            only_some_reasons: None,
            indirect_crl: false,
            only_contains_attribute_certs: false,
        };
        // Not IssuingDistributionPoint::OID: x509-cert 0.2.5 maps it to
        // id-pe-subjectInfoAccess, which OpenSSL (rightly) shows as such.
        extensions.push(extension(
            const_oid::db::rfc5280::ID_CE_ISSUING_DISTRIBUTION_POINT,
            true,
            &idp,
        )?);
    }
    let tbs = TbsCertList {
        version: Version::V2,
        signature: ca.signer.signature_algorithm_identifier()?,
        issuer: ca.name().clone(),
        this_update: x509_time(this_update)?,
        next_update: Some(x509_time(this_update + VALIDITY)?),
        revoked_certificates: (!revoked.is_empty()).then_some(revoked),
        crl_extensions: Some(extensions),
    };
    // The TBS is encoded once: signed, then wrapped as it is (a million
    // entries are too many to encode twice).
    let tbs_der = tbs.to_der()?;
    let signature = ca.signer.sign(&tbs_der);
    let algorithm = tbs.signature.to_der()?;
    let bits = BitString::from_bytes(&signature.to_bytes())?.to_der()?;
    let body_len = tbs_der.len() + algorithm.len() + bits.len();
    let mut der =
        der::Header::new(der::Tag::Sequence, der::Length::try_from(body_len)?)?.to_der()?;
    der.reserve(body_len);
    der.extend_from_slice(&tbs_der);
    der.extend_from_slice(&algorithm);
    der.extend_from_slice(&bits);
    Ok(der)
}

fn padded(hex: &str) -> String {
    if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    }
}

/// Builds the full CRL and every partition's.
pub fn publish(
    ca: &Ca,
    number: u64,
    now: DateTime<Utc>,
    revocations: &[Revocation],
) -> anyhow::Result<Published> {
    let all: Vec<&Revocation> = revocations.iter().collect();
    let full = CrlFile::new(build(ca, number, now, &all, None)?);
    let mut by_partition: BTreeMap<String, (CrlPartition, Vec<&Revocation>)> = BTreeMap::new();
    for r in revocations {
        by_partition
            .entry(partition_id(&r.partition))
            .or_insert_with(|| (r.partition.clone(), Vec::new()))
            .1
            .push(r);
    }
    let partitions = by_partition
        .into_iter()
        .map(|(id, (p, entries))| {
            let file = CrlFile::new(build(ca, number, now, &entries, Some(&p))?);
            Ok((id, (p, file)))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Published {
        number,
        this_update: now,
        entries: revocations.len(),
        full,
        partitions,
    })
}
