//! kihon4's configuration, layered (embedded defaults, then an optional
//! TOML file, then `KIHON4_*` variables) and checked once at start-up.
//! Every wrong or missing value is reported together.
//!
//! # Adding a setting
//!
//! A setting is **one declaration** in the `settings!` table below: its
//! doc comment, its TOML key (the field name; its variable is `KIHON4_` and
//! the key in upper case), its type, its default (a string, read like any
//! other value; none for an optional setting, a list, or one whose default
//! derives from another setting), how it is read (`text`, `trimmed` or
//! `list`) and its check (a function from the text to the value or to why
//! it is refused). The table makes the field of [`Settings`], the entry of
//! [`SETTINGS`] (which refuses unknown keys and variables), the embedded
//! default and the reading. Then give it a row in the reference table of
//! `docs/operations.md` (a test compares the two) and, if a component
//! needs it, put it in that component's section below ([`Config::sync`],
//! [`Config::mynaportal`], …): sections are what the API
//! (`AppState::build`) and the worker (`WorkerSettings::from_config`)
//! consume. A check across several settings (the token keys) goes in
//! [`Config::load_from`]'s second pass. For example:
//!
//! ```text
//! /// How long a notice may wait for its server, in seconds.
//! notice_wait_seconds: Duration = "30", trimmed(|s: &str| match s.parse::<u64>() {
//!     Ok(n) if (1..=600).contains(&n) => Ok(Duration::from_secs(n)),
//!     _ => Err(format!("must be a number of seconds from 1 to 600, not `{s}`")),
//! });
//! ```
//!
//! Domain types the settings take (`JpkiRole`, `Revocation`,
//! `ValidityStart`, the JWT types) live in their own modules and are
//! re-exported here; this module depends on them, never the reverse.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use crate::auth::{DEFAULT_MAX_TOKEN_LIFETIME, JwtAlgorithm, JwtKeys, JwtSettings};
pub use crate::consent::ValidityStart;
pub use crate::domain::JpkiRole;
pub use crate::files::{create_private_dir, write_private_file};
pub use crate::jpki::revocation::Revocation;
pub use crate::provider::{CheckMethod, ProviderKind};

use crate::auth::Role;
use crate::client_address::{ProxyHeader, TrustedProxies};
use crate::domain::Email;
use crate::notices::NoticeValues;

/// One setting as declared: its TOML key, its embedded default, its doc.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    /// The embedded default, read as if it had been given; `None` when the
    /// setting is optional or its default derives from another one.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl Setting {
    /// `KIHON4_` and the key in upper case.
    pub fn variable(&self) -> String {
        variable(self.key)
    }
}

/// Declares every setting once; see the module documentation.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident: $ty:ty $(= $default:expr)?, $kind:ident($parse:expr);
    )*) => {
        /// Every setting's value as read and checked, field by field.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $($(#[doc = $doc])* pub $key: $ty,)*
        }

        /// Every setting kihon4 reads, in the order of the table.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            key: stringify!($key),
            default: settings!(@default $($default)?),
            doc: concat!($($doc, "\n"),*),
        },)*];

        /// Reading one setting: one function per setting.
        mod read {
            use super::*;
            $(pub(super) fn $key(r: &mut Reader) -> $ty {
                r.$kind(stringify!($key), $parse)
                    .unwrap_or_else(|| settings!(@fallback $parse, $($default)?))
            })*
        }

        impl Settings {
            fn read(r: &mut Reader) -> Self {
                Self { $($key: read::$key(r),)* }
            }
        }
    };
    (@default $default:expr) => { Some($default) };
    (@default) => { None };
    // A refused value falls back to the default (the configuration is
    // refused anyway); a setting without one is an Option or a list.
    (@fallback $parse:expr, $default:expr) => { check_default($parse, $default) };
    (@fallback $parse:expr,) => { Default::default() };
}

fn check_default<T>(parse: impl Fn(&str) -> Result<T, String>, default: &str) -> T {
    parse(default).unwrap_or_else(|why| panic!("the default `{default}` is refused: {why}"))
}

// Defaults shared by a setting's value and its check's message.
const DETECT_CRON: &str = "0 30 4 * * *";
// Early in the morning in Japan, after J-LIS's daily CRL; the 1st of each month.
const FULL_REFRESH_CRON: &str = "0 0 3 1 * *";

