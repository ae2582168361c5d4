//! Change detection: which consenting customers' certificates are no longer
//! valid. Platform role: the provider's full CRL, verified against the
//! trust anchors and walked as a stream against the customers' serials in
//! one pass. Service-provider role: liveness checks through the provider,
//! each recorded as a `liveness_check`.

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use super::jobs;
use crate::consent::checks::{self, Check, Purpose};
use crate::domain::CertSerial;
use crate::entities::consents;
use crate::error::CoreError;
use crate::jpki::crl::{CrlError, CrlIssuer, SerialSet, check_crl};
use crate::jpki::verify::TrustAnchors;
use crate::provider::{CrlFetch, Provider};

/// Consenting customers whose certificate the CRL lists.
pub async fn by_crl(
    db: &sea_orm::DatabaseConnection,
    provider: &dyn Provider,
    anchors: &TrustAnchors,
) -> Result<Vec<(Uuid, String)>, CoreError> {
    let customers = jobs::consenting(db, None).await?;
    let mut by_serial: HashMap<String, Uuid> = HashMap::with_capacity(customers.len());
    let mut wanted = SerialSet::default();
    for (customer, serial) in &customers {
        let parsed = CertSerial::parse(serial)
            .map_err(|e| CoreError::Corrupt(format!("a customer's serial: {e}")))?;
        wanted.insert(&parsed);
        by_serial.insert(parsed.as_str().to_owned(), *customer);
    }
    let der = match provider.crl(None).await {
        Ok(CrlFetch::Fresh { der, .. }) => der,
        Ok(CrlFetch::NotModified) => {
            return Err(CoreError::Upstream(
                "the provider answered 304 to an unconditional CRL request".into(),
            ));
        }
        Err(e) => return Err(CoreError::Upstream(e.to_string())),
    };
    let now = Utc::now();
    // Several CA generations may be trusted: the CRL is checked against the
    // one that signed it.
    let mut last = CrlError::WrongIssuer;
    for anchor in anchors.certificates() {
        let issuer = CrlIssuer::from_certificate(anchor)
            .map_err(|e| CoreError::Corrupt(format!("a trust anchor: {e}")))?;
        match check_crl(der.as_slice(), &issuer, &wanted, now) {
            Ok((summary, hits)) => {
                // How old the CRL detection relied on was: J-LIS issues one
                // a day, so an older one means revocations go unseen.
                metrics::gauge!("kihon4_crl_age_seconds")
                    .set((now - summary.this_update).num_milliseconds() as f64 / 1000.0);
                return Ok(hits
                    .into_iter()
                    .filter_map(|hit| {
                        by_serial
                            .get(hit.serial.as_str())
                            .map(|customer| (*customer, hit.serial.as_str().to_owned()))
                    })
                    .collect());
            }
            Err(CrlError::WrongIssuer) => continue,
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    Err(CoreError::Upstream(format!(
        "the CRL cannot be relied on: {last}"
    )))
}

/// Consenting customers whose certificate the provider's liveness check
/// finds no longer valid. Every check is recorded as a `liveness_check`.
pub async fn by_liveness(
    db: &sea_orm::DatabaseConnection,
    provider: &dyn Provider,
) -> Result<Vec<(Uuid, String)>, CoreError> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let customers = jobs::consenting(db, None).await?;
    // The provider knows a certificate by the id it gave at verification.
    let mut ids: Vec<(String, Uuid, String)> = Vec::new();
    for chunk in customers.chunks(500) {
        let rows = consents::Entity::find()
            .filter(consents::Column::CustomerId.is_in(chunk.iter().map(|(c, _)| *c)))
            .filter(consents::Column::CertificateId.is_not_null())
            .all(db)
            .await?;
        for (customer, serial) in chunk {
            if let Some(row) = rows
                .iter()
                .filter(|r| r.customer_id == *customer && &r.cert_serial == serial)
                .max_by_key(|r| r.id)
            {
                ids.push((
                    row.certificate_id.clone().unwrap_or_default(),
                    *customer,
                    serial.clone(),
                ));
            }
        }
    }
    let statuses = provider
        .certificate_status(&ids.iter().map(|(id, _, _)| id.clone()).collect::<Vec<_>>())
        .await
        .map_err(|e| CoreError::Upstream(e.to_string()))?;
    let by_id: HashMap<&str, (&Uuid, &String)> =
        ids.iter().map(|(id, c, s)| (id.as_str(), (c, s))).collect();
    let mut out = Vec::new();
    let txn = crate::db::begin_write(db).await?;
    for status in &statuses {
        let Some((customer, serial)) = by_id.get(status.certificate_id.as_str()) else {
            continue;
        };
        let parsed = CertSerial::parse(serial)
            .map_err(|e| CoreError::Corrupt(format!("a customer's serial: {e}")))?;
        checks::record(
            &txn,
            Check {
                purpose: Purpose::LivenessCheck,
                method: "provider",
                serial: &parsed,
                // A status kihon4 does not know is recorded as such and
                // treated as detected: its job asks again, or goes to a review.
                outcome: match status.status.as_str() {
                    "good" => "good",
                    "revoked" => "revoked",
                    _ => "unknown",
                },
                at: status.checked_at,
                consent_id: None,
            },
        )
        .await?;
        if status.status != "good" {
            if status.status != "revoked" {
                tracing::warn!(
                    status = %status.status,
                    "the provider's liveness check gave a status kihon4 does not know; the customer is looked at, not assumed revoked"
                );
            }
            out.push((**customer, (*serial).clone()));
        }
    }
    txn.commit().await?;
    Ok(out)
}
