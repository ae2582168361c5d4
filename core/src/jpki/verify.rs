//! Verifying a signed consent as a platform operator must: the CMS
//! SignedData (attached or detached content), its signed attributes, the
//! signature (with `ring`:
//! docs/architecture.md#dependencies-and-measured-choices), and the path
//! from the signer's certificate to a configured trust anchor, picked by key
//! identifier because several J-LIS CA generations share one name.
//! Revocation is checked separately (CRL or OCSP), on the serial this
//! returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cms::content_info::ContentInfo;
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::{ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use der::asn1::OctetStringRef;
use der::{Decode, Encode};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use super::{JpkiError, SigningCertificate, read_signing_certificate, subject_key_id};

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Why a signed document is refused. Each is a distinct answer to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the document is not a CMS SignedData")]
    NotCms,
    #[error("the document has no signer")]
    NoSigner,
    #[error("the document has more than one signer")]
    SeveralSigners,
    #[error("the signed content is neither attached nor given")]
    ContentMissing,
    #[error("the signer's certificate is not in the document")]
    SignerCertificateMissing,
    #[error("the signature uses an algorithm other than RSA with SHA-256")]
    UnsupportedAlgorithm,
    /// A raw signature whose hash is not SHA-256 (named as given, or as
    /// found in the signed DigestInfo, e.g. `sha1`).
    #[error(
        "the signature's hash algorithm `{0}` is not accepted; sign the SHA-256 DigestInfo of the text"
    )]
    UnsupportedHash(String),
    #[error("the signed attributes are missing or wrong: {0}")]
    SignedAttributes(&'static str),
    #[error("the content does not match the signed digest")]
    DigestMismatch,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the signer's certificate does not lead to a trusted J-LIS CA")]
    UntrustedIssuer,
    #[error("the signer's certificate has expired")]
    CertificateExpired,
    #[error("the signer's certificate is not valid yet")]
    CertificateNotYetValid,
    #[error("the certificate is not a JPKI signing certificate: {0}")]
    Profile(JpkiError),
}

/// A document whose signature holds, up to revocation.
#[derive(Debug, Clone)]
pub struct VerifiedDocument {
    pub content: Vec<u8>,
    /// The signer's signature value: one signing act, however the document is wrapped.
    pub signature: Vec<u8>,
    pub certificate: Arc<SigningCertificate>,
    pub certificate_der: Vec<u8>,
    /// The key identifier of the trust anchor the path ends at.
    pub anchor_key_id: Vec<u8>,
}

struct Anchor {
    certificate: Certificate,
    name_der: Vec<u8>,
    public_key: Vec<u8>,
}

/// The configured trust anchors (J-LIS's signing CA, one per generation), by
/// key identifier, and the certificates already found to chain to them.
pub struct TrustAnchors {
    by_key_id: HashMap<Vec<u8>, Anchor>,
    /// SHA-256 of a certificate's DER → the key identifier of the anchor
    /// whose signature on it verified. A certificate that signs again
    /// (a retry, a renewal, the next document) skips that RSA verification;
    /// its validity period and revocation are still checked every time.
    verified: Mutex<HashMap<[u8; 32], Remembered>>,
    capacity: usize,
}

/// A certificate whose path verified, and the key identifier of its anchor.
type Remembered = (Arc<SigningCertificate>, Vec<u8>);

/// How many verified certificates are remembered by default; the memory is
/// emptied when full.
const VERIFIED_CAPACITY: usize = 100_000;

