//! Consent: the grant with its evidence, its immutable events, the
//! registrations the worker carries out with the provider, and every
//! revocation check by purpose.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Consents {
    Table,
    Id,
    CustomerId,
    Purpose,
    Channel,
    Role,
    TextVersion,
    TextSha256,
    CertSerial,
    CertNotAfter,
    GrantedAt,
    ExpiresAt,
    DocumentSha256,
    SignatureSha256,
    SignedDocument,
    Certificate,
    AnchorKeyId,
    VerificationId,
    CertificateId,
    SignedContent,
    RevocationMethod,
}

#[derive(DeriveIden)]
enum ConsentEvents {
    Table,
    Id,
    ConsentId,
    Seq,
    Kind,
    OccurredAt,
    Actor,
    Reason,
    RelatedConsentId,
}

#[derive(DeriveIden)]
enum ProviderRegistrations {
    Table,
    Id,
    ConsentId,
    CertSerial,
    Action,
    Status,
    Attempts,
    RunAt,
    LeaseOwner,
    LeaseExpiresAt,
    LastError,
    CreatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum RevocationChecks {
    Table,
    Id,
    Purpose,
    Method,
    CertSerial,
    Outcome,
    CheckedAt,
    ConsentId,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Consents::Table)
                    .col(uuid(Consents::Id).primary_key())
                    .col(uuid(Consents::CustomerId))
                    .col(string_len(Consents::Purpose, 32))
                    .col(string_len(Consents::Channel, 32))
                    .col(string_len(Consents::Role, 32))
                    .col(string_len(Consents::TextVersion, 64))
                    .col(string_len(Consents::TextSha256, 64))
                    .col(string_len(Consents::CertSerial, 40))
                    .col(timestamp_with_time_zone(Consents::CertNotAfter))
                    .col(timestamp_with_time_zone(Consents::GrantedAt))
                    .col(timestamp_with_time_zone(Consents::ExpiresAt))
                    .col(string_len(Consents::DocumentSha256, 64))
                    // A signature proves one consent only: a replay, attached
                    // or detached, is refused.
                    .col(string_len_uniq(Consents::SignatureSha256, 64))
                    .col(blob_null(Consents::SignedDocument))
                    .col(blob_null(Consents::Certificate))
                    .col(string_len_null(Consents::AnchorKeyId, 128))
                    .col(string_len_null(Consents::VerificationId, 128))
                    .col(string_len_null(Consents::CertificateId, 128))
                    .col(blob(Consents::SignedContent))
                    .col(string_len(Consents::RevocationMethod, 16))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Consents::Table, Consents::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("consents_customer")
                    .table(Consents::Table)
                    .col(Consents::CustomerId)
                    .col(Consents::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConsentEvents::Table)
                    .col(uuid(ConsentEvents::Id).primary_key())
                    .col(uuid(ConsentEvents::ConsentId))
                    .col(integer(ConsentEvents::Seq))
                    .col(string_len(ConsentEvents::Kind, 16))
                    .col(timestamp_with_time_zone(ConsentEvents::OccurredAt))
                    .col(string_len(ConsentEvents::Actor, 200))
                    .col(text_null(ConsentEvents::Reason))
                    .col(uuid_null(ConsentEvents::RelatedConsentId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ConsentEvents::Table, ConsentEvents::ConsentId)
                            .to(Consents::Table, Consents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // Two writers appending to one consent at once: one of them loses.
        manager
            .create_index(
                Index::create()
                    .name("consent_events_order")
                    .table(ConsentEvents::Table)
                    .col(ConsentEvents::ConsentId)
                    .col(ConsentEvents::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProviderRegistrations::Table)
                    .col(uuid(ProviderRegistrations::Id).primary_key())
                    .col(uuid(ProviderRegistrations::ConsentId))
                    .col(string_len(ProviderRegistrations::CertSerial, 40))
                    .col(string_len(ProviderRegistrations::Action, 16))
                    .col(string_len(ProviderRegistrations::Status, 16))
                    .col(integer(ProviderRegistrations::Attempts))
                    .col(timestamp_with_time_zone(ProviderRegistrations::RunAt))
                    .col(string_len_null(ProviderRegistrations::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(
                        ProviderRegistrations::LeaseExpiresAt,
                    ))
                    .col(text_null(ProviderRegistrations::LastError))
                    .col(timestamp_with_time_zone(ProviderRegistrations::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        ProviderRegistrations::CompletedAt,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                ProviderRegistrations::Table,
                                ProviderRegistrations::ConsentId,
                            )
                            .to(Consents::Table, Consents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("provider_registrations_due")
                    .table(ProviderRegistrations::Table)
                    .col(ProviderRegistrations::Status)
                    .col(ProviderRegistrations::RunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("provider_registrations_consent")
                    .table(ProviderRegistrations::Table)
                    .col(ProviderRegistrations::ConsentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("provider_registrations_serial")
                    .table(ProviderRegistrations::Table)
                    .col(ProviderRegistrations::CertSerial)
                    .col(ProviderRegistrations::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RevocationChecks::Table)
                    .col(uuid(RevocationChecks::Id).primary_key())
                    .col(string_len(RevocationChecks::Purpose, 32))
                    .col(string_len(RevocationChecks::Method, 16))
                    .col(string_len(RevocationChecks::CertSerial, 40))
                    .col(string_len(RevocationChecks::Outcome, 16))
                    .col(timestamp_with_time_zone(RevocationChecks::CheckedAt))
                    .col(uuid_null(RevocationChecks::ConsentId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("revocation_checks_time")
                    .table(RevocationChecks::Table)
                    .col(RevocationChecks::CheckedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RevocationChecks::Table.into_iden(),
            ProviderRegistrations::Table.into_iden(),
            ConsentEvents::Table.into_iden(),
            Consents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
