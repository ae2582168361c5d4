use sea_orm::entity::prelude::*;

/// One thing that happened to a consent: granted, renewed, withdrawn, expired.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub consent_id: Uuid,
    pub seq: i32,
    pub kind: String,
    pub occurred_at: DateTimeUtc,
    pub actor: String,
    pub reason: Option<String>,
    pub related_consent_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
