//! The provider protocol v1 over HTTP: per-call timeouts, retries with
//! exponential backoff and jitter for 429, 5xx and connection errors
//! (honouring `Retry-After`), a circuit breaker that waits out a provider in
//! maintenance instead of hammering it, and a request rate shared by every
//! caller in the process.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use chrono::{DateTime, Utc};

use super::model::{RawResults, RawStatuses, RawVerification};
use super::{
    CertificateStatus, CheckCounts, CrlFetch, CrlPartitionInfo, LatestBasic4, MynaportalRequest,
    MynaportalTicket, Provider, ProviderError, SignatureCheck, SubscribeOutcome, Subscription,
    Verification,
};
use crate::domain::CertSerial;

/// Most queries the protocol takes in one batch.
pub const MAX_BATCH: usize = 1000;

/// How a provider is reached and how patiently.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub base_url: Url,
    pub api_key: SecretString,
    /// One HTTP exchange, connection included.
    pub timeout: Duration,
    /// Tries per call, the first included.
    pub max_attempts: u32,
    /// Requests per second for the whole process.
    pub requests_per_second: f64,
    /// The longest a call waits for a provider in maintenance before giving up.
    pub max_wait: Duration,
}

impl ProviderSettings {
    pub fn new(base_url: Url, api_key: SecretString) -> Self {
        Self {
            base_url,
            api_key,
            timeout: Duration::from_secs(30),
            max_attempts: 8,
            requests_per_second: 50.0,
            max_wait: Duration::from_secs(600),
        }
    }
}

/// Spaces requests evenly: never more than the configured rate, no bursts.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Opens after consecutive failures or a maintenance answer; while open,
/// calls wait until it closes rather than adding load.
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_COOLDOWN: Duration = Duration::from_secs(5);

impl Breaker {
    async fn closed_at(&self) -> Option<Instant> {
        self.state
            .lock()
            .await
            .open_until
            .filter(|t| *t > Instant::now())
    }

    async fn success(&self) {
        let mut s = self.state.lock().await;
        s.consecutive_failures = 0;
        s.open_until = None;
    }

    async fn failure(&self, hold: Option<Duration>) {
        let mut s = self.state.lock().await;
        s.consecutive_failures += 1;
        let until = match hold {
            Some(hold) => Some(Instant::now() + hold),
            None if s.consecutive_failures >= BREAKER_THRESHOLD => {
                Some(Instant::now() + BREAKER_COOLDOWN)
            }
            None => None,
        };
        if let Some(until) = until {
            s.open_until = Some(s.open_until.map_or(until, |t| t.max(until)));
            metrics::counter!("kihon4_provider_circuit_opened_total").increment(1);
            tracing::warn!(
                failures = s.consecutive_failures,
                hold_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                "provider circuit open"
            );
        }
    }
}

/// The provider protocol over HTTP. Cheap to clone; clones share the rate
/// limit and the circuit breaker.
#[derive(Clone)]
pub struct HttpProvider {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: ProviderSettings,
    pacer: Pacer,
    breaker: Breaker,
    dialect: Dialect,
}

/// How an operator's API says what went wrong, and what it wants in every
/// request: kihon4's protocol (problem JSON) or Connect RPC (PocketSign).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Kihon4,
    Connect,
}

/// A refused exchange: tried again (with why), or given up.
pub(super) enum Failure {
    Retry(String),
    Fail(ProviderError),
}

impl Dialect {
    fn classify(self, status: StatusCode, body: &[u8]) -> Failure {
        match self {
            Self::Kihon4 => kihon4_failure(status, body),
            Self::Connect => super::pocketsign::connect_failure(status, body),
        }
    }
}

/// kihon4's protocol: 401/403 refuse the key, 429 and 5xx are tried again,
/// anything else is a refusal with its problem `type` and `detail`.
fn kihon4_failure(status: StatusCode, body: &[u8]) -> Failure {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Failure::Fail(ProviderError::Unauthorized);
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Failure::Retry(format!("HTTP {status}"));
    }
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| {
        problem
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Failure::Fail(ProviderError::Rejected {
        status: status.as_u16(),
        problem_type: text("type"),
        detail: text("detail"),
    })
}

