//! The basic four information (基本4情報): name, address, date of birth, gender.
//! All of it is personal data: no `Debug` here ever shows a value.

use std::fmt;

use chrono::{Datelike, FixedOffset, NaiveDate, Utc};

use super::values::check_personal_text;
use super::{FieldErrors, ValueError};

/// One `0`/`1` per character of a name or address, `1` where a substitute
/// character (代替文字) stands.
#[derive(Clone, PartialEq, Eq)]
pub struct SubstituteFlags(String);

impl SubstituteFlags {
    /// No substitute characters in a text of `chars` characters.
    pub fn none(chars: usize) -> Self {
        Self("0".repeat(chars))
    }

    pub fn parse_for(raw: &str, text: &str) -> Result<Self, ValueError> {
        if !raw.bytes().all(|b| b == b'0' || b == b'1') {
            return Err(ValueError::invalid("must hold only 0 and 1"));
        }
        if raw.len() != text.chars().count() {
            return Err(ValueError::invalid(
                "must have one flag per character of the text it marks",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn any(&self) -> bool {
        self.0.contains('1')
    }
}

macro_rules! personal_text {
    ($name:ident, $max:expr, $what:literal) => {
        #[doc = concat!("A ", $what, " as J-LIS holds it, with its substitute-character flags.")]
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name {
            text: String,
            flags: SubstituteFlags,
        }

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(text: &str, flags: Option<&str>) -> Result<Self, ValueError> {
                check_personal_text(text, Self::MAX_CHARS)?;
                let flags = match flags {
                    Some(raw) => SubstituteFlags::parse_for(raw, text)?,
                    None => SubstituteFlags::none(text.chars().count()),
                };
                Ok(Self {
                    text: text.to_owned(),
                    flags,
                })
            }

            pub fn as_str(&self) -> &str {
                &self.text
            }

            pub fn flags(&self) -> &SubstituteFlags {
                &self.flags
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

personal_text!(Name, 100, "name (氏名)");
personal_text!(Address, 300, "address (住所)");

/// Gender as JIS X 0303 codes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Male,
    Female,
    NotApplicable,
}

impl Gender {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        match raw {
            "1" => Ok(Self::Male),
            "2" => Ok(Self::Female),
            "9" => Ok(Self::NotApplicable),
            _ => Err(ValueError::invalid(
                "must be a JIS X 0303 code: \"1\", \"2\" or \"9\"",
            )),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Male => "1",
            Self::Female => "2",
            Self::NotApplicable => "9",
        }
    }
}

impl fmt::Debug for Gender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gender(<redacted>)")
    }
}

/// A date of birth: a real calendar date, not in the future (in Japan), not
/// before the Meiji era began.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BirthDate(NaiveDate);

impl BirthDate {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.len() != 10 {
            return Err(ValueError::invalid("must be a date YYYY-MM-DD"));
        }
        let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| ValueError::invalid("must be a real calendar date YYYY-MM-DD"))?;
        Self::new(date)
    }

    /// From the JPKI certificate form `EYYYYMMDD` (era digit, then the
    /// Western-calendar date).
    pub fn parse_jpki(raw: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::invalid("must be EYYYYMMDD with an era digit 0-5");
        if raw.len() != 9 || !raw.bytes().all(|b| b.is_ascii_digit()) || raw.as_bytes()[0] > b'5' {
            return Err(bad());
        }
        let date = NaiveDate::parse_from_str(&raw[1..], "%Y%m%d").map_err(|_| bad())?;
        Self::new(date)
    }

    pub fn new(date: NaiveDate) -> Result<Self, ValueError> {
        if date.year() < 1868 {
            return Err(ValueError::invalid("must not be before 1868"));
        }
        if date > today_in_japan() {
            return Err(ValueError::invalid("must not be in the future"));
        }
        Ok(Self(date))
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }

    /// `YYYY-MM-DD`.
    pub fn to_iso(self) -> String {
        self.0.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Debug for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BirthDate(<redacted>)")
    }
}

fn today_in_japan() -> NaiveDate {
    let jst = FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset");
    Utc::now().with_timezone(&jst).date_naive()
}

/// The basic four information of one person.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Basic4 {
    pub name: Name,
    pub address: Address,
    pub birth_date: BirthDate,
    pub gender: Gender,
}

/// The four items as text, before they are parsed (a request body, a row).
#[derive(Clone, Default)]
pub struct RawBasic4<'a> {
    pub name: Option<&'a str>,
    pub name_substitute_flags: Option<&'a str>,
    pub address: Option<&'a str>,
    pub address_substitute_flags: Option<&'a str>,
    pub birth_date: Option<&'a str>,
    pub gender: Option<&'a str>,
}

impl Basic4 {
    /// Parses all four items, naming every one that is wrong.
    pub fn parse(raw: RawBasic4<'_>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check("name", raw.name, |v| {
            Name::parse(v, raw.name_substitute_flags)
        });
        let address = errors.check("address", raw.address, |v| {
            Address::parse(v, raw.address_substitute_flags)
        });
        let birth_date = errors.check("birth_date", raw.birth_date, BirthDate::parse);
        let gender = errors.check("gender", raw.gender, Gender::parse);
        match (name, address, birth_date, gender) {
            (Some(name), Some(address), Some(birth_date), Some(gender)) if errors.is_empty() => {
                Ok(Self {
                    name,
                    address,
                    birth_date,
                    gender,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::my_number::with_check_digit;

    #[test]
    fn gender_follows_jis_x_0303() {
        assert_eq!(Gender::parse("2").unwrap().code(), "2");
        assert!(Gender::parse("0").is_err());
        assert!(Gender::parse("male").is_err());
    }

    #[test]
    fn birth_date_is_a_real_past_date() {
        assert_eq!(
            BirthDate::parse("1980-02-17").unwrap().to_iso(),
            "1980-02-17"
        );
        assert!(BirthDate::parse("1980-02-30").is_err());
        assert!(BirthDate::parse("2999-01-01").is_err());
        assert!(BirthDate::parse("1800-01-01").is_err());
        assert!(BirthDate::parse("1980-2-17").is_err());
        assert_eq!(
            BirthDate::parse_jpki("319800217").unwrap().to_iso(),
            "1980-02-17"
        );
        assert!(BirthDate::parse_jpki("919800217").is_err());
    }

    #[test]
    fn flags_must_match_the_text() {
        assert!(Name::parse("山田太郎", Some("0010")).unwrap().flags().any());
        assert!(Name::parse("山田太郎", Some("001")).is_err());
        assert!(Name::parse("山田太郎", Some("00x0")).is_err());
        assert_eq!(
            Name::parse("山田太郎", None).unwrap().flags().as_str(),
            "0000"
        );
    }

    #[test]
    fn basic4_names_every_bad_item_and_redacts_itself() {
        let my_number = with_check_digit("98765432109");
        let errors = Basic4::parse(RawBasic4 {
            name: Some(""),
            address: Some(&my_number),
            birth_date: Some("tomorrow"),
            gender: None,
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "address", "birth_date", "gender"]);
        assert_eq!(errors.0[1].error, ValueError::MyNumber);

        let ok = Basic4::parse(RawBasic4 {
            name: Some("山田太郎"),
            address: Some("東京都千代田区千代田1-1"),
            birth_date: Some("1980-02-17"),
            gender: Some("1"),
            ..Default::default()
        })
        .unwrap();
        let shown = format!("{ok:?}");
        assert!(!shown.contains("山田") && !shown.contains("1980"));
    }
}
