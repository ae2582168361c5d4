//! Checkpoints as signed notes (C2SP tlog-checkpoint, signed-note): what
//! the sealer signs and what the verifier checks.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use signed_note::{Note, Signature, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::audit_export::SigningKey;

/// The signed-note signature type of Ed25519 (C2SP signed-note).
const ED25519: u8 = 0x01;

fn encoded_key(key: &SigningKey) -> Vec<u8> {
    let mut encoded = vec![ED25519];
    encoded.extend_from_slice(&key.public_key_raw());
    encoded
}

/// The key id of the log key named `origin`: the first four bytes of
/// `SHA-256(origin || "\n" || 0x01 || public key)`.
pub fn key_id_as(origin: &str, key: &SigningKey) -> u32 {
    signed_note::key_id(origin, &encoded_key(key))
}

/// [`key_id_as`] the key's own origin.
pub fn key_id(key: &SigningKey) -> u32 {
    key_id_as(key.log_origin(), key)
}

/// The verifier key auditors and witnesses are given:
/// `<origin>+<key id, 8 hex digits>+<base64(0x01 || public key)>`.
pub fn verifier_key_as(origin: &str, key: &SigningKey) -> String {
    format!(
        "{origin}+{:08x}+{}",
        key_id_as(origin, key),
        B64.encode(encoded_key(key))
    )
}

/// [`verifier_key_as`] the key's own origin.
pub fn verifier_key(key: &SigningKey) -> String {
    verifier_key_as(key.log_origin(), key)
}

/// `text` signed by each of `keys` as the log named `origin`.
fn signed_as(origin: &str, keys: &[&SigningKey], text: &[u8]) -> Result<String, String> {
    let signatures = keys
        .iter()
        .map(|key| {
            Signature::new(
                origin.to_owned(),
                key_id_as(origin, key),
                key.sign_raw(text)?,
            )
            .map_err(|e| format!("the note cannot be signed: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let note = Note::new(text, &signatures).map_err(|e| e.to_string())?;
    String::from_utf8(note.to_bytes()).map_err(|e| e.to_string())
}

/// The signed note of the checkpoint of a tree of `size` with root `root`,
/// of the log named `origin`.
pub fn checkpoint_note_as(
    key: &SigningKey,
    origin: &str,
    size: u64,
    root: Hash,
) -> Result<String, String> {
    let text = Checkpoint::new(origin, size, root, "")
        .map_err(|e| format!("the checkpoint cannot be written: {e}"))?
        .to_bytes();
    signed_as(origin, &[key], &text)
}

/// [`checkpoint_note_as`] the key's own origin.
pub fn checkpoint_note(key: &SigningKey, size: u64, root: Hash) -> Result<String, String> {
    checkpoint_note_as(key, key.log_origin(), size, root)
}

/// The first line of a key rotation statement.
const ROTATION: &str = "kihon4 audit log key rotation";

/// What a key rotation statement says: from `successor_from` on, the log
/// `origin` is signed by `successor` instead of `retired`, which signed it
/// up to `retired_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub origin: String,
    pub retired: String,
    pub successor: String,
    /// The largest tree the retired key signed.
    pub retired_after: u64,
    /// The smallest tree the successor signs: the one that first holds the
    /// rotation's own event.
    pub successor_from: u64,
    /// When, RFC 3339.
    pub at: String,
}

/// The statement of `rotation`, signed by both keys (a signed note with
/// two signatures, C2SP signed-note): the retired key vouches for its
/// successor and the successor for holding its private key.
pub fn rotation_statement(
    rotation: &Rotation,
    retired: &SigningKey,
    successor: &SigningKey,
) -> Result<String, String> {
    let text = format!(
        "{ROTATION}\norigin {}\nretired {}\nsuccessor {}\nretired-after {}\nsuccessor-from {}\nat {}\n",
        rotation.origin,
        rotation.retired,
        rotation.successor,
        rotation.retired_after,
        rotation.successor_from,
        rotation.at
    );
    signed_as(&rotation.origin, &[retired, successor], text.as_bytes())
}

/// Reads a key rotation statement and checks that both keys it names
/// signed it.
pub fn verify_rotation(statement: &[u8]) -> Result<Rotation, String> {
    let note = Note::from_bytes(statement).map_err(|e| format!("not a signed note: {e}"))?;
    let text = std::str::from_utf8(note.text()).map_err(|_| "not UTF-8".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(ROTATION) {
        return Err("not a key rotation statement".into());
    }
    let mut field = |name: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(' '))
            .map(str::to_owned)
            .ok_or_else(|| format!("the statement has no `{name}` line"))
    };
    let origin = field("origin")?;
    let retired = field("retired")?;
    let successor = field("successor")?;
    let number = |s: String, name: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("the statement's `{name}` is not a number"))
    };
    let retired_after = number(field("retired-after")?, "retired-after")?;
    let successor_from = number(field("successor-from")?, "successor-from")?;
    let at = field("at")?;
    if retired_after >= successor_from {
        return Err("the statement's successor starts before the retired key ends".into());
    }
    for (role, vkey) in [("retired", &retired), ("successor", &successor)] {
        if vkey.split('+').next() != Some(origin.as_str()) {
            return Err(format!("the {role} key is not a key of {origin}"));
        }
        let verifier = StandardVerifier::new(vkey)
            .map_err(|e| format!("the {role} key is not a verifier key: {e}"))?;
        note.verify(&VerifierList::new(vec![Box::new(verifier)]))
            .map_err(|e| format!("the {role} key did not sign the statement: {e}"))?;
    }
    Ok(Rotation {
        origin,
        retired,
        successor,
        retired_after,
        successor_from,
        at,
    })
}

