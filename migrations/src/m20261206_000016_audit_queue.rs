//! The queue of audit events not yet in the chain (docs/architecture.md,
//! "The audit log"): a transaction that finds the chain's head taken by
//! another writes its events here and commits without waiting; the
//! sequencer gives them their place in the chain, in the order they were
//! queued, each transaction's together (`xid`: the queuing transaction's
//! id; ids alone interleave when transactions queue at once), and removes
//! them. Each row holds what the chain's row will:
//! the event's fields, its data with commitments, the personal values
//! behind them, and the change feed's events it reports.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditQueue {
    Table,
    Id,
    Xid,
    QueuedAt,
    Actor,
    RequestId,
    Action,
    SubjectType,
    SubjectId,
    CustomerId,
    CustomerRef,
    Data,
    Personal,
    Changes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditQueue::Table)
                    .col(big_pk_auto(AuditQueue::Id))
                    .col(big_integer(AuditQueue::Xid))
                    .col(timestamp_with_time_zone(AuditQueue::QueuedAt))
                    .col(string(AuditQueue::Actor))
                    .col(string_null(AuditQueue::RequestId))
                    .col(string(AuditQueue::Action))
                    .col(string(AuditQueue::SubjectType))
                    .col(string_null(AuditQueue::SubjectId))
                    .col(uuid_null(AuditQueue::CustomerId))
                    .col(string_null(AuditQueue::CustomerRef))
                    .col(text(AuditQueue::Data))
                    .col(text(AuditQueue::Personal))
                    .col(text(AuditQueue::Changes))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditQueue::Table).to_owned())
            .await
    }
}
