//! Consent verifications per second on one core: CMS parse, profile, path
//! to the anchor (one RSA verification) and the document's signature
//! (another), over the same document. Used by bench/consent-verify/run.
//!
//!   consent_verify ANCHOR.pem SIGNED.der SECONDS
//!
//! Prints `cold=` (every path verified afresh, as for a card never seen
//! before) and `warm=` (the certificate's path remembered from an earlier
//! verification, as for a card that signs again).

use std::time::{Duration, Instant};

use kihon4_core::jpki::verify::{TrustAnchors, verify_signed_document};

fn rate(anchors: &TrustAnchors, document: &[u8], budget: Duration) -> anyhow::Result<f64> {
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < budget {
        for _ in 0..100 {
            verify_signed_document(document, None, anchors, now)?;
        }
        count += 100;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [anchor, signed, seconds] = args.as_slice() else {
        anyhow::bail!("usage: consent_verify ANCHOR.pem SIGNED.der SECONDS");
    };
    let document = std::fs::read(signed)?;
    let budget = Duration::from_secs_f64(seconds.parse()?);
    let load = || TrustAnchors::load(&[anchor.into()]).map_err(anyhow::Error::msg);
    let cold = rate(&load()?.remembering(0), &document, budget)?;
    let warm = rate(&load()?, &document, budget)?;
    println!("cold={cold:.0} warm={warm:.0}");
    Ok(())
}