/// The size and root of a checkpoint, its signatures not checked.
pub fn read_checkpoint(note: &[u8]) -> Result<(u64, Hash), String> {
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|e| format!("not a C2SP checkpoint: {e}"))?;
    Ok((checkpoint.size(), *checkpoint.hash()))
}

/// The signed-note key id of a verifier key.
pub fn vkey_id(vkey: &str) -> Result<u32, String> {
    StandardVerifier::new(vkey.trim())
        .map(|v| signed_note::Verifier::key_id(&v))
        .map_err(|e| format!("not a verifier key: {e}"))
}

/// The verifiers of the log keys `vkeys` (one per line, all of one log)
/// and the log's name.
pub fn log_verifiers(vkeys: &str) -> Result<(String, Vec<Box<dyn signed_note::Verifier>>), String> {
    let lines: Vec<&str> = vkeys
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let name = lines
        .first()
        .and_then(|l| l.split('+').next())
        .ok_or("no verifier key of the log is given")?
        .to_owned();
    let mut verifiers: Vec<Box<dyn signed_note::Verifier>> = Vec::new();
    for line in &lines {
        if line.split('+').next() != Some(name.as_str()) {
            return Err(format!(
                "the verifier keys name different logs (`{name}`, `{}`)",
                line.split('+').next().unwrap_or_default()
            ));
        }
        verifiers
            .push(Box::new(StandardVerifier::new(line).map_err(|e| {
                format!("the log's verifier key is not usable: {e}")
            })?));
    }
    Ok((name, verifiers))
}

/// A checkpoint whose signature by the log key was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The signed-note key id of the log key that signed it.
    pub signed_by: u32,
    /// The note's signature lines by other keys (witnesses' cosignatures),
    /// not checked here.
    pub other_signatures: usize,
}

