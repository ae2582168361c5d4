//! The notices' wording: minijinja templates under `templates/email/`, one
//! subject, plain-text body and HTML body per notice and locale, built into
//! the binary and replaceable by an operator's folder. Every template is
//! rendered once with sample values at start-up, in strict mode, so that a
//! missing or broken one stops the process before any customer is written to.

use std::path::Path;

use chrono::NaiveDate;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::consent::ValidityStart;
use crate::domain::Locale;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

/// Every notice kihon4 sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    ConsentReceipt,
    ConsentWithdrawn,
    Basic4Changed,
    ConsentRequest,
    ConsentReminder,
    ConsentRenewal,
    ConsentLapsed,
    CertificateRevoked,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 8] = [
        Self::ConsentReceipt,
        Self::ConsentWithdrawn,
        Self::Basic4Changed,
        Self::ConsentRequest,
        Self::ConsentReminder,
        Self::ConsentRenewal,
        Self::ConsentLapsed,
        Self::CertificateRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsentReceipt => "consent_receipt",
            Self::ConsentWithdrawn => "consent_withdrawn",
            Self::Basic4Changed => "basic4_changed",
            Self::ConsentRequest => "consent_request",
            Self::ConsentReminder => "consent_reminder",
            Self::ConsentRenewal => "consent_renewal",
            Self::ConsentLapsed => "consent_lapsed",
            Self::CertificateRevoked => "certificate_revoked",
        }
    }

    /// Values for every variable the notice's templates may use, to check them.
    fn sample(self, locale: Locale) -> Value {
        let date = format_date(
            locale,
            NaiveDate::from_ymd_opt(2026, 11, 25).expect("a date"),
        );
        match self {
            Self::ConsentReceipt => json!({"consent": {
                "text_version": "2026-11-25.ja", "granted_on": date, "valid_until": date,
                "channel_label": channel_label(locale, "online_signature"),
            }}),
            Self::ConsentWithdrawn => {
                json!({"consent": {"withdrawn_on": date, "granted_on": date}})
            }
            Self::Basic4Changed => json!({
                "changes": [
                    {"item": "address", "label": item_label(locale, "address"), "value": "東京都千代田区千代田1-1"},
                    {"item": "name", "label": item_label(locale, "name"), "value": "山田花子"},
                ],
                "reported_on": date,
            }),
            Self::ConsentRequest => json!({"request": {
                "link": "https://bank.example.jp/consent/token", "expires_on": date,
            }}),
            Self::ConsentReminder => json!({"consent": {"granted_on": date, "valid_until": date}}),
            Self::ConsentRenewal => json!({"consent": {"valid_until": date}}),
            Self::ConsentLapsed => json!({}),
            Self::CertificateRevoked => json!({
                "certificate": {"reason_label": revocation_label(locale, "lost")},
                "consent": {"valid_until": date},
            }),
        }
    }
}

/// Who sends the notices, as they sign them.
#[derive(Debug, Clone, Default)]
pub struct Institution {
    pub name: String,
    pub contact: String,
    pub reply_to: String,
    /// How the institution counts a consent's ten years.
    pub validity_start: ValidityStart,
}

/// A notice ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

const LOCALES: [Locale; 2] = [Locale::Ja, Locale::En];
const PARTS: [&str; 3] = ["subject", "txt", "html"];
const SHARED: [&str; 4] = [
    "_layout.ja.html",
    "_layout.en.html",
    "_footer.ja.txt",
    "_footer.en.txt",
];

macro_rules! built_in {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../templates/email/", $name)))),*]
    };
}

