//! What kihon4's tests share, as a dev-dependency of the crates whose tests
//! need it: a fresh database per test on SQLite or PostgreSQL ([`database`],
//! [`both!`]), a real SMTP server ([`smtp_sink`], running `smtp_sink.py` in
//! this crate's directory), a real webhook receiver that checks signatures
//! with the official Standard Webhooks library ([`webhook_receiver`], running
//! `webhook_receiver.py` beside it), reading the emails kihon4 writes
//! ([`mail`]), and load-test fixtures written straight into the database
//! ([`seed`]).

pub mod database;
pub mod mail;
pub mod seed;
pub mod smtp_sink;
pub mod webhook_receiver;

pub use database::{Backend, fresh_database};

/// Runs a test on SQLite and on PostgreSQL: `both!(name, …)` for
/// `async fn name(Backend)`, each on a two-thread runtime; `both!(workers = 4;
/// name, …)` gives each test that many worker threads. A module `name` holds
/// the two tests, `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both {
    (workers = $workers:tt; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[::tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            #[::tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {
        $crate::both!(workers = 2; $($name),*);
    };
}
