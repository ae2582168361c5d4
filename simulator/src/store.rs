//! The simulator's state, in a SQLite file in its data folder: a restarted
//! simulator keeps its residents and their certificates.

use std::path::Path;

use chrono::{DateTime, Utc};
use kihon4_core::customers::basic4_json;
use kihon4_core::domain::{Basic4, CertSerial, RawBasic4};
use kihon4_core::jpki::CrlPartition;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS persons (
        id TEXT PRIMARY KEY,
        basic4 TEXT NOT NULL,
        prefecture TEXT NOT NULL,
        city TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS certificates (
        serial TEXT PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons(id),
        issue_number TEXT NOT NULL,
        der BLOB,
        key_pem TEXT,
        prefecture TEXT NOT NULL,
        city TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        not_after TEXT NOT NULL,
        revoked_at TEXT,
        reason INTEGER)",
    "CREATE INDEX IF NOT EXISTS certificates_person ON certificates(person_id, issued_at)",
    "CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(revoked_at) WHERE revoked_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        person_id TEXT NOT NULL REFERENCES persons(id),
        kind TEXT NOT NULL,
        old_serial TEXT NOT NULL,
        new_serial TEXT,
        changed_on TEXT NOT NULL,
        at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS subscriptions (
        cert_serial TEXT PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons(id),
        consent_id TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        expires_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS subscriptions_person ON subscriptions(person_id)",
    "CREATE TABLE IF NOT EXISTS checks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        purpose TEXT NOT NULL,
        count INTEGER NOT NULL,
        at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS checks_at ON checks(at)",
    "CREATE TABLE IF NOT EXISTS mynaportal_requests (
        id TEXT PRIMARY KEY,
        request_ref TEXT NOT NULL,
        client_id TEXT NOT NULL,
        callback_url TEXT NOT NULL,
        return_url TEXT NOT NULL,
        locale TEXT NOT NULL,
        status TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (client_id, request_ref))",
    "CREATE TABLE IF NOT EXISTS callbacks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL REFERENCES mynaportal_requests(id),
        url TEXT NOT NULL,
        claims TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_status TEXT,
        delivered_at TEXT,
        gave_up_at TEXT)",
];

/// A Mynaportal consent request.
#[derive(Debug, Clone)]
pub struct MynaportalRequest {
    pub id: String,
    pub request_ref: String,
    pub client_id: String,
    pub callback_url: String,
    pub return_url: String,
    pub locale: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
}

/// A callback waiting for (another) delivery attempt.
#[derive(Debug, Clone)]
pub struct DueCallback {
    pub id: i64,
    pub url: String,
    pub claims: serde_json::Value,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// Why a revocation check was made, as reported to the authorities and billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPurpose {
    SignatureVerification,
    LivenessCheck,
}

impl CheckPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignatureVerification => "signature_verification",
            Self::LivenessCheck => "liveness_check",
        }
    }
}

/// What a subscription PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Unchanged,
    Replaced,
}

/// A consent registered with the provider, for a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub consent_id: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A revoked certificate as a CRL lists it.
#[derive(Clone, Debug)]
pub struct Revocation {
    pub serial: CertSerial,
    pub revoked_at: DateTime<Utc>,
    pub reason: u8,
    pub partition: CrlPartition,
}

/// A life event as the register records it: the person's current
/// certificate is revoked with `reason`.
pub struct LifeEvent<'a> {
    pub person: &'a Person,
    pub kind: &'a str,
    pub reason: u8,
    pub new_certificate: Option<&'a IssuedCertificate>,
}

/// A resident of the simulated register.
#[derive(Clone, Debug)]
pub struct Person {
    pub id: String,
    pub basic4: Basic4,
    /// The optional items the register holds for some (`name_kana`,
    /// `former_surname`, `overseas_move`), as J-LIS returns them.
    pub extras: serde_json::Map<String, serde_json::Value>,
    pub partition: CrlPartition,
    pub deceased: bool,
}

