use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ValueError, contains_my_number};

/// The first character that could make a text look other than it is:
/// control characters (Cc), format characters (Cf: the bidirectional
/// controls U+202A–U+202E, U+2066–U+2069, U+200E, U+200F and U+061C, the
/// zero-width space U+200B, the byte-order mark U+FEFF…) and the line and
/// paragraph separators U+2028 and U+2029.
pub fn spoofing_character(text: &str) -> Option<char> {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    text.chars().find(|c| {
        matches!(
            c.general_category(),
            G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
        )
    })
}

/// Refuses what [`spoofing_character`] finds, naming its code point.
pub fn check_no_spoofing(text: &str) -> Result<(), ValueError> {
    match spoofing_character(text) {
        None => Ok(()),
        Some(c) => Err(ValueError::invalid(format!(
            "must not contain control, bidirectional or format characters (U+{:04X})",
            c as u32
        ))),
    }
}

/// Refuses control, bidirectional and format characters and My Numbers in
/// text that people type.
fn check_free_text(text: &str, max_chars: usize) -> Result<(), ValueError> {
    if text.trim().is_empty() {
        return Err(ValueError::invalid("must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(ValueError::invalid(format!(
            "must be at most {max_chars} characters"
        )));
    }
    // A My Number however spelled (with U+200B between its digits, say) is
    // refused as one.
    if contains_my_number(text) {
        return Err(ValueError::MyNumber);
    }
    check_no_spoofing(text)?;
    Ok(())
}

/// A certificate serial number, kept as lowercase hex without leading zeros
/// (the provider protocol's form). RFC 5280 allows at most 20 octets.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertSerial(String);

impl CertSerial {
    /// Accepts hex with or without a `0x` prefix, colons between octets and
    /// either case.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        let hex = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let hex: String = hex.chars().filter(|&c| c != ':').collect();
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ValueError::invalid("must be a hexadecimal serial number"));
        }
        let hex = hex.to_ascii_lowercase();
        let significant = hex.trim_start_matches('0');
        if significant.is_empty() {
            return Err(ValueError::invalid("must be a positive serial number"));
        }
        if significant.len() > 40 {
            return Err(ValueError::invalid("must be at most 20 octets"));
        }
        Ok(Self(significant.to_owned()))
    }

    /// From the big-endian bytes of a DER INTEGER.
    pub fn from_be_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        Self::parse(&hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertSerial({})", self.0)
    }
}

