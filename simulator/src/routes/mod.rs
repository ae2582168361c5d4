//! The simulator's routes: the provider protocol under `/v1/`
//! ([`protocol`]), the simulator's control under `/sim/` ([`control`]), and
//! Mynaportal's consent requests, pages and callbacks ([`mynaportal`]). This
//! module holds the route table and what the three share.

mod control;
mod mynaportal;
mod protocol;

use actix_web::web;

use crate::problem::Problem;

/// Registers every route, in the order actix tries them.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.service(protocol::ca)
        .service(control::bulk_people)
        .service(control::list_people)
        .service(control::create_person)
        .service(control::read_person)
        .service(control::sign)
        .service(control::life_event)
        .service(control::publish_crls)
        .service(protocol::crl)
        .service(protocol::crl_partitions)
        .service(protocol::crl_partition)
        .service(protocol::put_subscription)
        .service(protocol::delete_subscription)
        .service(protocol::basic4_queries)
        .service(protocol::ocsp)
        .service(control::put_faults)
        .service(control::stats)
        .service(protocol::certificate_status)
        .service(protocol::checks)
        .service(protocol::verifications)
        .service(mynaportal::jwks)
        .service(mynaportal::mynaportal_request)
        .service(mynaportal::mynaportal_page)
        .service(mynaportal::mynaportal_decide)
        .service(control::bulk_events)
        .service(control::bulk_subscriptions);
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

/// The provider's id for a certificate it verified (opaque to callers).
pub fn certificate_id(serial: &kihon4_core::domain::CertSerial) -> String {
    format!("crt_{}", serial.as_str())
}
