//! Consent records. A granted consent is one row with its evidence, never
//! updated; what happens to it afterwards (renewed, withdrawn, expired) is
//! appended as events, and its state is derived from them. Granting writes
//! the consent, its evidence, the customer's update, the revocation check,
//! the registration intent for the worker and the audit events in one
//! transaction, or nothing.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, SubsecRound, TimeZone, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use super::checks::{self, Check, Purpose};
use super::texts::{ConsentText, ConsentTexts};
use super::verifier::{ConsentVerifier, Evidence, Kept};
use super::{ConsentRefusal, PURPOSE};
use crate::audit::events::{
    Change, ConsentGranted, ConsentRenewed, ConsentWithdrawn, CustomerUpdated, Event, GrantedBy,
    NoticeRef, UpdateSource, WithdrawnBy,
};
use crate::audit::{self, AuditContext};
use crate::customers::{self, Basic4Source, CustomerStatus, HistoryEntry, basic4_json};
use crate::db;
use crate::domain::{Basic4, FreeText, JpkiRole};
use crate::entities::{
    basic4_history, consent_events, consents, customers as customer_rows, provider_registrations,
};
use crate::error::CoreError;
use crate::notices::templates::{channel_label, format_date};
use crate::notices::{self, NewNotice, NoticeKind, Notices};

/// How the customer gave the consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    OnlineSignature,
    Branch,
    Mynaportal,
}

impl Channel {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "online_signature" => Some(Self::OnlineSignature),
            "branch" => Some(Self::Branch),
            "mynaportal" => Some(Self::Mynaportal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnlineSignature => "online_signature",
            Self::Branch => "branch",
            Self::Mynaportal => "mynaportal",
        }
    }
}

/// A consent's state, derived from its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStatus {
    Active,
    /// Replaced by a newer consent of the same customer.
    Renewed,
    Withdrawn,
    Expired,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Renewed => "renewed",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
        }
    }
}

/// Where the consent stands with the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Written, not yet carried out by the worker.
    Pending,
    Registered,
    Unregistering,
    Unregistered,
    /// The provider refused it; the reason is in the consent's `registration_error`.
    Failed,
}

impl Registration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Registered => "registered",
            Self::Unregistering => "unregistering",
            Self::Unregistered => "unregistered",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsentEvent {
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub related_consent_id: Option<Uuid>,
}

/// A consent as the API shows it.
#[derive(Debug, Clone)]
pub struct Consent {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub purpose: String,
    pub status: ConsentStatus,
    pub channel: String,
    pub role: String,
    pub cert_serial: String,
    pub cert_not_after: DateTime<Utc>,
    pub text_version: String,
    pub text_sha256: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub withdrawn_at: Option<DateTime<Utc>>,
    pub registration: Registration,
    pub registration_error: Option<String>,
    /// Attempts made at the latest registration request.
    pub registration_attempts: i32,
    /// While the latest request waits to be tried again after a failure: when.
    pub registration_retry_at: Option<DateTime<Utc>>,
    /// `platform` (document + certificate kept) or `service_provider` (the provider's ids).
    pub evidence: String,
    /// How it was signed: `cms`, `pkcs1_sha256` or `mynaportal`.
    pub evidence_form: String,
    pub verification_id: Option<String>,
    pub certificate_id: Option<String>,
    pub events: Vec<ConsentEvent>,
}

/// The first day of a consent's 10 years. The published terms say "from
/// the day after it is given"; an institution whose agreement with its
/// platform operator counts the day itself sets `same_day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidityStart {
    #[default]
    NextDay,
    SameDay,
}

impl std::str::FromStr for ValidityStart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "next_day" => Ok(Self::NextDay),
            "same_day" => Ok(Self::SameDay),
            other => Err(format!("must be `next_day` or `same_day`, not `{other}`")),
        }
    }
}

