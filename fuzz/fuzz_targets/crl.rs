#![no_main]
//! The streaming CRL walk never panics and never reads past its input.

use std::sync::OnceLock;

use kihon4_core::domain::CertSerial;
use kihon4_core::jpki::crl::{CrlIssuer, SerialSet, check_crl};
use libfuzzer_sys::fuzz_target;

fn issuer() -> &'static (CrlIssuer, SerialSet) {
    static ISSUER: OnceLock<(CrlIssuer, SerialSet)> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let pem = include_bytes!("../../../shared/fixtures/jpki-trust-anchors/sign_ca_2023.pem");
        let cert = <x509_cert::Certificate as der::DecodePem>::from_pem(pem).expect("the fixture parses");
        let wanted = ["1", "1000", "abcdef"].iter().map(|s| CertSerial::parse(s).unwrap()).collect::<Vec<_>>();
        (CrlIssuer::from_certificate(&cert).expect("an RSA CA"), wanted.iter().collect())
    })
}

fuzz_target!(|data: &[u8]| {
    let (issuer, wanted) = issuer();
    let _ = check_crl(data, issuer, wanted, chrono::Utc::now());
});
