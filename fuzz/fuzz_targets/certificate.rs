#![no_main]
//! The JPKI profile parser never panics, whatever the bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kihon4_core::jpki::parse_signing_certificate(data);
});
