//! Sync (docs/architecture.md#sync): runs that find the consenting customers
//! whose certificate may have changed, one job per customer asking the
//! provider for the latest four items, and each answer applied to the
//! customer's record with its history, audit event and notice in one
//! transaction, the job's own record included, so that an answer is applied
//! exactly once.

pub mod apply;
pub mod detect;
pub mod driver;
pub mod jobs;
pub mod reviews;
pub mod runs;

/// What a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Customers whose certificate is revoked (platform role: in the CRL;
    /// service-provider role: by liveness checks).
    Revoked,
    /// Every customer with an active consent.
    All,
    /// One customer.
    Customer,
}

impl Scope {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "revoked" => Some(Self::Revoked),
            "all" => Some(Self::All),
            "customer" => Some(Self::Customer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::All => "all",
            Self::Customer => "customer",
        }
    }
}

/// What sync needs besides the database.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    pub timezone: chrono_tz::Tz,
    /// How long a certificate may stay revoked without a new one before a
    /// person looks at it.
    pub awaiting_reissue_days: i64,
    /// How long a worker holds the jobs it claimed. A job whose lease ran out
    /// is taken over; the first worker's answer is then not applied (its
    /// transaction checks the lease), so a short lease costs only repeats.
    pub lease: std::time::Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            timezone: chrono_tz::Asia::Tokyo,
            awaiting_reissue_days: 14,
            lease: std::time::Duration::from_secs(120),
        }
    }
}
