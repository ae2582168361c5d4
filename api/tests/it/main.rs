//! Integration tests of the HTTP API: one binary, every database test on
//! SQLite and PostgreSQL.

#[path = "../../../tests/support/database.rs"]
mod database;
mod helpers;
#[path = "../../../tests/support/mail.rs"]
mod mail;
mod sim;
#[path = "../../../tests/support/smtp_sink.rs"]
mod smtp_sink;

mod audit;
mod auth;
mod browser;
mod consent;
mod customers;
mod hostile;
mod idempotency;
mod import;
mod limits;
mod mynaportal;
mod notices;
mod openapi;
mod registration;
mod service;
mod sync;
