use sea_orm::DbErr;

use crate::domain::FieldErrors;

/// What a rule in `core` can refuse, for the API and the worker to map.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid input: {0}")]
    Invalid(#[from] FieldErrors),
    #[error("a customer with this external_ref already exists")]
    ExternalRefTaken,
    #[error("the record has changed: current version is {current}")]
    VersionMismatch { current: i64 },
    #[error("nothing to change")]
    NothingToChange,
    #[error("{0}")]
    Consent(crate::consent::ConsentRefusal),
    #[error("the notice has not failed")]
    NoticeNotFailed,
    #[error("the review is not open")]
    ReviewNotOpen,
    #[error("the customer has no active consent")]
    NotConsenting,
    #[error("the customer has an active consent already")]
    AlreadyConsenting,
    #[error("the customer has an open consent request already")]
    ConsentRequestOpen,
    #[error("the provider: {0}")]
    Upstream(String),
    /// The configured provider does not offer what this needs.
    #[error("the provider {provider} does not offer {capability}")]
    ProviderUnsupported {
        provider: &'static str,
        capability: &'static str,
    },
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("the consent has no registration to retry")]
    NothingToRetry,
    /// The change feed's events after a cursor were purged.
    #[error("the events after this cursor were removed after their retention")]
    CursorExpired,
    /// The audit signing key cannot sign (retired, unknown, its token failing) or be rotated.
    #[error("the audit signing key: {0}")]
    SigningKey(String),
}
