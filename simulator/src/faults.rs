//! Bad days on purpose: latency, errors, maintenance windows and malformed
//! answers on the provider routes, set with `PUT /sim/faults`.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added to every provider answer.
    pub latency_ms: u64,
    /// Share of answers that fail (500, or 429 with `Retry-After: 1`).
    pub error_rate: f64,
    /// Every provider route answers 503 with `Retry-After`, as in J-LIS's nightly window.
    pub maintenance: bool,
    /// Seconds announced in `Retry-After` during maintenance.
    pub maintenance_retry_after_s: u64,
    /// Share of answers whose body is cut short (200, not valid JSON).
    pub malformed_rate: f64,
    /// What is wrong with the CRLs served: `stale` (past nextUpdate) or
    /// `bad_signature` (one byte of the signature changed).
    pub crl: Option<CrlFault>,
}

/// A bad CRL on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrlFault {
    Stale,
    BadSignature,
}

impl Faults {
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be from 0 to 1"));
            }
        }
        if self.latency_ms > 60_000 {
            return Err("latency_ms must be at most 60000".into());
        }
        Ok(())
    }
}

/// What a faulty provider does with a request instead of answering it.
pub enum Disruption {
    /// Answer, late.
    Delay(Duration),
    /// Answer with this instead.
    Replace(HttpResponse),
    /// Answer, then cut the body short.
    Truncate,
}

/// Decides the fate of one provider request.
pub fn disrupt(f: &Faults) -> Vec<Disruption> {
    let mut out = Vec::new();
    if f.latency_ms > 0 {
        out.push(Disruption::Delay(Duration::from_millis(f.latency_ms)));
    }
    let problem = |status: StatusCode, slug: &str, detail: &str| {
        serde_json::json!({
            "type": format!("https://kihon4.dev/sim/problems/{slug}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        })
        .to_string()
    };
    if f.maintenance {
        let retry = f.maintenance_retry_after_s.max(1);
        out.push(Disruption::Replace(
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
                .insert_header(("Retry-After", retry.to_string()))
                .content_type("application/problem+json")
                .body(problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "maintenance",
                    "J-LIS is in maintenance.",
                )),
        ));
        return out;
    }
    let mut rng = rand::thread_rng();
    if f.error_rate > 0.0 && rng.gen_bool(f.error_rate) {
        let response = if rng.gen_bool(0.5) {
            HttpResponse::build(StatusCode::INTERNAL_SERVER_ERROR)
                .content_type("application/problem+json")
                .body(problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "A simulated failure.",
                ))
        } else {
            HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
                .insert_header(("Retry-After", "1"))
                .content_type("application/problem+json")
                .body(problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Slow down.",
                ))
        };
        out.push(Disruption::Replace(response));
        return out;
    }
    if f.malformed_rate > 0.0 && rng.gen_bool(f.malformed_rate) {
        out.push(Disruption::Truncate);
    }
    out
}