settings! {
    /// The institution's JPKI role: `platform` or `service_provider`.
    role: JpkiRole = "platform", trimmed(|s: &str| s.parse());
    /// Where the API listens (an IP address and port).
    listen: SocketAddr = "127.0.0.1:8080", trimmed(|s: &str| s
        .parse()
        .map_err(|_| format!("must be an address:port such as 0.0.0.0:8080, not `{s}`")));
    /// The database URL; a secret because it may carry a password. Unset:
    /// the embedded SQLite file in `data_dir`, which migrates itself.
    database_url: Option<SecretString>, text(|s: &str| {
        if s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Some(SecretString::from(s.to_owned())))
        } else {
            Err("must start with sqlite:, postgres:// or postgresql://".to_owned())
        }
    });
    /// The shared HS256 key (at least 32 characters).
    jwt_secret: Option<SecretString>, text(|s: &str| Ok(Some(SecretString::from(s.to_owned()))));
    /// PEM files of the token issuer's public keys (RS256, ES256).
    jwt_public_keys: Vec<PathBuf>, list(|s: &str| Ok(PathBuf::from(s)));
    /// `HS256`, `RS256` or `ES256`.
    jwt_algorithm: Option<JwtAlgorithm>, trimmed(|s: &str| s.parse().map(Some));
    /// The `iss` tokens must carry, when set.
    jwt_issuer: Option<String>, text(|s: &str| Ok(Some(s.to_owned())));
    /// The `aud` tokens must carry, when set.
    jwt_audience: Option<String>, text(|s: &str| Ok(Some(s.to_owned())));
    /// The base of the provider's gateway.
    provider_url: Option<Url>, trimmed(|s: &str| http_url(s).map(Some));
    /// The key sent to the provider.
    provider_api_key: Option<SecretString>, text(|s: &str| Ok(Some(SecretString::from(s.to_owned()))));
    /// Whose API the provider speaks: `kihon4` (kihon4's provider protocol)
    /// or `pocketsign` (PocketSign Verify API v2, service-provider role
    /// only; docs/providers.md).
    provider_kind: ProviderKind = "kihon4", trimmed(|s: &str| s.parse());
    /// `crl` or `ocsp`: how PocketSign checks revocation, and so how it
    /// bills liveness checks (CRL: once per certificate and calendar year;
    /// OCSP: every call).
    pocketsign_check_method: CheckMethod = "crl", trimmed(|s: &str| s.parse());
    /// kihon4's `client_id` at the provider.
    provider_client_id: String = "kihon4", text(|s: &str| Ok(s.to_owned()));
    /// The J-LIS CA certificates signed consents and CRLs must lead to.
    trust_anchors: Vec<PathBuf>, list(|s: &str| {
        let path = PathBuf::from(s);
        if path.exists() {
            Ok(path)
        } else {
            Err(format!("names {}, which does not exist", path.display()))
        }
    });
    /// `crl` or `ocsp`: how the platform role checks revocation.
    revocation: Revocation = "crl", trimmed(|s: &str| s.parse());
    /// The mail server notices are sent through; a secret.
    smtp_url: Option<SecretString>, text(|s: &str| match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => {
            // Its message names the variable and never repeats the URL.
            crate::notices::mail::check_smtp_url(s)?;
            Ok(Some(SecretString::from(s.to_owned())))
        }
        // The URL may carry a password: never repeat it.
        _ => Err("must be smtp://host:port or smtps://user:password@host".to_owned()),
    });
    /// Where notices are written without `smtp_url` (default `<data_dir>/mail`).
    mail_drop_dir: Option<PathBuf>, trimmed(|s: &str| Ok(Some(PathBuf::from(s))));
    /// Where customers and the provider reach kihon4 (default `http://<listen>/`).
    public_base_url: Option<Url>, trimmed(|s: &str| http_url(s).map(Some));
    /// The audit signing key (default `<data_dir>/audit-signing-key.pem`).
    audit_signing_key: Option<PathBuf>, trimmed(|s: &str| Ok(Some(PathBuf::from(s))));
    /// The origin line of the audit log's checkpoints: a schema-less URL that names this log, such as `audit.bank.example/kihon4` (default `kihon4.invalid/audit/<key id>`).
    audit_log_origin: Option<String>, trimmed(|s: &str| {
        if s.len() <= 200 && signed_note::is_key_name_valid(s) && s.chars().all(|c| c.is_ascii_graphic()) {
            Ok(Some(s.to_owned()))
        } else {
            Err("must be a schema-less URL of printable ASCII, without spaces or `+`, such as audit.bank.example/kihon4".to_owned())
        }
    });
    /// The witnesses the audit log's checkpoints are sent to (C2SP tlog-witness): `<vkey> <submission URL>` each, separated by commas.
    audit_log_witnesses: Vec<crate::audit_log::witness::WitnessEndpoint>, list(crate::audit_log::witness::parse_witness);
    /// How often the sealer adds new audit events to the log and signs a checkpoint, in milliseconds.
    audit_log_seal_interval_ms: Duration = "1000", trimmed(|s: &str| match s.parse::<u64>() {
        Ok(n) if (100..=60_000).contains(&n) => Ok(Duration::from_millis(n)),
        _ => Err(format!("must be a number of milliseconds from 100 to 60000, not `{s}`")),
    });
    /// The time zone of schedules, consent periods and notices.
    timezone: chrono_tz::Tz = "Asia/Tokyo", trimmed(|s: &str| s
        .parse::<chrono_tz::Tz>()
        .map_err(|_| format!("must be an IANA time zone such as Asia/Tokyo, not `{s}`")));
    /// The embedded default's folder.
    data_dir: PathBuf = "data", trimmed(|s: &str| Ok(PathBuf::from(s)));
    /// The sender of notices.
    mail_from: Email = "kihon4@localhost", trimmed(|s: &str| Email::parse(s).map_err(|e| format!("{e}")));
    /// The `Reply-To` of notices, when set.
    mail_reply_to: Option<Email>, trimmed(|s: &str| Email::parse(s).map(Some).map_err(|e| format!("{e}")));
    /// The institution's name, in consent texts and notices.
    institution_name: String = "kihon4", text(|s: &str| Ok(s.to_owned()));
    /// The connection pool's size, per process.
    db_max_connections: u32 = "10", trimmed(|s: &str| match s.parse::<u32>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(format!("must be a number from 1 to 1000, not `{s}`")),
    });
    /// The largest request body accepted.
    max_body_bytes: usize = "262144", trimmed(|s: &str| match s.parse::<usize>() {
        Ok(n) if (1024..=64 * 1024 * 1024).contains(&n) => Ok(n),
        _ => Err(format!("must be a number of bytes from 1024 to 67108864, not `{s}`")),
    });
    /// How long in-flight requests may run after a stop signal.
    shutdown_grace_seconds: u64 = "30", trimmed(|s: &str| match s.parse::<u64>() {
        Ok(n) if n <= 3600 => Ok(n),
        _ => Err(format!("must be a number of seconds up to 3600, not `{s}`")),
    });
    /// The first day of a consent's ten years: `next_day` or `same_day`.
    consent_validity_start: ValidityStart = "next_day", trimmed(|s: &str| s.parse());
    /// How customers reach the institution, printed in every notice.
    institution_contact: Option<String>, text(|s: &str| Ok(Some(s.to_owned())));
    /// Email templates that replace the built-in ones (every one must be there).
    email_templates_dir: Option<PathBuf>, trimmed(|s: &str| {
        let path = PathBuf::from(s);
        if path.is_dir() {
            Ok(Some(path))
        } else {
            Err(format!("names {s}, which is not a folder"))
        }
    });
    /// How long one SMTP exchange may take; a notice's lease is five times that.
    smtp_timeout_seconds: Duration = "30", trimmed(|s: &str| match s.parse::<u64>() {
        Ok(n) if (1..=600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!("must be a number of seconds from 1 to 600, not `{s}`")),
    });
    /// When the worker looks for revoked certificates (six-field cron, in `timezone`).
    sync_detect_cron: String = DETECT_CRON, trimmed(|s: &str| cron(s, DETECT_CRON));
    /// When the worker asks about every consenting customer.
    sync_full_refresh_cron: String = FULL_REFRESH_CRON, trimmed(|s: &str| cron(s, FULL_REFRESH_CRON));
    /// Days a revoked certificate may wait for its successor before a review.
    awaiting_reissue_days: i64 = "14", trimmed(|s: &str| match s.parse::<i64>() {
        Ok(n) if (1..=365).contains(&n) => Ok(n),
        _ => Err(format!("must be a number of days from 1 to 365, not `{s}`")),
    });
    /// How long a worker holds the sync jobs it claimed.
    sync_lease_seconds: Duration = "120", trimmed(|s: &str| match s.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!("must be a number of seconds from 1 to 3600, not `{s}`")),
    });
    /// The `iss` of the provider's signed callbacks; callbacks are refused
    /// until it is set.
    provider_issuer: Option<String>, text(|s: &str| Ok(Some(s.to_owned())));
    /// Days after a consent request when its reminders go out (one each).
    consent_request_reminder_days: Vec<u32> = "7", text(|raw: &str| {
        if raw.trim().is_empty() {
            return Ok(Vec::new());
        }
        let parsed: Result<Vec<u32>, _> = raw.split(',').map(|d| d.trim().parse::<u32>()).collect();
        match parsed {
            Ok(days) if days.windows(2).all(|w| w[0] < w[1]) && days.iter().all(|d| (1..=365).contains(d)) => Ok(days),
            _ => Err("must be increasing whole days from 1 to 365, separated by commas (e.g. `7,14`), or empty for none".to_owned()),
        }
    });
    /// The roles that may export personal values in clear.
    audit_pii_roles: Vec<Role> = "auditor_pii,admin", text(|raw: &str| {
        let parsed: Option<Vec<Role>> = raw.split(',').map(|r| Role::parse(r.trim())).collect();
        match parsed {
            Some(roles) if !roles.is_empty() => Ok(roles),
            _ => Err("must be roles separated by commas, from operator, auditor, auditor_pii, integration and admin".to_owned()),
        }
    });
    /// The longest a bearer token may be valid.
    auth_max_token_lifetime: Duration = "24h", trimmed(|s: &str| match duration(s) {
        Some(d) if (60..=366 * 86400).contains(&d.as_secs()) => Ok(d),
        _ => Err(format!("must be a duration from 60s to 366d such as 24h, 90m or 86400, not `{s}`")),
    });
    /// Requests per minute from one client address without a valid token.
    rate_limit_per_address: u32 = "600", trimmed(per_minute);
    /// Requests per minute under one token subject.
    rate_limit_per_subject: u32 = "6000", trimmed(per_minute);
    /// The proxies whose report of the client's address is believed.
    trusted_proxies: Vec<ipnet::IpNet>, list(TrustedProxies::parse_network);
    /// The header those proxies write.
    trusted_proxy_header: ProxyHeader = "x-forwarded-for", trimmed(|s: &str| s.parse());
    /// The window in which refused requests from one source are counted together.
    refusal_window_seconds: i64 = "60", trimmed(|s: &str| match s.parse::<i64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(n),
        _ => Err(format!("must be a number of seconds from 1 to 86400, not `{s}`")),
    });
    /// How many refusals per source and window get an audit event of their own.
    refusals_recorded_individually: u32 = "10", trimmed(|s: &str| match s.parse::<u32>() {
        Ok(n) if n <= 100_000 => Ok(n),
        _ => Err(format!("must be a number from 0 to 100000, not `{s}`")),
    });
    /// How much of the changed values a change notice shows.
    notice_values: NoticeValues = "municipality", trimmed(|s: &str| s.parse());
    /// How much of the changed values the change feed gives: `items` (which
    /// items changed) or `full` (their values before and after).
    change_feed_values: crate::changes::ValuePolicy = "items", trimmed(|s: &str| s.parse());
    /// Days change events are kept (those an endpoint has still to receive stay).
    change_feed_retention_days: i64 = "35", trimmed(|s: &str| match s.parse::<i64>() {
        Ok(n) if (1..=3650).contains(&n) => Ok(n),
        _ => Err(format!("must be a number of days from 1 to 3650, not `{s}`")),
    });
    /// The roles that may read `GET /v1/changes`.
    changes_read_roles: Vec<Role> = "integration,admin", text(|raw: &str| {
        let parsed: Option<Vec<Role>> = raw.split(',').map(|r| Role::parse(r.trim())).collect();
        match parsed {
            Some(roles) if !roles.is_empty() => Ok(roles),
            _ => Err("must be roles separated by commas, from operator, auditor, auditor_pii, integration and admin".to_owned()),
        }
    });
    /// How long one webhook request may take (Standard Webhooks recommends 15 to 30 seconds).
    webhook_timeout_seconds: Duration = "15", trimmed(|s: &str| match s.parse::<u64>() {
        Ok(n) if (1..=60).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!("must be a number of seconds from 1 to 60, not `{s}`")),
    });
    /// How long an undelivered event is retried before its endpoint is disabled.
    webhook_retry_for: Duration = "3d", trimmed(|s: &str| match duration(s) {
        Some(d) if (1..=30 * 86400).contains(&d.as_secs()) => Ok(d),
        _ => Err(format!("must be a duration from 1s to 30d such as 3d, 12h or 600, not `{s}`")),
    });
    /// The wait before a webhook's first retry, in milliseconds; each next wait doubles, up to an hour.
    webhook_retry_base_ms: Duration = "5000", trimmed(|s: &str| match s.parse::<u64>() {
        Ok(n) if (100..=600_000).contains(&n) => Ok(Duration::from_millis(n)),
        _ => Err(format!("must be a number of milliseconds from 100 to 600000, not `{s}`")),
    });
    /// Webhook requests in flight at once, per worker process.
    webhook_concurrency: usize = "16", trimmed(|s: &str| match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("must be a number from 1 to 256, not `{s}`")),
    });
    /// Where the worker writes the daily change file; none is written when unset.
    changes_file_dir: Option<PathBuf>, trimmed(|s: &str| Ok(Some(PathBuf::from(s))));
    /// When the worker writes the previous business day's change file (six-field cron, in `timezone`).
    changes_file_cron: String = CHANGES_FILE_CRON, trimmed(|s: &str| cron(s, CHANGES_FILE_CRON));
    /// The change file's encoding: `utf-8` (with a BOM) or `cp932`.
    changes_file_encoding: crate::changes::file::FileEncoding = "utf-8", trimmed(|s: &str| s.parse());
    /// Days besides Saturdays and Sundays that are not business days (`YYYY-MM-DD`, by commas).
    business_holidays: Vec<chrono::NaiveDate>, list(|s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("must be dates such as 2026-12-31, separated by commas, not `{s}`")));
}