/// A successful exchange.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Vec<u8>,
}

fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(3600)))
}

fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(100 * 2u64.saturating_pow(attempt.min(10)))
        .min(Duration::from_secs(10));
    cap.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

impl HttpProvider {
    pub fn new(settings: ProviderSettings) -> Result<Self, String> {
        Self::speaking(settings, Dialect::Kihon4)
    }

    /// A client for an operator whose API speaks `dialect`, with the same
    /// timeouts, retries, rate and circuit breaker.
    pub(super) fn speaking(settings: ProviderSettings, dialect: Dialect) -> Result<Self, String> {
        if !settings.requests_per_second.is_finite() || settings.requests_per_second <= 0.0 {
            return Err("the provider rate must be above zero".into());
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("kihon4/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pacer: Pacer {
                    interval: Duration::from_secs_f64(1.0 / settings.requests_per_second),
                    next: Mutex::new(Instant::now()),
                },
                breaker: Breaker {
                    state: Mutex::new(BreakerState::default()),
                },
                http,
                settings,
                dialect,
            }),
        })
    }

    fn url(&self, path: &str) -> Result<Url, ProviderError> {
        self.inner
            .settings
            .base_url
            .join(path.trim_start_matches('/'))
            .map_err(|e| ProviderError::Unexpected(format!("bad path {path}: {e}")))
    }

    /// One call with its retries. `ok` lists the statuses that are answers.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        if_none_match: Option<&str>,
        ok: &[StatusCode],
    ) -> Result<Answer, ProviderError> {
        let inner = &self.inner;
        let url = self.url(path)?;
        let deadline = Instant::now() + inner.settings.max_wait;
        let mut last = String::from("no attempt made");
        for attempt in 1..=inner.settings.max_attempts {
            if let Some(until) = inner.breaker.closed_at().await {
                if until > deadline {
                    return Err(ProviderError::Unavailable {
                        attempts: attempt - 1,
                        last,
                    });
                }
                tokio::time::sleep_until(until).await;
            }
            inner.pacer.wait().await;
            let mut request = inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(inner.settings.api_key.expose_secret());
            if inner.dialect == Dialect::Connect {
                // The Connect spec: clients should send it; servers may refuse traffic without it.
                request = request.header("Connect-Protocol-Version", "1");
            }
            if let Some((content_type, bytes)) = &body {
                request = request
                    .header(header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            if let Some(tag) = if_none_match {
                request = request.header(header::IF_NONE_MATCH, tag);
            }
            let wait = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let hold = retry_after(response.headers());
                    if ok.contains(&status) {
                        let etag = response
                            .headers()
                            .get(header::ETAG)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = match response.bytes().await {
                            Ok(b) => b.to_vec(),
                            Err(e) => {
                                last = format!("the body was cut off: {e}");
                                inner.breaker.failure(None).await;
                                tracing::warn!(path, attempt, "provider answer cut off");
                                continue;
                            }
                        };
                        inner.breaker.success().await;
                        return Ok(Answer { status, etag, body });
                    }
                    let bytes = response.bytes().await.unwrap_or_default();
                    match inner.dialect.classify(status, &bytes) {
                        Failure::Fail(e) => return Err(e),
                        Failure::Retry(why) => {
                            last = why;
                            tracing::warn!(
                                path,
                                attempt,
                                status = status.as_u16(),
                                "provider answered with a retryable status"
                            );
                            // A maintenance window (503 + Retry-After) holds every caller.
                            let hold_all = (status == StatusCode::SERVICE_UNAVAILABLE)
                                .then_some(hold)
                                .flatten();
                            inner.breaker.failure(hold_all).await;
                            hold.unwrap_or_else(|| backoff(attempt))
                        }
                    }
                }
                Err(e) => {
                    last = if e.is_timeout() {
                        "timed out".into()
                    } else {
                        "could not connect".into()
                    };
                    tracing::warn!(path, attempt, error = %last, "provider unreachable");
                    inner.breaker.failure(None).await;
                    backoff(attempt)
                }
            };
            if attempt == inner.settings.max_attempts || Instant::now() + wait > deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(ProviderError::Unavailable {
            attempts: inner.settings.max_attempts,
            last,
        })
    }

    /// A CRL, revalidated with `If-None-Match`.
    async fn fetch_crl(&self, path: &str, etag: Option<&str>) -> Result<CrlFetch, ProviderError> {
        let answer = self
            .exchange(
                Method::GET,
                path,
                None,
                etag,
                &[StatusCode::OK, StatusCode::NOT_MODIFIED],
            )
            .await?;
        Ok(if answer.status == StatusCode::NOT_MODIFIED {
            CrlFetch::NotModified
        } else {
            CrlFetch::Fresh {
                der: answer.body,
                etag: answer.etag,
            }
        })
    }

    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        ok: &[StatusCode],
    ) -> Result<(StatusCode, T), ProviderError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(|bytes| ("application/json", bytes)))
            .transpose()
            .map_err(|e| ProviderError::Unexpected(e.to_string()))?;
        let answer = self.exchange(method, path, body, None, ok).await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| {
            ProviderError::Malformed(format!(
                "{path}: not the JSON expected ({})",
                e.classify_name()
            ))
        })?;
        Ok((answer.status, value))
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

