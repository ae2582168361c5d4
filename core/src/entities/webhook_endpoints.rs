use sea_orm::entity::prelude::*;

/// A receiver of the change feed registered by the institution.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub url: String,
    /// A JSON array of event types; empty for every type.
    pub event_types: String,
    /// `active` or `disabled`.
    pub status: String,
    /// `operator`, `failing` or `gone` (the receiver answered 410), when disabled.
    pub disabled_reason: Option<String>,
    /// `whsec_…`.
    pub secret: String,
    /// The secret before the last rotation, also signed with until
    /// `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTimeUtc>,
    /// The feed position up to which deliveries were made for it.
    pub fanned_out_to: i64,
    /// Since when its oldest undelivered event has failed.
    pub failing_since: Option<DateTimeUtc>,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

// Secrets are never printed.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
