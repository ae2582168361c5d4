//! Asking customers on Mynaportal (docs/architecture.md#mynaportal-consent-requests):
//! the channel as configured, the rule for when it may be used, and the
//! batch of `kihon4 consent-requests send --all-without-consent`. The route
//! asks one customer, the command every customer without consent; both go
//! through [`Mynaportal::ready`] first.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::callbacks::{CallbackSettings, ProviderKeys};
use super::requests::{self, RequestSettings};
use crate::audit::AuditContext;
use crate::entities::consent_requests;
use crate::error::CoreError;
use crate::notices::Notices;
use crate::provider::Provider;

/// Mynaportal-routed consent: the provider, where links and callbacks
/// point, the provider's callback keys, and whom callbacks must come from
/// (`None` until `KIHON4_PROVIDER_ISSUER` is set: then every callback is
/// refused).
pub struct Mynaportal {
    pub provider: Arc<dyn Provider>,
    pub requests: RequestSettings,
    pub keys: ProviderKeys,
    pub callbacks: Option<CallbackSettings>,
}

/// Why customers cannot be asked on Mynaportal now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "No provider is configured (KIHON4_PROVIDER_URL), so customers cannot be asked on Mynaportal."
    )]
    NoProvider,
    #[error(
        "KIHON4_PROVIDER_ISSUER is not set, so no Mynaportal callback can be trusted and no decision could arrive; customers are not asked until it is set."
    )]
    NoIssuer,
    #[error(
        "The provider's callback keys (JWKS) cannot be had now, so no Mynaportal decision could be checked; customers are not asked until they can."
    )]
    NoCallbackKeys,
}

/// How a batch of requests went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// The customers without consent it set out to ask.
    pub customers: u64,
    pub sent: u64,
    /// Consented, asked, gone or refused meanwhile.
    pub skipped: u64,
    /// The provider did not take the request: asked again on the next run.
    pub failed: u64,
}

impl Batch {
    /// The customers dealt with so far.
    pub fn done(&self) -> u64 {
        self.sent + self.skipped + self.failed
    }
}

/// Customers asked per page of [`requests::customers_to_ask`].
const ASK_PAGE: u64 = 1000;

impl Mynaportal {
    pub fn new(
        requests: RequestSettings,
        callbacks: Option<CallbackSettings>,
        provider: Arc<dyn Provider>,
    ) -> Self {
        Self {
            keys: ProviderKeys::new(provider.clone()),
            provider,
            requests,
            callbacks,
        }
    }

    /// The channel, when customers may be asked on it now: only while a
    /// decision could arrive (the provider's issuer is known) and be checked
    /// (its callback keys can be had).
    pub async fn ready(mynaportal: Option<&Self>) -> Result<&Self, Unavailable> {
        let mynaportal = mynaportal.ok_or(Unavailable::NoProvider)?;
        if mynaportal.callbacks.is_none() {
            return Err(Unavailable::NoIssuer);
        }
        if !mynaportal.keys.available().await {
            return Err(Unavailable::NoCallbackKeys);
        }
        Ok(mynaportal)
    }

    /// Asks one customer ([`requests::create`]).
    pub async fn ask(
        &self,
        db: &DatabaseConnection,
        notices: &Notices,
        ctx: &AuditContext,
        customer_id: Uuid,
    ) -> Result<consent_requests::Model, CoreError> {
        requests::create(
            db,
            self.provider.as_ref(),
            notices,
            &self.requests,
            ctx,
            customer_id,
        )
        .await
    }

    /// Asks every customer with neither an active consent nor an open
    /// request (at most `limit`). Run again, it goes on where it stopped:
    /// those asked have an open request. `progress` gets the batch once the
    /// customers are known and after each one. A refusal that says the
    /// customer need not be asked is skipped, one of the provider counted as
    /// failed; anything else stops the batch.
    pub async fn ask_all_without_consent(
        &self,
        db: &DatabaseConnection,
        notices: &Notices,
        ctx: &AuditContext,
        limit: Option<u64>,
        mut progress: impl FnMut(&Batch),
    ) -> Result<Batch, CoreError> {
        let limit = limit.unwrap_or(u64::MAX);
        let mut ids = Vec::new();
        let mut after = None;
        while (ids.len() as u64) < limit {
            let page =
                requests::customers_to_ask(db, after, ASK_PAGE.min(limit - ids.len() as u64))
                    .await?;
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            ids.extend(page);
        }
        let mut batch = Batch {
            customers: ids.len() as u64,
            ..Batch::default()
        };
        progress(&batch);
        for id in ids {
            match self.ask(db, notices, ctx, id).await {
                Ok(_) => batch.sent += 1,
                Err(e) if need_not_ask(&e) => batch.skipped += 1,
                Err(CoreError::Upstream(why)) => {
                    batch.failed += 1;
                    tracing::warn!(customer = %id, error = %why, "the provider did not take a consent request");
                }
                Err(e) => return Err(e),
            }
            progress(&batch);
        }
        Ok(batch)
    }
}

/// Whether a refusal to ask a customer of a batch says that they need not
/// be asked (consented or asked meanwhile, gone, or not to be asked).
fn need_not_ask(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::AlreadyConsenting
            | CoreError::ConsentRequestOpen
            | CoreError::NotFound(_)
            | CoreError::Consent(_)
    )
}
