//! `Idempotency-Key` no longer kept in clear: the column `key` becomes
//! `key_sha256`, holding the SHA-256 of the key keyed by the caller it
//! belongs to, and every key already kept is hashed in place, so that a
//! retry across the upgrade is still recognised.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
use sha2::{Digest, Sha256};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Principal,
    Key,
    KeySha256,
}

/// The stored form of `key` for `principal`. Must stay equal to
/// `kihon4_core::idempotency::key_sha256`.
fn key_sha256(principal: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"kihon4 idempotency key\0");
    hash.update(principal.as_bytes());
    hash.update(b"\0");
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .rename_column(IdempotencyKeys::Key, IdempotencyKeys::KeySha256)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let rows = db
            .query_all(
                Query::select()
                    .columns([IdempotencyKeys::Principal, IdempotencyKeys::KeySha256])
                    .from(IdempotencyKeys::Table),
            )
            .await?;
        for row in rows {
            let principal: String = row.try_get_by_index(0)?;
            let key: String = row.try_get_by_index(1)?;
            db.execute(
                Query::update()
                    .table(IdempotencyKeys::Table)
                    .value(IdempotencyKeys::KeySha256, key_sha256(&principal, &key))
                    .and_where(Expr::col(IdempotencyKeys::Principal).eq(principal))
                    .and_where(Expr::col(IdempotencyKeys::KeySha256).eq(key)),
            )
            .await?;
        }
        Ok(())
    }

    /// The keys cannot be recovered from their hashes: going back forgets them
    /// (a retry after a downgrade runs again).
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            "DELETE FROM idempotency_keys",
        ))
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .rename_column(IdempotencyKeys::KeySha256, IdempotencyKeys::Key)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
