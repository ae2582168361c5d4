//! Sending notices: the messages composed when they were written (see
//! [`super::Notices::compose`]) go out over SMTP, or as `.eml` files into the
//! mail drop folder on the embedded default.

use std::path::Path;
use std::time::Duration;

use std::time::Instant;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Mutex;

use super::outbox::{self, SendOutcome};
use crate::entities::outbox as rows;
use crate::error::CoreError;

/// How long one SMTP exchange may take, unless configured.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

enum Transport {
    Smtp(Box<Smtp>),
    /// The mail drop folder.
    Drop(std::path::PathBuf),
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

/// Connections to the mail server, one per lane, kept open between notices
/// and opened again when they break.
struct Smtp {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    connections: Vec<Mutex<Option<(AsyncSmtpConnection, Instant)>>>,
    timeout: Duration,
}

/// Notices a dispatcher has in flight at once over SMTP, each on its own
/// connection. Only their envelopes and contents overlap: the final dots
/// pass through the [`Gate`] one at a time.
const LANES: usize = 2;

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
        _ if !matches!(security, Security::Tls | Security::StartTls) => {
            return Err(
                "KIHON4_SMTP_URL carries a user and password but does not require TLS: use smtps:// or ?tls=required, so that the password never travels in clear"
                    .into(),
            );
        }
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
        connections: (0..LANES).map(|_| Mutex::new(None)).collect(),
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
    /// The previous notice could not be recorded: stop sending.
    Recording(CoreError),
}

impl From<lettre::transport::smtp::Error> for SmtpFailure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        // Servers quote the address they refuse; it goes neither to the log
        // nor to the outbox's reason.
        let why = redact_addresses(&e.to_string());
        if e.is_permanent() {
            Self::Permanent(why)
        } else {
            Self::Transient(why)
        }
    }
}

/// `text` with every word that holds an `@` replaced by `<address>`.
pub fn redact_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str("<address>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '(' | ')' | ',' | ';') {
            flush(&mut word, &mut out);
            if !matches!(c, '<' | '>') {
                out.push(c);
            }
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Checks `KIHON4_SMTP_URL` as the configuration is read.
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    parse_smtp_url(url).map(|_| ())
}

/// A failure that concerns the server or kihon4's settings, not one notice:
/// it is retried, whatever the server's code.
fn not_about_the_notice(failure: SmtpFailure) -> SmtpFailure {
    match failure {
        SmtpFailure::Permanent(why) => SmtpFailure::Transient(why),
        other => other,
    }
}

