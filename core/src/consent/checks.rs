//! Every revocation check kihon4 makes or asks for, with its purpose
//! (`signature_verification`, `liveness_check`), for the reports an
//! institution files with the authorities and for billing.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, Statement};
use uuid::Uuid;

use crate::domain::CertSerial;
use crate::entities::revocation_checks;
use crate::error::CoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    SignatureVerification,
    LivenessCheck,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignatureVerification => "signature_verification",
            Self::LivenessCheck => "liveness_check",
        }
    }
}

/// One check, to record in the caller's transaction.
pub struct Check<'a> {
    pub purpose: Purpose,
    /// `crl`, `ocsp` or `provider`.
    pub method: &'a str,
    pub serial: &'a CertSerial,
    pub outcome: &'a str,
    pub at: DateTime<Utc>,
    pub consent_id: Option<Uuid>,
}

pub async fn record<C: ConnectionTrait>(db: &C, check: Check<'_>) -> Result<(), CoreError> {
    revocation_checks::Entity::insert(revocation_checks::ActiveModel {
        id: Set(Uuid::now_v7()),
        purpose: Set(check.purpose.as_str().to_owned()),
        method: Set(check.method.to_owned()),
        cert_serial: Set(check.serial.as_str().to_owned()),
        outcome: Set(check.outcome.to_owned()),
        checked_at: Set(check.at),
        consent_id: Set(check.consent_id),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Counts in `[from, to)`, by purpose and by method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub signature_verification: u64,
    pub liveness_check: u64,
    /// (purpose, method, count), ordered.
    pub by_method: Vec<(String, String, u64)>,
}

pub async fn report<C: ConnectionTrait>(
    db: &C,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<CheckReport, CoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            "SELECT purpose, method, COUNT(*) AS n FROM revocation_checks \
             WHERE checked_at >= $1 AND checked_at < $2 GROUP BY purpose, method ORDER BY purpose, method"
        }
        _ => {
            "SELECT purpose, method, COUNT(*) AS n FROM revocation_checks \
             WHERE checked_at >= ? AND checked_at < ? GROUP BY purpose, method ORDER BY purpose, method"
        }
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [from.into(), to.into()],
        ))
        .await?;
    let mut out = CheckReport::default();
    for row in rows {
        let purpose: String = row.try_get("", "purpose")?;
        let method: String = row.try_get("", "method")?;
        let n = u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or_default();
        match purpose.as_str() {
            "signature_verification" => out.signature_verification += n,
            "liveness_check" => out.liveness_check += n,
            _ => {}
        }
        out.by_method.push((purpose, method, n));
    }
    Ok(out)
}
