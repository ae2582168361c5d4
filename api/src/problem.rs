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

/// Every kind of failure the API reports: its variant, status, slug (the
/// last segment of its `type` URI) and title, one line each. A new problem
/// is one line here, and its section in docs/problems.md (a test compares
/// the two).
macro_rules! problems {
    ($($kind:ident = $status:literal, $slug:literal, $title:literal;)+) => {
        /// Every kind of failure the API reports, with its status and title.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ProblemKind {
            $($kind,)+
        }

        impl ProblemKind {
            /// Every kind, in the table's order.
            pub const ALL: &[ProblemKind] = &[$(Self::$kind,)+];

            pub fn slug(self) -> &'static str {
                match self {
                    $(Self::$kind => $slug,)+
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$kind => match StatusCode::from_u16($status) {
                        Ok(status) => status,
                        Err(_) => unreachable!(),
                    },)+
                }
            }

            pub fn title(self) -> &'static str {
                match self {
                    $(Self::$kind => $title,)+
                }
            }
        }
    };
}

problems! {
    Validation                    = 422, "validation", "Some fields are not valid";
    MyNumberRefused               = 422, "my-number-refused", "A My Number was sent";
    MalformedJson                 = 400, "malformed-json", "The body is not valid JSON";
    InvalidQuery                  = 400, "invalid-query", "The query parameters are not valid";
    PayloadTooLarge               = 413, "payload-too-large", "The body is too large";
    UnsupportedMediaType          = 415, "unsupported-media-type", "The content type is not supported";
    Unauthorized                  = 401, "unauthorized", "Authentication is required";
    Forbidden                     = 403, "forbidden", "This role may not do that";
    NotFound                      = 404, "not-found", "Not found";
    ExternalRefTaken              = 409, "external-ref-taken", "The external_ref is already in use";
    PreconditionFailed            = 412, "precondition-failed", "The record has changed";
    PreconditionRequired          = 428, "precondition-required", "If-Match is required";
    NothingToChange               = 422, "nothing-to-change", "Nothing to change";
    InvalidIdempotencyKey         = 400, "invalid-idempotency-key", "The Idempotency-Key is not valid";
    IdempotencyKeyReused          = 422, "idempotency-key-reused", "The Idempotency-Key was used for another request";
    IdempotencyInProgress         = 409, "idempotency-in-progress", "A request with this Idempotency-Key is in progress";
    NotReady                      = 503, "not-ready", "The service is not ready";
    Internal                      = 500, "internal", "Internal error";
    NotBase64                     = 422, "not-base64", "The signed document is not base64";
    NotCms                        = 422, "not-cms", "The signed document is not a CMS SignedData";
    CmsNoSigner                   = 422, "cms-no-signer", "The signed document has no signer";
    CmsSeveralSigners             = 422, "cms-several-signers", "The signed document has more than one signer";
    SignerCertificateMissing      = 422, "signer-certificate-missing", "The signer's certificate is not in the document";
    UnknownTextVersion            = 422, "unknown-text-version", "No consent text has this version";
    NotConsentText                = 422, "content-not-consent-text", "The signed content is not the consent text";
    SignatureInvalid              = 422, "signature-invalid", "The signature does not verify";
    UnsupportedAlgorithm          = 422, "unsupported-algorithm", "The signature algorithm is not RSA with SHA-256";
    UnsupportedHashAlgorithm      = 422, "unsupported-hash-algorithm", "The signature's hash algorithm is not SHA-256";
    UntrustedIssuer               = 422, "untrusted-issuer", "The certificate is not from a trusted J-LIS CA";
    CertificateExpired            = 422, "certificate-expired", "The signing certificate has expired";
    CertificateNotYetValid        = 422, "certificate-not-yet-valid", "The signing certificate is not valid yet";
    UserIdentificationCertificate = 422, "user-identification-certificate", "A user-identification certificate cannot sign a consent";
    NotSigningCertificate         = 422, "not-signing-certificate", "The certificate is not a JPKI signing certificate";
    CertificateRevoked            = 422, "certificate-revoked", "The signing certificate is revoked";
    CertificateUnknown            = 422, "certificate-unknown", "The OCSP responder does not know the certificate";
    CrlStale                      = 503, "crl-stale", "The provider's CRL is out of date";
    CrlInvalid                    = 502, "crl-invalid", "The provider's CRL cannot be relied on";
    OcspInvalid                   = 502, "ocsp-invalid", "The OCSP response cannot be relied on";
    RevocationUnavailable         = 503, "revocation-unavailable", "Revocation cannot be checked now";
    ProviderUnavailable           = 503, "provider-unavailable", "The provider cannot be reached";
    ProviderError                 = 502, "provider-error", "The provider failed";
    ProviderCapabilityUnsupported = 501, "provider-capability-unsupported", "The configured provider does not offer this";
    ConsentUnavailable            = 503, "consent-unavailable", "Consent cannot be taken here";
    CustomerDeceased              = 409, "customer-deceased", "The customer is deceased";
    Basic4Mismatch                = 409, "basic4-mismatch", "The certificate's four items differ from the customer's";
    SignedDocumentReused          = 409, "signed-document-reused", "This signed document was already used";
    ConsentNotActive              = 409, "consent-not-active", "The consent is not active";
    Conflict                      = 409, "conflict", "A concurrent change got there first";
    NoticeNotFailed               = 409, "notice-not-failed", "Only a failed notice can be retried";
    LogNotSealed                  = 404, "log-not-sealed", "The audit log is not sealed that far yet";
    CursorExpired                 = 410, "cursor-expired", "The events after this cursor are no longer kept";
    ReviewNotOpen                 = 409, "review-not-open", "The review is already resolved";
    CustomerNotConsenting         = 409, "customer-not-consenting", "The customer has no active consent";
    AlreadyConsenting             = 409, "already-consenting", "The customer has an active consent already";
    ConsentRequestOpen            = 409, "consent-request-open", "The customer has an open consent request already";
    CallbackMalformed             = 400, "callback-malformed", "The callback is not a JWS the provider would send";
    CallbackAlgorithmNotAllowed   = 401, "callback-algorithm-not-allowed", "The callback is not signed with the provider's algorithm";
    CallbackUnknownKey            = 401, "callback-unknown-key", "No key of the provider has the callback's kid";
    CallbackSignatureInvalid      = 401, "callback-signature-invalid", "The callback's signature does not verify";
    CallbackExpired               = 401, "callback-expired", "The callback has expired";
    CallbackClaimsInvalid         = 401, "callback-claims-invalid", "The callback's issuer, audience or times are not acceptable";
    CallbackReplayed              = 409, "callback-replayed", "This callback's jti was taken with another body";
    UnknownConsentRequest         = 404, "unknown-consent-request", "No consent request matches the callback";
    ProviderKeysUnavailable       = 503, "provider-keys-unavailable", "The provider's keys cannot be fetched now";
    MynaportalUnavailable         = 503, "mynaportal-unavailable", "Mynaportal-routed consent is not configured";
    CallbackDecisionInvalid       = 422, "callback-decision-invalid", "The callback's decision cannot be recorded";
    BadRequest                    = 400, "bad-request", "The request could not be read";
    RegistrationNotRetryable      = 409, "registration-not-retryable", "The registration has nothing to retry";
    RateLimited                   = 429, "rate-limited", "Too many requests";
    MethodNotAllowed              = 405, "method-not-allowed", "The route does not take this method";
}

