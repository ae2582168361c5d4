use sea_orm::entity::prelude::*;

/// A witness's cosignature of a checkpoint of the audit log: the signature
/// line, as the witness returned it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log_cosignatures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tree_size: i64,
    /// The witness: `<name>+<key id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub witness: String,
    pub line: String,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
