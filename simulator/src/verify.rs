//! Signature verification for the service-provider role: the provider
//! checks a CMS SignedData made with a card, or a raw PKCS#1 v1.5 signature
//! with its certificate and digest, and keeps the certificate.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::db::rfc5911::{ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use der::asn1::{ObjectIdentifier, OctetStringRef};
use der::referenced::OwnedToRef;
use der::{Decode, Encode};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use crate::ca::Ca;

/// What verification found, when the document could be read.
pub struct Checked {
    pub content: Vec<u8>,
    pub certificate: Certificate,
    /// `None` when the signature holds; else why not.
    pub failure: Option<&'static str>,
}

/// Why the document could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

fn unreadable(what: impl Into<String>) -> Unreadable {
    Unreadable(what.into())
}

/// Reads an attached-content CMS SignedData and checks its one signature
/// against the signer's certificate, and that certificate against the CA.
pub fn check(ca: &Ca, cms_der: &[u8]) -> Result<Checked, Unreadable> {
    let info = ContentInfo::from_der(cms_der).map_err(|_| unreadable("not a CMS ContentInfo"))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(unreadable("not a SignedData"));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|_| unreadable("the SignedData does not parse"))?;
    if signed.encap_content_info.econtent_type != ID_DATA {
        return Err(unreadable("the signed content is not id-data"));
    }
    let content = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| unreadable("the content is not attached"))?;
    let content = OctetStringRef::try_from(content)
        .map_err(|_| unreadable("the content is not an OCTET STRING"))?
        .as_bytes()
        .to_vec();
    let [signer] = signed.signer_infos.0.as_slice() else {
        return Err(unreadable("exactly one signer is expected"));
    };
    let SignerIdentifier::IssuerAndSerialNumber(sid) = &signer.sid else {
        return Err(unreadable("the signer is not named by issuer and serial"));
    };
    let certificate = signed
        .certificates
        .as_ref()
        .and_then(|set| {
            set.0.iter().find_map(|choice| match choice {
                cms::cert::CertificateChoices::Certificate(c)
                    if c.tbs_certificate.serial_number == sid.serial_number
                        && c.tbs_certificate.issuer == sid.issuer =>
                {
                    Some(c.clone())
                }
                _ => None,
            })
        })
        .ok_or_else(|| unreadable("the signer's certificate is not in the document"))?;

    let failure = signature_failure(ca, &certificate, signer, &content);
    Ok(Checked {
        content,
        certificate,
        failure,
    })
}

fn signature_failure(
    ca: &Ca,
    certificate: &Certificate,
    signer: &cms::signed_data::SignerInfo,
    content: &[u8],
) -> Option<&'static str> {
    // The certificate: issued by this CA.
    if !issued_by(ca, certificate) {
        return Some("untrusted_issuer");
    }
    // The signed attributes: content type and digest of the content.
    let Some(attrs) = &signer.signed_attrs else {
        return Some("no_signed_attributes");
    };
    let value = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
    };
    let content_type = value(ID_CONTENT_TYPE).and_then(|v| v.decode_as::<ObjectIdentifier>().ok());
    if content_type != Some(ID_DATA) {
        return Some("bad_content_type");
    }
    let digest = value(ID_MESSAGE_DIGEST).and_then(|v| {
        OctetStringRef::try_from(v)
            .ok()
            .map(|o| o.as_bytes().to_vec())
    });
    if digest.as_deref() != Some(&Sha256::digest(content)[..]) {
        return Some("digest_mismatch");
    }
    // The signature over the signed attributes, with the certificate's key.
    let verified = (|| {
        let key = RsaPublicKey::try_from(
            certificate
                .tbs_certificate
                .subject_public_key_info
                .owned_to_ref(),
        )
        .ok()?;
        let signed = attrs.to_der().ok()?;
        let sig = Signature::try_from(signer.signature.as_bytes()).ok()?;
        VerifyingKey::<Sha256>::new(key).verify(&signed, &sig).ok()
    })();
    verified.is_none().then_some("bad_signature")
}

/// What a raw-signature check found (`POST /v1/verifications` with a
/// certificate, a digest and a signature, as card SDKs send them).
pub struct RawChecked {
    pub certificate: Certificate,
    /// `None` when the signature holds; else why not.
    pub failure: Option<&'static str>,
}

/// Checks a raw PKCS#1 v1.5 signature over the DigestInfo of `digest`
/// (SHA-256) against the certificate, and the certificate against the CA.
/// A signature whose DigestInfo is SHA-1's fails as
/// `unsupported_hash_algorithm`, one over another digest as
/// `digest_mismatch`.
pub fn check_raw(
    ca: &Ca,
    certificate_der: &[u8],
    digest: &[u8],
    signature: &[u8],
) -> Result<RawChecked, Unreadable> {
    use kihon4_core::jpki::verify::{SignedDigest, open_pkcs1_signature};
    use rsa::signature::hazmat::PrehashVerifier;
    let certificate = Certificate::from_der(certificate_der)
        .map_err(|_| unreadable("the certificate is not DER X.509"))?;
    if digest.len() != 32 {
        return Err(unreadable("the digest is not 32 bytes of SHA-256"));
    }
    if !issued_by(ca, &certificate) {
        return Ok(RawChecked {
            certificate,
            failure: Some("untrusted_issuer"),
        });
    }
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    let holds = (|| {
        let key = RsaPublicKey::try_from(spki.owned_to_ref()).ok()?;
        let sig = Signature::try_from(signature).ok()?;
        VerifyingKey::<Sha256>::new(key)
            .verify_prehash(digest, &sig)
            .ok()
    })();
    let failure = match holds {
        Some(()) => None,
        None => match open_pkcs1_signature(spki.subject_public_key.raw_bytes(), signature) {
            Some(SignedDigest::Sha1(_)) => Some("unsupported_hash_algorithm"),
            Some(SignedDigest::Sha256(_)) => Some("digest_mismatch"),
            None => Some("bad_signature"),
        },
    };
    Ok(RawChecked {
        certificate,
        failure,
    })
}

fn issued_by(ca: &Ca, certificate: &Certificate) -> bool {
    (|| {
        let ca_key = RsaPublicKey::try_from(
            ca.certificate
                .tbs_certificate
                .subject_public_key_info
                .owned_to_ref(),
        )
        .ok()?;
        let tbs = certificate.tbs_certificate.to_der().ok()?;
        let sig = Signature::try_from(certificate.signature.raw_bytes()).ok()?;
        VerifyingKey::<Sha256>::new(ca_key).verify(&tbs, &sig).ok()
    })()
    .is_some()
}