impl TrustAnchors {
    /// Loads PEM certificates from files, or from every `.pem`/`.crt` file of a folder.
    pub fn load(paths: &[PathBuf]) -> Result<Self, String> {
        let mut certificates = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
                    .collect();
                files.sort();
                for file in files {
                    certificates.extend(read_pem_file(&file)?);
                }
            } else {
                certificates.extend(read_pem_file(path)?);
            }
        }
        Self::from_certificates(certificates)
    }

    pub fn from_certificates(certificates: Vec<Certificate>) -> Result<Self, String> {
        let mut by_key_id = HashMap::new();
        for certificate in certificates {
            let key_id = subject_key_id(&certificate)
                .map_err(|e| e.to_string())?
                .ok_or("a trust anchor has no subject key identifier")?;
            let name_der = certificate
                .tbs_certificate
                .subject
                .to_der()
                .map_err(|e| e.to_string())?;
            let public_key = certificate
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes()
                .to_vec();
            by_key_id.insert(
                key_id,
                Anchor {
                    certificate,
                    name_der,
                    public_key,
                },
            );
        }
        if by_key_id.is_empty() {
            return Err("no trust anchor was found".into());
        }
        Ok(Self {
            by_key_id,
            verified: Mutex::default(),
            capacity: VERIFIED_CAPACITY,
        })
    }

    /// Remembers at most `capacity` verified certificates (0: none, every
    /// path is verified afresh).
    pub fn remembering(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// A certificate verified before, and the anchor that signed it.
    fn recall(&self, fingerprint: &[u8; 32]) -> Option<Remembered> {
        self.verified
            .lock()
            .expect("not poisoned")
            .get(fingerprint)
            .cloned()
    }

    fn remember(
        &self,
        fingerprint: [u8; 32],
        profile: Arc<SigningCertificate>,
        anchor_key_id: &[u8],
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut verified = self.verified.lock().expect("not poisoned");
        if verified.len() >= self.capacity {
            verified.clear();
        }
        verified.insert(fingerprint, (profile, anchor_key_id.to_vec()));
    }

    /// Every anchor certificate.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.by_key_id.values().map(|a| &a.certificate)
    }

    /// The anchor certificate with this key identifier.
    pub fn certificate(&self, key_id: &[u8]) -> Option<&Certificate> {
        self.by_key_id.get(key_id).map(|a| &a.certificate)
    }

    pub fn len(&self) -> usize {
        self.by_key_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key_id.is_empty()
    }
}

fn read_pem_file(path: &Path) -> Result<Vec<Certificate>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Certificate::load_pem_chain(&text)
        .map_err(|e| format!("{}: not PEM certificates ({e})", path.display()))
}

/// The raw bytes of the first element inside the SEQUENCE at the start of `der`.
fn first_inner_tlv(der: &[u8]) -> Option<&[u8]> {
    let (_, outer_header) = header(der)?;
    let inner = der.get(outer_header..)?;
    let (len, h) = header(inner)?;
    inner.get(..h + len)
}

/// (content length, header length) of the TLV at the start of `der`.
fn header(der: &[u8]) -> Option<(usize, usize)> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((usize::from(first), 2));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return None;
    }
    let len = der
        .get(2..2 + count)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((len, 2 + count))
}

/// Splits the TLVs of a constructed value's content.
fn children(content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (len, h) = header(rest)?;
        let (tlv, tail) = (rest.get(..h + len)?, rest.get(h + len..)?);
        out.push(tlv);
        rest = tail;
    }
    Some(out)
}

fn content_of(tlv: &[u8]) -> Option<&[u8]> {
    let (len, h) = header(tlv)?;
    tlv.get(h..h + len)
}

fn verify_rsa(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(message, signature)
        .is_ok()
}

/// The DER of the signedData content type OID, as it stands in a ContentInfo.
const SIGNED_DATA_OID_TLV: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];

/// A SignedData split into its parts without decoding the certificates:
/// those are decoded only when not already known.
struct Split<'a> {
    encap: EncapsulatedContentInfo,
    certificates: Vec<&'a [u8]>,
    signer_infos: SignerInfos,
    /// The raw `[0] IMPLICIT` signed attributes of the one signer, re-tagged as a SET.
    signed_attributes: Option<Vec<u8>>,
}

