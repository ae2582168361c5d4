//! The audit trail as a transparency log (docs/architecture.md, "The audit
//! log"): every audit event is a leaf of an RFC 6962 Merkle tree, the tree
//! is served as C2SP tlog-tiles, and its heads are C2SP tlog-checkpoints,
//! signed notes (C2SP signed-note) with the audit key (Ed25519).
//!
//! - A **leaf** is the event's canonical JSON, byte for byte as a JSON
//!   Lines export holds it (the line without its `\n`); leaf `i` is the
//!   event of `seq = i + 1`. Its hash is RFC 6962's `SHA-256(0x00 || leaf)`.
//! - The tree is kept as its **stored hashes** (`audit_log_hashes`), in the
//!   dense order of Go's `sumdb/tlog` (Crosby and Wallach), written by the
//!   [`seal`] step after the events commit; tiles, roots and proofs are
//!   read from them ([`proofs`]).
//! - A **checkpoint** is `<origin>\n<size>\n<base64 root>\n`, signed by the
//!   key named `<origin>` ([`note`]). The origin is
//!   `KIHON4_AUDIT_LOG_ORIGIN` (default `kihon4.invalid/audit/<key id>` of
//!   the first key); it never changes, not even when the key is rotated
//!   ([`keys`]).
//!
//! The merkle arithmetic is `tlog_tiles`' and the note format
//! `signed_note`'s (Cloudflare's ports of Go's `sumdb/tlog` and
//! `sumdb/note`); the tests check both against Go's own packages.

pub mod keys;
pub mod note;
pub mod proofs;
pub mod seal;
pub mod store;
pub mod verify;
pub mod witness;

pub use note::{Verified, checkpoint_note, verifier_key, verify_checkpoint};
pub use proofs::{
    Consistency, CustomerProofs, Inclusion, LogError, checkpoint_at, consistency, customer_proofs,
    inclusion, latest, tile, verify_customer_proofs,
};
pub use seal::{Sealed, seal};
pub use store::sealed_size;

/// The tile height of C2SP tlog-tiles: 2^8 = 256 hashes in a full tile.
pub const TILE_HEIGHT: u8 = 8;
/// How many events one sealing round adds at most (one transaction).
pub const SEAL_BATCH: u64 = 20_000;

/// The leaf index of the event of `seq`.
pub fn leaf_index(seq: i64) -> Option<u64> {
    u64::try_from(seq).ok()?.checked_sub(1)
}
