//! Why the provider refused a registration (its problem type's last path
//! segment, e.g. `certificate-revoked`), so that sync can tell a consent
//! the provider will never hold because its certificate was revoked from
//! one refused for another reason.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProviderRegistrations {
    Table,
    Refusal,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProviderRegistrations::Table)
                    .add_column(string_len_null(ProviderRegistrations::Refusal, 64))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProviderRegistrations::Table)
                    .drop_column(ProviderRegistrations::Refusal)
                    .to_owned(),
            )
            .await
    }
}
