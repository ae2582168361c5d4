//! Residents' and the CA's keys.

use rsa::RsaPrivateKey;

/// A fresh RSA-2048 key, as on a My Number Card.
pub fn generate() -> anyhow::Result<RsaPrivateKey> {
    Ok(RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?)
}
