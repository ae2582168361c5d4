//! Reading and building JPKI signing certificates.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc4519::{COMMON_NAME, COUNTRY_NAME, LOCALITY_NAME, ORGANIZATIONAL_UNIT_NAME};
use der::asn1::{GeneralizedTime, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Tag, Tagged};
use rsa::pkcs1v15::{Signature, SigningKey};
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName, OtherName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, CertificatePolicies, CrlDistributionPoints, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use super::{JpkiError, era_of, oid};
use crate::domain::{
    Address, Basic4, BirthDate, CertSerial, Gender, Name as PersonName, ValueError,
};

/// What a certificate's policy says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateKind {
    Signing,
    UserIdentification,
    Other,
}

/// The municipality whose CRL partition lists a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrlPartition {
    pub prefecture: String,
    pub city: String,
}

impl CrlPartition {
    /// The distribution point's directory name: `C=JP, O=JPKI, OU=JPKI for
    /// digital signature, OU=CRL Distribution Points, OU=<prefecture>, CN=<city>`.
    pub fn directory_name(&self) -> Result<Name, JpkiError> {
        directory_name(&[
            (COUNTRY_NAME, "JP"),
            (const_oid::db::rfc4519::ORGANIZATION_NAME, "JPKI"),
            (ORGANIZATIONAL_UNIT_NAME, "JPKI for digital signature"),
            (ORGANIZATIONAL_UNIT_NAME, "CRL Distribution Points"),
            (ORGANIZATIONAL_UNIT_NAME, &self.prefecture),
            (COMMON_NAME, &self.city),
        ])
    }
}

/// A JPKI signing certificate as kihon4 reads it.
#[derive(Clone)]
pub struct SigningCertificate {
    pub serial: CertSerial,
    /// The subject CN: an opaque issue number.
    pub issue_number: String,
    /// The subject's first `L`.
    pub prefecture: Option<String>,
    /// The subject's second `L`.
    pub city: Option<String>,
    pub basic4: Basic4,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub crl_partition: Option<CrlPartition>,
    /// The issuing CA's key identifier: several CA generations share one name.
    pub authority_key_id: Option<Vec<u8>>,
    pub certificate: Certificate,
}

impl std::fmt::Debug for SigningCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCertificate")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A certificate's subject key identifier: how a CA generation is told
/// apart from another with the same name.
pub fn subject_key_id(cert: &Certificate) -> Result<Option<Vec<u8>>, JpkiError> {
    Ok(extension::<SubjectKeyIdentifier>(cert)?.map(|k| k.0.as_bytes().to_vec()))
}

/// What kind of JPKI certificate this is, by its policies.
pub fn certificate_kind(cert: &Certificate) -> Result<CertificateKind, JpkiError> {
    let Some(policies) = extension::<CertificatePolicies>(cert)? else {
        return Ok(CertificateKind::Other);
    };
    let has = |wanted: ObjectIdentifier| policies.0.iter().any(|p| p.policy_identifier == wanted);
    Ok(if has(oid::USER_IDENTIFICATION_POLICY) {
        CertificateKind::UserIdentification
    } else if has(oid::SIGNING_POLICY) {
        CertificateKind::Signing
    } else {
        CertificateKind::Other
    })
}

/// Reads a DER signing certificate: its profile, the four items by OID,
/// its subject and distribution point. Checks no signature: path
/// validation is the caller's business.
pub fn parse_signing_certificate(der: &[u8]) -> Result<SigningCertificate, JpkiError> {
    let certificate =
        Certificate::from_der(der).map_err(|e| JpkiError::Malformed(e.to_string()))?;
    read_signing_certificate(certificate)
}