#[async_trait::async_trait]
impl Provider for HttpProvider {
    async fn ca_certificate(&self) -> Result<Vec<u8>, ProviderError> {
        Ok(self
            .exchange(Method::GET, "v1/ca", None, None, &[StatusCode::OK])
            .await?
            .body)
    }

    async fn crl(&self, etag: Option<&str>) -> Result<CrlFetch, ProviderError> {
        self.fetch_crl("v1/crl", etag).await
    }

    async fn ocsp(&self, request_der: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let body = Some(("application/ocsp-request", request_der.to_vec()));
        Ok(self
            .exchange(Method::POST, "v1/ocsp", body, None, &[StatusCode::OK])
            .await?
            .body)
    }

    async fn subscribe(
        &self,
        serial: &CertSerial,
        subscription: &Subscription,
    ) -> Result<SubscribeOutcome, ProviderError> {
        let path = format!("v1/basic4/subscriptions/{}", serial.as_str());
        let (status, _): (StatusCode, serde_json::Value) = self
            .json(
                Method::PUT,
                &path,
                Some(subscription),
                &[StatusCode::CREATED, StatusCode::OK],
            )
            .await?;
        Ok(if status == StatusCode::CREATED {
            SubscribeOutcome::Created
        } else {
            SubscribeOutcome::AlreadyThere
        })
    }

    async fn unsubscribe(&self, serial: &CertSerial) -> Result<(), ProviderError> {
        let path = format!("v1/basic4/subscriptions/{}", serial.as_str());
        self.exchange(Method::DELETE, &path, None, None, &[StatusCode::NO_CONTENT])
            .await?;
        Ok(())
    }

    async fn latest_basic4(
        &self,
        serials: &[CertSerial],
    ) -> Result<Vec<LatestBasic4>, ProviderError> {
        let mut all = Vec::with_capacity(serials.len());
        for batch in serials.chunks(MAX_BATCH) {
            let body = json!({
                "queries": batch.iter().map(|s| json!({"cert_serial": s.as_str()})).collect::<Vec<_>>()
            });
            let (_, raw): (StatusCode, RawResults) = self
                .json(
                    Method::POST,
                    "v1/basic4/queries",
                    Some(&body),
                    &[StatusCode::OK],
                )
                .await?;
            if raw.results.len() != batch.len() {
                return Err(ProviderError::Unexpected(format!(
                    "{} results for {} queries",
                    raw.results.len(),
                    batch.len()
                )));
            }
            for (asked, result) in batch.iter().zip(raw.results) {
                let answer = result.parse()?;
                if &answer.cert_serial != asked {
                    return Err(ProviderError::Unexpected(
                        "results are not in the order of the queries".into(),
                    ));
                }
                all.push(answer);
            }
        }
        Ok(all)
    }