/// The daily change file's default time: 01:30, after the day has closed.
const CHANGES_FILE_CRON: &str = "0 30 1 * * *";

fn per_minute(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number of requests per minute from 1 to 1000000, not `{s}`"
        )),
    }
}

fn cron(s: &str, example: &str) -> Result<String, String> {
    if s.split_whitespace().count() == 6 {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "must be a cron expression with six fields (seconds first), such as `{example}`, not `{s}`"
        ))
    }
}

/// A duration such as `86400`, `90s`, `30m`, `24h` or `7d`.
fn duration(s: &str) -> Option<Duration> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

fn http_url(s: &str) -> Result<Url, String> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(format!("must be an http(s) URL, not `{s}`")),
    }
}

/// Variables with the prefix that are not settings of the service itself:
/// the file's path, and those of the test and benchmark tooling.
fn is_tooling_variable(name: &str) -> bool {
    name == "KIHON4_CONFIG" || name.starts_with("KIHON4_TEST_") || name.starts_with("KIHON4_BENCH_")
}

fn is_setting(key: &str) -> bool {
    SETTINGS.iter().any(|s| s.key == key)
}

fn variable(key: &str) -> String {
    format!("KIHON4_{}", key.to_ascii_uppercase())
}

/// The configuration: every setting as declared, and the token settings
/// checked together. Components take their section ([`Config::sync`],
/// [`Config::mynaportal`], …), not single settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub jwt: JwtSettings,
}

/// What the audit commands need of the configuration.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub database_url: SecretString,
    pub database_embedded: bool,
    pub db_max_connections: u32,
    pub audit_signing_key: PathBuf,
    /// `KIHON4_AUDIT_LOG_ORIGIN`, when set.
    pub log_origin: Option<String>,
    pub data_dir: PathBuf,
}

impl AuditConfig {
    /// The signing key is made on first use only on the embedded default
    /// (no `KIHON4_DATABASE_URL`) at its default place in the data folder,
    /// as the embedded token secret is; anywhere else it is made only by
    /// `kihon4 audit init-key`.
    pub fn makes_key_on_first_use(&self) -> bool {
        self.database_embedded
            && self.audit_signing_key == self.data_dir.join("audit-signing-key.pem")
    }

