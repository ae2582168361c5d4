//! Fresh databases for tests, shared by the API's integration tests and the
//! binary's end-to-end tests.

use sea_orm::ConnectionTrait;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The prefix of every test database; the creating process's id follows,
/// so that a later test process can tell which are left over.
const PREFIX: &str = "kihon4_test_";

/// A fresh, empty database: a SQLite file in `dir`, or a new PostgreSQL
/// database on the server named by `KIHON4_TEST_DATABASE_URL`. Databases
/// that earlier, finished test processes left on the server are dropped
/// first, so that a whole run holds only the current binary's databases on
/// disk (hundreds of them, at several MB each, filled a CI machine's disk).
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("kihon4.db").display()),
        Backend::Postgres => {
            let base = std::env::var("KIHON4_TEST_DATABASE_URL").expect(
                "PostgreSQL tests need KIHON4_TEST_DATABASE_URL; run infra/dev/test, which starts a throwaway server",
            );
            let pid = std::process::id();
            let name = format!("{PREFIX}{pid}_{}", uuid::Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(base.as_str())
                .await
                .expect("test server reachable");
            drop_left_over(&admin).await;
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let mut url = url::Url::parse(&base).expect("a URL");
            url.set_path(&name);
            url.to_string()
        }
    }
}

/// Drops the test databases whose creating process has ended. Once per
/// process: a process's own databases are never touched.
async fn drop_left_over(admin: &sea_orm::DatabaseConnection) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let rows = admin
            .query_all_raw(sea_orm::Statement::from_string(
                admin.get_database_backend(),
                format!("SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'"),
            ))
            .await
            .expect("list test databases");
        for row in rows {
            let Ok(name) = row.try_get::<String>("", "datname") else {
                continue;
            };
            if !left_over(&name) {
                continue;
            }
            // Another process may be dropping it at the same moment.
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    })
    .await;
}

/// Whether `name` is a test database whose creating process is gone
/// (names without a process id, from older test binaries, count as gone).
fn left_over(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    match rest.split_once('_').map(|(pid, _)| pid.parse::<u32>()) {
        Some(Ok(pid)) => {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_databases_of_ended_processes_are_left_over() {
        let me = std::process::id();
        assert!(!left_over(&format!("{PREFIX}{me}_abc")));
        assert!(!left_over("postgres"));
        // pid 1 lives as long as the machine does.
        assert!(!left_over(&format!("{PREFIX}1_abc")));
        assert!(left_over(&format!("{PREFIX}4294967295_abc")));
        assert!(left_over(&format!(
            "{PREFIX}0123456789abcdef0123456789abcdef"
        )));
    }
}
