//! Mynaportal-routed consent: the requests sent to existing customers, and
//! the provider callbacks received (by `jti`, so that none is taken twice).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsentRequests {
    Table,
    Id,
    CustomerId,
    Status,
    ProviderRequestId,
    ConsentUrl,
    TokenSha256,
    TokenUsedAt,
    ExpiresAt,
    Reminders,
    RemindedAt,
    ConsentId,
    CreatedAt,
    DecidedAt,
}

#[derive(DeriveIden)]
enum Consents {
    Table,
    Ppid,
}

#[derive(DeriveIden)]
enum WebhookReceipts {
    Table,
    Jti,
    BodySha256,
    RequestId,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsentRequests::Table)
                    .col(uuid(ConsentRequests::Id).primary_key())
                    .col(uuid(ConsentRequests::CustomerId))
                    .col(string_len(ConsentRequests::Status, 16))
                    .col(string_len(ConsentRequests::ProviderRequestId, 128))
                    .col(string_len(ConsentRequests::ConsentUrl, 2000))
                    .col(string_len_uniq(ConsentRequests::TokenSha256, 64))
                    .col(timestamp_with_time_zone_null(ConsentRequests::TokenUsedAt))
                    .col(timestamp_with_time_zone(ConsentRequests::ExpiresAt))
                    .col(integer(ConsentRequests::Reminders))
                    .col(timestamp_with_time_zone_null(ConsentRequests::RemindedAt))
                    .col(uuid_null(ConsentRequests::ConsentId))
                    .col(timestamp_with_time_zone(ConsentRequests::CreatedAt))
                    .col(timestamp_with_time_zone_null(ConsentRequests::DecidedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("consent_requests_customer")
                    .table(ConsentRequests::Table)
                    .col(ConsentRequests::CustomerId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("consent_requests_status_expires")
                    .table(ConsentRequests::Table)
                    .col(ConsentRequests::Status)
                    .col(ConsentRequests::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookReceipts::Table)
                    .col(string_len(WebhookReceipts::Jti, 200).primary_key())
                    .col(string_len(WebhookReceipts::BodySha256, 64))
                    .col(uuid_null(WebhookReceipts::RequestId))
                    .col(timestamp_with_time_zone(WebhookReceipts::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        // The pairwise id Mynaportal gives the holder for this institution.
        manager
            .alter_table(
                Table::alter()
                    .table(Consents::Table)
                    .add_column(string_len_null(Consents::Ppid, 128))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Consents::Table)
                    .drop_column(Consents::Ppid)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookReceipts::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ConsentRequests::Table).to_owned())
            .await
    }
}
