//! Recognising the My Number (個人番号) so that kihon4 can refuse it.
//!
//! kihon4 must never accept, store or log a My Number. Any value holding
//! twelve digits whose last digit is the check digit of the official
//! algorithm (総務省令 第5条) is treated as one, however it is spelled. The
//! text is first normalised: NFKC (full-width, mathematical and circled
//! digits become ASCII ones, a no-break space a space), then every decimal
//! digit of any script (general category Nd, such as Arabic-Indic ٣) and the
//! kanji numerals 〇一二三四五六七八九 count as digits, and up to
//! [`MAX_GAP`] separators between two digits keep a run going: spaces,
//! dashes of every kind, punctuation such as `.` `/` `:` `_` `,`, format
//! characters such as U+200B, control characters and combining marks.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// How many separators may stand between two digits of one run
/// (`1234 - 5678` has three).
pub const MAX_GAP: usize = 3;

/// True when `text` contains a run of exactly twelve digits that forms a
/// valid My Number.
pub fn contains_my_number(text: &str) -> bool {
    // NFKC leaves ASCII as it is (the common case: headers, references).
    if text.is_ascii() {
        scan(text.chars())
    } else {
        scan(text.nfkc())
    }
}

/// Like [`contains_my_number`], for an identifier another system made:
/// a UUID in its canonical hyphenated form is taken for what its structure
/// says it is. About one random UUID in 3,000 ends in twelve decimal
/// digits with a valid check digit; refusing those would turn away one
/// client retry key or, for a token subject, one user for good, in every
/// few thousand. Anything else is checked as text is.
pub fn identifier_holds_my_number(id: &str) -> bool {
    let canonical_uuid = id.len() == 36
        && uuid::Uuid::try_parse(id)
            .is_ok_and(|u| u.hyphenated().to_string() == id.to_ascii_lowercase());
    !canonical_uuid && contains_my_number(id)
}

fn scan(chars: impl Iterator<Item = char>) -> bool {
    // At most 13 digits are kept: a longer run is not a My Number either.
    let mut digits: Vec<u8> = Vec::with_capacity(13);
    let mut gap = 0usize;
    for ch in chars {
        if let Some(d) = digit_value(ch) {
            if digits.len() < 13 {
                digits.push(d);
            }
            gap = 0;
        } else if is_separator(ch) && !digits.is_empty() && gap < MAX_GAP {
            gap += 1;
        } else {
            if is_my_number(&digits) {
                return true;
            }
            digits.clear();
            gap = 0;
            // A separator that ended a run may not start the next one, but a
            // digit right after it may.
        }
    }
    is_my_number(&digits)
}

/// True when `digits` are twelve digits whose last one is the check digit.
fn is_my_number(digits: &[u8]) -> bool {
    if digits.len() != 12 {
        return false;
    }
    check_digit(&digits[..11]) == digits[11]
}

/// The check digit of the eleven leading digits: with P(n) the n-th digit
/// counted from the right and Q(n) = n + 1 for n ≤ 6, n − 5 for n ≥ 7,
/// r = Σ P(n)·Q(n) mod 11, and the check digit is 0 when r ≤ 1, else 11 − r.
fn check_digit(leading: &[u8]) -> u8 {
    let sum: u32 = leading
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &p)| {
            let n = i as u32 + 1;
            let q = if n <= 6 { n + 1 } else { n - 5 };
            u32::from(p) * q
        })
        .sum();
    let r = sum % 11;
    if r <= 1 { 0 } else { (11 - r) as u8 }
}

/// The value of a decimal digit of any script (after NFKC).
fn digit_value(ch: char) -> Option<u8> {
    if ch.is_ascii_digit() {
        return Some(ch as u8 - b'0');
    }
    if let Some(d) = "〇一二三四五六七八九".chars().position(|k| k == ch) {
        return Some(d as u8);
    }
    if ch.general_category() != GeneralCategory::DecimalNumber {
        return None;
    }
    // Unicode encodes every decimal digit (Nd) in runs of ten, zero to
    // nine, in ascending order (Unicode Standard §4.6, a stability policy):
    // the value is the distance from the start of the run, modulo ten
    // (some scripts' runs follow each other directly).
    let mut offset = 0u32;
    let mut code = ch as u32;
    while let Some(before) = code.checked_sub(1).and_then(char::from_u32) {
        if before.general_category() != GeneralCategory::DecimalNumber {
            break;
        }
        offset += 1;
        code -= 1;
    }
    Some((offset % 10) as u8)
}

/// What may stand between the digits of one number: spaces, dashes and
/// other punctuation, format and control characters, combining marks, and
/// the long vowel mark and minus sign people type for a hyphen.
fn is_separator(ch: char) -> bool {
    use GeneralCategory as G;
    matches!(ch, 'ー' | 'ｰ' | '−' | '～' | '~' | '+')
        || matches!(
            ch.general_category(),
            G::SpaceSeparator
                | G::LineSeparator
                | G::ParagraphSeparator
                | G::DashPunctuation
                | G::ConnectorPunctuation
                | G::OtherPunctuation
                | G::Format
                | G::Control
                | G::NonspacingMark
                | G::EnclosingMark
                | G::SpacingMark
        )
}