impl TryFrom<String> for CertSerial {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CertSerial> for String {
    fn from(value: CertSerial) -> Self {
        value.0
    }
}

/// An email address. Personal data: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let raw = raw.trim();
        if raw.len() > 254 {
            return Err(ValueError::invalid("must be at most 254 characters"));
        }
        if contains_my_number(raw) {
            return Err(ValueError::MyNumber);
        }
        check_no_spoofing(raw)?;
        let parsed: email_address::EmailAddress = raw
            .parse()
            .map_err(|_| ValueError::invalid("must be an email address"))?;
        // Display names ("A <a@b>") are not addresses.
        if parsed.as_str() != raw || raw.contains(['<', '>', ' ']) {
            return Err(ValueError::invalid("must be a plain email address"));
        }
        let domain = parsed.domain().to_ascii_lowercase();
        if !domain.contains('.') && domain != "localhost" {
            return Err(ValueError::invalid("must have a domain with a dot"));
        }
        Ok(Self(format!("{}@{}", parsed.local_part(), domain)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// The institution's own customer number.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ExternalRef(String);

impl ExternalRef {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.is_empty() {
            return Err(ValueError::invalid("must not be empty"));
        }
        if contains_my_number(raw) {
            return Err(ValueError::MyNumber);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(ValueError::invalid(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
        {
            return Err(ValueError::invalid(
                "may hold only ASCII letters, digits and - _ . : /",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The language a customer is written to in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    Ja,
    En,
}

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        match raw {
            "ja" => Ok(Self::Ja),
            "en" => Ok(Self::En),
            _ => Err(ValueError::invalid("must be \"ja\" or \"en\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }
}

/// Free text a person writes (a reason, a note): bounded, printable and never a My Number.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FreeText(String);

impl FreeText {
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        check_free_text(raw, Self::MAX_CHARS)?;
        Ok(Self(raw.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(super) fn check_personal_text(text: &str, max_chars: usize) -> Result<(), ValueError> {
    check_free_text(text, max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::my_number::with_check_digit;

    #[test]
    fn cert_serial_normalises_to_lowercase_hex() {
        assert_eq!(CertSerial::parse("00:AB:cd").unwrap().as_str(), "abcd");
        assert_eq!(CertSerial::parse("0x0F").unwrap().as_str(), "f");
        assert!(CertSerial::parse("0").is_err());
        assert!(CertSerial::parse("xyz").is_err());
        assert!(CertSerial::parse(&"f".repeat(41)).is_err());
        assert_eq!(
            CertSerial::from_be_bytes(&[0, 1, 2]).unwrap().as_str(),
            "102"
        );
    }

    #[test]
    fn email_is_plain_and_redacted_in_debug() {
        let e = Email::parse("Taro.Yamada@Example.JP").unwrap();
        assert_eq!(e.as_str(), "Taro.Yamada@example.jp");
        assert_eq!(format!("{e:?}"), "Email(<redacted>)");
        assert!(Email::parse("Taro <taro@example.jp>").is_err());
        assert!(Email::parse("not-an-email").is_err());
        assert!(Email::parse("a@nodot").is_err());
    }

    #[test]
    fn external_ref_refuses_my_numbers_and_odd_characters() {
        assert!(ExternalRef::parse("CUST-0001").is_ok());
        assert_eq!(
            ExternalRef::parse(&with_check_digit("12345678901")),
            Err(ValueError::MyNumber)
        );
        assert!(ExternalRef::parse("has space").is_err());
        assert!(ExternalRef::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn spoofing_characters_are_refused_in_free_text_and_email() {
        for bad in [
            "\u{202E}", "\u{202A}", "\u{2066}", "\u{2069}", "\u{200E}", "\u{200F}", "\u{061C}",
            "\u{200B}", "\u{FEFF}", "\u{2028}", "\u{2029}", "\u{0007}", "\n", "\u{0085}",
        ] {
            let text = format!("山田{bad}太郎");
            let err = FreeText::parse(&text).unwrap_err();
            assert!(
                matches!(&err, ValueError::Invalid(m) if m.contains("format characters")),
                "{bad:?}: {err}"
            );
            assert!(
                Email::parse(&format!("taro{bad}@example.jp")).is_err(),
                "{bad:?}"
            );
            assert!(super::super::Name::parse(&text, None).is_err(), "{bad:?}");
            assert!(super::super::Address::parse(&format!("東京都{bad}港区"), None).is_err());
        }
        assert!(FreeText::parse("転居のため（山田様より電話）").is_ok());
        assert!(super::super::Name::parse("髙橋　𠮷雄", None).is_ok());
    }

    #[test]
    fn my_numbers_in_any_spelling_are_refused_in_every_value() {
        for spelled in ["3141.5926.5352", "٣١٤١٥٩٢٦٥٣٥٢", "三一四一五九二六五三五二"]
        {
            assert_eq!(FreeText::parse(spelled), Err(ValueError::MyNumber));
            assert_eq!(
                super::super::Address::parse(&format!("東京都{spelled}"), None),
                Err(ValueError::MyNumber)
            );
        }
        assert_eq!(
            Email::parse("3141.5926.5352@example.jp"),
            Err(ValueError::MyNumber)
        );
        assert_eq!(
            ExternalRef::parse("3141:5926:5352"),
            Err(ValueError::MyNumber)
        );
        assert_eq!(
            ExternalRef::parse("3141_5926_5352"),
            Err(ValueError::MyNumber)
        );
    }

    #[test]
    fn locale_is_ja_or_en() {
        assert_eq!(Locale::parse("en").unwrap(), Locale::En);
        assert!(Locale::parse("fr").is_err());
    }
}
