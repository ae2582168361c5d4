//! A stand-in for PocketSign Verify API v2 (`kihon4 sim --flavor
//! pocketsign`), for the adapter's end-to-end tests: the Connect shapes
//! PocketSign documents (`VerificationService/Verify`,
//! `CertificateService/CheckCertificateStatus`, `UserService/CheckUserStatus`)
//! served from the simulator's store, so the same residents, certificates,
//! revocations and faults apply. It answers in lowerCamelCase, reads both
//! spellings, and fails with Connect error JSON. docs/providers.md says
//! what of PocketSign is documented; what is not (the v2 `STATUS_GOOD`,
//! `STATUS_REVOKED` strings) is the stand-in's assumption, not PocketSign's.

// Handlers answer an HttpResponse either way; a refusal is one too.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, post, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chrono::Utc;
use serde_json::{Value, json};

use crate::Simulator;

/// The route prefix.
pub const PREFIX: &str = "/pocketsign.verify.v2.";

/// A Connect error `{code, message, details}` with the HTTP status the
/// Connect spec gives the code, and an ErrorInfo detail when `reason` is set.
pub fn connect_error(code: &str, message: &str, reason: Option<&str>) -> HttpResponse {
    let status = match code {
        "invalid_argument" | "failed_precondition" | "out_of_range" => StatusCode::BAD_REQUEST,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permission_denied" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
        "unimplemented" => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = json!({"code": code, "message": message});
    if let Some(reason) = reason {
        let domain = b"verify.p8n.app";
        let mut proto = vec![0x0a, reason.len() as u8];
        proto.extend_from_slice(reason.as_bytes());
        proto.extend_from_slice(&[0x12, domain.len() as u8]);
        proto.extend_from_slice(domain);
        body["details"] = json!([{
            "type": "google.rpc.ErrorInfo",
            "value": STANDARD_NO_PAD.encode(&proto),
            "debug": {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "verify.p8n.app"}
        }]);
    }
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// A fault's replacement answer, as Connect would send it.
pub fn connect_fault(status: StatusCode, retry_after: Option<String>) -> HttpResponse {
    let code = match status {
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::TOO_MANY_REQUESTS => "resource_exhausted",
        _ => "internal",
    };
    let mut response = connect_error(code, "a simulated failure", None);
    if let Some(retry) = retry_after
        && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&retry)
    {
        response
            .headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, value);
    }
    response
}

/// A field in either spelling.
fn field<'a>(body: &'a Value, snake: &str) -> Option<&'a Value> {
    body.get(snake).or_else(|| {
        let mut camel = String::new();
        let mut upper = false;
        for c in snake.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                camel.extend(c.to_uppercase());
                upper = false;
            } else {
                camel.push(c);
            }
        }
        body.get(&camel)
    })
}

fn text<'a>(body: &'a Value, snake: &str) -> Option<&'a str> {
    field(body, snake).and_then(Value::as_str)
}

fn bytes(body: &Value, snake: &str) -> Result<Vec<u8>, HttpResponse> {
    text(body, snake)
        .and_then(|v| STANDARD.decode(v).ok())
        .ok_or_else(|| connect_error("invalid_argument", &format!("{snake} must be base64"), None))
}

fn check_method(body: &Value) -> &str {
    text(body, "check_method").unwrap_or("CHECK_METHOD_UNSPECIFIED")
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn user_id(person_id: &str) -> String {
    format!("usr_{person_id}")
}

fn status_of(cert: &crate::store::IssuedCertificate) -> &'static str {
    if cert.revoked_at.is_some() || cert.not_after <= Utc::now() {
        "STATUS_REVOKED"
    } else {
        "STATUS_GOOD"
    }
}

fn certificate_status(
    cert: &crate::store::IssuedCertificate,
    method: &str,
    purpose: &str,
) -> Value {
    let mut status = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "status": status_of(cert),
        "checkMethod": method,
        "checkPurpose": purpose,
        "createdAt": now_text(),
    });
    if let Some(at) = cert.revoked_at {
        status["revokedAt"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        status["revocationReason"] = json!(match cert.reason {
            Some(3) => "CRL_REASON_AFFILIATION_CHANGED",
            Some(4) => "CRL_REASON_SUPERSEDED",
            Some(5) => "CRL_REASON_CESSATION_OF_OPERATION",
            Some(6) => "CRL_REASON_CERTIFICATE_HOLD",
            _ => "CRL_REASON_UNSPECIFIED",
        });
    }
    status
}

type Answer = Result<HttpResponse, HttpResponse>;

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    connect_error("internal", &e.to_string(), None)
}

#[post("/pocketsign.verify.v2.VerificationService/Verify")]
pub async fn verify(sim: web::Data<Simulator>, body: web::Json<Value>) -> HttpResponse {
    verify_answer(sim, body).await.unwrap_or_else(|e| e)
}

