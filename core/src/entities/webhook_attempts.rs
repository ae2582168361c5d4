use sea_orm::entity::prelude::*;

/// One attempt to deliver an event to an endpoint, as it went.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub position: i64,
    pub attempted_at: DateTimeUtc,
    /// The receiver's status, when it answered.
    pub status_code: Option<i32>,
    /// Why it failed (never the receiver's body).
    pub error: Option<String>,
    pub duration_ms: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
