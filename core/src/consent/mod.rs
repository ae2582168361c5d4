//! Consent to the provision of the basic four information.

pub mod texts;
