//! Checking a signed consent in either JPKI role
//! (docs/architecture.md#the-two-roles and
//! docs/architecture.md#direct-consent): as a platform operator kihon4
//! verifies the signature, the path and the revocation status itself and
//! keeps the document and the certificate; as a service provider it hands
//! the document to the provider's `/v1/verifications` and keeps only what a
//! service provider may.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::ConsentRefusal;
use super::texts::ConsentText;
use crate::domain::{Basic4, CertSerial, JpkiRole};
use crate::jpki::revocation::{Revocation, RevocationChecker, RevocationStatus};
use crate::jpki::verify::{
    HashAlgorithm, RawSignature, SignatureError, TrustAnchors, attach_content,
    inspect_raw_certificate, inspect_signed_document, verify_raw_signature, verify_signed_document,
};
use crate::provider::{Provider, ProviderError, SignatureCheck};

/// A signed consent as the institution's app sends it.
#[derive(Debug, Clone, Copy)]
pub enum SignedConsent<'a> {
    /// A CMS SignedData (DER), attached or detached.
    Cms(&'a [u8]),
    /// A raw PKCS#1 v1.5 signature over the DigestInfo of the text's
    /// digest, with the signer's certificate: what the card's JPKI
    /// application returns and the card SDKs hand over.
    Raw(RawSignature<'a>),
}

/// A signed consent as received, owned: what [`SignedConsent`] borrows.
#[derive(Debug, Clone)]
pub enum Submitted {
    Cms(Vec<u8>),
    Raw {
        certificate: Vec<u8>,
        signature: Vec<u8>,
        hash: HashAlgorithm,
    },
}

impl Submitted {
    pub fn as_signed(&self) -> SignedConsent<'_> {
        match self {
            Self::Cms(document) => SignedConsent::Cms(document),
            Self::Raw {
                certificate,
                signature,
                hash,
            } => SignedConsent::Raw(RawSignature {
                certificate_der: certificate,
                signature,
                hash: *hash,
            }),
        }
    }
}

/// How the consent was signed, as kept: `cms` or `pkcs1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceForm {
    Cms,
    /// A raw PKCS#1 v1.5 signature; `signed_document` then holds the signature value.
    Pkcs1(HashAlgorithm),
}

impl EvidenceForm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cms => "cms",
            Self::Pkcs1(HashAlgorithm::Sha256) => "pkcs1_sha256",
        }
    }
}

/// What the institution keeps as evidence, by role.
#[derive(Debug, Clone)]
pub enum Kept {
    /// The CMS document (or, for a raw signature, the signature value), the
    /// signer's certificate, and the anchor the path ended at: with the
    /// consent text, enough to verify the consent again offline.
    Platform {
        document: Vec<u8>,
        certificate: Vec<u8>,
        anchor_key_id: String,
    },
    /// The provider's ids; never the certificate.
    ServiceProvider {
        verification_id: String,
        certificate_id: String,
        /// The operator's id of the holder, when it has one.
        user_id: Option<String>,
    },
}

/// A consent document that verified, and what it proves.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub cert_serial: CertSerial,
    pub cert_not_after: DateTime<Utc>,
    pub basic4: Basic4,
    /// The signed content: the exact bytes of the consent text.
    pub content: Vec<u8>,
    /// SHA-256 of the document as sent.
    pub document_sha256: String,
    /// SHA-256 of the signature value; one signature proves one consent.
    pub signature_sha256: String,
    /// How revocation was checked: `crl`, `ocsp` or `provider`.
    pub revocation_method: &'static str,
    pub form: EvidenceForm,
    pub kept: Kept,
}

/// How consents are verified here.
pub enum ConsentVerifier {
    Platform {
        anchors: Arc<TrustAnchors>,
        revocation: RevocationChecker,
    },
    ServiceProvider {
        provider: Arc<dyn Provider>,
    },
    /// Consent cannot be taken: what is missing, for the caller and the operator.
    Unconfigured(String),
}

