//! Phone numbers of record: what HR systems write (`+49 (0)30 1234-567`, `0044 20 7946 0000`)
//! normalised to `+` and digits, so that the operator reads one form and two spellings of one
//! number compare equal.

/// Shortest and longest number accepted, in digits after the `+` (E.164 allows at most 15).
const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 15;

/// Why a phone number was refused; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("'{0}' holds letters — write the number with digits only (no extensions or vanity letters), e.g. +44 20 7946 0000")]
    Letters(String),
    #[error("'{0}' has no country code — write it in international form starting with + or 00, e.g. +1 555 010 0001")]
    NoCountryCode(String),
    #[error("'{0}' holds a character that is not part of a phone number — use digits, spaces, '-', '.', '/' and parentheses only")]
    Character(String),
    #[error("'{0}' has {1} digits — an international number has {MIN_DIGITS} to {MAX_DIGITS}")]
    Length(String, usize),
}

/// `text` as `+` and digits. Separators (spaces, `-`, `.`, `/`, parentheses) are dropped; a
/// leading `00` is the international prefix; the trunk `(0)` written after a country code
/// (`+49 (0)30 …`) is dropped, as dialling from abroad does.
pub fn normalise(text: &str) -> Result<String, PhoneError> {
    let shown = || text.trim().chars().take(40).collect::<String>();
    let trimmed = text.trim();
    if trimmed.chars().any(char::is_alphabetic) {
        return Err(PhoneError::Letters(shown()));
    }
    let without_trunk = trimmed.replacen("(0)", "", 1);
    let body = if let Some(rest) = without_trunk.strip_prefix('+') {
        rest
    } else if let Some(rest) = without_trunk.strip_prefix("00") {
        rest
    } else {
        return Err(PhoneError::NoCountryCode(shown()));
    };
    let mut digits = String::with_capacity(body.len() + 1);
    digits.push('+');
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' | '(' | ')' | '\u{a0}' => {}
            _ => return Err(PhoneError::Character(shown())),
        }
    }
    let count = digits.len() - 1;
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&count) || digits.starts_with("+0") {
        return Err(PhoneError::Length(shown(), count));
    }
    Ok(digits)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalised_to_a_plus_and_digits() {
        for (text, expected) in [
            ("+1 (555) 010-0001", "+15550100001"),
            ("0044 20 7946 0000", "+442079460000"),
            ("+49 (0)30 1234-567", "+49301234567"),
            (" +33.1.23.45.67.89 ", "+33123456789"),
            ("+41/44/668 18 00", "+41446681800"),
        ] {
            assert_eq!(normalise(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn letters_national_numbers_and_odd_lengths_are_refused_with_the_fix() {
        let table = [
            ("+1 555 CALL-NOW", "holds letters"),
            ("+1 555 010 0001 ext 12", "holds letters"),
            ("555-0100", "no country code"),
            ("(030) 1234567", "no country code"),
            ("+1 555 010 0001 #2", "not part of a phone number"),
            ("+12 34", "has 4 digits"),
            ("+1234567890123456", "has 16 digits"),
        ];
        for (text, expected) in table {
            let err = normalise(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
