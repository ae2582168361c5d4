//! The simulator's control, under `/sim/`, for tests, the demo and load
//! tests: residents (one at a time or in bulk), their signatures and life
//! events, publishing CRLs, bulk registrations, faults and counters.

use actix_web::{HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use der::{Decode, EncodePem};
use kihon4_core::domain::{Basic4, RawBasic4};
use serde::Deserialize;
use serde_json::{Value, json};
use x509_cert::Certificate;

use super::{certificate_id, protocol_serial};
use crate::Simulator;
use crate::problem::Problem;
use crate::store::Person;

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
