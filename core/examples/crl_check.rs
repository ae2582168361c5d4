//! kihon4's CRL check as the sync worker will run it: stream a DER CRL from
//! disk, verify its signature, and match it against a set of customer
//! serials. Used by bench/crl-check/run.
//!
//!   crl_check CA.pem CRL.der CUSTOMERS MATCHING
//!
//! The customers' serials are 0x100000000000 + i for i in 0..MATCHING (on
//! the CRL that examples/crl_issuance makes) and made-up serials for the rest.

use std::fs::File;
use std::time::Instant;

use der::DecodePem;
use kihon4_core::domain::CertSerial;
use kihon4_core::jpki::crl::{CrlIssuer, SerialSet, check_crl};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ca, crl, customers, matching] = args.as_slice() else {
        anyhow::bail!("usage: crl_check CA.pem CRL.der CUSTOMERS MATCHING");
    };
    let (customers, matching): (u64, u64) = (customers.parse()?, matching.parse()?);
    let ca = x509_cert::Certificate::from_pem(std::fs::read(ca)?)?;
    let mut wanted = SerialSet::default();
    for i in 0..customers {
        let serial = if i < matching {
            0x1000_0000_0000 + i
        } else {
            0x7000_0000_0000_0000 + i
        };
        wanted.insert(&CertSerial::parse(&format!("{serial:x}"))?);
    }
    let started = Instant::now();
    let (summary, found) = check_crl(
        File::open(crl)?,
        &CrlIssuer::from_certificate(&ca)?,
        &wanted,
        chrono::Utc::now(),
    )?;
    println!(
        "entries={} matched={} check_seconds={:.3}",
        summary.entries,
        found.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