/// What consent needs from configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConsentSettings {
    pub role: JpkiRole,
    pub validity_start: ValidityStart,
    pub timezone: chrono_tz::Tz,
}

/// When a consent given at `granted_at` lapses: ten years from its first
/// day (the day after it is given, or that day), counted in `tz` as the
/// Civil Code counts periods (art. 140, 143): it ends with the day before
/// the anniversary of the first day, or with the last day of that month
/// when the anniversary does not exist (a first day of 29 February).
pub fn expires_at(
    granted_at: DateTime<Utc>,
    start: ValidityStart,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let given = granted_at.with_timezone(&tz).date_naive();
    let first = match start {
        ValidityStart::NextDay => given + Days::new(1),
        ValidityStart::SameDay => given,
    };
    let anniversary = first + Months::new(120);
    let end_exclusive = if anniversary.day() == first.day() {
        anniversary
    } else {
        // 29 February to a common year: the period ends with 28 February.
        NaiveDate::from_ymd_opt(anniversary.year(), 3, 1).expect("1 March exists")
    };
    tz.from_local_datetime(&end_exclusive.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .earliest()
        .expect("midnight exists in every zone kihon4 accepts")
        .with_timezone(&Utc)
}

/// A request to record a consent from a signed document.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub customer_id: Uuid,
    pub text_version: String,
    pub channel: Channel,
    /// The signed consent: a CMS document or a raw card signature.
    pub signed: super::verifier::Submitted,
    pub update_customer: bool,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn refusal(r: ConsentRefusal) -> CoreError {
    CoreError::Consent(r)
}

fn same_items(a: &Basic4, b: &Basic4) -> bool {
    a.name.as_str() == b.name.as_str()
        && a.address.as_str() == b.address.as_str()
        && a.birth_date == b.birth_date
        && a.gender == b.gender
}

/// The consents' events, by consent, in order.
async fn events_of<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<Vec<consent_events::Model>, CoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(consent_events::Entity::find()
        .filter(consent_events::Column::ConsentId.is_in(ids.iter().copied()))
        .order_by_asc(consent_events::Column::ConsentId)
        .order_by_asc(consent_events::Column::Seq)
        .all(db)
        .await?)
}

fn derive_status(
    events: &[consent_events::Model],
    expires_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> ConsentStatus {
    match events.last().map(|e| e.kind.as_str()) {
        Some("withdrawn") => ConsentStatus::Withdrawn,
        Some("renewed") => ConsentStatus::Renewed,
        Some("expired") => ConsentStatus::Expired,
        _ if at >= expires_at => ConsentStatus::Expired,
        _ => ConsentStatus::Active,
    }
}

async fn registrations_of<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<Vec<provider_registrations::Model>, CoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(provider_registrations::Entity::find()
        .filter(provider_registrations::Column::ConsentId.is_in(ids.iter().copied()))
        .order_by_asc(provider_registrations::Column::Id)
        .all(db)
        .await?)
}

fn derive_registration(
    rows: &[&provider_registrations::Model],
) -> (Registration, Option<String>, i32, Option<DateTime<Utc>>) {
    let Some(last) = rows.last() else {
        return (Registration::Unregistered, None, 0, None);
    };
    let state = match (last.action.as_str(), last.status.as_str()) {
        (_, "failed") => Registration::Failed,
        ("subscribe", "done") => Registration::Registered,
        ("subscribe", _) => Registration::Pending,
        ("unsubscribe", "done") => Registration::Unregistered,
        _ => Registration::Unregistering,
    };
    let retry_at = (last.status == "pending" && last.last_error.is_some()).then_some(last.run_at);
    (state, last.last_error.clone(), last.attempts, retry_at)
}

