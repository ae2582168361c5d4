use sea_orm::entity::prelude::*;

/// An audit export, its range fixed when it started.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_exports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub created_at: DateTimeUtc,
    pub actor: String,
    pub format: String,
    pub range_from: Option<DateTimeUtc>,
    pub range_to: Option<DateTimeUtc>,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// The events were exported (not only the companion file).
    pub events: bool,
    /// The personal values in clear were exported with it.
    pub personal_data: bool,
    /// The signed checkpoint taken when it started (JSON).
    #[sea_orm(column_type = "Text")]
    pub checkpoint: String,
    /// Its signed manifest (JSON), once made.
    #[sea_orm(column_type = "Text", nullable)]
    pub manifest: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
