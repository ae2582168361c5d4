//! How a consent was signed (`evidence_form`: `cms`, `pkcs1_sha256` for a
//! raw card signature, `mynaportal` for a decision given on Mynaportal), and
//! the platform operator's id of the holder when its API keeps one
//! (`provider_user_id`, PocketSign's `user.id`). Consents recorded before
//! were CMS documents, or Mynaportal decisions by their channel.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Consents {
    Table,
    Channel,
    EvidenceForm,
    ProviderUserId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            string_len(Consents::EvidenceForm, 16)
                .default("cms")
                .to_owned(),
            string_len_null(Consents::ProviderUserId, 200),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Consents::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .exec_stmt(
                Query::update()
                    .table(Consents::Table)
                    .value(Consents::EvidenceForm, "mynaportal")
                    .and_where(Expr::col(Consents::Channel).eq("mynaportal"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Consents::ProviderUserId, Consents::EvidenceForm] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Consents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
