//! Recognising the My Number (個人番号) so that kihon4 can refuse it.
//!
//! kihon4 must never accept, store or log a My Number. Any free-text value
//! holding twelve digits whose last digit is the check digit of the official
//! algorithm (総務省令 第5条) is treated as one, whether written with ASCII or
//! full-width digits and with or without spaces or hyphens between them.

/// True when `text` contains a run of exactly twelve digits that forms a
/// valid My Number.
pub fn contains_my_number(text: &str) -> bool {
    let mut digits: Vec<u8> = Vec::with_capacity(12);
    let mut pending_separator = false;
    for ch in text.chars() {
        if let Some(d) = digit_value(ch) {
            digits.push(d);
            pending_separator = false;
        } else if is_separator(ch) && !digits.is_empty() && !pending_separator {
            // One separator between digits keeps the run going ("1234-5678-9012").
            pending_separator = true;
        } else {
            if is_my_number(&digits) {
                return true;
            }
            digits.clear();
            pending_separator = false;
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

fn digit_value(ch: char) -> Option<u8> {
    match ch {
        '0'..='9' => Some(ch as u8 - b'0'),
        '０'..='９' => Some((ch as u32 - '０' as u32) as u8),
        _ => None,
    }
}

fn is_separator(ch: char) -> bool {
    matches!(ch, ' ' | '-' | '\u{3000}' | '－' | '‐' | '−' | 'ー')
}

/// Builds a valid My Number from eleven digits, for tests and examples.
pub fn with_check_digit(leading11: &str) -> String {
    let digits: Vec<u8> = leading11.bytes().map(|b| b - b'0').collect();
    assert_eq!(digits.len(), 11, "eleven digits expected");
    format!("{leading11}{}", check_digit(&digits))
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn check_digit_matches_published_examples() {
        // Published worked example: 12345678901 → 8.
        assert_eq!(with_check_digit("12345678901"), "123456789018");
    }
}
