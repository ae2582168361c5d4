//! Middleware: the request id, its span, the request metrics and the
//! headers every answer carries (`Cache-Control: no-store`,
//! `X-Content-Type-Options: nosniff`) around everything; `Idempotency-Key` handling for POST.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use kihon4_core::domain::{FieldError, FieldErrors, ValueError, contains_my_number};
use kihon4_core::idempotency::{self, Claim, StoredResponse};
use tracing::Instrument;

use crate::AppState;
use crate::extract::{Refusal, RequestId, audit_refusal, bearer, payload_error};
use crate::limits::ClientSource;
use crate::problem::{ApiError, ProblemKind};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A caller's request id is kept when it is short and plain and holds
/// nothing like a My Number; else a new one (the caller's is then never
/// echoed, logged or stored).
fn sane_request_id(value: Option<&HeaderValue>) -> Option<String> {
    let v = value?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !contains_my_number(v);
    ok.then(|| v.to_owned())
}

/// Gives every request an id (echoed in `X-Request-Id`), a span that puts
/// the id on every log line, and its metrics. Logs the route pattern, never
/// the path or query, which may hold personal data.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = sane_request_id(req.headers().get(REQUEST_ID))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let started = Instant::now();
    let limited = state.as_ref().and_then(|state| over_limit(state, &req));
    let mut res = if let Some(wait) = limited {
        let mut err = ApiError::new(
            ProblemKind::RateLimited,
            format!("Too many requests; retry in {wait} s."),
        );
        err.retry_after = Some(wait);
        req.into_response(err.error_response())
    } else {
        // Handlers turn their errors into responses; an error here comes from
        // below the routes (none of kihon4's own) and actix answers it.
        match next.call(req).instrument(span.clone()).await {
            Ok(res) => res.map_into_boxed_body(),
            Err(err) => {
                span.in_scope(|| tracing::warn!(error = %err, "request failed before a response"));
                return Err(err);
            }
        }
    };
    if let Some(err) = foreign_error(&res) {
        res = ServiceResponse::new(res.request().clone(), err.error_response());
    }
    let refusal = res.response().extensions().get::<Refusal>().cloned();
    if let (Some(refusal), Some(state)) = (refusal, state) {
        // The refusal is on record before its answer leaves.
        let recorded = audit_refusal(&state, &refusal, res.request())
            .instrument(span.clone())
            .await;
        if let Err(e) = recorded {
            let err = span.in_scope(|| {
                ApiError::internal(format!("could not audit a refused authorisation: {e}"))
            });
            res = ServiceResponse::new(res.request().clone(), err.error_response());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16();
    metrics::counter!("kihon4_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("kihon4_http_request_duration_seconds", "method" => method, "route" => route.clone()).record(elapsed);
    span.in_scope(|| tracing::info!(route = %route, status, elapsed_ms = (elapsed * 1000.0) as u64, "request served"));
    let headers = res.headers_mut();
    headers.insert(
        REQUEST_ID,
        HeaderValue::from_str(&id).expect("the id is plain ASCII"),
    );
    // Answers may hold personal data: no cache keeps them, and no browser
    // guesses a type other than the one given. A route that chose its own
    // caching (the pages' style sheet and icon) keeps it.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}

/// An error answer that is not kihon4's own (actix's, for a body larger
/// than the route takes or one that cannot be read, in whatever media type)
/// as the problem document of its kind. kihon4's problems and its HTML
/// pages for customers are left as they are.
fn foreign_error(res: &ServiceResponse<BoxBody>) -> Option<ApiError> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let media_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if media_type.starts_with("application/problem+json") || media_type.starts_with("text/html") {
        return None;
    }
    Some(match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ProblemKind::PayloadTooLarge,
            "The body is larger than this route accepts.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ProblemKind::UnsupportedMediaType,
            "This route does not take a body of this media type.",
        ),
        StatusCode::NOT_FOUND => ApiError::new(ProblemKind::NotFound, "No such route."),
        s if s.is_server_error() => ApiError::internal(format!("{s} from below the routes")),
        _ => ApiError::new(
            ProblemKind::BadRequest,
            "The request could not be read (its body, headers or form).",
        ),
    })
}

/// The seconds to wait when the request is over its limit: its token
/// subject's, when it carries a valid token; else its client address's.
/// Such a request is answered `429` and nothing of it is recorded but the
/// metric.
fn over_limit(state: &AppState, req: &ServiceRequest) -> Option<u32> {
    let limits = &state.limits;
    let (limit, wait) = match bearer(req.request()).map(|t| state.auth.verify(t)) {
        Some(Ok(principal)) => (
            "subject",
            limits.per_subject.check(&format!("user:{}", principal.sub)),
        ),
        _ => (
            "address",
            limits
                .per_address
                .check(&ClientSource::of(limits, req.request()).0),
        ),
    };
    let wait = wait.err()?;
    metrics::counter!("kihon4_http_rate_limited_total", "limit" => limit).increment(1);
    Some(wait)
}