fn split(cms_der: &[u8]) -> Result<Split<'_>, SignatureError> {
    let not_cms = || SignatureError::NotCms;
    let (len, h) = header(cms_der).ok_or_else(not_cms)?;
    if cms_der.first() != Some(&0x30) || h + len != cms_der.len() {
        return Err(not_cms());
    }
    let info = children(content_of(cms_der).ok_or_else(not_cms)?).ok_or_else(not_cms)?;
    let [oid, explicit] = info.as_slice() else {
        return Err(not_cms());
    };
    if *oid != SIGNED_DATA_OID_TLV || explicit.first() != Some(&0xa0) {
        return Err(not_cms());
    }
    let inner = children(content_of(explicit).ok_or_else(not_cms)?).ok_or_else(not_cms)?;
    let [signed_data] = inner.as_slice() else {
        return Err(not_cms());
    };
    if signed_data.first() != Some(&0x30) {
        return Err(not_cms());
    }
    let fields = children(content_of(signed_data).ok_or_else(not_cms)?).ok_or_else(not_cms)?;
    let tags: Vec<u8> = fields.iter().map(|f| f[0]).collect();
    let (encap, certificates, signer_infos) = match tags.as_slice() {
        [0x02, 0x31, 0x30, 0x31] => (fields[2], None, fields[3]),
        [0x02, 0x31, 0x30, 0xa0, 0x31] => (fields[2], Some(fields[3]), fields[4]),
        [0x02, 0x31, 0x30, 0xa1, 0x31] => (fields[2], None, fields[4]),
        [0x02, 0x31, 0x30, 0xa0, 0xa1, 0x31] => (fields[2], Some(fields[3]), fields[5]),
        _ => return Err(not_cms()),
    };
    let certificates = match certificates {
        None => Vec::new(),
        Some(set) => children(content_of(set).ok_or_else(not_cms)?).ok_or_else(not_cms)?,
    };
    let signed_attributes = content_of(signer_infos)
        .and_then(children)
        .and_then(|infos| infos.into_iter().next())
        .and_then(content_of)
        .and_then(children)
        .and_then(|parts| parts.into_iter().find(|p| p.first() == Some(&0xa0)))
        .map(|attrs| {
            let mut out = attrs.to_vec();
            out[0] = 0x31;
            out
        });
    Ok(Split {
        encap: EncapsulatedContentInfo::from_der(encap).map_err(|_| not_cms())?,
        certificates,
        signer_infos: SignerInfos::from_der(signer_infos).map_err(|_| not_cms())?,
        signed_attributes,
    })
}

/// A signed document taken apart, nothing verified yet.
struct Opened {
    signer: SignerInfo,
    econtent_type: ObjectIdentifier,
    signed_attributes: Option<Vec<u8>>,
    /// The content when it is attached.
    attached: Option<Vec<u8>>,
    certificate_der: Vec<u8>,
    fingerprint: [u8; 32],
    profile: Arc<SigningCertificate>,
    /// The anchor whose signature on the certificate verified before.
    known_anchor: Option<Vec<u8>>,
}

fn open(cms_der: &[u8], anchors: Option<&TrustAnchors>) -> Result<Opened, SignatureError> {
    let parts = split(cms_der)?;
    let mut signers = parts.signer_infos.0.into_vec();
    let signer = match signers.len() {
        0 => return Err(SignatureError::NoSigner),
        1 => signers.remove(0),
        _ => return Err(SignatureError::SeveralSigners),
    };
    let attached = match &parts.encap.econtent {
        Some(attached) => Some(
            OctetStringRef::try_from(attached)
                .map_err(|_| SignatureError::NotCms)?
                .as_bytes()
                .to_vec(),
        ),
        None => None,
    };
    for raw in parts
        .certificates
        .iter()
        .filter(|c| c.first() == Some(&0x30))
    {
        let fingerprint: [u8; 32] = Sha256::digest(raw).into();
        let (profile, known_anchor) = match anchors.and_then(|a| a.recall(&fingerprint)) {
            Some((profile, anchor)) => (profile, Some(anchor)),
            None => {
                let Ok(certificate) = Certificate::from_der(raw) else {
                    continue;
                };
                if !names_signer(&certificate, &signer.sid) {
                    continue;
                }
                let profile =
                    read_signing_certificate(certificate).map_err(SignatureError::Profile)?;
                (Arc::new(profile), None)
            }
        };
        if !names_signer(&profile.certificate, &signer.sid) {
            continue;
        }
        return Ok(Opened {
            signer,
            econtent_type: parts.encap.econtent_type,
            signed_attributes: parts.signed_attributes,
            attached,
            certificate_der: raw.to_vec(),
            fingerprint,
            profile,
            known_anchor,
        });
    }
    Err(SignatureError::SignerCertificateMissing)
}

