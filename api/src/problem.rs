//! RFC 9457 problem details: one `type` per kind of failure, a title and
//! status per type, a detail written for the caller, and for validation the
//! fields at fault. Internal details go to the log, never to the caller.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use kihon4_core::CoreError;
use kihon4_core::consent::ConsentRefusal;
use kihon4_core::domain::{FieldErrors, ValueError};
use serde::Serialize;

use crate::extract::Refusal;
use utoipa::ToSchema;

/// Every kind of failure the API reports, with its status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Validation,
    MyNumberRefused,
    MalformedJson,
    InvalidQuery,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unauthorized,
    Forbidden,
    NotFound,
    ExternalRefTaken,
    PreconditionFailed,
    PreconditionRequired,
    NothingToChange,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyInProgress,
    NotReady,
    Internal,
    NotBase64,
    NotCms,
    CmsNoSigner,
    CmsSeveralSigners,
    SignerCertificateMissing,
    UnknownTextVersion,
    NotConsentText,
    SignatureInvalid,
    UnsupportedAlgorithm,
    UntrustedIssuer,
    CertificateExpired,
    CertificateNotYetValid,
    UserIdentificationCertificate,
    NotSigningCertificate,
    CertificateRevoked,
    CertificateUnknown,
    CrlStale,
    CrlInvalid,
    OcspInvalid,
    RevocationUnavailable,
    ProviderUnavailable,
    ProviderError,
    ConsentUnavailable,
    CustomerDeceased,
    Basic4Mismatch,
    SignedDocumentReused,
    ConsentNotActive,
    Conflict,
    NoticeNotFailed,
    ReviewNotOpen,
    CustomerNotConsenting,
    AlreadyConsenting,
    ConsentRequestOpen,
    CallbackMalformed,
    CallbackAlgorithmNotAllowed,
    CallbackUnknownKey,
    CallbackSignatureInvalid,
    CallbackExpired,
    CallbackClaimsInvalid,
    CallbackReplayed,
    UnknownConsentRequest,
    ProviderKeysUnavailable,
    MynaportalUnavailable,
    CallbackDecisionInvalid,
    BadRequest,
    RegistrationNotRetryable,
    RateLimited,
    MethodNotAllowed,
}