/// The optional items a person may carry beside the four.
pub const EXTRAS: [&str; 3] = ["name_kana", "former_surname", "overseas_move"];

impl Person {
    /// The four items and the optional ones, as stored and as J-LIS answers.
    pub fn items_json(&self) -> serde_json::Value {
        let mut v = basic4_json(&self.basic4);
        if let serde_json::Value::Object(map) = &mut v {
            map.extend(self.extras.clone());
        }
        v
    }
}

/// A resident as `GET /sim/persons` lists them.
pub struct ListedPerson {
    pub id: String,
    /// The newest certificate not revoked.
    pub cert_serial: Option<String>,
    /// The four items as stored.
    pub basic4: serde_json::Value,
}

/// A signing certificate the simulator issued, with the key that plays the card.
#[derive(Clone)]
pub struct IssuedCertificate {
    pub serial: CertSerial,
    pub person_id: String,
    pub issue_number: String,
    /// The certificate and the card's key; `None` until first needed (bulk residents).
    pub der: Option<Vec<u8>>,
    pub key_pem: Option<String>,
    pub partition: CrlPartition,
    pub issued_at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub reason: Option<u8>,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

fn corrupt(what: &str) -> DbErr {
    DbErr::Custom(format!("the simulator's stored {what} is not valid"))
}

impl Store {
    pub async fn open(dir: &Path) -> Result<Self, DbErr> {
        let url = format!("sqlite://{}?mode=rwc", dir.join("sim.db").display());
        let db = kihon4_core::db::connect(&url, 4).await?;
        for sql in SCHEMA {
            db.execute_unprepared(sql).await?;
        }
        Ok(Self { db })
    }

