//! The audit key in a PKCS#11 token (an HSM, or SoftHSM), named by a
//! PKCS#11 URI (RFC 7512) in `KIHON4_AUDIT_SIGNING_KEY`:
//!
//! ```text
//! pkcs11:token=kihon4;object=audit-log?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/kihon4/hsm-pin
//! ```
//!
//! The private key never leaves the token: kihon4 finds it by its token
//! label (`token`, or the token's `serial`) and its label (`object`) or
//! `id`, logs in as the user with the PIN, and asks the token to sign with
//! `CKM_EDDSA` (pure Ed25519, PKCS#11 3.0). The public key is read from the
//! public key object of the same label and id (`CKA_EC_POINT`). Of RFC
//! 7512's attributes kihon4 reads `token`, `serial`, `object`, `id` and
//! `type` (which must be `private`) in the path, and `module-path`,
//! `pin-source` (a `file:` URI or an absolute path; the file's first line)
//! and `pin-value` in the query; any other is refused rather than ignored,
//! so that a URI never names a key other than the one meant. `kihon4 audit
//! init-key` with such a URI makes the pair in the token (`CKA_SENSITIVE`,
//! not extractable).

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// The DER of the Ed25519 curve's OID (1.3.101.112), as `CKA_EC_PARAMS`.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Whether a `KIHON4_AUDIT_SIGNING_KEY` value is a PKCS#11 URI.
pub fn is_uri(location: &str) -> bool {
    location.starts_with("pkcs11:")
}

/// What a PKCS#11 URI names.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: PathBuf,
    pin: Pin,
}

#[derive(Clone, PartialEq, Eq)]
enum Pin {
    Value(String),
    File(PathBuf),
}

impl std::fmt::Debug for Pkcs11Uri {
    // Never the PIN.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// RFC 3986 percent-decoding of one attribute's value.
fn pct_decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn text(name: &str, value: &str) -> Result<String, String> {
    String::from_utf8(pct_decode(value).map_err(|e| format!("`{name}`: {e}"))?)
        .map_err(|_| format!("`{name}` is not UTF-8"))
}

impl Pkcs11Uri {
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or("a PKCS#11 URI begins with `pkcs11:`")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut serial, mut object, mut id) = (None, None, None, None);
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| format!("the path attribute `{attribute}` has no `=`"))?;
            let seen = match name {
                "token" => token.replace(text(name, value)?).is_some(),
                "serial" => serial.replace(text(name, value)?).is_some(),
                "object" => object.replace(text(name, value)?).is_some(),
                "id" => id
                    .replace(pct_decode(value).map_err(|e| format!("`id`: {e}"))?)
                    .is_some(),
                "type" if value == "private" => false,
                "type" => {
                    return Err(format!(
                        "`type={value}`: the signing key is the `private` object"
                    ));
                }
                other => {
                    return Err(format!(
                        "the path attribute `{other}` is not one kihon4 reads (token, serial, object, id, type)"
                    ));
                }
            };
            if seen {
                return Err(format!("`{name}` is given twice"));
            }
        }
        let (mut module_path, mut pin) = (None, None);
        for attribute in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| format!("the query attribute `{attribute}` has no `=`"))?;
            let seen = match name {
                "module-path" => module_path
                    .replace(PathBuf::from(text(name, value)?))
                    .is_some(),
                "pin-value" => pin.replace(Pin::Value(text(name, value)?)).is_some(),
                "pin-source" => {
                    let source = text(name, value)?;
                    let file = source
                        .strip_prefix("file://")
                        .unwrap_or(source.strip_prefix("file:").unwrap_or(source.as_str()));
                    if !file.starts_with('/') {
                        return Err("`pin-source` must be a file: URI or an absolute path".into());
                    }
                    pin.replace(Pin::File(PathBuf::from(file))).is_some()
                }
                other => {
                    return Err(format!(
                        "the query attribute `{other}` is not one kihon4 reads (module-path, pin-source, pin-value)"
                    ));
                }
            };
            if seen {
                return Err(format!("`{name}` is given twice, or with another PIN"));
            }
        }
        if token.is_none() && serial.is_none() {
            return Err("name the token, by `token` (its label) or `serial`".into());
        }
        if object.is_none() && id.is_none() {
            return Err("name the key, by `object` (its label) or `id`".into());
        }
        Ok(Self {
            token,
            serial,
            object,
            id,
            module_path: module_path.ok_or("give the PKCS#11 module with `module-path`")?,
            pin: pin.ok_or("give the user PIN with `pin-source` (or `pin-value`)")?,
        })
    }

    /// The key as errors and logs name it: never the PIN.
    pub fn describe(&self) -> String {
        format!(
            "the PKCS#11 key {} in token {} ({})",
            self.object.clone().unwrap_or_else(|| format!(
                "id {}",
                hex::encode(self.id.as_deref().unwrap_or_default())
            )),
            self.token
                .clone()
                .or_else(|| self.serial.clone().map(|s| format!("serial {s}")))
                .unwrap_or_default(),
            self.module_path.display()
        )
    }

    fn pin(&self) -> Result<AuthPin, String> {
        let pin = match &self.pin {
            Pin::Value(v) => v.clone(),
            Pin::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("the PIN file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        Ok(AuthPin::from(pin))
    }

    /// The attributes that find the key's objects of `class`.
    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut template = vec![
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
        ];
        if let Some(label) = &self.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            template.push(Attribute::Id(id.clone()));
        }
        template
    }
}

