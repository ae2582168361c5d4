//! The latest four items: what J-LIS answers for a certificate an
//! institution holds, given the consent registered for it.

use chrono::Utc;
use kihon4_core::domain::CertSerial;
use serde_json::{Value, json};

use crate::Simulator;

/// Most queries in one batch.
pub const MAX_BATCH: usize = 1000;

/// The answer for one certificate serial (PROVIDER-PROTOCOL.md).
pub async fn answer(sim: &Simulator, serial: &CertSerial) -> anyhow::Result<Value> {
    let now = Utc::now();
    let status = |s: &str| json!({"cert_serial": serial.as_str(), "status": s});
    let Some(cert) = sim.store.certificate(serial).await? else {
        return Ok(status("unknown_certificate"));
    };
    if !sim.store.subscribed(&cert.person_id, now).await? {
        return Ok(status("not_subscribed"));
    }
    let person = sim
        .store
        .person(&cert.person_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a certificate without its person"))?;
    let change = sim.store.last_change(&person.id).await?;
    let changed_on = change.as_ref().map(|(_, on)| on.clone());
    if person.deceased {
        let mut v = status("deceased");
        v["changed_on"] = json!(changed_on);
        return Ok(v);
    }
    let expired = cert.not_after <= now;
    if cert.revoked_at.is_none() && !expired {
        return Ok(status("unchanged"));
    }
    // A newer certificate: the four items as they are now, and its serial.
    let current = sim.store.current_certificate(&person.id).await?;
    if let Some(current) = current.filter(|c| c.serial != cert.serial && c.not_after > now) {
        let mut v = status("changed");
        v["current_cert_serial"] = json!(current.serial.as_str());
        v["changed_on"] =
            json!(changed_on.unwrap_or_else(|| current.issued_at.date_naive().to_string()));
        v["basic4"] = person.items_json();
        return Ok(v);
    }
    let revoked = |reason: &str| {
        let mut v = status("revoked");
        v["reason"] = json!(reason);
        v
    };
    Ok(match cert.reason {
        // One of the four items changed and no new certificate yet.
        Some(3) => status("awaiting_reissue"),
        Some(6) => revoked("lost"),
        Some(5) => revoked("withdrawn_by_holder"),
        _ if expired => revoked("expired"),
        _ => revoked("withdrawn_by_holder"),
    })
}
