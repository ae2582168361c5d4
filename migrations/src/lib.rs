//! kihon4's schema: one migration set for SQLite and PostgreSQL.
//!
//! Migrations only ever add: a released migration is never edited.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_foundation;
mod m20261126_000002_consent;
mod m20261126_000003_outbox;
mod m20261126_000004_sync;
mod m20261126_000005_detection_lease_and_optional_items;
mod m20261126_000006_consent_requests;
mod m20261126_000007_audit_checkpoints;
mod m20261202_000008_registration_wait;
mod m20261202_000009_audit_exports;
mod m20261202_000010_idempotency_key_hash;
mod m20261202_000011_refusal_tallies;
mod m20261203_000012_consent_evidence_form;
mod m20261203_000013_change_feed;
mod m20261204_000014_change_customer_seqs;
mod m20261205_000015_audit_log;
mod m20261206_000016_audit_queue;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_foundation::Migration),
            Box::new(m20261126_000002_consent::Migration),
            Box::new(m20261126_000003_outbox::Migration),
            Box::new(m20261126_000004_sync::Migration),
            Box::new(m20261126_000005_detection_lease_and_optional_items::Migration),
            Box::new(m20261126_000006_consent_requests::Migration),
            Box::new(m20261126_000007_audit_checkpoints::Migration),
            Box::new(m20261202_000008_registration_wait::Migration),
            Box::new(m20261202_000009_audit_exports::Migration),
            Box::new(m20261202_000010_idempotency_key_hash::Migration),
            Box::new(m20261202_000011_refusal_tallies::Migration),
            Box::new(m20261203_000012_consent_evidence_form::Migration),
            Box::new(m20261203_000013_change_feed::Migration),
            Box::new(m20261204_000014_change_customer_seqs::Migration),
            Box::new(m20261205_000015_audit_log::Migration),
            Box::new(m20261206_000016_audit_queue::Migration),
        ]
    }
}

/// How far a database's schema is from this binary's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations this binary has that the database has not applied.
    pub pending: Vec<String>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Reads the schema status without changing anything in the database.
pub async fn schema_status<C: ConnectionTrait>(db: &C) -> Result<SchemaStatus, DbErr> {
    let pending = Migrator::get_pending_migrations_read_only(db)
        .await?
        .into_iter()
        .map(|m| m.name().to_owned())
        .collect();
    Ok(SchemaStatus { pending })
}