    fn of(
        data_dir: PathBuf,
        database_url: Option<&SecretString>,
        db_max_connections: u32,
        audit_signing_key: Option<&PathBuf>,
        log_origin: Option<&String>,
    ) -> Self {
        Self {
            database_url: database_url.cloned().unwrap_or_else(|| {
                SecretString::from(format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("kihon4.db").display()
                ))
            }),
            database_embedded: database_url.is_none(),
            db_max_connections,
            audit_signing_key: audit_signing_key
                .cloned()
                .unwrap_or_else(|| data_dir.join("audit-signing-key.pem")),
            log_origin: log_origin.cloned(),
            data_dir,
        }
    }
}

/// Where the API listens and how it treats requests.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after a stop signal.
    pub shutdown_grace: Duration,
}

/// The provider's gateway, when configured.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub url: Url,
    pub api_key: SecretString,
    /// Whose API it speaks.
    pub kind: ProviderKind,
    /// PocketSign's revocation check method.
    pub check_method: CheckMethod,
}

/// What checking signed consents and CRLs needs: the role, the trust
/// anchors' files and how revocation is checked.
#[derive(Debug, Clone)]
pub struct TrustSettings {
    pub role: JpkiRole,
    pub anchors: Vec<PathBuf>,
    pub revocation: Revocation,
}

impl TrustSettings {
    /// The trust anchors, loaded (once per process: the API and the worker
    /// share them) in the platform role when configured; `None` otherwise.
    pub fn load(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::jpki::verify::TrustAnchors>>, String> {
        if self.role != JpkiRole::Platform || self.anchors.is_empty() {
            return Ok(None);
        }
        crate::jpki::verify::TrustAnchors::load(&self.anchors)
            .map(|a| Some(std::sync::Arc::new(a)))
            .map_err(|e| format!("KIHON4_TRUST_ANCHORS: {e}"))
    }
}

/// Mynaportal-routed consent: where its links point, and whom callbacks
/// must come from (`None` until `KIHON4_PROVIDER_ISSUER` is set).
#[derive(Debug, Clone)]
pub struct MynaportalSettings {
    pub requests: crate::consent::requests::RequestSettings,
    pub callbacks: Option<crate::consent::callbacks::CallbackSettings>,
}

/// What the notices say and who signs them.
#[derive(Debug, Clone)]
pub struct NoticeSettings {
    pub institution: crate::notices::Institution,
    pub from: Email,
    pub reply_to: Option<Email>,
    pub timezone: chrono_tz::Tz,
    pub templates_dir: Option<PathBuf>,
    pub values: NoticeValues,
}

impl NoticeSettings {
    /// The notices' templates, each rendered once: a missing or broken one is refused.
    pub fn load(&self) -> Result<crate::notices::Notices, String> {
        let sender = crate::notices::Sender {
            address: self.from.as_str(),
            reply_to: self.reply_to.as_ref().map(|e| e.as_str()),
            timezone: self.timezone,
        };
        crate::notices::Notices::load(
            self.institution.clone(),
            sender,
            self.templates_dir.as_deref(),
        )
        .map(|n| n.with_values(self.values))
    }
}

/// How notices leave: SMTP when configured, else the mail drop folder.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub smtp_url: Option<SecretString>,
    pub drop_dir: PathBuf,
    pub from: Email,
    pub timeout: Duration,
}

impl MailSettings {
    pub fn mailer(&self) -> Result<crate::notices::mail::Mailer, String> {
        use crate::notices::mail::Mailer;
        let from = self.from.as_str();
        match &self.smtp_url {
            Some(url) => Mailer::smtp(url.expose_secret(), from),
            None => Mailer::drop_folder(&self.drop_dir, from),
        }
        .map(|m| m.with_timeout(self.timeout))
        .map_err(|e| e.to_string())
    }
}

/// When the worker's scheduled runs start (six-field cron expressions).
#[derive(Debug, Clone)]
pub struct Schedules {
    pub detect_cron: String,
    pub full_refresh_cron: String,
    pub timezone: chrono_tz::Tz,
}

/// The rate limits, and whose report of a client's address is believed.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub per_address: u32,
    pub per_subject: u32,
    pub proxies: TrustedProxies,
}

