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
    if let Some(path) = sqlite_path(url) {
        create_sqlite_file(std::path::Path::new(&path))?;
    }
    Database::connect(options).await
}

/// Creates a missing SQLite file owner-only (`0600`, in a `0700` folder
/// when the folder is new) before SQLite opens it: SQLite gives its WAL and
/// shared-memory files the database file's permissions.
fn create_sqlite_file(path: &std::path::Path) -> Result<(), DbErr> {
    if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir(parent).map_err(|e| {
            DbErr::Custom(format!("cannot create the folder for the database: {e}"))
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DbErr::Custom(format!(
            "cannot create the database file {}: {e}",
            path.display()
        ))),
    }
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

/// The `i`-th (1-based) bind parameter in `backend`'s SQL: `$i` or `?`.
pub fn placeholder(backend: DbBackend, i: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${i}"),
        _ => "?".to_owned(),
    }
}

/// The wait before attempt `attempts + 1` of something retried: `base`,
/// then twice that each time, up to an hour.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    base.saturating_mul(1u32 << exp)
        .min(Duration::from_secs(3600))
}

/// Claims up to `limit` due rows of a work table (`status`, `run_at`,
/// `lease_owner`, `lease_expires_at`, `attempts`, `id`) for `owner` until
/// `lease` from now, counting an attempt: `FOR UPDATE SKIP LOCKED` on
/// PostgreSQL, so claimers take different rows; on SQLite the immediate
/// transaction admits one claimer at a time. Rows whose lease ran out are
/// taken over. Returns them oldest due first.
/// A work table claimed under a lease (`lease_owner`, `lease_expires_at`),
/// as [`claim_due`] claims it.
pub trait Leased: sea_orm::EntityTrait {
    const LEASE_OWNER: Self::Column;
    const LEASE_EXPIRES_AT: Self::Column;
}

impl Leased for crate::entities::outbox::Entity {
    const LEASE_OWNER: Self::Column = crate::entities::outbox::Column::LeaseOwner;
    const LEASE_EXPIRES_AT: Self::Column = crate::entities::outbox::Column::LeaseExpiresAt;
}

impl Leased for crate::entities::sync_jobs::Entity {
    const LEASE_OWNER: Self::Column = crate::entities::sync_jobs::Column::LeaseOwner;
    const LEASE_EXPIRES_AT: Self::Column = crate::entities::sync_jobs::Column::LeaseExpiresAt;
}

impl Leased for crate::entities::provider_registrations::Entity {
    const LEASE_OWNER: Self::Column = crate::entities::provider_registrations::Column::LeaseOwner;
    const LEASE_EXPIRES_AT: Self::Column =
        crate::entities::provider_registrations::Column::LeaseExpiresAt;
}

/// Ends the lease of the rows an update touches: the one way a worker
/// gives a claimed row back or finishes it.
pub trait EndLease {
    fn end_lease(self) -> Self;
}

impl<E: Leased> EndLease for sea_orm::UpdateMany<E> {
    fn end_lease(self) -> Self {
        use sea_orm::sea_query::Expr;
        self.col_expr(E::LEASE_OWNER, Expr::value(Option::<String>::None))
            .col_expr(
                E::LEASE_EXPIRES_AT,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
    }
}

pub async fn claim_due<E>(
    db: &DatabaseConnection,
    table: &str,
    owner: &str,
    limit: u64,
    lease: Duration,
) -> Result<Vec<E::Model>, DbErr>
where
    E: sea_orm::EntityTrait,
{
    claim_due_where::<E>(db, table, "", owner, limit, lease).await
}

/// As [`claim_due`], of the due rows that also meet `condition` (SQL
/// beginning with ` AND`, naming the table's columns as `table.column`).
pub async fn claim_due_where<E>(
    db: &DatabaseConnection,
    table: &str,
    condition: &str,
    owner: &str,
    limit: u64,
    lease: Duration,
) -> Result<Vec<E::Model>, DbErr>
where
    E: sea_orm::EntityTrait,
{
    use chrono::SubsecRound;
    use sea_orm::Statement;
    let at = chrono::Utc::now().trunc_subsecs(6);
    let until = at + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
    let backend = db.get_database_backend();
    let p = |i| placeholder(backend, i);
    let skip_locked = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE {table} SET lease_owner = {}, lease_expires_at = {}, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM {table} WHERE status = 'pending' AND run_at <= {} \
         AND (lease_expires_at IS NULL OR lease_expires_at < {}){condition} \
         ORDER BY run_at, id LIMIT {}{skip_locked}) RETURNING *",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let values: [sea_orm::Value; 5] = [
        owner.into(),
        until.into(),
        at.into(),
        at.into(),
        limit.into(),
    ];
    let txn = begin_write(db).await?;
    let rows = E::find()
        .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(rows)
}

/// Takes the PostgreSQL advisory lock `key` for the rest of the transaction
/// without waiting: whether it was free. Elsewhere (SQLite, whose write
/// transaction already excludes every other writer) always `true`.
pub async fn try_xact_lock<C: sea_orm::ConnectionTrait>(txn: &C, key: i64) -> Result<bool, DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let row = txn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock($1) AS held",
            [key.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no answer to an advisory lock".into()))?;
    row.try_get::<bool>("", "held")
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