fn problem(req: ServiceRequest, err: ApiError) -> ServiceResponse<BoxBody> {
    req.into_response(err.error_response())
}

/// Runs a POST with an `Idempotency-Key` at most once per key and caller.
pub async fn idempotency(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let key = match req.headers().get(IDEMPOTENCY_KEY) {
        Some(key) if req.method() == Method::POST => key.clone(),
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("application state is registered")
        .clone();
    let principal = match bearer(req.request()).map(|t| state.auth.verify(t)) {
        Some(Ok(p)) => {
            let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
            idempotency::principal_of(&p.sub, &roles)
        }
        // Without a valid token the route refuses anyway.
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
    };
    let key = match idempotency::parse_key(key.as_bytes()) {
        Ok(key) => key,
        Err(idempotency::KeyRefusal::Invalid) => {
            return Ok(problem(
                req,
                ApiError::new(
                    ProblemKind::InvalidIdempotencyKey,
                    "Idempotency-Key must be 1 to 255 visible ASCII characters.",
                ),
            ));
        }
        Err(idempotency::KeyRefusal::MyNumber) => {
            return Ok(problem(
                req,
                ApiError::from(FieldErrors(vec![FieldError {
                    field: "Idempotency-Key".into(),
                    error: ValueError::MyNumber,
                }])),
            ));
        }
    };
    let body = match req.extract::<web::Bytes>().await {
        Ok(body) => body,
        Err(e) => return Ok(problem(req, payload_error(e))),
    };
    let request_hash = idempotency::request_hash(
        req.method().as_str(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default(),
        req.headers()
            .get(header::CONTENT_TYPE)
            .map(|ct| ct.as_bytes()),
        &body,
    );

    let claim = idempotency::claim(
        &state.db,
        &principal,
        &key,
        &request_hash,
        chrono::Utc::now(),
    )
    .await;
    match claim {
        Err(e) => Ok(problem(req, ApiError::internal(e))),
        Ok(Claim::Mismatch) => Ok(problem(
            req,
            ApiError::new(
                ProblemKind::IdempotencyKeyReused,
                "This Idempotency-Key was used with another request; use a new key.",
            ),
        )),
        Ok(Claim::InProgress) => {
            let mut e = ApiError::new(
                ProblemKind::IdempotencyInProgress,
                "The first request with this key is still running; retry shortly.",
            );
            e.retry_after = Some(1);
            Ok(problem(req, e))
        }
        Ok(Claim::Replay(stored)) => {
            let mut res =
                HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK));
            for (name, value) in &stored.headers {
                res.insert_header((name.as_str(), value.as_str()));
            }
            res.insert_header((IDEMPOTENT_REPLAYED, "true"));
            Ok(req.into_response(res.body(stored.body)))
        }
        Ok(Claim::Execute) => {
            req.set_payload(actix_web::dev::Payload::from(body));
            let res = match next.call(req).await {
                Ok(res) => res,
                Err(e) => {
                    let _ = idempotency::release(&state.db, &principal, &key).await;
                    return Err(e);
                }
            };
            let (http_req, res) = res.into_parts();
            let status = res.status();
            let headers: Vec<(String, String)> = idempotency::KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = res.headers().get(*name)?.to_str().ok()?;
                    Some(((*name).to_owned(), value.to_owned()))
                })
                .collect();
            let (head, body) = res.into_parts();
            let body = match actix_web::body::to_bytes(body).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    let _ = idempotency::release(&state.db, &principal, &key).await;
                    return Ok(ServiceResponse::new(
                        http_req,
                        ApiError::internal("response body unreadable").error_response(),
                    ));
                }
            };
            let outcome = if !idempotency::keeps(status.as_u16()) {
                idempotency::release(&state.db, &principal, &key).await
            } else {
                let stored = StoredResponse {
                    status: status.as_u16(),
                    headers,
                    body: body.to_vec(),
                };
                idempotency::complete(&state.db, &principal, &key, &stored).await
            };
            if let Err(e) = outcome {
                tracing::error!(error = %e, "could not record the idempotent response");
            }
            Ok(ServiceResponse::new(
                http_req,
                head.set_body(body).map_into_boxed_body(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let ok = HeaderValue::from_static("abc-123_X.y:z");
        assert_eq!(sane_request_id(Some(&ok)).as_deref(), Some("abc-123_X.y:z"));
        let bad = HeaderValue::from_static("has space");
        assert_eq!(sane_request_id(Some(&bad)), None);
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(sane_request_id(Some(&long)), None);
        for my_number in [
            "314159265352",
            "3141-5926-5352",
            "req:3141.5926.5352",
            "3141_5926_5352",
        ] {
            let v = HeaderValue::from_str(my_number).unwrap();
            assert_eq!(sane_request_id(Some(&v)), None, "{my_number}");
        }
        let wrong = HeaderValue::from_static("314159265353");
        assert_eq!(
            sane_request_id(Some(&wrong)).as_deref(),
            Some("314159265353")
        );
    }
}
