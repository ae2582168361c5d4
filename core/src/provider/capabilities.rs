//! Which provider kihon4 talks to, and what it offers: kihon4's own
//! protocol offers every operation of [`super::Provider`]; an operator's
//! API may offer only some (PocketSign publicly documents no subscriptions,
//! no latest four items, no Mynaportal requests, no CA, CRL or OCSP
//! endpoints). kihon4 says at start-up which are missing, and whatever
//! needs one answers [`super::ProviderError::Unsupported`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::pocketsign::{CheckMethod, PocketSignProvider};
use super::{HttpProvider, Provider, ProviderSettings};

/// `KIHON4_PROVIDER_KIND`: whose API the provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderKind {
    /// kihon4's provider protocol (PROVIDER-PROTOCOL.md v1; the simulator).
    #[default]
    Kihon4,
    /// PocketSign Verify API v2 (Connect RPC), service-provider role only.
    PocketSign,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kihon4 => "kihon4",
            Self::PocketSign => "pocketsign",
        }
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kihon4" => Ok(Self::Kihon4),
            "pocketsign" => Ok(Self::PocketSign),
            other => Err(format!("must be `kihon4` or `pocketsign`, not `{other}`")),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group of the provider's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `ca_certificate`.
    CaCertificate,
    /// `crl`, `crl_partitions`, `crl_partition`.
    Crl,
    /// `ocsp`.
    Ocsp,
    /// `subscribe`, `unsubscribe`: registering consents.
    Subscriptions,
    /// `latest_basic4`: the latest four items.
    LatestBasic4,
    /// `verify`: a CMS consent document.
    VerifyDocument,
    /// `verify_signature`: a raw card signature.
    VerifySignature,
    /// `certificate_status`: liveness checks (現況確認).
    CertificateStatus,
    /// `checks`: revocation checks counted by purpose.
    CheckCounts,
    /// `mynaportal_request`.
    MynaportalRequests,
    /// `jwks`: the keys of signed callbacks.
    CallbackKeys,
}

impl Capability {
    pub const ALL: [Self; 11] = [
        Self::CaCertificate,
        Self::Crl,
        Self::Ocsp,
        Self::Subscriptions,
        Self::LatestBasic4,
        Self::VerifyDocument,
        Self::VerifySignature,
        Self::CertificateStatus,
        Self::CheckCounts,
        Self::MynaportalRequests,
        Self::CallbackKeys,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CaCertificate => "ca_certificate",
            Self::Crl => "crl",
            Self::Ocsp => "ocsp",
            Self::Subscriptions => "subscriptions",
            Self::LatestBasic4 => "latest_basic4",
            Self::VerifyDocument => "verify_document",
            Self::VerifySignature => "verify_signature",
            Self::CertificateStatus => "certificate_status",
            Self::CheckCounts => "check_counts",
            Self::MynaportalRequests => "mynaportal_requests",
            Self::CallbackKeys => "callback_keys",
        }
    }
}

/// What a provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Its name in logs and problems (`kihon4`, `pocketsign`).
    pub provider: &'static str,
    offered: Vec<Capability>,
}

impl Capabilities {
    pub fn all(provider: &'static str) -> Self {
        Self::only(provider, &Capability::ALL)
    }

    pub fn only(provider: &'static str, offered: &[Capability]) -> Self {
        Self {
            provider,
            offered: offered.to_vec(),
        }
    }

    pub fn offers(&self, capability: Capability) -> bool {
        self.offered.contains(&capability)
    }

    pub fn offered(&self) -> impl Iterator<Item = Capability> + '_ {
        self.offered.iter().copied()
    }

    pub fn missing(&self) -> impl Iterator<Item = Capability> + '_ {
        Capability::ALL.into_iter().filter(|c| !self.offers(*c))
    }

    /// Says at start-up what the provider offers: one line, then one
    /// warning per missing capability, naming the provider.
    pub fn announce(&self) {
        let offered: Vec<&str> = self.offered().map(Capability::as_str).collect();
        tracing::info!(provider = self.provider, offered = %offered.join(","), "provider capabilities");
        for missing in self.missing() {
            tracing::warn!(
                provider = self.provider,
                capability = missing.as_str(),
                "the provider does not offer this capability: what needs it answers provider-capability-unsupported"
            );
        }
    }
}

/// The provider client of `kind`, its capabilities announced.
pub fn connect(
    kind: ProviderKind,
    settings: ProviderSettings,
    check_method: CheckMethod,
) -> Result<Arc<dyn Provider>, String> {
    let provider: Arc<dyn Provider> = match kind {
        ProviderKind::Kihon4 => Arc::new(HttpProvider::new(settings)?),
        ProviderKind::PocketSign => Arc::new(PocketSignProvider::new(settings, check_method)?),
    };
    provider.capabilities().announce();
    Ok(provider)
}