impl ProblemKind {
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

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
            CoreError::ProviderUnsupported {
                provider,
                capability,
            } => {
                tracing::warn!(
                    provider,
                    capability,
                    "a request needs a capability the provider does not offer"
                );
                Self::new(
                    ProblemKind::ProviderCapabilityUnsupported,
                    format!(
                        "The configured provider ({provider}) does not offer {capability}, which this needs; see docs/providers.md."
                    ),
                )
            }
            CoreError::NothingToRetry => Self::new(
                ProblemKind::RegistrationNotRetryable,
                "The consent's registration is done, or waits for its first attempt; only a refused one, or one waiting to be retried after a failure, can be retried.",
            ),
            CoreError::NoticeNotFailed => Self::new(
                ProblemKind::NoticeNotFailed,
                "The notice is pending or sent; only a failed one can be sent again.",
            ),
            CoreError::CursorExpired => Self::new(
                ProblemKind::CursorExpired,
                "The events after this cursor were removed after their retention.",
            ),
            CoreError::Conflict(what) => {
                let mut e = Self::new(
                    ProblemKind::Conflict,
                    format!("{what}; send the request again."),
                );
                e.retry_after = Some(1);
                e
            }
            other @ (CoreError::Corrupt(_) | CoreError::Db(_) | CoreError::SigningKey(_)) => {
                Self::internal(other)
            }
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
                    S::UnsupportedHash(_) => ProblemKind::UnsupportedHashAlgorithm,
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