impl ProblemKind {
    pub fn slug(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::MyNumberRefused => "my-number-refused",
            Self::MalformedJson => "malformed-json",
            Self::InvalidQuery => "invalid-query",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::ExternalRefTaken => "external-ref-taken",
            Self::PreconditionFailed => "precondition-failed",
            Self::PreconditionRequired => "precondition-required",
            Self::NothingToChange => "nothing-to-change",
            Self::InvalidIdempotencyKey => "invalid-idempotency-key",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::IdempotencyInProgress => "idempotency-in-progress",
            Self::NotReady => "not-ready",
            Self::Internal => "internal",
            Self::NotBase64 => "not-base64",
            Self::NotCms => "not-cms",
            Self::CmsNoSigner => "cms-no-signer",
            Self::CmsSeveralSigners => "cms-several-signers",
            Self::SignerCertificateMissing => "signer-certificate-missing",
            Self::UnknownTextVersion => "unknown-text-version",
            Self::NotConsentText => "content-not-consent-text",
            Self::SignatureInvalid => "signature-invalid",
            Self::UnsupportedAlgorithm => "unsupported-algorithm",
            Self::UntrustedIssuer => "untrusted-issuer",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotYetValid => "certificate-not-yet-valid",
            Self::UserIdentificationCertificate => "user-identification-certificate",
            Self::NotSigningCertificate => "not-signing-certificate",
            Self::CertificateRevoked => "certificate-revoked",
            Self::CertificateUnknown => "certificate-unknown",
            Self::CrlStale => "crl-stale",
            Self::CrlInvalid => "crl-invalid",
            Self::OcspInvalid => "ocsp-invalid",
            Self::RevocationUnavailable => "revocation-unavailable",
            Self::ProviderUnavailable => "provider-unavailable",
            Self::ProviderError => "provider-error",
            Self::ConsentUnavailable => "consent-unavailable",
            Self::CustomerDeceased => "customer-deceased",
            Self::Basic4Mismatch => "basic4-mismatch",
            Self::SignedDocumentReused => "signed-document-reused",
            Self::ConsentNotActive => "consent-not-active",
            Self::Conflict => "conflict",
            Self::NoticeNotFailed => "notice-not-failed",
            Self::ReviewNotOpen => "review-not-open",
            Self::CustomerNotConsenting => "customer-not-consenting",
            Self::AlreadyConsenting => "already-consenting",
            Self::ConsentRequestOpen => "consent-request-open",
            Self::CallbackMalformed => "callback-malformed",
            Self::CallbackAlgorithmNotAllowed => "callback-algorithm-not-allowed",
            Self::CallbackUnknownKey => "callback-unknown-key",
            Self::CallbackSignatureInvalid => "callback-signature-invalid",
            Self::CallbackExpired => "callback-expired",
            Self::CallbackClaimsInvalid => "callback-claims-invalid",
            Self::CallbackReplayed => "callback-replayed",
            Self::UnknownConsentRequest => "unknown-consent-request",
            Self::ProviderKeysUnavailable => "provider-keys-unavailable",
            Self::MynaportalUnavailable => "mynaportal-unavailable",
            Self::CallbackDecisionInvalid => "callback-decision-invalid",
            Self::BadRequest => "bad-request",
            Self::RegistrationNotRetryable => "registration-not-retryable",
            Self::RateLimited => "rate-limited",
            Self::MethodNotAllowed => "method-not-allowed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Validation
            | Self::MyNumberRefused
            | Self::NothingToChange
            | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedJson | Self::InvalidQuery | Self::InvalidIdempotencyKey => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::ExternalRefTaken | Self::IdempotencyInProgress => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotBase64 => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotCms => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CmsNoSigner => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CmsSeveralSigners => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SignerCertificateMissing => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownTextVersion => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotConsentText => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SignatureInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedAlgorithm => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UntrustedIssuer => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CertificateExpired => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CertificateNotYetValid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UserIdentificationCertificate => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotSigningCertificate => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CertificateRevoked => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CertificateUnknown => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CrlStale => StatusCode::SERVICE_UNAVAILABLE,
            Self::CrlInvalid => StatusCode::BAD_GATEWAY,
            Self::OcspInvalid => StatusCode::BAD_GATEWAY,
            Self::RevocationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ProviderError => StatusCode::BAD_GATEWAY,
            Self::ConsentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::CustomerDeceased => StatusCode::CONFLICT,
            Self::Basic4Mismatch => StatusCode::CONFLICT,
            Self::SignedDocumentReused => StatusCode::CONFLICT,
            Self::ConsentNotActive => StatusCode::CONFLICT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::NoticeNotFailed | Self::ReviewNotOpen | Self::CustomerNotConsenting => {
                StatusCode::CONFLICT
            }
            Self::AlreadyConsenting => StatusCode::CONFLICT,
            Self::ConsentRequestOpen => StatusCode::CONFLICT,
            Self::CallbackMalformed => StatusCode::BAD_REQUEST,
            Self::CallbackAlgorithmNotAllowed => StatusCode::UNAUTHORIZED,
            Self::CallbackUnknownKey => StatusCode::UNAUTHORIZED,
            Self::CallbackSignatureInvalid => StatusCode::UNAUTHORIZED,
            Self::CallbackExpired => StatusCode::UNAUTHORIZED,
            Self::CallbackClaimsInvalid => StatusCode::UNAUTHORIZED,
            Self::CallbackReplayed => StatusCode::CONFLICT,
            Self::UnknownConsentRequest => StatusCode::NOT_FOUND,
            Self::ProviderKeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MynaportalUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::CallbackDecisionInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::RegistrationNotRetryable => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Validation => "Some fields are not valid",
            Self::MyNumberRefused => "A My Number was sent",
            Self::MalformedJson => "The body is not valid JSON",
            Self::InvalidQuery => "The query parameters are not valid",
            Self::PayloadTooLarge => "The body is too large",
            Self::UnsupportedMediaType => "The content type is not supported",
            Self::Unauthorized => "Authentication is required",
            Self::Forbidden => "This role may not do that",
            Self::NotFound => "Not found",
            Self::ExternalRefTaken => "The external_ref is already in use",
            Self::PreconditionFailed => "The record has changed",
            Self::PreconditionRequired => "If-Match is required",
            Self::NothingToChange => "Nothing to change",
            Self::InvalidIdempotencyKey => "The Idempotency-Key is not valid",
            Self::IdempotencyKeyReused => "The Idempotency-Key was used for another request",
            Self::IdempotencyInProgress => "A request with this Idempotency-Key is in progress",
            Self::NotReady => "The service is not ready",
            Self::Internal => "Internal error",
            Self::NotBase64 => "The signed document is not base64",
            Self::NotCms => "The signed document is not a CMS SignedData",
            Self::CmsNoSigner => "The signed document has no signer",
            Self::CmsSeveralSigners => "The signed document has more than one signer",
            Self::SignerCertificateMissing => "The signer's certificate is not in the document",
            Self::UnknownTextVersion => "No consent text has this version",
            Self::NotConsentText => "The signed content is not the consent text",
            Self::SignatureInvalid => "The signature does not verify",
            Self::UnsupportedAlgorithm => "The signature algorithm is not RSA with SHA-256",
            Self::UntrustedIssuer => "The certificate is not from a trusted J-LIS CA",
            Self::CertificateExpired => "The signing certificate has expired",
            Self::CertificateNotYetValid => "The signing certificate is not valid yet",
            Self::UserIdentificationCertificate => {
                "A user-identification certificate cannot sign a consent"
            }
            Self::NotSigningCertificate => "The certificate is not a JPKI signing certificate",
            Self::CertificateRevoked => "The signing certificate is revoked",
            Self::CertificateUnknown => "The OCSP responder does not know the certificate",
            Self::CrlStale => "The provider's CRL is out of date",
            Self::CrlInvalid => "The provider's CRL cannot be relied on",
            Self::OcspInvalid => "The OCSP response cannot be relied on",
            Self::RevocationUnavailable => "Revocation cannot be checked now",
            Self::ProviderUnavailable => "The provider cannot be reached",
            Self::ProviderError => "The provider failed",
            Self::ConsentUnavailable => "Consent cannot be taken here",
            Self::CustomerDeceased => "The customer is deceased",
            Self::Basic4Mismatch => "The certificate's four items differ from the customer's",
            Self::SignedDocumentReused => "This signed document was already used",
            Self::ConsentNotActive => "The consent is not active",
            Self::Conflict => "A concurrent change got there first",
            Self::NoticeNotFailed => "Only a failed notice can be retried",
            Self::ReviewNotOpen => "The review is already resolved",
            Self::CustomerNotConsenting => "The customer has no active consent",
            Self::AlreadyConsenting => "The customer has an active consent already",
            Self::ConsentRequestOpen => "The customer has an open consent request already",
            Self::CallbackMalformed => "The callback is not a JWS the provider would send",
            Self::CallbackAlgorithmNotAllowed => {
                "The callback is not signed with the provider's algorithm"
            }
            Self::CallbackUnknownKey => "No key of the provider has the callback's kid",
            Self::CallbackSignatureInvalid => "The callback's signature does not verify",
            Self::CallbackExpired => "The callback has expired",
            Self::CallbackClaimsInvalid => {
                "The callback's issuer, audience or times are not acceptable"
            }
            Self::CallbackReplayed => "This callback's jti was taken with another body",
            Self::UnknownConsentRequest => "No consent request matches the callback",
            Self::ProviderKeysUnavailable => "The provider's keys cannot be fetched now",
            Self::MynaportalUnavailable => "Mynaportal-routed consent is not configured",
            Self::CallbackDecisionInvalid => "The callback's decision cannot be recorded",
            Self::BadRequest => "The request could not be read",
            Self::RegistrationNotRetryable => "The registration has nothing to retry",
            Self::RateLimited => "Too many requests",
            Self::MethodNotAllowed => "The route does not take this method",
        }
    }

    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    /// Every kind, in the order of the enum (a new kind goes at the end
    /// here too; `docs/problems.md`'s summary must list each, which the
    /// tests check).
    pub const ALL: &[ProblemKind] = &[
        Self::Validation,
        Self::MyNumberRefused,
        Self::MalformedJson,
        Self::InvalidQuery,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::ExternalRefTaken,
        Self::PreconditionFailed,
        Self::PreconditionRequired,
        Self::NothingToChange,
        Self::InvalidIdempotencyKey,
        Self::IdempotencyKeyReused,
        Self::IdempotencyInProgress,
        Self::NotReady,
        Self::Internal,
        Self::NotBase64,
        Self::NotCms,
        Self::CmsNoSigner,
        Self::CmsSeveralSigners,
        Self::SignerCertificateMissing,
        Self::UnknownTextVersion,
        Self::NotConsentText,
        Self::SignatureInvalid,
        Self::UnsupportedAlgorithm,
        Self::UntrustedIssuer,
        Self::CertificateExpired,
        Self::CertificateNotYetValid,
        Self::UserIdentificationCertificate,
        Self::NotSigningCertificate,
        Self::CertificateRevoked,
        Self::CertificateUnknown,
        Self::CrlStale,
        Self::CrlInvalid,
        Self::OcspInvalid,
        Self::RevocationUnavailable,
        Self::ProviderUnavailable,
        Self::ProviderError,
        Self::ConsentUnavailable,
        Self::CustomerDeceased,
        Self::Basic4Mismatch,
        Self::SignedDocumentReused,
        Self::ConsentNotActive,
        Self::Conflict,
        Self::NoticeNotFailed,
        Self::ReviewNotOpen,
        Self::CustomerNotConsenting,
        Self::AlreadyConsenting,
        Self::ConsentRequestOpen,
        Self::CallbackMalformed,
        Self::CallbackAlgorithmNotAllowed,
        Self::CallbackUnknownKey,
        Self::CallbackSignatureInvalid,
        Self::CallbackExpired,
        Self::CallbackClaimsInvalid,
        Self::CallbackReplayed,
        Self::UnknownConsentRequest,
        Self::ProviderKeysUnavailable,
        Self::MynaportalUnavailable,
        Self::CallbackDecisionInvalid,
        Self::BadRequest,
        Self::RegistrationNotRetryable,
        Self::RateLimited,
        Self::MethodNotAllowed,
    ];

    /// The kind whose slug this is.
    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.slug() == slug)
    }
}