/// Everything that is wrong with a configuration, in one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration is not usable:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        write!(
            f,
            "Settings come from the file given by --config and from KIHON4_* variables; see docs/operations.md."
        )
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads the configuration from an optional TOML file and the process's
    /// environment, and prepares the embedded default's data folder.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`load`](Self::load) with the variables given (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(file, env);
        let settings = Settings::read(&mut reader);
        // The second pass: what holds across settings.
        let jwt = reader.jwt(&settings);
        if settings.provider_kind == ProviderKind::PocketSign && settings.role == JpkiRole::Platform
        {
            reader.errors.push(
                "KIHON4_PROVIDER_KIND=pocketsign works only with KIHON4_ROLE=service_provider: PocketSign's Verify API verifies signatures for a service provider and offers no CA, CRL or OCSP endpoints a platform operator would need".into(),
            );
        }
        match jwt {
            Some(jwt) if reader.errors.is_empty() => Ok(Config { settings, jwt }),
            _ => Err(ConfigErrors(reader.errors)),
        }
    }

    /// Only what the audit commands need (`kihon4 audit public-key`,
    /// `init-key`, `export`, `erase`): the database and the signing key,
    /// none of the token settings.
    pub fn load_audit(file: Option<&Path>) -> Result<AuditConfig, ConfigErrors> {
        Self::load_audit_from(file, std::env::vars())
    }

    /// Like [`load_audit`](Self::load_audit) with the variables given.
    pub fn load_audit_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AuditConfig, ConfigErrors> {
        let mut r = Reader::new(file, env);
        let data_dir = read::data_dir(&mut r);
        let database_url = read::database_url(&mut r);
        let db_max_connections = read::db_max_connections(&mut r);
        let audit_signing_key = read::audit_signing_key(&mut r);
        let log_origin = read::audit_log_origin(&mut r);
        if r.errors.is_empty() {
            Ok(AuditConfig::of(
                data_dir,
                database_url.as_ref(),
                db_max_connections,
                audit_signing_key.as_ref(),
                log_origin.as_ref(),
            ))
        } else {
            Err(ConfigErrors(r.errors))
        }
    }

    /// The part of the configuration the audit commands use: the database
    /// and the signing key.
    pub fn audit(&self) -> AuditConfig {
        let s = &self.settings;
        AuditConfig::of(
            s.data_dir.clone(),
            s.database_url.as_ref(),
            s.db_max_connections,
            s.audit_signing_key.as_ref(),
            s.audit_log_origin.as_ref(),
        )
    }

    pub fn http(&self) -> HttpSettings {
        HttpSettings {
            listen: self.settings.listen,
            max_body_bytes: self.settings.max_body_bytes,
            shutdown_grace: Duration::from_secs(self.settings.shutdown_grace_seconds),
        }
    }

    /// The provider's gateway: `None` when `KIHON4_PROVIDER_URL` is unset;
    /// refused when it is set without its key.
    pub fn upstream(&self) -> Result<Option<UpstreamSettings>, String> {
        let Some(url) = &self.settings.provider_url else {
            return Ok(None);
        };
        let Some(api_key) = &self.settings.provider_api_key else {
            return Err("KIHON4_PROVIDER_URL is set but KIHON4_PROVIDER_API_KEY is not".into());
        };
        Ok(Some(UpstreamSettings {
            url: url.clone(),
            api_key: api_key.clone(),
            kind: self.settings.provider_kind,
            check_method: self.settings.pocketsign_check_method,
        }))
    }

    pub fn consent(&self) -> crate::consent::ConsentSettings {
        crate::consent::ConsentSettings {
            role: self.settings.role,
            validity_start: self.settings.consent_validity_start,
            timezone: self.settings.timezone,
        }
    }

    pub fn trust(&self) -> TrustSettings {
        TrustSettings {
            role: self.settings.role,
            anchors: self.settings.trust_anchors.clone(),
            revocation: self.settings.revocation,
        }
    }

    /// Where customers and the provider reach kihon4.
    pub fn public_base_url(&self) -> Url {
        self.settings.public_base_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://{}/", self.settings.listen))
                .expect("an address makes a URL")
        })
    }

    /// Consent requests' links (the worker's reminders use them too).
    pub fn consent_requests(&self) -> crate::consent::requests::RequestSettings {
        crate::consent::requests::RequestSettings {
            public_base_url: self.public_base_url(),
            client_id: self.settings.provider_client_id.clone(),
            timezone: self.settings.timezone,
        }
    }

    pub fn mynaportal(&self) -> MynaportalSettings {
        let s = &self.settings;
        MynaportalSettings {
            requests: self.consent_requests(),
            callbacks: s.provider_issuer.clone().map(|issuer| {
                crate::consent::callbacks::CallbackSettings {
                    issuer,
                    client_id: s.provider_client_id.clone(),
                    timezone: s.timezone,
                    role: s.role,
                }
            }),
        }
    }

    pub fn notices(&self) -> NoticeSettings {
        let s = &self.settings;
        NoticeSettings {
            institution: crate::notices::Institution {
                name: s.institution_name.clone(),
                contact: s.institution_contact.clone().unwrap_or_default(),
                reply_to: s
                    .mail_reply_to
                    .as_ref()
                    .map(|e| e.as_str().to_owned())
                    .unwrap_or_default(),
                validity_start: s.consent_validity_start,
            },
            from: s.mail_from.clone(),
            reply_to: s.mail_reply_to.clone(),
            timezone: s.timezone,
            templates_dir: s.email_templates_dir.clone(),
            values: s.notice_values,
        }
    }

    pub fn mail(&self) -> MailSettings {
        let s = &self.settings;
        MailSettings {
            smtp_url: s.smtp_url.clone(),
            drop_dir: self.mail_drop_dir(),
            from: s.mail_from.clone(),
            timeout: s.smtp_timeout_seconds,
        }
    }

    /// Where notices go without `smtp_url`.
    pub fn mail_drop_dir(&self) -> PathBuf {
        self.settings
            .mail_drop_dir
            .clone()
            .unwrap_or_else(|| self.settings.data_dir.join("mail"))
    }

    pub fn sync(&self) -> crate::sync::SyncSettings {
        crate::sync::SyncSettings {
            timezone: self.settings.timezone,
            awaiting_reissue_days: self.settings.awaiting_reissue_days,
            lease: self.settings.sync_lease_seconds,
        }
    }

    pub fn schedules(&self) -> Schedules {
        Schedules {
            detect_cron: self.settings.sync_detect_cron.clone(),
            full_refresh_cron: self.settings.sync_full_refresh_cron.clone(),
            timezone: self.settings.timezone,
        }
    }

    pub fn limits(&self) -> LimitSettings {
        LimitSettings {
            per_address: self.settings.rate_limit_per_address,
            per_subject: self.settings.rate_limit_per_subject,
            proxies: TrustedProxies {
                networks: self.settings.trusted_proxies.clone(),
                header: self.settings.trusted_proxy_header,
            },
        }
    }

    /// The change feed's deliveries.
    pub fn webhooks(&self) -> crate::changes::delivery::DeliverySettings {
        let s = &self.settings;
        crate::changes::delivery::DeliverySettings {
            timeout: s.webhook_timeout_seconds,
            retry_for: s.webhook_retry_for,
            retry_base: s.webhook_retry_base_ms,
            concurrency: s.webhook_concurrency,
            values: s.change_feed_values,
        }
    }

    /// The daily change file, when a folder is configured.
    pub fn changes_file(&self) -> Option<crate::changes::file::FileSettings> {
        let s = &self.settings;
        s.changes_file_dir
            .clone()
            .map(|dir| crate::changes::file::FileSettings {
                dir,
                cron: s.changes_file_cron.clone(),
                encoding: s.changes_file_encoding,
                holidays: s.business_holidays.clone(),
                values: s.change_feed_values,
            })
    }

    pub fn refusals(&self) -> crate::refusals::RefusalSettings {
        crate::refusals::RefusalSettings {
            window_seconds: self.settings.refusal_window_seconds,
            individually: self.settings.refusals_recorded_individually,
        }
    }

    /// The embedded default's secret for HS256 tokens: read from the data
    /// folder, created there on first start.
    fn embedded_jwt_secret(data_dir: &Path) -> Result<SecretString, String> {
        let path = data_dir.join("jwt-secret");
        if !path.exists() {
            create_private_dir(data_dir).map_err(|e| {
                format!("cannot create the data folder {}: {e}", data_dir.display())
            })?;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            // Written whole under a temporary name, then published with a
            // hard link, which fails if another process published first:
            // nobody ever reads a half-written secret, and all agree on one.
            let temp = data_dir.join(format!(".jwt-secret.{}", uuid::Uuid::new_v4()));
            write_private_file(&temp, hex::encode(bytes).as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
            let published = std::fs::hard_link(&temp, &path);
            let _ = std::fs::remove_file(&temp);
            match published {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
            }
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let secret = text.trim();
        if secret.len() < 32 {
            return Err(format!(
                "{} holds fewer than 32 characters; remove it to have a new one made",
                path.display()
            ));
        }
        Ok(SecretString::from(secret.to_owned()))
    }
}

/// The layered values (defaults, file, variables) and what is wrong so far.
struct Reader {
    values: BTreeMap<String, Value>,
    /// The settings read with a value (given or their default; not empty).
    given: BTreeSet<String>,
    errors: Vec<String>,
}

impl Reader {
    /// The settings layered (defaults, file, then variables), every unknown
    /// one reported.
    fn new(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut errors = Vec::new();
        let mut from_env = BTreeMap::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("KIHON4_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if is_setting(&key) {
                from_env.insert(key, value);
            } else if !is_tooling_variable(&name) {
                errors.push(format!("{name} is not a kihon4 setting"));
            }
        }
        let defaults: BTreeMap<&str, &str> = SETTINGS
            .iter()
            .filter_map(|s| Some((s.key, s.default?)))
            .collect();
        // The embedded defaults are the first layer.
        let mut figment = Figment::from(Serialized::defaults(&defaults));
        if let Some(path) = file {
            if path.is_file() {
                figment = figment.merge(Toml::file_exact(path));
            } else {
                errors.push(format!(
                    "the configuration file {} does not exist",
                    path.display()
                ));
            }
        }
        let figment = figment.merge(Serialized::defaults(from_env));
        let values: BTreeMap<String, Value> = match figment.extract() {
            Ok(values) => values,
            Err(e) => {
                // Only the first line: the parser quotes the offending line, which may hold a secret.
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default().to_owned();
                errors.push(format!("the configuration file cannot be read: {first}"));
                Figment::from(Serialized::defaults(&defaults))
                    .extract()
                    .expect("the defaults are strings")
            }
        };
        for key in values.keys() {
            if !is_setting(key) {
                errors.push(format!(
                    "`{key}` in the configuration file is not a kihon4 setting"
                ));
            }
        }
        Reader {
            values,
            given: BTreeSet::new(),
            errors,
        }
    }

    /// A setting's text as given.
    fn value(&mut self, key: &str) -> Option<String> {
        let text = match self.values.get(key)? {
            // Set but empty is a mistake (a template that rendered nothing), not "unset".
            Value::String(_, s) if s.trim().is_empty() => {
                self.errors
                    .push(format!("{} ({key}) is set but empty", variable(key)));
                None
            }
            Value::String(_, s) => Some(s.clone()),
            Value::Num(_, n) => match n.to_i128() {
                Some(n) => Some(n.to_string()),
                None => {
                    self.errors
                        .push(format!("{} ({key}) must be a whole number", variable(key)));
                    None
                }
            },
            Value::Bool(_, b) => Some(b.to_string()),
            _ => {
                self.errors
                    .push(format!("{} ({key}) must be a single value", variable(key)));
                None
            }
        }?;
        self.given.insert(key.to_owned());
        Some(text)
    }

    fn checked<T>(
        &mut self,
        key: &str,
        raw: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(v) => Some(v),
            Err(why) => {
                self.fail(key, why);
                None
            }
        }
    }

    /// A single value, as given.
    fn text<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let raw = self.value(key)?;
        self.checked(key, &raw, parse)
    }

    /// A single value, without surrounding spaces.
    fn trimmed<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let raw = self.value(key)?;
        self.checked(key, raw.trim(), parse)
    }

    /// A list: a TOML array of strings or a comma-separated string; each
    /// item checked, each refused one reported.
    fn list<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<Vec<T>> {
        let items: Vec<String> = match self.values.get(key) {
            None => Vec::new(),
            Some(Value::Array(_, items)) => {
                let mut out = Vec::new();
                for item in items.clone() {
                    match item.as_str() {
                        Some(s) => out.push(s.to_owned()),
                        None => self.errors.push(format!(
                            "{} ({key}) must be a list of strings",
                            variable(key)
                        )),
                    }
                }
                out
            }
            Some(_) => self
                .value(key)
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        Some(
            items
                .iter()
                .filter_map(|item| self.checked(key, item, &parse))
                .collect(),
        )
    }

    /// A refusal of `key`. A check whose message already names the
    /// variable (the SMTP URL's) is reported as it is.
    fn fail(&mut self, key: &str, why: impl fmt::Display) {
        let why = why.to_string();
        let name = variable(key);
        if why.starts_with(&name) {
            self.errors.push(why);
        } else {
            self.errors.push(format!("{name} ({key}) {why}"));
        }
    }

    /// The token settings, checked together.
    fn jwt(&mut self, s: &Settings) -> Option<JwtSettings> {
        let database_embedded = !self.given.contains("database_url");
        let keys = match (&s.jwt_secret, s.jwt_public_keys.is_empty()) {
            (Some(_), false) => {
                self.fail(
                    "jwt_secret",
                    "and KIHON4_JWT_PUBLIC_KEYS are both set: choose one",
                );
                return None;
            }
            (Some(secret), true) => {
                if secret.expose_secret().len() < 32 {
                    self.fail("jwt_secret", "must be at least 32 characters long");
                }
                JwtKeys::Secret(secret.clone())
            }
            (None, false) => {
                let mut pems = Vec::new();
                for path in &s.jwt_public_keys {
                    match std::fs::read_to_string(path) {
                        Ok(pem) if pem.contains("-----BEGIN PUBLIC KEY-----") => {
                            pems.push((path.clone(), pem))
                        }
                        Ok(_) => self.fail(
                            "jwt_public_keys",
                            format!("names {}, which is not a PEM public key", path.display()),
                        ),
                        Err(e) => {
                            self.fail("jwt_public_keys", format!("names {}: {e}", path.display()))
                        }
                    }
                }
                JwtKeys::PublicKeys(pems)
            }
            (None, true) if database_embedded => match Config::embedded_jwt_secret(&s.data_dir) {
                Ok(secret) => JwtKeys::Secret(secret),
                Err(why) => {
                    self.fail("jwt_secret", format!("is not set and {why}"));
                    return None;
                }
            },
            (None, true) => {
                self.fail(
                    "jwt_secret",
                    "or KIHON4_JWT_PUBLIC_KEYS is required when KIHON4_DATABASE_URL is set, so that every process checks tokens with the same key",
                );
                return None;
            }
        };
        let algorithm = match (&keys, s.jwt_algorithm) {
            (JwtKeys::Secret(_), None | Some(JwtAlgorithm::Hs256)) => JwtAlgorithm::Hs256,
            (JwtKeys::Secret(_), Some(other)) => {
                self.fail(
                    "jwt_algorithm",
                    format!(
                        "is {} but a shared secret is configured; use HS256",
                        other.name()
                    ),
                );
                return None;
            }
            (JwtKeys::PublicKeys(_), Some(alg @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256))) => {
                alg
            }
            (JwtKeys::PublicKeys(_), _) => {
                self.fail(
                    "jwt_algorithm",
                    "must be RS256 or ES256 when KIHON4_JWT_PUBLIC_KEYS is set",
                );
                return None;
            }
        };
        let settings = JwtSettings {
            algorithm,
            keys,
            issuer: s.jwt_issuer.clone(),
            audience: s.jwt_audience.clone(),
            max_token_lifetime: s.auth_max_token_lifetime,
        };
        if let Err(why) = crate::auth::Authenticator::new(&settings) {
            self.fail("jwt_public_keys", why);
            return None;
        }
        Some(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kihon4-config-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_provider_kind_and_pocketsigns_check_method_are_read_and_pocketsign_needs_the_service_provider_role()
     {
        let dir = temp_dir("provider-kind");
        let base = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_JWT_SECRET", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"),
                ("KIHON4_PROVIDER_URL", "http://127.0.0.1:9/"),
                ("KIHON4_PROVIDER_API_KEY", "tenant-token"),
            ];
            pairs.extend_from_slice(extra);
            Config::load_from(None, env(&pairs))
        };
        let default = base(&[]).unwrap().upstream().unwrap().unwrap();
        assert_eq!(default.kind, ProviderKind::Kihon4);
        assert_eq!(default.check_method, CheckMethod::Crl);
        let pocketsign = base(&[
            ("KIHON4_ROLE", "service_provider"),
            ("KIHON4_PROVIDER_KIND", "pocketsign"),
            ("KIHON4_POCKETSIGN_CHECK_METHOD", "ocsp"),
        ])
        .unwrap()
        .upstream()
        .unwrap()
        .unwrap();
        assert_eq!(pocketsign.kind, ProviderKind::PocketSign);
        assert_eq!(pocketsign.check_method, CheckMethod::Ocsp);
        let refused = base(&[("KIHON4_PROVIDER_KIND", "pocketsign")]).unwrap_err();
        assert!(
            refused.0.iter().any(|e| e.contains(
                "KIHON4_PROVIDER_KIND=pocketsign works only with KIHON4_ROLE=service_provider"
            )),
            "{refused}"
        );
        assert!(base(&[("KIHON4_PROVIDER_KIND", "acme")]).is_err());
        assert!(base(&[("KIHON4_POCKETSIGN_CHECK_METHOD", "both")]).is_err());
    }

    #[test]
    fn the_audit_commands_need_no_token_settings_and_make_no_key_outside_the_embedded_default() {
        let dir = temp_dir("audit");
        let data = dir.to_str().unwrap();
        let database = env(&[
            ("KIHON4_DATA_DIR", data),
            ("KIHON4_DATABASE_URL", "postgres://kihon4@db/kihon4"),
        ]);
        assert!(Config::load_from(None, database.clone()).is_err());
        let audit = Config::load_audit_from(None, database).unwrap();
        assert!(!audit.database_embedded);
        assert_eq!(audit.audit_signing_key, dir.join("audit-signing-key.pem"));
        assert!(!audit.makes_key_on_first_use());
        let embedded = Config::load_audit_from(None, env(&[("KIHON4_DATA_DIR", data)])).unwrap();
        assert!(embedded.makes_key_on_first_use());
        let elsewhere = Config::load_audit_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", data),
                ("KIHON4_AUDIT_SIGNING_KEY", "/srv/kihon4/audit.pem"),
            ]),
        )
        .unwrap();
        assert!(!elsewhere.makes_key_on_first_use());
        // Unknown variables and bad values of what it reads are still refused.
        assert!(Config::load_audit_from(None, env(&[("KIHON4_NOPE", "1")])).is_err());
        assert!(
            Config::load_audit_from(None, env(&[("KIHON4_DATABASE_URL", "mysql://x")])).is_err()
        );
        assert!(!dir.join("jwt-secret").exists());
    }

    #[test]
    fn embedded_default_needs_nothing_and_keeps_its_secret() {
        let dir = temp_dir("embedded");
        let vars = env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())]);
        let first = Config::load_from(None, vars.clone()).unwrap();
        assert!(first.audit().database_embedded);
        assert_eq!(first.jwt.algorithm, JwtAlgorithm::Hs256);
        let second = Config::load_from(None, vars).unwrap();
        let (JwtKeys::Secret(a), JwtKeys::Secret(b)) = (&first.jwt.keys, &second.jwt.keys) else {
            panic!("HS256 expected");
        };
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_eq!(first.settings.timezone, chrono_tz::Asia::Tokyo);
    }

    #[test]
    fn every_wrong_value_is_reported_at_once() {
        let errors = Config::load_from(
            None,
            env(&[
                ("KIHON4_ROLE", "bank"),
                ("KIHON4_LISTEN", "nowhere"),
                ("KIHON4_DATABASE_URL", "mysql://x"),
                ("KIHON4_TIMEZONE", "Mars/Olympus"),
                ("KIHON4_MAIL_FROM", "not-an-address"),
                ("KIHON4_SMTP_URL", "ftp://user:hunter2@host"),
                ("KIHON4_COLOUR", "blue"),
            ]),
        )
        .unwrap_err();
        let text = errors.to_string();
        for needle in [
            "KIHON4_ROLE",
            "KIHON4_LISTEN",
            "KIHON4_DATABASE_URL",
            "KIHON4_TIMEZONE",
            "KIHON4_MAIL_FROM",
            "KIHON4_SMTP_URL",
            "KIHON4_COLOUR is not a kihon4 setting",
            "KIHON4_JWT_SECRET",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(
            !text.contains("hunter2"),
            "a password was repeated:\n{text}"
        );
    }

    #[test]
    fn the_longest_token_lifetime_is_a_bounded_duration() {
        let dir = temp_dir("lifetime");
        let load = |value: Option<&str>| {
            let mut vars = vec![("KIHON4_DATA_DIR", dir.to_str().unwrap())];
            if let Some(v) = value {
                vars.push(("KIHON4_AUTH_MAX_TOKEN_LIFETIME", v));
            }
            Config::load_from(None, env(&vars))
        };
        let secs = |c: Config| c.jwt.max_token_lifetime.as_secs();
        assert_eq!(secs(load(None).unwrap()), 24 * 3600);
        assert_eq!(secs(load(Some("90m")).unwrap()), 5400);
        assert_eq!(secs(load(Some("7d")).unwrap()), 7 * 86400);
        assert_eq!(secs(load(Some("3600")).unwrap()), 3600);
        for bad in [
            "0",
            "59s",
            "367d",
            "1w",
            "-1h",
            "h",
            "99999999999999999999d",
        ] {
            let errors = load(Some(bad)).unwrap_err().to_string();
            assert!(
                errors.contains("KIHON4_AUTH_MAX_TOKEN_LIFETIME"),
                "{bad}: {errors}"
            );
        }
    }

    #[test]
    fn reminder_days_and_personal_data_roles_are_checked() {
        let dir = temp_dir("lists");
        let ok = Config::load_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_CONSENT_REQUEST_REMINDER_DAYS", "7, 14"),
                ("KIHON4_AUDIT_PII_ROLES", "auditor_pii"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.settings.consent_request_reminder_days, [7, 14]);
        assert_eq!(ok.settings.audit_pii_roles, [crate::auth::Role::AuditorPii]);
        let defaults =
            Config::load_from(None, env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert_eq!(defaults.settings.consent_request_reminder_days, [7]);
        assert_eq!(
            defaults.settings.audit_pii_roles,
            [crate::auth::Role::AuditorPii, crate::auth::Role::Admin]
        );
        let errors = Config::load_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_CONSENT_REQUEST_REMINDER_DAYS", "14,7"),
                ("KIHON4_AUDIT_PII_ROLES", "auditor,root"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("KIHON4_CONSENT_REQUEST_REMINDER_DAYS"),
            "{errors}"
        );
        assert!(errors.contains("KIHON4_AUDIT_PII_ROLES"), "{errors}");
    }

    #[test]
    fn limits_proxies_refusals_and_notice_values_are_checked() {
        let dir = temp_dir("limits");
        let ok = Config::load_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_RATE_LIMIT_PER_ADDRESS", "120"),
                ("KIHON4_RATE_LIMIT_PER_SUBJECT", "3000"),
                ("KIHON4_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7, fd00::/8"),
                ("KIHON4_TRUSTED_PROXY_HEADER", "Forwarded"),
                ("KIHON4_REFUSAL_WINDOW_SECONDS", "300"),
                ("KIHON4_REFUSALS_RECORDED_INDIVIDUALLY", "0"),
                ("KIHON4_NOTICE_VALUES", "none"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (
                ok.settings.rate_limit_per_address,
                ok.settings.rate_limit_per_subject
            ),
            (120, 3000)
        );
        assert_eq!(ok.limits().proxies.networks.len(), 3);
        assert!(ok.limits().proxies.trusts("192.0.2.7".parse().unwrap()));
        assert_eq!(
            ok.limits().proxies.header,
            crate::client_address::ProxyHeader::Forwarded
        );
        assert_eq!(ok.refusals().window_seconds, 300);
        assert_eq!(ok.refusals().individually, 0);
        assert_eq!(
            ok.settings.notice_values,
            crate::notices::NoticeValues::None
        );
        let defaults =
            Config::load_from(None, env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert_eq!(
            (
                defaults.settings.rate_limit_per_address,
                defaults.settings.rate_limit_per_subject
            ),
            (600, 6000)
        );
        assert!(defaults.limits().proxies.networks.is_empty());
        assert_eq!(
            defaults.refusals(),
            crate::refusals::RefusalSettings::default()
        );
        assert_eq!(
            defaults.settings.notice_values,
            crate::notices::NoticeValues::Municipality
        );
        let errors = Config::load_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_RATE_LIMIT_PER_ADDRESS", "0"),
                ("KIHON4_TRUSTED_PROXIES", "proxy.local"),
                ("KIHON4_TRUSTED_PROXY_HEADER", "x-real-ip"),
                ("KIHON4_REFUSAL_WINDOW_SECONDS", "0"),
                ("KIHON4_NOTICE_VALUES", "street"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for name in [
            "KIHON4_RATE_LIMIT_PER_ADDRESS",
            "KIHON4_TRUSTED_PROXIES",
            "KIHON4_TRUSTED_PROXY_HEADER",
            "KIHON4_REFUSAL_WINDOW_SECONDS",
            "KIHON4_NOTICE_VALUES",
        ] {
            assert!(errors.contains(name), "{name}: {errors}");
        }
    }

    #[test]
    fn file_is_layered_under_variables() {
        let dir = temp_dir("file");
        let file = dir.join("kihon4.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"{}\"\nlisten = \"0.0.0.0:9000\"\ninstitution_name = \"File Bank\"\ndb_max_connections = 20\n",
                dir.display()
            ),
        )
        .unwrap();
        let config =
            Config::load_from(Some(&file), env(&[("KIHON4_INSTITUTION_NAME", "Env Bank")]))
                .unwrap();
        assert_eq!(config.settings.listen.port(), 9000);
        assert_eq!(config.settings.institution_name, "Env Bank");
        assert_eq!(
            config.settings.db_max_connections, 20,
            "TOML numbers are read"
        );

        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        let errors = Config::load_from(
            Some(&file),
            env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(errors.to_string().contains("`colour`"));
        let missing = Config::load_from(Some(&dir.join("absent.toml")), Vec::new()).unwrap_err();
        assert!(missing.to_string().contains("does not exist"));
    }

    #[test]
    fn set_but_empty_is_an_error_not_a_default() {
        let dir = temp_dir("empty");
        let errors = Config::load_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_DATABASE_URL", ""),
            ]),
        )
        .unwrap_err();
        assert!(
            errors
                .to_string()
                .contains("KIHON4_DATABASE_URL (database_url) is set but empty")
        );
    }

    #[test]
    fn toml_syntax_errors_do_not_quote_the_file() {
        let dir = temp_dir("syntax");
        let file = dir.join("kihon4.toml");
        std::fs::write(
            &file,
            "jwt_secret = \"hunter2-hunter2-hunter2-hunter2-hunter2\" oops\n",
        )
        .unwrap();
        let errors = Config::load_from(Some(&file), Vec::new()).unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("cannot be read"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_short_embedded_secret_is_refused() {
        let dir = temp_dir("short");
        std::fs::write(dir.join("jwt-secret"), "short").unwrap();
        let errors = Config::load_from(None, env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())]))
            .unwrap_err();
        assert!(errors.to_string().contains("fewer than 32 characters"));
    }

    #[test]
    fn secrets_never_print_themselves() {
        let dir = temp_dir("secret");
        let config = Config::load_from(
            None,
            env(&[
                ("KIHON4_DATA_DIR", dir.to_str().unwrap()),
                ("KIHON4_JWT_SECRET", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"),
                ("KIHON4_PROVIDER_API_KEY", "provider-key-123"),
                ("KIHON4_SMTP_URL", "smtps://user:hunter2@mail.example.jp"),
                ("KIHON4_DATABASE_URL", "postgres://kihon4:dbpass@db/kihon4"),
            ]),
        )
        .unwrap();
        let shown = format!("{config:?}");
        for secret in ["s3cr3t", "provider-key-123", "hunter2", "dbpass"] {
            assert!(!shown.contains(secret), "{secret} printed");
        }
    }

    /// The rows of the reference table of docs/operations.md: (key, variable, default).
    fn documented() -> Vec<(String, String, String)> {
        let text = include_str!("../../docs/operations.md");
        let start = text.find("### Reference").expect("a reference section");
        text[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
                let key = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
                let var = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((key.to_owned(), var.to_owned(), cells.get(2)?.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_operations_guide_documents_every_setting_as_declared() {
        let rows = documented();
        let mut documented: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let mut declared: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        documented.sort_unstable();
        declared.sort_unstable();
        assert_eq!(
            documented, declared,
            "docs/operations.md's table and SETTINGS"
        );
        for setting in SETTINGS {
            let (_, var, default) = rows.iter().find(|r| r.0 == setting.key).unwrap();
            assert_eq!(*var, setting.variable(), "{}", setting.key);
            assert!(!setting.doc.trim().is_empty(), "{} has no doc", setting.key);
            if let Some(value) = setting.default {
                assert!(
                    default.contains(&format!("`{value}`")),
                    "{}: the guide's default `{default}` does not name `{value}`",
                    setting.key
                );
            }
        }
    }

    #[test]
    fn the_components_defaults_are_the_declared_ones() {
        let dir = temp_dir("defaults");
        let config =
            Config::load_from(None, env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert_eq!(config.jwt.max_token_lifetime, DEFAULT_MAX_TOKEN_LIFETIME);
        let (sync, default) = (config.sync(), crate::sync::SyncSettings::default());
        assert_eq!(
            (sync.timezone, sync.awaiting_reissue_days, sync.lease),
            (
                default.timezone,
                default.awaiting_reissue_days,
                default.lease
            )
        );
        assert_eq!(config.limits().proxies, TrustedProxies::default());
        assert_eq!(
            config.settings.consent_validity_start,
            ValidityStart::default()
        );
        assert_eq!(config.mail_drop_dir(), dir.join("mail"));
        assert_eq!(config.public_base_url().as_str(), "http://127.0.0.1:8080/");
        assert!(matches!(config.trust().load(), Ok(None)));
    }
}
