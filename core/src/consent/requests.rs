//! Mynaportal-routed consent
//! (docs/architecture.md#mynaportal-consent-requests): an existing customer
//! is asked by email; the link opens kihon4's landing page under a
//! single-use token, which forwards to the provider's consent page on
//! Mynaportal; the holder decides there, and the provider tells kihon4 with
//! a signed callback (see [`super::callbacks`]).
//!
//! A request is created at the provider first (idempotent by its
//! `request_ref`, which is the request's own id), then recorded with its
//! email and audit event in one transaction. Only the SHA-256 of the token
//! is stored; the token itself is only in the email.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;
use uuid::Uuid;

use super::ConsentRefusal;
use super::records::active_consent;
use crate::audit::events::{
    ConsentRequestMoved, ConsentRequestReminded, ConsentRequestSent, Event, NoticeRef,
};
use crate::audit::{self, AuditContext};
use crate::customers::{self, CustomerStatus};
use crate::db;
use crate::entities::consent_requests;
use crate::error::CoreError;
use crate::notices::templates::format_date;
use crate::notices::{self, NewNotice, NoticeKind, Notices};
use crate::provider::{MynaportalRequest, Provider, ProviderError};

/// Where the requests' links and callbacks point, and who kihon4 is to the provider.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// `KIHON4_PUBLIC_BASE_URL`: the landing page and the webhook live under it.
    pub public_base_url: Url,
    /// `KIHON4_PROVIDER_CLIENT_ID`: the `client_id` of requests, the `aud` of callbacks.
    pub client_id: String,
    pub timezone: chrono_tz::Tz,
}

impl RequestSettings {
    fn url(&self, path: &str) -> String {
        let base = self.public_base_url.as_str().trim_end_matches('/');
        format!("{base}{path}")
    }

    /// The landing page of a token.
    pub fn landing_url(&self, token: &str) -> String {
        self.url(&format!("/consent/{token}"))
    }

    pub fn callback_url(&self) -> String {
        self.url("/v1/webhooks/mynaportal")
    }
}

