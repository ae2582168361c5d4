//! The simulator over HTTP, with OpenSSL as the independent judge of what it signs.

mod helpers;

mod client;
mod control;
mod crl;
mod faults;
mod mynaportal;
mod ocsp;
mod protocol;
mod residents;
mod service_provider;
