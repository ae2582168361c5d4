//! Whether a signing certificate is revoked, as a platform operator checks
//! it at signature verification: by the provider's CRL (verified, cached
//! and revalidated with `If-None-Match` before every check, so a CRL
//! published a minute ago already counts, and never used past its
//! `nextUpdate`) or by OCSP through the provider (response signature,
//! nonce and freshness checked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use x509_cert::Certificate;
use x509_ocsp::builder::OcspRequestBuilder;
use x509_ocsp::ext::Nonce;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, Request};

use super::crl::{CrlError, CrlIssuer, SerialSet, check_crl};
use super::{SigningCertificate, subject_key_id};
use crate::provider::{CrlFetch, Provider, ProviderError};

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ID_PKIX_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// Clock difference tolerated between kihon4 and the responder.
const SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// An OCSP answer without `nextUpdate` is relied on for this long
/// (J-LIS refreshes its OCSP data every 15 minutes).
const OCSP_MAX_AGE: chrono::Duration = chrono::Duration::minutes(15);

/// How the platform role checks, through the provider, that a signing
/// certificate is not revoked (`KIHON4_REVOCATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Crl,
    Ocsp,
}

impl Revocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crl => "crl",
            Self::Ocsp => "ocsp",
        }
    }
}

impl std::str::FromStr for Revocation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "crl" => Ok(Self::Crl),
            "ocsp" => Ok(Self::Ocsp),
            other => Err(format!("must be `crl` or `ocsp`, not `{other}`")),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    Good,
    /// With the CRL reason code when one was given.
    Revoked(Option<u8>),
}

impl RevocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked(_) => "revoked",
        }
    }
}

/// Why a check could not be made. None of these says anything about the
/// certificate: the caller may try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("the provider could not be reached for the revocation check: {0}")]
    Unavailable(String),
    #[error("the provider's CRL is past its nextUpdate (or not yet valid)")]
    CrlStale,
    #[error("the provider's CRL cannot be relied on: {0}")]
    CrlInvalid(String),
    #[error("the OCSP response cannot be relied on: {0}")]
    OcspInvalid(String),
    #[error("the OCSP responder does not know the certificate")]
    OcspUnknown,
}

impl RevocationError {
    fn from_crl(e: CrlError) -> Self {
        match e {
            CrlError::Stale | CrlError::NotYetValid => Self::CrlStale,
            other => Self::CrlInvalid(other.to_string()),
        }
    }
}

fn unavailable(e: ProviderError) -> RevocationError {
    RevocationError::Unavailable(e.to_string())
}

struct CachedCrl {
    etag: Option<String>,
    der: Arc<Vec<u8>>,
}

/// Checks revocation through the provider, by the configured method.
pub struct RevocationChecker {
    provider: Arc<dyn Provider>,
    method: Revocation,
    /// By source: a partition id, or `""` for the full CRL.
    crls: Mutex<HashMap<String, CachedCrl>>,
    /// The partitions' ids by distribution point, as last listed.
    partitions: Mutex<HashMap<String, String>>,
    issuers: Mutex<HashMap<Vec<u8>, Arc<CrlIssuer>>>,
}

impl RevocationChecker {
    pub fn new(provider: Arc<dyn Provider>, method: Revocation) -> Self {
        Self {
            provider,
            method,
            crls: Mutex::default(),
            partitions: Mutex::default(),
            issuers: Mutex::default(),
        }
    }

    pub fn method(&self) -> Revocation {
        self.method
    }

    /// The status of `certificate`, issued by `issuer`, at `now`.
    pub async fn check(
        &self,
        certificate: &SigningCertificate,
        issuer: &Certificate,
        now: DateTime<Utc>,
    ) -> Result<RevocationStatus, RevocationError> {
        match self.method {
            Revocation::Crl => self.by_crl(certificate, issuer, now).await,
            Revocation::Ocsp => self.by_ocsp(&certificate.certificate, issuer, now).await,
        }
    }