fn refuse_provider(e: ProviderError) -> ConsentRefusal {
    match e {
        ProviderError::Unavailable { .. } => ConsentRefusal::ProviderUnavailable(e.to_string()),
        other => ConsentRefusal::ProviderFailed(other.to_string()),
    }
}

/// What the provider's `reason` for an invalid document means.
fn provider_reason(reason: Option<&str>) -> ConsentRefusal {
    match reason.unwrap_or_default() {
        "untrusted_issuer" | "unknown_certificate" => {
            ConsentRefusal::Signature(SignatureError::UntrustedIssuer)
        }
        "no_signed_attributes" => {
            ConsentRefusal::Signature(SignatureError::SignedAttributes("none"))
        }
        "bad_content_type" => {
            ConsentRefusal::Signature(SignatureError::SignedAttributes("contentType"))
        }
        "digest_mismatch" => ConsentRefusal::Signature(SignatureError::DigestMismatch),
        "bad_signature" => ConsentRefusal::Signature(SignatureError::BadSignature),
        "expired" => ConsentRefusal::Signature(SignatureError::CertificateExpired),
        "not_yet_valid" => ConsentRefusal::Signature(SignatureError::CertificateNotYetValid),
        "revoked" => ConsentRefusal::Revoked,
        other => ConsentRefusal::ProviderFailed(format!(
            "the provider found the document invalid for a reason kihon4 does not know (`{other}`)"
        )),
    }
}

/// The platform role's revocation check of a verified signer, CMS or raw:
/// against the anchor its path ended at, by CRL or OCSP.
async fn not_revoked(
    revocation: &RevocationChecker,
    anchors: &TrustAnchors,
    verified: &crate::jpki::verify::VerifiedDocument,
    now: DateTime<Utc>,
) -> Result<(), ConsentRefusal> {
    let issuer = anchors
        .certificate(&verified.anchor_key_id)
        .ok_or(ConsentRefusal::Signature(SignatureError::UntrustedIssuer))?;
    match revocation
        .check(&verified.certificate, issuer, now)
        .await
        .map_err(ConsentRefusal::Revocation)?
    {
        RevocationStatus::Good => Ok(()),
        RevocationStatus::Revoked(_) => Err(ConsentRefusal::Revoked),
    }
}

impl ConsentVerifier {
    /// Checks `signed` as a consent to `text`, in this role.
    pub async fn verify(
        &self,
        signed: SignedConsent<'_>,
        text: &ConsentText,
        now: DateTime<Utc>,
    ) -> Result<Evidence, ConsentRefusal> {
        match signed {
            SignedConsent::Cms(document) => self.verify_cms(document, text, now).await,
            SignedConsent::Raw(raw) => self.verify_raw(raw, text, now).await,
        }
    }

