//! kihon4's configuration: one struct, layered (embedded defaults, then an
//! optional TOML file, then `KIHON4_*` variables), validated once at
//! start-up. Every wrong or missing value is reported together.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::Email;

/// Every setting kihon4 reads: the TOML key; its variable is `KIHON4_` + the
/// key in upper case.
pub const SETTINGS: &[&str] = &[
    "role",
    "listen",
    "database_url",
    "jwt_secret",
    "jwt_public_keys",
    "jwt_algorithm",
    "jwt_issuer",
    "jwt_audience",
    "provider_url",
    "provider_api_key",
    "provider_client_id",
    "trust_anchors",
    "revocation",
    "smtp_url",
    "mail_drop_dir",
    "public_base_url",
    "audit_signing_key",
    "timezone",
    "data_dir",
    "mail_from",
    "mail_reply_to",
    "institution_name",
    "db_max_connections",
    "max_body_bytes",
    "shutdown_grace_seconds",
    "consent_validity_start",
    "institution_contact",
    "email_templates_dir",
    "smtp_timeout_seconds",
    "sync_detect_cron",
    "sync_full_refresh_cron",
    "awaiting_reissue_days",
    "sync_lease_seconds",
    "provider_issuer",
    "consent_request_reminder_days",
    "audit_pii_roles",
    "auth_max_token_lifetime",
    "rate_limit_per_address",
    "rate_limit_per_subject",
    "trusted_proxies",
    "trusted_proxy_header",
    "refusal_window_seconds",
    "refusals_recorded_individually",
    "notice_values",
];

/// Variables with the prefix that are not settings of the service itself:
/// the file's path, and those of the test and benchmark tooling.
fn is_tooling_variable(name: &str) -> bool {
    name == "KIHON4_CONFIG" || name.starts_with("KIHON4_TEST_") || name.starts_with("KIHON4_BENCH_")
}

pub use crate::auth::{DEFAULT_MAX_TOKEN_LIFETIME, JwtAlgorithm, JwtKeys, JwtSettings};
pub use crate::consent::ValidityStart;
pub use crate::domain::JpkiRole;
pub use crate::files::{create_private_dir, write_private_file};
pub use crate::jpki::revocation::Revocation;

/// A duration such as `86400`, `90s`, `30m`, `24h` or `7d`.
fn duration(s: &str) -> Option<std::time::Duration> {
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
    Some(std::time::Duration::from_secs(seconds))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub role: JpkiRole,
    pub listen: SocketAddr,
    /// The database URL; a secret because it may carry a password.
    pub database_url: SecretString,
    /// True when no database was configured: the embedded SQLite file, which
    /// migrates itself.
    pub database_embedded: bool,
    pub db_max_connections: u32,
    pub jwt: JwtSettings,
    pub provider_url: Option<Url>,
    pub provider_api_key: Option<SecretString>,
    pub provider_client_id: String,
    /// The `iss` of the provider's signed callbacks; callbacks are refused
    /// until it is set.
    pub provider_issuer: Option<String>,
    /// Days after a consent request when its reminders go out (one each).
    pub consent_request_reminder_days: Vec<u32>,
    /// The roles that may export personal values in clear.
    pub audit_pii_roles: Vec<crate::auth::Role>,
    pub trust_anchors: Vec<PathBuf>,
    pub revocation: Revocation,
    pub smtp_url: Option<SecretString>,
    pub mail_drop_dir: PathBuf,
    pub public_base_url: Url,
    pub audit_signing_key: PathBuf,
    pub timezone: chrono_tz::Tz,
    pub data_dir: PathBuf,
    pub mail_from: Email,
    pub mail_reply_to: Option<Email>,
    pub institution_name: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_seconds: u64,
    pub consent_validity_start: ValidityStart,
    /// How customers reach the institution, printed in every notice.
    pub institution_contact: Option<String>,
    /// Email templates that replace the built-in ones (every one must be there).
    pub email_templates_dir: Option<PathBuf>,
    /// How long one SMTP exchange may take; a notice's lease is five times that.
    pub smtp_timeout: std::time::Duration,
    /// When the worker looks for revoked certificates (six-field cron, in `timezone`).
    pub sync_detect_cron: String,
    /// When the worker asks about every consenting customer.
    pub sync_full_refresh_cron: String,
    /// Days a revoked certificate may wait for its successor before a review.
    pub awaiting_reissue_days: i64,
    /// How long a worker holds the sync jobs it claimed.
    pub sync_lease: std::time::Duration,
    /// Requests per minute from one client address without a valid token.
    pub rate_limit_per_address: u32,
    /// Requests per minute under one token subject.
    pub rate_limit_per_subject: u32,
    /// The proxies whose report of the client's address is believed.
    pub trusted_proxies: crate::client_address::TrustedProxies,
    /// How refused requests are counted in the audit trail.
    pub refusals: crate::refusals::RefusalSettings,
    /// How much of the changed values a change notice shows.
    pub notice_values: crate::notices::NoticeValues,
}