async fn verify_answer(sim: web::Data<Simulator>, body: web::Json<Value>) -> Answer {
    let body = body.into_inner();
    if text(&body, "hash_algorithm") != Some("HASH_ALGORITHM_SHA256") {
        return Err(connect_error(
            "invalid_argument",
            "hash_algorithm must be HASH_ALGORITHM_SHA256",
            None,
        ));
    }
    let (certificate, digest, signature) = (
        bytes(&body, "certificate")?,
        bytes(&body, "digest")?,
        bytes(&body, "signature")?,
    );
    let authority = sim.ca.clone();
    let der = certificate.clone();
    let (sent_digest, sent_signature) = (digest.clone(), signature.clone());
    let checked = web::block(move || {
        crate::verify::check_raw(&authority, &der, &sent_digest, &sent_signature)
    })
    .await
    .map_err(internal)?
    .map_err(|e| {
        connect_error(
            "invalid_argument",
            &e.0,
            Some("ERROR_REASON_INVALID_CERTIFICATE"),
        )
    })?;
    let unsupported = || {
        connect_error(
            "invalid_argument",
            "the certificate is not a JPKI certificate Verify supports",
            Some("ERROR_REASON_UNSUPPORTED_CERTIFICATE"),
        )
    };
    if checked.failure == Some("untrusted_issuer") {
        return Err(unsupported());
    }
    let parsed =
        kihon4_core::jpki::parse_signing_certificate(&certificate).map_err(|_| unsupported())?;
    let stored = sim
        .store
        .certificate(&parsed.serial)
        .await
        .map_err(internal)?
        .ok_or_else(unsupported)?;
    let now = Utc::now();
    // The documented order: validity, signature, revocation.
    let result = if parsed.not_after <= now {
        "RESULT_CERTIFICATE_EXPIRED"
    } else if checked.failure.is_some() {
        "RESULT_SIGNATURE_MISMATCH"
    } else if stored.revoked_at.is_some() {
        "RESULT_CERTIFICATE_REVOKED"
    } else {
        "RESULT_OK"
    };
    sim.store
        .record_checks(crate::store::CheckPurpose::SignatureVerification, 1, now)
        .await
        .map_err(internal)?;
    let created = now_text();
    Ok(HttpResponse::Ok().json(json!({
        "verification": {
            "id": uuid::Uuid::new_v4().to_string(),
            "result": result,
            "hashAlgorithm": "HASH_ALGORITHM_SHA256",
            "digest": STANDARD.encode(&digest),
            "signature": STANDARD.encode(&signature),
            "createdAt": created,
        },
        "certificate": {
            "id": crate::routes::certificate_id(&parsed.serial),
            "type": "TYPE_JPKI_CARD_DIGITAL_SIGNATURE",
            "createdAt": created,
        },
        "certificateStatus": certificate_status(&stored, check_method(&body), "CHECK_PURPOSE_SIGNATURE_VERIFICATION"),
        "certificateContent": {
            "validity": {
                "notBefore": parsed.not_before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "notAfter": parsed.not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        },
        "user": {"id": user_id(&stored.person_id), "createdAt": created},
        "isNewUser": false,
    })))
}

fn stored_serial(certificate_id: &str) -> Option<kihon4_core::domain::CertSerial> {
    kihon4_core::domain::CertSerial::parse(certificate_id.strip_prefix("crt_")?).ok()
}

#[post("/pocketsign.verify.v2.CertificateService/CheckCertificateStatus")]
pub async fn check_certificate_status(
    sim: web::Data<Simulator>,
    body: web::Json<Value>,
) -> HttpResponse {
    check_certificate_status_answer(sim, body)
        .await
        .unwrap_or_else(|e| e)
}

async fn check_certificate_status_answer(
    sim: web::Data<Simulator>,
    body: web::Json<Value>,
) -> Answer {
    let not_found = || connect_error("not_found", "no such certificate", None);
    let serial = text(&body, "certificate_id")
        .and_then(stored_serial)
        .ok_or_else(not_found)?;
    let cert = sim
        .store
        .certificate(&serial)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    liveness_answer(&sim, &body, &cert).await
}

async fn liveness_answer(
    sim: &Simulator,
    body: &Value,
    cert: &crate::store::IssuedCertificate,
) -> Answer {
    let now = Utc::now();
    sim.store
        .record_checks(crate::store::CheckPurpose::LivenessCheck, 1, now)
        .await
        .map_err(internal)?;
    let created = now_text();
    Ok(HttpResponse::Ok().json(json!({
        "certificate": {
            "id": crate::routes::certificate_id(&cert.serial),
            "type": "TYPE_JPKI_CARD_DIGITAL_SIGNATURE",
            "createdAt": created,
        },
        "certificateStatus": certificate_status(cert, check_method(body), "CHECK_PURPOSE_LIVENESS_CHECK"),
        "user": {"id": user_id(&cert.person_id), "createdAt": created},
        "isNewUser": false,
    })))
}

/// The person's newest certificate the stand-in knows; its answer has the
/// shape of CheckCertificateStatus's (PocketSign published no example of its own).
#[post("/pocketsign.verify.v2.UserService/CheckUserStatus")]
pub async fn check_user_status(sim: web::Data<Simulator>, body: web::Json<Value>) -> HttpResponse {
    check_user_status_answer(sim, body)
        .await
        .unwrap_or_else(|e| e)
}

async fn check_user_status_answer(sim: web::Data<Simulator>, body: web::Json<Value>) -> Answer {
    let not_found = || connect_error("not_found", "no such user", None);
    let person = text(&body, "user_id")
        .and_then(|u| u.strip_prefix("usr_"))
        .ok_or_else(not_found)?;
    let cert = match sim
        .store
        .current_certificate(person)
        .await
        .map_err(internal)?
    {
        Some(cert) => cert,
        None => return Err(not_found()),
    };
    liveness_answer(&sim, &body, &cert).await
}

/// Registers the Connect routes.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.service(verify)
        .service(check_certificate_status)
        .service(check_user_status);
}
