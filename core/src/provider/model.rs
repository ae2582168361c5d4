//! The provider's answers, parsed into types that cannot be wrong.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::ProviderError;
use crate::domain::{Basic4, CertSerial, RawBasic4};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlFetch {
    NotModified,
    Fresh { der: Vec<u8>, etag: Option<String> },
}

/// A consent as registered with the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub consent_id: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Created,
    AlreadyThere,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedReason {
    Lost,
    Expired,
    WithdrawnByHolder,
}

/// What J-LIS says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latest {
    Unchanged,
    Changed {
        current_cert_serial: CertSerial,
        changed_on: NaiveDate,
        basic4: Basic4,
        /// What the register holds beyond the four, where it holds it.
        optional: OptionalItems,
    },
    AwaitingReissue,
    Deceased {
        changed_on: Option<NaiveDate>,
    },
    Revoked {
        reason: RevokedReason,
    },
    NotSubscribed,
    UnknownCertificate,
}

/// The optional items J-LIS returns with the four where the register has
/// them: furigana (from 2026-05-26), a former surname (旧姓), and a
/// scheduled move abroad.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionalItems {
    pub name_kana: Option<String>,
    pub former_surname: Option<String>,
    pub overseas_move_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestBasic4 {
    pub cert_serial: CertSerial,
    pub latest: Latest,
}

#[derive(Deserialize)]
pub(super) struct RawResults {
    pub results: Vec<RawResult>,
}

#[derive(Deserialize)]
pub(super) struct RawBasic4Owned {
    name: Option<String>,
    name_substitute_flags: Option<String>,
    address: Option<String>,
    address_substitute_flags: Option<String>,
    birth_date: Option<String>,
    gender: Option<String>,
    name_kana: Option<String>,
    former_surname: Option<String>,
    overseas_move: Option<RawOverseasMove>,
}

#[derive(Deserialize)]
pub(super) struct RawOverseasMove {
    scheduled_on: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawResult {
    cert_serial: String,
    status: String,
    current_cert_serial: Option<String>,
    changed_on: Option<String>,
    reason: Option<String>,
    basic4: Option<RawBasic4Owned>,
}

fn malformed(what: impl Into<String>) -> ProviderError {
    ProviderError::Malformed(what.into())
}

fn date(raw: Option<&str>, what: &str) -> Result<NaiveDate, ProviderError> {
    let raw = raw.ok_or_else(|| malformed(format!("{what} is missing")))?;
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| malformed(format!("{what} is not a date")))
}

impl RawResult {
    pub(super) fn parse(self) -> Result<LatestBasic4, ProviderError> {
        let cert_serial = CertSerial::parse(&self.cert_serial)
            .map_err(|_| malformed("a result's cert_serial is not a serial"))?;
        let latest = match self.status.as_str() {
            "unchanged" => Latest::Unchanged,
            "changed" => {
                // Only the consented items may be present; kihon4's consent covers all four.
                let raw = self
                    .basic4
                    .ok_or_else(|| malformed("a changed result lacks basic4"))?;
                let basic4 = raw.parse("a changed result")?;
                let optional = raw.optional()?;
                Latest::Changed {
                    current_cert_serial: CertSerial::parse(
                        self.current_cert_serial
                            .as_deref()
                            .ok_or_else(|| malformed("current_cert_serial is missing"))?,
                    )
                    .map_err(|_| malformed("current_cert_serial is not a serial"))?,
                    changed_on: date(self.changed_on.as_deref(), "changed_on")?,
                    basic4,
                    optional,
                }
            }
            "awaiting_reissue" => Latest::AwaitingReissue,
            "deceased" => Latest::Deceased {
                changed_on: self
                    .changed_on
                    .as_deref()
                    .map(|d| date(Some(d), "changed_on"))
                    .transpose()?,
            },
            "revoked" => Latest::Revoked {
                reason: match self.reason.as_deref() {
                    Some("lost") => RevokedReason::Lost,
                    Some("expired") => RevokedReason::Expired,
                    Some("withdrawn_by_holder") => RevokedReason::WithdrawnByHolder,
                    _ => return Err(malformed("a revoked result has no known reason")),
                },
            },
            "not_subscribed" => Latest::NotSubscribed,
            "unknown_certificate" => Latest::UnknownCertificate,
            _ => return Err(malformed("a result has an unknown status")),
        };
        Ok(LatestBasic4 {
            cert_serial,
            latest,
        })
    }
}

/// One CRL partition the provider lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CrlPartitionInfo {
    pub id: String,
    pub distribution_point: String,
    pub etag: String,
}

/// A raw card signature for the provider to check (service-provider role):
/// the certificate, the digest of the signed text and the PKCS#1 v1.5
/// signature over its DigestInfo, as card SDKs hand them over.
#[derive(Debug, Clone, Copy)]
pub struct SignatureCheck<'a> {
    pub certificate_der: &'a [u8],
    pub hash: crate::jpki::verify::HashAlgorithm,
    pub digest: &'a [u8],
    pub signature: &'a [u8],
}