/// What the audit commands need of the configuration.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub database_url: SecretString,
    pub database_embedded: bool,
    pub db_max_connections: u32,
    pub audit_signing_key: PathBuf,
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

fn variable(key: &str) -> String {
    format!("KIHON4_{}", key.to_ascii_uppercase())
}

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
        let mut reader = Self::reader(file, env);
        let config = reader.build();
        match config {
            Some(config) if reader.errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(reader.errors)),
        }
    }

    /// The settings layered (file, then variables), every unknown one
    /// reported.
    fn reader(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Reader {
        let mut errors = Vec::new();
        let mut from_env = BTreeMap::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("KIHON4_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if SETTINGS.contains(&key.as_str()) {
                from_env.insert(key, value);
            } else if !is_tooling_variable(&name) {
                errors.push(format!("{name} is not a kihon4 setting"));
            }
        }
        let mut figment = Figment::new();
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
                BTreeMap::new()
            }
        };
        for key in values.keys() {
            if !SETTINGS.contains(&key.as_str()) {
                errors.push(format!(
                    "`{key}` in the configuration file is not a kihon4 setting"
                ));
            }
        }
        Reader { values, errors }
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
        let mut reader = Self::reader(file, env);
        let config = reader.build_audit();
        if reader.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(reader.errors))
        }
    }

    /// The part of the configuration the audit commands use.
    pub fn audit(&self) -> AuditConfig {
        AuditConfig {
            database_url: self.database_url.clone(),
            database_embedded: self.database_embedded,
            db_max_connections: self.db_max_connections,
            audit_signing_key: self.audit_signing_key.clone(),
            data_dir: self.data_dir.clone(),
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

struct Reader {
    values: BTreeMap<String, Value>,
    errors: Vec<String>,
}

impl Reader {
    fn text(&mut self, key: &str) -> Option<String> {
        match self.values.get(key)? {
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
        }
    }

    /// A list: a TOML array of strings or a comma-separated string.
    fn list(&mut self, key: &str) -> Vec<String> {
        match self.values.get(key) {
            None => Vec::new(),
            Some(Value::Array(_, items)) => {
                let mut out = Vec::new();
                for item in items {
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
                .text(key)
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.text(key) {
            None => default,
            Some(raw) => match parse(raw.trim()) {
                Ok(v) => v,
                Err(why) => {
                    self.errors.push(format!("{} ({key}) {why}", variable(key)));
                    default
                }
            },
        }
    }

    fn fail(&mut self, key: &str, why: impl fmt::Display) {
        self.errors.push(format!("{} ({key}) {why}", variable(key)));
    }

    /// The data folder and the database: (data_dir, database_url,
    /// database_embedded, db_max_connections).
    fn storage(&mut self) -> (PathBuf, String, bool, u32) {
        let data_dir = self.parsed("data_dir", PathBuf::from("data"), |s| Ok(PathBuf::from(s)));

        let (database_url, database_embedded) = match self.text("database_url") {
            None => (
                format!("sqlite://{}?mode=rwc", data_dir.join("kihon4.db").display()),
                true,
            ),
            Some(url) => {
                if !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    self.fail(
                        "database_url",
                        "must start with sqlite:, postgres:// or postgresql://",
                    );
                }
                (url, false)
            }
        };
        let db_max_connections =
            self.parsed("db_max_connections", 10u32, |s| match s.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(format!("must be a number from 1 to 1000, not `{s}`")),
            });

        (
            data_dir,
            database_url,
            database_embedded,
            db_max_connections,
        )
    }

    fn audit_signing_key(&mut self, data_dir: &Path) -> PathBuf {
        self.parsed(
            "audit_signing_key",
            data_dir.join("audit-signing-key.pem"),
            |s| Ok(PathBuf::from(s)),
        )
    }

    fn build_audit(&mut self) -> AuditConfig {
        let (data_dir, database_url, database_embedded, db_max_connections) = self.storage();
        let audit_signing_key = self.audit_signing_key(&data_dir);
        AuditConfig {
            database_url: SecretString::from(database_url),
            database_embedded,
            db_max_connections,
            audit_signing_key,
            data_dir,
        }
    }

    fn build(&mut self) -> Option<Config> {
        let role = self.parsed("role", JpkiRole::Platform, |s| match s {
            "platform" => Ok(JpkiRole::Platform),
            "service_provider" => Ok(JpkiRole::ServiceProvider),
            other => Err(format!(
                "must be `platform` or `service_provider`, not `{other}`"
            )),
        });
        let listen: SocketAddr =
            self.parsed("listen", SocketAddr::from(([127, 0, 0, 1], 8080)), |s| {
                s.parse()
                    .map_err(|_| format!("must be an address:port such as 0.0.0.0:8080, not `{s}`"))
            });
        let (data_dir, database_url, database_embedded, db_max_connections) = self.storage();

        let jwt = self.jwt(&data_dir, database_embedded);

        let provider_url = self.parsed("provider_url", None, |s| http_url(s).map(Some));
        let provider_api_key = self.text("provider_api_key").map(SecretString::from);
        let provider_client_id = self
            .text("provider_client_id")
            .unwrap_or_else(|| "kihon4".into());
        let provider_issuer = self.text("provider_issuer");
        let audit_pii_roles = match self.text("audit_pii_roles") {
            None => vec![crate::auth::Role::AuditorPii, crate::auth::Role::Admin],
            Some(raw) => {
                let parsed: Option<Vec<crate::auth::Role>> = raw
                    .split(',')
                    .map(|r| crate::auth::Role::parse(r.trim()))
                    .collect();
                match parsed {
                    Some(roles) if !roles.is_empty() => roles,
                    _ => {
                        self.fail(
                            "audit_pii_roles",
                            "must be roles separated by commas, from operator, auditor, auditor_pii and admin",
                        );
                        Vec::new()
                    }
                }
            }
        };
        let consent_request_reminder_days = match self.text("consent_request_reminder_days") {
            None => vec![7],
            Some(raw) if raw.trim().is_empty() => Vec::new(),
            Some(raw) => {
                let parsed: Result<Vec<u32>, _> =
                    raw.split(',').map(|d| d.trim().parse::<u32>()).collect();
                match parsed {
                    Ok(days)
                        if days.windows(2).all(|w| w[0] < w[1])
                            && days.iter().all(|d| (1..=365).contains(d)) =>
                    {
                        days
                    }
                    _ => {
                        self.fail(
                            "consent_request_reminder_days",
                            "must be increasing whole days from 1 to 365, separated by commas (e.g. `7,14`), or empty for none",
                        );
                        Vec::new()
                    }
                }
            }
        };
        let trust_anchors: Vec<PathBuf> = self
            .list("trust_anchors")
            .into_iter()
            .map(PathBuf::from)
            .collect();
        for path in &trust_anchors {
            if !path.exists() {
                self.fail(
                    "trust_anchors",
                    format!("names {}, which does not exist", path.display()),
                );
            }
        }
        let revocation = self.parsed("revocation", Revocation::Crl, |s| match s {
            "crl" => Ok(Revocation::Crl),
            "ocsp" => Ok(Revocation::Ocsp),
            other => Err(format!("must be `crl` or `ocsp`, not `{other}`")),
        });
        let smtp_url = match self.text("smtp_url") {
            None => None,
            Some(s) => match Url::parse(&s) {
                Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => {
                    if let Err(why) = crate::notices::mail::check_smtp_url(&s) {
                        // The message never repeats the URL, which may hold a password.
                        self.errors.push(why);
                    }
                    Some(SecretString::from(s))
                }
                // The URL may carry a password: never repeat it.
                _ => {
                    self.fail(
                        "smtp_url",
                        "must be smtp://host:port or smtps://user:password@host",
                    );
                    None
                }
            },
        };
        let mail_drop_dir = self.parsed("mail_drop_dir", data_dir.join("mail"), |s| {
            Ok(PathBuf::from(s))
        });
        let public_base_url = self.parsed(
            "public_base_url",
            Url::parse(&format!("http://{listen}/")).expect("an address makes a URL"),
            http_url,
        );
        let audit_signing_key = self.audit_signing_key(&data_dir);
        let timezone = self.parsed("timezone", chrono_tz::Asia::Tokyo, |s| {
            s.parse::<chrono_tz::Tz>()
                .map_err(|_| format!("must be an IANA time zone such as Asia/Tokyo, not `{s}`"))
        });
        let default_from = Email::parse("kihon4@localhost").expect("a valid address");
        let mail_from = self.parsed("mail_from", default_from, |s| {
            Email::parse(s).map_err(|e| format!("{e}"))
        });
        let mail_reply_to = self.parsed("mail_reply_to", None, |s| {
            Email::parse(s).map(Some).map_err(|e| format!("{e}"))
        });
        let institution_name = self
            .text("institution_name")
            .unwrap_or_else(|| "kihon4".into());
        let max_body_bytes = self.parsed("max_body_bytes", 256 * 1024usize, |s| {
            match s.parse::<usize>() {
                Ok(n) if (1024..=64 * 1024 * 1024).contains(&n) => Ok(n),
                _ => Err(format!(
                    "must be a number of bytes from 1024 to 67108864, not `{s}`"
                )),
            }
        });
        let shutdown_grace_seconds = self.parsed("shutdown_grace_seconds", 30u64, |s| {
            match s.parse::<u64>() {
                Ok(n) if n <= 3600 => Ok(n),
                _ => Err(format!("must be a number of seconds up to 3600, not `{s}`")),
            }
        });

        let consent_validity_start = self.parsed(
            "consent_validity_start",
            ValidityStart::NextDay,
            |s| match s {
                "next_day" => Ok(ValidityStart::NextDay),
                "same_day" => Ok(ValidityStart::SameDay),
                other => Err(format!("must be `next_day` or `same_day`, not `{other}`")),
            },
        );

        let institution_contact = self.text("institution_contact");
        let email_templates_dir = self.parsed("email_templates_dir", None, |s| {
            let path = PathBuf::from(s);
            if path.is_dir() {
                Ok(Some(path))
            } else {
                Err(format!("names {s}, which is not a folder"))
            }
        });

        let smtp_timeout = self.parsed(
            "smtp_timeout_seconds",
            std::time::Duration::from_secs(30),
            |s| match s.parse::<u64>() {
                Ok(n) if (1..=600).contains(&n) => Ok(std::time::Duration::from_secs(n)),
                _ => Err(format!(
                    "must be a number of seconds from 1 to 600, not `{s}`"
                )),
            },
        );

        let cron = |this: &mut Self, key: &str, default: &str| {
            this.parsed(key, default.to_owned(), |s| {
                if s.split_whitespace().count() == 6 {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "must be a cron expression with six fields (seconds first), such as `{default}`, not `{s}`"
                    ))
                }
            })
        };
        // Early in the morning in Japan, after J-LIS's daily CRL; the 1st of each month.
        let sync_detect_cron = cron(self, "sync_detect_cron", "0 30 4 * * *");
        let sync_full_refresh_cron = cron(self, "sync_full_refresh_cron", "0 0 3 1 * *");
        let awaiting_reissue_days =
            self.parsed("awaiting_reissue_days", 14i64, |s| match s.parse::<i64>() {
                Ok(n) if (1..=365).contains(&n) => Ok(n),
                _ => Err(format!("must be a number of days from 1 to 365, not `{s}`")),
            });

        let sync_lease = self.parsed(
            "sync_lease_seconds",
            std::time::Duration::from_secs(120),
            |s| match s.parse::<u64>() {
                Ok(n) if (1..=3600).contains(&n) => Ok(std::time::Duration::from_secs(n)),
                _ => Err(format!(
                    "must be a number of seconds from 1 to 3600, not `{s}`"
                )),
            },
        );

        let per_minute = |this: &mut Self, key: &str, default: u32| {
            this.parsed(key, default, |s| match s.parse::<u32>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err(format!(
                    "must be a number of requests per minute from 1 to 1000000, not `{s}`"
                )),
            })
        };
        let rate_limit_per_address = per_minute(self, "rate_limit_per_address", 600);
        let rate_limit_per_subject = per_minute(self, "rate_limit_per_subject", 6000);
        let mut trusted_proxies = crate::client_address::TrustedProxies {
            networks: Vec::new(),
            header: self.parsed("trusted_proxy_header", Default::default(), |s| s.parse()),
        };
        for entry in self.list("trusted_proxies") {
            match crate::client_address::TrustedProxies::parse_network(&entry) {
                Ok(net) => trusted_proxies.networks.push(net),
                Err(why) => self.fail("trusted_proxies", why),
            }
        }
        let refusals = crate::refusals::RefusalSettings {
            window_seconds: self.parsed("refusal_window_seconds", 60i64, |s| {
                match s.parse::<i64>() {
                    Ok(n) if (1..=86_400).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "must be a number of seconds from 1 to 86400, not `{s}`"
                    )),
                }
            }),
            individually: self.parsed("refusals_recorded_individually", 10u32, |s| {
                match s.parse::<u32>() {
                    Ok(n) if n <= 100_000 => Ok(n),
                    _ => Err(format!("must be a number from 0 to 100000, not `{s}`")),
                }
            }),
        };
        let notice_values = self.parsed("notice_values", Default::default(), |s| s.parse());

        Some(Config {
            role,
            listen,
            database_url: SecretString::from(database_url),
            database_embedded,
            db_max_connections,
            jwt: jwt?,
            provider_url,
            provider_api_key,
            provider_client_id,
            provider_issuer,
            consent_request_reminder_days,
            audit_pii_roles,
            trust_anchors,
            revocation,
            smtp_url,
            mail_drop_dir,
            public_base_url,
            audit_signing_key,
            timezone,
            data_dir,
            mail_from,
            mail_reply_to,
            institution_name,
            max_body_bytes,
            shutdown_grace_seconds,
            consent_validity_start,
            institution_contact,
            email_templates_dir,
            smtp_timeout,
            sync_detect_cron,
            sync_full_refresh_cron,
            awaiting_reissue_days,
            sync_lease,
            rate_limit_per_address,
            rate_limit_per_subject,
            trusted_proxies,
            refusals,
            notice_values,
        })
    }

    fn jwt(&mut self, data_dir: &Path, database_embedded: bool) -> Option<JwtSettings> {
        let secret = self.text("jwt_secret").map(SecretString::from);
        let key_files = self.list("jwt_public_keys");
        let algorithm = self.parsed("jwt_algorithm", None, |s| match s {
            "HS256" => Ok(Some(JwtAlgorithm::Hs256)),
            "RS256" => Ok(Some(JwtAlgorithm::Rs256)),
            "ES256" => Ok(Some(JwtAlgorithm::Es256)),
            other => Err(format!("must be HS256, RS256 or ES256, not `{other}`")),
        });
        let issuer = self.text("jwt_issuer");
        let audience = self.text("jwt_audience");
        let max_token_lifetime = self.parsed(
            "auth_max_token_lifetime",
            DEFAULT_MAX_TOKEN_LIFETIME,
            |s| match duration(s) {
                Some(d) if (60..=366 * 86400).contains(&d.as_secs()) => Ok(d),
                _ => Err(format!(
                    "must be a duration from 60s to 366d such as 24h, 90m or 86400, not `{s}`"
                )),
            },
        );
        let keys = match (secret, key_files.is_empty()) {
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
                JwtKeys::Secret(secret)
            }
            (None, false) => {
                let mut pems = Vec::new();
                for file in key_files {
                    let path = PathBuf::from(file);
                    match std::fs::read_to_string(&path) {
                        Ok(pem) if pem.contains("-----BEGIN PUBLIC KEY-----") => {
                            pems.push((path, pem))
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
            (None, true) if database_embedded => match Config::embedded_jwt_secret(data_dir) {
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
        let algorithm = match (&keys, algorithm) {
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
            issuer,
            audience,
            max_token_lifetime,
        };
        if let Err(why) = crate::auth::Authenticator::new(&settings) {
            self.fail("jwt_public_keys", why);
            return None;
        }
        Some(settings)
    }
}

fn http_url(s: &str) -> Result<Url, String> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(format!("must be an http(s) URL, not `{s}`")),
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
        assert!(first.database_embedded);
        assert_eq!(first.jwt.algorithm, JwtAlgorithm::Hs256);
        let second = Config::load_from(None, vars).unwrap();
        let (JwtKeys::Secret(a), JwtKeys::Secret(b)) = (&first.jwt.keys, &second.jwt.keys) else {
            panic!("HS256 expected");
        };
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_eq!(first.timezone, chrono_tz::Asia::Tokyo);
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
        assert_eq!(ok.consent_request_reminder_days, [7, 14]);
        assert_eq!(ok.audit_pii_roles, [crate::auth::Role::AuditorPii]);
        let defaults =
            Config::load_from(None, env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert_eq!(defaults.consent_request_reminder_days, [7]);
        assert_eq!(
            defaults.audit_pii_roles,
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
            (ok.rate_limit_per_address, ok.rate_limit_per_subject),
            (120, 3000)
        );
        assert_eq!(ok.trusted_proxies.networks.len(), 3);
        assert!(ok.trusted_proxies.trusts("192.0.2.7".parse().unwrap()));
        assert_eq!(
            ok.trusted_proxies.header,
            crate::client_address::ProxyHeader::Forwarded
        );
        assert_eq!(ok.refusals.window_seconds, 300);
        assert_eq!(ok.refusals.individually, 0);
        assert_eq!(ok.notice_values, crate::notices::NoticeValues::None);
        let defaults =
            Config::load_from(None, env(&[("KIHON4_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert_eq!(
            (
                defaults.rate_limit_per_address,
                defaults.rate_limit_per_subject
            ),
            (600, 6000)
        );
        assert!(defaults.trusted_proxies.networks.is_empty());
        assert_eq!(
            defaults.refusals,
            crate::refusals::RefusalSettings::default()
        );
        assert_eq!(
            defaults.notice_values,
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
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.institution_name, "Env Bank");
        assert_eq!(config.db_max_connections, 20, "TOML numbers are read");

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
}
