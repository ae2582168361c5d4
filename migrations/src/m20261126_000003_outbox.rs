//! The outbox: notices written in the transaction of the change that causes
//! them, and sent by the worker.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    CustomerId,
    Kind,
    Locale,
    ToAddress,
    Message,
    MessageId,
    Status,
    Attempts,
    RunAt,
    LeaseOwner,
    LeaseExpiresAt,
    LastError,
    ServerResponse,
    CreatedAt,
    SentAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(uuid(Outbox::Id).primary_key())
                    .col(uuid_null(Outbox::CustomerId))
                    .col(string_len(Outbox::Kind, 32))
                    .col(string_len(Outbox::Locale, 2))
                    .col(string_len(Outbox::ToAddress, 254))
                    // The whole message as sent (RFC 5322, 7-bit): a resend
                    // after an ambiguous failure is the same bytes.
                    .col(blob(Outbox::Message))
                    .col(string_len_uniq(Outbox::MessageId, 320))
                    .col(string_len(Outbox::Status, 16))
                    .col(integer(Outbox::Attempts))
                    .col(timestamp_with_time_zone(Outbox::RunAt))
                    .col(string_len_null(Outbox::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(Outbox::LeaseExpiresAt))
                    .col(text_null(Outbox::LastError))
                    .col(text_null(Outbox::ServerResponse))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_due")
                    .table(Outbox::Table)
                    .col(Outbox::Status)
                    .col(Outbox::RunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_customer")
                    .table(Outbox::Table)
                    .col(Outbox::CustomerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await
    }
}