/// Where the problem types are documented (docs/problems.md lists each).
pub const PROBLEM_BASE: &str = "https://kihon4.dev/problems/";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

/// An error the API answers with.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ProblemKind,
    pub detail: String,
    pub errors: Vec<ProblemField>,
    pub retry_after: Option<u32>,
    /// Set on 401/403: the refusal to audit before the response leaves.
    pub refusal: Option<Refusal>,
}

impl ApiError {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            refusal: None,
        }
    }

    /// A refused authorisation: 401 without a valid token, 403 without the role.
    pub fn refused(refusal: Refusal) -> Self {
        let mut e = if refusal.reason == "forbidden" {
            Self::new(
                ProblemKind::Forbidden,
                format!("This route needs the role `{}`.", refusal.required_role),
            )
        } else {
            Self::new(
                ProblemKind::Unauthorized,
                "Send a valid bearer token: Authorization: Bearer <JWT>.",
            )
        };
        e.refusal = Some(refusal);
        e
    }

    pub fn field(kind: ProblemKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(kind, "See errors for the fields at fault.");
        e.errors.push(ProblemField {
            field: field.into(),
            message: message.into(),
        });
        e
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ProblemKind::NotFound, format!("No such {what}."))
    }

    /// An error whose cause stays in the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ProblemKind::Internal,
            "Something went wrong; quote the X-Request-Id when reporting it.",
        )
    }

    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            type_: self.kind.type_uri(),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if self.kind == ProblemKind::Unauthorized {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(seconds) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        let mut res = res.body(serde_json::to_vec(&self.body()).expect("a problem serialises"));
        if let Some(refusal) = &self.refusal {
            res.extensions_mut().insert(refusal.clone());
        }
        res
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        let kind = if errors.has_my_number() {
            ProblemKind::MyNumberRefused
        } else {
            ProblemKind::Validation
        };
        let detail = match kind {
            ProblemKind::MyNumberRefused => {
                "kihon4 never accepts a My Number (個人番号); remove it from the fields named in errors."
            }
            _ => "See errors for every field at fault.",
        };
        let mut e = Self::new(kind, detail);
        e.errors = errors
            .0
            .into_iter()
            .map(|f| ProblemField {
                field: f.field,
                message: match f.error {
                    ValueError::Invalid(m) => m,
                    ValueError::MyNumber => ValueError::MyNumber.to_string(),
                },
            })
            .collect();
        e
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::NotFound(what) => Self::not_found(what),
            CoreError::Invalid(errors) => errors.into(),
            CoreError::ExternalRefTaken => Self::field(
                ProblemKind::ExternalRefTaken,
                "external_ref",
                "another customer has this external_ref",
            ),
            CoreError::VersionMismatch { current } => Self::new(
                ProblemKind::PreconditionFailed,
                format!(
                    "The record is at version {current}; read it again and retry with If-Match: \"{current}\"."
                ),
            ),
            CoreError::NothingToChange => Self::new(
                ProblemKind::NothingToChange,
                "Send at least one field to change.",
            ),
            CoreError::Consent(refusal) => refusal.into(),
            CoreError::ReviewNotOpen => Self::new(
                ProblemKind::ReviewNotOpen,
                "The review was already resolved; read it again.",
            ),
            CoreError::AlreadyConsenting => Self::new(
                ProblemKind::AlreadyConsenting,
                "The customer has an active consent; there is nothing to ask for.",
            ),
            CoreError::ConsentRequestOpen => Self::new(
                ProblemKind::ConsentRequestOpen,
                "The customer was asked already and the request is still open.",
            ),
            CoreError::NotConsenting => Self::new(
                ProblemKind::CustomerNotConsenting,
                "The customer has no active consent, so J-LIS cannot be asked about them.",
            ),
            CoreError::Upstream(why) => {
                tracing::warn!(cause = %why, "the provider failed");
                let mut e = Self::new(
                    ProblemKind::ProviderError,
                    "The provider failed; try again later.",
                );
                e.retry_after = Some(30);
                e
            }
            CoreError::NothingToRetry => Self::new(
                ProblemKind::RegistrationNotRetryable,
                "The consent's registration is done, or waits for its first attempt; only a refused one, or one waiting to be retried after a failure, can be retried.",
            ),
            CoreError::NoticeNotFailed => Self::new(
                ProblemKind::NoticeNotFailed,
                "The notice is pending or sent; only a failed one can be sent again.",
            ),
            CoreError::Conflict(what) => {
                let mut e = Self::new(
                    ProblemKind::Conflict,
                    format!("{what}; send the request again."),
                );
                e.retry_after = Some(1);
                e
            }
            other @ (CoreError::Corrupt(_) | CoreError::Db(_)) => Self::internal(other),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::internal(err)
    }
}

