//! Signature verification for the service-provider role: the provider
//! checks a CMS SignedData made with a card and keeps the certificate.

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
    let issued_here = (|| {
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
    })();
    if issued_here.is_none() {
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