/// [`parse_signing_certificate`] for a certificate already decoded.
pub fn read_signing_certificate(certificate: Certificate) -> Result<SigningCertificate, JpkiError> {
    match certificate_kind(&certificate)? {
        CertificateKind::Signing => {}
        CertificateKind::UserIdentification => {
            return Err(JpkiError::UserIdentificationCertificate);
        }
        CertificateKind::Other => return Err(JpkiError::NotSigningCertificate),
    }
    let key_usage = find_extension(&certificate, KeyUsage::OID_VALUE);
    match key_usage {
        Some((true, bytes)) => {
            let usage = KeyUsage::from_der(bytes).map_err(|_| JpkiError::KeyUsage)?;
            if !(usage.digital_signature() && usage.non_repudiation()) {
                return Err(JpkiError::KeyUsage);
            }
        }
        _ => return Err(JpkiError::KeyUsage),
    }

    let items = other_names(&certificate)?;
    let text = |oid: ObjectIdentifier, item: &'static str| -> Result<&str, JpkiError> {
        items
            .get(&oid)
            .map(String::as_str)
            .ok_or(JpkiError::Missing(item))
    };
    let invalid = |item: &'static str| {
        move |e: ValueError| JpkiError::Invalid {
            item,
            reason: e.to_string(),
        }
    };
    let flags = |oid: ObjectIdentifier| substitute_flags(items.get(&oid).map(String::as_str));
    let name = PersonName::parse(text(oid::NAME, "the name")?, flags(oid::NAME_FLAGS))
        .map_err(invalid("the name"))?;
    let address = Address::parse(
        text(oid::ADDRESS, "the address")?,
        flags(oid::ADDRESS_FLAGS),
    )
    .map_err(invalid("the address"))?;
    let raw_birth = text(oid::BIRTH_DATE, "the date of birth")?;
    let birth_date = BirthDate::parse_jpki(raw_birth).map_err(invalid("the date of birth"))?;
    let era_digit = raw_birth.as_bytes()[0] - b'0';
    if era_digit != 0 && era_of(birth_date.date()).map(|e| e.digit()) != Some(era_digit) {
        return Err(JpkiError::Invalid {
            item: "the date of birth",
            reason: "the era digit does not match the date".into(),
        });
    }
    let gender = Gender::parse(text(oid::GENDER, "the gender")?).map_err(invalid("the gender"))?;

    let tbs = &certificate.tbs_certificate;
    let mut localities = Vec::new();
    let mut issue_number = None;
    for (attr, value) in attributes(&tbs.subject) {
        if attr == LOCALITY_NAME {
            localities.push(value);
        } else if attr == COMMON_NAME {
            issue_number = Some(value);
        }
    }
    let mut localities = localities.into_iter();
    let serial = CertSerial::from_be_bytes(tbs.serial_number.as_bytes()).map_err(|e| {
        JpkiError::Invalid {
            item: "the serial number",
            reason: e.to_string(),
        }
    })?;

    Ok(SigningCertificate {
        serial,
        issue_number: issue_number.ok_or(JpkiError::Missing("a subject CN (issue number)"))?,
        prefecture: localities.next(),
        city: localities.next(),
        basic4: Basic4 {
            name,
            address,
            birth_date,
            gender,
        },
        not_before: time(&tbs.validity.not_before),
        not_after: time(&tbs.validity.not_after),
        crl_partition: crl_partition(&certificate)?,
        authority_key_id: extension::<AuthorityKeyIdentifier>(&certificate)?
            .and_then(|aki| aki.key_identifier)
            .map(|k| k.as_bytes().to_vec()),
        certificate,
    })
}

/// Flags that mark no substitute character say the same whatever their
/// length, so they are taken as "none" (test and field data seen with a
/// miscounted all-zero field); flags with a `1` must match the text exactly,
/// or which character they mark would be a guess.
fn substitute_flags(raw: Option<&str>) -> Option<&str> {
    raw.filter(|f| !f.bytes().all(|b| b == b'0'))
}

trait KnownOid {
    const OID_VALUE: ObjectIdentifier;
}

impl<T: const_oid::AssociatedOid> KnownOid for T {
    const OID_VALUE: ObjectIdentifier = T::OID;
}

/// The (criticality, value) of the extension with `id`.
fn find_extension(cert: &Certificate, id: ObjectIdentifier) -> Option<(bool, &[u8])> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == id)
        .map(|e| (e.critical, e.extn_value.as_bytes()))
}

fn extension<T: const_oid::AssociatedOid + for<'a> Decode<'a>>(
    cert: &Certificate,
) -> Result<Option<T>, JpkiError> {
    match find_extension(cert, T::OID) {
        None => Ok(None),
        Some((_, bytes)) => T::from_der(bytes)
            .map(Some)
            .map_err(|e| JpkiError::Malformed(format!("extension {}: {e}", T::OID))),
    }
}

