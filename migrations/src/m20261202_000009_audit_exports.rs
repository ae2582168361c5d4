//! Audit exports, each with the range of sequence numbers fixed when it
//! started, so that its manifest can be fetched by its id later and names
//! exactly the events the export held.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditExports {
    Table,
    Id,
    CreatedAt,
    Actor,
    Format,
    RangeFrom,
    RangeTo,
    FirstSeq,
    LastSeq,
    Events,
    PersonalData,
    Checkpoint,
    Manifest,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditExports::Table)
                    .col(uuid(AuditExports::Id).primary_key())
                    .col(timestamp_with_time_zone(AuditExports::CreatedAt))
                    .col(string_len(AuditExports::Actor, 128))
                    .col(string_len(AuditExports::Format, 8))
                    .col(timestamp_with_time_zone_null(AuditExports::RangeFrom))
                    .col(timestamp_with_time_zone_null(AuditExports::RangeTo))
                    .col(big_integer_null(AuditExports::FirstSeq))
                    .col(big_integer_null(AuditExports::LastSeq))
                    .col(boolean(AuditExports::Events))
                    .col(boolean(AuditExports::PersonalData))
                    .col(text(AuditExports::Checkpoint))
                    .col(text_null(AuditExports::Manifest))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditExports::Table).to_owned())
            .await
    }
}
