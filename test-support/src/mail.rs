//! Reading the emails kihon4 writes, in tests: the text of every MIME part
//! with its transfer encoding (base64 or quoted-printable) undone, and the
//! consent landing link in it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Every part of a MIME message, decoded, one after another.
pub fn decoded_text(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let mut out = String::new();
    for part in text.split("\n--") {
        let Some((headers, body)) = part.split_once("\n\n") else {
            continue;
        };
        let headers = headers.to_ascii_lowercase();
        if headers.contains("content-transfer-encoding: base64") {
            let joined: String = body.lines().take_while(|l| !l.starts_with("--")).collect();
            if let Ok(bytes) = B64.decode(joined.trim()) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        } else if headers.contains("quoted-printable") {
            let soft = body.replace("=\n", "");
            let raw = soft.as_bytes();
            let mut bytes = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'='
                    && i + 2 < raw.len()
                    && let Ok(b) = u8::from_str_radix(&soft[i + 1..i + 3], 16)
                {
                    bytes.push(b);
                    i += 3;
                    continue;
                }
                bytes.push(raw[i]);
                i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            out.push_str(body);
        }
        out.push('\n');
    }
    out
}

/// The landing link under `base` in a message, if there is one.
pub fn landing_link(message: &[u8], base: &str) -> Option<String> {
    let text = decoded_text(message);
    let start = text.find(&format!("{base}/consent/"))?;
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_:/.".contains(*c))
            .collect(),
    )
}
