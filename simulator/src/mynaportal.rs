//! Mynaportal-routed consent: the institution asks, the holder decides on
//! Mynaportal (played by `/sim/mynaportal/{id}/decide`), and the provider
//! tells the institution with a signed JWT POSTed to its callback,
//! retried with backoff for up to 24 hours.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Simulator;

/// A callback JWT is good for this long after it is signed.
pub const JWT_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);
/// How long the provider keeps trying to deliver a decision.
pub const DELIVERY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// The key that signs callbacks (RS256), kept in the data folder.
pub struct CallbackKey {
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl CallbackKey {
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("callback-key.pem");
        let key = if path.exists() {
            RsaPrivateKey::read_pkcs8_pem_file(&path)
                .with_context(|| format!("reading {}", path.display()))?
        } else {
            let key = crate::keys::generate()?;
            kihon4_core::files::write_private_file(
                &path,
                key.to_pkcs8_pem(LineEnding::LF)?.as_bytes(),
            )?;
            key
        };
        let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
        let kid = hex::encode(&Sha256::digest(&n)[..8]);
        let pem = key.to_pkcs8_pem(LineEnding::LF)?;
        Ok(Self {
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes())?,
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
            }),
            kid,
        })
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// Signs `claims` with a fresh `iat`/`exp`.
    pub fn sign(&self, mut claims: Value, now: DateTime<Utc>) -> anyhow::Result<String> {
        claims["iat"] = json!(now.timestamp());
        claims["exp"] = json!((now + JWT_LIFETIME).timestamp());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

/// Delivers due callbacks until the process ends: each a POST of
/// `application/jwt`; anything but 2xx is retried with doubling waits
/// (1 s up to 1 h) for up to 24 hours.
pub async fn deliver_forever(sim: Arc<Simulator>) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "callback delivery cannot start");
            return;
        }
    };
    loop {
        if let Err(e) = deliver_due(&sim, &http).await {
            tracing::warn!(error = %e, "callback delivery round failed");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn deliver_due(sim: &Simulator, http: &reqwest::Client) -> anyhow::Result<()> {
    let now = Utc::now();
    for due in sim.store.due_callbacks(now, 20).await? {
        let jwt = sim.callback_key.sign(due.claims.clone(), now)?;
        let outcome = http
            .post(&due.url)
            .header("content-type", "application/jwt")
            .body(jwt)
            .send()
            .await;
        let delivered = matches!(&outcome, Ok(r) if r.status().is_success());
        let status = match &outcome {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "unreachable".into(),
        };
        let attempts = due.attempts + 1;
        let wait = chrono::Duration::seconds(
            2i64.saturating_pow(attempts.saturating_sub(1).min(20))
                .min(3600),
        );
        let give_up = !delivered && now + wait > due.created_at + DELIVERY_WINDOW;
        tracing::info!(callback = due.id, attempts, status = %status, delivered, give_up, "callback attempt");
        sim.store
            .record_attempt(
                due.id,
                attempts,
                &status,
                delivered,
                give_up,
                now + wait,
                now,
            )
            .await?;
    }
    Ok(())
}
