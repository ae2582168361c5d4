//! Times the simulator's CRL issuance for N revoked certificates (default
//! 1,000,000): build every entry, encode, sign. Used by bench/simulator/run.
//!
//!   cargo run --release -p kihon4-sim --example crl_issuance -- DATA_DIR [N]
//!
//! Prints `seconds=<s> bytes=<n>` and writes the CRL to DATA_DIR/bench.crl.

use std::time::Instant;

use chrono::Utc;
use kihon4_core::domain::CertSerial;
use kihon4_core::jpki::CrlPartition;
use kihon4_sim::store::Revocation;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: crl_issuance DATA_DIR [N]"))?,
    );
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    std::fs::create_dir_all(&dir)?;
    let ca = kihon4_sim::Ca::load_or_create(&dir)?;
    let now = Utc::now();
    let partition = CrlPartition {
        prefecture: "東京都".into(),
        city: "千代田区".into(),
    };
    let revocations: Vec<Revocation> = (0..n)
        .map(|i| Revocation {
            serial: CertSerial::parse(&format!("{:x}", 0x1000_0000_0000u64 + i as u64))
                .expect("a serial"),
            revoked_at: now,
            reason: [3u8, 4, 5, 6][i % 4],
            partition: partition.clone(),
        })
        .collect();
    let entries: Vec<&Revocation> = revocations.iter().collect();
    let started = Instant::now();
    let der = kihon4_sim::crl::build(&ca, 1, now, &entries, None)?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::write(dir.join("bench.crl"), &der)?;
    println!("seconds={seconds:.3} bytes={}", der.len());
    Ok(())
}
