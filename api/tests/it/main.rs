//! Integration tests of the HTTP API: one binary, every database test on
//! SQLite and PostgreSQL.

mod helpers;
mod sim;

mod audit;
mod audit_log;
mod auth;
mod browser;
mod changes;
mod consent;
mod customers;
mod hostile;
mod idempotency;
mod import;
mod limits;
mod mynaportal;
mod notices;
mod openapi;
mod pocketsign;
mod raw_consent;
mod registration;
mod service;
mod sync;
