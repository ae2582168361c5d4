use sea_orm::entity::prelude::*;

/// One event of the change feed, numbered in commit order (`position`).
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "change_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i64,
    #[sea_orm(unique)]
    pub id: Uuid,
    pub event_type: String,
    pub customer_id: Uuid,
    pub external_ref: String,
    pub customer_seq: i64,
    pub occurred_at: DateTimeUtc,
    /// The audit event this one reports.
    pub audit_seq: i64,
    /// The JSON `data`, with every value (personal under `before`/`after`).
    pub data: String,
}

// `data` may hold the four items: a row printed by mistake shows only its identity.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeEvent")
            .field("position", &self.position)
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
