//! Connecting to SQLite or PostgreSQL, and starting write transactions that
//! behave the same on both.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// How long a SQLite writer waits for another (in any process) to finish.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a pool. SQLite runs in WAL mode with a busy timeout, so that API and
/// worker processes can share one file; its folder is created when missing.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, max_connections, SqliteSynchronous::Full).await
}

/// A pool for records whose loss in an operating-system crash or power cut
/// costs a repeat, never data: the notice dispatcher's claims and "sent"
/// marks. Its commits do not wait for the disk (SQLite `synchronous=NORMAL`,
/// PostgreSQL `synchronous_commit=off`). They survive kihon4's process being
/// killed; a crash of the operating system (or of the PostgreSQL server, or a
/// failover) may lose the last moments of them, which only makes those
/// notices go out again with the same Message-ID.
pub async fn connect_relaxed(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, 2, SqliteSynchronous::Normal).await
}

async fn connect_with(
    url: &str,
    max_connections: u32,
    synchronous: SqliteSynchronous,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |o| {
            if synchronous == SqliteSynchronous::Normal {
                o.options([("synchronous_commit", "off")])
            } else {
                o
            }
        })
        .map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .synchronous(synchronous)
                .foreign_keys(true)
                .create_if_missing(true)
        });
    let parent =
        sqlite_path(url).and_then(|p| std::path::Path::new(&p).parent().map(|d| d.to_path_buf()));
    if let Some(parent) = parent.filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(&parent).map_err(|e| {
            DbErr::Custom(format!("cannot create the folder for the database: {e}"))
        })?;
    }
    Database::connect(options).await
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Begins a transaction that will write. On SQLite it takes the write lock
/// at once (`BEGIN IMMEDIATE`): a transaction that read first and wrote later
/// could otherwise fail when another process wrote in between.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options = match db.get_database_backend() {
        DbBackend::Sqlite => TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        },
        _ => TransactionOptions::default(),
    };
    db.begin_with_options(options).await
}

/// Whether an error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sqlite_file() {
        assert_eq!(
            sqlite_path("sqlite://data/kihon4.db?mode=rwc").as_deref(),
            Some("data/kihon4.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }
}
