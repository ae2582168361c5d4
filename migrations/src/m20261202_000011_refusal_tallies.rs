//! Refused requests counted per source and time window, so that a flood of
//! them adds a bounded number of audit events: a row per (action, source,
//! window), sealed into one audit event when its window has closed.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RefusalTallies {
    Table,
    Action,
    Source,
    WindowStart,
    WindowSeconds,
    Actor,
    Count,
    Aggregated,
    FirstRequestId,
    LastRequestId,
    FirstAt,
    LastAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RefusalTallies::Table)
                    .col(string_len(RefusalTallies::Action, 64))
                    .col(string_len(RefusalTallies::Source, 200))
                    // Unix seconds, so that both databases compare them alike.
                    .col(big_integer(RefusalTallies::WindowStart))
                    .col(big_integer(RefusalTallies::WindowSeconds))
                    .col(string_len(RefusalTallies::Actor, 300))
                    .col(big_integer(RefusalTallies::Count))
                    .col(big_integer(RefusalTallies::Aggregated))
                    .col(string_len_null(RefusalTallies::FirstRequestId, 128))
                    .col(string_len_null(RefusalTallies::LastRequestId, 128))
                    .col(timestamp_with_time_zone_null(RefusalTallies::FirstAt))
                    .col(timestamp_with_time_zone_null(RefusalTallies::LastAt))
                    .primary_key(
                        Index::create()
                            .col(RefusalTallies::Action)
                            .col(RefusalTallies::Source)
                            .col(RefusalTallies::WindowStart),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refusal_tallies_window_start")
                    .table(RefusalTallies::Table)
                    .col(RefusalTallies::WindowStart)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RefusalTallies::Table).to_owned())
            .await
    }
}