impl Smtp {
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        tokio::time::timeout(self.timeout, self.connect_unbounded())
            .await
            .map_err(|_| SmtpFailure::Transient("connecting timed out".into()))?
            .map_err(not_about_the_notice)
    }

    async fn connect_unbounded(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
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

    /// One message, in the steps of `AsyncSmtpConnection::send`; its final
    /// dot is sent through the gate.
    ///
    /// Each step has its own bound. Until the final dot the message can be
    /// given up safely (the server drops a message whose dot never came);
    /// the wait at the gate is not counted against the server, but the dot
    /// is sent only with two timeouts of the lease left, so that its answer
    /// and its record come before any other dispatcher may take the notice
    /// over. A dot the server does not answer in time leaves it unknown
    /// whether the server took the message: it is retried, and may arrive
    /// twice (with the same Message-ID), which the log says.
    async fn exchange(
        connection: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        row: &rows::Model,
        gate: &Gate,
        timeout: Duration,
    ) -> Result<String, SmtpFailure> {
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{Extension, MailParameter};
        let ascii = |a: &Address| AsRef::<str>::as_ref(a).is_ascii();
        let mut parameters = Vec::new();
        if !envelope.to().iter().all(ascii) || envelope.from().is_some_and(|a| !ascii(a)) {
            if !connection
                .server_info()
                .supports_feature(Extension::SmtpUtfEight)
            {
                return Err(SmtpFailure::Permanent(
                    "the address is not ASCII and the server does not support SMTPUTF8".into(),
                ));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        let envelope_sent = async {
            // A refused sender is kihon4's settings, not this notice.
            connection
                .command(Mail::new(envelope.from().cloned(), parameters))
                .await
                .map_err(|e| not_about_the_notice(e.into()))?;
            for to in envelope.to() {
                connection.command(Rcpt::new(to.clone(), vec![])).await?;
            }
            connection.command(Data).await?;
            Ok::<_, SmtpFailure>(())
        };
        tokio::time::timeout(timeout, envelope_sent)
            .await
            .map_err(|_| SmtpFailure::Transient("sending timed out".into()))??;
        let mut passage = gate.enter().await.map_err(SmtpFailure::Recording)?;
        if lease_left(row) < timeout * 2 {
            return Err(SmtpFailure::Transient(
                "the notice's lease ran short before the final dot, which was not sent".into(),
            ));
        }
        let response = match tokio::time::timeout(timeout, connection.message(&row.message)).await {
            Ok(answer) => answer?,
            Err(_) => {
                tracing::warn!(
                    notice = %row.id,
                    "the mail server did not answer the final dot in time: the notice will be sent again and may arrive twice"
                );
                return Err(SmtpFailure::Transient(
                    "the server did not answer the final dot in time".into(),
                ));
            }
        };
        let answer = std::iter::once(response.code().to_string())
            .chain(response.message().map(str::to_owned))
            .collect::<Vec<_>>()
            .join(" ");
        passage.accepted(row, &answer);
        Ok(answer)
    }

    async fn send(
        &self,
        lane: usize,
        envelope: &Envelope,
        row: &rows::Model,
        gate: &Gate,
    ) -> Result<String, SmtpFailure> {
        let mut slot = self.connections[lane % self.connections.len()].lock().await;
        let reusable = match slot.take() {
            Some((mut c, last)) if !c.has_broken() => {
                let alive = last.elapsed() < IDLE_CHECK
                    || tokio::time::timeout(self.timeout, c.test_connected())
                        .await
                        .unwrap_or(false);
                if alive {
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
        match Self::exchange(&mut connection, envelope, row, gate, self.timeout).await {
            Ok(answer) => {
                *slot = Some((connection, Instant::now()));
                Ok(answer)
            }
            // A refused recipient leaves the session usable after RSET.
            Err(SmtpFailure::Permanent(why)) if !connection.has_broken() => {
                match connection
                    .command(lettre::transport::smtp::commands::Rset)
                    .await
                {
                    Ok(_) => *slot = Some((connection, Instant::now())),
                    Err(_) => connection.abort().await,
                }
                Err(SmtpFailure::Permanent(why))
            }
            // Dropped before its dot, the message is the server's to discard.
            Err(failure) => {
                connection.abort().await;
                Err(failure)
            }
        }
    }
}

/// Where notices go.
pub struct Mailer {
    transport: Transport,
    /// The envelope sender (`MAIL FROM`).
    from: Address,
    timeout: Duration,
}

fn address(raw: &str) -> Result<Address, String> {
    raw.parse()
        .map_err(|e| format!("`{raw}` is not an address for email: {e}"))
}

impl Mailer {
    /// Over SMTP: `smtp://host:port` (no TLS, a loopback relay),
    /// `smtp://host:587?tls=required` (STARTTLS), `smtps://user:pass@host` (TLS).
    pub fn smtp(url: &str, envelope_from: &str) -> Result<Self, String> {
        Ok(Self {
            transport: Transport::Smtp(Box::new(parse_smtp_url(url)?)),
            from: address(envelope_from)?,
            timeout: SMTP_TIMEOUT,
        })
    }

    /// As `.eml` files into `folder` (created when missing).
    pub fn drop_folder(folder: &Path, envelope_from: &str) -> Result<Self, String> {
        crate::files::create_private_dir(folder)
            .map_err(|e| format!("{}: {e}", folder.display()))?;
        Ok(Self {
            transport: Transport::Drop(folder.to_path_buf()),
            from: address(envelope_from)?,
            timeout: SMTP_TIMEOUT,
        })
    }

    /// How long connecting, or one exchange with the server, may take
    /// (default 30 s). A claimed notice's lease is five times that, and a
    /// notice is not started with less than four times that left of it.
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

    /// How many notices a dispatcher may have in flight at once.
    pub fn lanes(&self) -> usize {
        match &self.transport {
            Transport::Smtp(smtp) => smtp.connections.len(),
            Transport::Drop(_) => 1,
        }
    }

    /// Sends one row's message on `lane` and says what became of it. When
    /// the server accepts it, its record is started inside the gate.
    async fn send_on(
        &self,
        lane: usize,
        row: &rows::Model,
        gate: &Gate,
    ) -> Result<SendOutcome, CoreError> {
        let envelope = match address(&row.to_address).and_then(|to| {
            Envelope::new(Some(self.from.clone()), vec![to]).map_err(|e| e.to_string())
        }) {
            Ok(e) => e,
            Err(e) => return Ok(SendOutcome::Permanent(e)),
        };
        Ok(match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(lane, &envelope, row, gate).await {
                Ok(answer) => SendOutcome::Sent(answer),
                Err(SmtpFailure::Permanent(why)) => SendOutcome::Permanent(why),
                Err(SmtpFailure::Transient(why)) => SendOutcome::Transient(why),
                Err(SmtpFailure::Recording(e)) => return Err(e),
            },
            Transport::Drop(folder) => {
                let mut passage = gate.enter().await?;
                match drop_file(folder, &row.message).await {
                    Ok(id) => {
                        let answer = format!("written to the mail drop as {id}.eml");
                        passage.accepted(row, &answer);
                        SendOutcome::Sent(answer)
                    }
                    Err(e) => SendOutcome::Transient(e.to_string()),
                }
            }
        })
    }
}

/// Writes `message` into the mail drop as `<id>.eml`, readable by its
/// owner only (it holds personal data and single-use links): written whole
/// under a hidden name, then renamed, so a reader of `*.eml` never sees
/// half a message. Returns the id.
async fn drop_file(folder: &Path, message: &[u8]) -> std::io::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let (folder, message, name) = (folder.to_path_buf(), message.to_vec(), id.clone());
    tokio::task::spawn_blocking(move || {
        let temp = folder.join(format!(".{name}.eml.part"));
        crate::files::write_private_file(&temp, &message)?;
        std::fs::rename(&temp, folder.join(format!("{name}.eml")))
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(id)
}

/// How long `row`'s lease has to run.
fn lease_left(row: &rows::Model) -> Duration {
    row.lease_expires_at
        .map(|until| until - chrono::Utc::now())
        .and_then(|d| d.to_std().ok())
        .unwrap_or_default()
}

/// Notices claimed at a time, per lane.
const BATCH_PER_LANE: u64 = 20;

/// A notice's record being written.
type Recording = tokio::task::JoinHandle<Result<bool, CoreError>>;

/// Where a dispatcher's final dots pass one at a time. Whoever passes waits
/// first for the record of the notice accepted before, and starts the
/// record of its own as soon as the server accepts it; so at any moment at
/// most one notice has been accepted by the server and not yet recorded, and
/// a process killed at any point resends at most that one.
struct Gate {
    last: Mutex<Option<Recording>>,
    settle_db: sea_orm::DatabaseConnection,
    owner: String,
}

/// The gate, held.
struct Passage<'a> {
    last: tokio::sync::MutexGuard<'a, Option<Recording>>,
    gate: &'a Gate,
}

impl Gate {
    async fn enter(&self) -> Result<Passage<'_>, CoreError> {
        let mut last = self.last.lock().await;
        finish(&mut last).await?;
        Ok(Passage { last, gate: self })
    }

    async fn close(&self) -> Result<(), CoreError> {
        finish(&mut *self.last.lock().await).await
    }
}

impl Passage<'_> {
    /// The server took `row`: record it, in the background, before the next dot.
    fn accepted(&mut self, row: &rows::Model, answer: &str) {
        let (db, owner, row) = (
            self.gate.settle_db.clone(),
            self.gate.owner.clone(),
            row.clone(),
        );
        let outcome = SendOutcome::Sent(answer.to_owned());
        *self.last = Some(tokio::spawn(async move {
            outbox::settle(&db, &owner, &row, &outcome).await
        }));
    }
}

/// Waits for a record to be written.
async fn finish(last: &mut Option<Recording>) -> Result<(), CoreError> {
    // Awaited in place: a caller that gives up meanwhile leaves it for the next one.
    if let Some(task) = last.as_mut() {
        let result = task.await;
        *last = None;
        let done = result
            .map_err(|e| CoreError::Corrupt(format!("recording a notice panicked: {e}")))??;
        if !done {
            tracing::warn!("a notice's lease was lost before its result was recorded");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
}

/// Sends one lane's share of a batch.
async fn lane(
    db: &sea_orm::DatabaseConnection,
    mailer: &Mailer,
    gate: &Gate,
    lane: usize,
    rows: Vec<rows::Model>,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Summary, CoreError> {
    let mut summary = Summary::default();
    let mut rows = rows.into_iter();
    while let Some(row) = rows.next() {
        // Connecting and the envelope take a timeout each, and the dot
        // needs two left (see `Smtp::exchange`): with less than four left,
        // the notice is given back rather than begun.
        if lease_left(&row) < mailer.timeout * 4 || stop() {
            outbox::release(db, &gate.owner, &row).await?;
            for rest in rows.by_ref() {
                outbox::release(db, &gate.owner, &rest).await?;
            }
            break;
        }
        let outcome = mailer.send_on(lane, &row, gate).await?;
        match &outcome {
            // Its record was started in the gate.
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
        if !matches!(outcome, SendOutcome::Sent(_))
            && !outbox::settle(&gate.settle_db, &gate.owner, &row, &outcome).await?
        {
            tracing::warn!(notice = %row.id, "a notice's lease was lost before its result was recorded");
        }
    }
    Ok(summary)
}

/// Claims due notices in batches and sends them, a few at a time on their
/// own connections, their final dots one at a time through a [`Gate`]. The
/// next batch is claimed while one is sent. Stops when none is due, after
/// `limit` notices, or when `stop()` says so (the notices in flight are
/// finished and recorded; the rest are given back). `settle_db` may be a
/// relaxed pool ([`crate::db::connect_relaxed`]).
pub async fn dispatch_due(
    db: &sea_orm::DatabaseConnection,
    settle_db: &sea_orm::DatabaseConnection,
    mailer: &Mailer,
    owner: &str,
    limit: u64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Summary, CoreError> {
    let gate = Gate {
        last: Mutex::new(None),
        settle_db: settle_db.clone(),
        owner: owner.to_owned(),
    };
    let lanes = mailer.lanes();
    let batch = BATCH_PER_LANE * lanes as u64;
    let claim = |n: u64| {
        let (db, owner, lease) = (settle_db.clone(), owner.to_owned(), mailer.lease());
        tokio::spawn(async move { outbox::claim(&db, &owner, n, lease).await })
    };
    let mut summary = Summary::default();
    let mut tried = 0u64;
    let mut next = Some(claim(std::cmp::min(limit, batch)));
    let mut failure = None;
    while let Some(claiming) = next.take() {
        let rows = claiming
            .await
            .map_err(|e| CoreError::Corrupt(format!("claiming notices panicked: {e}")))??;
        if rows.is_empty() {
            break;
        }
        tried += rows.len() as u64;
        if tried < limit {
            next = Some(claim(std::cmp::min(limit - tried, batch)));
        }
        let mut shares: Vec<Vec<rows::Model>> = (0..lanes).map(|_| Vec::new()).collect();
        for (i, row) in rows.into_iter().enumerate() {
            shares[i % lanes].push(row);
        }
        let results = futures_util::future::join_all(
            shares
                .into_iter()
                .enumerate()
                .map(|(i, share)| lane(db, mailer, &gate, i, share, stop)),
        )
        .await;
        for result in results {
            match result {
                Ok(s) => {
                    summary.sent += s.sent;
                    summary.retried += s.retried;
                    summary.failed += s.failed;
                }
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_some() || stop() {
            break;
        }
    }
    gate.close().await?;
    if let Some(claiming) = next {
        // Claimed ahead and not needed: give them back.
        let unused = claiming
            .await
            .map_err(|e| CoreError::Corrupt(format!("claiming notices panicked: {e}")))??;
        for row in unused {
            outbox::release(db, owner, &row).await?;
        }
    }
    metrics::counter!("kihon4_notices_total", "outcome" => "sent").increment(summary.sent);
    metrics::counter!("kihon4_notices_total", "outcome" => "retried").increment(summary.retried);
    metrics::counter!("kihon4_notices_total", "outcome" => "failed").increment(summary.failed);
    match failure {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_of_the_smtp_url() {
        let plain = parse_smtp_url("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.security),
            ("127.0.0.1", 2525, Security::Plain)
        );
        assert!(plain.credentials.is_none());
        let relay = parse_smtp_url("smtp://mail.internal").unwrap();
        assert_eq!(relay.port, 25);
        let starttls = parse_smtp_url("smtp://user:p%40ss@mail.example.jp?tls=required").unwrap();
        assert_eq!(
            (starttls.port, starttls.security),
            (587, Security::StartTls)
        );
        assert!(starttls.credentials.is_some());
        let opportunistic =
            parse_smtp_url("smtp://mail.example.jp:2587?tls=opportunistic").unwrap();
        assert_eq!(opportunistic.security, Security::StartTlsIfOffered);
        let tls = parse_smtp_url("smtps://user:secret@mail.example.jp").unwrap();
        assert_eq!((tls.port, tls.security), (465, Security::Tls));
        let v6 = parse_smtp_url("smtp://[::1]:25").unwrap();
        assert_eq!(v6.host, "::1");
        for bad in [
            "smtp://user:secret@mail.example.jp",
            "smtp://user:secret@mail.example.jp?tls=opportunistic",
            "http://mail.example.jp",
            "smtps://mail.example.jp?tls=required",
            "smtp://mail.example.jp?tls=sometimes",
            "smtp://",
            "not a url",
        ] {
            let refused = parse_smtp_url(bad).err().unwrap_or_default();
            assert!(refused.contains("KIHON4_SMTP_URL"), "{bad}: {refused}");
        }
    }

    #[test]
    fn addresses_are_kept_out_of_reasons() {
        assert_eq!(
            redact_addresses("550 5.1.1 <nobody@example.jp>: Recipient address rejected"),
            "550 5.1.1 <address>: Recipient address rejected"
        );
        assert_eq!(
            redact_addresses("refused: taro.yamada@example.jp, try later"),
            "refused: <address>, try later"
        );
        assert_eq!(redact_addresses("connection refused"), "connection refused");
    }

    #[test]
    fn decodes_credentials() {
        assert_eq!(percent_decode("p%40ss%2Bword").unwrap(), "p@ss+word");
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
    }

    #[test]
    fn backs_off_to_an_hour() {
        assert_eq!(outbox::backoff(1), Duration::from_secs(30));
        assert_eq!(outbox::backoff(2), Duration::from_secs(60));
        assert_eq!(outbox::backoff(12), Duration::from_secs(3600));
    }
}
