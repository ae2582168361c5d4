//! Consent verifications per second on one core, over the same consent:
//! as a CMS document (CMS parse, profile, path to the anchor, one RSA
//! verification, and the document's signature, another) and as a raw
//! PKCS#1 v1.5 signature the way card SDKs send it (certificate and
//! signature: no CMS parse). Used by bench/consent-verify/run.
//!
//!   consent_verify ANCHOR.pem SIGNED.der CERT.der RAW.sig CONTENT SECONDS
//!
//! Prints `cold=`/`warm=` for CMS and `raw_cold=`/`raw_warm=` for the raw
//! signature: cold verifies every path afresh, as for a card never seen
//! before; warm remembers the certificate's path from an earlier
//! verification, as for a card that signs again.

use std::time::{Duration, Instant};

use kihon4_core::jpki::verify::{
    HashAlgorithm, RawSignature, TrustAnchors, verify_raw_signature, verify_signed_document,
};

fn rate(budget: Duration, mut verify: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < budget {
        for _ in 0..100 {
            verify()?;
        }
        count += 100;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [anchor, signed, cert, sig, content, seconds] = args.as_slice() else {
        anyhow::bail!(
            "usage: consent_verify ANCHOR.pem SIGNED.der CERT.der RAW.sig CONTENT SECONDS"
        );
    };
    let document = std::fs::read(signed)?;
    let raw = RawSignature {
        certificate_der: &std::fs::read(cert)?,
        signature: &std::fs::read(sig)?,
        hash: HashAlgorithm::Sha256,
    };
    let content = std::fs::read(content)?;
    let budget = Duration::from_secs_f64(seconds.parse()?);
    let now = chrono::Utc::now();
    let load = || TrustAnchors::load(&[anchor.into()]).map_err(anyhow::Error::msg);
    let cms = |anchors: TrustAnchors| {
        rate(budget, || {
            verify_signed_document(&document, None, &anchors, now)?;
            Ok(())
        })
    };
    let pkcs1 = |anchors: TrustAnchors| {
        rate(budget, || {
            verify_raw_signature(&raw, &content, &anchors, now)?;
            Ok(())
        })
    };
    let cold = cms(load()?.remembering(0))?;
    let warm = cms(load()?)?;
    let raw_cold = pkcs1(load()?.remembering(0))?;
    let raw_warm = pkcs1(load()?)?;
    println!("cold={cold:.0} warm={warm:.0} raw_cold={raw_cold:.0} raw_warm={raw_warm:.0}");
    Ok(())
}
