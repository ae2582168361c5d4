//! End-to-end tests of the `kihon4` binary: real processes, real signals,
//! SQLite and PostgreSQL.

mod process;

mod audit;
mod audit_log;
mod audit_memory;
mod changes;
mod concurrency;
mod consent;
mod files;
mod import;
mod lifecycle;
mod mynaportal;
mod notices;
mod sync;
