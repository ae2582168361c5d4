//! Evidence for auditors (docs/architecture.md#the-audit-trail): signed
//! checkpoints of the chain head, exports of a range of events with a signed
//! manifest, and their offline verification.
//!
//! - [`key`]: the signing key is Ed25519, a PKCS#8 PEM file
//!   (`KIHON4_AUDIT_SIGNING_KEY`; made on first use on the embedded
//!   default), its public key written beside it as `<file>.pub`
//!   (SubjectPublicKeyInfo PEM, as OpenSSL writes).
//! - [`checkpoint`]: a checkpoint signs the canonical JSON (RFC 8785) of
//!   `{"type": "kihon4-audit-checkpoint", "v": 1, "seq", "head_hash", "at"}`.
//! - [`export`]: a JSON Lines export holds, per line, exactly the bytes that
//!   were hashed (the event's canonical JSON), so personal data appear only
//!   as salted commitments. The manifest names the range, the count, the
//!   hash before the first event, the first and last hashes, the SHA-256 of
//!   the file, a checkpoint, and is itself signed (its canonical JSON without
//!   `signature`). Every handout of an export (the export, its manifest, its
//!   companion file) is recorded as one `audit.exported` event.
//! - [`verify`]: the offline verifier.
//! - [`erase`]: a customer's personal values erased, the chain intact.

pub mod checkpoint;
pub mod erase;
pub mod export;
pub mod key;
pub mod pkcs11;
pub mod verify;

pub use checkpoint::{
    Checkpoint, checkpoint, checkpoint_if_due, latest_checkpoint, parse_checkpoint,
};
pub use erase::erase_customer;
pub use export::*;
pub use key::{KeyBackend, PublicKey, SigningKey, in_token, public_key_path};
pub use verify::{
    Companion, Expectations, Failure, verify_expecting, verify_jsonl, verify_with_personal,
};

/// The version of the export and manifest formats.
pub const EXPORT_VERSION: u32 = 1;