    fn issuer(&self, ca: &Certificate) -> Result<Arc<CrlIssuer>, RevocationError> {
        let key = subject_key_id(ca).ok().flatten().unwrap_or_default();
        let mut issuers = self.issuers.lock().expect("not poisoned");
        if let Some(found) = issuers.get(&key) {
            return Ok(found.clone());
        }
        let made = Arc::new(CrlIssuer::from_certificate(ca).map_err(RevocationError::from_crl)?);
        issuers.insert(key, made.clone());
        Ok(made)
    }

    /// The partition that covers the certificate's distribution point, if
    /// the provider lists one: (its id, the distribution point).
    async fn partition_of(
        &self,
        certificate: &SigningCertificate,
    ) -> Result<Option<(String, String)>, RevocationError> {
        let Some(point) = certificate
            .crl_partition
            .as_ref()
            .and_then(|p| p.directory_name().ok())
            .map(|n| n.to_string())
        else {
            return Ok(None);
        };
        let found = self.listed_partition(&point).await?;
        Ok(found.map(|id| (id, point)))
    }

    async fn listed_partition(&self, point: &str) -> Result<Option<String>, RevocationError> {
        if let Some(id) = self.partitions.lock().expect("not poisoned").get(point) {
            return Ok(Some(id.clone()));
        }
        // Not listed when last asked: a municipality's first revocation adds one.
        let listed = self.provider.crl_partitions().await.map_err(unavailable)?;
        let mut partitions = self.partitions.lock().expect("not poisoned");
        *partitions = listed
            .into_iter()
            .map(|p| (p.distribution_point, p.id))
            .collect();
        Ok(partitions.get(point).cloned())
    }

    /// The current CRL of `source`, revalidated with the provider.
    async fn current_crl(&self, source: &str) -> Result<Arc<Vec<u8>>, RevocationError> {
        let etag = self
            .crls
            .lock()
            .expect("not poisoned")
            .get(source)
            .and_then(|c| c.etag.clone());
        let fetched = if source.is_empty() {
            self.provider.crl(etag.as_deref()).await
        } else {
            self.provider.crl_partition(source, etag.as_deref()).await
        }
        .map_err(unavailable)?;
        let mut crls = self.crls.lock().expect("not poisoned");
        match fetched {
            CrlFetch::NotModified => crls
                .get(source)
                .map(|c| c.der.clone())
                .ok_or_else(|| RevocationError::Unavailable("304 for a CRL never fetched".into())),
            CrlFetch::Fresh { der, etag } => {
                let der = Arc::new(der);
                crls.insert(
                    source.to_owned(),
                    CachedCrl {
                        etag,
                        der: der.clone(),
                    },
                );
                Ok(der)
            }
        }
    }

    async fn by_crl(
        &self,
        certificate: &SigningCertificate,
        issuer: &Certificate,
        now: DateTime<Utc>,
    ) -> Result<RevocationStatus, RevocationError> {
        let crl_issuer = self.issuer(issuer)?;
        let partition = self.partition_of(certificate).await?;
        let source = partition.as_ref().map(|(id, _)| id.as_str()).unwrap_or("");
        let der = self.current_crl(source).await?;
        let wanted: SerialSet = std::iter::once(&certificate.serial).collect();
        let (summary, hits) = tokio::task::spawn_blocking(move || {
            check_crl(der.as_slice(), &crl_issuer, &wanted, now)
        })
        .await
        .map_err(|e| RevocationError::CrlInvalid(e.to_string()))?
        .map_err(RevocationError::from_crl)?;
        // A partition must cover this certificate's municipality; the full CRL covers all.
        let expected = partition.map(|(_, point)| point);
        if summary.issuing_distribution_point != expected {
            return Err(RevocationError::CrlInvalid(
                "the CRL does not cover the certificate's distribution point".into(),
            ));
        }
        Ok(match hits.first() {
            Some(hit) => RevocationStatus::Revoked(hit.reason),
            None => RevocationStatus::Good,
        })
    }

