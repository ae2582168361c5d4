//! Sync: runs, one job per customer to query, reviews for a person to
//! decide, and the cron ticks already acted on.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    Id,
    Trigger,
    Scope,
    CustomerId,
    Status,
    RequestedBy,
    Error,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum SyncJobs {
    Table,
    Id,
    RunId,
    CustomerId,
    CertSerial,
    Status,
    Attempts,
    RunAt,
    LeaseOwner,
    LeaseExpiresAt,
    LastError,
    Outcome,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Reviews {
    Table,
    Id,
    CustomerId,
    Kind,
    Detail,
    Status,
    CreatedAt,
    ResolvedAt,
    ResolvedBy,
    Resolution,
    Note,
}

/// The reminders and renewal requests sent for a consent, one per period.
#[derive(DeriveIden)]
enum ConsentReminders {
    Table,
    ConsentId,
    Kind,
    PeriodStart,
    NoticeId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CronTicks {
    Table,
    Job,
    Tick,
    Owner,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SyncRuns::Table)
                    .col(uuid(SyncRuns::Id).primary_key())
                    .col(string_len(SyncRuns::Trigger, 16))
                    .col(string_len(SyncRuns::Scope, 16))
                    .col(uuid_null(SyncRuns::CustomerId))
                    .col(string_len(SyncRuns::Status, 16))
                    .col(string_len(SyncRuns::RequestedBy, 200))
                    .col(text_null(SyncRuns::Error))
                    .col(timestamp_with_time_zone(SyncRuns::CreatedAt))
                    .col(timestamp_with_time_zone_null(SyncRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(SyncRuns::FinishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SyncJobs::Table)
                    .col(uuid(SyncJobs::Id).primary_key())
                    .col(uuid(SyncJobs::RunId))
                    .col(uuid(SyncJobs::CustomerId))
                    .col(string_len(SyncJobs::CertSerial, 40))
                    .col(string_len(SyncJobs::Status, 16))
                    .col(integer(SyncJobs::Attempts))
                    .col(timestamp_with_time_zone(SyncJobs::RunAt))
                    .col(string_len_null(SyncJobs::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(SyncJobs::LeaseExpiresAt))
                    .col(text_null(SyncJobs::LastError))
                    .col(string_len_null(SyncJobs::Outcome, 32))
                    .col(timestamp_with_time_zone(SyncJobs::CreatedAt))
                    .col(timestamp_with_time_zone_null(SyncJobs::FinishedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("sync_jobs_due", vec![SyncJobs::Status, SyncJobs::RunAt]),
            ("sync_jobs_run", vec![SyncJobs::RunId, SyncJobs::Outcome]),
        ] {
            let mut index = Index::create();
            index.name(name).table(SyncJobs::Table);
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        // One customer never has two jobs in flight (a partial index, on both databases).
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX sync_jobs_one_in_flight ON sync_jobs (customer_id) WHERE status = 'pending'",
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Reviews::Table)
                    .col(uuid(Reviews::Id).primary_key())
                    .col(uuid(Reviews::CustomerId))
                    .col(string_len(Reviews::Kind, 32))
                    .col(json_null(Reviews::Detail))
                    .col(string_len(Reviews::Status, 16))
                    .col(timestamp_with_time_zone(Reviews::CreatedAt))
                    .col(timestamp_with_time_zone_null(Reviews::ResolvedAt))
                    .col(string_len_null(Reviews::ResolvedBy, 200))
                    .col(string_len_null(Reviews::Resolution, 32))
                    .col(text_null(Reviews::Note))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reviews_status")
                    .table(Reviews::Table)
                    .col(Reviews::Status)
                    .col(Reviews::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsentReminders::Table)
                    .col(uuid(ConsentReminders::ConsentId))
                    .col(string_len(ConsentReminders::Kind, 32))
                    .col(timestamp_with_time_zone(ConsentReminders::PeriodStart))
                    .col(uuid(ConsentReminders::NoticeId))
                    .col(timestamp_with_time_zone(ConsentReminders::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ConsentReminders::ConsentId)
                            .col(ConsentReminders::Kind)
                            .col(ConsentReminders::PeriodStart),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CronTicks::Table)
                    .col(string_len(CronTicks::Job, 64))
                    .col(timestamp_with_time_zone(CronTicks::Tick))
                    .col(string_len(CronTicks::Owner, 128))
                    .col(timestamp_with_time_zone(CronTicks::CreatedAt))
                    .primary_key(Index::create().col(CronTicks::Job).col(CronTicks::Tick))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CronTicks::Table.into_iden(),
            ConsentReminders::Table.into_iden(),
            Reviews::Table.into_iden(),
            SyncJobs::Table.into_iden(),
            SyncRuns::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
