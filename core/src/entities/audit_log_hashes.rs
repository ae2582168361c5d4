use sea_orm::entity::prelude::*;

/// One stored hash of the audit log's Merkle tree, at its index in the
/// dense order of Go's `sumdb/tlog` (`stored_hash_index(level, n)`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log_hashes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i64,
    pub hash: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
