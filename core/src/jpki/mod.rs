//! The JPKI certificate profile
//! (docs/architecture.md#the-signing-certificate): one definition of the
//! signing certificate (署名用電子証明書) that kihon4 both reads (consent) and, for
//! its simulator, builds.
//!
//! The four items are `otherName` values in the subjectAltName, found by
//! their OIDs, never by position. Key usage is critical digitalSignature +
//! nonRepudiation, the policy is the signing-certificate policy, the subject
//! is `C=JP, L=<prefecture>, L=<city>, CN=<issue number>` and the CRL
//! distribution point is a directory name per municipality.

pub mod crl;
mod era;
mod profile;
pub mod revocation;
pub mod verify;

pub use era::{Era, era_of};
pub use profile::{
    CertificateKind, CrlPartition, SigningCertificate, SigningCertificateSpec, certificate_kind,
    directory_name, issue_signing_certificate, parse_signing_certificate, read_signing_certificate,
    subject_key_id, to_der,
};

use const_oid::ObjectIdentifier;

/// The OIDs of the profile.
pub mod oid {
    use super::ObjectIdentifier;

    /// 氏名.
    pub const NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.5.1");
    /// One `0`/`1` per character of the name, `1` for a substitute character.
    pub const NAME_FLAGS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.5.2");
    /// Gender, JIS X 0303.
    pub const GENDER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.5.3");
    /// Date of birth, `EYYYYMMDD`.
    pub const BIRTH_DATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.5.4");
    /// 住所.
    pub const ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.5.5");
    /// One `0`/`1` per character of the address.
    pub const ADDRESS_FLAGS: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.5.6");
    /// The signing-certificate policy.
    pub const SIGNING_POLICY: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.1.1.20");
    /// The user-identification-certificate policy (利用者証明用).
    pub const USER_IDENTIFICATION_POLICY: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.1.3.30");
}

/// Why a certificate is not a usable JPKI signing certificate. Messages
/// never carry the certificate's personal values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpkiError {
    #[error("the certificate is not valid DER: {0}")]
    Malformed(String),
    #[error(
        "a user-identification certificate carries none of the four items and cannot sign a consent"
    )]
    UserIdentificationCertificate,
    #[error("the certificate does not carry the JPKI signing-certificate policy")]
    NotSigningCertificate,
    #[error("key usage must be critical digitalSignature + nonRepudiation")]
    KeyUsage,
    #[error("the certificate lacks {0}")]
    Missing(&'static str),
    #[error("{item} in the certificate is not valid: {reason}")]
    Invalid { item: &'static str, reason: String },
    #[error("the certificate cannot be built: {0}")]
    Build(String),
}
