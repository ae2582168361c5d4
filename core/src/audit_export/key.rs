//! The signing key (Ed25519, `KIHON4_AUDIT_SIGNING_KEY`: a PKCS#8 PEM file,
//! made on first use on the embedded default, or a key in a PKCS#11 token
//! named by a PKCS#11 URI, see [`super::pkcs11`]) and the public key
//! auditors verify with (SubjectPublicKeyInfo PEM, written beside a file
//! key as `<file>.pub`). Both kinds sign through one trait, [`KeyBackend`].

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410), before
/// the 32-byte seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Where the private half of a signing key is, and how it signs.
pub trait KeyBackend: Send + Sync {
    /// The raw 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// An Ed25519 signature (64 bytes) of `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// A key read from a PKCS#8 file.
impl KeyBackend for Ed25519KeyPair {
    fn public_key(&self) -> [u8; 32] {
        KeyPair::public_key(self)
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes")
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(Ed25519KeyPair::sign(self, message).as_ref().to_vec())
    }
}

/// A key in a PKCS#11 token.
impl KeyBackend for super::pkcs11::Pkcs11Key {
    fn public_key(&self) -> [u8; 32] {
        super::pkcs11::Pkcs11Key::public_key(self)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        super::pkcs11::Pkcs11Key::sign(self, message)
    }
}

/// The key that signs checkpoints and manifests.
pub struct SigningKey {
    backend: Box<dyn KeyBackend>,
    public: [u8; 32],
    /// The key id: the first 16 hex digits (8 bytes) of the SHA-256 of the
    /// raw 32-byte Ed25519 public key (the last 32 bytes of its
    /// SubjectPublicKeyInfo), lower case.
    pub key_id: String,
    /// The origin of the audit log this key signs (C2SP tlog-checkpoint):
    /// `KIHON4_AUDIT_LOG_ORIGIN`, else `kihon4.invalid/audit/<key_id>`, one
    /// per key so that no two logs share one by default.
    log_origin: String,
    /// Whether the origin was configured rather than derived from the key.
    origin_configured: bool,
}

impl SigningKey {
    /// Loads the PKCS#8 PEM at `path`; with `create` (the embedded default
    /// only), makes one there first when there is none.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, String> {
        if create && !path.exists() && pkcs11_uri(path)?.is_none() {
            match Self::create(path) {
                Ok(key) => return Ok(key),
                // Another process made it meanwhile: use that one.
                Err(_) if path.exists() => {}
                Err(e) => return Err(e),
            }
        }
        Self::load(path)
    }

