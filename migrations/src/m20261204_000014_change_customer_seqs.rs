//! Each customer's last `customer_seq` in the change feed, kept apart from
//! the events: once a customer's events are all purged after their
//! retention, the next one still follows the last one told, instead of
//! starting again at 1. Filled from the events kept.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ChangeCustomerSeqs {
    Table,
    CustomerId,
    LastSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeCustomerSeqs::Table)
                    .col(uuid(ChangeCustomerSeqs::CustomerId).primary_key())
                    .col(big_integer(ChangeCustomerSeqs::LastSeq))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO change_customer_seqs (customer_id, last_seq) \
                 SELECT customer_id, MAX(customer_seq) FROM change_events GROUP BY customer_id",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeCustomerSeqs::Table).to_owned())
            .await
    }
}
