#![no_main]
//! Signed-document verification, inspection and attaching never panic.

use std::sync::OnceLock;

use kihon4_core::jpki::verify::{
    TrustAnchors, attach_content, inspect_signed_document, verify_signed_document,
};
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
    // The service-provider role reads the document and may attach the text.
    let _ = inspect_signed_document(data);
    if let Ok(attached) = attach_content(data, b"content") {
        let _ = inspect_signed_document(&attached);
    }
});
