//! Every audit event kihon4 appends, one variant per action, each with its
//! typed payload; [`From<Event> for AuditEvent`](AuditEvent#impl-From<Event>-for-AuditEvent)
//! is the one place that turns a variant into the event's subject, `data`
//! and committed personal values. docs/audit.md ("What is recorded")
//! describes each payload as this file writes it.
//!
//! A personal value (an email, the four items, an institution's free text)
//! is a plain `String` or domain value here; only the serialisation below
//! turns it into a commitment.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AuditEvent;
use crate::audit_export::Format;
use crate::consent::PURPOSE;
use crate::consent::records::Channel;
use crate::customers::CustomerStatus;
use crate::domain::{Basic4, JpkiRole, Locale};
use crate::notices::NoticeKind;
use crate::provider::OptionalItems;
use crate::sync::Scope;

/// One audit event, before it is serialised.
// Built once and serialised at once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    /// `customer.created`
    CustomerCreated(CustomerCreated),
    /// `customer.updated`
    CustomerUpdated(CustomerUpdated),
    /// `consent.granted`
    ConsentGranted(ConsentGranted),
    /// `consent.renewed`
    ConsentRenewed(ConsentRenewed),
    /// `consent.withdrawn`
    ConsentWithdrawn(ConsentWithdrawn),
    /// `consent.expired`
    ConsentExpired(ConsentExpired),
    /// `consent.reminded`
    ConsentReminded(ConsentNotified),
    /// `consent.renewal_requested`
    ConsentRenewalRequested(ConsentNotified),
    /// `consent.registered`
    ConsentRegistered(RegistrationDone),
    /// `consent.unregistered`
    ConsentUnregistered(RegistrationDone),
    /// `consent.registration_failed`
    ConsentRegistrationFailed(RegistrationFailed),
    /// `consent.registration_retried`
    ConsentRegistrationRetried(RegistrationRetried),
    /// `consent_request.sent`
    ConsentRequestSent(ConsentRequestSent),
    /// `consent_request.started`
    ConsentRequestStarted(ConsentRequestMoved),
    /// `consent_request.reminded`
    ConsentRequestReminded(ConsentRequestReminded),
    /// `consent_request.granted`
    ConsentRequestGranted(ConsentRequestGranted),
    /// `consent_request.declined`
    ConsentRequestDeclined(ConsentRequestDeclined),
    /// `consent_request.expired`
    ConsentRequestExpired(ConsentRequestMoved),
    /// `notice.queued`
    NoticeQueued(NoticeQueued),
    /// `notice.retried`
    NoticeRetried(NoticeRetried),
    /// `sync.run_requested`
    SyncRunRequested(SyncRunRequested),
    /// `review.opened`
    ReviewOpened(ReviewOpened),
    /// `review.resolved`
    ReviewResolved(ReviewResolved),
    /// `auth.denied`, one refusal recorded on its own.
    AuthDenied(AuthDenied),
    /// `webhook.refused`, one refusal recorded on its own.
    WebhookRefused(WebhookRefused),
    /// `auth.denied` or `webhook.refused`: the refusals of a closed window
    /// that had no event of their own, sealed into one.
    RefusalsSealed(RefusalsSealed),
    /// `audit.exported`
    AuditExported(AuditExported),
    /// `audit.erased`
    AuditErased(AuditErased),
    /// `audit.log_key_rotated`
    AuditLogKeyRotated(AuditLogKeyRotated),
    /// `webhook_endpoint.created`, `.disabled`, `.enabled`, `.deleted`,
    /// `.secret_rotated`, `.replayed`
    WebhookEndpoint(WebhookEndpointChanged),
    /// `changes.read`
    ChangesRead(ChangesRead),
    /// `changes.exported`
    ChangesExported(ChangesExported),
}

/// What happened to a webhook endpoint.
#[derive(Debug, Clone)]
pub enum EndpointChange {
    Created {
        url: String,
        /// Empty: every type.
        event_types: Vec<String>,
    },
    /// `reason`: `operator`; `failing` when its oldest event could not be
    /// delivered for the whole retry period; `gone` when its receiver
    /// answered 410 Gone.
    Disabled {
        reason: &'static str,
    },
    Enabled,
    Deleted,
    /// The old secret still signs until `previous_secret_until`.
    SecretRotated {
        previous_secret_until: DateTime<Utc>,
    },
    /// Events after `after` queued again: `deliveries` of them.
    Replayed {
        after: String,
        deliveries: u64,
    },
}

#[derive(Debug, Clone)]
pub struct WebhookEndpointChanged {
    pub endpoint_id: Uuid,
    pub change: EndpointChange,
}

/// A page of `GET /v1/changes` that gave events.
#[derive(Debug, Clone)]
pub struct ChangesRead {
    pub after: Option<String>,
    pub next: String,
    pub events: u64,
    /// Empty: every type.
    pub types: Vec<String>,
}

/// A day's change file written (`kihon4 changes export` or the worker).
#[derive(Debug, Clone)]
pub struct ChangesExported {
    pub date: NaiveDate,
    pub events: u64,
    pub encoding: &'static str,
    /// The file's SHA-256, hex.
    pub sha256: String,
}

/// A value before and after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<T> {
    pub before: T,
    pub after: T,
}

impl<T> Change<T> {
    pub fn new(before: T, after: T) -> Self {
        Self { before, after }
    }
}

/// A notice written with the event: `{"id": …, "kind": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeRef {
    pub id: Uuid,
    pub kind: NoticeKind,
}

impl NoticeRef {
    pub fn new(id: Uuid, kind: NoticeKind) -> Self {
        Self { id, kind }
    }

    fn json(self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("kind".into(), json!(self.kind.as_str()));
        m
    }
}

#[derive(Debug, Clone)]
pub struct CustomerCreated {
    pub customer_id: Uuid,
    pub external_ref: String,
    /// Personal.
    pub email: String,
    pub locale: Locale,
    /// Personal.
    pub basic4: Option<Basic4>,
    /// Created by `kihon4 customers import` (`data.source` `import`).
    pub imported: bool,
}

/// What changed a customer, beyond the operator's `PATCH` (which has no `data.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateSource {
    /// `kihon4 customers import`.
    Import,
    /// A consent recorded from a signed document.
    Consent,
    /// A Mynaportal consent tied the record to its certificate.
    Mynaportal { consent: Uuid },
    /// Sync applied J-LIS's answer, which dates the change `reported_on`.
    Sync {
        /// The sync run the job was part of.
        run: Uuid,
        job: Uuid,
        reported_on: Option<NaiveDate>,
        /// The active consent the change rests on.
        consent: Option<Uuid>,
    },
}

/// `customer.updated`: `before` and `after` hold only the fields given here.
#[derive(Debug, Clone)]
pub struct CustomerUpdated {
    pub customer_id: Uuid,
    /// Always written.
    pub version: Change<i64>,
    /// Personal.
    pub email: Option<Change<String>>,
    pub locale: Option<Change<String>>,
    pub status: Option<Change<CustomerStatus>>,
    /// Written on both sides, `null` where the customer had none.
    pub jpki_cert_serial: Option<Change<Option<String>>>,
    /// Personal; each side only where the customer has the four items.
    pub basic4: Option<Change<Option<Basic4>>>,
    /// Personal; each side only where some optional item is present.
    pub optional: Option<Change<OptionalItems>>,
    /// `None`: the operator's `PATCH`.
    pub source: Option<UpdateSource>,
    pub notice: Option<NoticeRef>,
}

