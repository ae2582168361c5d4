use sea_orm::entity::prelude::*;

/// An audit event queued for the chain (see `crate::audit::sequence`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_queue")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The queuing transaction's id (PostgreSQL's `pg_current_xact_id()`):
    /// its events are sequenced together.
    pub xid: i64,
    /// When the event happened: its `at` in the chain.
    pub queued_at: DateTimeUtc,
    pub actor: String,
    pub request_id: Option<String>,
    pub action: String,
    pub subject_type: String,
    pub subject_id: Option<String>,
    pub customer_id: Option<Uuid>,
    pub customer_ref: Option<String>,
    /// The event's `data` (commitments in place of personal values), JSON.
    pub data: String,
    /// `[{"field", "value", "salt"}]`, JSON: the personal values behind the commitments.
    pub personal: String,
    /// `[{"kind", "customer_id", "data"}]`, JSON: the change feed's events.
    pub changes: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