    /// A raw card signature: verified here with the CMS path's checks in
    /// the platform role; in the service-provider role the certificate is
    /// read (nothing verified) and certificate, digest and signature go to
    /// the provider, which keeps the certificate.
    async fn verify_raw(
        &self,
        raw: RawSignature<'_>,
        text: &ConsentText,
        now: DateTime<Utc>,
    ) -> Result<Evidence, ConsentRefusal> {
        let signature_sha256 = hex::encode(Sha256::digest(raw.signature));
        let form = EvidenceForm::Pkcs1(raw.hash);
        match self {
            Self::Unconfigured(why) => Err(ConsentRefusal::Unavailable(why.clone())),
            Self::Platform {
                anchors,
                revocation,
            } => {
                let (certificate, signature, hash) = (
                    raw.certificate_der.to_vec(),
                    raw.signature.to_vec(),
                    raw.hash,
                );
                let (expected, anchors) = (text.text.clone(), anchors.clone());
                let verified = tokio::task::spawn_blocking(move || {
                    let raw = RawSignature {
                        certificate_der: &certificate,
                        signature: &signature,
                        hash,
                    };
                    match verify_raw_signature(&raw, expected.as_bytes(), &anchors, now) {
                        // A signature over other bytes is not over this text.
                        Err(SignatureError::DigestMismatch) => {
                            Ok(Err(ConsentRefusal::NotConsentText))
                        }
                        Err(e) => Err(e),
                        Ok(v) => Ok(Ok((v, anchors))),
                    }
                })
                .await
                .map_err(|e| ConsentRefusal::Internal(e.to_string()))?
                .map_err(ConsentRefusal::Signature)??;
                let (verified, anchors) = verified;
                not_revoked(revocation, &anchors, &verified, now).await?;
                Ok(Evidence {
                    document_sha256: signature_sha256.clone(),
                    signature_sha256,
                    cert_serial: verified.certificate.serial.clone(),
                    cert_not_after: verified.certificate.not_after,
                    basic4: verified.certificate.basic4.clone(),
                    content: verified.content,
                    revocation_method: revocation.method().as_str(),
                    form,
                    kept: Kept::Platform {
                        document: verified.signature,
                        certificate: verified.certificate_der,
                        anchor_key_id: hex::encode(&verified.anchor_key_id),
                    },
                })
            }
            Self::ServiceProvider { provider } => {
                // Read what needs no trust first: a certificate that cannot
                // sign a consent costs the institution no verification.
                let certificate = inspect_raw_certificate(raw.certificate_der)
                    .map_err(ConsentRefusal::Signature)?;
                let digest = Sha256::digest(text.text.as_bytes());
                let v = provider
                    .verify_signature(&SignatureCheck {
                        certificate_der: raw.certificate_der,
                        hash: raw.hash,
                        digest: &digest,
                        signature: raw.signature,
                    })
                    .await
                    .map_err(refuse_provider)?;
                if !v.valid {
                    return Err(match v.reason.as_deref() {
                        Some("digest_mismatch") => ConsentRefusal::NotConsentText,
                        Some("unsupported_hash_algorithm") => ConsentRefusal::Signature(
                            SignatureError::UnsupportedHash("sha1".into()),
                        ),
                        reason => provider_reason(reason),
                    });
                }
                if v.content_sha256 != text.sha256 {
                    return Err(ConsentRefusal::NotConsentText);
                }
                if v.cert_serial != certificate.serial {
                    return Err(ConsentRefusal::ProviderFailed(
                        "the provider verified another certificate than the one sent".into(),
                    ));
                }
                Ok(Evidence {
                    document_sha256: signature_sha256.clone(),
                    signature_sha256,
                    cert_serial: v.cert_serial,
                    cert_not_after: v.not_after,
                    basic4: v.basic4,
                    content: text.text.as_bytes().to_vec(),
                    revocation_method: "provider",
                    form,
                    kept: Kept::ServiceProvider {
                        verification_id: v.verification_id,
                        certificate_id: v.certificate_id,
                        user_id: v.user_id,
                    },
                })
            }
        }
    }

