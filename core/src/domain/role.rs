//! The JPKI role the institution plays (docs/architecture.md, "The two roles").

use std::fmt;
use std::str::FromStr;

/// Which JPKI role the institution plays (docs/architecture.md, "The two
/// roles"): it decides how a signed consent is checked and how sync finds
/// revoked certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpkiRole {
    Platform,
    ServiceProvider,
}

impl JpkiRole {
    /// The role's name, as configured and as recorded on a consent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::ServiceProvider => "service_provider",
        }
    }
}

impl FromStr for JpkiRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "platform" => Ok(Self::Platform),
            "service_provider" => Ok(Self::ServiceProvider),
            other => Err(format!(
                "must be `platform` or `service_provider`, not `{other}`"
            )),
        }
    }
}

impl fmt::Display for JpkiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_reads_what_it_prints() {
        for role in [JpkiRole::Platform, JpkiRole::ServiceProvider] {
            assert_eq!(role.as_str().parse::<JpkiRole>(), Ok(role));
        }
        assert!("bank".parse::<JpkiRole>().is_err());
    }
}
