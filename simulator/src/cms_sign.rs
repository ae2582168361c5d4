//! CMS SignedData made with a resident's key, as a card would sign.

use cms::builder::{SignedDataBuilder, SignerInfoBuilder, create_signing_time_attribute};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use const_oid::db::rfc5911::ID_DATA;
use const_oid::db::rfc5912::ID_SHA_256;
use der::{Any, Decode, Encode, Tag};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::DecodePrivateKey;
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// Signs `content` (attached) with SHA-256 and RSA PKCS#1 v1.5, with the
/// contentType, messageDigest and signingTime signed attributes and the
/// signer's certificate; returns the DER ContentInfo.
pub fn sign(content: &[u8], certificate_der: &[u8], key_pem: &str) -> anyhow::Result<Vec<u8>> {
    let certificate = Certificate::from_der(certificate_der)?;
    let key = RsaPrivateKey::from_pkcs8_pem(key_pem)?;
    let signer = SigningKey::<Sha256>::new(key);
    let content_info = EncapsulatedContentInfo {
        econtent_type: ID_DATA,
        econtent: Some(Any::new(Tag::OctetString, content)?),
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: certificate.tbs_certificate.issuer.clone(),
        serial_number: certificate.tbs_certificate.serial_number.clone(),
    });
    let digest = AlgorithmIdentifierOwned {
        oid: ID_SHA_256,
        parameters: None,
    };
    // The builder's error type is not std::error::Error: carry its text.
    let cms = |e: cms::builder::Error| anyhow::anyhow!("building the SignedData: {e:?}");
    let mut signer_info =
        SignerInfoBuilder::new(&signer, sid, digest.clone(), &content_info, None).map_err(cms)?;
    signer_info
        .add_signed_attribute(create_signing_time_attribute().map_err(cms)?)
        .map_err(cms)?;
    let signed: ContentInfo = SignedDataBuilder::new(&content_info)
        .add_digest_algorithm(digest)
        .map_err(cms)?
        .add_certificate(CertificateChoices::Certificate(certificate))
        .map_err(cms)?
        .add_signer_info::<_, Signature>(signer_info)
        .map_err(cms)?
        .build()
        .map_err(cms)?;
    Ok(signed.to_der()?)
}
