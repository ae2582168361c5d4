//! Load-test fixtures: a consenting customer for every resident the
//! simulator holds, written straight into kihon4's database, and each consent
//! registered with the simulator in bulk.
//!
//! Taking a million consents through `POST /v1/customers/{id}/consents`
//! would sign and verify a million CMS documents; what sync needs from a
//! consent is only that it is active, for the certificate the customer holds.
//! So the consents written here carry no signed document: their
//! `document_sha256` and `signature_sha256` are digests of `fixture:` and the
//! serial. Each customer gets a `customer.created` event (`"source":
//! "fixture"`) on the real chain, with its four items as commitments, so
//! that the audit tables hold what a live system's would. Only tests and
//! benchmarks use this.

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use kihon4_core::audit::{Actor, AuditContext, AuditEvent, Batch, append_batch};
use kihon4_core::consent::texts::ConsentTexts;
use kihon4_core::entities::{consent_events, consents, customers};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, TransactionTrait};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Residents asked for per page, and consents registered per call.
const PAGE: usize = 5000;
/// Rows per INSERT statement (within SQLite's limit on bound values).
const ROWS: usize = 1000;

fn digest(label: &str, serial: &str) -> String {
    hex::encode(Sha256::digest(format!("fixture:{label}:{serial}")))
}

fn text(b: &Value, key: &str) -> Option<String> {
    b.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Creates a customer with an active consent for every living resident of
/// the simulator at `sim_base` that holds a valid certificate, registers the
/// consents with the simulator, and returns how many. `progress` is called
/// with the running total after each page.
pub async fn consenting_customers(
    db: &DatabaseConnection,
    sim_base: &str,
    progress: impl Fn(u64),
) -> u64 {
    let http = reqwest::Client::new();
    let texts = ConsentTexts::for_institution("負荷試験銀行");
    let consent_text = &texts.all()[0];
    let granted_at: DateTime<Utc> = Utc::now().trunc_subsecs(6);
    let expires_at = granted_at + chrono::Duration::days(3653);
    let cert_not_after = granted_at + chrono::Duration::days(5 * 365);
    let mut cursor: Option<String> = None;
    let mut total = 0u64;
    loop {
        let mut url = format!("{sim_base}/sim/persons?limit={PAGE}&include=basic4");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(url)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut people = Vec::new();
        let mut grants = Vec::new();
        let mut events = Vec::new();
        let mut registrations = Vec::new();
        let mut audit = Batch::default();
        let ctx = AuditContext::new(Actor::cli(), None);
        for item in page["items"].as_array().unwrap() {
            let Some(serial) = item["cert_serial"].as_str() else {
                continue;
            };
            // Numbered, not named after the resident's id: a run of 12
            // digits in an id would read as a My Number and be refused.
            let n = total + people.len() as u64 + 1;
            let b = &item["basic4"];
            let customer = Uuid::now_v7();
            let consent = Uuid::now_v7();
            let mut event = AuditEvent::customer("customer.created", customer);
            let mut committed = serde_json::Map::new();
            for key in ["name", "address", "birth_date", "gender"] {
                if let Some(v) = text(b, key) {
                    committed.insert(key.into(), event.commit(&format!("after.basic4.{key}"), &v));
                }
            }
            audit.push(
                &ctx,
                event
                    .set(
                        "after",
                        json!({"basic4": committed, "jpki_cert_serial": serial}),
                    )
                    .set("source", json!("fixture")),
            );
            people.push(customers::ActiveModel {
                id: Set(customer),
                external_ref: Set(format!("LOAD-{n}")),
                email: Set(format!("load-{n}@example.jp")),
                locale: Set("ja".into()),
                name: Set(text(b, "name")),
                name_flags: Set(text(b, "name_substitute_flags")),
                address: Set(text(b, "address")),
                address_flags: Set(text(b, "address_substitute_flags")),
                birth_date: Set(text(b, "birth_date")
                    .map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").unwrap())),
                gender: Set(text(b, "gender")),
                jpki_cert_serial: Set(Some(serial.to_owned())),
                cert_not_after: Set(Some(cert_not_after)),
                status: Set("active".into()),
                version: Set(1),
                created_at: Set(granted_at),
                updated_at: Set(granted_at),
                name_kana: Set(None),
                former_surname: Set(None),
                overseas_move_on: Set(None),
            });
            grants.push(consents::ActiveModel {
                id: Set(consent),
                customer_id: Set(customer),
                purpose: Set(kihon4_core::consent::PURPOSE.into()),
                channel: Set("online_signature".into()),
                role: Set("platform".into()),
                text_version: Set(consent_text.version.clone()),
                text_sha256: Set(consent_text.sha256.clone()),
                cert_serial: Set(serial.to_owned()),
                cert_not_after: Set(cert_not_after),
                granted_at: Set(granted_at),
                expires_at: Set(expires_at),
                document_sha256: Set(digest("document", serial)),
                signature_sha256: Set(digest("signature", serial)),
                signed_document: Set(None),
                certificate: Set(None),
                anchor_key_id: Set(None),
                verification_id: Set(None),
                certificate_id: Set(None),
                signed_content: Set(consent_text.text.as_bytes().to_vec()),
                revocation_method: Set("crl".into()),
                ppid: Set(None),
                evidence_form: Set("cms".into()),
                provider_user_id: Set(None),
            });
            events.push(consent_events::ActiveModel {
                id: Set(Uuid::now_v7()),
                consent_id: Set(consent),
                seq: Set(1),
                kind: Set("granted".into()),
                occurred_at: Set(granted_at),
                actor: Set("cli".into()),
                reason: Set(None),
                related_consent_id: Set(None),
            });
            registrations.push(json!({
                "cert_serial": serial,
                "consent_id": consent.to_string(),
                "granted_at": granted_at,
                "expires_at": expires_at,
            }));
        }
        let count = people.len() as u64;
        let txn = db.begin().await.unwrap();
        append_batch(&txn, audit).await.unwrap();
        txn.commit().await.unwrap();
        for chunk in people.chunks(ROWS) {
            customers::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(db)
                .await
                .unwrap();
        }
        for chunk in grants.chunks(ROWS) {
            consents::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(db)
                .await
                .unwrap();
        }
        for chunk in events.chunks(ROWS) {
            consent_events::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(db)
                .await
                .unwrap();
        }
        if !registrations.is_empty() {
            let done: Value = http
                .post(format!("{sim_base}/sim/subscriptions/bulk"))
                .json(&json!({ "items": registrations }))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(done["registered"], count, "{done}");
        }
        total += count;
        progress(total);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return total,
        }
    }
}
