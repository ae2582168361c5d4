//! Rate limits: requests per minute per client address (for requests
//! without a valid token) and per token subject (for those with one), and
//! the stricter limit of the customer's pages. Each limit is a GCRA
//! ([`governor`]) that allows its whole minute's worth at once and then one
//! request per 60/n seconds; each process counts on its own.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kihon4_core::client_address::{TrustedProxies, source_key};

/// Requests per client address per minute on the customer's pages.
pub const PAGES_PER_MINUTE: u32 = 60;

/// How often (in checks) limiters forget keys that are idle again.
const SWEEP_EVERY: u64 = 4096;

/// One keyed limit.
pub struct Limit {
    limiter: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl Limit {
    pub fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            checks: AtomicU64::new(0),
        }
    }

    /// `Ok` when `key` may have another request now; else the whole seconds to wait.
    pub fn check(&self, key: &str) -> Result<(), u32> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                    .unwrap_or(u32::MAX)
                    .max(1)
            })
    }
}

/// Every limit of the API, and whose word on the client's address counts.
pub struct Limits {
    pub per_address: Limit,
    pub per_subject: Limit,
    pub pages: Limit,
    pub proxies: TrustedProxies,
}

impl Limits {
    pub fn new(per_address: u32, per_subject: u32, proxies: TrustedProxies) -> Self {
        Self {
            per_address: Limit::per_minute(per_address),
            per_subject: Limit::per_minute(per_subject),
            pages: Limit::per_minute(PAGES_PER_MINUTE),
            proxies,
        }
    }

    pub fn from_config(config: &kihon4_core::config::Config) -> Self {
        let limits = config.limits();
        Self::new(limits.per_address, limits.per_subject, limits.proxies)
    }

    /// The client's address: the peer's, or what a trusted proxy reports.
    pub fn client_address(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let values = req
            .headers()
            .get_all(self.proxies.header.name())
            .filter_map(|v| v.to_str().ok());
        Some(self.proxies.client(peer, values))
    }
}

/// The client of a request, as its limits and refusals count it.
#[derive(Debug, Clone)]
pub struct ClientSource(pub String);

impl ClientSource {
    pub fn of(limits: &Limits, req: &HttpRequest) -> Self {
        Self(match limits.client_address(req) {
            Some(address) => format!("address:{}", source_key(address)),
            None => "address:unknown".to_owned(),
        })
    }
}
