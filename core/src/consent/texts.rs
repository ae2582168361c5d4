//! The versioned texts a customer signs (templates/consent/), shipped in
//! the binary so that they cannot change under a stored consent. The
//! institution's name is filled in at start.

use sha2::{Digest, Sha256};

use crate::domain::Locale;

/// Every published text: (version, locale, template). Never edit one; add a version.
const TEMPLATES: &[(&str, Locale, &str)] = &[
    (
        "2026-11-25.ja",
        Locale::Ja,
        include_str!("../../../templates/consent/2026-11-25.ja.txt"),
    ),
    (
        "2026-11-25.en",
        Locale::En,
        include_str!("../../../templates/consent/2026-11-25.en.txt"),
    ),
];

const INSTITUTION: &str = "{institution}";

/// One text as the customer signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentText {
    pub version: String,
    pub locale: Locale,
    pub text: String,
    /// SHA-256 of the text's UTF-8 bytes, hex.
    pub sha256: String,
}

/// The texts in force, for one institution.
#[derive(Debug, Clone)]
pub struct ConsentTexts {
    texts: Vec<ConsentText>,
}

impl ConsentTexts {
    pub fn for_institution(institution: &str) -> Self {
        let texts = TEMPLATES
            .iter()
            .map(|(version, locale, template)| {
                let text = template.replace(INSTITUTION, institution);
                ConsentText {
                    version: (*version).to_owned(),
                    locale: *locale,
                    sha256: hex::encode(Sha256::digest(text.as_bytes())),
                    text,
                }
            })
            .collect();
        Self { texts }
    }

    /// Oldest first.
    pub fn all(&self) -> &[ConsentText] {
        &self.texts
    }

    pub fn version(&self, version: &str) -> Option<&ConsentText> {
        self.texts.iter().find(|t| t.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_the_institution_and_hash_what_is_signed() {
        let texts = ConsentTexts::for_institution("かもめ銀行");
        assert_eq!(texts.all().len(), 2);
        let ja = texts.version("2026-11-25.ja").unwrap();
        assert!(ja.text.contains("かもめ銀行（以下「当機関」といいます。）"));
        assert!(!ja.text.contains(INSTITUTION));
        assert_eq!(ja.sha256, hex::encode(Sha256::digest(ja.text.as_bytes())));
        for must in [
            "氏名、住所、生年月日、性別",
            "10年間",
            "撤回",
            "J-LISが提供する方法",
        ] {
            assert!(ja.text.contains(must), "{must}");
        }
        let en = texts.version("2026-11-25.en").unwrap();
        assert_eq!(en.locale, Locale::En);
        for must in [
            "name, address, date of birth and gender",
            "ten years",
            "withdraw",
            "without going through the Institution",
        ] {
            assert!(en.text.contains(must), "{must}");
        }
        assert_ne!(
            ConsentTexts::for_institution("Other Bank")
                .version("2026-11-25.en")
                .unwrap()
                .sha256,
            en.sha256
        );
        assert!(texts.version("2099-01-01.ja").is_none());
    }
}
