use sea_orm::entity::prelude::*;

/// A C2SP checkpoint of the audit log: the signed note, as served.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tree_size: i64,
    pub root_hash: Vec<u8>,
    /// The signed note: the checkpoint text, a blank line, the signature.
    pub note: String,
    /// The signed-note key id (8 hex digits) of the log key that signed it.
    pub key_id: String,
    pub signed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
