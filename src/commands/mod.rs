//! One module per command family; each parses nothing (clap has) and
//! calls core through the shared [`crate::wiring`].

pub mod audit;
pub mod changes;
pub mod consent_requests;
pub mod import;
pub mod migrate;
pub mod serve;
pub mod sim;
pub mod sync;
pub mod token;
pub mod witness;
