//! Sending notices: MIME messages built with lettre (multipart/alternative,
//! UTF-8 bodies, RFC 2047 subjects, the row's Message-ID, a Date in the
//! configured time zone) over SMTP, or as `.eml` files into the mail drop
//! folder on the embedded default.

use std::path::Path;
use std::time::Duration;

use std::time::Instant;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Mutex;

use super::outbox::{self, SendOutcome};
use crate::entities::outbox as rows;
use crate::error::CoreError;

/// How long one SMTP exchange may take, unless configured.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

enum Transport {
    Smtp(Box<Smtp>),
    Drop(AsyncFileTransport<Tokio1Executor>),
}

/// How the connection to the mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://host:port`: none (a relay on the same host or network).
    Plain,
    /// `smtp://host:port?tls=required`: STARTTLS, or no sending.
    StartTls,
    /// `smtp://host:port?tls=opportunistic`: STARTTLS when offered.
    StartTlsIfOffered,
    /// `smtps://host:port`: TLS from the first byte.
    Tls,
}

/// One connection to the mail server, kept open between notices and opened
/// again when it breaks. Notices are sent one at a time (each is recorded
/// before the next starts), so one connection is all a dispatcher uses.
struct Smtp {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    connection: Mutex<Option<(AsyncSmtpConnection, Instant)>>,
    timeout: Duration,
}

/// A connection idle for longer is checked with NOOP before it is used.
const IDLE_CHECK: Duration = Duration::from_secs(5);

fn parse_smtp_url(url: &str) -> Result<Smtp, String> {
    let parsed = url::Url::parse(url).map_err(|_| "KIHON4_SMTP_URL is not a URL".to_owned())?;
    let host = parsed
        .host_str()
        .ok_or("KIHON4_SMTP_URL names no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let (security, default_port) = match (parsed.scheme(), tls.as_deref()) {
        ("smtps", None) => (Security::Tls, 465),
        ("smtp", None) => (Security::Plain, 25),
        ("smtp", Some("required")) => (Security::StartTls, 587),
        ("smtp", Some("opportunistic")) => (Security::StartTlsIfOffered, 587),
        _ => {
            return Err(
                "KIHON4_SMTP_URL must be smtp://host:port, smtp://host:port?tls=required|opportunistic or smtps://user:password@host:port"
                    .into(),
            );
        }
    };
    let decode = |s: &str| {
        percent_decode(s).map_err(|_| "KIHON4_SMTP_URL has a user or password that is not UTF-8")
    };
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, password) => Some(Credentials::new(
            decode(user)?,
            decode(password.unwrap_or_default())?,
        )),
    };
    Ok(Smtp {
        host,
        port: parsed.port().unwrap_or(default_port),
        security,
        credentials,
        hello: ClientId::default(),
        connection: Mutex::new(None),
        timeout: SMTP_TIMEOUT,
    })
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| Ok(v.into_owned()))
        .unwrap_or_else(|| Ok(String::new()))
}

/// Why a send did not happen, sorted by whether trying later may help.
enum SmtpFailure {
    Transient(String),
    Permanent(String),
}

impl From<lettre::transport::smtp::Error> for SmtpFailure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        if e.is_permanent() {
            Self::Permanent(e.to_string())
        } else {
            Self::Transient(e.to_string())
        }
    }
}

impl Smtp {
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        let tls = || {
            TlsParameters::new(self.host.clone())
                .map_err(|e| SmtpFailure::Permanent(format!("TLS cannot be set up: {e}")))
        };
        let mut connection = if self.security == Security::Tls {
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(tls()?),
                None,
            )
            .await?
        } else {
            let tcp = tokio::time::timeout(
                self.timeout,
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            .map_err(|_| SmtpFailure::Transient("connecting timed out".into()))?
            .map_err(|e| SmtpFailure::Transient(format!("cannot connect: {e}")))?;
            // The message and its final dot are written separately: without
            // this, Nagle's algorithm holds the dot until the server's
            // delayed acknowledgement, some 40 ms per notice.
            tcp.set_nodelay(true)
                .map_err(|e| SmtpFailure::Transient(format!("cannot connect: {e}")))?;
            let mut connection = tokio::time::timeout(
                self.timeout,
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello),
            )
            .await
            .map_err(|_| SmtpFailure::Transient("the greeting timed out".into()))??;
            let offered = connection.can_starttls();
            match self.security {
                Security::StartTls if !offered => {
                    return Err(SmtpFailure::Transient(
                        "the server does not offer STARTTLS, which KIHON4_SMTP_URL requires".into(),
                    ));
                }
                Security::StartTls | Security::StartTlsIfOffered if offered => {
                    connection.starttls(tls()?, &self.hello).await?;
                }
                _ => {}
            }
            connection
        };
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    async fn send(&self, message: &Message) -> Result<String, SmtpFailure> {
        let mut slot = self.connection.lock().await;
        let reusable = match slot.take() {
            Some((mut c, last)) if !c.has_broken() => {
                if last.elapsed() < IDLE_CHECK || c.test_connected().await {
                    Some(c)
                } else {
                    c.abort().await;
                    None
                }
            }
            Some((mut c, _)) => {
                c.abort().await;
                None
            }
            None => None,
        };
        let mut connection = match reusable {
            Some(c) => c,
            None => self.connect().await?,
        };
        let sent = tokio::time::timeout(
            self.timeout,
            connection.send(message.envelope(), &message.formatted()),
        )
        .await;
        match sent {
            Ok(Ok(response)) => {
                *slot = Some((connection, Instant::now()));
                Ok(std::iter::once(response.code().to_string())
                    .chain(response.message().map(str::to_owned))
                    .collect::<Vec<_>>()
                    .join(" "))
            }
            Ok(Err(e)) => {
                // A refused recipient leaves the session usable; anything else may not.
                if e.is_permanent() && !connection.has_broken() {
                    let _ = connection
                        .command(lettre::transport::smtp::commands::Rset)
                        .await;
                    *slot = Some((connection, Instant::now()));
                } else {
                    connection.abort().await;
                }
                Err(e.into())
            }
            Err(_) => {
                connection.abort().await;
                Err(SmtpFailure::Transient("sending timed out".into()))
            }
        }
    }
}

/// Where notices go, and who they are from.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    timezone: chrono_tz::Tz,
    timeout: Duration,
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
        Self::with(Transport::Smtp(Box::new(parse_smtp_url(url)?)), sender)
    }

    /// How long one exchange with the server may take (default 30 s). A
    /// claimed notice's lease is five times that, and a notice is not
    /// started with less than one and a half times that left of its lease.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        if let Transport::Smtp(smtp) = &mut self.transport {
            smtp.timeout = timeout;
        }
        self
    }

    pub fn lease(&self) -> Duration {
        self.timeout * 5
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
            timeout: SMTP_TIMEOUT,
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
            Transport::Smtp(smtp) => match smtp.send(&message).await {
                Ok(answer) => SendOutcome::Sent(answer),
                Err(SmtpFailure::Permanent(why)) => SendOutcome::Permanent(why),
                Err(SmtpFailure::Transient(why)) => SendOutcome::Transient(why),
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
        let batch =
            outbox::claim(db, owner, std::cmp::min(limit - tried, 20), mailer.lease()).await?;
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
            if left < mailer.timeout + mailer.timeout / 2 {
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