impl CustomerUpdated {
    /// A change of `version` only; the caller fills in what else changed.
    pub fn new(customer_id: Uuid, version: Change<i64>) -> Self {
        Self {
            customer_id,
            version,
            email: None,
            locale: None,
            status: None,
            jpki_cert_serial: None,
            basic4: None,
            optional: None,
            source: None,
            notice: None,
        }
    }
}

/// How a consent was given, as its `consent.granted` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantedBy {
    /// A signed consent document (`POST /v1/customers/{id}/consents`).
    Document {
        role: JpkiRole,
        text_version: String,
        text_sha256: String,
        document_sha256: String,
        /// `cms` or `pkcs1_sha256` (a raw card signature).
        evidence_form: &'static str,
        revocation_method: &'static str,
        /// The provider's verification id, in the `service_provider` role.
        verification_id: Option<String>,
    },
    /// The provider's callback for a decision taken on Mynaportal.
    Mynaportal { request: Uuid, jti: String },
}

#[derive(Debug, Clone)]
pub struct ConsentGranted {
    pub consent_id: Uuid,
    pub customer_id: Uuid,
    pub channel: Channel,
    pub cert_serial: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The active consent this one replaces.
    pub renews: Option<Uuid>,
    /// The receipt.
    pub notice: Option<NoticeRef>,
    pub by: GrantedBy,
}

#[derive(Debug, Clone)]
pub struct ConsentRenewed {
    /// The old consent.
    pub consent_id: Uuid,
    pub customer_id: Uuid,
    pub renewed_by: Uuid,
}

/// Who withdrew a consent.
#[derive(Debug, Clone)]
pub enum WithdrawnBy {
    /// The institution, on the customer's word: `reason` is its free text
    /// (personal), `notice` the confirmation.
    Institution { reason: String, notice: NoticeRef },
    /// The customer outside the institution, as sync learnt from the
    /// provider's `not_subscribed` (the reason, in clear).
    Provider {
        job: Uuid,
        notice: Option<NoticeRef>,
    },
}

#[derive(Debug, Clone)]
pub struct ConsentWithdrawn {
    pub consent_id: Uuid,
    pub customer_id: Uuid,
    pub withdrawn_at: DateTime<Utc>,
    pub by: WithdrawnBy,
}