/// The subjectAltName's otherName UTF8Strings, by OID.
fn other_names(cert: &Certificate) -> Result<BTreeMap<ObjectIdentifier, String>, JpkiError> {
    let san = extension::<SubjectAltName>(cert)?.ok_or(JpkiError::Missing("a subjectAltName"))?;
    let mut items = BTreeMap::new();
    for name in san.0 {
        let GeneralName::OtherName(OtherName { type_id, value }) = name else {
            continue;
        };
        if value.tag() != Tag::Utf8String {
            return Err(JpkiError::Invalid {
                item: "a subjectAltName otherName",
                reason: format!("{type_id} is not a UTF8String"),
            });
        }
        let text = std::str::from_utf8(value.value())
            .map_err(|_| JpkiError::Invalid {
                item: "a subjectAltName otherName",
                reason: "not UTF-8".into(),
            })?
            .to_owned();
        if items.insert(type_id, text).is_some() {
            return Err(JpkiError::Invalid {
                item: "a subjectAltName otherName",
                reason: format!("{type_id} appears twice"),
            });
        }
    }
    Ok(items)
}

/// Each attribute of a name, in order, with string values.
fn attributes(name: &Name) -> Vec<(ObjectIdentifier, String)> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter_map(|atv| directory_string(&atv.value).map(|v| (atv.oid, v)))
        .collect()
}

fn directory_string(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

fn crl_partition(cert: &Certificate) -> Result<Option<CrlPartition>, JpkiError> {
    let Some(points) = extension::<CrlDistributionPoints>(cert)? else {
        return Ok(None);
    };
    for point in points.0 {
        let Some(DistributionPointName::FullName(names)) = point.distribution_point else {
            continue;
        };
        for name in names {
            let GeneralName::DirectoryName(dn) = name else {
                continue;
            };
            let attrs = attributes(&dn);
            let units: Vec<&str> = attrs
                .iter()
                .filter(|(o, _)| *o == ORGANIZATIONAL_UNIT_NAME)
                .map(|(_, v)| v.as_str())
                .collect();
            let city = attrs
                .iter()
                .find(|(o, _)| *o == COMMON_NAME)
                .map(|(_, v)| v.clone());
            let prefecture = units
                .iter()
                .position(|u| *u == "CRL Distribution Points")
                .and_then(|i| units.get(i + 1));
            if let (Some(prefecture), Some(city)) = (prefecture, city) {
                return Ok(Some(CrlPartition {
                    prefecture: (*prefecture).to_owned(),
                    city,
                }));
            }
        }
    }
    Ok(None)
}

fn time(t: &Time) -> DateTime<Utc> {
    let since_epoch = t.to_unix_duration();
    DateTime::from_timestamp(since_epoch.as_secs() as i64, 0).unwrap_or_default()
}

fn der_time(t: DateTime<Utc>) -> Result<Time, JpkiError> {
    let secs =
        u64::try_from(t.timestamp()).map_err(|_| JpkiError::Build("a time before 1970".into()))?;
    GeneralizedTime::from_unix_duration(Duration::from_secs(secs))
        .map(Time::GeneralTime)
        .map_err(|e| JpkiError::Build(e.to_string()))
}

/// A name made of one attribute per RDN, in order (most general first).
/// `C` is a PrintableString, everything else a UTF8String.
pub fn directory_name(parts: &[(ObjectIdentifier, &str)]) -> Result<Name, JpkiError> {
    let build = |e: der::Error| JpkiError::Build(e.to_string());
    let rdns = parts
        .iter()
        .map(|(attr, value)| {
            let tag = if *attr == COUNTRY_NAME {
                Tag::PrintableString
            } else {
                Tag::Utf8String
            };
            let atv = AttributeTypeAndValue {
                oid: *attr,
                value: Any::new(tag, value.as_bytes()).map_err(build)?,
            };
            Ok(RelativeDistinguishedName(
                SetOfVec::try_from(vec![atv]).map_err(build)?,
            ))
        })
        .collect::<Result<Vec<_>, JpkiError>>()?;
    Ok(RdnSequence(rdns))
}

/// What the simulator's CA puts into a new signing certificate.
pub struct SigningCertificateSpec<'a> {
    pub serial: &'a CertSerial,
    pub issue_number: &'a str,
    pub partition: &'a CrlPartition,
    pub basic4: &'a Basic4,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub subject_public_key: SubjectPublicKeyInfoOwned,
}

