//! kihon4-core: domain types, rules, persistence, the audit chain and
//! configuration. No HTTP server and no scheduler here: the API and the
//! worker both reach the rules through this crate.

pub mod audit;
pub mod audit_export;
pub mod audit_log;
pub mod auth;
pub mod changes;
pub mod client_address;
pub mod config;
pub mod consent;
pub mod customers;
pub mod db;
pub mod domain;
pub mod entities;
pub mod error;
pub mod files;
pub mod idempotency;
pub mod import;
pub mod jpki;
pub mod notices;
pub mod provider;
pub mod refusals;
pub mod shared;
pub mod sync;

pub use error::CoreError;
