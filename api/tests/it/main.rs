//! Integration tests of the HTTP API: one binary, every database test on
//! SQLite and PostgreSQL.

mod helpers;

mod audit;
mod auth;
mod customers;
mod idempotency;
mod service;
