//! Mynaportal: consent requests the holder answers there
//! (`/v1/mynaportal/consent-requests`), the keys its callbacks are signed
//! with (`/v1/jwks.json`), and the holder's side under `/sim/mynaportal/`:
//! the page as JSON and the decision that sends the callback.

use actix_web::{HttpResponse, get, post, web};
use serde::Deserialize;
use serde_json::json;

use crate::Simulator;
use crate::problem::Problem;

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