/// An Ed25519 key in a token.
pub struct Pkcs11Key {
    // Kept for the life of the key: the module stays loaded and initialised.
    _context: Pkcs11,
    session: Mutex<Session>,
    private: ObjectHandle,
    public: [u8; 32],
    what: String,
}

impl Pkcs11Key {
    /// Opens the key the URI names (it must exist).
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, String> {
        let (context, session) = Self::session(uri)?;
        let what = uri.describe();
        let found = |class| {
            session
                .find_objects(&uri.template(class))
                .map_err(|e| format!("{what}: {e}"))
        };
        let private = match found(ObjectClass::PRIVATE_KEY)?.as_slice() {
            [one] => *one,
            [] => return Err(format!("{what} does not exist")),
            _ => return Err(format!("{what} names more than one key: add `id`")),
        };
        let public = match found(ObjectClass::PUBLIC_KEY)?.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "{what} has no public key object of the same label and id"
                ));
            }
            _ => return Err(format!("{what} has more than one public key object")),
        };
        let point = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| format!("{what}: {e}"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| format!("{what}: the public key has no CKA_EC_POINT"))?;
        let public = ec_point(&point)
            .ok_or_else(|| format!("{what}: the public key is not an Ed25519 point"))?;
        Ok(Self {
            _context: context,
            session: Mutex::new(session),
            private,
            public,
            what,
        })
    }

    /// Makes the key pair the URI names in its token (refused when a key
    /// of that label or id is there already), then opens it.
    pub fn generate(uri: &Pkcs11Uri) -> Result<Self, String> {
        let (_context, session) = Self::session(uri)?;
        let what = uri.describe();
        let existing = session
            .find_objects(&uri.template(ObjectClass::PRIVATE_KEY))
            .map_err(|e| format!("{what}: {e}"))?;
        if !existing.is_empty() {
            return Err(format!(
                "{what} exists already: a signing key is never replaced"
            ));
        }
        let id = match &uri.id {
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().as_bytes().to_vec(),
        };
        let label = uri.object.clone().unwrap_or_else(|| hex::encode(&id));
        let common = [
            Attribute::Token(true),
            Attribute::Label(label.into_bytes()),
            Attribute::Id(id),
        ];
        let mut public = vec![
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Verify(true),
        ];
        public.extend(common.iter().cloned());
        let mut private = vec![
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ];
        private.extend(common.iter().cloned());
        session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
            .map_err(|e| format!("{what} cannot be made: {e}"))?;
        drop(session);
        Self::open(uri)
    }

    /// The process's one context of the module at `path`, initialised
    /// once: a context finalises the module when its last clone is
    /// dropped, which would end every other key's sessions with it.
    fn context(path: &std::path::Path) -> Result<Pkcs11, String> {
        static CONTEXTS: std::sync::OnceLock<Mutex<std::collections::HashMap<PathBuf, Pkcs11>>> =
            std::sync::OnceLock::new();
        let mut contexts = CONTEXTS
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| "a PKCS#11 module's loading panicked".to_owned())?;
        if let Some(context) = contexts.get(path) {
            return Ok(context.clone());
        }
        let context = Pkcs11::new(path).map_err(|e| e.to_string())?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => return Err(e.to_string()),
        }
        contexts.insert(path.to_owned(), context.clone());
        Ok(context)
    }

    fn session(uri: &Pkcs11Uri) -> Result<(Pkcs11, Session), String> {
        let what = uri.describe();
        let context =
            Self::context(&uri.module_path).map_err(|e| format!("{what}: the module: {e}"))?;
        let slot = Self::slot(&context, uri).map_err(|e| format!("{what}: {e}"))?;
        let session = context
            .open_rw_session(slot)
            .map_err(|e| format!("{what}: {e}"))?;
        match session.login(UserType::User, Some(&uri.pin()?)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => return Err(format!("{what}: logging in: {e}")),
        }
        Ok((context, session))
    }

    fn slot(context: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, String> {
        let mut matching = Vec::new();
        for slot in context.get_slots_with_token().map_err(|e| e.to_string())? {
            let info = context.get_token_info(slot).map_err(|e| e.to_string())?;
            let label_ok = uri
                .token
                .as_deref()
                .is_none_or(|t| info.label().trim() == t);
            let serial_ok = uri
                .serial
                .as_deref()
                .is_none_or(|s| info.serial_number().trim() == s);
            if label_ok && serial_ok {
                matching.push(slot);
            }
        }
        match matching.as_slice() {
            [one] => Ok(*one),
            [] => Err("no such token".into()),
            _ => Err("more than one token matches: add `serial`".into()),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Signs in the token (pure Ed25519).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let session = self
            .session
            .lock()
            .map_err(|_| format!("{}: a signature panicked", self.what))?;
        let signature = session
            .sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.private,
                message,
            )
            .map_err(|e| format!("{}: signing: {e}", self.what))?;
        if signature.len() != 64 {
            return Err(format!(
                "{}: the token gave a signature of {} bytes, not 64",
                self.what,
                signature.len()
            ));
        }
        Ok(signature)
    }
}

