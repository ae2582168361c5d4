use sea_orm::entity::prelude::*;

/// One revocation check kihon4 made or asked for, by purpose.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "revocation_checks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub purpose: String,
    pub method: String,
    pub cert_serial: String,
    pub outcome: String,
    pub checked_at: DateTimeUtc,
    pub consent_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