/// What can be read from a signed document without trusting it: its
/// content when attached, and the signer's certificate (checked to be a
/// JPKI signing certificate). The service-provider role reads this much
/// before it hands the document to the provider.
pub struct Inspected {
    pub attached: Option<Vec<u8>>,
    /// The signer's signature value.
    pub signature: Vec<u8>,
    pub certificate: Arc<SigningCertificate>,
}

pub fn inspect_signed_document(cms_der: &[u8]) -> Result<Inspected, SignatureError> {
    let opened = open(cms_der, None)?;
    Ok(Inspected {
        attached: opened.attached,
        signature: opened.signer.signature.as_bytes().to_vec(),
        certificate: opened.profile,
    })
}

/// The same document with `content` attached; the signature is untouched,
/// since it covers the signed attributes, which carry the content's digest.
pub fn attach_content(cms_der: &[u8], content: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let info = ContentInfo::from_der(cms_der).map_err(|_| SignatureError::NotCms)?;
    let mut signed: SignedData = info
        .content
        .decode_as()
        .map_err(|_| SignatureError::NotCms)?;
    if signed.encap_content_info.econtent.is_some() {
        return Ok(cms_der.to_vec());
    }
    let octets = der::asn1::OctetString::new(content).map_err(|_| SignatureError::NotCms)?;
    signed.encap_content_info.econtent =
        Some(der::Any::encode_from(&octets).map_err(|_| SignatureError::NotCms)?);
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: der::Any::encode_from(&signed).map_err(|_| SignatureError::NotCms)?,
    }
    .to_der()
    .map_err(|_| SignatureError::NotCms)
}

/// Verifies a signed document; `detached` is the content when it is not attached.
pub fn verify_signed_document(
    cms_der: &[u8],
    detached: Option<&[u8]>,
    anchors: &TrustAnchors,
    now: DateTime<Utc>,
) -> Result<VerifiedDocument, SignatureError> {
    let Opened {
        signer,
        econtent_type,
        signed_attributes,
        attached,
        certificate_der,
        fingerprint,
        profile,
        known_anchor,
    } = open(cms_der, Some(anchors))?;
    let content = match (attached, detached) {
        (Some(attached), _) => attached,
        (None, Some(given)) => given.to_vec(),
        (None, None) => return Err(SignatureError::ContentMissing),
    };
    if signer.digest_alg.oid != SHA256
        || !(signer.signature_algorithm.oid == RSA_ENCRYPTION
            || signer.signature_algorithm.oid == SHA256_WITH_RSA)
    {
        return Err(SignatureError::UnsupportedAlgorithm);
    }
    let certificate = &profile.certificate;
    let anchor_key_id = verify_path(
        &profile,
        &certificate_der,
        fingerprint,
        known_anchor.as_deref(),
        anchors,
        now,
    )?;

    check_signed_attributes(&signer, econtent_type, &content)?;
    let signed_attributes = signed_attributes.ok_or(SignatureError::NotCms)?;
    let public_key = certificate
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    if !verify_rsa(public_key, &signed_attributes, signer.signature.as_bytes()) {
        return Err(SignatureError::BadSignature);
    }
    Ok(VerifiedDocument {
        content,
        signature: signer.signature.as_bytes().to_vec(),
        certificate: profile,
        certificate_der,
        anchor_key_id,
    })
}