/// The templates built into the binary.
const BUILT_IN: &[(&str, &str)] = built_in!(
    "_layout.ja.html",
    "_layout.en.html",
    "_footer.ja.txt",
    "_footer.en.txt",
    "consent_receipt.ja.subject",
    "consent_receipt.ja.txt",
    "consent_receipt.ja.html",
    "consent_receipt.en.subject",
    "consent_receipt.en.txt",
    "consent_receipt.en.html",
    "consent_withdrawn.ja.subject",
    "consent_withdrawn.ja.txt",
    "consent_withdrawn.ja.html",
    "consent_withdrawn.en.subject",
    "consent_withdrawn.en.txt",
    "consent_withdrawn.en.html",
    "basic4_changed.ja.subject",
    "basic4_changed.ja.txt",
    "basic4_changed.ja.html",
    "basic4_changed.en.subject",
    "basic4_changed.en.txt",
    "basic4_changed.en.html",
    "consent_request.ja.subject",
    "consent_request.ja.txt",
    "consent_request.ja.html",
    "consent_request.en.subject",
    "consent_request.en.txt",
    "consent_request.en.html",
    "consent_reminder.ja.subject",
    "consent_reminder.ja.txt",
    "consent_reminder.ja.html",
    "consent_reminder.en.subject",
    "consent_reminder.en.txt",
    "consent_reminder.en.html",
    "consent_renewal.ja.subject",
    "consent_renewal.ja.txt",
    "consent_renewal.ja.html",
    "consent_renewal.en.subject",
    "consent_renewal.en.txt",
    "consent_renewal.en.html",
    "consent_lapsed.ja.subject",
    "consent_lapsed.ja.txt",
    "consent_lapsed.ja.html",
    "consent_lapsed.en.subject",
    "consent_lapsed.en.txt",
    "consent_lapsed.en.html",
    "certificate_revoked.ja.subject",
    "certificate_revoked.ja.txt",
    "certificate_revoked.ja.html",
    "certificate_revoked.en.subject",
    "certificate_revoked.en.txt",
    "certificate_revoked.en.html",
);

/// Every template file a complete set has.
pub fn required_files() -> Vec<String> {
    let mut out: Vec<String> = SHARED.iter().map(|s| (*s).to_owned()).collect();
    for kind in NoticeKind::ALL {
        for locale in LOCALES {
            for part in PARTS {
                out.push(format!("{}.{}.{part}", kind.as_str(), locale.as_str()));
            }
        }
    }
    out
}

/// Who the notices are from, as the configuration names it.
pub struct Sender<'a> {
    pub address: &'a str,
    pub reply_to: Option<&'a str>,
    /// The zone of the `Date` header.
    pub timezone: chrono_tz::Tz,
}

/// The notices' templates and who signs them.
pub struct Notices {
    env: Environment<'static>,
    institution: Institution,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    timezone: chrono_tz::Tz,
    /// The domain of the sender address, for Message-IDs.
    pub message_id_domain: String,
    /// How much of the changed values a change notice shows.
    values: super::NoticeValues,
}

