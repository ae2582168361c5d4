use sea_orm::entity::prelude::*;

/// The size of the last checkpoint a witness cosigned.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log_witnesses")]
pub struct Model {
    /// `<name>+<key id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub witness: String,
    pub size: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