    /// Makes a new key at `path`, readable by its owner only (in a folder
    /// made owner-only when it is new), and writes its public key beside
    /// it. Never replaces a key: a key that exists is an error.
    pub fn create(path: &Path) -> Result<Self, String> {
        if let Some(uri) = pkcs11_uri(path)? {
            return super::pkcs11::Pkcs11Key::generate(&uri).map(Self::with_backend);
        }
        if path.exists() {
            return Err(format!(
                "{} exists already: a signing key is never replaced",
                path.display()
            ));
        }
        let rng = ring::rand::SystemRandom::new();
        let v2 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "an Ed25519 key could not be made".to_owned())?;
        // Written as PKCS#8 v1 (RFC 8410: the seed alone), which OpenSSL
        // reads too; ring's v2 document holds the seed at 16..48.
        let seed = v2
            .as_ref()
            .get(16..48)
            .ok_or_else(|| "an unexpected PKCS#8 document".to_owned())?;
        let mut v1 = PKCS8_V1_PREFIX.to_vec();
        v1.extend_from_slice(seed);
        let pem = der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &v1)
            .map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        crate::config::write_private_file(path, pem.as_bytes()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "{} exists already: a signing key is never replaced",
                    path.display()
                )
            } else {
                format!("cannot write {}: {e}", path.display())
            }
        })?;
        Self::load(path)
    }

    /// Loads the PKCS#8 PEM at `path` and writes its public key beside it
    /// when that is missing.
    pub fn load(path: &Path) -> Result<Self, String> {
        if let Some(uri) = pkcs11_uri(path)? {
            return super::pkcs11::Pkcs11Key::open(&uri).map(Self::with_backend);
        }
        if !path.exists() {
            return Err(format!(
                "the audit signing key {} does not exist",
                path.display()
            ));
        }
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (label, der) = der::pem::decode_vec(&pem)
            .map_err(|_| format!("{} is not a PEM file", path.display()))?;
        if label != "PRIVATE KEY" {
            return Err(format!("{} is not a PKCS#8 private key", path.display()));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| format!("{} is not an Ed25519 PKCS#8 key", path.display()))?;
        let key = Self::with_backend(pair);
        let public = public_key_path(path);
        if !public.exists() {
            std::fs::write(&public, key.public_key_pem()).map_err(|e| e.to_string())?;
        }
        Ok(key)
    }

    /// The key of `backend`, with the default origin.
    pub fn with_backend(backend: impl KeyBackend + 'static) -> Self {
        let public = backend.public_key();
        let key_id = key_id(&public);
        Self {
            backend: Box::new(backend),
            public,
            log_origin: format!("kihon4.invalid/audit/{key_id}"),
            key_id,
            origin_configured: false,
        }
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_key_pem(&self) -> String {
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public);
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &spki)
            .expect("a public key encodes")
    }

    pub(super) fn sign(&self, message: &[u8]) -> Result<String, String> {
        Ok(B64.encode(self.sign_raw(message)?))
    }

    /// The key with the log origin configured (`KIHON4_AUDIT_LOG_ORIGIN`);
    /// `None` keeps the default.
    pub fn with_log_origin(mut self, origin: Option<&str>) -> Self {
        if let Some(origin) = origin {
            self.log_origin = origin.to_owned();
            self.origin_configured = true;
        }
        self
    }

    /// The origin configured for it (`KIHON4_AUDIT_LOG_ORIGIN`), if any.
    pub fn configured_log_origin(&self) -> Option<&str> {
        self.origin_configured.then_some(self.log_origin.as_str())
    }

    /// The origin line of the checkpoints this key signs.
    pub fn log_origin(&self) -> &str {
        &self.log_origin
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key_raw(&self) -> [u8; 32] {
        self.public
    }

    /// A raw Ed25519 signature (64 bytes) of `message` (a token may fail).
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.backend.sign(message)
    }
}

/// The PKCS#11 URI a key's location is, if it is one.
fn pkcs11_uri(path: &Path) -> Result<Option<super::pkcs11::Pkcs11Uri>, String> {
    match path.to_str().filter(|p| super::pkcs11::is_uri(p)) {
        Some(uri) => super::pkcs11::Pkcs11Uri::parse(uri)
            .map(Some)
            .map_err(|e| format!("the PKCS#11 URI of the signing key: {e}")),
        None => Ok(None),
    }
}

/// Whether a key's location is a PKCS#11 URI, not a file.
pub fn in_token(path: &Path) -> bool {
    path.to_str().is_some_and(super::pkcs11::is_uri)
}

/// Where the public key of `private` is written.
pub fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.file_name().unwrap_or_default().to_os_string();
    name.push(".pub");
    private.with_file_name(name)
}

fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// An Ed25519 public key read from SubjectPublicKeyInfo PEM (or DER).
pub struct PublicKey {
    raw: Vec<u8>,
    pub key_id: String,
}

impl PublicKey {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let der = match der::pem::decode_vec(bytes) {
            Ok(("PUBLIC KEY", der)) => der,
            Ok((label, _)) => return Err(format!("a PEM `{label}`, not a PUBLIC KEY")),
            Err(_) => bytes.to_vec(),
        };
        if der.len() != SPKI_PREFIX.len() + 32 || der[..SPKI_PREFIX.len()] != SPKI_PREFIX {
            return Err("not an Ed25519 public key".into());
        }
        let raw = der[SPKI_PREFIX.len()..].to_vec();
        Ok(Self {
            key_id: key_id(&raw),
            raw,
        })
    }

    pub(super) fn verifies(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(signature) = B64.decode(signature_b64) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, &signature)
            .is_ok()
    }
}
