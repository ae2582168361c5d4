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

/// The key id of the log key: the first four bytes of
/// `SHA-256(origin || "\n" || 0x01 || public key)`.
pub fn key_id(key: &SigningKey) -> u32 {
    signed_note::key_id(key.log_origin(), &encoded_key(key))
}

/// The verifier key auditors and witnesses are given:
/// `<origin>+<key id, 8 hex digits>+<base64(0x01 || public key)>`.
pub fn verifier_key(key: &SigningKey) -> String {
    format!(
        "{}+{:08x}+{}",
        key.log_origin(),
        key_id(key),
        B64.encode(encoded_key(key))
    )
}

/// The signed note of the checkpoint of a tree of `size` with root `root`.
pub fn checkpoint_note(key: &SigningKey, size: u64, root: Hash) -> Result<String, String> {
    let text = Checkpoint::new(key.log_origin(), size, root, "")
        .map_err(|e| format!("the checkpoint cannot be written: {e}"))?
        .to_bytes();
    let signature = Signature::new(
        key.log_origin().to_owned(),
        key_id(key),
        key.sign_raw(&text),
    )
    .map_err(|e| format!("the checkpoint cannot be signed: {e}"))?;
    let note = Note::new(&text, &[signature]).map_err(|e| e.to_string())?;
    String::from_utf8(note.to_bytes()).map_err(|e| e.to_string())
}

/// A checkpoint whose signature by the log key was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The note's signature lines by other keys (witnesses' cosignatures),
    /// not checked here.
    pub other_signatures: usize,
}

/// Checks a signed checkpoint against a verifier key (see
/// [`verifier_key`]) and reads it.
pub fn verify_checkpoint(note: &[u8], vkey: &str) -> Result<Verified, String> {
    let verifier = StandardVerifier::new(vkey.trim())
        .map_err(|e| format!("the log's verifier key is not usable: {e}"))?;
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    let (_, others) = parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| format!("the checkpoint's signature does not verify: {e}"))?;
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|e| format!("not a C2SP checkpoint: {e}"))?;
    let name = vkey.split('+').next().unwrap_or_default();
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
}