/// Builds a valid My Number from eleven digits, for tests and examples.
pub fn with_check_digit(leading11: &str) -> String {
    let digits: Vec<u8> = leading11.bytes().map(|b| b - b'0').collect();
    assert_eq!(digits.len(), 11, "eleven digits expected");
    format!("{leading11}{}", check_digit(&digits))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_uuid_identifier_is_not_taken_for_a_my_number() {
        let number = super::with_check_digit("31415926535");
        let uuid_like = format!("0190a6c2-3b4d-7e8f-9a0b-{number}");
        assert!(super::contains_my_number(&uuid_like));
        assert!(!super::identifier_holds_my_number(&uuid_like));
        assert!(!super::identifier_holds_my_number(
            &uuid_like.to_uppercase()
        ));
        // Not a UUID: checked as text.
        assert!(super::identifier_holds_my_number(&number));
        assert!(super::identifier_holds_my_number(&format!("key-{number}")));
        assert!(super::identifier_holds_my_number(&format!(
            "0190a6c23b4d7e8f9a0b{number}"
        )));
    }

    use super::*;

    #[test]
    fn recognises_valid_numbers_in_any_writing() {
        let n = with_check_digit("12345678901");
        assert!(contains_my_number(&n));
        assert!(contains_my_number(&format!("customer {n}")));
        let spaced = format!("{}-{}-{}", &n[0..4], &n[4..8], &n[8..12]);
        assert!(contains_my_number(&spaced));
        let wide: String = n
            .chars()
            .map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).unwrap())
            .collect();
        assert!(contains_my_number(&format!("東京都{wide}")));
    }

    #[test]
    fn ignores_numbers_that_fail_the_check_digit_or_length() {
        let n = with_check_digit("12345678901");
        let last = n.as_bytes()[11] - b'0';
        let wrong = format!("{}{}", &n[..11], (last + 1) % 10);
        assert!(!contains_my_number(&wrong));
        assert!(
            !contains_my_number(&format!("9{n}")),
            "13 digits are not a My Number"
        );
        assert!(!contains_my_number("CUST-0001"));
        assert!(!contains_my_number("東京都千代田区千代田1-1"));
    }

    /// `n` written digit by digit with `digit`, the groups of four joined by `sep`.
    fn spelled(n: &str, sep: &str, digit: impl Fn(u32) -> String) -> String {
        let groups: Vec<String> = n
            .as_bytes()
            .chunks(4)
            .map(|g| g.iter().map(|&b| digit(u32::from(b - b'0'))).collect())
            .collect();
        groups.join(sep)
    }

    fn ascii(d: u32) -> String {
        char::from_digit(d, 10).unwrap().to_string()
    }

    fn from(zero: u32) -> impl Fn(u32) -> String {
        move |d| char::from_u32(zero + d).unwrap().to_string()
    }

    #[test]
    fn recognises_every_spelling_of_the_issue() {
        let n = "314159265352";
        assert!(is_my_number(
            &n.bytes().map(|b| b - b'0').collect::<Vec<_>>()
        ));
        for sep in [
            ".", "/", ":", "_", ",", "--", "\u{200B}", "\u{00A0}", "\u{2013}", "\u{2014}", " - ",
            "\u{FEFF}", "\u{3000}", "・", "ー", "\t",
        ] {
            let text = spelled(n, sep, ascii);
            assert!(contains_my_number(&text), "separator {sep:?}: {text}");
            assert!(contains_my_number(&format!("東京都{text}番地")), "{sep:?}");
        }
        let kanji = |d: u32| {
            "〇一二三四五六七八九"
                .chars()
                .nth(d as usize)
                .unwrap()
                .to_string()
        };
        let circled = |d: u32| {
            if d == 0 {
                "⓪".to_owned()
            } else {
                char::from_u32(0x2460 + d - 1).unwrap().to_string()
            }
        };
        type Digit = Box<dyn Fn(u32) -> String>;
        let forms: [(&str, Digit); 8] = [
            ("full-width", Box::new(from(0xFF10))),
            ("Arabic-Indic", Box::new(from(0x0660))),
            ("Extended Arabic-Indic", Box::new(from(0x06F0))),
            ("Devanagari", Box::new(from(0x0966))),
            ("mathematical bold", Box::new(from(0x1D7CE))),
            ("mathematical monospace", Box::new(from(0x1D7F6))),
            ("circled", Box::new(circled)),
            ("kanji", Box::new(kanji)),
        ];
        for (name, digit) in &forms {
            for sep in ["", "-", "\u{200B}"] {
                let text = spelled(n, sep, digit);
                assert!(contains_my_number(&text), "{name} with {sep:?}: {text}");
            }
        }
        // In an email's local part.
        assert!(contains_my_number("3141.5926.5352@example.jp"));
        assert!(contains_my_number("taro_314159265352@example.jp"));
        // Mixed scripts in one number.
        assert!(contains_my_number("３14١5926۵3５2"));
    }

    #[test]
    fn a_wrong_check_digit_or_ordinary_text_passes() {
        let wrong = "314159265353";
        for sep in ["", ".", "/", "--", "\u{200B}", "\u{2013}"] {
            assert!(!contains_my_number(&spelled(wrong, sep, ascii)), "{sep:?}");
            assert!(!contains_my_number(&spelled(wrong, sep, from(0x0660))));
        }
        for ordinary in [
            "東京都千代田区千代田1-1",
            "大阪府大阪市北区梅田3-1-1 グランフロント大阪タワーA 12階",
            "北海道札幌市中央区北一条西二丁目",
            "CUST-0001",
            "03-1234-5678",
            "090-1234-5678",
            "2024-01-15",
            "三丁目五番地",
        ] {
            assert!(!contains_my_number(ordinary), "{ordinary}");
        }
        // Four separators break the run; so does a letter.
        assert!(!contains_my_number("3141 -- 5926 -- 5352"));
        assert!(!contains_my_number("3141a5926a5352"));
        assert!(!contains_my_number("03141592653520"));
    }

    #[test]
    fn check_digit_matches_published_examples() {
        // Published worked example: 12345678901 → 8.
        assert_eq!(with_check_digit("12345678901"), "123456789018");
    }
}
