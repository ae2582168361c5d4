//! Talking to the provider (the platform operator's gateway to J-LIS): one
//! trait with the protocol's operations, so that an adapter for a real
//! operator's API can be added without touching the rest, and its HTTP
//! implementation for PROVIDER-PROTOCOL.md v1; and an adapter for a real
//! operator's API, PocketSign Verify API v2 (docs/providers.md), which
//! offers only part of the operations ([`Capabilities`]).

mod capabilities;
mod http;
mod model;
mod pocketsign;

pub use capabilities::{Capabilities, Capability, ProviderKind, connect};
pub use http::{HttpProvider, ProviderSettings};
pub use model::{
    CertificateStatus, CheckCounts, CrlFetch, CrlPartitionInfo, Latest, LatestBasic4,
    MynaportalRequest, MynaportalTicket, OptionalItems, RevokedReason, SignatureCheck,
    SubscribeOutcome, Subscription, Verification,
};
pub use pocketsign::{CheckMethod, PocketSignProvider};

use chrono::{DateTime, Utc};

use crate::domain::CertSerial;

/// Why a provider call failed. Never carries personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider refused the API key")]
    Unauthorized,
    #[error("the provider refused the request ({status}, {problem_type}): {detail}")]
    Rejected {
        status: u16,
        problem_type: String,
        detail: String,
    },
    #[error("the provider's answer is malformed: {0}")]
    Malformed(String),
    #[error("the provider's answer does not fit the request: {0}")]
    Unexpected(String),
    #[error("the provider is unavailable after {attempts} attempt(s): {last}")]
    Unavailable { attempts: u32, last: String },
    /// The configured provider does not offer this operation (its public
    /// API does not document one): asking again will not help.
    #[error("the provider {provider} does not offer {capability}")]
    Unsupported {
        provider: &'static str,
        capability: &'static str,
    },
}

impl ProviderError {
    /// The refusal of an operation `capability` this provider does not offer.
    pub fn unsupported(provider: &'static str, capability: Capability) -> Self {
        Self::Unsupported {
            provider,
            capability: capability.as_str(),
        }
    }
}

/// The operations of the provider protocol.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// What this provider offers; kihon4's own protocol offers everything.
    /// An operation it lacks answers [`ProviderError::Unsupported`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::all("kihon4")
    }

    /// The signing CA certificate (DER).
    async fn ca_certificate(&self) -> Result<Vec<u8>, ProviderError>;
    /// The full CRL, or `NotModified` when `etag` is still current.
    async fn crl(&self, etag: Option<&str>) -> Result<CrlFetch, ProviderError>;
    /// An RFC 6960 exchange: DER request in, DER response out.
    async fn ocsp(&self, request_der: &[u8]) -> Result<Vec<u8>, ProviderError>;
    /// Registers the consent for a certificate (idempotent).
    async fn subscribe(
        &self,
        serial: &CertSerial,
        subscription: &Subscription,
    ) -> Result<SubscribeOutcome, ProviderError>;
    /// Withdraws it (also fine when absent).
    async fn unsubscribe(&self, serial: &CertSerial) -> Result<(), ProviderError>;
    /// The latest four items for each serial, in order; any number of
    /// serials (sent in batches the protocol allows).
    async fn latest_basic4(
        &self,
        serials: &[CertSerial],
    ) -> Result<Vec<LatestBasic4>, ProviderError>;

    /// The per-municipality CRL partitions.
    async fn crl_partitions(&self) -> Result<Vec<CrlPartitionInfo>, ProviderError>;
    /// One partition's CRL, or `NotModified` when `etag` is still current.
    async fn crl_partition(&self, id: &str, etag: Option<&str>) -> Result<CrlFetch, ProviderError>;
    /// Service-provider role: the provider verifies a signed document and keeps the certificate.
    async fn verify(&self, cms_der: &[u8]) -> Result<Verification, ProviderError>;
    /// Service-provider role: the provider verifies a raw card signature
    /// (certificate, digest, signature) and keeps the certificate.
    async fn verify_signature(
        &self,
        check: &SignatureCheck<'_>,
    ) -> Result<Verification, ProviderError>;
    /// Service-provider role: liveness checks (現況確認) for certificate ids, any number.
    async fn certificate_status(
        &self,
        certificate_ids: &[String],
    ) -> Result<Vec<CertificateStatus>, ProviderError>;
    /// Revocation checks by purpose in `[from, to)`.
    async fn checks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<CheckCounts, ProviderError>;
    /// A Mynaportal consent request (idempotent by `request_ref`).
    async fn mynaportal_request(
        &self,
        request: &MynaportalRequest,
    ) -> Result<MynaportalTicket, ProviderError>;
    /// The provider's JWK Set for callback signatures.
    async fn jwks(&self) -> Result<serde_json::Value, ProviderError>;
}