/// Checks a signed checkpoint against the log's verifier keys (see
/// [`verifier_key`]; one, or several of one log, one per line, such as
/// the current and the retired keys) and reads it.
pub fn verify_checkpoint(note: &[u8], vkeys: &str) -> Result<Verified, String> {
    let (name, verifiers) = log_verifiers(vkeys)?;
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    let (verified, others) = parsed
        .verify(&VerifierList::new(verifiers))
        .map_err(|e| format!("the checkpoint's signature does not verify: {e}"))?;
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|e| format!("not a C2SP checkpoint: {e}"))?;
    if checkpoint.origin() != name {
        return Err(format!(
            "the checkpoint's origin `{}` is not the key's name `{name}`",
            checkpoint.origin()
        ));
    }
    Ok(Verified {
        origin: checkpoint.origin().to_owned(),
        size: checkpoint.size(),
        root: *checkpoint.hash(),
        signed_by: verified[0].id(),
        other_signatures: others.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(origin: Option<&str>) -> (SigningKey, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("kihon4-note-{}", uuid::Uuid::new_v4()));
        let path = dir.join("key.pem");
        let key = SigningKey::create(&path).unwrap().with_log_origin(origin);
        (key, dir)
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_reads_back() {
        let (key, dir) = new_key(Some("audit.bank.example/kihon4"));
        let root = tlog_tiles::record_hash(b"leaf");
        let note = checkpoint_note(&key, 1, root).unwrap();
        let text = format!("audit.bank.example/kihon4\n1\n{}\n\n", B64.encode(root.0));
        assert!(note.starts_with(&text), "{note}");
        assert!(note.contains("\n\u{2014} audit.bank.example/kihon4 "));
        let verified = verify_checkpoint(note.as_bytes(), &verifier_key(&key)).unwrap();
        assert_eq!((verified.size, verified.root), (1, root));
        assert_eq!(verified.other_signatures, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_changed_note_or_another_key_is_refused() {
        let (key, dir) = new_key(None);
        assert!(key.log_origin().starts_with("kihon4.invalid/audit/"));
        let note = checkpoint_note(&key, 5, tlog_tiles::record_hash(b"x")).unwrap();
        let vkey = verifier_key(&key);
        let changed = note.replacen("\n5\n", "\n6\n", 1);
        assert!(verify_checkpoint(changed.as_bytes(), &vkey).is_err());
        let (other, dir2) = new_key(None);
        assert!(verify_checkpoint(note.as_bytes(), &verifier_key(&other)).is_err());
        assert!(verify_checkpoint(b"garbage", &vkey).is_err());
        for d in [dir, dir2] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_checkpoint_verifies_with_any_key_of_the_log_given() {
        let (old, dir) = new_key(Some("audit.bank.example/kihon4"));
        let (new, dir2) = new_key(Some("audit.bank.example/kihon4"));
        let keys = format!("{}\n{}\n", verifier_key(&old), verifier_key(&new));
        let note = checkpoint_note(&new, 3, tlog_tiles::record_hash(b"x")).unwrap();
        let verified = verify_checkpoint(note.as_bytes(), &keys).unwrap();
        assert_eq!(verified.signed_by, key_id(&new));
        let (stranger, dir3) = new_key(Some("other.example/log"));
        let mixed = format!("{}\n{}", verifier_key(&old), verifier_key(&stranger));
        assert!(
            verify_checkpoint(note.as_bytes(), &mixed)
                .unwrap_err()
                .contains("different logs")
        );
        assert!(verify_checkpoint(note.as_bytes(), "\n").is_err());
        for d in [dir, dir2, dir3] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_rotation_statement_needs_both_keys_signatures() {
        let origin = "audit.bank.example/kihon4";
        let (old, dir) = new_key(Some(origin));
        let (new, dir2) = new_key(Some(origin));
        let rotation = Rotation {
            origin: origin.into(),
            retired: verifier_key(&old),
            successor: verifier_key(&new),
            retired_after: 41,
            successor_from: 43,
            at: "2026-12-06T12:00:00Z".into(),
        };
        let statement = rotation_statement(&rotation, &old, &new).unwrap();
        assert!(
            statement
                .starts_with("kihon4 audit log key rotation\norigin audit.bank.example/kihon4\n")
        );
        assert_eq!(verify_rotation(statement.as_bytes()).unwrap(), rotation);
        // Signed by the successor alone (its own claim), or by a stranger
        // in the retired key's place: refused.
        let (stranger, dir3) = new_key(Some(origin));
        let forged = rotation_statement(&rotation, &stranger, &new).unwrap();
        assert!(
            verify_rotation(forged.as_bytes())
                .unwrap_err()
                .contains("retired key did not sign")
        );
        let changed = statement.replacen("retired-after 41", "retired-after 40", 1);
        assert!(verify_rotation(changed.as_bytes()).is_err());
        let backwards = Rotation {
            successor_from: 41,
            ..rotation.clone()
        };
        let statement = rotation_statement(&backwards, &old, &new).unwrap();
        assert!(verify_rotation(statement.as_bytes()).is_err());
        for d in [dir, dir2, dir3] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
