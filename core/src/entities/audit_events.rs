use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub occurred_at: DateTimeUtc,
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: Option<String>,
    pub customer_id: Option<Uuid>,
    pub request_id: Option<String>,
    /// Exactly the bytes that were hashed (canonical JSON, personal data as commitments).
    pub canonical: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