    async fn by_ocsp(
        &self,
        certificate: &Certificate,
        issuer: &Certificate,
        now: DateTime<Utc>,
    ) -> Result<RevocationStatus, RevocationError> {
        let invalid = |what: &str| RevocationError::OcspInvalid(what.to_owned());
        let nonce_bytes: [u8; 16] = rand::random();
        let request = Request::from_cert::<sha2::Sha256>(issuer, certificate)
            .map_err(|e| invalid(&e.to_string()))?;
        let cert_id = request.req_cert.clone();
        let request_der = OcspRequestBuilder::new(x509_ocsp::Version::V1)
            .with_request(request)
            .with_extension(Nonce::new(nonce_bytes).map_err(|e| invalid(&e.to_string()))?)
            .map_err(|e| invalid(&e.to_string()))?
            .build()
            .to_der()
            .map_err(|e| invalid(&e.to_string()))?;
        let answer = self
            .provider
            .ocsp(&request_der)
            .await
            .map_err(unavailable)?;

        let response = OcspResponse::from_der(&answer).map_err(|_| invalid("not DER"))?;
        if response.response_status == OcspResponseStatus::TryLater {
            return Err(RevocationError::Unavailable(
                "the responder said tryLater".into(),
            ));
        }
        if response.response_status != OcspResponseStatus::Successful {
            return Err(invalid("the responder did not answer successfully"));
        }
        let bytes = response
            .response_bytes
            .ok_or_else(|| invalid("no response bytes"))?;
        if bytes.response_type != ID_PKIX_OCSP_BASIC {
            return Err(invalid("not a basic OCSP response"));
        }
        let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
            .map_err(|_| invalid("the basic response does not parse"))?;

        // Signed by the CA itself (J-LIS's responder signs with the CA key).
        let data = &basic.tbs_response_data;
        let by_ca = match &data.responder_id {
            x509_ocsp::ResponderId::ByName(name) => *name == issuer.tbs_certificate.subject,
            x509_ocsp::ResponderId::ByKey(hash) => {
                let key = issuer
                    .tbs_certificate
                    .subject_public_key_info
                    .subject_public_key
                    .raw_bytes();
                hash.as_bytes() == sha1_of(key)
            }
        };
        if !by_ca {
            return Err(invalid(
                "the response is not signed by the certificate's CA",
            ));
        }
        if basic.signature_algorithm.oid != SHA256_WITH_RSA {
            return Err(invalid(
                "the response is not signed with sha256WithRSAEncryption",
            ));
        }
        let tbs = data
            .to_der()
            .map_err(|_| invalid("the response does not re-encode"))?;
        let key = issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
            .verify(&tbs, basic.signature.raw_bytes())
            .map_err(|_| invalid("the response's signature does not verify"))?;

        match data.nonce() {
            Some(n) if n.0.as_bytes() == nonce_bytes => {}
            _ => return Err(invalid("the response does not echo our nonce")),
        }
        let produced = unix(&data.produced_at);
        if (produced - now).abs() > SKEW {
            return Err(invalid("the response was not produced now"));
        }
        let single = data
            .responses
            .iter()
            .find(|r| r.cert_id == cert_id)
            .ok_or_else(|| invalid("the response does not answer for the certificate"))?;
        let this_update = unix(&single.this_update);
        if this_update > now + SKEW {
            return Err(invalid("the response's thisUpdate is in the future"));
        }
        let fresh_until = single
            .next_update
            .as_ref()
            .map(unix)
            .unwrap_or(this_update + OCSP_MAX_AGE);
        if now > fresh_until + SKEW {
            return Err(invalid("the response is stale"));
        }
        match &single.cert_status {
            CertStatus::Good(_) => Ok(RevocationStatus::Good),
            CertStatus::Revoked(info) => Ok(RevocationStatus::Revoked(
                info.revocation_reason.map(|r| r as u8),
            )),
            CertStatus::Unknown(_) => Err(RevocationError::OcspUnknown),
        }
    }
}

fn sha1_of(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

fn unix(t: &x509_ocsp::OcspGeneralizedTime) -> DateTime<Utc> {
    let secs = t.0.to_unix_duration().as_secs();
    DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0).unwrap_or_default()
}
