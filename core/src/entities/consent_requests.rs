use sea_orm::entity::prelude::*;

/// A request to an existing customer to consent on Mynaportal.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `sent`, `started`, `granted`, `declined` or `expired`.
    pub status: String,
    pub provider_request_id: String,
    pub consent_url: String,
    /// SHA-256 (hex) of the landing page's single-use token; the token
    /// itself is only in the email.
    #[sea_orm(unique)]
    pub token_sha256: String,
    pub token_used_at: Option<DateTimeUtc>,
    pub expires_at: DateTimeUtc,
    pub reminders: i32,
    pub reminded_at: Option<DateTimeUtc>,
    pub consent_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub decided_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
