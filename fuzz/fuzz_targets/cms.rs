#![no_main]
//! Signed-document verification never panics, attached or detached.

use std::sync::OnceLock;

use kihon4_core::jpki::verify::{TrustAnchors, verify_signed_document};
use libfuzzer_sys::fuzz_target;

fn anchors() -> &'static TrustAnchors {
    static ANCHORS: OnceLock<TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let pem = include_bytes!("../../../shared/fixtures/jpki-trust-anchors/sign_ca_2023.pem");
        let cert = <x509_cert::Certificate as der::DecodePem>::from_pem(pem).expect("the fixture parses");
        TrustAnchors::from_certificates(vec![cert]).expect("an anchor")
    })
}

fuzz_target!(|data: &[u8]| {
    let now = chrono::Utc::now();
    let _ = verify_signed_document(data, None, anchors(), now);
    let _ = verify_signed_document(data, Some(b"content"), anchors(), now);
});