/// What the provider found in a signed document (service-provider role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub verification_id: String,
    pub certificate_id: String,
    pub cert_serial: CertSerial,
    pub valid: bool,
    pub reason: Option<String>,
    pub not_after: DateTime<Utc>,
    pub content_sha256: String,
    pub basic4: Basic4,
    /// The operator's id of the holder, when it keeps one (PocketSign's `user.id`).
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawVerification {
    verification_id: String,
    certificate_id: String,
    cert_serial: String,
    valid: bool,
    reason: Option<String>,
    not_after: DateTime<Utc>,
    content_sha256: String,
    basic4: RawBasic4Owned,
}

/// Text J-LIS may send beside the four: present, at most `max`
/// characters, no control, bidirectional or format characters, nothing like
/// a My Number.
fn optional_text(
    raw: &Option<String>,
    what: &str,
    max: usize,
) -> Result<Option<String>, ProviderError> {
    let Some(text) = raw else { return Ok(None) };
    let text = text.trim();
    if text.is_empty()
        || text.chars().count() > max
        || crate::domain::spoofing_character(text).is_some()
        || crate::domain::contains_my_number(text)
    {
        return Err(malformed(format!("{what} is not valid")));
    }
    Ok(Some(text.to_owned()))
}

impl RawBasic4Owned {
    fn optional(&self) -> Result<OptionalItems, ProviderError> {
        Ok(OptionalItems {
            name_kana: optional_text(&self.name_kana, "name_kana", 100)?,
            former_surname: optional_text(&self.former_surname, "former_surname", 50)?,
            overseas_move_on: self
                .overseas_move
                .as_ref()
                .map(|m| date(m.scheduled_on.as_deref(), "overseas_move.scheduled_on"))
                .transpose()?,
        })
    }

    fn parse(&self, what: &str) -> Result<Basic4, ProviderError> {
        Basic4::parse(RawBasic4 {
            name: self.name.as_deref(),
            name_substitute_flags: self.name_substitute_flags.as_deref(),
            address: self.address.as_deref(),
            address_substitute_flags: self.address_substitute_flags.as_deref(),
            birth_date: self.birth_date.as_deref(),
            gender: self.gender.as_deref(),
        })
        .map_err(|e| {
            let fields: Vec<String> = e.0.into_iter().map(|f| f.field).collect();
            malformed(format!(
                "{what}'s basic4 is not valid ({})",
                fields.join(", ")
            ))
        })
    }
}

impl RawVerification {
    pub(super) fn parse(self) -> Result<Verification, ProviderError> {
        if self.content_sha256.len() != 64
            || !self.content_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(malformed("content_sha256 is not a SHA-256"));
        }
        Ok(Verification {
            basic4: self.basic4.parse("a verification")?,
            cert_serial: CertSerial::parse(&self.cert_serial)
                .map_err(|_| malformed("cert_serial is not a serial"))?,
            verification_id: self.verification_id,
            certificate_id: self.certificate_id,
            valid: self.valid,
            reason: self.reason,
            not_after: self.not_after,
            content_sha256: self.content_sha256.to_ascii_lowercase(),
            user_id: None,
        })
    }
}

/// A liveness check's answer for one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CertificateStatus {
    pub certificate_id: String,
    /// `good` or `revoked`.
    pub status: String,
    pub reason: Option<String>,
    pub checked_at: DateTime<Utc>,
}

#[derive(Deserialize)]
pub(super) struct RawStatuses {
    pub results: Vec<CertificateStatus>,
}

/// Revocation checks by purpose, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CheckCounts {
    pub signature_verification: u64,
    pub liveness_check: u64,
}

/// A request for consent on Mynaportal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MynaportalRequest {
    pub request_ref: String,
    pub client_id: String,
    pub callback_url: String,
    pub return_url: String,
    pub locale: String,
}

/// Where to send the holder, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MynaportalTicket {
    pub request_id: String,
    pub consent_url: String,
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(basic4: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "cert_serial": "1a2b", "status": "changed", "current_cert_serial": "1a2b",
            "changed_on": "2026-11-01", "basic4": basic4
        })
    }

    fn items(name: &str, kana: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name, "address": "東京都千代田区千代田1-1", "birth_date": "1980-02-17",
            "gender": "1", "name_kana": kana
        })
    }

    /// Spoofing characters from J-LIS never reach a record or an email: the
    /// answer is malformed (its jobs wait and are retried, nothing applied).
    #[test]
    fn answers_with_spoofing_characters_or_my_numbers_are_malformed() {
        let parse = |v: serde_json::Value| serde_json::from_value::<RawResult>(v).unwrap().parse();
        assert!(parse(changed(items("山田太郎", "ヤマダタロウ"))).is_ok());
        for bad in ["\u{202E}", "\u{2028}", "\u{200B}", "\u{FEFF}", "\u{2066}"] {
            let name = format!("山田{bad}太郎");
            assert!(
                matches!(
                    parse(changed(items(&name, "ヤマダタロウ"))),
                    Err(ProviderError::Malformed(_))
                ),
                "name with {bad:?}"
            );
            let kana = format!("ヤマダ{bad}タロウ");
            assert!(
                matches!(
                    parse(changed(items("山田太郎", &kana))),
                    Err(ProviderError::Malformed(_))
                ),
                "furigana with {bad:?}"
            );
        }
        assert!(matches!(
            parse(changed(items("山田太郎", "ヤマダ٣١٤١٥٩٢٦٥٣٥٢"))),
            Err(ProviderError::Malformed(_))
        ));
    }
}
