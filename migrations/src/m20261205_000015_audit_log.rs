//! The audit trail as a transparency log (docs/architecture.md, "The
//! audit log"): the RFC 6962 Merkle tree over the events, kept as its
//! stored hashes (Crosby and Wallach's dense order, as Go's `sumdb/tlog`
//! keeps them), and the C2SP checkpoints signed over it. The events stay
//! where they are; the tree is built after them by the sealer, so an
//! upgraded database starts with an empty tree that the first rounds fill.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditLogHashes {
    Table,
    Idx,
    Hash,
}

#[derive(DeriveIden)]
enum AuditLogCheckpoints {
    Table,
    TreeSize,
    RootHash,
    Note,
    KeyId,
    SignedAt,
}

#[derive(DeriveIden)]
enum AuditLogCosignatures {
    Table,
    TreeSize,
    Witness,
    Line,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum AuditLogWitnesses {
    Table,
    Witness,
    Size,
}

/// The log's keys, each with the trees it may sign: the first is the key
/// that signed the first checkpoint; every later one came in by a rotation
/// recorded in the log itself.
#[derive(DeriveIden)]
enum AuditLogKeys {
    Table,
    KeyId,
    NoteKeyId,
    Origin,
    Vkey,
    PublicKeyPem,
    ValidFrom,
    ValidUntil,
    FirstSize,
    LastSize,
    RotationSeq,
    Statement,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLogHashes::Table)
                    .col(big_integer(AuditLogHashes::Idx).primary_key())
                    .col(binary(AuditLogHashes::Hash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLogCheckpoints::Table)
                    .col(big_integer(AuditLogCheckpoints::TreeSize).primary_key())
                    .col(binary(AuditLogCheckpoints::RootHash))
                    .col(text(AuditLogCheckpoints::Note))
                    .col(string(AuditLogCheckpoints::KeyId))
                    .col(timestamp_with_time_zone(AuditLogCheckpoints::SignedAt))
                    .to_owned(),
            )
            .await?;
        // Witnesses' cosignatures of checkpoints (C2SP tlog-cosignature),
        // served with them, and the size each witness last cosigned.
        manager
            .create_table(
                Table::create()
                    .table(AuditLogCosignatures::Table)
                    .col(big_integer(AuditLogCosignatures::TreeSize))
                    .col(string(AuditLogCosignatures::Witness))
                    .col(text(AuditLogCosignatures::Line))
                    .col(timestamp_with_time_zone(AuditLogCosignatures::ReceivedAt))
                    .primary_key(
                        Index::create()
                            .col(AuditLogCosignatures::TreeSize)
                            .col(AuditLogCosignatures::Witness),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLogWitnesses::Table)
                    .col(string(AuditLogWitnesses::Witness).primary_key())
                    .col(big_integer(AuditLogWitnesses::Size))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLogKeys::Table)
                    .col(string(AuditLogKeys::KeyId).primary_key())
                    .col(string(AuditLogKeys::NoteKeyId))
                    .col(string(AuditLogKeys::Origin))
                    .col(text(AuditLogKeys::Vkey))
                    .col(text(AuditLogKeys::PublicKeyPem))
                    .col(timestamp_with_time_zone(AuditLogKeys::ValidFrom))
                    .col(timestamp_with_time_zone_null(AuditLogKeys::ValidUntil))
                    .col(big_integer(AuditLogKeys::FirstSize))
                    .col(big_integer_null(AuditLogKeys::LastSize))
                    .col(big_integer_null(AuditLogKeys::RotationSeq))
                    .col(text_null(AuditLogKeys::Statement))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditLogKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditLogWitnesses::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditLogCosignatures::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditLogCheckpoints::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditLogHashes::Table).to_owned())
            .await
    }
}