    /// Records a new resident and their first certificate together.
    pub async fn insert_person(
        &self,
        person: &Person,
        cert: &IssuedCertificate,
    ) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        txn.execute_raw(stmt(
            "INSERT INTO persons (id, basic4, prefecture, city, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                person.id.clone().into(),
                person.items_json().to_string().into(),
                person.partition.prefecture.clone().into(),
                person.partition.city.clone().into(),
                if person.deceased { "deceased" } else { "alive" }.into(),
                Utc::now().to_rfc3339().into(),
            ],
        ))
        .await?;
        insert_certificate(&txn, cert).await?;
        txn.commit().await
    }

    pub async fn person(&self, id: &str) -> Result<Option<Person>, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT id, basic4, prefecture, city, status FROM persons WHERE id = ?",
                vec![id.into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let basic4: String = row.try_get("", "basic4")?;
        let stored: serde_json::Value =
            serde_json::from_str(&basic4).map_err(|_| corrupt("basic4"))?;
        let field = |k: &str| stored.get(k).and_then(|v| v.as_str());
        let basic4 = Basic4::parse(RawBasic4 {
            name: field("name"),
            name_substitute_flags: field("name_substitute_flags"),
            address: field("address"),
            address_substitute_flags: field("address_substitute_flags"),
            birth_date: field("birth_date"),
            gender: field("gender"),
        })
        .map_err(|_| corrupt("basic4"))?;
        let extras = EXTRAS
            .iter()
            .filter_map(|k| stored.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        Ok(Some(Person {
            id: row.try_get("", "id")?,
            basic4,
            extras,
            partition: CrlPartition {
                prefecture: row.try_get("", "prefecture")?,
                city: row.try_get("", "city")?,
            },
            deceased: row.try_get::<String>("", "status")? == "deceased",
        }))
    }

    /// Records a life event at once: the person's certificate revoked, their
    /// new state, the new certificate (if any) and the change.
    pub async fn record_event(&self, event: LifeEvent<'_>) -> Result<(), DbErr> {
        let one = [(
            event.person.clone(),
            event.kind,
            event.reason,
            event.new_certificate.cloned(),
        )];
        if self.record_events(&one).await?.is_empty() {
            return Err(DbErr::Custom("the certificate was already revoked".into()));
        }
        Ok(())
    }

    /// Every revoked certificate not yet expired at `now`, oldest revocation first.
    pub async fn revocations(&self, now: DateTime<Utc>) -> Result<Vec<Revocation>, DbErr> {
        let rows = self
            .db
            .query_all_raw(stmt(
                "SELECT serial, revoked_at, reason, prefecture, city FROM certificates
                 WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at, serial",
                vec![now.to_rfc3339().into()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let serial: String = row.try_get("", "serial")?;
                Ok(Revocation {
                    serial: CertSerial::parse(&serial).map_err(|_| corrupt("serial"))?,
                    revoked_at: time(row, "revoked_at")?,
                    reason: u8::try_from(row.try_get::<i32>("", "reason")?)
                        .map_err(|_| corrupt("reason"))?,
                    partition: CrlPartition {
                        prefecture: row.try_get("", "prefecture")?,
                        city: row.try_get("", "city")?,
                    },
                })
            })
            .collect()
    }

    /// The next CRL number (stored, so it grows across restarts).
    pub async fn next_crl_number(&self) -> Result<u64, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "INSERT INTO meta (key, value) VALUES ('crl_number', '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)
                 RETURNING value",
                vec![],
            ))
            .await?
            .ok_or_else(|| corrupt("CRL number"))?;
        let value: String = row.try_get("", "value")?;
        value.parse().map_err(|_| corrupt("CRL number"))
    }

    pub async fn certificate(
        &self,
        serial: &CertSerial,
    ) -> Result<Option<IssuedCertificate>, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT * FROM certificates WHERE serial = ?",
                vec![serial.as_str().into()],
            ))
            .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }

    /// The kind and day of the person's latest life event.
    pub async fn last_change(&self, person_id: &str) -> Result<Option<(String, String)>, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT kind, changed_on FROM changes WHERE person_id = ? ORDER BY id DESC LIMIT 1",
                vec![person_id.into()],
            ))
            .await?;
        row.map(|r| Ok((r.try_get("", "kind")?, r.try_get("", "changed_on")?)))
            .transpose()
    }

    /// Registers (or replaces) the consent for a certificate.
    pub async fn put_subscription(
        &self,
        cert: &IssuedCertificate,
        s: &Subscription,
    ) -> Result<Upsert, DbErr> {
        let txn = self.db.begin().await?;
        let existing = txn
            .query_one_raw(stmt(
                "SELECT consent_id, granted_at, expires_at FROM subscriptions WHERE cert_serial = ?",
                vec![cert.serial.as_str().into()],
            ))
            .await?
            .map(|r| {
                Ok::<_, DbErr>(Subscription {
                    consent_id: r.try_get("", "consent_id")?,
                    granted_at: time(&r, "granted_at")?,
                    expires_at: time(&r, "expires_at")?,
                })
            })
            .transpose()?;
        let outcome = match existing {
            Some(e) if &e == s => Upsert::Unchanged,
            Some(_) => Upsert::Replaced,
            None => Upsert::Created,
        };
        if outcome != Upsert::Unchanged {
            upsert_subscription(&txn, cert, s).await?;
        }
        txn.commit().await?;
        Ok(outcome)
    }

    pub async fn delete_subscription(&self, serial: &CertSerial) -> Result<(), DbErr> {
        self.db
            .execute_raw(stmt(
                "DELETE FROM subscriptions WHERE cert_serial = ?",
                vec![serial.as_str().into()],
            ))
            .await?;
        Ok(())
    }

    /// Whether any of the person's certificates carries a consent still in force:
    /// a consent survives the revocation of the certificate it was given with.
    pub async fn subscribed(&self, person_id: &str, now: DateTime<Utc>) -> Result<bool, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT COUNT(*) AS n FROM subscriptions WHERE person_id = ? AND expires_at > ?",
                vec![person_id.into(), now.to_rfc3339().into()],
            ))
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0)
            > 0)
    }

    /// Records many residents at once (bulk load), in transactions of a few thousand.
    pub async fn insert_people(&self, people: &[(Person, IssuedCertificate)]) -> Result<(), DbErr> {
        // 4,000 rows of 7 values stay under SQLite's 32,766 parameters.
        const CHUNK: usize = 4000;
        let now = Utc::now().to_rfc3339();
        for chunk in people.chunks(CHUNK) {
            let txn = self.db.begin().await?;
            let mut values = Vec::with_capacity(chunk.len() * 6);
            for (p, _) in chunk {
                values.extend([
                    p.id.clone().into(),
                    p.items_json().to_string().into(),
                    p.partition.prefecture.clone().into(),
                    p.partition.city.clone().into(),
                    "alive".into(),
                    now.clone().into(),
                ]);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            txn.execute_raw(stmt(
                &format!("INSERT INTO persons (id, basic4, prefecture, city, status, created_at) VALUES {rows}"),
                values,
            ))
            .await?;
            let mut values = Vec::with_capacity(chunk.len() * 8);
            for (_, c) in chunk {
                values.extend([
                    c.serial.as_str().into(),
                    c.person_id.clone().into(),
                    c.issue_number.clone().into(),
                    c.partition.prefecture.clone().into(),
                    c.partition.city.clone().into(),
                    c.issued_at.to_rfc3339().into(),
                    c.not_after.to_rfc3339().into(),
                ]);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            txn.execute_raw(stmt(
                &format!(
                    "INSERT INTO certificates (serial, person_id, issue_number, prefecture, city, issued_at, not_after) VALUES {rows}"
                ),
                values,
            ))
            .await?;
            txn.commit().await?;
        }
        Ok(())
    }

    /// The ids of living residents, in id order.
    pub async fn living_ids(&self) -> Result<Vec<String>, DbErr> {
        let rows = self
            .db
            .query_all_raw(stmt(
                "SELECT id FROM persons WHERE status = 'alive' ORDER BY id",
                vec![],
            ))
            .await?;
        rows.iter().map(|r| r.try_get("", "id")).collect()
    }

    /// A page of residents with their current certificate serials, by id.
    pub async fn list_people(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<ListedPerson>, DbErr> {
        let rows = self
            .db
            .query_all_raw(stmt(
                "SELECT p.id, p.basic4, (SELECT c.serial FROM certificates c WHERE c.person_id = p.id AND c.revoked_at IS NULL
                   ORDER BY c.issued_at DESC LIMIT 1) AS serial
                 FROM persons p WHERE p.id > ? ORDER BY p.id LIMIT ?",
                vec![after.unwrap_or("").into(), (limit as i64).into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let basic4: String = r.try_get("", "basic4")?;
                Ok(ListedPerson {
                    id: r.try_get("", "id")?,
                    cert_serial: r.try_get("", "serial")?,
                    basic4: serde_json::from_str(&basic4).map_err(|_| corrupt("basic4"))?,
                })
            })
            .collect()
    }

    /// Registers many consents at once (load tests). Returns the serials
    /// that name no certificate; nothing is registered for them.
    pub async fn put_subscriptions(
        &self,
        items: &[(CertSerial, Subscription)],
    ) -> Result<Vec<String>, DbErr> {
        let txn = self.db.begin().await?;
        let mut unknown = Vec::new();
        for (serial, s) in items {
            let done = txn
                .execute_raw(stmt(
                    "INSERT INTO subscriptions (cert_serial, person_id, consent_id, granted_at, expires_at)
                     SELECT c.serial, c.person_id, ?, ?, ? FROM certificates c WHERE c.serial = ?
                     ON CONFLICT (cert_serial) DO UPDATE SET consent_id = excluded.consent_id,
                       granted_at = excluded.granted_at, expires_at = excluded.expires_at",
                    vec![
                        s.consent_id.clone().into(),
                        s.granted_at.to_rfc3339().into(),
                        s.expires_at.to_rfc3339().into(),
                        serial.as_str().into(),
                    ],
                ))
                .await?;
            if done.rows_affected() == 0 {
                unknown.push(serial.as_str().to_owned());
            }
        }
        txn.commit().await?;
        Ok(unknown)
    }

    /// Records many life events in a few transactions (bulk load).
    pub async fn record_events<'a>(
        &self,
        events: &'a [(Person, &'a str, u8, Option<IssuedCertificate>)],
    ) -> Result<Vec<&'a str>, DbErr> {
        let at = Utc::now();
        let mut applied = Vec::with_capacity(events.len());
        for chunk in events.chunks(2000) {
            let txn = self.db.begin().await?;
            for (p, kind, reason, new) in chunk {
                let current = txn
                    .query_one_raw(stmt(
                        "UPDATE certificates SET revoked_at = ?, reason = ? WHERE person_id = ? AND revoked_at IS NULL RETURNING serial",
                        vec![at.to_rfc3339().into(), i32::from(*reason).into(), p.id.clone().into()],
                    ))
                    .await?;
                let Some(current) = current else { continue };
                applied.push(*kind);
                let old: String = current.try_get("", "serial")?;
                txn.execute_raw(stmt(
                    "UPDATE persons SET basic4 = ?, prefecture = ?, city = ?, status = ? WHERE id = ?",
                    vec![
                        p.items_json().to_string().into(),
                        p.partition.prefecture.clone().into(),
                        p.partition.city.clone().into(),
                        if p.deceased { "deceased" } else { "alive" }.into(),
                        p.id.clone().into(),
                    ],
                ))
                .await?;
                if let Some(cert) = new {
                    insert_certificate(&txn, cert).await?;
                }
                txn.execute_raw(stmt(
                    "INSERT INTO changes (person_id, kind, old_serial, new_serial, changed_on, at) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![
                        p.id.clone().into(),
                        (*kind).into(),
                        old.into(),
                        new.as_ref().map(|c| c.serial.as_str().to_owned()).into(),
                        at.date_naive().format("%Y-%m-%d").to_string().into(),
                        at.to_rfc3339().into(),
                    ],
                ))
                .await?;
            }
            txn.commit().await?;
        }
        Ok(applied)
    }

    /// Stores a lazily issued certificate's DER and key, once made.
    pub async fn set_material(
        &self,
        serial: &CertSerial,
        der: &[u8],
        key_pem: &str,
    ) -> Result<(), DbErr> {
        self.db
            .execute_raw(stmt(
                "UPDATE certificates SET der = ?, key_pem = ? WHERE serial = ? AND der IS NULL",
                vec![der.to_vec().into(), key_pem.into(), serial.as_str().into()],
            ))
            .await?;
        Ok(())
    }

    /// Creates a Mynaportal consent request, or returns the one made before
    /// with the same `(client_id, request_ref)` (true when new).
    pub async fn put_mynaportal_request(
        &self,
        r: &MynaportalRequest,
    ) -> Result<(MynaportalRequest, bool), DbErr> {
        let inserted = self
            .db
            .execute_raw(stmt(
                "INSERT INTO mynaportal_requests (id, request_ref, client_id, callback_url, return_url, locale, status, expires_at, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, request_ref) DO NOTHING",
                vec![
                    r.id.clone().into(),
                    r.request_ref.clone().into(),
                    r.client_id.clone().into(),
                    r.callback_url.clone().into(),
                    r.return_url.clone().into(),
                    r.locale.clone().into(),
                    r.status.clone().into(),
                    r.expires_at.to_rfc3339().into(),
                    Utc::now().to_rfc3339().into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1;
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT * FROM mynaportal_requests WHERE client_id = ? AND request_ref = ?",
                vec![r.client_id.clone().into(), r.request_ref.clone().into()],
            ))
            .await?
            .ok_or_else(|| corrupt("Mynaportal request"))?;
        Ok((mynaportal_from_row(&row)?, inserted))
    }

    pub async fn mynaportal_request(&self, id: &str) -> Result<Option<MynaportalRequest>, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT * FROM mynaportal_requests WHERE id = ?",
                vec![id.into()],
            ))
            .await?;
        row.map(|r| mynaportal_from_row(&r)).transpose()
    }

    /// Records the holder's decision, the consent (when granted) and the
    /// callback to deliver, together. False when the request was already decided.
    pub async fn decide(
        &self,
        request: &MynaportalRequest,
        decision: &str,
        granted: Option<(&IssuedCertificate, &Subscription)>,
        claims: &serde_json::Value,
    ) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        let now = Utc::now().to_rfc3339();
        let moved = txn
            .execute_raw(stmt(
                "UPDATE mynaportal_requests SET status = ? WHERE id = ? AND status = 'pending'",
                vec![decision.into(), request.id.clone().into()],
            ))
            .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some((cert, s)) = granted {
            upsert_subscription(&txn, cert, s).await?;
        }
        txn.execute_raw(stmt(
            "INSERT INTO callbacks (request_id, url, claims, next_at, created_at) VALUES (?, ?, ?, ?, ?)",
            vec![
                request.id.clone().into(),
                request.callback_url.clone().into(),
                claims.to_string().into(),
                now.clone().into(),
                now.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    pub async fn due_callbacks(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DueCallback>, DbErr> {
        let rows = self
            .db
            .query_all_raw(stmt(
                "SELECT id, url, claims, attempts, created_at FROM callbacks
                 WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_at <= ? ORDER BY next_at LIMIT ?",
                vec![now.to_rfc3339().into(), (limit as i64).into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let claims: String = r.try_get("", "claims")?;
                Ok(DueCallback {
                    id: r.try_get("", "id")?,
                    url: r.try_get("", "url")?,
                    claims: serde_json::from_str(&claims).map_err(|_| corrupt("callback"))?,
                    attempts: u32::try_from(r.try_get::<i64>("", "attempts")?)
                        .map_err(|_| corrupt("attempts"))?,
                    created_at: time(r, "created_at")?,
                })
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn record_attempt(
        &self,
        id: i64,
        attempts: u32,
        status: &str,
        delivered: bool,
        give_up: bool,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let stamp = |b: bool| b.then(|| now.to_rfc3339());
        self.db
            .execute_raw(stmt(
                "UPDATE callbacks SET attempts = ?, last_status = ?, next_at = ?, delivered_at = ?, gave_up_at = ? WHERE id = ?",
                vec![
                    i64::from(attempts).into(),
                    status.into(),
                    next_at.to_rfc3339().into(),
                    stamp(delivered).into(),
                    stamp(give_up).into(),
                    id.into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Delivery state of a request's callbacks: (attempts, last status, delivered).
    pub async fn callback_state(
        &self,
        request_id: &str,
    ) -> Result<Option<(i64, Option<String>, bool)>, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT attempts, last_status, delivered_at FROM callbacks WHERE request_id = ? ORDER BY id DESC LIMIT 1",
                vec![request_id.into()],
            ))
            .await?;
        row.map(|r| {
            Ok((
                r.try_get("", "attempts")?,
                r.try_get("", "last_status")?,
                r.try_get::<Option<String>>("", "delivered_at")?.is_some(),
            ))
        })
        .transpose()
    }

    /// Records `count` revocation checks made for `purpose`.
    pub async fn record_checks(
        &self,
        purpose: CheckPurpose,
        count: u64,
        at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        self.db
            .execute_raw(stmt(
                "INSERT INTO checks (purpose, count, at) VALUES (?, ?, ?)",
                vec![
                    purpose.as_str().into(),
                    (count as i64).into(),
                    at.to_rfc3339().into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Checks by purpose made in `[from, to)`.
    pub async fn count_checks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(u64, u64), DbErr> {
        let rows = self
            .db
            .query_all_raw(stmt(
                "SELECT purpose, SUM(count) AS n FROM checks WHERE at >= ? AND at < ? GROUP BY purpose",
                vec![from.to_rfc3339().into(), to.to_rfc3339().into()],
            ))
            .await?;
        let mut counts = (0, 0);
        for row in rows {
            let n = row.try_get::<i64>("", "n")? as u64;
            match row.try_get::<String>("", "purpose")?.as_str() {
                "signature_verification" => counts.0 += n,
                _ => counts.1 += n,
            }
        }
        Ok(counts)
    }

    /// The person's newest certificate that is not revoked.
    pub async fn current_certificate(
        &self,
        person_id: &str,
    ) -> Result<Option<IssuedCertificate>, DbErr> {
        let row = self
            .db
            .query_one_raw(stmt(
                "SELECT * FROM certificates WHERE person_id = ? AND revoked_at IS NULL ORDER BY issued_at DESC LIMIT 1",
                vec![person_id.into()],
            ))
            .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }
}

async fn upsert_subscription<C: ConnectionTrait>(
    db: &C,
    cert: &IssuedCertificate,
    s: &Subscription,
) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "INSERT INTO subscriptions (cert_serial, person_id, consent_id, granted_at, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (cert_serial) DO UPDATE SET consent_id = excluded.consent_id,
           granted_at = excluded.granted_at, expires_at = excluded.expires_at",
        vec![
            cert.serial.as_str().into(),
            cert.person_id.clone().into(),
            s.consent_id.clone().into(),
            s.granted_at.to_rfc3339().into(),
            s.expires_at.to_rfc3339().into(),
        ],
    ))
    .await?;
    Ok(())
}

async fn insert_certificate<C: ConnectionTrait>(
    db: &C,
    cert: &IssuedCertificate,
) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "INSERT INTO certificates (serial, person_id, issue_number, der, key_pem, prefecture, city, issued_at, not_after, revoked_at, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            cert.serial.as_str().into(),
            cert.person_id.clone().into(),
            cert.issue_number.clone().into(),
            cert.der.clone().into(),
            cert.key_pem.clone().into(),
            cert.partition.prefecture.clone().into(),
            cert.partition.city.clone().into(),
            cert.issued_at.to_rfc3339().into(),
            cert.not_after.to_rfc3339().into(),
            cert.revoked_at.map(|t| t.to_rfc3339()).into(),
            cert.reason.map(i32::from).into(),
        ],
    ))
    .await?;
    Ok(())
}

fn mynaportal_from_row(row: &sea_orm::QueryResult) -> Result<MynaportalRequest, DbErr> {
    Ok(MynaportalRequest {
        id: row.try_get("", "id")?,
        request_ref: row.try_get("", "request_ref")?,
        client_id: row.try_get("", "client_id")?,
        callback_url: row.try_get("", "callback_url")?,
        return_url: row.try_get("", "return_url")?,
        locale: row.try_get("", "locale")?,
        status: row.try_get("", "status")?,
        expires_at: time(row, "expires_at")?,
    })
}

fn time(row: &sea_orm::QueryResult, column: &str) -> Result<DateTime<Utc>, DbErr> {
    let text: String = row.try_get("", column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt(column))
}

fn certificate_from_row(row: &sea_orm::QueryResult) -> Result<IssuedCertificate, DbErr> {
    let serial: String = row.try_get("", "serial")?;
    let revoked_at: Option<String> = row.try_get("", "revoked_at")?;
    Ok(IssuedCertificate {
        serial: CertSerial::parse(&serial).map_err(|_| corrupt("serial"))?,
        person_id: row.try_get("", "person_id")?,
        issue_number: row.try_get("", "issue_number")?,
        der: row.try_get("", "der")?,
        key_pem: row.try_get("", "key_pem")?,
        partition: CrlPartition {
            prefecture: row.try_get("", "prefecture")?,
            city: row.try_get("", "city")?,
        },
        issued_at: time(row, "issued_at")?,
        not_after: time(row, "not_after")?,
        revoked_at: revoked_at
            .map(|t| DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)))
            .transpose()
            .map_err(|_| corrupt("revoked_at"))?,
        reason: row
            .try_get::<Option<i32>>("", "reason")?
            .map(|r| u8::try_from(r).map_err(|_| corrupt("reason")))
            .transpose()?,
    })
}
