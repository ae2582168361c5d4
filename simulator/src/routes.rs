//! The simulator's routes: the provider protocol under `/v1/`, the
//! simulator's control under `/sim/`.

use actix_web::{HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use der::{Decode, EncodePem};
use kihon4_core::domain::{Basic4, RawBasic4};
use serde::Deserialize;
use serde_json::json;
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
}

impl Basic4Body {
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
        "certificate_pem": pem(&issued.der)?,
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
    Ok(HttpResponse::Ok().json(json!({
        "person_id": person.id,
        "status": if person.deceased { "deceased" } else { "alive" },
        "cert_serial": current.as_ref().map(|c| c.serial.as_str().to_owned()),
        "certificate_pem": current.as_ref().map(|c| pem(&c.der)).transpose()?,
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
    let signed = web::block(move || crate::cms_sign::sign(&content, &cert.der, &cert.key_pem))
        .await
        .map_err(Problem::internal)??;
    Ok(HttpResponse::Ok().json(json!({ "cms_der_b64": B64.encode(signed) })))
}
