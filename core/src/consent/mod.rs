//! Consent to the provision of the basic four information: the texts a
//! customer signs, the verification of a signed consent in either JPKI
//! role, the consent records (immutable events, state derived), the
//! registrations with the provider that follow them, and the revocation
//! checks made on the way, by purpose.

pub mod callbacks;
pub mod checks;
pub mod housekeeping;
pub mod mynaportal;
pub mod records;
pub mod registrations;
pub mod requests;
pub mod texts;
pub mod verifier;

pub use records::{
    Channel, Consent, ConsentEvent, ConsentSettings, ConsentStatus, GrantRequest, Registration,
    ValidityStart, expires_at, get, grant, list, withdraw,
};
pub use verifier::{ConsentVerifier, Evidence, EvidenceForm, Kept, SignedConsent, Submitted};

use crate::jpki::revocation::RevocationError;
use crate::jpki::verify::SignatureError;

/// The only purpose kihon4 asks consent for.
pub const PURPOSE: &str = "basic4_update";

/// Why a consent is refused, or cannot be taken now. Messages carry no
/// personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("no consent text has this version")]
    UnknownTextVersion,
    #[error("the signed content is not byte for byte the consent text of this version")]
    NotConsentText,
    #[error("{0}")]
    Signature(SignatureError),
    #[error("the signing certificate is revoked")]
    Revoked,
    #[error("{0}")]
    Revocation(RevocationError),
    #[error("the customer is deceased")]
    CustomerDeceased,
    #[error(
        "the four items in the certificate differ from the customer's; send update_customer: true to take the certificate's"
    )]
    Basic4Mismatch,
    #[error("this signature has already been used for a consent")]
    DocumentReused,
    #[error("the consent is not active")]
    NotActive,
    #[error("the provider could not be reached: {0}")]
    ProviderUnavailable(String),
    #[error("the provider failed: {0}")]
    ProviderFailed(String),
    #[error("consent cannot be taken: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}