/// The raw Ed25519 key of a `CKA_EC_POINT`: DER OCTET STRING of 32 bytes
/// (PKCS#11 3.0), or the 32 bytes themselves, as some tokens give.
fn ec_point(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw if raw.len() == 32 => raw.try_into().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_uris_of_rfc_7512_and_refuses_what_it_does_not_read() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=kihon4%20HSM;object=audit-log;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/kihon4/pin",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("kihon4 HSM"));
        assert_eq!(uri.object.as_deref(), Some("audit-log"));
        assert!(uri.pin == Pin::File("/etc/kihon4/pin".into()));
        assert!(!format!("{uri:?}").contains("pin"));
        let by_id =
            Pkcs11Uri::parse("pkcs11:serial=12ab;id=%01%02?module-path=/m.so&pin-value=1234")
                .unwrap();
        assert_eq!(by_id.id, Some(vec![1, 2]));
        assert!(!by_id.describe().contains("1234"));
        for bad in [
            "pkcs11:object=k?module-path=/m.so&pin-value=1",
            "pkcs11:token=t?module-path=/m.so&pin-value=1",
            "pkcs11:token=t;object=k?pin-value=1",
            "pkcs11:token=t;object=k?module-path=/m.so",
            "pkcs11:token=t;object=k;type=public?module-path=/m.so&pin-value=1",
            "pkcs11:token=t;object=k;slot-id=1?module-path=/m.so&pin-value=1",
            "pkcs11:token=t;object=k;object=j?module-path=/m.so&pin-value=1",
            "pkcs11:token=t;object=k?module-path=/m.so&pin-source=pin.txt",
            "pkcs11:token=t;object=%zz?module-path=/m.so&pin-value=1",
            "pkcs11:token=t;object=k?module-name=softhsm2&pin-value=1",
        ] {
            assert!(Pkcs11Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_both_forms_of_an_ed25519_point() {
        let mut der = vec![0x04, 0x20];
        der.extend([7u8; 32]);
        assert_eq!(ec_point(&der), Some([7u8; 32]));
        assert_eq!(ec_point(&[7u8; 32]), Some([7u8; 32]));
        assert_eq!(ec_point(&[0x04, 0x21, 0]), None);
    }
}