/// The states a request goes through.
pub const OPEN: [&str; 2] = ["sent", "started"];

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A fresh token (32 random bytes, base64url) and its SHA-256 in hex.
fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` is shaped like one kihon4 gives out (43 base64url
/// characters); anything else is not looked up.
pub fn token_shaped(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The customer's open request, if any (sent or started, not expired).
pub async fn open_request<C: ConnectionTrait>(
    db: &C,
    customer_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<consent_requests::Model>, CoreError> {
    Ok(consent_requests::Entity::find()
        .filter(consent_requests::Column::CustomerId.eq(customer_id))
        .filter(consent_requests::Column::Status.is_in(OPEN))
        .filter(consent_requests::Column::ExpiresAt.gt(at))
        .order_by_desc(consent_requests::Column::Id)
        .one(db)
        .await?)
}

/// Asks `customer_id` for consent on Mynaportal: the provider's request,
/// then the record, the email with the landing link and the audit event in
/// one transaction.
pub async fn create(
    db: &DatabaseConnection,
    provider: &dyn Provider,
    notices: &Notices,
    settings: &RequestSettings,
    ctx: &AuditContext,
    customer_id: Uuid,
) -> Result<consent_requests::Model, CoreError> {
    let at = now();
    let customer = customers::get(db, customer_id).await?;
    if customer.status == CustomerStatus::Deceased {
        return Err(CoreError::Consent(ConsentRefusal::CustomerDeceased));
    }
    if active_consent(db, customer_id, at).await?.is_some() {
        return Err(CoreError::AlreadyConsenting);
    }
    if open_request(db, customer_id, at).await?.is_some() {
        return Err(CoreError::ConsentRequestOpen);
    }
    let id = Uuid::now_v7();
    let (token, hash) = new_token();
    let ticket = provider
        .mynaportal_request(&MynaportalRequest {
            request_ref: id.to_string(),
            client_id: settings.client_id.clone(),
            callback_url: settings.callback_url(),
            return_url: format!("{}/done", settings.landing_url(&token)),
            locale: customer.locale.as_str().to_owned(),
        })
        .await
        .map_err(|e| match e {
            ProviderError::Unsupported {
                provider,
                capability,
            } => CoreError::ProviderUnsupported {
                provider,
                capability,
            },
            e => CoreError::Upstream(e.to_string()),
        })?;
    if ticket.expires_at <= at {
        return Err(CoreError::Upstream(
            "the provider's consent request is already expired".into(),
        ));
    }

    let txn = db::begin_write(db).await?;
    // Another request may have been made meanwhile: one open at a time.
    customers::lock(&txn, customer_id).await?;
    if open_request(&txn, customer_id, at).await?.is_some() {
        return Err(CoreError::ConsentRequestOpen);
    }
    let row = consent_requests::Model {
        id,
        customer_id,
        status: "sent".into(),
        provider_request_id: ticket.request_id.clone(),
        consent_url: ticket.consent_url.clone(),
        token_sha256: hash,
        token_used_at: None,
        expires_at: ticket.expires_at.trunc_subsecs(6),
        reminders: 0,
        reminded_at: None,
        consent_id: None,
        created_at: at,
        decided_at: None,
    };
    consent_requests::Entity::insert(consent_requests::ActiveModel::from(row.clone()))
        .exec_without_returning(&txn)
        .await?;
    let notice = email(
        &txn,
        notices,
        settings,
        &customer,
        &token,
        ticket.expires_at,
        false,
    )
    .await?;
    let event = Event::ConsentRequestSent(ConsentRequestSent {
        request_id: id,
        customer_id: customer.id,
        provider_request_id: ticket.request_id.clone(),
        expires_at: row.expires_at,
        notice: NoticeRef::new(notice, NoticeKind::ConsentRequest),
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(row)
}

/// The `consent_request` email with the landing link of `token`, in
/// `txn`; a reminder says so.
async fn email<C: ConnectionTrait>(
    txn: &C,
    notices: &Notices,
    settings: &RequestSettings,
    customer: &customers::Customer,
    token: &str,
    expires_at: DateTime<Utc>,
    reminder: bool,
) -> Result<Uuid, CoreError> {
    let local = expires_at.with_timezone(&settings.timezone).date_naive();
    notices::enqueue(
        txn,
        notices,
        NewNotice {
            kind: NoticeKind::ConsentRequest,
            customer_id: Some(customer.id),
            to: &customer.email,
            locale: customer.locale,
            customer_name: customer.basic4.as_ref().map(|b| b.name.as_str()),
            data: json!({"request": {
                "link": settings.landing_url(token),
                "expires_on": format_date(customer.locale, local),
                "reminder": reminder,
            }}),
        },
    )
    .await
}

pub async fn get<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<consent_requests::Model, CoreError> {
    consent_requests::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(CoreError::NotFound("consent request"))
}

/// The request behind a landing-page token, whatever its state.
pub async fn by_token<C: ConnectionTrait>(
    db: &C,
    token: &str,
) -> Result<Option<consent_requests::Model>, CoreError> {
    if !token_shaped(token) {
        return Ok(None);
    }
    Ok(consent_requests::Entity::find()
        .filter(consent_requests::Column::TokenSha256.eq(token_hash(token)))
        .one(db)
        .await?)
}

/// What a landing-page token can do now.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenState {
    Unknown,
    /// Past the request's `expires_at`, or marked expired.
    Expired,
    /// Used already to go to Mynaportal, or decided.
    Used,
    Usable(Box<consent_requests::Model>),
}

pub fn state(request: Option<consent_requests::Model>, at: DateTime<Utc>) -> TokenState {
    match request {
        None => TokenState::Unknown,
        Some(r) if r.status == "expired" || r.expires_at <= at => TokenState::Expired,
        Some(r) if r.status != "sent" || r.token_used_at.is_some() => TokenState::Used,
        Some(r) => TokenState::Usable(Box::new(r)),
    }
}

/// Uses the token once: the request moves to `started` and the customer is
/// sent to the provider's consent page (returned). `None` when the token
/// cannot be used (any more).
pub async fn start(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    token: &str,
) -> Result<Result<String, TokenState>, CoreError> {
    let at = now();
    let request = match state(by_token(db, token).await?, at) {
        TokenState::Usable(r) => r,
        other => return Ok(Err(other)),
    };
    let txn = db::begin_write(db).await?;
    let used = consent_requests::Entity::update_many()
        .col_expr(consent_requests::Column::TokenUsedAt, Expr::value(at))
        .col_expr(consent_requests::Column::Status, Expr::value("started"))
        .filter(consent_requests::Column::Id.eq(request.id))
        .filter(consent_requests::Column::Status.eq("sent"))
        .filter(consent_requests::Column::TokenUsedAt.is_null())
        .exec(&txn)
        .await?;
    if used.rows_affected != 1 {
        // Used meanwhile, by another tab or a replay.
        txn.rollback().await?;
        return Ok(Err(TokenState::Used));
    }
    let event = Event::ConsentRequestStarted(ConsentRequestMoved {
        request_id: request.id,
        customer_id: request.customer_id,
        before: "sent".to_owned(),
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(Ok(request.consent_url))
}

/// Customers without an active consent and without an open request, for
/// `kihon4 consent-requests send --all-without-consent`; `after` pages.
pub async fn customers_to_ask(
    db: &DatabaseConnection,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Uuid>, CoreError> {
    let backend = db.get_database_backend();
    let p = |i: usize| db::placeholder(backend, i);
    let sql = format!(
        "SELECT cu.id FROM customers cu WHERE cu.status <> 'deceased' AND cu.id > {} \
         AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.customer_id = cu.id AND c.expires_at > {} \
           AND NOT EXISTS (SELECT 1 FROM consent_events e WHERE e.consent_id = c.id \
             AND e.kind IN ('withdrawn', 'renewed', 'expired'))) \
         AND NOT EXISTS (SELECT 1 FROM consent_requests r WHERE r.customer_id = cu.id \
           AND r.status IN ('sent', 'started') AND r.expires_at > {}) \
         ORDER BY cu.id LIMIT {}",
        p(1),
        p(2),
        p(3),
        p(4)
    );
    let at = now();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            vec![
                after.unwrap_or(Uuid::nil()).into(),
                at.into(),
                at.into(),
                (limit as i64).into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<Uuid>("", "id")?))
        .collect()
}

/// Requests past their expiry that nobody decided become `expired`, each
/// with its audit event. Returns how many.
pub async fn expire_due(db: &DatabaseConnection, ctx: &AuditContext) -> Result<u64, CoreError> {
    let at = now();
    let due = consent_requests::Entity::find()
        .filter(consent_requests::Column::Status.is_in(OPEN))
        .filter(consent_requests::Column::ExpiresAt.lte(at))
        .all(db)
        .await?;
    let mut expired = 0;
    for request in due {
        let txn = db::begin_write(db).await?;
        let moved = consent_requests::Entity::update_many()
            .col_expr(consent_requests::Column::Status, Expr::value("expired"))
            .col_expr(consent_requests::Column::DecidedAt, Expr::value(at))
            .filter(consent_requests::Column::Id.eq(request.id))
            .filter(consent_requests::Column::Status.eq(request.status.clone()))
            .exec(&txn)
            .await?;
        if moved.rows_affected == 1 {
            let event = Event::ConsentRequestExpired(ConsentRequestMoved {
                request_id: request.id,
                customer_id: request.customer_id,
                before: request.status.clone(),
            });
            audit::append(&txn, ctx, event).await?;
            expired += 1;
        }
        txn.commit().await?;
    }
    Ok(expired)
}

/// Reminds the customers of requests still `sent` (the link not used to go
/// to Mynaportal): the n-th reminder once `schedule[n]` (days after the
/// request) has passed, each once. A reminder carries a fresh link (only
/// the token's hash is kept, so the earlier link stops working) and is
/// written with its audit event; two workers cannot both send it. Returns
/// how many were sent.
pub async fn remind_due(
    db: &DatabaseConnection,
    notices: &Notices,
    settings: &RequestSettings,
    ctx: &AuditContext,
    schedule: &[u32],
) -> Result<u64, CoreError> {
    let at = now();
    let due = consent_requests::Entity::find()
        .filter(consent_requests::Column::Status.eq("sent"))
        .filter(consent_requests::Column::ExpiresAt.gt(at))
        .filter(consent_requests::Column::Reminders.lt(schedule.len() as i32))
        .all(db)
        .await?;
    let mut sent = 0;
    for request in due {
        let days = schedule[request.reminders.max(0) as usize];
        if at - request.created_at < chrono::Duration::days(i64::from(days)) {
            continue;
        }
        let customer = customers::get(db, request.customer_id).await?;
        let (token, hash) = new_token();
        let txn = db::begin_write(db).await?;
        let moved = consent_requests::Entity::update_many()
            .col_expr(consent_requests::Column::TokenSha256, Expr::value(hash))
            .col_expr(
                consent_requests::Column::Reminders,
                Expr::value(request.reminders + 1),
            )
            .col_expr(consent_requests::Column::RemindedAt, Expr::value(at))
            .filter(consent_requests::Column::Id.eq(request.id))
            .filter(consent_requests::Column::Status.eq("sent"))
            .filter(consent_requests::Column::Reminders.eq(request.reminders))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            // Opened, decided or reminded meanwhile.
            txn.rollback().await?;
            continue;
        }
        let notice = email(
            &txn,
            notices,
            settings,
            &customer,
            &token,
            request.expires_at,
            true,
        )
        .await?;
        let event = Event::ConsentRequestReminded(ConsentRequestReminded {
            request_id: request.id,
            customer_id: customer.id,
            reminders: request.reminders + 1,
            notice: NoticeRef::new(notice, NoticeKind::ConsentRequest),
        });
        audit::append(&txn, ctx, event).await?;
        txn.commit().await?;
        sent += 1;
    }
    Ok(sent)
}

/// Marks the request decided in `txn` (the callback's transaction).
pub(crate) async fn decide<C: ConnectionTrait>(
    txn: &C,
    request: &consent_requests::Model,
    status: &str,
    consent_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<(), CoreError> {
    consent_requests::Entity::update_many()
        .col_expr(consent_requests::Column::Status, Expr::value(status))
        .col_expr(consent_requests::Column::DecidedAt, Expr::value(at))
        .col_expr(consent_requests::Column::ConsentId, Expr::value(consent_id))
        .filter(consent_requests::Column::Id.eq(request.id))
        .exec(txn)
        .await?;
    Ok(())
}
