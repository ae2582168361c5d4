//! The provider protocol (v1) as the simulator serves it to kihon4, under
//! `/v1/`: the signing CA, CRLs (full and per municipality), OCSP, consent
//! registrations (subscriptions), queries of the latest four items, and the
//! service-provider role's verifications, liveness checks and check counts.

use actix_web::{HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;

use super::{certificate_id, protocol_serial};
use crate::Simulator;
use crate::problem::Problem;

/// The signing CA certificate.
#[get("/v1/ca")]
pub async fn ca(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/pkix-cert")
        .body(sim.ca.certificate_der.clone())
}

fn serve_crl(req: &actix_web::HttpRequest, file: &crate::crl::CrlFile) -> HttpResponse {
    let fresh = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == file.etag || tag.trim() == "*")
        });
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header(("ETag", file.etag.clone()))
        .insert_header(("Cache-Control", "no-cache"));
    if fresh {
        res.finish()
    } else {
        res.content_type("application/pkix-crl")
            .body(file.der.clone())
    }
}

/// The current full CRL of the signing CA.
#[get("/v1/crl")]
pub async fn crl(
    sim: web::Data<Simulator>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, Problem> {
    let file = faulty_crl(&sim, None).await?;
    Ok(serve_crl(
        &req,
        file.as_ref().unwrap_or(&sim.published().full),
    ))
}

/// The CRL a fault puts in place of the published one (`partition`: its id).
async fn faulty_crl(
    sim: &Simulator,
    partition: Option<&str>,
) -> Result<Option<crate::crl::CrlFile>, Problem> {
    use crate::faults::CrlFault;
    let Some(fault) = sim.faults().crl else {
        return Ok(None);
    };
    let der = match fault {
        CrlFault::Stale => {
            let then = chrono::Utc::now() - chrono::Duration::days(3);
            let revocations = sim.store.revocations(then).await?;
            let authority = sim.ca.clone();
            let published =
                web::block(move || crate::crl::publish(&authority, 1, then, &revocations))
                    .await
                    .map_err(Problem::internal)??;
            match partition {
                None => published.full.der,
                Some(id) => match published.partitions.get(id) {
                    Some((_, file)) => file.der.clone(),
                    None => return Ok(None),
                },
            }
        }
        CrlFault::BadSignature => {
            let published = sim.published();
            let mut der = match partition {
                None => published.full.der.clone(),
                Some(id) => match published.partitions.get(id) {
                    Some((_, file)) => file.der.clone(),
                    None => return Ok(None),
                },
            };
            if let Some(last) = der.last_mut() {
                *last ^= 0x01;
            }
            der
        }
    };
    Ok(Some(crate::crl::CrlFile::new(der)))
}

/// The per-municipality partitions.
#[get("/v1/crls")]
pub async fn crl_partitions(sim: web::Data<Simulator>) -> Result<HttpResponse, Problem> {
    let published = sim.published();
    let items = published
        .partitions
        .iter()
        .map(|(id, (p, file))| {
            Ok(json!({
                "id": id,
                "distribution_point": p.directory_name().map_err(Problem::internal)?.to_string(),
                "etag": file.etag,
            }))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// One municipality's CRL.
#[get("/v1/crls/{id}")]
pub async fn crl_partition(
    sim: web::Data<Simulator>,
    req: actix_web::HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let published = sim.published();
    let (_, file) = published
        .partitions
        .get(id.as_str())
        .ok_or_else(|| Problem::not_found("CRL partition"))?;
    let faulty = faulty_crl(&sim, Some(id.as_str())).await?;
    Ok(serve_crl(&req, faulty.as_ref().unwrap_or(file)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    consent_id: String,
    granted_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Registers a consent for a certificate: 201 new, 200 the same again (or replaced).
#[actix_web::put("/v1/basic4/subscriptions/{cert_serial}")]
pub async fn put_subscription(
    sim: web::Data<Simulator>,
    serial: web::Path<String>,
    body: web::Json<SubscriptionBody>,
) -> Result<HttpResponse, Problem> {
    let serial = protocol_serial(&serial, "cert_serial")?;
    if body.consent_id.trim().is_empty() || body.consent_id.len() > 128 {
        return Err(Problem::bad_request(
            "consent_id must be 1 to 128 characters.",
        ));
    }
    if body.expires_at <= body.granted_at {
        return Err(Problem::bad_request("expires_at must be after granted_at."));
    }
    let cert = sim.store.certificate(&serial).await?.ok_or_else(|| {
        Problem::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown-certificate",
            "No such certificate.",
        )
    })?;
    // A consent survives the revocation of the certificate it was given
    // with, but cannot be given with a certificate already revoked: one
    // dated after the revocation is refused.
    if let Some(revoked_at) = cert.revoked_at.filter(|at| *at <= body.granted_at) {
        return Err(Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "certificate-revoked",
            format!(
                "The certificate was revoked at {}, before the consent's granted_at.",
                revoked_at.to_rfc3339()
            ),
        ));
    }
    let outcome = sim
        .store
        .put_subscription(
            &cert,
            &crate::store::Subscription {
                consent_id: body.consent_id.clone(),
                granted_at: body.granted_at,
                expires_at: body.expires_at,
            },
        )
        .await?;
    let mut res = match outcome {
        crate::store::Upsert::Created => HttpResponse::Created(),
        _ => HttpResponse::Ok(),
    };
    Ok(res.json(json!({
        "cert_serial": serial.as_str(),
        "consent_id": body.consent_id,
        "granted_at": body.granted_at,
        "expires_at": body.expires_at,
    })))
}

/// Withdraws the consent registered for a certificate (204 also when there was none).
#[actix_web::delete("/v1/basic4/subscriptions/{cert_serial}")]
pub async fn delete_subscription(
    sim: web::Data<Simulator>,
    serial: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let serial = protocol_serial(&serial, "cert_serial")?;
    sim.store.delete_subscription(&serial).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryEntry {
    cert_serial: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesBody {
    queries: Vec<QueryEntry>,
}

/// The latest four items for a batch of certificates, in request order.
/// The batch is all-or-nothing: a bad entry refuses it, naming the entry.
#[post("/v1/basic4/queries")]
pub async fn basic4_queries(
    sim: web::Data<Simulator>,
    body: web::Json<QueriesBody>,
) -> Result<HttpResponse, Problem> {
    let n = body.queries.len();
    if n == 0 || n > crate::queries::MAX_BATCH {
        let mut p = Problem::bad_request(format!(
            "A batch holds 1 to {} queries, not {n}.",
            crate::queries::MAX_BATCH
        ));
        p.errors.push((
            "queries".into(),
            format!("must hold 1 to {} entries", crate::queries::MAX_BATCH),
        ));
        return Err(p);
    }
    let serials = body
        .queries
        .iter()
        .enumerate()
        .map(|(i, q)| protocol_serial(&q.cert_serial, &format!("queries[{i}].cert_serial")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::with_capacity(n);
    for serial in &serials {
        results.push(crate::queries::answer(&sim, serial).await?);
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

/// RFC 6960 OCSP over HTTP POST.
#[post("/v1/ocsp")]
pub async fn ocsp(
    sim: web::Data<Simulator>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/ocsp-request" {
        return Err(Problem::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Send an application/ocsp-request.",
        ));
    }
    let response = crate::ocsp::respond(&sim, &body).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/ocsp-response")
        .body(response))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    certificate_ids: Vec<String>,
}

/// Liveness checks (現況確認) for the service-provider role: billed and
/// reported as such.
#[post("/v1/certificates/status")]
pub async fn certificate_status(
    sim: web::Data<Simulator>,
    body: web::Json<StatusBody>,
) -> Result<HttpResponse, Problem> {
    let n = body.certificate_ids.len();
    if n == 0 || n > crate::queries::MAX_BATCH {
        let mut p = Problem::bad_request(format!(
            "A check holds 1 to {} certificate ids, not {n}.",
            crate::queries::MAX_BATCH
        ));
        p.errors.push((
            "certificate_ids".into(),
            format!("must hold 1 to {} entries", crate::queries::MAX_BATCH),
        ));
        return Err(p);
    }
    let serials = body
        .certificate_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            id.strip_prefix("crt_")
                .and_then(|s| protocol_serial(s, "").ok())
                .ok_or_else(|| {
                    let mut p =
                        Problem::bad_request("An entry is not a certificate id of this provider.");
                    p.errors.push((
                        format!("certificate_ids[{i}]"),
                        "is not a certificate id".into(),
                    ));
                    p
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = chrono::Utc::now();
    let mut results = Vec::with_capacity(n);
    for (id, serial) in body.certificate_ids.iter().zip(&serials) {
        let cert = sim.store.certificate(serial).await?.ok_or_else(|| {
            let mut p = Problem::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "unknown-certificate",
                "No such certificate.",
            );
            p.errors
                .push(("certificate_ids".into(), format!("{id} is unknown")));
            p
        })?;
        let mut entry = json!({"certificate_id": id, "checked_at": now});
        let reason = match (cert.revoked_at, cert.reason) {
            (Some(_), Some(3)) => Some("affiliation_changed"),
            (Some(_), Some(4)) => Some("superseded"),
            (Some(_), Some(5)) => Some("cessation_of_operation"),
            (Some(_), Some(6)) => Some("certificate_hold"),
            (Some(_), _) => Some("unspecified"),
            (None, _) if cert.not_after <= now => Some("expired"),
            (None, _) => None,
        };
        entry["status"] = json!(if reason.is_some() { "revoked" } else { "good" });
        if let Some(r) = reason {
            entry["reason"] = json!(r);
        }
        results.push(entry);
    }
    sim.store
        .record_checks(crate::store::CheckPurpose::LivenessCheck, n as u64, now)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksQuery {
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
}

/// Revocation checks by purpose, for the institution's reports.
#[get("/v1/checks")]
pub async fn checks(
    sim: web::Data<Simulator>,
    query: web::Query<ChecksQuery>,
) -> Result<HttpResponse, Problem> {
    if query.to <= query.from {
        return Err(Problem::bad_request("to must be after from."));
    }
    let (signature, liveness) = sim.store.count_checks(query.from, query.to).await?;
    Ok(HttpResponse::Ok().json(json!({
        "from": query.from,
        "to": query.to,
        "signature_verification": signature,
        "liveness_check": liveness,
    })))
}

/// A CMS document (`cms_b64`), or a raw card signature: `certificate_b64`,
/// `hash_algorithm` (`sha256`), `digest_b64` (the SHA-256 of the signed
/// text) and `signature_b64` (PKCS#1 v1.5 over its DigestInfo).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationBody {
    cms_b64: Option<String>,
    certificate_b64: Option<String>,
    hash_algorithm: Option<String>,
    digest_b64: Option<String>,
    signature_b64: Option<String>,
}

/// What a verification checked: the certificate, the digest of the signed
/// content, and why it failed, if it did.
struct Checked {
    certificate: x509_cert::Certificate,
    content_sha256: Vec<u8>,
    failure: Option<&'static str>,
}

fn unreadable(e: crate::verify::Unreadable) -> Problem {
    Problem::new(
        actix_web::http::StatusCode::BAD_REQUEST,
        "unreadable-signature",
        e.0,
    )
}

async fn check_body(sim: &Simulator, body: &VerificationBody) -> Result<Checked, Problem> {
    use sha2::Digest;
    let decode = |field: &str, value: &Option<String>| {
        let value = value
            .as_deref()
            .ok_or_else(|| Problem::bad_request(format!("{field} is required.")))?;
        B64.decode(value.as_bytes())
            .map_err(|_| Problem::bad_request(format!("{field} is not base64.")))
    };
    let authority = sim.ca.clone();
    if body.cms_b64.is_some() {
        if body.certificate_b64.is_some() || body.signature_b64.is_some() {
            return Err(Problem::bad_request(
                "give cms_b64 or certificate_b64 with signature_b64, not both.",
            ));
        }
        let der = decode("cms_b64", &body.cms_b64)?;
        let checked = web::block(move || crate::verify::check(&authority, &der))
            .await
            .map_err(Problem::internal)?
            .map_err(unreadable)?;
        return Ok(Checked {
            content_sha256: sha2::Sha256::digest(&checked.content).to_vec(),
            certificate: checked.certificate,
            failure: checked.failure,
        });
    }
    match body.hash_algorithm.as_deref() {
        Some("sha256") => {}
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "hash_algorithm `{}` is not supported; sha256 is.",
                other.chars().take(40).collect::<String>()
            )));
        }
        None => return Err(Problem::bad_request("hash_algorithm is required.")),
    }
    let certificate = decode("certificate_b64", &body.certificate_b64)?;
    let digest = decode("digest_b64", &body.digest_b64)?;
    let signature = decode("signature_b64", &body.signature_b64)?;
    let checked = web::block(move || {
        crate::verify::check_raw(&authority, &certificate, &digest, &signature).map(|c| (c, digest))
    })
    .await
    .map_err(Problem::internal)?
    .map_err(unreadable)?;
    Ok(Checked {
        certificate: checked.0.certificate,
        content_sha256: checked.1,
        failure: checked.0.failure,
    })
}

/// Verifies a signed document or a raw card signature for the
/// service-provider role: the provider keeps the certificate; the caller
/// gets ids, the serial and the four items.
#[post("/v1/verifications")]
pub async fn verifications(
    sim: web::Data<Simulator>,
    body: web::Json<VerificationBody>,
) -> Result<HttpResponse, Problem> {
    let checked = check_body(&sim, &body).await?;
    let cert_der = der::Encode::to_der(&checked.certificate).map_err(Problem::internal)?;
    let parsed = kihon4_core::jpki::parse_signing_certificate(&cert_der).map_err(|e| {
        Problem::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "not-a-signing-certificate",
            e.to_string(),
        )
    })?;
    let now = chrono::Utc::now();
    let stored = sim.store.certificate(&parsed.serial).await?;
    let reason = match (&checked.failure, &stored) {
        (Some(failure), _) => Some(*failure),
        (None, None) => Some("unknown_certificate"),
        (None, Some(c)) if c.revoked_at.is_some() => Some("revoked"),
        (None, Some(_)) if parsed.not_after <= now => Some("expired"),
        (None, Some(_)) if parsed.not_before > now => Some("not_yet_valid"),
        _ => None,
    };
    sim.store
        .record_checks(crate::store::CheckPurpose::SignatureVerification, 1, now)
        .await?;
    let mut answer = json!({
        "verification_id": uuid::Uuid::new_v4().to_string(),
        "certificate_id": certificate_id(&parsed.serial),
        "cert_serial": parsed.serial.as_str(),
        "valid": reason.is_none(),
        "not_after": parsed.not_after,
        "content_sha256": hex::encode(&checked.content_sha256),
        "basic4": kihon4_core::customers::basic4_json(&parsed.basic4),
    });
    if let Some(r) = reason {
        answer["reason"] = json!(r);
    }
    Ok(HttpResponse::Ok().json(answer))
}