async fn assemble<C: ConnectionTrait>(
    db: &C,
    rows: Vec<consents::Model>,
) -> Result<Vec<Consent>, CoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let events = events_of(db, &ids).await?;
    let registrations = registrations_of(db, &ids).await?;
    let at = Utc::now();
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine: Vec<consent_events::Model> = events
                .iter()
                .filter(|e| e.consent_id == row.id)
                .cloned()
                .collect();
            let regs: Vec<&provider_registrations::Model> = registrations
                .iter()
                .filter(|r| r.consent_id == row.id)
                .collect();
            let (registration, registration_error, registration_attempts, registration_retry_at) =
                derive_registration(&regs);
            let evidence = if row.certificate.is_some() {
                "platform"
            } else {
                "service_provider"
            };
            Consent {
                id: row.id,
                customer_id: row.customer_id,
                purpose: row.purpose,
                status: derive_status(&mine, row.expires_at, at),
                channel: row.channel,
                role: row.role,
                cert_serial: row.cert_serial,
                cert_not_after: row.cert_not_after,
                text_version: row.text_version,
                text_sha256: row.text_sha256,
                granted_at: row.granted_at,
                expires_at: row.expires_at,
                withdrawn_at: mine
                    .iter()
                    .find(|e| e.kind == "withdrawn")
                    .map(|e| e.occurred_at),
                registration,
                registration_error,
                registration_attempts,
                registration_retry_at,
                evidence: evidence.to_owned(),
                evidence_form: row.evidence_form,
                verification_id: row.verification_id,
                certificate_id: row.certificate_id,
                events: mine
                    .into_iter()
                    .map(|e| ConsentEvent {
                        kind: e.kind,
                        occurred_at: e.occurred_at,
                        actor: e.actor,
                        related_consent_id: e.related_consent_id,
                    })
                    .collect(),
            }
        })
        .collect())
}

pub async fn get<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Consent, CoreError> {
    let row = consents::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(CoreError::NotFound("consent"))?;
    Ok(assemble(db, vec![row]).await?.remove(0))
}

/// A page of a customer's consents, oldest first, after the consent `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    customer_id: Uuid,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Consent>, CoreError> {
    customers::get(db, customer_id).await?;
    let mut query = consents::Entity::find()
        .filter(consents::Column::CustomerId.eq(customer_id))
        .order_by_asc(consents::Column::Id);
    if let Some(after) = after {
        query = query.filter(consents::Column::Id.gt(after));
    }
    let rows = query.limit(limit).all(db).await?;
    assemble(db, rows).await
}

/// A consent event, by whoever `ctx` names.
pub(crate) fn event_row(
    consent_id: Uuid,
    seq: i32,
    kind: &str,
    at: DateTime<Utc>,
    ctx: &AuditContext,
    reason: Option<&str>,
    related: Option<Uuid>,
) -> consent_events::ActiveModel {
    consent_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        consent_id: Set(consent_id),
        seq: Set(seq),
        kind: Set(kind.to_owned()),
        occurred_at: Set(at),
        actor: Set(ctx.actor.as_str().to_owned()),
        reason: Set(reason.map(str::to_owned)),
        related_consent_id: Set(related),
    }
}

/// A registration intent for the worker: `subscribe` or `unsubscribe`, due now.
pub(crate) fn registration_row(
    consent_id: Uuid,
    serial: &str,
    action: &str,
    at: DateTime<Utc>,
) -> provider_registrations::ActiveModel {
    provider_registrations::ActiveModel {
        id: Set(Uuid::now_v7()),
        consent_id: Set(consent_id),
        cert_serial: Set(serial.to_owned()),
        action: Set(action.to_owned()),
        status: Set("pending".to_owned()),
        attempts: Set(0),
        run_at: Set(at),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        last_error: Set(None),
        created_at: Set(at),
        completed_at: Set(None),
        refusal: Set(None),
    }
}