    async fn crl_partitions(&self) -> Result<Vec<CrlPartitionInfo>, ProviderError> {
        #[derive(serde::Deserialize)]
        struct Items {
            items: Vec<CrlPartitionInfo>,
        }
        let (_, list): (StatusCode, Items) = self
            .json(Method::GET, "v1/crls", None::<&()>, &[StatusCode::OK])
            .await?;
        Ok(list.items)
    }

    async fn crl_partition(&self, id: &str, etag: Option<&str>) -> Result<CrlFetch, ProviderError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ProviderError::Unexpected(
                "a partition id must be plain".into(),
            ));
        }
        self.fetch_crl(&format!("v1/crls/{id}"), etag).await
    }

    async fn verify(&self, cms_der: &[u8]) -> Result<Verification, ProviderError> {
        use base64::Engine;
        let body = json!({ "cms_b64": base64::engine::general_purpose::STANDARD.encode(cms_der) });
        let (_, raw): (StatusCode, RawVerification) = self
            .json(
                Method::POST,
                "v1/verifications",
                Some(&body),
                &[StatusCode::OK],
            )
            .await?;
        raw.parse()
    }

    async fn verify_signature(
        &self,
        check: &SignatureCheck<'_>,
    ) -> Result<Verification, ProviderError> {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = json!({
            "certificate_b64": b64(check.certificate_der),
            "hash_algorithm": check.hash.as_str(),
            "digest_b64": b64(check.digest),
            "signature_b64": b64(check.signature),
        });
        let (_, raw): (StatusCode, RawVerification) = self
            .json(
                Method::POST,
                "v1/verifications",
                Some(&body),
                &[StatusCode::OK],
            )
            .await?;
        raw.parse()
    }

    async fn certificate_status(
        &self,
        certificate_ids: &[String],
    ) -> Result<Vec<CertificateStatus>, ProviderError> {
        let mut all = Vec::with_capacity(certificate_ids.len());
        for batch in certificate_ids.chunks(MAX_BATCH) {
            let body = json!({ "certificate_ids": batch });
            let (_, raw): (StatusCode, RawStatuses) = self
                .json(
                    Method::POST,
                    "v1/certificates/status",
                    Some(&body),
                    &[StatusCode::OK],
                )
                .await?;
            if raw.results.len() != batch.len()
                || raw
                    .results
                    .iter()
                    .zip(batch)
                    .any(|(r, asked)| &r.certificate_id != asked)
            {
                return Err(ProviderError::Unexpected(
                    "liveness results do not match the ids asked".into(),
                ));
            }
            all.extend(raw.results);
        }
        Ok(all)
    }

    async fn checks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<CheckCounts, ProviderError> {
        let mut url = self.url("v1/checks")?;
        url.query_pairs_mut()
            .append_pair(
                "from",
                &from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .append_pair("to", &to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let path = format!("v1/checks?{}", url.query().unwrap_or_default());
        let (_, counts): (StatusCode, CheckCounts) = self
            .json(Method::GET, &path, None::<&()>, &[StatusCode::OK])
            .await?;
        Ok(counts)
    }

    async fn mynaportal_request(
        &self,
        request: &MynaportalRequest,
    ) -> Result<MynaportalTicket, ProviderError> {
        let (_, ticket): (StatusCode, MynaportalTicket) = self
            .json(
                Method::POST,
                "v1/mynaportal/consent-requests",
                Some(request),
                &[StatusCode::CREATED, StatusCode::OK],
            )
            .await?;
        Ok(ticket)
    }

    async fn jwks(&self) -> Result<serde_json::Value, ProviderError> {
        let (_, keys): (StatusCode, serde_json::Value) = self
            .json(Method::GET, "v1/jwks.json", None::<&()>, &[StatusCode::OK])
            .await?;
        Ok(keys)
    }
}