fn mailbox(name: Option<&str>, address: &str) -> Result<Mailbox, String> {
    let address: lettre::Address = address
        .parse()
        .map_err(|e| format!("`{address}` is not an address for email: {e}"))?;
    Ok(Mailbox::new(name.map(str::to_owned), address))
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    /// The built-in templates, or those of `folder` (which must hold every
    /// one), checked by rendering each.
    pub fn load(
        institution: Institution,
        sender: Sender<'_>,
        folder: Option<&Path>,
    ) -> Result<Self, String> {
        let from = mailbox(Some(&institution.name), sender.address)?;
        let reply_to = sender.reply_to.map(|a| mailbox(None, a)).transpose()?;
        let message_id_domain = sender
            .address
            .rsplit('@')
            .next()
            .unwrap_or("localhost")
            .to_owned();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters"),
        );
        match folder {
            None => {
                for (name, source) in BUILT_IN {
                    env.add_template(name, source)
                        .map_err(|e| format!("the built-in template {name} is broken: {e}"))?;
                }
            }
            Some(folder) => {
                let missing: Vec<String> = required_files()
                    .into_iter()
                    .filter(|f| !folder.join(f).is_file())
                    .collect();
                if !missing.is_empty() {
                    return Err(format!(
                        "{} lacks the email templates {}",
                        folder.display(),
                        missing.join(", ")
                    ));
                }
                for name in required_files() {
                    let source = std::fs::read_to_string(folder.join(&name))
                        .map_err(|e| format!("{}: {e}", folder.join(&name).display()))?;
                    env.add_template_owned(name.clone(), source)
                        .map_err(|e| format!("the email template {name} is broken: {e}"))?;
                }
            }
        }
        let notices = Self {
            env,
            institution,
            from,
            reply_to,
            timezone: sender.timezone,
            message_id_domain,
            values: Default::default(),
        };
        let mut notices = notices;
        for kind in NoticeKind::ALL {
            for locale in LOCALES {
                use super::NoticeValues as V;
                [V::None, V::Municipality, V::Full]
                    .into_iter()
                    .try_for_each(|values| {
                        notices.values = values;
                        notices
                            .render(kind, locale, Some("山田太郎"), kind.sample(locale))
                            .and_then(|_| notices.render(kind, locale, None, kind.sample(locale)))
                            .map(|_| ())
                    })
                    .map_err(|e| {
                        format!(
                            "the email template {}.{} does not render: {e:#}",
                            kind.as_str(),
                            locale.as_str()
                        )
                    })?;
            }
        }
        notices.values = Default::default();
        Ok(notices)
    }

    /// These notices, showing `values` of what changed (every template was
    /// checked with each setting when loaded).
    pub fn with_values(mut self, values: super::NoticeValues) -> Self {
        self.values = values;
        self
    }

    pub fn institution(&self) -> &Institution {
        &self.institution
    }

    /// The whole message: multipart/alternative (plain text and HTML, UTF-8),
    /// the subject encoded per RFC 2047, `From` (the institution), `To`,
    /// `Reply-To` when configured, `Message-ID` and a `Date` in the
    /// configured zone; nothing else of the customer's in the headers.
    pub fn compose(
        &self,
        to: &str,
        message_id: &str,
        rendered: &Rendered,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<u8>, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(mailbox(None, to)?)
            .subject(rendered.subject.clone())
            .message_id(Some(message_id.to_owned()));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let mut message = builder
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ))
            .map_err(|e| format!("the message cannot be built: {e}"))?;
        // lettre writes the Date in UTC; customers read it in their own zone.
        message.headers_mut().insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Date"),
            at.with_timezone(&self.timezone).to_rfc2822(),
        ));
        Ok(message.formatted())
    }

    /// Renders a notice for a customer (`customer_name`: how to address them, when known).
    pub fn render(
        &self,
        kind: NoticeKind,
        locale: Locale,
        customer_name: Option<&str>,
        data: Value,
    ) -> Result<Rendered, minijinja::Error> {
        let mut context = match data {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let mut customer_name = customer_name;
        if kind == NoticeKind::Basic4Changed {
            let changes = context.entry("changes").or_insert_with(|| json!([]));
            // While the new name is not shown, nor is it in the greeting.
            if super::values::restrict(self.values, changes) {
                customer_name = None;
            }
            let hidden = changes.as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|c| c["value"] == "" || c["partial"] == true)
            });
            context.insert("values_withheld".into(), json!(hidden));
        }
        context.insert(
            "institution".into(),
            json!({
                "name": self.institution.name,
                "contact": self.institution.contact,
                "reply_to": self.institution.reply_to,
            }),
        );
        context.insert(
            "customer".into(),
            json!({ "name": customer_name.unwrap_or_default() }),
        );
        context.insert(
            "validity".into(),
            json!({ "period": validity_period(locale, self.institution.validity_start) }),
        );
        let name = |part: &str| format!("{}.{}.{part}", kind.as_str(), locale.as_str());
        let subject = self
            .env
            .get_template(&name("subject"))?
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))?
            .trim()
            .to_owned();
        let text = self
            .env
            .get_template(&name("txt"))?
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))?;
        context.insert("subject".into(), json!(subject));
        let html = self
            .env
            .get_template(&name("html"))?
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }
}