/// The customer's active consent, if any, with its last event's sequence.
pub(crate) async fn active_consent<C: ConnectionTrait>(
    txn: &C,
    customer_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<(consents::Model, i32)>, CoreError> {
    let rows = consents::Entity::find()
        .filter(consents::Column::CustomerId.eq(customer_id))
        .order_by_asc(consents::Column::Id)
        .all(txn)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let events = events_of(txn, &ids).await?;
    Ok(rows.into_iter().rev().find_map(|row| {
        let mine: Vec<consent_events::Model> = events
            .iter()
            .filter(|e| e.consent_id == row.id)
            .cloned()
            .collect();
        let seq = mine.last().map_or(0, |e| e.seq);
        (derive_status(&mine, row.expires_at, at) == ConsentStatus::Active).then_some((row, seq))
    }))
}

/// The active consent of each of `customer_ids` that has one, with its last
/// event's sequence number: [`active_consent`] for many customers in two
/// queries.
pub(crate) async fn active_consents<C: ConnectionTrait>(
    txn: &C,
    customer_ids: &[Uuid],
    at: DateTime<Utc>,
) -> Result<std::collections::HashMap<Uuid, (consents::Model, i32)>, CoreError> {
    let mut out = std::collections::HashMap::new();
    if customer_ids.is_empty() {
        return Ok(out);
    }
    let rows = consents::Entity::find()
        .filter(consents::Column::CustomerId.is_in(customer_ids.iter().copied()))
        .order_by_asc(consents::Column::Id)
        .all(txn)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let events = events_of(txn, &ids).await?;
    let mut by_consent: std::collections::HashMap<Uuid, Vec<consent_events::Model>> =
        std::collections::HashMap::new();
    for e in events {
        by_consent.entry(e.consent_id).or_default().push(e);
    }
    // The newest active consent of each customer.
    for row in rows.into_iter().rev() {
        if out.contains_key(&row.customer_id) {
            continue;
        }
        let mine = by_consent.get(&row.id).map(Vec::as_slice).unwrap_or(&[]);
        let seq = mine.last().map_or(0, |e| e.seq);
        if derive_status(mine, row.expires_at, at) == ConsentStatus::Active {
            out.insert(row.customer_id, (row, seq));
        }
    }
    Ok(out)
}

/// Records that `new` renews the active consent `old` (whose last event is
/// `seq`), in `txn`: its `renewed` event, and the removal of its provider
/// registration when it stands under another certificate than `serial`.
/// The old consent is registered under the record's certificate
/// (`record_serial`), which sync moves along: not necessarily the one it
/// was signed with.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn renew<C: ConnectionTrait>(
    txn: &C,
    ctx: &AuditContext,
    old: &consents::Model,
    seq: i32,
    new: Uuid,
    record_serial: Option<&str>,
    serial: &str,
    at: DateTime<Utc>,
) -> Result<(), CoreError> {
    let inserted = consent_events::Entity::insert(event_row(
        old.id,
        seq + 1,
        "renewed",
        at,
        ctx,
        None,
        Some(new),
    ))
    .exec_without_returning(txn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if db::is_unique_violation(&e) => {
            return Err(CoreError::Conflict(
                "the customer's consent changed meanwhile",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let registered = record_serial.unwrap_or(&old.cert_serial);
    if registered != serial {
        provider_registrations::Entity::insert(registration_row(
            old.id,
            registered,
            "unsubscribe",
            at,
        ))
        .exec_without_returning(txn)
        .await?;
    }
    Ok(())
}

/// Verifies a signed consent and records it with everything that follows
/// from it, in one transaction: the consent and its first event, its
/// registration intent, the revocation check, the renewal of the active
/// consent, the customer's update, the receipt and the audit events.
pub async fn grant(
    db: &DatabaseConnection,
    verifier: &ConsentVerifier,
    texts: &ConsentTexts,
    notices: &Notices,
    settings: ConsentSettings,
    ctx: &AuditContext,
    request: GrantRequest,
) -> Result<Consent, CoreError> {
    let at = now();
    let (text, evidence) = verify_document(db, verifier, texts, &request, at).await?;

    let txn = db::begin_write(db).await?;
    let current = customers::lock(&txn, request.customer_id).await?;
    let customer = customers::Customer::try_from(current.clone())?;
    if customer.status == CustomerStatus::Deceased {
        return Err(refusal(ConsentRefusal::CustomerDeceased));
    }
    let take_items = takes_items(&customer, &evidence, request.update_customer)?;
    let previous = active_consent(&txn, customer.id, at).await?;
    let id = Uuid::now_v7();
    let expires = expires_at(at, settings.validity_start, settings.timezone);
    let serial = evidence.cert_serial.as_str();
    let row = document_consent_row(id, &request, text, &evidence, settings.role, at, expires);
    match consents::Entity::insert(row)
        .exec_without_returning(&txn)
        .await
    {
        Ok(_) => {}
        // Another request with the same signature won the race.
        Err(e) if db::is_unique_violation(&e) => {
            return Err(refusal(ConsentRefusal::DocumentReused));
        }
        Err(e) => return Err(e.into()),
    }
    first_event(&txn, ctx, id, at).await?;
    subscribe(&txn, id, serial, at).await?;
    checks::record(
        &txn,
        Check {
            purpose: Purpose::SignatureVerification,
            method: evidence.revocation_method,
            serial: &evidence.cert_serial,
            outcome: "good",
            at,
            consent_id: Some(id),
        },
    )
    .await?;
    // A consent given while another is active renews it.
    if let Some((old, seq)) = &previous {
        let record_serial = current.jpki_cert_serial.as_deref();
        renew(&txn, ctx, old, *seq, id, record_serial, serial, at).await?;
    }
    let items = take_items.then_some(&evidence.basic4);
    let customer_event =
        follow_certificate(&txn, &current, &customer, &evidence, items, at).await?;
    let receipt = send_receipt(
        &txn,
        notices,
        Receipt {
            customer: &customer,
            name: items.or(customer.basic4.as_ref()).map(|b| b.name.as_str()),
            text_version: &text.version,
            channel: request.channel,
            granted_at: at,
            expires_at: expires,
            timezone: settings.timezone,
        },
    )
    .await?;

    // The audit appends come last: they hold the chain lock until commit.
    let verification_id = match &evidence.kept {
        Kept::ServiceProvider {
            verification_id, ..
        } => Some(verification_id.clone()),
        Kept::Platform { .. } => None,
    };
    let (granted, renewed) = granted_events(ConsentGranted {
        consent_id: id,
        customer_id: customer.id,
        channel: request.channel,
        cert_serial: serial.to_owned(),
        granted_at: at,
        expires_at: expires,
        renews: previous.as_ref().map(|(old, _)| old.id),
        notice: Some(NoticeRef::new(receipt, NoticeKind::ConsentReceipt)),
        by: GrantedBy::Document {
            role: settings.role,
            text_version: text.version.clone(),
            text_sha256: text.sha256.clone(),
            document_sha256: evidence.document_sha256.clone(),
            evidence_form: evidence.form.as_str(),
            revocation_method: evidence.revocation_method,
            verification_id,
        },
    });
    audit::append(&txn, ctx, granted).await?;
    if let Some(renewed) = renewed {
        audit::append(&txn, ctx, renewed).await?;
    }
    audit::append(&txn, ctx, customer_event).await?;
    txn.commit().await?;
    get(db, id).await
}

/// The checks of a signed consent made before its transaction: a text in
/// force, a customer alive, a document that verifies and was not used before.
async fn verify_document<'t>(
    db: &DatabaseConnection,
    verifier: &ConsentVerifier,
    texts: &'t ConsentTexts,
    request: &GrantRequest,
    at: DateTime<Utc>,
) -> Result<(&'t ConsentText, Evidence), CoreError> {
    let text = texts
        .version(&request.text_version)
        .ok_or(refusal(ConsentRefusal::UnknownTextVersion))?;
    let customer = customers::get(db, request.customer_id).await?;
    if customer.status == CustomerStatus::Deceased {
        return Err(refusal(ConsentRefusal::CustomerDeceased));
    }
    let evidence = verifier
        .verify(request.signed.as_signed(), text, at)
        .await
        .map_err(refusal)?;
    let reused = consents::Entity::find()
        .filter(consents::Column::SignatureSha256.eq(&evidence.signature_sha256))
        .one(db)
        .await?;
    if reused.is_some() {
        return Err(refusal(ConsentRefusal::DocumentReused));
    }
    Ok((text, evidence))
}

/// Whether the customer takes the four items of the certificate: when it
/// has none, or other ones and the request says to update them.
fn takes_items(
    customer: &customers::Customer,
    evidence: &Evidence,
    update_customer: bool,
) -> Result<bool, CoreError> {
    match &customer.basic4 {
        None => Ok(true),
        Some(known) if same_items(known, &evidence.basic4) => Ok(false),
        Some(_) if update_customer => Ok(true),
        Some(_) => Err(refusal(ConsentRefusal::Basic4Mismatch)),
    }
}

/// The row of a consent given by a signed document at `at`.
fn document_consent_row(
    id: Uuid,
    request: &GrantRequest,
    text: &ConsentText,
    evidence: &Evidence,
    role: JpkiRole,
    at: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> consents::ActiveModel {
    let (document, certificate, anchor_key_id, verification_id, certificate_id, user_id) =
        match &evidence.kept {
            Kept::Platform {
                document,
                certificate,
                anchor_key_id,
            } => (
                Some(document.clone()),
                Some(certificate.clone()),
                Some(anchor_key_id.clone()),
                None,
                None,
                None,
            ),
            Kept::ServiceProvider {
                verification_id,
                certificate_id,
                user_id,
            } => (
                None,
                None,
                None,
                Some(verification_id.clone()),
                Some(certificate_id.clone()),
                user_id.clone(),
            ),
        };
    consents::ActiveModel {
        id: Set(id),
        customer_id: Set(request.customer_id),
        purpose: Set(PURPOSE.to_owned()),
        channel: Set(request.channel.as_str().to_owned()),
        role: Set(role.as_str().to_owned()),
        text_version: Set(text.version.clone()),
        text_sha256: Set(text.sha256.clone()),
        cert_serial: Set(evidence.cert_serial.as_str().to_owned()),
        cert_not_after: Set(evidence.cert_not_after),
        granted_at: Set(at),
        expires_at: Set(expires),
        document_sha256: Set(evidence.document_sha256.clone()),
        signature_sha256: Set(evidence.signature_sha256.clone()),
        signed_document: Set(document),
        certificate: Set(certificate),
        anchor_key_id: Set(anchor_key_id),
        verification_id: Set(verification_id),
        certificate_id: Set(certificate_id),
        signed_content: Set(evidence.content.clone()),
        revocation_method: Set(evidence.revocation_method.to_owned()),
        ppid: Set(None),
        evidence_form: Set(evidence.form.as_str().to_owned()),
        provider_user_id: Set(user_id),
    }
}

/// The customer follows the certificate of a signed consent, taking its
/// four `items` when given; returns the `customer.updated` event.
async fn follow_certificate(
    txn: &DatabaseTransaction,
    current: &customer_rows::Model,
    customer: &customers::Customer,
    evidence: &Evidence,
    items: Option<&Basic4>,
    at: DateTime<Utc>,
) -> Result<Event, CoreError> {
    let serial = evidence.cert_serial.as_str();
    let version = current.version + 1;
    let mut update = customer_rows::Entity::update_many()
        .col_expr(customer_rows::Column::JpkiCertSerial, Expr::value(serial))
        .col_expr(
            customer_rows::Column::CertNotAfter,
            Expr::value(evidence.cert_not_after),
        )
        .col_expr(customer_rows::Column::Version, Expr::value(version))
        .col_expr(customer_rows::Column::UpdatedAt, Expr::value(at))
        .filter(customer_rows::Column::Id.eq(customer.id))
        .filter(customer_rows::Column::Version.eq(current.version));
    let mut event = CustomerUpdated::new(customer.id, Change::new(current.version, version));
    event.jpki_cert_serial = Some(Change::new(
        current.jpki_cert_serial.clone(),
        Some(serial.to_owned()),
    ));
    if let Some(b) = items {
        let entry = HistoryEntry {
            customer_id: customer.id,
            version,
            source: Basic4Source::Consent,
            before: customer.basic4.as_ref().map(basic4_json),
            after: basic4_json(b),
            reported_on: None,
            at,
        };
        let (with_items, entry) = customers::write_basic4(update, b, entry);
        update = with_items;
        basic4_history::Entity::insert(entry)
            .exec_without_returning(txn)
            .await?;
        event.basic4 = Some(Change::new(customer.basic4.clone(), Some(b.clone())));
    }
    if update.exec(txn).await?.rows_affected != 1 {
        return Err(CoreError::Conflict("the customer changed meanwhile"));
    }
    event.source = Some(UpdateSource::Consent);
    Ok(Event::CustomerUpdated(event))
}

/// The first event of a consent just written: `granted`.
pub(crate) async fn first_event<C: ConnectionTrait>(
    txn: &C,
    ctx: &AuditContext,
    consent_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), CoreError> {
    consent_events::Entity::insert(event_row(consent_id, 1, "granted", at, ctx, None, None))
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// The intent for the worker to register a new consent with the provider.
pub(crate) async fn subscribe<C: ConnectionTrait>(
    txn: &C,
    consent_id: Uuid,
    serial: &str,
    at: DateTime<Utc>,
) -> Result<(), CoreError> {
    provider_registrations::Entity::insert(registration_row(consent_id, serial, "subscribe", at))
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// What a consent's receipt says, and to whom.
pub(crate) struct Receipt<'a> {
    pub customer: &'a customers::Customer,
    /// The name it is addressed to.
    pub name: Option<&'a str>,
    pub text_version: &'a str,
    pub channel: Channel,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub timezone: chrono_tz::Tz,
}

/// Writes the receipt of a consent, in the customer's language; returns the notice's id.
pub(crate) async fn send_receipt<C: ConnectionTrait>(
    txn: &C,
    notices: &Notices,
    r: Receipt<'_>,
) -> Result<Uuid, CoreError> {
    let local = |t: DateTime<Utc>| t.with_timezone(&r.timezone).date_naive();
    let locale = r.customer.locale;
    notices::enqueue(
        txn,
        notices,
        NewNotice {
            kind: NoticeKind::ConsentReceipt,
            customer_id: Some(r.customer.id),
            to: &r.customer.email,
            locale,
            customer_name: r.name,
            data: json!({"consent": {
                "text_version": r.text_version,
                "granted_on": format_date(locale, local(r.granted_at)),
                "valid_until": format_date(locale, local(r.expires_at) - Days::new(1)),
                "channel_label": channel_label(locale, r.channel.as_str()),
            }}),
        },
    )
    .await
}

/// The events of a consent given, whichever way: its `consent.granted`,
/// and the `consent.renewed` of the consent it renews, if any, to append
/// in this order.
pub(crate) fn granted_events(granted: ConsentGranted) -> (Event, Option<Event>) {
    let renewed = granted.renews.map(|old| {
        Event::ConsentRenewed(ConsentRenewed {
            consent_id: old,
            customer_id: granted.customer_id,
            renewed_by: granted.consent_id,
        })
    });
    (Event::ConsentGranted(granted), renewed)
}

/// Withdraws an active consent: the event, the provider deregistration
/// intent and the audit event, in one transaction.
pub async fn withdraw(
    db: &DatabaseConnection,
    notices: &Notices,
    timezone: chrono_tz::Tz,
    ctx: &AuditContext,
    id: Uuid,
    reason: &FreeText,
) -> Result<Consent, CoreError> {
    let txn = db::begin_write(db).await?;
    let row = consents::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(CoreError::NotFound("consent"))?;
    let customer = customers::Customer::try_from(customers::lock(&txn, row.customer_id).await?)?;
    let at = now();
    let events = events_of(&txn, &[id]).await?;
    if derive_status(&events, row.expires_at, at) != ConsentStatus::Active {
        return Err(refusal(ConsentRefusal::NotActive));
    }
    let seq = events.last().map_or(0, |e| e.seq) + 1;
    let inserted = consent_events::Entity::insert(event_row(
        id,
        seq,
        "withdrawn",
        at,
        ctx,
        Some(reason.as_str()),
        None,
    ))
    .exec_without_returning(&txn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if db::is_unique_violation(&e) => return Err(refusal(ConsentRefusal::NotActive)),
        Err(e) => return Err(e.into()),
    }
    // Registered under the record's current certificate (sync moves it along).
    let registered = customer
        .jpki_cert_serial
        .as_ref()
        .map_or(row.cert_serial.clone(), |s| s.as_str().to_owned());
    provider_registrations::Entity::insert(registration_row(id, &registered, "unsubscribe", at))
        .exec_without_returning(&txn)
        .await?;
    let local = |t: DateTime<Utc>| t.with_timezone(&timezone).date_naive();
    let locale = customer.locale;
    let confirmation = notices::enqueue(
        &txn,
        notices,
        NewNotice {
            kind: NoticeKind::ConsentWithdrawn,
            customer_id: Some(customer.id),
            to: &customer.email,
            locale,
            customer_name: customer.basic4.as_ref().map(|b| b.name.as_str()),
            data: json!({"consent": {
                "withdrawn_on": format_date(locale, local(at)),
                "granted_on": format_date(locale, local(row.granted_at)),
            }}),
        },
    )
    .await?;
    let event = Event::ConsentWithdrawn(ConsentWithdrawn {
        consent_id: id,
        customer_id: row.customer_id,
        withdrawn_at: at,
        by: WithdrawnBy::Institution {
            reason: reason.as_str().to_owned(),
            notice: NoticeRef::new(confirmation, NoticeKind::ConsentWithdrawn),
        },
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    get(db, id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Tokyo;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ten_years_from_the_day_after_in_japan() {
        // 2026-11-25 23:30 in Tokyo is still the 25th there (14:30 UTC).
        let given = at("2026-11-25T14:30:00Z");
        assert_eq!(
            expires_at(given, ValidityStart::NextDay, Tokyo),
            at("2036-11-26T00:00:00+09:00")
        );
        assert_eq!(
            expires_at(given, ValidityStart::SameDay, Tokyo),
            at("2036-11-25T00:00:00+09:00")
        );
        // 00:30 on the 26th in Tokyo is the 25th in UTC: Tokyo's day counts.
        assert_eq!(
            expires_at(at("2026-11-25T15:30:00Z"), ValidityStart::NextDay, Tokyo),
            at("2036-11-27T00:00:00+09:00")
        );
    }

    #[test]
    fn a_period_from_29_february_ends_with_february() {
        // Given 2028-02-28: the first day is the 29th; 2038 has no 29 February.
        assert_eq!(
            expires_at(at("2028-02-28T03:00:00Z"), ValidityStart::NextDay, Tokyo),
            at("2038-03-01T00:00:00+09:00")
        );
        assert_eq!(
            expires_at(at("2028-02-29T03:00:00Z"), ValidityStart::SameDay, Tokyo),
            at("2038-03-01T00:00:00+09:00")
        );
    }
}