/// The signed attributes: this content type and this content's digest.
fn check_signed_attributes(
    signer: &SignerInfo,
    econtent_type: ObjectIdentifier,
    content: &[u8],
) -> Result<(), SignatureError> {
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or(SignatureError::SignedAttributes("none"))?;
    let value = |oid: ObjectIdentifier| {
        let mut matching = attrs.iter().filter(|a| a.oid == oid);
        match (matching.next(), matching.next()) {
            (Some(a), None) if a.values.len() == 1 => a.values.iter().next(),
            _ => None,
        }
    };
    let content_type = value(ID_CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or(SignatureError::SignedAttributes("contentType"))?;
    if content_type != econtent_type || content_type != ID_DATA {
        return Err(SignatureError::SignedAttributes("contentType"));
    }
    let digest = value(ID_MESSAGE_DIGEST)
        .and_then(|v| OctetStringRef::try_from(v).ok())
        .ok_or(SignatureError::SignedAttributes("messageDigest"))?;
    if digest.as_bytes() != &Sha256::digest(content)[..] {
        return Err(SignatureError::DigestMismatch);
    }
    Ok(())
}

/// A CMS consent document as a raw signature: what an operator that takes
/// no CMS (PocketSign's `Verify` takes certificate, digest and signature)
/// verifies in its place. The signature of a CMS signer with signed
/// attributes is PKCS#1 v1.5 over the DigestInfo of SHA-256 of the DER
/// signed attributes (as a SET), so that digest and the signature value are
/// what the operator checks; what the signature does not cover by itself —
/// that the signed attributes name `id-data` and carry the content's
/// digest — is checked here.
#[derive(Debug, Clone)]
pub struct CmsAsRawSignature {
    pub certificate_der: Vec<u8>,
    /// SHA-256 of the DER signed attributes (as a SET): the signed digest.
    pub signed_attributes_digest: [u8; 32],
    pub signature: Vec<u8>,
    /// SHA-256 of the attached content (its messageDigest, checked).
    pub content_digest: [u8; 32],
    pub certificate: Arc<SigningCertificate>,
}

/// Takes an attached CMS document apart for [`CmsAsRawSignature`]: one
/// signer, RSA with SHA-256, its certificate a JPKI signing certificate,
/// the signed attributes' contentType `id-data` and messageDigest the
/// attached content's. Nothing about trust is verified.
pub fn cms_as_raw_signature(cms_der: &[u8]) -> Result<CmsAsRawSignature, SignatureError> {
    let opened = open(cms_der, None)?;
    let content = opened.attached.ok_or(SignatureError::ContentMissing)?;
    let signer = &opened.signer;
    if signer.digest_alg.oid != SHA256
        || !(signer.signature_algorithm.oid == RSA_ENCRYPTION
            || signer.signature_algorithm.oid == SHA256_WITH_RSA)
    {
        return Err(SignatureError::UnsupportedAlgorithm);
    }
    check_signed_attributes(signer, opened.econtent_type, &content)?;
    let signed_attributes = opened.signed_attributes.ok_or(SignatureError::NotCms)?;
    Ok(CmsAsRawSignature {
        certificate_der: opened.certificate_der,
        signed_attributes_digest: Sha256::digest(&signed_attributes).into(),
        signature: signer.signature.as_bytes().to_vec(),
        content_digest: Sha256::digest(&content).into(),
        certificate: opened.profile,
    })
}

/// The path: one step from the signer's certificate to an anchor, found by
/// the certificate's authority key identifier, then the certificate's
/// validity now. Returns the anchor's key identifier; a certificate whose
/// path verified before (`known_anchor`) skips the RSA verification.
fn verify_path(
    profile: &Arc<SigningCertificate>,
    certificate_der: &[u8],
    fingerprint: [u8; 32],
    known_anchor: Option<&[u8]>,
    anchors: &TrustAnchors,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, SignatureError> {
    let certificate = &profile.certificate;
    let anchor_key_id = profile
        .authority_key_id
        .as_ref()
        .filter(|id| anchors.by_key_id.contains_key(*id))
        .ok_or(SignatureError::UntrustedIssuer)?
        .clone();
    let anchor = &anchors.by_key_id[&anchor_key_id];
    if !anchor_may_sign(&anchor.certificate, now) {
        return Err(SignatureError::UntrustedIssuer);
    }
    if known_anchor != Some(anchor_key_id.as_slice()) {
        let malformed = |what: &str| SignatureError::Profile(JpkiError::Malformed(what.into()));
        let issuer_der = certificate
            .tbs_certificate
            .issuer
            .to_der()
            .map_err(|_| malformed("the issuer name"))?;
        if issuer_der != anchor.name_der {
            return Err(SignatureError::UntrustedIssuer);
        }
        if certificate.signature_algorithm.oid != SHA256_WITH_RSA {
            return Err(SignatureError::UnsupportedAlgorithm);
        }
        let tbs = first_inner_tlv(certificate_der).ok_or_else(|| malformed("the certificate"))?;
        if !verify_rsa(&anchor.public_key, tbs, certificate.signature.raw_bytes()) {
            return Err(SignatureError::UntrustedIssuer);
        }
        anchors.remember(fingerprint, profile.clone(), &anchor_key_id);
    }
    if now < profile.not_before {
        return Err(SignatureError::CertificateNotYetValid);
    }
    if now > profile.not_after {
        return Err(SignatureError::CertificateExpired);
    }
    Ok(anchor_key_id)
}

/// The hash a raw signature's DigestInfo is over. Only SHA-256 is accepted:
/// the JPKI signing key can sign a SHA-1 DigestInfo too (the jpki-rs CLI
/// builds one), and such a consent is refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
}

impl HashAlgorithm {
    /// `sha256` (also `SHA256`, `sha-256`, `HASH_ALGORITHM_SHA256`); any
    /// other name is refused as [`SignatureError::UnsupportedHash`].
    pub fn parse(name: &str) -> Result<Self, SignatureError> {
        let plain: String = name
            .trim_start_matches("HASH_ALGORITHM_")
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        match plain.as_str() {
            "sha256" => Ok(Self::Sha256),
            _ => Err(SignatureError::UnsupportedHash(
                name.chars().take(40).collect(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
        }
    }
}

/// A raw PKCS#1 v1.5 signature as a card client hands it over: the JPKI
/// application signs a DigestInfo, and the SDKs pass certificate, digest
/// and signature, with no CMS around them.
#[derive(Debug, Clone, Copy)]
pub struct RawSignature<'a> {
    pub certificate_der: &'a [u8],
    pub signature: &'a [u8],
    pub hash: HashAlgorithm,
}

/// The signer's certificate of a raw signature, read as a JPKI signing
/// certificate (or recalled, when its path verified before): what the
/// service-provider role checks before it asks the provider.
pub fn inspect_raw_certificate(
    certificate_der: &[u8],
) -> Result<SigningCertificate, SignatureError> {
    let certificate = Certificate::from_der(certificate_der)
        .map_err(|e| SignatureError::Profile(JpkiError::Malformed(e.to_string())))?;
    read_signing_certificate(certificate).map_err(SignatureError::Profile)
}

/// Verifies a raw signature over `content`: the certificate's profile and
/// path as for a CMS document, then the RSA PKCS#1 v1.5 signature over the
/// DigestInfo of SHA-256(`content`). A signature that fails is opened with
/// the certificate's public key to say why: a SHA-1 DigestInfo is
/// [`SignatureError::UnsupportedHash`], a SHA-256 one of other bytes is
/// [`SignatureError::DigestMismatch`], anything else
/// [`SignatureError::BadSignature`].
pub fn verify_raw_signature(
    raw: &RawSignature<'_>,
    content: &[u8],
    anchors: &TrustAnchors,
    now: DateTime<Utc>,
) -> Result<VerifiedDocument, SignatureError> {
    let HashAlgorithm::Sha256 = raw.hash;
    let fingerprint: [u8; 32] = Sha256::digest(raw.certificate_der).into();
    let (profile, known_anchor) = match anchors.recall(&fingerprint) {
        Some((profile, anchor)) => (profile, Some(anchor)),
        None => (
            Arc::new(inspect_raw_certificate(raw.certificate_der)?),
            None,
        ),
    };
    let anchor_key_id = verify_path(
        &profile,
        raw.certificate_der,
        fingerprint,
        known_anchor.as_deref(),
        anchors,
        now,
    )?;
    let public_key = profile
        .certificate
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    if !verify_rsa(public_key, content, raw.signature) {
        return Err(why_raw_signature_fails(public_key, raw.signature, content));
    }
    Ok(VerifiedDocument {
        content: content.to_vec(),
        signature: raw.signature.to_vec(),
        certificate: profile,
        certificate_der: raw.certificate_der.to_vec(),
        anchor_key_id,
    })
}

/// The DER prefixes of a DigestInfo (RFC 8017 §9.2, note 1), before the digest.
const SHA1_DIGEST_INFO: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The digest a PKCS#1 v1.5 signature was made over, by its DigestInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedDigest {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

/// Opens a PKCS#1 v1.5 signature with the public key (`public_key` is the
/// PKCS#1 RSAPublicKey DER of a certificate's SubjectPublicKeyInfo): the
/// public-key operation (s^e mod n) gives the encoded message
/// `00 01 FF… 00 DigestInfo` for any signature the key made, whatever it
/// was over. `None` when it is not such a signature of this key, or its
/// DigestInfo is neither SHA-1's nor SHA-256's. This says why a signature
/// fails; verification itself is `ring`'s.
pub fn open_pkcs1_signature(public_key: &[u8], signature: &[u8]) -> Option<SignedDigest> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::from_pkcs1_der(public_key).ok()?;
    let size = key.size();
    let s = rsa::BigUint::from_bytes_be(signature);
    if signature.len() != size || &s >= key.n() {
        return None;
    }
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    let mut encoded = vec![0u8; size.saturating_sub(m.len())];
    encoded.extend_from_slice(&m);
    let rest = encoded.strip_prefix(&[0x00, 0x01])?;
    let padding = rest.iter().take_while(|b| **b == 0xff).count();
    if padding < 8 {
        return None;
    }
    let digest_info = rest[padding..].strip_prefix(&[0x00])?;
    if let Some(d) = digest_info
        .strip_prefix(SHA1_DIGEST_INFO)
        .filter(|d| d.len() == 20)
    {
        return Some(SignedDigest::Sha1(d.to_vec()));
    }
    digest_info
        .strip_prefix(SHA256_DIGEST_INFO)
        .filter(|d| d.len() == 32)
        .map(|d| SignedDigest::Sha256(d.to_vec()))
}

/// Why a raw signature over `content` that did not verify fails.
fn why_raw_signature_fails(public_key: &[u8], signature: &[u8], content: &[u8]) -> SignatureError {
    match open_pkcs1_signature(public_key, signature) {
        Some(SignedDigest::Sha1(_)) => SignatureError::UnsupportedHash("sha1".into()),
        Some(SignedDigest::Sha256(d)) if d != Sha256::digest(content)[..] => {
            SignatureError::DigestMismatch
        }
        _ => SignatureError::BadSignature,
    }
}

fn names_signer(c: &Certificate, sid: &SignerIdentifier) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            c.tbs_certificate.serial_number == ias.serial_number
                && c.tbs_certificate.issuer == ias.issuer
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            subject_key_id(c).ok().flatten().as_deref() == Some(ski.0.as_bytes())
        }
    }
}

/// An anchor is a CA certificate, allowed to sign certificates, valid now.
fn anchor_may_sign(anchor: &Certificate, now: DateTime<Utc>) -> bool {
    let tbs = &anchor.tbs_certificate;
    let within = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    let now_s = now.timestamp();
    if now_s < within(&tbs.validity.not_before) || now_s > within(&tbs.validity.not_after) {
        return false;
    }
    let ext = |oid: ObjectIdentifier| {
        tbs.extensions
            .as_ref()
            .and_then(|e| e.iter().find(|x| x.extn_id == oid))
            .map(|x| x.extn_value.as_bytes())
    };
    let ca = ext(const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
        .and_then(|v| BasicConstraints::from_der(v).ok())
        .is_some_and(|b| b.ca);
    let cert_sign = ext(const_oid::db::rfc5280::ID_CE_KEY_USAGE)
        .and_then(|v| KeyUsage::from_der(v).ok())
        .is_none_or(|k| k.key_cert_sign());
    ca && cert_sign
}