impl From<ConsentRefusal> for ApiError {
    fn from(refusal: ConsentRefusal) -> Self {
        use kihon4_core::jpki::JpkiError;
        use kihon4_core::jpki::revocation::RevocationError;
        use kihon4_core::jpki::verify::SignatureError as S;
        let detail = format!("{}.", capitalised(&refusal.to_string()));
        let (kind, retry_after) = match &refusal {
            ConsentRefusal::UnknownTextVersion => (ProblemKind::UnknownTextVersion, None),
            ConsentRefusal::NotConsentText => (ProblemKind::NotConsentText, None),
            ConsentRefusal::Signature(e) => (
                match e {
                    S::NotCms => ProblemKind::NotCms,
                    S::NoSigner => ProblemKind::CmsNoSigner,
                    S::SeveralSigners => ProblemKind::CmsSeveralSigners,
                    S::ContentMissing => ProblemKind::NotConsentText,
                    S::SignerCertificateMissing => ProblemKind::SignerCertificateMissing,
                    S::UnsupportedAlgorithm => ProblemKind::UnsupportedAlgorithm,
                    S::SignedAttributes(_) | S::DigestMismatch | S::BadSignature => {
                        ProblemKind::SignatureInvalid
                    }
                    S::UntrustedIssuer => ProblemKind::UntrustedIssuer,
                    S::CertificateExpired => ProblemKind::CertificateExpired,
                    S::CertificateNotYetValid => ProblemKind::CertificateNotYetValid,
                    S::Profile(JpkiError::UserIdentificationCertificate) => {
                        ProblemKind::UserIdentificationCertificate
                    }
                    S::Profile(_) => ProblemKind::NotSigningCertificate,
                },
                None,
            ),
            ConsentRefusal::Revoked => (ProblemKind::CertificateRevoked, None),
            ConsentRefusal::Revocation(e) => match e {
                RevocationError::Unavailable(_) => (ProblemKind::RevocationUnavailable, Some(30)),
                RevocationError::CrlStale => (ProblemKind::CrlStale, Some(300)),
                RevocationError::CrlInvalid(_) => (ProblemKind::CrlInvalid, Some(300)),
                RevocationError::OcspInvalid(_) => (ProblemKind::OcspInvalid, Some(30)),
                RevocationError::OcspUnknown => (ProblemKind::CertificateUnknown, None),
            },
            ConsentRefusal::CustomerDeceased => (ProblemKind::CustomerDeceased, None),
            ConsentRefusal::Basic4Mismatch => (ProblemKind::Basic4Mismatch, None),
            ConsentRefusal::DocumentReused => (ProblemKind::SignedDocumentReused, None),
            ConsentRefusal::NotActive => (ProblemKind::ConsentNotActive, None),
            ConsentRefusal::ProviderUnavailable(_) => (ProblemKind::ProviderUnavailable, Some(30)),
            ConsentRefusal::ProviderFailed(_) => (ProblemKind::ProviderError, Some(30)),
            ConsentRefusal::Unavailable(_) => (ProblemKind::ConsentUnavailable, None),
            ConsentRefusal::Internal(_) => return Self::internal(refusal),
        };
        if matches!(
            kind.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
        ) {
            tracing::warn!(problem = kind.slug(), cause = %refusal, "consent could not be checked");
        }
        let mut e = Self::new(kind, detail);
        e.retry_after = retry_after;
        e
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl From<&kihon4_core::consent::callbacks::CallbackRefusal> for ApiError {
    fn from(refusal: &kihon4_core::consent::callbacks::CallbackRefusal) -> Self {
        use kihon4_core::consent::callbacks::CallbackRefusal as R;
        let kind = match refusal {
            R::Malformed => ProblemKind::CallbackMalformed,
            R::AlgorithmNotAllowed => ProblemKind::CallbackAlgorithmNotAllowed,
            R::UnknownKey => ProblemKind::CallbackUnknownKey,
            R::SignatureInvalid => ProblemKind::CallbackSignatureInvalid,
            R::Expired => ProblemKind::CallbackExpired,
            R::ClaimsInvalid => ProblemKind::CallbackClaimsInvalid,
            R::Replayed => ProblemKind::CallbackReplayed,
            R::UnknownRequest => ProblemKind::UnknownConsentRequest,
            R::KeysUnavailable => ProblemKind::ProviderKeysUnavailable,
            R::DecisionInvalid(_) => ProblemKind::CallbackDecisionInvalid,
        };
        let mut problem = Self::new(kind, format!("The callback is refused: {refusal}."));
        if matches!(refusal, R::KeysUnavailable) {
            problem.retry_after = Some(30);
        }
        problem
    }
}
