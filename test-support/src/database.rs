//! Fresh databases for tests, shared by the API's integration tests and the
//! binary's end-to-end tests.

use sea_orm::ConnectionTrait;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database: a SQLite file in `dir`, or a new PostgreSQL
/// database on the server named by `KIHON4_TEST_DATABASE_URL`.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("kihon4.db").display()),
        Backend::Postgres => {
            let base = std::env::var("KIHON4_TEST_DATABASE_URL").expect(
                "PostgreSQL tests need KIHON4_TEST_DATABASE_URL; run infra/dev/test, which starts a throwaway server",
            );
            let name = format!("kihon4_test_{}", uuid::Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(base.as_str())
                .await
                .expect("test server reachable");
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
