use sea_orm::entity::prelude::*;

/// A key of the audit log and the trees it may sign (`first_size` to
/// `last_size`, open while it is the current key).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log_keys")]
pub struct Model {
    /// The key's own id (16 hex digits of the SHA-256 of its public key).
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: String,
    /// Its signed-note key id as the log's key (8 hex digits).
    pub note_key_id: String,
    pub origin: String,
    /// Its verifier key (`<origin>+<id>+<key>`).
    pub vkey: String,
    pub public_key_pem: String,
    pub valid_from: DateTimeUtc,
    pub valid_until: Option<DateTimeUtc>,
    pub first_size: i64,
    pub last_size: Option<i64>,
    /// The event that brought it in, and the statement both keys signed.
    pub rotation_seq: Option<i64>,
    pub statement: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
