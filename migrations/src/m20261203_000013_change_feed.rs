//! The change feed: `change_events`, written in the transaction of the
//! change it reports and numbered in commit order under `change_feed`'s
//! one row; the webhook endpoints the institution's systems registered,
//! each event's delivery to each endpoint, and every attempt made.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ChangeEvents {
    Table,
    Position,
    Id,
    EventType,
    CustomerId,
    ExternalRef,
    CustomerSeq,
    OccurredAt,
    AuditSeq,
    Data,
}

#[derive(DeriveIden)]
enum ChangeFeed {
    Table,
    Id,
    LastPosition,
    PurgedThrough,
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    Url,
    EventTypes,
    Status,
    DisabledReason,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    FannedOutTo,
    FailingSince,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    Position,
    CustomerId,
    Status,
    Attempts,
    RunAt,
    LeaseOwner,
    LeaseExpiresAt,
    FirstAttemptAt,
    LastStatusCode,
    LastError,
    CreatedAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    DeliveryId,
    EndpointId,
    Position,
    AttemptedAt,
    StatusCode,
    Error,
    DurationMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeEvents::Table)
                    .col(big_integer(ChangeEvents::Position).primary_key())
                    .col(uuid_uniq(ChangeEvents::Id))
                    .col(string_len(ChangeEvents::EventType, 32))
                    .col(uuid(ChangeEvents::CustomerId))
                    .col(string_len(ChangeEvents::ExternalRef, 128))
                    .col(big_integer(ChangeEvents::CustomerSeq))
                    .col(timestamp_with_time_zone(ChangeEvents::OccurredAt))
                    .col(big_integer(ChangeEvents::AuditSeq))
                    // The event's `data` with every value; what leaves is
                    // cut to the configured policy when it is read.
                    .col(text(ChangeEvents::Data))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "change_events_customer",
                vec![ChangeEvents::CustomerId, ChangeEvents::CustomerSeq],
            ),
            ("change_events_occurred", vec![ChangeEvents::OccurredAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(ChangeEvents::Table);
            for col in cols {
                index.col(col);
            }
            if name == "change_events_customer" {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ChangeFeed::Table)
                    .col(integer(ChangeFeed::Id).primary_key())
                    .col(big_integer(ChangeFeed::LastPosition))
                    .col(big_integer(ChangeFeed::PurgedThrough))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ChangeFeed::Table)
                    .columns([
                        ChangeFeed::Id,
                        ChangeFeed::LastPosition,
                        ChangeFeed::PurgedThrough,
                    ])
                    .values_panic([1.into(), 0i64.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(uuid(WebhookEndpoints::Id).primary_key())
                    .col(string_len(WebhookEndpoints::Url, 2048))
                    // A JSON array of event types; empty for every type.
                    .col(text(WebhookEndpoints::EventTypes))
                    .col(string_len(WebhookEndpoints::Status, 16))
                    .col(string_len_null(WebhookEndpoints::DisabledReason, 32))
                    .col(string_len(WebhookEndpoints::Secret, 128))
                    .col(string_len_null(WebhookEndpoints::PreviousSecret, 128))
                    .col(timestamp_with_time_zone_null(
                        WebhookEndpoints::PreviousSecretUntil,
                    ))
                    .col(big_integer(WebhookEndpoints::FannedOutTo))
                    .col(timestamp_with_time_zone_null(
                        WebhookEndpoints::FailingSince,
                    ))
                    .col(string_len(WebhookEndpoints::CreatedBy, 200))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(uuid(WebhookDeliveries::Id).primary_key())
                    .col(uuid(WebhookDeliveries::EndpointId))
                    .col(big_integer(WebhookDeliveries::Position))
                    .col(uuid(WebhookDeliveries::CustomerId))
                    .col(string_len(WebhookDeliveries::Status, 16))
                    .col(integer(WebhookDeliveries::Attempts))
                    .col(timestamp_with_time_zone(WebhookDeliveries::RunAt))
                    .col(string_len_null(WebhookDeliveries::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::LeaseExpiresAt,
                    ))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::FirstAttemptAt,
                    ))
                    .col(integer_null(WebhookDeliveries::LastStatusCode))
                    .col(text_null(WebhookDeliveries::LastError))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::DeliveredAt,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "webhook_deliveries_order",
                vec![
                    WebhookDeliveries::EndpointId,
                    WebhookDeliveries::CustomerId,
                    WebhookDeliveries::Status,
                    WebhookDeliveries::Position,
                ],
            ),
            (
                "webhook_deliveries_due",
                vec![WebhookDeliveries::Status, WebhookDeliveries::RunAt],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(WebhookDeliveries::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(uuid(WebhookAttempts::Id).primary_key())
                    .col(uuid(WebhookAttempts::DeliveryId))
                    .col(uuid(WebhookAttempts::EndpointId))
                    .col(big_integer(WebhookAttempts::Position))
                    .col(timestamp_with_time_zone(WebhookAttempts::AttemptedAt))
                    .col(integer_null(WebhookAttempts::StatusCode))
                    .col(text_null(WebhookAttempts::Error))
                    .col(integer(WebhookAttempts::DurationMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_attempts_endpoint")
                    .table(WebhookAttempts::Table)
                    .col(WebhookAttempts::EndpointId)
                    .col(WebhookAttempts::AttemptedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
            ChangeFeed::Table.into_iden(),
            ChangeEvents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
