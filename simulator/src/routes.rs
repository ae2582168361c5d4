//! The simulator's routes: the provider protocol under `/v1/`, the
//! simulator's control under `/sim/`.

use actix_web::{HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use der::{Decode, EncodePem};
use kihon4_core::domain::{Basic4, RawBasic4};
use serde::Deserialize;
use serde_json::{Value, json};
use x509_cert::Certificate;

use crate::Simulator;
use crate::problem::Problem;
use crate::store::Person;

/// The signing CA certificate.
#[get("/v1/ca")]
pub async fn ca(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/pkix-cert")
        .body(sim.ca.certificate_der.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Basic4Body {
    name: Option<String>,
    name_substitute_flags: Option<String>,
    address: Option<String>,
    address_substitute_flags: Option<String>,
    birth_date: Option<String>,
    gender: Option<String>,
    /// Optional items the register may hold: furigana, a former surname,
    /// a scheduled move abroad.
    name_kana: Option<String>,
    former_surname: Option<String>,
    overseas_move: Option<OverseasMove>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverseasMove {
    scheduled_on: chrono::NaiveDate,
}

impl Basic4Body {
    /// The optional items given, checked: furigana in kana, a surname of at
    /// most 50 characters.
    fn extras(&self) -> Result<serde_json::Map<String, Value>, Problem> {
        let mut out = serde_json::Map::new();
        let mut errors = kihon4_core::domain::FieldErrors::new();
        if let Some(kana) = &self.name_kana {
            let ok = !kana.trim().is_empty()
                && kana.chars().count() <= 100
                && kana.chars().all(|c| {
                    matches!(c, '\u{3041}'..='\u{309F}' | '\u{30A0}'..='\u{30FF}' | ' ' | '\u{3000}')
                });
            if ok {
                out.insert("name_kana".into(), json!(kana));
            } else {
                errors.push(
                    "basic4.name_kana",
                    kihon4_core::domain::ValueError::invalid("must be 1 to 100 kana"),
                );
            }
        }
        if let Some(surname) = &self.former_surname {
            let ok = !surname.trim().is_empty()
                && surname.chars().count() <= 50
                && !surname.chars().any(char::is_control);
            if ok {
                out.insert("former_surname".into(), json!(surname));
            } else {
                errors.push(
                    "basic4.former_surname",
                    kihon4_core::domain::ValueError::invalid("must be 1 to 50 characters"),
                );
            }
        }
        if let Some(m) = &self.overseas_move {
            out.insert(
                "overseas_move".into(),
                json!({"scheduled_on": m.scheduled_on.to_string()}),
            );
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(Problem::from(errors))
        }
    }

    fn parse(&self) -> Result<Basic4, Problem> {
        Basic4::parse(RawBasic4 {
            name: self.name.as_deref(),
            name_substitute_flags: self.name_substitute_flags.as_deref(),
            address: self.address.as_deref(),
            address_substitute_flags: self.address_substitute_flags.as_deref(),
            birth_date: self.birth_date.as_deref(),
            gender: self.gender.as_deref(),
        })
        .map_err(|errors| {
            let mut prefixed = kihon4_core::domain::FieldErrors::new();
            prefixed.extend_prefixed("basic4", errors);
            Problem::from(prefixed)
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    basic4: Basic4Body,
}

fn pem(der: &[u8]) -> Result<String, Problem> {
    let cert = Certificate::from_der(der).map_err(Problem::internal)?;
    cert.to_pem(der::pem::LineEnding::LF)
        .map_err(Problem::internal)
}

/// A resident with a freshly issued signing certificate and its key.
#[post("/sim/persons")]
pub async fn create_person(
    sim: web::Data<Simulator>,
    body: web::Json<NewPerson>,
) -> Result<HttpResponse, Problem> {
    let basic4 = body.basic4.parse()?;
    let person = Person {
        id: uuid::Uuid::now_v7().to_string(),
        partition: crate::municipality::of_address(basic4.address.as_str()),
        basic4,
        extras: body.basic4.extras()?,
        deceased: false,
    };
    let issued = {
        let (sim, person) = (sim.clone(), person.clone());
        web::block(move || {
            crate::residents::issue(&sim.ca, &person.id, &person.basic4, &person.partition)
        })
        .await
        .map_err(Problem::internal)??
    };
    sim.store.insert_person(&person, &issued).await?;
    Ok(HttpResponse::Created().json(json!({
        "person_id": person.id,
        "cert_serial": issued.serial.as_str(),
        "certificate_id": certificate_id(&issued.serial),
        "certificate_pem": pem(issued.der.as_deref().unwrap_or_default())?,
        "private_key_pem": issued.key_pem,
    })))
}

/// A resident and their current certificate.
#[get("/sim/persons/{person_id}")]
pub async fn read_person(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let person = sim
        .store
        .person(&id)
        .await?
        .ok_or_else(|| Problem::not_found("person"))?;
    let current = sim.store.current_certificate(&person.id).await?;
    let current_pem = match &current {
        Some(c) => Some(pem(&sim.material(c).await?.0)?),
        None => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "person_id": person.id,
        "status": if person.deceased { "deceased" } else { "alive" },
        "cert_serial": current.as_ref().map(|c| c.serial.as_str().to_owned()),
        "certificate_pem": current_pem,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    content_b64: String,
}

/// A CMS SignedData over the content, made with the resident's current key.
#[post("/sim/persons/{person_id}/sign")]
pub async fn sign(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
    body: web::Json<SignBody>,
) -> Result<HttpResponse, Problem> {
    let content = B64
        .decode(body.content_b64.as_bytes())
        .map_err(|_| Problem::bad_request("content_b64 is not base64."))?;
    let person = sim
        .store
        .person(&id)
        .await?
        .ok_or_else(|| Problem::not_found("person"))?;
    let cert = sim
        .store
        .current_certificate(&person.id)
        .await?
        .ok_or_else(|| {
            Problem::new(
                actix_web::http::StatusCode::CONFLICT,
                "no-valid-certificate",
                "The person holds no valid signing certificate.",
            )
        })?;
    let (der, key_pem) = sim.material(&cert).await?;
    let signed = web::block(move || crate::cms_sign::sign(&content, &der, &key_pem))
        .await
        .map_err(Problem::internal)??;
    Ok(HttpResponse::Ok().json(json!({ "cms_der_b64": B64.encode(signed) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    kind: String,
    basic4: Option<Basic4Body>,
    /// For a move or rename: issue the new certificate now (default) or not yet.
    reissue: Option<bool>,
}

/// A life event: revokes the current certificate and, where the person
/// lives on, issues a new one.
#[post("/sim/persons/{person_id}/events")]
pub async fn life_event(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
    body: web::Json<EventBody>,
) -> Result<HttpResponse, Problem> {
    use crate::events::{EventError, EventKind};
    let kind = EventKind::parse(&body.kind).ok_or_else(|| {
        let mut e = kihon4_core::domain::FieldErrors::new();
        e.push(
            "kind",
            kihon4_core::domain::ValueError::invalid(
                "must be move, rename, death, card_lost or renew",
            ),
        );
        Problem::from(e)
    })?;
    let mut person = sim
        .store
        .person(&id)
        .await?
        .ok_or_else(|| Problem::not_found("person"))?;
    if let Some(b) = &body.basic4 {
        person.extras.extend(b.extras()?);
    }
    let given = body.basic4.as_ref().map(|b| RawBasic4 {
        name: b.name.as_deref(),
        name_substitute_flags: b.name_substitute_flags.as_deref(),
        address: b.address.as_deref(),
        address_substitute_flags: b.address_substitute_flags.as_deref(),
        birth_date: b.birth_date.as_deref(),
        gender: b.gender.as_deref(),
    });
    let outcome = crate::events::apply(
        &sim,
        person,
        kind,
        given.unwrap_or_default(),
        body.reissue.unwrap_or(true),
    )
    .await
    .map_err(|e| match e {
        EventError::Deceased | EventError::NoCertificate => Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "no-valid-certificate",
            e.to_string(),
        ),
        EventError::Invalid(errors) => Problem::from(errors),
        EventError::Failed(e) => Problem::internal(e),
    })?;
    let new = outcome.new_certificate.as_ref();
    Ok(HttpResponse::Ok().json(json!({
        "person_id": id.as_str(),
        "revoked_serial": outcome.revoked.serial.as_str(),
        "reason": kind.reason_code(),
        "cert_serial": new.map(|c| c.serial.as_str().to_owned()),
        "certificate_id": new.map(|c| certificate_id(&c.serial)),
        "certificate_pem": new.and_then(|c| c.der.as_deref()).map(pem).transpose()?,
        "private_key_pem": new.map(|c| c.key_pem.clone()),
    })))
}

/// Publishes the CRLs now.
#[post("/sim/crl/publish")]
pub async fn publish_crls(sim: web::Data<Simulator>) -> Result<HttpResponse, Problem> {
    let published = sim.publish_crls().await?;
    Ok(HttpResponse::Ok().json(json!({
        "crl_number": published.number,
        "entries": published.entries,
        "partitions": published.partitions.len(),
        "this_update": published.this_update,
    })))
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

/// A serial as the protocol writes it: lowercase hex without leading zeros.
fn protocol_serial(raw: &str, field: &str) -> Result<kihon4_core::domain::CertSerial, Problem> {
    match kihon4_core::domain::CertSerial::parse(raw) {
        Ok(s) if s.as_str() == raw => Ok(s),
        _ => {
            let mut p = Problem::bad_request(
                "A certificate serial is not lowercase hex without leading zeros.",
            );
            p.errors.push((
                field.to_owned(),
                "must be lowercase hex without leading zeros".into(),
            ));
            Err(p)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    consent_id: String,
    granted_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSubscriptions {
    items: Vec<BulkSubscription>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSubscription {
    cert_serial: String,
    consent_id: String,
    granted_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Registers many consents at once, for load tests.
#[post("/sim/subscriptions/bulk")]
pub async fn bulk_subscriptions(
    sim: web::Data<Simulator>,
    body: web::Json<BulkSubscriptions>,
) -> Result<HttpResponse, Problem> {
    if body.items.is_empty() || body.items.len() > 5000 {
        return Err(Problem::bad_request("items must hold 1 to 5000 consents."));
    }
    let mut items = Vec::with_capacity(body.items.len());
    for item in &body.items {
        let serial = protocol_serial(&item.cert_serial, "cert_serial")?;
        let s = item;
        if s.consent_id.trim().is_empty() || s.consent_id.len() > 128 {
            return Err(Problem::bad_request(
                "consent_id must be 1 to 128 characters.",
            ));
        }
        if s.expires_at <= s.granted_at {
            return Err(Problem::bad_request("expires_at must be after granted_at."));
        }
        items.push((
            serial,
            crate::store::Subscription {
                consent_id: s.consent_id.clone(),
                granted_at: s.granted_at,
                expires_at: s.expires_at,
            },
        ));
    }
    let unknown = sim.store.put_subscriptions(&items).await?;
    Ok(HttpResponse::Ok().json(json!({
        "registered": items.len() - unknown.len(),
        "unknown_serials": unknown,
    })))
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

/// Sets the faults in force on the provider routes (the whole set; left-out fields are off).
#[actix_web::put("/sim/faults")]
pub async fn put_faults(
    sim: web::Data<Simulator>,
    body: web::Json<crate::faults::Faults>,
) -> Result<HttpResponse, Problem> {
    body.check().map_err(Problem::bad_request)?;
    sim.set_faults(body.into_inner());
    Ok(HttpResponse::Ok().json(sim.faults()))
}

/// Counters for tests of how callers behave.
#[get("/sim/stats")]
pub async fn stats(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "provider_requests": sim.provider_requests() }))
}

/// The provider's id for a certificate it verified (opaque to callers).
pub fn certificate_id(serial: &kihon4_core::domain::CertSerial) -> String {
    format!("crt_{}", serial.as_str())
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkPeople {
    count: u32,
    seed: u64,
}

/// Synthetic residents for load tests; certificates are made when first needed.
#[post("/sim/persons/bulk")]
pub async fn bulk_people(
    sim: web::Data<Simulator>,
    body: web::Json<BulkPeople>,
) -> Result<HttpResponse, Problem> {
    if body.count == 0 || body.count > 1_000_000 {
        return Err(Problem::bad_request("count must be from 1 to 1000000."));
    }
    let (count, seed) = (body.count as usize, body.seed);
    let people = web::block(move || {
        let mut population = crate::bulk::Population::new(seed);
        (0..count)
            .map(|_| population.resident())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(Problem::internal)?;
    match sim.store.insert_people(&people).await {
        Ok(()) => {}
        Err(e) if kihon4_core::db::is_unique_violation(&e) => {
            return Err(Problem::new(
                actix_web::http::StatusCode::CONFLICT,
                "seed-already-loaded",
                "Residents from this seed are already on the register; use another seed.",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(HttpResponse::Created().json(json!({ "created": count, "seed": seed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeoplePage {
    cursor: Option<String>,
    limit: Option<u64>,
    /// `basic4`: each person's four items too.
    include: Option<String>,
}

/// Residents by id, with their current certificate, a page at a time.
#[get("/sim/persons")]
pub async fn list_people(
    sim: web::Data<Simulator>,
    query: web::Query<PeoplePage>,
) -> Result<HttpResponse, Problem> {
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let with_basic4 = match query.include.as_deref() {
        None => false,
        Some("basic4") => true,
        Some(_) => return Err(Problem::bad_request("include must be basic4.")),
    };
    let page = sim
        .store
        .list_people(query.cursor.as_deref(), limit)
        .await?;
    let next = (page.len() as u64 == limit)
        .then(|| page.last().map(|p| p.id.clone()))
        .flatten();
    let items: Vec<Value> = page
        .into_iter()
        .map(|p| {
            let mut item = json!({"person_id": p.id, "cert_serial": p.cert_serial});
            if with_basic4 {
                item["basic4"] = p.basic4;
            }
            item
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkEvents {
    seed: u64,
    #[serde(default)]
    moves: u32,
    #[serde(default)]
    renames: u32,
    #[serde(default)]
    deaths: u32,
    #[serde(default)]
    cards_lost: u32,
}

/// Life events over random living residents (the seed picks them).
#[post("/sim/events/bulk")]
pub async fn bulk_events(
    sim: web::Data<Simulator>,
    body: web::Json<BulkEvents>,
) -> Result<HttpResponse, Problem> {
    use crate::events::EventKind;
    let plan = [
        (EventKind::Move, body.moves),
        (EventKind::Rename, body.renames),
        (EventKind::Death, body.deaths),
        (EventKind::CardLost, body.cards_lost),
    ];
    let wanted: usize = plan.iter().map(|(_, n)| *n as usize).sum();
    let mut ids = sim.store.living_ids().await?;
    if wanted > ids.len() {
        return Err(Problem::bad_request(format!(
            "{wanted} events for {} living residents.",
            ids.len()
        )));
    }
    let mut population = crate::bulk::Population::new(body.seed);
    population.shuffle(&mut ids);
    let mut picked = ids.into_iter();
    let now = chrono::Utc::now();
    let mut events = Vec::with_capacity(wanted);
    for (kind, n) in plan {
        for _ in 0..n {
            let id = picked.next().expect("counted above");
            let Some(mut person) = sim.store.person(&id).await? else {
                continue;
            };
            match kind {
                EventKind::Move => {
                    let address = population.address();
                    person.basic4.address = kihon4_core::domain::Address::parse(&address, None)
                        .map_err(Problem::internal)?;
                    person.partition = crate::municipality::of_address(&address);
                }
                EventKind::Rename => {
                    // The surname given up is registered as the former one.
                    if let Some((surname, _)) = person.basic4.name.as_str().split_once(' ') {
                        person
                            .extras
                            .insert("former_surname".into(), json!(surname));
                    }
                    let name = population.renamed(person.basic4.name.as_str());
                    person.basic4.name =
                        kihon4_core::domain::Name::parse(&name, None).map_err(Problem::internal)?;
                }
                EventKind::Death => person.deceased = true,
                EventKind::CardLost | EventKind::Renew => {}
            }
            let new = matches!(kind, EventKind::Move | EventKind::Rename).then(|| {
                crate::residents::lazy(
                    &person.id,
                    &person.basic4,
                    &person.partition,
                    now,
                    population.serial(),
                )
            });
            events.push((person, kind.as_str(), kind.reason_code(), new));
        }
    }
    let applied = sim.store.record_events(&events).await?;
    let count = |kind: EventKind| applied.iter().filter(|k| **k == kind.as_str()).count();
    Ok(HttpResponse::Ok().json(json!({
        "moves": count(EventKind::Move),
        "renames": count(EventKind::Rename),
        "deaths": count(EventKind::Death),
        "cards_lost": count(EventKind::CardLost),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationBody {
    cms_b64: String,
}

/// Verifies a signed document for the service-provider role: the provider
/// keeps the certificate; the caller gets ids, the serial and the four items.
#[post("/v1/verifications")]
pub async fn verifications(
    sim: web::Data<Simulator>,
    body: web::Json<VerificationBody>,
) -> Result<HttpResponse, Problem> {
    use sha2::Digest;
    let der = B64
        .decode(body.cms_b64.as_bytes())
        .map_err(|_| Problem::bad_request("cms_b64 is not base64."))?;
    let authority = sim.ca.clone();
    let checked = web::block(move || crate::verify::check(&authority, &der))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| {
            Problem::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "unreadable-signature",
                e.0,
            )
        })?;
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
        "content_sha256": hex::encode(sha2::Sha256::digest(&checked.content)),
        "basic4": kihon4_core::customers::basic4_json(&parsed.basic4),
    });
    if let Some(r) = reason {
        answer["reason"] = json!(r);
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// The provider's public keys for callback JWTs.
#[get("/v1/jwks.json")]
pub async fn jwks(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.callback_key.jwks())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MynaportalBody {
    request_ref: String,
    client_id: String,
    callback_url: String,
    return_url: String,
    locale: String,
}

fn web_url(raw: &str, field: &str, errors: &mut kihon4_core::domain::FieldErrors) {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => errors.push(
            field,
            kihon4_core::domain::ValueError::invalid("must be an http(s) URL"),
        ),
    }
}

/// A consent request the holder answers on Mynaportal; idempotent by
/// `(client_id, request_ref)`.
#[post("/v1/mynaportal/consent-requests")]
pub async fn mynaportal_request(
    sim: web::Data<Simulator>,
    req: actix_web::HttpRequest,
    body: web::Json<MynaportalBody>,
) -> Result<HttpResponse, Problem> {
    use kihon4_core::domain::{FieldErrors, ValueError};
    let mut errors = FieldErrors::new();
    for (field, value) in [
        ("request_ref", &body.request_ref),
        ("client_id", &body.client_id),
    ] {
        if value.trim().is_empty() || value.len() > 128 {
            errors.push(field, ValueError::invalid("must be 1 to 128 characters"));
        }
    }
    web_url(&body.callback_url, "callback_url", &mut errors);
    web_url(&body.return_url, "return_url", &mut errors);
    if !matches!(body.locale.as_str(), "ja" | "en") {
        errors.push("locale", ValueError::invalid("must be ja or en"));
    }
    if !errors.is_empty() {
        let mut p = Problem::from(errors);
        p.status = actix_web::http::StatusCode::BAD_REQUEST;
        p.slug = "bad-request";
        return Err(p);
    }
    let (request, created) = sim
        .store
        .put_mynaportal_request(&crate::store::MynaportalRequest {
            id: uuid::Uuid::new_v4().to_string(),
            request_ref: body.request_ref.clone(),
            client_id: body.client_id.clone(),
            callback_url: body.callback_url.clone(),
            return_url: body.return_url.clone(),
            locale: body.locale.clone(),
            status: "pending".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::days(14),
        })
        .await?;
    let info = req.connection_info();
    let consent_url = format!(
        "{}://{}/sim/mynaportal/{}",
        info.scheme(),
        info.host(),
        request.id
    );
    let mut res = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(res.json(json!({
        "request_id": request.id,
        "consent_url": consent_url,
        "expires_at": request.expires_at,
    })))
}

/// What Mynaportal shows the holder (as JSON), and the callback's delivery.
#[get("/sim/mynaportal/{request_id}")]
pub async fn mynaportal_page(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let request = sim
        .store
        .mynaportal_request(&id)
        .await?
        .ok_or_else(|| Problem::not_found("consent request"))?;
    let callback = sim.store.callback_state(&request.id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "request_id": request.id,
        "client_id": request.client_id,
        "locale": request.locale,
        "status": request.status,
        "return_url": request.return_url,
        "expires_at": request.expires_at,
        "callback": callback.map(|(attempts, last_status, delivered)| json!({
            "attempts": attempts, "last_status": last_status, "delivered": delivered,
        })),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    person_id: String,
    decision: String,
}

/// Plays the holder on Mynaportal: records the decision and sends the callback.
#[post("/sim/mynaportal/{request_id}/decide")]
pub async fn mynaportal_decide(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
    body: web::Json<DecideBody>,
) -> Result<HttpResponse, Problem> {
    let granted = match body.decision.as_str() {
        "granted" => true,
        "declined" => false,
        _ => {
            return Err(Problem::bad_request(
                "decision must be granted or declined.",
            ));
        }
    };
    let request = sim
        .store
        .mynaportal_request(&id)
        .await?
        .ok_or_else(|| Problem::not_found("consent request"))?;
    let now = chrono::Utc::now();
    if request.expires_at <= now {
        return Err(Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "request-expired",
            "The consent request has expired.",
        ));
    }
    let person = sim
        .store
        .person(&body.person_id)
        .await?
        .ok_or_else(|| Problem::not_found("person"))?;
    let conflict = |detail: &str| {
        Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "no-valid-certificate",
            detail,
        )
    };
    let cert = sim.store.current_certificate(&person.id).await?;
    let mut claims = json!({
        "iss": "kihon4-sim",
        "aud": request.client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "request_id": request.id,
        "request_ref": request.request_ref,
        "decision": body.decision,
    });
    let subscription = if granted {
        let cert = cert
            .as_ref()
            .ok_or_else(|| conflict("The holder has no valid signing certificate."))?;
        let s = crate::store::Subscription {
            consent_id: format!("mp-{}", request.id),
            granted_at: now,
            expires_at: consent_period_end(now),
        };
        use sha2::Digest;
        let ppid = hex::encode(
            &sha2::Sha256::digest(format!("{}/{}", request.client_id, person.id))[..16],
        );
        claims["cert_serial"] = json!(cert.serial.as_str());
        claims["consented_at"] = json!(s.granted_at);
        claims["expires_at"] = json!(s.expires_at);
        claims["ppid"] = json!(ppid);
        Some(s)
    } else {
        None
    };
    let decided = sim
        .store
        .decide(
            &request,
            &body.decision,
            cert.as_ref().zip(subscription.as_ref()),
            &claims,
        )
        .await?;
    if !decided {
        return Err(Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "already-decided",
            "The request was already decided.",
        ));
    }
    Ok(HttpResponse::Accepted()
        .json(json!({ "request_id": request.id, "decision": body.decision })))
}

/// The end of a consent given at `given`: ten years from the day after it
/// is given, in Japan time (UTC+9, no daylight saving), that is midnight
/// JST at the start of the tenth anniversary of that day; a period from
/// 29 February ends with 28 February (its end is 1 March, midnight).
fn consent_period_end(given: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, Days, Months, NaiveDate, TimeZone};
    let jst = chrono::FixedOffset::east_opt(9 * 3600).expect("UTC+9 is an offset");
    let first = given.with_timezone(&jst).date_naive() + Days::new(1);
    let anniversary = first + Months::new(120);
    let end = if anniversary.day() == first.day() {
        anniversary
    } else {
        NaiveDate::from_ymd_opt(anniversary.year(), 3, 1).expect("1 March exists")
    };
    jst.from_local_datetime(&end.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .single()
        .expect("a fixed offset has one midnight")
        .with_timezone(&chrono::Utc)
}

#[cfg(test)]
mod consent_period_tests {
    use super::consent_period_end;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_consent_period_ends_at_midnight_jst_ten_years_after_the_next_day() {
        // 3 December 2026 18:38 JST: the period runs from 4 December 2026
        // to the end of 3 December 2036, JST.
        let given = Utc.with_ymd_and_hms(2026, 12, 3, 9, 38, 21).unwrap();
        assert_eq!(
            consent_period_end(given),
            Utc.with_ymd_and_hms(2036, 12, 3, 15, 0, 0).unwrap()
        );
        // 23:30 UTC is already the next day in Japan.
        let late = Utc.with_ymd_and_hms(2026, 12, 3, 23, 30, 0).unwrap();
        assert_eq!(
            consent_period_end(late),
            Utc.with_ymd_and_hms(2036, 12, 4, 15, 0, 0).unwrap()
        );
        // Given on 28 February 2028 (JST), the period runs from 29 February
        // 2028 and ends with 28 February 2038.
        let leap = Utc.with_ymd_and_hms(2028, 2, 28, 3, 0, 0).unwrap();
        assert_eq!(
            consent_period_end(leap),
            Utc.with_ymd_and_hms(2038, 2, 28, 15, 0, 0).unwrap()
        );
    }
}