    /// Checks `document` (a DER CMS SignedData) as a consent to `text`.
    async fn verify_cms(
        &self,
        document: &[u8],
        text: &ConsentText,
        now: DateTime<Utc>,
    ) -> Result<Evidence, ConsentRefusal> {
        let document_sha256 = hex::encode(Sha256::digest(document));
        match self {
            Self::Unconfigured(why) => Err(ConsentRefusal::Unavailable(why.clone())),
            Self::Platform {
                anchors,
                revocation,
            } => {
                let (doc, expected, anchors) =
                    (document.to_vec(), text.text.clone(), anchors.clone());
                let verified = tokio::task::spawn_blocking(move || {
                    let attached = inspect_signed_document(&doc)?.attached.is_some();
                    let result =
                        verify_signed_document(&doc, Some(expected.as_bytes()), &anchors, now);
                    match result {
                        // A detached signature over other bytes is not over this text.
                        Err(SignatureError::DigestMismatch) if !attached => {
                            Ok(Err(ConsentRefusal::NotConsentText))
                        }
                        Err(e) => Err(e),
                        Ok(v) if v.content != expected.as_bytes() => {
                            Ok(Err(ConsentRefusal::NotConsentText))
                        }
                        Ok(v) => Ok(Ok((v, anchors))),
                    }
                })
                .await
                .map_err(|e| ConsentRefusal::Internal(e.to_string()))?
                .map_err(ConsentRefusal::Signature)??;
                let (verified, anchors) = verified;
                not_revoked(revocation, &anchors, &verified, now).await?;
                Ok(Evidence {
                    signature_sha256: hex::encode(Sha256::digest(&verified.signature)),
                    cert_serial: verified.certificate.serial.clone(),
                    cert_not_after: verified.certificate.not_after,
                    basic4: verified.certificate.basic4.clone(),
                    content: verified.content,
                    document_sha256,
                    revocation_method: revocation.method().as_str(),
                    form: EvidenceForm::Cms,
                    kept: Kept::Platform {
                        document: document.to_vec(),
                        certificate: verified.certificate_der,
                        anchor_key_id: hex::encode(&verified.anchor_key_id),
                    },
                })
            }
            Self::ServiceProvider { provider } => {
                // Read what needs no trust first: a document that cannot be a
                // consent to this text costs the institution no verification.
                let inspected =
                    inspect_signed_document(document).map_err(ConsentRefusal::Signature)?;
                let attached_doc = match &inspected.attached {
                    Some(content) if content.as_slice() != text.text.as_bytes() => {
                        return Err(ConsentRefusal::NotConsentText);
                    }
                    Some(_) => document.to_vec(),
                    None => attach_content(document, text.text.as_bytes())
                        .map_err(ConsentRefusal::Signature)?,
                };
                let v = provider
                    .verify(&attached_doc)
                    .await
                    .map_err(refuse_provider)?;
                if !v.valid {
                    return Err(match (v.reason.as_deref(), inspected.attached) {
                        (Some("digest_mismatch"), None) => ConsentRefusal::NotConsentText,
                        (reason, _) => provider_reason(reason),
                    });
                }
                if v.content_sha256 != text.sha256 {
                    return Err(ConsentRefusal::NotConsentText);
                }
                if v.cert_serial != inspected.certificate.serial {
                    return Err(ConsentRefusal::ProviderFailed(
                        "the provider verified another certificate than the document's".into(),
                    ));
                }
                Ok(Evidence {
                    signature_sha256: hex::encode(Sha256::digest(&inspected.signature)),
                    cert_serial: v.cert_serial,
                    cert_not_after: v.not_after,
                    basic4: v.basic4,
                    content: text.text.as_bytes().to_vec(),
                    document_sha256,
                    revocation_method: "provider",
                    form: EvidenceForm::Cms,
                    kept: Kept::ServiceProvider {
                        verification_id: v.verification_id,
                        certificate_id: v.certificate_id,
                        user_id: v.user_id,
                    },
                })
            }
        }
    }
}

impl ConsentVerifier {
    /// The verifier of this role: `provider` is the provider client when
    /// `KIHON4_PROVIDER_URL` is set, `anchors` the trust anchors loaded at
    /// start-up (in the platform role). What is missing makes consent
    /// answer `consent-unavailable`, saying what to set.
    pub fn new(
        role: JpkiRole,
        anchors: Option<Arc<TrustAnchors>>,
        revocation: Revocation,
        provider: Option<Arc<dyn Provider>>,
    ) -> Self {
        let Some(provider) = provider else {
            return Self::Unconfigured(
                "KIHON4_PROVIDER_URL is not set, so signatures cannot be checked".into(),
            );
        };
        match (role, anchors) {
            (JpkiRole::ServiceProvider, _) => Self::ServiceProvider { provider },
            (JpkiRole::Platform, None) => Self::Unconfigured(
                "KIHON4_TRUST_ANCHORS is not set, so no certificate can be trusted".into(),
            ),
            (JpkiRole::Platform, Some(anchors)) => Self::Platform {
                anchors,
                revocation: RevocationChecker::new(provider, revocation),
            },
        }
    }
}
