//! Customers, their history, the audit chain and idempotency keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
    ExternalRef,
    Email,
    Locale,
    Name,
    NameFlags,
    Address,
    AddressFlags,
    BirthDate,
    Gender,
    JpkiCertSerial,
    CertNotAfter,
    Status,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Basic4History {
    Table,
    Id,
    CustomerId,
    CustomerVersion,
    Source,
    Before,
    After,
    ReportedOn,
    ChangedAt,
}

#[derive(DeriveIden)]
enum AuditChain {
    Table,
    Id,
    LastSeq,
    LastHash,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Seq,
    OccurredAt,
    Actor,
    Action,
    SubjectType,
    SubjectId,
    CustomerId,
    RequestId,
    Canonical,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditPersonalValues {
    Table,
    Seq,
    Field,
    Value,
    Salt,
    ErasedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Principal,
    Key,
    RequestHash,
    State,
    LockedUntil,
    ResponseStatus,
    ResponseHeaders,
    ResponseBody,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .col(uuid(Customers::Id).primary_key())
                    .col(string_len_uniq(Customers::ExternalRef, 64))
                    .col(string_len(Customers::Email, 254))
                    .col(string_len(Customers::Locale, 2))
                    .col(text_null(Customers::Name))
                    .col(text_null(Customers::NameFlags))
                    .col(text_null(Customers::Address))
                    .col(text_null(Customers::AddressFlags))
                    .col(date_null(Customers::BirthDate))
                    .col(string_len_null(Customers::Gender, 1))
                    .col(string_len_null(Customers::JpkiCertSerial, 40))
                    .col(timestamp_with_time_zone_null(Customers::CertNotAfter))
                    .col(string_len(Customers::Status, 16))
                    .col(big_integer(Customers::Version))
                    .col(timestamp_with_time_zone(Customers::CreatedAt))
                    .col(timestamp_with_time_zone(Customers::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("customers_jpki_cert_serial")
                    .table(Customers::Table)
                    .col(Customers::JpkiCertSerial)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditChain::Table)
                    .col(integer(AuditChain::Id).primary_key())
                    .col(big_integer(AuditChain::LastSeq))
                    .col(string_len(AuditChain::LastHash, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(AuditChain::Table)
                    .columns([AuditChain::Id, AuditChain::LastSeq, AuditChain::LastHash])
                    .values_panic([1.into(), 0i64.into(), "0".repeat(64).into()])
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(big_integer(AuditEvents::Seq).primary_key())
                    .col(timestamp_with_time_zone(AuditEvents::OccurredAt))
                    .col(string_len(AuditEvents::Actor, 128))
                    .col(string_len(AuditEvents::Action, 64))
                    .col(string_len(AuditEvents::SubjectType, 32))
                    .col(string_len_null(AuditEvents::SubjectId, 64))
                    .col(uuid_null(AuditEvents::CustomerId))
                    .col(string_len_null(AuditEvents::RequestId, 128))
                    .col(text(AuditEvents::Canonical))
                    .col(string_len(AuditEvents::PrevHash, 64))
                    .col(string_len_uniq(AuditEvents::Hash, 64))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("audit_events_occurred_at", AuditEvents::OccurredAt),
            ("audit_events_customer_id", AuditEvents::CustomerId),
            ("audit_events_action", AuditEvents::Action),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(column)
                        .col(AuditEvents::Seq)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(AuditPersonalValues::Table)
                    .col(big_integer(AuditPersonalValues::Seq))
                    .col(string_len(AuditPersonalValues::Field, 64))
                    .col(text_null(AuditPersonalValues::Value))
                    .col(string_len(AuditPersonalValues::Salt, 32))
                    .col(timestamp_with_time_zone_null(AuditPersonalValues::ErasedAt))
                    .primary_key(
                        Index::create()
                            .col(AuditPersonalValues::Seq)
                            .col(AuditPersonalValues::Field),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(AuditPersonalValues::Table, AuditPersonalValues::Seq)
                            .to(AuditEvents::Table, AuditEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Basic4History::Table)
                    .col(uuid(Basic4History::Id).primary_key())
                    .col(uuid(Basic4History::CustomerId))
                    .col(big_integer(Basic4History::CustomerVersion))
                    .col(string_len(Basic4History::Source, 16))
                    .col(json_null(Basic4History::Before))
                    .col(json(Basic4History::After))
                    .col(date_null(Basic4History::ReportedOn))
                    .col(timestamp_with_time_zone(Basic4History::ChangedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Basic4History::Table, Basic4History::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("basic4_history_customer")
                    .table(Basic4History::Table)
                    .col(Basic4History::CustomerId)
                    .col(Basic4History::ChangedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(string_len(IdempotencyKeys::Principal, 128))
                    .col(string_len(IdempotencyKeys::Key, 255))
                    .col(string_len(IdempotencyKeys::RequestHash, 64))
                    .col(string_len(IdempotencyKeys::State, 16))
                    .col(timestamp_with_time_zone(IdempotencyKeys::LockedUntil))
                    .col(integer_null(IdempotencyKeys::ResponseStatus))
                    .col(json_null(IdempotencyKeys::ResponseHeaders))
                    .col(blob_null(IdempotencyKeys::ResponseBody))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Principal)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Basic4History::Table.into_iden(),
            AuditPersonalValues::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            AuditChain::Table.into_iden(),
            Customers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