#[derive(Debug, Clone)]
pub struct ConsentExpired {
    pub consent_id: Uuid,
    pub customer_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// A reminder or renewal request sent for a consent.
#[derive(Debug, Clone)]
pub struct ConsentNotified {
    pub consent_id: Uuid,
    pub customer_id: Uuid,
    pub notice: NoticeRef,
}

/// A registration request the worker carried out to its end.
#[derive(Debug, Clone)]
pub struct RegistrationDone {
    pub consent_id: Uuid,
    /// `None` only if the consent is gone.
    pub customer_id: Option<Uuid>,
    /// `subscribe` or `unsubscribe`.
    pub action: String,
    pub cert_serial: String,
    pub attempts: i32,
}

#[derive(Debug, Clone)]
pub struct RegistrationFailed {
    pub registration: RegistrationDone,
    /// The provider's answer.
    pub reason: String,
    /// The last segment of the provider's problem type.
    pub refusal: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RegistrationRetried {
    pub consent_id: Uuid,
    pub customer_id: Uuid,
    /// The latest request as it was.
    pub registration: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The request carried out next.
    pub retried: Uuid,
    pub action: String,
    pub cert_serial: String,
    pub run_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ConsentRequestSent {
    pub request_id: Uuid,
    pub customer_id: Uuid,
    pub provider_request_id: String,
    pub expires_at: DateTime<Utc>,
    pub notice: NoticeRef,
}

/// A consent request moved from `before` to the variant's status.
#[derive(Debug, Clone)]
pub struct ConsentRequestMoved {
    pub request_id: Uuid,
    pub customer_id: Uuid,
    pub before: String,
}

#[derive(Debug, Clone)]
pub struct ConsentRequestReminded {
    pub request_id: Uuid,
    pub customer_id: Uuid,
    /// Reminders sent, this one included.
    pub reminders: i32,
    pub notice: NoticeRef,
}

#[derive(Debug, Clone)]
pub struct ConsentRequestGranted {
    pub request_id: Uuid,
    pub customer_id: Uuid,
    pub before: String,
    pub consent_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct ConsentRequestDeclined {
    pub request_id: Uuid,
    pub customer_id: Uuid,
    pub before: String,
    pub jti: String,
}

/// Why a `certificate_revoked` notice was queued.
#[derive(Debug, Clone, Copy)]
pub enum QueuedFor {
    /// A sync job saw the certificate revoked.
    SyncJob(Uuid),
    /// The provider refused the consent's registration: revoked before it.
    Consent(Uuid),
}

#[derive(Debug, Clone)]
pub struct NoticeQueued {
    pub customer_id: Uuid,
    pub notice: NoticeRef,
    pub queued_for: QueuedFor,
}

#[derive(Debug, Clone)]
pub struct NoticeRetried {
    pub notice_id: Uuid,
    pub customer_id: Option<Uuid>,
    /// Attempts made before the retry.
    pub attempts: i32,
}

#[derive(Debug, Clone)]
pub struct SyncRunRequested {
    pub run_id: Uuid,
    /// The customer of a `customer` run.
    pub customer_id: Option<Uuid>,
    /// `api`, `schedule` or `cli`.
    pub trigger: String,
    pub scope: Scope,
    pub jobs: u64,
}

#[derive(Debug, Clone)]
pub struct ReviewOpened {
    pub review_id: Uuid,
    pub customer_id: Uuid,
    pub kind: String,
    /// As the review shows it (never the four items).
    pub detail: Value,
}

#[derive(Debug, Clone)]
pub struct ReviewResolved {
    pub review_id: Uuid,
    pub customer_id: Uuid,
    pub resolution: String,
    /// Personal: the institution's free text.
    pub note: String,
}

/// A refused authorisation, nothing from the token in it.
#[derive(Debug, Clone)]
pub struct AuthAttempt {
    /// `missing`, `expired`, `invalid` or `forbidden`.
    pub reason: &'static str,
    pub method: String,
    /// The route's pattern.
    pub route: String,
    pub required_role: &'static str,
}

#[derive(Debug, Clone)]
pub struct AuthDenied {
    pub attempt: AuthAttempt,
    /// What the refusal is counted under.
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct WebhookRefused {
    /// The problem type's slug.
    pub reason: &'static str,
    pub source: String,
}

/// Which refusals a tally counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    AuthDenied,
    WebhookRefused,
}

impl Refused {
    pub fn action(self) -> &'static str {
        match self {
            Self::AuthDenied => "auth.denied",
            Self::WebhookRefused => "webhook.refused",
        }
    }

    /// The refusals counted under the stored `action`.
    pub fn from_action(action: &str) -> Self {
        match action {
            "webhook.refused" => Self::WebhookRefused,
            _ => Self::AuthDenied,
        }
    }
}

/// The `aggregate` of a sealed window; times in RFC 3339.
#[derive(Debug, Clone)]
pub struct RefusalsSealed {
    pub refused: Refused,
    pub source: String,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    /// Refusals of the window without an event of their own.
    pub count: i64,
    pub recorded_individually: i64,
    pub first_request_id: Option<String>,
    pub last_request_id: Option<String>,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
}

/// A handout of an export (the events, the companion file or the
/// manifest): one schema whoever hands out what.
#[derive(Debug, Clone)]
pub struct AuditExported {
    pub export_id: Uuid,
    pub what: crate::audit_export::Handout,
    pub format: Format,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub count: u64,
    /// Whether this handout gives personal data in clear.
    pub include_personal_data: bool,
}

/// The log's key replaced: the statement both keys signed (a signed note,
/// docs/audit.md "Rotating the log key") names both verifier keys, the
/// largest tree the retired key signed and the first tree its successor
/// signs.
#[derive(Debug, Clone)]
pub struct AuditLogKeyRotated {
    pub retired_key_id: String,
    pub successor_key_id: String,
    pub retired_after: u64,
    pub statement: String,
}

#[derive(Debug, Clone)]
pub struct AuditErased {
    pub customer_id: Uuid,
    pub erased_values: u64,
    /// The text given with `--reason`, in clear.
    pub reason: String,
}

impl Event {
    /// The event's `action`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::CustomerCreated(_) => "customer.created",
            Self::CustomerUpdated(_) => "customer.updated",
            Self::ConsentGranted(_) => "consent.granted",
            Self::ConsentRenewed(_) => "consent.renewed",
            Self::ConsentWithdrawn(_) => "consent.withdrawn",
            Self::ConsentExpired(_) => "consent.expired",
            Self::ConsentReminded(_) => "consent.reminded",
            Self::ConsentRenewalRequested(_) => "consent.renewal_requested",
            Self::ConsentRegistered(_) => "consent.registered",
            Self::ConsentUnregistered(_) => "consent.unregistered",
            Self::ConsentRegistrationFailed(_) => "consent.registration_failed",
            Self::ConsentRegistrationRetried(_) => "consent.registration_retried",
            Self::ConsentRequestSent(_) => "consent_request.sent",
            Self::ConsentRequestStarted(_) => "consent_request.started",
            Self::ConsentRequestReminded(_) => "consent_request.reminded",
            Self::ConsentRequestGranted(_) => "consent_request.granted",
            Self::ConsentRequestDeclined(_) => "consent_request.declined",
            Self::ConsentRequestExpired(_) => "consent_request.expired",
            Self::NoticeQueued(_) => "notice.queued",
            Self::NoticeRetried(_) => "notice.retried",
            Self::SyncRunRequested(_) => "sync.run_requested",
            Self::ReviewOpened(_) => "review.opened",
            Self::ReviewResolved(_) => "review.resolved",
            Self::AuthDenied(_) => Refused::AuthDenied.action(),
            Self::WebhookRefused(_) => Refused::WebhookRefused.action(),
            Self::RefusalsSealed(s) => s.refused.action(),
            Self::AuditExported(_) => "audit.exported",
            Self::AuditErased(_) => "audit.erased",
            Self::AuditLogKeyRotated(_) => "audit.log_key_rotated",
            Self::WebhookEndpoint(w) => match w.change {
                EndpointChange::Created { .. } => "webhook_endpoint.created",
                EndpointChange::Disabled { .. } => "webhook_endpoint.disabled",
                EndpointChange::Enabled => "webhook_endpoint.enabled",
                EndpointChange::Deleted => "webhook_endpoint.deleted",
                EndpointChange::SecretRotated { .. } => "webhook_endpoint.secret_rotated",
                EndpointChange::Replayed { .. } => "webhook_endpoint.replayed",
            },
            Self::ChangesRead(_) => "changes.read",
            Self::ChangesExported(_) => "changes.exported",
        }
    }
}

/// An event about a consent, of its customer.
fn consent(action: &str, consent_id: Uuid, customer_id: Uuid) -> AuditEvent {
    AuditEvent::new(action, "consent", Some(consent_id.to_string())).with_customer(customer_id)
}

fn consent_request(action: &str, request_id: Uuid, customer_id: Uuid) -> AuditEvent {
    AuditEvent::new(action, "consent_request", Some(request_id.to_string()))
        .with_customer(customer_id)
}

fn status(status: &str) -> Value {
    json!({ "status": status })
}

/// The one serialisation of every event.
impl From<Event> for AuditEvent {
    fn from(event: Event) -> Self {
        let changes = crate::changes::drafts(&event);
        audit_event(event).with_changes(changes)
    }
}

/// The event's subject, `data` and committed personal values.
fn audit_event(event: Event) -> AuditEvent {
    {
        let action = event.action();
        match event {
            Event::CustomerCreated(c) => {
                let mut event = AuditEvent::customer(action, c.customer_id);
                let mut after = Map::new();
                after.insert("external_ref".into(), json!(c.external_ref));
                after.insert("email".into(), event.commit("after.email", &c.email));
                after.insert("locale".into(), json!(c.locale.as_str()));
                after.insert("status".into(), json!(CustomerStatus::Active.as_str()));
                after.insert("version".into(), json!(1));
                if let Some(b) = &c.basic4 {
                    after.insert(
                        "basic4".into(),
                        basic4_commitments(&mut event, "after.basic4", b),
                    );
                }
                let event = event.set("after", Value::Object(after));
                if c.imported {
                    event.set("source", json!("import"))
                } else {
                    event
                }
            }
            Event::CustomerUpdated(u) => customer_updated(action, u),
            Event::ConsentGranted(g) => {
                let mut after = Map::new();
                after.insert("purpose".into(), json!(PURPOSE));
                after.insert("channel".into(), json!(g.channel.as_str()));
                let mut verification = None;
                let mut by_mynaportal = None;
                match g.by {
                    GrantedBy::Document {
                        role,
                        text_version,
                        text_sha256,
                        document_sha256,
                        evidence_form,
                        revocation_method,
                        verification_id,
                    } => {
                        after.insert("evidence_form".into(), json!(evidence_form));
                        after.insert("role".into(), json!(role.as_str()));
                        after.insert("text_version".into(), json!(text_version));
                        after.insert("text_sha256".into(), json!(text_sha256));
                        after.insert("document_sha256".into(), json!(document_sha256));
                        after.insert("revocation_method".into(), json!(revocation_method));
                        after.insert("renews".into(), json!(g.renews));
                        verification = verification_id;
                    }
                    GrantedBy::Mynaportal { request, jti } => by_mynaportal = Some((request, jti)),
                }
                after.insert("cert_serial".into(), json!(g.cert_serial));
                after.insert("granted_at".into(), json!(g.granted_at));
                after.insert("expires_at".into(), json!(g.expires_at));
                if let Some((request, jti)) = by_mynaportal {
                    after.insert("request".into(), json!(request));
                    after.insert("jti".into(), json!(jti));
                }
                let mut event =
                    consent(action, g.consent_id, g.customer_id).set("after", Value::Object(after));
                if let Some(notice) = g.notice {
                    event = event.set("notice", Value::Object(notice.json()));
                }
                if let Some(id) = verification {
                    event = event.set("verification_id", json!(id));
                }
                event
            }
            Event::ConsentRenewed(r) => consent(action, r.consent_id, r.customer_id).set(
                "after",
                json!({ "status": "renewed", "renewed_by": r.renewed_by }),
            ),
            Event::ConsentWithdrawn(w) => {
                let mut event = consent(action, w.consent_id, w.customer_id);
                let (reason, job, notice) = match w.by {
                    WithdrawnBy::Institution { reason, notice } => {
                        (event.commit("after.reason", &reason), None, Some(notice))
                    }
                    WithdrawnBy::Provider { job, notice } => {
                        (json!("not_subscribed"), Some(job), notice)
                    }
                };
                event = event.set("before", status("active")).set(
                    "after",
                    json!({ "status": "withdrawn", "withdrawn_at": w.withdrawn_at, "reason": reason }),
                );
                if let Some(job) = job {
                    event = event.set("job", json!(job));
                }
                if let Some(notice) = notice {
                    event = event.set("notice", Value::Object(notice.json()));
                }
                event
            }
            Event::ConsentExpired(e) => consent(action, e.consent_id, e.customer_id)
                .set("before", status("active"))
                .set(
                    "after",
                    json!({"status": "expired", "expires_at": e.expires_at}),
                ),
            Event::ConsentReminded(n) | Event::ConsentRenewalRequested(n) => {
                consent(action, n.consent_id, n.customer_id)
                    .set("notice", Value::Object(n.notice.json()))
            }
            Event::ConsentRegistered(r) | Event::ConsentUnregistered(r) => registration(action, r),
            Event::ConsentRegistrationFailed(f) => registration(action, f.registration)
                .set("reason", json!(f.reason))
                .set("refusal", json!(f.refusal)),
            Event::ConsentRegistrationRetried(r) => consent(action, r.consent_id, r.customer_id)
                .set(
                    "before",
                    json!({
                        "registration": r.registration,
                        "status": r.status,
                        "attempts": r.attempts,
                        "last_error": r.last_error,
                    }),
                )
                .set(
                    "after",
                    json!({
                        "registration": r.retried,
                        "action": r.action,
                        "cert_serial": r.cert_serial,
                        "run_at": r.run_at,
                    }),
                ),
            Event::ConsentRequestSent(s) => consent_request(action, s.request_id, s.customer_id)
                .set(
                    "after",
                    json!({
                        "status": "sent",
                        "provider_request_id": s.provider_request_id,
                        "expires_at": s.expires_at,
                        "notice": Value::Object(s.notice.json()),
                    }),
                ),
            Event::ConsentRequestStarted(m) => consent_request(action, m.request_id, m.customer_id)
                .set("before", status(&m.before))
                .set("after", status("started")),
            Event::ConsentRequestReminded(r) => {
                consent_request(action, r.request_id, r.customer_id).set(
                    "after",
                    json!({
                        "reminders": r.reminders,
                        "notice": Value::Object(r.notice.json()),
                    }),
                )
            }
            Event::ConsentRequestGranted(g) => consent_request(action, g.request_id, g.customer_id)
                .set("before", status(&g.before))
                .set(
                    "after",
                    json!({"status": "granted", "consent": g.consent_id}),
                ),
            Event::ConsentRequestDeclined(d) => {
                consent_request(action, d.request_id, d.customer_id)
                    .set("before", status(&d.before))
                    .set("after", json!({"status": "declined", "jti": d.jti}))
            }
            Event::ConsentRequestExpired(m) => consent_request(action, m.request_id, m.customer_id)
                .set("before", status(&m.before))
                .set("after", status("expired")),
            Event::NoticeQueued(q) => {
                let mut notice = q.notice.json();
                match q.queued_for {
                    QueuedFor::SyncJob(job) => notice.insert("job".into(), json!(job)),
                    QueuedFor::Consent(id) => notice.insert("consent_id".into(), json!(id)),
                };
                AuditEvent::customer(action, q.customer_id).set("notice", Value::Object(notice))
            }
            Event::NoticeRetried(r) => {
                let event = AuditEvent::new(action, "notice", Some(r.notice_id.to_string()))
                    .set(
                        "before",
                        json!({"status": "failed", "attempts": r.attempts}),
                    )
                    .set("after", status("pending"));
                match r.customer_id {
                    Some(customer) => event.with_customer(customer),
                    None => event,
                }
            }
            Event::SyncRunRequested(r) => {
                let event = AuditEvent::new(action, "sync_run", Some(r.run_id.to_string())).set(
                    "after",
                    json!({"trigger": r.trigger, "scope": r.scope.as_str(), "jobs": r.jobs}),
                );
                match r.customer_id {
                    Some(customer) => event.with_customer(customer),
                    None => event,
                }
            }
            Event::ReviewOpened(o) => {
                AuditEvent::new(action, "review", Some(o.review_id.to_string()))
                    .with_customer(o.customer_id)
                    .set(
                        "after",
                        json!({"kind": o.kind, "detail": o.detail, "status": "open"}),
                    )
            }
            Event::ReviewResolved(r) => {
                let mut event = AuditEvent::new(action, "review", Some(r.review_id.to_string()))
                    .with_customer(r.customer_id);
                let note = event.commit("after.note", &r.note);
                event.set("before", status("open")).set(
                    "after",
                    json!({"status": "resolved", "resolution": r.resolution, "note": note}),
                )
            }
            Event::AuthDenied(d) => AuditEvent::new(action, "request", None)
                .set(
                    "attempt",
                    json!({
                        "reason": d.attempt.reason,
                        "method": d.attempt.method,
                        "route": d.attempt.route,
                        "required_role": d.attempt.required_role,
                    }),
                )
                .set("source", json!(d.source)),
            Event::WebhookRefused(r) => {
                AuditEvent::new(action, "webhook", Some("mynaportal".into()))
                    .set("reason", json!(r.reason))
                    .set("source", json!(r.source))
            }
            Event::RefusalsSealed(s) => {
                let subject = match s.refused {
                    Refused::WebhookRefused => ("webhook", Some("mynaportal".to_owned())),
                    Refused::AuthDenied => ("request", None),
                };
                AuditEvent::new(action, subject.0, subject.1)
                    .set("source", json!(s.source))
                    .set(
                        "aggregate",
                        json!({
                            "window_start": s.window_start,
                            "window_end": s.window_end,
                            "count": s.count,
                            "recorded_individually": s.recorded_individually,
                            "first_request_id": s.first_request_id,
                            "last_request_id": s.last_request_id,
                            "first_at": s.first_at,
                            "last_at": s.last_at,
                        }),
                    )
            }
            Event::AuditExported(e) => {
                AuditEvent::new(action, "audit", Some(e.export_id.to_string())).set(
                    "after",
                    json!({
                        "what": e.what.as_str(),
                        "export_id": e.export_id,
                        "format": e.format,
                        "from": e.from,
                        "to": e.to,
                        "first_seq": e.first_seq,
                        "last_seq": e.last_seq,
                        "count": e.count,
                        "include_personal_data": e.include_personal_data,
                    }),
                )
            }
            Event::AuditLogKeyRotated(r) => {
                AuditEvent::new(action, "audit_log_key", Some(r.successor_key_id.clone())).set(
                    "after",
                    json!({
                        "retired_key_id": r.retired_key_id,
                        "successor_key_id": r.successor_key_id,
                        "retired_after": r.retired_after,
                        "statement": r.statement,
                    }),
                )
            }
            Event::AuditErased(e) => {
                AuditEvent::new(action, "customer", Some(e.customer_id.to_string()))
                    .with_customer(e.customer_id)
                    .set(
                        "after",
                        json!({"erased_values": e.erased_values, "reason": e.reason}),
                    )
            }
            Event::WebhookEndpoint(w) => {
                let event =
                    AuditEvent::new(action, "webhook_endpoint", Some(w.endpoint_id.to_string()));
                match w.change {
                    EndpointChange::Created { url, event_types } => event.set(
                        "after",
                        json!({"url": url, "event_types": event_types, "status": "active"}),
                    ),
                    EndpointChange::Disabled { reason } => {
                        event.set("after", json!({"status": "disabled", "reason": reason}))
                    }
                    EndpointChange::Enabled => event.set("after", status("active")),
                    EndpointChange::Deleted => event,
                    EndpointChange::SecretRotated {
                        previous_secret_until,
                    } => event.set("previous_secret_until", json!(previous_secret_until)),
                    EndpointChange::Replayed { after, deliveries } => event
                        .set("after_cursor", json!(after))
                        .set("deliveries", json!(deliveries)),
                }
            }
            Event::ChangesRead(r) => AuditEvent::new(action, "changes", None)
                .set("after", json!(r.after))
                .set("next", json!(r.next))
                .set("events", json!(r.events))
                .set("types", json!(r.types)),
            Event::ChangesExported(e) => {
                AuditEvent::new(action, "changes", Some(e.date.to_string()))
                    .set("events", json!(e.events))
                    .set("encoding", json!(e.encoding))
                    .set("sha256", json!(e.sha256))
            }
        }
    }
}

fn registration(action: &str, r: RegistrationDone) -> AuditEvent {
    let event = AuditEvent::new(action, "consent", Some(r.consent_id.to_string())).set(
        "after",
        json!({ "action": r.action, "cert_serial": r.cert_serial, "attempts": r.attempts }),
    );
    match r.customer_id {
        Some(customer) => event.with_customer(customer),
        None => event,
    }
}

fn customer_updated(action: &str, u: CustomerUpdated) -> AuditEvent {
    let mut event = AuditEvent::customer(action, u.customer_id);
    let mut before = Map::new();
    let mut after = Map::new();
    if let Some(email) = &u.email {
        before.insert("email".into(), event.commit("before.email", &email.before));
        after.insert("email".into(), event.commit("after.email", &email.after));
    }
    if let Some(locale) = &u.locale {
        before.insert("locale".into(), json!(locale.before));
        after.insert("locale".into(), json!(locale.after));
    }
    if let Some(s) = u.status {
        before.insert("status".into(), json!(s.before.as_str()));
        after.insert("status".into(), json!(s.after.as_str()));
    }
    if let Some(basic4) = &u.basic4 {
        if let Some(b) = &basic4.before {
            before.insert(
                "basic4".into(),
                basic4_commitments(&mut event, "before.basic4", b),
            );
        }
        if let Some(b) = &basic4.after {
            after.insert(
                "basic4".into(),
                basic4_commitments(&mut event, "after.basic4", b),
            );
        }
    }
    if let Some(optional) = &u.optional {
        if optional.before != OptionalItems::default() {
            before.insert(
                "optional".into(),
                optional_commitments(&mut event, "before.optional", &optional.before),
            );
        }
        if optional.after != OptionalItems::default() {
            after.insert(
                "optional".into(),
                optional_commitments(&mut event, "after.optional", &optional.after),
            );
        }
    }
    if let Some(serial) = &u.jpki_cert_serial {
        before.insert("jpki_cert_serial".into(), json!(serial.before));
        after.insert("jpki_cert_serial".into(), json!(serial.after));
    }
    before.insert("version".into(), json!(u.version.before));
    after.insert("version".into(), json!(u.version.after));
    let mut event = event
        .set("before", Value::Object(before))
        .set("after", Value::Object(after));
    // Which of the committed items changed, by name, for an auditor who
    // cannot open the commitments.
    if let Some(basic4) = &u.basic4
        && let Some(new) = &basic4.after
    {
        let none = OptionalItems::default();
        let (old_optional, new_optional) = u
            .optional
            .as_ref()
            .map_or((&none, &none), |o| (&o.before, &o.after));
        let (names, _, _) =
            crate::changes::changed_items(basic4.before.as_ref(), new, old_optional, new_optional);
        event = event.set("items_changed", json!(names));
    }
    match u.source {
        None => {}
        Some(UpdateSource::Import) => event = event.set("source", json!("import")),
        Some(UpdateSource::Consent) => event = event.set("source", json!("consent")),
        Some(UpdateSource::Mynaportal { consent }) => {
            event = event
                .set("source", json!("mynaportal"))
                .set("consent", json!(consent));
        }
        Some(UpdateSource::Sync {
            run,
            job,
            reported_on,
            consent,
        }) => {
            event = event
                .set("source", json!("sync"))
                .set("reported_on", json!(reported_on))
                .set("run", json!(run))
                .set("job", json!(job));
            if let Some(consent) = consent {
                event = event.set("consent", json!(consent));
            }
        }
    }
    if let Some(notice) = u.notice {
        event = event.set("notice", Value::Object(notice.json()));
    }
    event
}

/// The optional items present as commitments; `prefix` is where they stand.
fn optional_commitments(event: &mut AuditEvent, prefix: &str, optional: &OptionalItems) -> Value {
    let mut out = Map::new();
    for (key, value) in [
        ("name_kana", optional.name_kana.clone()),
        ("former_surname", optional.former_surname.clone()),
        (
            "overseas_move_on",
            optional.overseas_move_on.map(|d| d.to_string()),
        ),
    ] {
        if let Some(value) = value {
            out.insert(
                key.to_owned(),
                event.commit(&format!("{prefix}.{key}"), &value),
            );
        }
    }
    Value::Object(out)
}

/// The four items as commitments; `prefix` is where they stand.
fn basic4_commitments(event: &mut AuditEvent, prefix: &str, b: &Basic4) -> Value {
    let mut out = Map::new();
    for (key, value) in [
        ("name", b.name.as_str().to_owned()),
        ("name_substitute_flags", b.name.flags().as_str().to_owned()),
        ("address", b.address.as_str().to_owned()),
        (
            "address_substitute_flags",
            b.address.flags().as_str().to_owned(),
        ),
        ("birth_date", b.birth_date.to_iso()),
        ("gender", b.gender.code().to_owned()),
    ] {
        out.insert(
            key.to_owned(),
            event.commit(&format!("{prefix}.{key}"), &value),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    //! The exact `data` each event had when it was built at its site, with
    //! every commitment checked against its stored value and shown as
    //! `commit:<value>`.
    use super::*;
    use crate::audit::commitment;
    use crate::domain::RawBasic4;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The event as appended: action, subject, customer, `data`.
    fn shown(event: Event) -> Value {
        let e = AuditEvent::from(event);
        let mut data = Value::Object(e.data.clone());
        for p in &e.personal {
            let mut at = &mut data;
            for part in p.field.split('.') {
                at = at.get_mut(part).unwrap_or_else(|| panic!("no {}", p.field));
            }
            let salt = hex::decode(&p.salt).unwrap();
            assert_eq!(at["commitment"], commitment(&salt, &p.value), "{}", p.field);
            *at = json!(format!("commit:{}", p.value));
        }
        let fields: Vec<&str> = e.personal.iter().map(|p| p.field.as_str()).collect();
        json!({
            "action": e.action,
            "subject": [e.subject_type, e.subject_id],
            "customer_id": e.customer_id,
            "data": data,
            "personal": fields,
        })
    }

    fn taro() -> Basic4 {
        Basic4::parse(RawBasic4 {
            name: Some("山田太郎"),
            address: Some("東京都千代田区千代田1-1"),
            birth_date: Some("1980-02-17"),
            gender: Some("1"),
            ..Default::default()
        })
        .unwrap()
    }

    fn hanako() -> Basic4 {
        Basic4::parse(RawBasic4 {
            name: Some("山田花子"),
            address: Some("大阪府大阪市北区1-1"),
            birth_date: Some("1982-03-01"),
            gender: Some("2"),
            ..Default::default()
        })
        .unwrap()
    }

    fn committed(b: &Basic4) -> Value {
        json!({
            "name": format!("commit:{}", b.name.as_str()),
            "name_substitute_flags": format!("commit:{}", b.name.flags().as_str()),
            "address": format!("commit:{}", b.address.as_str()),
            "address_substitute_flags": format!("commit:{}", b.address.flags().as_str()),
            "birth_date": format!("commit:{}", b.birth_date.to_iso()),
            "gender": format!("commit:{}", b.gender.code()),
        })
    }

    fn basic4_fields(prefix: &str) -> Vec<String> {
        [
            "name",
            "name_substitute_flags",
            "address",
            "address_substitute_flags",
            "birth_date",
            "gender",
        ]
        .iter()
        .map(|k| format!("{prefix}.{k}"))
        .collect()
    }

    #[test]
    fn customer_created_commits_the_email_and_the_four_items() {
        let b = taro();
        let event = Event::CustomerCreated(CustomerCreated {
            customer_id: id(1),
            external_ref: "C-1".into(),
            email: "taro@example.jp".into(),
            locale: Locale::Ja,
            basic4: Some(b.clone()),
            imported: true,
        });
        let mut fields = vec!["after.email".to_owned()];
        fields.extend(basic4_fields("after.basic4"));
        assert_eq!(
            shown(event),
            json!({
                "action": "customer.created",
                "subject": ["customer", id(1).to_string()],
                "customer_id": id(1),
                "data": {
                    "after": {
                        "external_ref": "C-1",
                        "email": "commit:taro@example.jp",
                        "locale": "ja",
                        "status": "active",
                        "version": 1,
                        "basic4": committed(&b),
                    },
                    "source": "import",
                },
                "personal": fields,
            })
        );
        let plain = Event::CustomerCreated(CustomerCreated {
            customer_id: id(1),
            external_ref: "C-1".into(),
            email: "taro@example.jp".into(),
            locale: Locale::En,
            basic4: None,
            imported: false,
        });
        assert_eq!(
            shown(plain)["data"],
            json!({"after": {
                "external_ref": "C-1",
                "email": "commit:taro@example.jp",
                "locale": "en",
                "status": "active",
                "version": 1,
            }})
        );
    }

    #[test]
    fn customer_updated_by_the_operator_holds_only_what_changed() {
        let mut u = CustomerUpdated::new(id(1), Change::new(3, 4));
        u.email = Some(Change::new(
            "old@example.jp".into(),
            "new@example.jp".into(),
        ));
        u.locale = Some(Change::new("ja".into(), "en".into()));
        assert_eq!(
            shown(Event::CustomerUpdated(u)),
            json!({
                "action": "customer.updated",
                "subject": ["customer", id(1).to_string()],
                "customer_id": id(1),
                "data": {
                    "before": {"email": "commit:old@example.jp", "locale": "ja", "version": 3},
                    "after": {"email": "commit:new@example.jp", "locale": "en", "version": 4},
                },
                "personal": ["before.email", "after.email"],
            })
        );
    }

    #[test]
    fn customer_updated_by_an_import_fills_in_the_four_items() {
        let b = taro();
        let mut u = CustomerUpdated::new(id(1), Change::new(1, 2));
        u.basic4 = Some(Change::new(None, Some(b.clone())));
        u.source = Some(UpdateSource::Import);
        let shown = shown(Event::CustomerUpdated(u));
        assert_eq!(
            shown["data"],
            json!({
                "before": {"version": 1},
                "after": {"basic4": committed(&b), "version": 2},
                "items_changed": ["name", "address", "birth_date", "gender"],
                "source": "import",
            })
        );
        assert_eq!(shown["personal"], json!(basic4_fields("after.basic4")));
    }

    #[test]
    fn customer_updated_by_a_consent_follows_the_certificate() {
        let (old, new) = (taro(), hanako());
        let mut u = CustomerUpdated::new(id(1), Change::new(2, 3));
        u.jpki_cert_serial = Some(Change::new(None, Some("0A1B".into())));
        u.basic4 = Some(Change::new(Some(old.clone()), Some(new.clone())));
        u.source = Some(UpdateSource::Consent);
        let shown = shown(Event::CustomerUpdated(u));
        assert_eq!(
            shown["data"],
            json!({
                "before": {"jpki_cert_serial": null, "basic4": committed(&old), "version": 2},
                "after": {"jpki_cert_serial": "0A1B", "basic4": committed(&new), "version": 3},
                "items_changed": ["name", "address", "birth_date", "gender"],
                "source": "consent",
            })
        );
        let mut fields = basic4_fields("before.basic4");
        fields.extend(basic4_fields("after.basic4"));
        assert_eq!(shown["personal"], json!(fields));

        let mut u = CustomerUpdated::new(id(1), Change::new(2, 3));
        u.jpki_cert_serial = Some(Change::new(Some("01".into()), Some("0A1B".into())));
        u.source = Some(UpdateSource::Mynaportal { consent: id(7) });
        assert_eq!(
            self::shown(Event::CustomerUpdated(u))["data"],
            json!({
                "before": {"jpki_cert_serial": "01", "version": 2},
                "after": {"jpki_cert_serial": "0A1B", "version": 3},
                "source": "mynaportal",
                "consent": id(7),
            })
        );
    }

    #[test]
    fn a_move_and_a_name_change_are_told_apart_by_name() {
        let old = taro();
        let moved = Basic4::parse(RawBasic4 {
            name: Some("山田太郎"),
            address: Some("大阪府大阪市北区1-1"),
            birth_date: Some("1980-02-17"),
            gender: Some("1"),
            ..Default::default()
        })
        .unwrap();
        let renamed = Basic4::parse(RawBasic4 {
            name: Some("佐藤太郎"),
            address: Some("東京都千代田区千代田1-1"),
            birth_date: Some("1980-02-17"),
            gender: Some("1"),
            ..Default::default()
        })
        .unwrap();
        for (new, items) in [(moved, json!(["address"])), (renamed, json!(["name"]))] {
            let mut u = CustomerUpdated::new(id(1), Change::new(2, 3));
            u.basic4 = Some(Change::new(Some(old.clone()), Some(new)));
            u.source = Some(UpdateSource::Sync {
                run: id(8),
                job: id(9),
                reported_on: None,
                consent: Some(id(7)),
            });
            let data = &shown(Event::CustomerUpdated(u))["data"];
            assert_eq!(data["items_changed"], items);
            assert_eq!(data["consent"], json!(id(7)));
            // The names only: the values stay committed.
            assert!(!data["items_changed"].to_string().contains("大阪"));
        }
    }

    #[test]
    fn customer_updated_by_sync_names_its_job_and_notice() {
        let (old, new) = (taro(), hanako());
        let before = OptionalItems {
            name_kana: Some("ヤマダ タロウ".into()),
            ..Default::default()
        };
        let after = OptionalItems {
            name_kana: Some("ヤマダ ハナコ".into()),
            former_surname: None,
            overseas_move_on: NaiveDate::from_ymd_opt(2027, 4, 1),
        };
        let mut u = CustomerUpdated::new(id(1), Change::new(2, 3));
        u.basic4 = Some(Change::new(Some(old.clone()), Some(new.clone())));
        u.optional = Some(Change::new(before, after));
        u.jpki_cert_serial = Some(Change::new(Some("01".into()), Some("02".into())));
        u.source = Some(UpdateSource::Sync {
            run: id(8),
            job: id(9),
            reported_on: NaiveDate::from_ymd_opt(2026, 5, 1),
            consent: None,
        });
        u.notice = Some(NoticeRef::new(id(5), NoticeKind::Basic4Changed));
        let shown = shown(Event::CustomerUpdated(u));
        assert_eq!(
            shown["data"],
            json!({
                "before": {
                    "basic4": committed(&old),
                    "optional": {"name_kana": "commit:ヤマダ タロウ"},
                    "jpki_cert_serial": "01",
                    "version": 2,
                },
                "after": {
                    "basic4": committed(&new),
                    "optional": {
                        "name_kana": "commit:ヤマダ ハナコ",
                        "overseas_move_on": "commit:2027-04-01",
                    },
                    "jpki_cert_serial": "02",
                    "version": 3,
                },
                "items_changed": [
                    "name", "address", "birth_date", "gender", "name_kana", "overseas_move_on",
                ],
                "source": "sync",
                "reported_on": "2026-05-01",
                "run": id(8),
                "job": id(9),
                "notice": {"id": id(5), "kind": "basic4_changed"},
            })
        );
        let mut fields = basic4_fields("before.basic4");
        fields.extend(basic4_fields("after.basic4"));
        fields.extend([
            "before.optional.name_kana".to_owned(),
            "after.optional.name_kana".to_owned(),
            "after.optional.overseas_move_on".to_owned(),
        ]);
        assert_eq!(shown["personal"], json!(fields));

        // Without optional items on either side, no `optional` at all.
        let mut u = CustomerUpdated::new(id(1), Change::new(2, 3));
        u.optional = Some(Change::new(
            OptionalItems::default(),
            OptionalItems::default(),
        ));
        u.status = Some(Change::new(
            CustomerStatus::Active,
            CustomerStatus::Deceased,
        ));
        u.source = Some(UpdateSource::Sync {
            run: id(8),
            job: id(9),
            reported_on: None,
            consent: None,
        });
        assert_eq!(
            self::shown(Event::CustomerUpdated(u))["data"],
            json!({
                "before": {"status": "active", "version": 2},
                "after": {"status": "deceased", "version": 3},
                "source": "sync",
                "reported_on": null,
                "run": id(8),
                "job": id(9),
            })
        );
    }

    #[test]
    fn consent_granted_from_a_document() {
        let granted_at = at("2026-05-01T01:02:03.000004Z");
        let expires_at = at("2036-05-01T15:00:00Z");
        let event = Event::ConsentGranted(ConsentGranted {
            consent_id: id(2),
            customer_id: id(1),
            channel: Channel::OnlineSignature,
            cert_serial: "0A1B".into(),
            granted_at,
            expires_at,
            renews: Some(id(3)),
            notice: Some(NoticeRef::new(id(5), NoticeKind::ConsentReceipt)),
            by: GrantedBy::Document {
                role: JpkiRole::ServiceProvider,
                text_version: "2026-01".into(),
                text_sha256: "ab".into(),
                document_sha256: "cd".into(),
                evidence_form: "pkcs1_sha256",
                revocation_method: "provider",
                verification_id: Some("v-1".into()),
            },
        });
        assert_eq!(
            shown(event),
            json!({
                "action": "consent.granted",
                "subject": ["consent", id(2).to_string()],
                "customer_id": id(1),
                "data": {
                    "after": {
                        "purpose": PURPOSE,
                        "channel": "online_signature",
                        "role": "service_provider",
                        "text_version": "2026-01",
                        "text_sha256": "ab",
                        "cert_serial": "0A1B",
                        "document_sha256": "cd",
                        "evidence_form": "pkcs1_sha256",
                        "revocation_method": "provider",
                        "granted_at": granted_at,
                        "expires_at": expires_at,
                        "renews": id(3),
                    },
                    "notice": {"id": id(5), "kind": "consent_receipt"},
                    "verification_id": "v-1",
                },
                "personal": [],
            })
        );
    }

    #[test]
    fn consent_granted_on_mynaportal() {
        let granted_at = at("2026-05-01T01:02:03Z");
        let expires_at = at("2036-05-01T15:00:00Z");
        let event = Event::ConsentGranted(ConsentGranted {
            consent_id: id(2),
            customer_id: id(1),
            channel: Channel::Mynaportal,
            cert_serial: "0A1B".into(),
            granted_at,
            expires_at,
            renews: Some(id(3)),
            notice: None,
            by: GrantedBy::Mynaportal {
                request: id(4),
                jti: "j-1".into(),
            },
        });
        assert_eq!(
            shown(event)["data"],
            json!({"after": {
                "purpose": PURPOSE,
                "channel": "mynaportal",
                "cert_serial": "0A1B",
                "granted_at": granted_at,
                "expires_at": expires_at,
                "request": id(4),
                "jti": "j-1",
            }})
        );
    }

    #[test]
    fn consent_renewed_withdrawn_expired() {
        assert_eq!(
            shown(Event::ConsentRenewed(ConsentRenewed {
                consent_id: id(3),
                customer_id: id(1),
                renewed_by: id(2),
            })),
            json!({
                "action": "consent.renewed",
                "subject": ["consent", id(3).to_string()],
                "customer_id": id(1),
                "data": {"after": {"status": "renewed", "renewed_by": id(2)}},
                "personal": [],
            })
        );
        let t = at("2026-05-01T01:02:03Z");
        let withdrawn = shown(Event::ConsentWithdrawn(ConsentWithdrawn {
            consent_id: id(2),
            customer_id: id(1),
            withdrawn_at: t,
            by: WithdrawnBy::Institution {
                reason: "窓口で撤回".into(),
                notice: NoticeRef::new(id(5), NoticeKind::ConsentWithdrawn),
            },
        }));
        assert_eq!(
            withdrawn["data"],
            json!({
                "before": {"status": "active"},
                "after": {"status": "withdrawn", "withdrawn_at": t, "reason": "commit:窓口で撤回"},
                "notice": {"id": id(5), "kind": "consent_withdrawn"},
            })
        );
        assert_eq!(withdrawn["personal"], json!(["after.reason"]));
        let by_provider = shown(Event::ConsentWithdrawn(ConsentWithdrawn {
            consent_id: id(2),
            customer_id: id(1),
            withdrawn_at: t,
            by: WithdrawnBy::Provider {
                job: id(9),
                notice: None,
            },
        }));
        assert_eq!(
            by_provider["data"],
            json!({
                "before": {"status": "active"},
                "after": {"status": "withdrawn", "withdrawn_at": t, "reason": "not_subscribed"},
                "job": id(9),
            })
        );
        assert_eq!(
            shown(Event::ConsentExpired(ConsentExpired {
                consent_id: id(2),
                customer_id: id(1),
                expires_at: t,
            }))["data"],
            json!({"before": {"status": "active"}, "after": {"status": "expired", "expires_at": t}})
        );
        let reminded = shown(Event::ConsentRenewalRequested(ConsentNotified {
            consent_id: id(2),
            customer_id: id(1),
            notice: NoticeRef::new(id(5), NoticeKind::ConsentRenewal),
        }));
        assert_eq!(reminded["action"], "consent.renewal_requested");
        assert_eq!(
            reminded["data"],
            json!({"notice": {"id": id(5), "kind": "consent_renewal"}})
        );
    }

    #[test]
    fn registrations_and_requests() {
        let done = RegistrationDone {
            consent_id: id(2),
            customer_id: None,
            action: "unsubscribe".into(),
            cert_serial: "0A".into(),
            attempts: 2,
        };
        assert_eq!(
            shown(Event::ConsentRegistrationFailed(RegistrationFailed {
                registration: done,
                reason: "409".into(),
                refusal: None,
            })),
            json!({
                "action": "consent.registration_failed",
                "subject": ["consent", id(2).to_string()],
                "customer_id": null,
                "data": {
                    "after": {"action": "unsubscribe", "cert_serial": "0A", "attempts": 2},
                    "reason": "409",
                    "refusal": null,
                },
                "personal": [],
            })
        );
        let t = at("2026-05-01T01:02:03Z");
        assert_eq!(
            shown(Event::ConsentRequestSent(ConsentRequestSent {
                request_id: id(4),
                customer_id: id(1),
                provider_request_id: "p-1".into(),
                expires_at: t,
                notice: NoticeRef::new(id(5), NoticeKind::ConsentRequest),
            })),
            json!({
                "action": "consent_request.sent",
                "subject": ["consent_request", id(4).to_string()],
                "customer_id": id(1),
                "data": {"after": {
                    "status": "sent",
                    "provider_request_id": "p-1",
                    "expires_at": t,
                    "notice": {"id": id(5), "kind": "consent_request"},
                }},
                "personal": [],
            })
        );
        assert_eq!(
            shown(Event::ConsentRequestGranted(ConsentRequestGranted {
                request_id: id(4),
                customer_id: id(1),
                before: "started".into(),
                consent_id: id(2),
            }))["data"],
            json!({"before": {"status": "started"}, "after": {"status": "granted", "consent": id(2)}})
        );
    }

    #[test]
    fn refusals_alone_and_sealed() {
        let denied = shown(Event::AuthDenied(AuthDenied {
            attempt: AuthAttempt {
                reason: "forbidden",
                method: "GET".into(),
                route: "/v1/customers".into(),
                required_role: "operator",
            },
            source: "user:alice".into(),
        }));
        assert_eq!(
            denied,
            json!({
                "action": "auth.denied",
                "subject": ["request", null],
                "customer_id": null,
                "data": {
                    "attempt": {
                        "reason": "forbidden",
                        "method": "GET",
                        "route": "/v1/customers",
                        "required_role": "operator",
                    },
                    "source": "user:alice",
                },
                "personal": [],
            })
        );
        let sealed = shown(Event::RefusalsSealed(RefusalsSealed {
            refused: Refused::WebhookRefused,
            source: "address:192.0.2.1".into(),
            window_start: Some("2026-05-01T00:00:00Z".into()),
            window_end: Some("2026-05-01T00:01:00Z".into()),
            count: 5,
            recorded_individually: 10,
            first_request_id: Some("r1".into()),
            last_request_id: None,
            first_at: None,
            last_at: None,
        }));
        assert_eq!(sealed["subject"], json!(["webhook", "mynaportal"]));
        assert_eq!(
            sealed["data"],
            json!({
                "source": "address:192.0.2.1",
                "aggregate": {
                    "window_start": "2026-05-01T00:00:00Z",
                    "window_end": "2026-05-01T00:01:00Z",
                    "count": 5,
                    "recorded_individually": 10,
                    "first_request_id": "r1",
                    "last_request_id": null,
                    "first_at": null,
                    "last_at": null,
                },
            })
        );
    }

    /// Every action `Event::action` names (kept by hand: the match there is exhaustive).
    const ACTIONS: &[&str] = &[
        "customer.created",
        "customer.updated",
        "consent.granted",
        "consent.renewed",
        "consent.withdrawn",
        "consent.expired",
        "consent.reminded",
        "consent.renewal_requested",
        "consent.registered",
        "consent.unregistered",
        "consent.registration_failed",
        "consent.registration_retried",
        "consent_request.sent",
        "consent_request.started",
        "consent_request.reminded",
        "consent_request.granted",
        "consent_request.declined",
        "consent_request.expired",
        "notice.queued",
        "notice.retried",
        "sync.run_requested",
        "review.opened",
        "review.resolved",
        "auth.denied",
        "webhook.refused",
        "audit.exported",
        "audit.erased",
        "audit.log_key_rotated",
        "webhook_endpoint.created",
        "webhook_endpoint.disabled",
        "webhook_endpoint.enabled",
        "webhook_endpoint.deleted",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.replayed",
        "changes.read",
        "changes.exported",
    ];

    #[test]
    fn the_catalogue_in_audit_md_names_every_action_and_no_other() {
        let doc = include_str!("../../../docs/audit.md");
        let table = doc
            .split("## What is recorded")
            .nth(1)
            .and_then(|t| t.split("\n\n").nth(1))
            .expect("the table of actions");
        let mut documented: Vec<&str> = table
            .lines()
            .skip(2)
            .filter_map(|row| row.split('|').nth(1))
            .flat_map(|cell| cell.split(',').map(|a| a.trim().trim_matches('`')))
            .collect();
        documented.sort_unstable();
        let mut actions = ACTIONS.to_vec();
        actions.sort_unstable();
        assert_eq!(documented, actions);
    }

    #[test]
    fn review_resolved_commits_the_note() {
        let resolved = shown(Event::ReviewResolved(ReviewResolved {
            review_id: id(6),
            customer_id: id(1),
            resolution: "confirmed".into(),
            note: "本人確認済み".into(),
        }));
        assert_eq!(
            resolved["data"],
            json!({
                "before": {"status": "open"},
                "after": {"status": "resolved", "resolution": "confirmed", "note": "commit:本人確認済み"},
            })
        );
        assert_eq!(resolved["personal"], json!(["after.note"]));
    }
}