/// Issues a signing certificate with the JPKI profile, signed by the CA
/// (`issuer`, its key identifier and its RSA key; sha256WithRSAEncryption).
pub fn issue_signing_certificate(
    spec: SigningCertificateSpec<'_>,
    issuer: &Name,
    issuer_key_id: &[u8],
    ca_key: &SigningKey<Sha256>,
) -> Result<Certificate, JpkiError> {
    let build = |e: &dyn std::fmt::Display| JpkiError::Build(e.to_string());
    let serial_bytes = hex::decode(if spec.serial.as_str().len() % 2 == 1 {
        format!("0{}", spec.serial.as_str())
    } else {
        spec.serial.as_str().to_owned()
    })
    .map_err(|e| build(&e))?;
    let serial = SerialNumber::new(&serial_bytes).map_err(|e| build(&e))?;
    let subject = directory_name(&[
        (COUNTRY_NAME, "JP"),
        (LOCALITY_NAME, &spec.partition.prefecture),
        (LOCALITY_NAME, &spec.partition.city),
        (COMMON_NAME, spec.issue_number),
    ])?;
    let validity = Validity {
        not_before: der_time(spec.not_before)?,
        not_after: der_time(spec.not_after)?,
    };
    let subject_key_id = {
        use sha2::Digest;
        let key_bits = spec.subject_public_key.subject_public_key.raw_bytes();
        sha1_like_key_id(&sha2::Sha256::digest(key_bits))
    };
    let mut builder = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(issuer.clone()),
        },
        serial,
        validity,
        subject,
        spec.subject_public_key,
        ca_key,
    )
    .map_err(|e| build(&e))?;

    let b = spec.basic4;
    let birth = format!(
        "{}{}",
        era_of(b.birth_date.date()).map(|e| e.digit()).unwrap_or(0),
        b.birth_date.date().format("%Y%m%d")
    );
    // The order of a real card: name, date of birth, gender, address, then the flags.
    let items = [
        (oid::NAME, b.name.as_str()),
        (oid::BIRTH_DATE, birth.as_str()),
        (oid::GENDER, b.gender.code()),
        (oid::ADDRESS, b.address.as_str()),
        (oid::NAME_FLAGS, b.name.flags().as_str()),
        (oid::ADDRESS_FLAGS, b.address.flags().as_str()),
    ];
    let san = SubjectAltName(
        items
            .iter()
            .map(|(type_id, value)| {
                Ok(GeneralName::OtherName(OtherName {
                    type_id: *type_id,
                    value: Any::new(Tag::Utf8String, value.as_bytes()).map_err(|e| build(&e))?,
                }))
            })
            .collect::<Result<_, JpkiError>>()?,
    );
    builder.add_extension(&san).map_err(|e| build(&e))?;
    builder
        .add_extension(&KeyUsage(
            KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
        ))
        .map_err(|e| build(&e))?;
    builder
        .add_extension(&CertificatePolicies(vec![PolicyInformation {
            policy_identifier: oid::SIGNING_POLICY,
            policy_qualifiers: None,
        }]))
        .map_err(|e| build(&e))?;
    builder
        .add_extension(&CrlDistributionPoints(vec![DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![
                GeneralName::DirectoryName(spec.partition.directory_name()?),
            ])),
            reasons: None,
            crl_issuer: None,
        }]))
        .map_err(|e| build(&e))?;
    builder
        .add_extension(&AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(issuer_key_id).map_err(|e| build(&e))?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        })
        .map_err(|e| build(&e))?;
    builder
        .add_extension(&SubjectKeyIdentifier(
            OctetString::new(subject_key_id).map_err(|e| build(&e))?,
        ))
        .map_err(|e| build(&e))?;
    builder.build::<Signature>().map_err(|e| build(&e))
}

/// A 20-byte key identifier (RFC 7093 method 1: the leftmost 160 bits of
/// the SHA-256 of the key).
fn sha1_like_key_id(digest: &[u8]) -> Vec<u8> {
    digest[..20].to_vec()
}

/// The DER of a certificate.
pub fn to_der(cert: &Certificate) -> Result<Vec<u8>, JpkiError> {
    cert.to_der().map_err(|e| JpkiError::Build(e.to_string()))
}
