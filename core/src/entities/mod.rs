//! sea-orm entities: the rows as stored. Domain types live in `crate::domain`;
//! conversions happen at the edge of each service module.

pub mod audit_chain;
pub mod audit_checkpoints;
pub mod audit_events;
pub mod audit_exports;
pub mod audit_personal_values;
pub mod basic4_history;
pub mod change_customer_seqs;
pub mod change_events;
pub mod change_feed;
pub mod consent_events;
pub mod consent_requests;
pub mod consents;
pub mod cron_ticks;
pub mod customers;
pub mod idempotency_keys;
pub mod outbox;
pub mod provider_registrations;
pub mod reviews;
pub mod revocation_checks;
pub mod sync_jobs;
pub mod sync_runs;
pub mod webhook_attempts;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
pub mod webhook_receipts;
