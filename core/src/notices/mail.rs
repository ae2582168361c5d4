//! Sending notices: MIME messages built with lettre (multipart/alternative,
//! UTF-8 bodies, RFC 2047 subjects, the row's Message-ID, a Date in the
//! configured time zone) over SMTP, or as `.eml` files into the mail drop
//! folder on the embedded default.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};

use super::outbox::{self, SendOutcome};
use crate::entities::outbox as rows;
use crate::error::CoreError;

/// How long one SMTP exchange may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claim holds; a notice is not started with less than
/// `SMTP_TIMEOUT` plus a margin of its lease left.
pub const LEASE: Duration = Duration::from_secs(150);
const MARGIN: Duration = Duration::from_secs(15);

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Drop(AsyncFileTransport<Tokio1Executor>),
}

/// Where notices go, and who they are from.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    timezone: chrono_tz::Tz,
}

/// The sender as the config names it.
pub struct Sender<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub reply_to: Option<&'a str>,
    pub timezone: chrono_tz::Tz,
}

fn mailbox(name: Option<&str>, address: &str) -> Result<Mailbox, String> {
    let address: Address = address
        .parse()
        .map_err(|e| format!("`{address}` is not an address lettre accepts: {e}"))?;
    Ok(Mailbox::new(name.map(str::to_owned), address))
}

impl Mailer {
    /// Over SMTP: `smtp://host:port` (no TLS, a loopback relay),
    /// `smtp://host:587?tls=required` (STARTTLS), `smtps://user:pass@host` (TLS).
    pub fn smtp(url: &str, sender: Sender<'_>) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("KIHON4_SMTP_URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(4))
            .build();
        Self::with(Transport::Smtp(transport), sender)
    }

    /// As `.eml` files into `folder` (created when missing).
    pub fn drop_folder(folder: &Path, sender: Sender<'_>) -> Result<Self, String> {
        std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        Self::with(
            Transport::Drop(AsyncFileTransport::<Tokio1Executor>::new(folder)),
            sender,
        )
    }

    fn with(transport: Transport, sender: Sender<'_>) -> Result<Self, String> {
        Ok(Self {
            transport,
            from: mailbox(Some(sender.name), sender.address)?,
            reply_to: sender.reply_to.map(|a| mailbox(None, a)).transpose()?,
            timezone: sender.timezone,
        })
    }

    /// The message for an outbox row.
    pub fn message(&self, row: &rows::Model) -> Result<Message, String> {
        let to = mailbox(None, &row.to_address)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(row.message_id.clone()));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let mut message = builder
            .multipart(MultiPart::alternative_plain_html(
                row.text_body.clone(),
                row.html_body.clone(),
            ))
            .map_err(|e| format!("the message cannot be built: {e}"))?;
        // lettre writes the Date in UTC; customers read it in their time zone.
        let date = chrono::Utc::now()
            .with_timezone(&self.timezone)
            .to_rfc2822();
        message.headers_mut().insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Date"),
            date,
        ));
        Ok(message)
    }

    /// Sends one row's message and says what became of it.
    pub async fn send(&self, row: &rows::Model) -> SendOutcome {
        let message = match self.message(row) {
            Ok(m) => m,
            Err(e) => return SendOutcome::Permanent(e),
        };
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => SendOutcome::Sent(
                    std::iter::once(response.code().to_string())
                        .chain(response.message().map(str::to_owned))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                Err(e) if e.is_permanent() => SendOutcome::Permanent(e.to_string()),
                Err(e) => SendOutcome::Transient(e.to_string()),
            },
            Transport::Drop(files) => match files.send(message).await {
                Ok(id) => SendOutcome::Sent(format!("written to the mail drop as {id}.eml")),
                Err(e) => SendOutcome::Transient(e.to_string()),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
}

/// Claims due notices in batches and sends them one at a time, recording
/// each result before the next is sent; stops when none is due or after
/// `limit` notices.
pub async fn dispatch_due(
    db: &sea_orm::DatabaseConnection,
    mailer: &Mailer,
    owner: &str,
    limit: u64,
) -> Result<Summary, CoreError> {
    let mut summary = Summary::default();
    let mut tried = 0u64;
    while tried < limit {
        let batch = outbox::claim(db, owner, std::cmp::min(limit - tried, 20), LEASE).await?;
        if batch.is_empty() {
            break;
        }
        tried += batch.len() as u64;
        let mut rows = batch.into_iter();
        while let Some(row) = rows.next() {
            let left = row
                .lease_expires_at
                .map(|until| until - chrono::Utc::now())
                .and_then(|d| d.to_std().ok())
                .unwrap_or_default();
            if left < SMTP_TIMEOUT + MARGIN {
                // Too little of the lease left to be sure no one else takes it over mid-send.
                outbox::release(db, owner, &row).await?;
                for rest in rows.by_ref() {
                    outbox::release(db, owner, &rest).await?;
                }
                break;
            }
            let outcome = mailer.send(&row).await;
            match &outcome {
                SendOutcome::Sent(_) => summary.sent += 1,
                SendOutcome::Transient(why) => {
                    tracing::warn!(notice = %row.id, attempts = row.attempts, error = %why, "a notice will be retried");
                    summary.retried += 1;
                }
                SendOutcome::Permanent(why) => {
                    tracing::error!(notice = %row.id, error = %why, "a notice failed for good");
                    summary.failed += 1;
                }
            }
            if !outbox::settle(db, owner, &row, &outcome).await? {
                tracing::warn!(notice = %row.id, "a notice's lease was lost before its result was recorded");
            }
        }
    }
    metrics::counter!("kihon4_notices_total", "outcome" => "sent").increment(summary.sent);
    metrics::counter!("kihon4_notices_total", "outcome" => "retried").increment(summary.retried);
    metrics::counter!("kihon4_notices_total", "outcome" => "failed").increment(summary.failed);
    Ok(summary)
}