/// A date as a letter in `locale` writes it.
pub fn format_date(locale: Locale, date: NaiveDate) -> String {
    use chrono::Datelike;
    match locale {
        Locale::Ja => format!("{}年{}月{}日", date.year(), date.month(), date.day()),
        Locale::En => date.format("%-d %B %Y").to_string(),
    }
}

/// How long a consent lasts, in words.
pub fn validity_period(locale: Locale, start: ValidityStart) -> &'static str {
    match (locale, start) {
        (Locale::Ja, ValidityStart::NextDay) => "ご同意日の翌日から10年間",
        (Locale::Ja, ValidityStart::SameDay) => "ご同意日から10年間",
        (Locale::En, ValidityStart::NextDay) => "ten years from the day after the day of consent",
        (Locale::En, ValidityStart::SameDay) => "ten years from the day of consent",
    }
}

/// The name of one of the four items, in `locale`.
pub fn item_label(locale: Locale, item: &str) -> &'static str {
    match (locale, item) {
        (Locale::Ja, "name") => "氏名",
        (Locale::Ja, "address") => "住所",
        (Locale::Ja, "birth_date") => "生年月日",
        (Locale::Ja, "gender") => "性別",
        (Locale::En, "name") => "Name",
        (Locale::En, "address") => "Address",
        (Locale::En, "birth_date") => "Date of birth",
        (Locale::En, "gender") => "Gender",
        (Locale::Ja, "name_kana") => "氏名（フリガナ）",
        (Locale::Ja, "former_surname") => "旧姓",
        (Locale::Ja, "overseas_move_on") => "国外転出予定日",
        (Locale::En, "name_kana") => "Name (kana)",
        (Locale::En, "former_surname") => "Former surname",
        (Locale::En, "overseas_move_on") => "Scheduled move abroad",
        _ => "",
    }
}

/// A JIS X 0303 gender code as words.
pub fn gender_label(locale: Locale, code: &str) -> &'static str {
    match (locale, code) {
        (Locale::Ja, "1") => "男性",
        (Locale::Ja, "2") => "女性",
        (Locale::Ja, _) => "該当なし",
        (Locale::En, "1") => "Male",
        (Locale::En, "2") => "Female",
        (Locale::En, _) => "Not applicable",
    }
}

/// Why J-LIS revoked a certificate (other than a change of the four items), as words.
pub fn revocation_label(locale: Locale, reason: &str) -> &'static str {
    match (locale, reason) {
        (Locale::Ja, "lost") => "マイナンバーカードの紛失の届出",
        (Locale::Ja, "expired") => "署名用電子証明書の有効期限の満了",
        (Locale::Ja, "revoked") => "当機関がご同意を登録する前に行われた署名用電子証明書の失効",
        (Locale::Ja, _) => "ご本人による署名用電子証明書の失効のお手続き",
        (Locale::En, "lost") => "the card was reported lost",
        (Locale::En, "expired") => "the certificate reached the end of its validity",
        (Locale::En, "revoked") => {
            "the certificate was revoked before we could register your consent"
        }
        (Locale::En, _) => "the certificate was revoked at your own request",
    }
}

/// How the consent was given, as words.
pub fn channel_label(locale: Locale, channel: &str) -> &'static str {
    match (locale, channel) {
        (Locale::Ja, "online_signature") => "マイナンバーカードによる電子署名",
        (Locale::Ja, "branch") => "店頭でのマイナンバーカードによる電子署名",
        (Locale::Ja, _) => "マイナポータルでのご同意",
        (Locale::En, "online_signature") => "electronic signature with your My Number Card",
        (Locale::En, "branch") => "electronic signature with your My Number Card at our branch",
        (Locale::En, _) => "consent given on Mynaportal",
    }
}
