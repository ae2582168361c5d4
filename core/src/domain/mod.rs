//! Domain types that parse: once a value is one of these, nobody checks it again.

pub mod basic4;
pub mod my_number;
mod role;
mod values;

pub use basic4::{Address, Basic4, BirthDate, Gender, Name, RawBasic4, SubstituteFlags};
pub use my_number::{contains_my_number, identifier_holds_my_number};
pub use role::JpkiRole;
pub use values::{
    CertSerial, Email, ExternalRef, FreeText, Locale, check_no_spoofing, spoofing_character,
};

/// Why a single value was refused. `field` is filled in by whoever knows the
/// value's place in the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0}")]
    Invalid(String),
    /// The value holds something that looks like a My Number. The message
    /// never repeats the value.
    #[error("must not contain a My Number (個人番号)")]
    MyNumber,
}

impl ValueError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// One refused field of a request, named by its path (`basic4.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub error: ValueError,
}

/// Every refused field of a request, so that the caller can fix them all at once.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{} invalid field(s)", .0.len())]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, field: impl Into<String>, error: ValueError) {
        self.0.push(FieldError {
            field: field.into(),
            error,
        });
    }

    /// Parses `raw` with `parse`, remembering a failure under `field`.
    pub fn check<T>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        match raw {
            None => {
                self.push(field, ValueError::invalid("is required"));
                None
            }
            Some(raw) => match parse(raw) {
                Ok(value) => Some(value),
                Err(error) => {
                    self.push(field, error);
                    None
                }
            },
        }
    }

    /// Like [`check`](Self::check), for a field that may be left out.
    pub fn check_optional<T>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        raw.and_then(|raw| self.check(field, Some(raw), parse))
    }

    /// Adds the errors of a nested value under `prefix`.
    pub fn extend_prefixed(&mut self, prefix: &str, errors: FieldErrors) {
        for e in errors.0 {
            self.push(format!("{prefix}.{}", e.field), e.error);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any refusal is a My Number; such requests get their own problem type.
    pub fn has_my_number(&self) -> bool {
        self.0.iter().any(|e| e.error == ValueError::MyNumber)
    }

    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}
