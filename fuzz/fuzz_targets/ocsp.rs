#![no_main]
//! OCSP responses and requests decode without panicking.

use der::Decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = x509_ocsp::OcspResponse::from_der(data) {
        if let Some(bytes) = response.response_bytes {
            let _ = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes());
        }
    }
    let _ = x509_ocsp::OcspRequest::from_der(data);
});
