//! End-to-end tests of the `kihon4` binary: real processes, real signals,
//! SQLite and PostgreSQL.

#[path = "../support/database.rs"]
mod database;
#[path = "../support/mail.rs"]
mod mail;
mod process;
#[path = "../support/seed.rs"]
mod seed;
#[path = "../support/smtp_sink.rs"]
mod smtp_sink;

mod audit;
mod audit_memory;
mod concurrency;
mod consent;
mod files;
mod import;
mod lifecycle;
mod mynaportal;
mod notices;
mod sync;
