//! Witnesses (C2SP tlog-witness, tlog-cosignature): a witness keeps the
//! latest checkpoint it verified for each log it follows, cosigns a new one
//! only if a consistency proof shows that it extends that one, and so
//! refuses any rewritten history it would otherwise have to accept. kihon4
//! is both sides:
//!
//! - [`Witness`]: the `add-checkpoint` rules, for `kihon4 witness serve`,
//!   which an auditor runs with its own key and state file;
//! - [`submit`]: the log's client, which sends each new checkpoint with a
//!   consistency proof to the configured witnesses
//!   (`KIHON4_AUDIT_LOG_WITNESSES`) and keeps their cosignatures;
//! - [`verify_cosignatures`]: the check a verifier applies (a quorum).
//!
//! Cosignatures are the Ed25519 type, `cosignature/v1` (key type `0x04`).
//! The ML-DSA-44 type the specification recommends for new deployments is
//! not implemented.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use signed_note::{Note, StandardVerifier, Verifier, VerifierList};
use tlog_tiles::{Checkpoint, EMPTY_HASH, Hash, check_tree};

use crate::audit_export::SigningKey;

/// The key type byte of Ed25519 cosignatures (C2SP tlog-cosignature).
const COSIGNATURE_V1: u8 = 0x04;

/// The message a `cosignature/v1` signs: a header, the time, the note text.
fn cosigned_message(timestamp: u64, text: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(text);
    message
}

/// A witness's (or any cosigner's) public key, read from its vkey
/// `<name>+<key id>+<base64(0x04 || 32-byte Ed25519 key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignerKey {
    pub name: String,
    pub key_id: u32,
    public: [u8; 32],
}

impl CosignerKey {
    pub fn parse(vkey: &str) -> Result<Self, String> {
        let parts: Vec<&str> = vkey.trim().splitn(3, '+').collect();
        let [name, id, key] = parts[..] else {
            return Err("a cosigner key is <name>+<key id>+<base64 key>".into());
        };
        if !signed_note::is_key_name_valid(name) {
            return Err(format!("`{name}` is not a key name"));
        }
        let key = B64
            .decode(key)
            .map_err(|_| "the cosigner key is not base64".to_owned())?;
        if key.len() != 33 || key[0] != COSIGNATURE_V1 {
            return Err("not an Ed25519 cosignature key (type 0x04)".into());
        }
        let public: [u8; 32] = key[1..].try_into().expect("33 bytes");
        let key_id = signed_note::key_id(name, &key);
        if id.len() != 8 || u32::from_str_radix(id, 16).ok() != Some(key_id) {
            return Err(format!("the key id `{id}` is not the key's"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id,
            public,
        })
    }

    /// The vkey, as [`CosignerKey::parse`] reads it.
    pub fn vkey(&self) -> String {
        let mut key = vec![COSIGNATURE_V1];
        key.extend_from_slice(&self.public);
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(key))
    }
}

impl Verifier for CosignerKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 8 + 64 {
            return false;
        }
        let timestamp = u64::from_be_bytes(sig[..8].try_into().expect("8 bytes"));
        if timestamp > i64::MAX as u64 {
            return false;
        }
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(&cosigned_message(timestamp, text), &sig[8..])
            .is_ok()
    }
}

/// A cosigner: an Ed25519 key (a PKCS#8 PEM file, as the audit key) and its name.
pub struct Cosigner {
    key: SigningKey,
    pub name: String,
}

impl Cosigner {
    pub fn new(key: SigningKey, name: &str) -> Result<Self, String> {
        if !signed_note::is_key_name_valid(name) || !name.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "`{name}` is not a witness name: a schema-less URL, no spaces or `+`"
            ));
        }
        Ok(Self {
            key,
            name: name.to_owned(),
        })
    }

    pub fn public_key(&self) -> CosignerKey {
        let mut encoded = vec![COSIGNATURE_V1];
        encoded.extend_from_slice(&self.key.public_key_raw());
        CosignerKey {
            name: self.name.clone(),
            key_id: signed_note::key_id(&self.name, &encoded),
            public: self.key.public_key_raw(),
        }
    }

    /// The cosignature line of a checkpoint's text, at `timestamp`.
    pub fn cosign(&self, text: &[u8], timestamp: u64) -> Result<String, String> {
        let key = self.public_key();
        let mut sig = key.key_id.to_be_bytes().to_vec();
        sig.extend_from_slice(&timestamp.to_be_bytes());
        sig.extend_from_slice(&self.key.sign_raw(&cosigned_message(timestamp, text))?);
        Ok(format!("\u{2014} {} {}\n", self.name, B64.encode(sig)))
    }
}

/// How many of `witnesses` validly cosigned the note; an invalid
/// cosignature by one of them is an error (the note is malformed).
/// `log_vkeys` (one or more, one per line) check the log's own signature.
pub fn verify_cosignatures(
    note: &[u8],
    log_vkey: &str,
    witnesses: &[CosignerKey],
) -> Result<usize, String> {
    let (_, mut known) = super::note::log_verifiers(log_vkey)?;
    for w in witnesses {
        known.push(Box::new(w.clone()));
    }
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    let (verified, _) = parsed
        .verify(&VerifierList::new(known))
        .map_err(|e| format!("a signature does not verify: {e}"))?;
    Ok(verified
        .iter()
        .filter(|s| {
            witnesses
                .iter()
                .any(|w| w.name == s.name() && w.key_id == s.id())
        })
        .count())
}

/// A refusal of `add-checkpoint`, with the status the specification gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// For 409: the size of the latest cosigned checkpoint (`text/x.tlog.size`).
    pub body: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        body: format!("{}\n", why.into()),
    }
}

/// What a witness keeps per log: the latest checkpoint it cosigned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub logs: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub size: u64,
    /// The root hash, base64.
    pub root: String,
}

/// A witness: its key, the logs it follows (by origin, their verifier
/// keys), and its state file, updated atomically before it answers.
pub struct Witness {
    cosigner: Cosigner,
    logs: BTreeMap<String, Vec<String>>,
    state_file: PathBuf,
    state: tokio::sync::Mutex<State>,
}

impl Witness {
    /// `logs`: the log verifier keys it trusts; its state is read from
    /// `state_file` (none yet: it has cosigned nothing).
    pub fn open(cosigner: Cosigner, logs: &[String], state_file: &Path) -> Result<Self, String> {
        let mut by_origin: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for vkey in logs {
            StandardVerifier::new(vkey.trim())
                .map_err(|e| format!("--log {vkey}: not a log verifier key ({e})"))?;
            let origin = vkey.split('+').next().unwrap_or_default().to_owned();
            by_origin
                .entry(origin)
                .or_default()
                .push(vkey.trim().to_owned());
        }
        let state = match std::fs::read(state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a witness state file: {e}", state_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(format!("{}: {e}", state_file.display())),
        };
        Ok(Self {
            cosigner,
            logs: by_origin,
            state_file: state_file.to_owned(),
            state: tokio::sync::Mutex::new(state),
        })
    }

    pub fn public_key(&self) -> CosignerKey {
        self.cosigner.public_key()
    }

    /// `POST <prefix>/add-checkpoint`: the body as the specification gives
    /// it; the cosignature lines, or the refusal.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Result<String, Refusal> {
        let text = std::str::from_utf8(body).map_err(|_| refuse(400, "the body is not UTF-8"))?;
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| refuse(400, "no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .filter(|n| *n == "0" || (!n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| refuse(400, "the first line is not `old <size>`"))?;
        let proof = lines
            .map(|l| {
                B64.decode(l)
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .map(Hash)
                    .ok_or_else(|| refuse(400, "a proof line is not a base64 hash"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > 63 {
            return Err(refuse(400, "more than 63 proof lines"));
        }
        let parsed = Note::from_bytes(note.as_bytes())
            .map_err(|_| refuse(400, "the checkpoint is not a signed note"))?;
        let checkpoint = Checkpoint::from_bytes(parsed.text())
            .map_err(|_| refuse(400, "the note is not a checkpoint"))?;
        let origin = checkpoint.origin().to_owned();
        let Some(keys) = self.logs.get(&origin) else {
            return Err(refuse(404, format!("unknown log {origin}")));
        };
        let verifiers: Vec<Box<dyn Verifier>> = keys
            .iter()
            .map(|k| {
                Box::new(StandardVerifier::new(k).expect("checked at open")) as Box<dyn Verifier>
            })
            .collect();
        if parsed.verify(&VerifierList::new(verifiers)).is_err() {
            return Err(refuse(403, "no valid signature by the log's key"));
        }
        let (size, root) = (checkpoint.size(), *checkpoint.hash());
        if old > size {
            return Err(refuse(400, "the old size is beyond the checkpoint's"));
        }
        // Checked and recorded under one lock: no race rolls the log back.
        let mut state = self.state.lock().await;
        let seen = state.logs.get(&origin).cloned();
        let (seen_size, seen_root) = match &seen {
            Some(s) => (
                s.size,
                Hash::parse_hash(&s.root).map_err(|_| refuse(500, "the state file is damaged"))?,
            ),
            None => (0, EMPTY_HASH),
        };
        if old != seen_size {
            return Err(Refusal {
                status: 409,
                body: format!("{seen_size}\n"),
            });
        }
        if size == 0 && root != EMPTY_HASH {
            return Err(refuse(422, "an empty tree's root is the hash of nothing"));
        }
        if old == 0 {
            if !proof.is_empty() {
                return Err(refuse(422, "a proof from the empty tree must be empty"));
            }
        } else if old == size {
            if root != seen_root {
                return Err(refuse(422, "the same size with another root"));
            }
        } else if check_tree(&proof, size, root, old, seen_root).is_err() {
            return Err(refuse(422, "the consistency proof does not verify"));
        }
        let mut next = state.clone();
        next.logs.insert(
            origin,
            Seen {
                size,
                root: B64.encode(root.0),
            },
        );
        persist(&self.state_file, &next).map_err(|e| {
            tracing::error!(error = %e, "the witness state could not be written");
            refuse(500, "the state could not be written")
        })?;
        *state = next;
        let timestamp = chrono::Utc::now().timestamp().max(1) as u64;
        self.cosigner
            .cosign(parsed.text(), timestamp)
            .map_err(|e| refuse(500, format!("the witness cannot sign: {e}")))
    }
}

/// Replaces the state file: a new file, synced, renamed over the old one,
/// the folder synced.
fn persist(path: &Path, state: &State) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::new_v4()
    ));
    crate::files::write_private_file(&temp, &serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_log::note::{checkpoint_note, verifier_key};

    fn key(dir: &Path, name: &str) -> SigningKey {
        SigningKey::create(&dir.join(format!("{name}.pem"))).unwrap()
    }

    /// The tree of leaves "0".."t-1": its root and its proof from size `n`.
    fn tree(t: u64, n: u64) -> (Hash, Vec<Hash>) {
        let mut all = std::collections::HashMap::new();
        struct M<'a>(&'a std::collections::HashMap<u64, Hash>);
        impl tlog_tiles::HashReader for M<'_> {
            fn read_hashes(&self, i: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
                Ok(i.iter().map(|i| self.0[i]).collect())
            }
        }
        for i in 0..t {
            let hs = tlog_tiles::stored_hashes(i, i.to_string().as_bytes(), &M(&all)).unwrap();
            let start = tlog_tiles::stored_hash_index(0, i);
            for (j, h) in hs.into_iter().enumerate() {
                all.insert(start + j as u64, h);
            }
        }
        let proof = if n == 0 || n == t {
            Vec::new()
        } else {
            tlog_tiles::prove_tree(t, n, &M(&all)).unwrap()
        };
        (tlog_tiles::tree_hash(t, &M(&all)).unwrap(), proof)
    }

    fn root(n: u64) -> Hash {
        tree(n, n).0
    }

    /// The status a witness refuses a body with.
    async fn refused(witness: &Witness, body: &[u8]) -> u16 {
        witness.add_checkpoint(body).await.unwrap_err().status
    }

    #[tokio::test]
    async fn two_checkpoints_racing_from_one_size_are_not_both_cosigned() {
        let dir = tempfile::tempdir().unwrap();
        let log = key(dir.path(), "log").with_log_origin(Some("audit.bank.example/kihon4"));
        let vkey = verifier_key(&log);
        let cosigner = Cosigner::new(key(dir.path(), "w"), "auditor.example/w1").unwrap();
        let witness = std::sync::Arc::new(
            Witness::open(cosigner, &[vkey], &dir.path().join("state.json")).unwrap(),
        );
        let body = |size: u64| {
            let mut b = b"old 0\n\n".to_vec();
            b.extend_from_slice(checkpoint_note(&log, size, root(size)).unwrap().as_bytes());
            b
        };
        // Both claim to follow the empty tree; only the first recorded may.
        let (a, b) = tokio::join!(
            {
                let (w, body) = (witness.clone(), body(4));
                tokio::spawn(async move { w.add_checkpoint(&body).await })
            },
            {
                let (w, body) = (witness.clone(), body(7));
                tokio::spawn(async move { w.add_checkpoint(&body).await })
            },
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_ok() != b.is_ok(), "exactly one cosigned: {a:?} {b:?}");
        let (won, lost) = if a.is_ok() { (4, b) } else { (7, a) };
        let lost = lost.unwrap_err();
        assert_eq!((lost.status, lost.body), (409, format!("{won}\n")));
        let kept: State =
            serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
        assert_eq!(kept.logs["audit.bank.example/kihon4"].size, won);
    }

    #[tokio::test]
    async fn a_witness_cosigns_what_extends_what_it_saw_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let log = key(dir.path(), "log").with_log_origin(Some("audit.bank.example/kihon4"));
        let vkey = verifier_key(&log);
        let cosigner = Cosigner::new(key(dir.path(), "w"), "auditor.example/w1").unwrap();
        let state = dir.path().join("state.json");
        let witness = Witness::open(cosigner, std::slice::from_ref(&vkey), &state).unwrap();
        let w = witness.public_key();
        assert_eq!(CosignerKey::parse(&w.vkey()).unwrap(), w);

        let note5 = checkpoint_note(&log, 5, root(5)).unwrap();
        let body = |old: u64, proof: &[Hash], note: &str| {
            let mut b = format!("old {old}\n");
            for h in proof {
                b.push_str(&B64.encode(h.0));
                b.push('\n');
            }
            b.push('\n');
            b.push_str(note);
            b.into_bytes()
        };
        let sig = witness.add_checkpoint(&body(0, &[], &note5)).await.unwrap();
        assert!(sig.starts_with("\u{2014} auditor.example/w1 "));
        let cosigned = format!("{note5}{sig}");
        assert_eq!(
            verify_cosignatures(cosigned.as_bytes(), &vkey, std::slice::from_ref(&w)),
            Ok(1)
        );
        // Persisted.
        let kept: State = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(kept.logs["audit.bank.example/kihon4"].size, 5);

        // A stale old size: 409 with the size seen.
        let note9 = checkpoint_note(&log, 9, root(9)).unwrap();
        let r = witness
            .add_checkpoint(&body(0, &[], &note9))
            .await
            .unwrap_err();
        assert_eq!((r.status, r.body.as_str()), (409, "5\n"));
        // A rewritten history signed with the real key: no proof makes it consistent.
        let forged = checkpoint_note(&log, 9, tlog_tiles::record_hash(b"forged")).unwrap();
        let r = witness
            .add_checkpoint(&body(5, &[EMPTY_HASH], &forged))
            .await
            .unwrap_err();
        assert_eq!(r.status, 422);
        // The same size with another root.
        let other5 = checkpoint_note(&log, 5, root(6)).unwrap();
        assert_eq!(refused(&witness, &body(5, &[], &other5)).await, 422);
        // The true extension, with its proof: cosigned, and the state moves on.
        let (_, proof) = tree(9, 5);
        assert!(
            witness
                .add_checkpoint(&body(5, &proof, &note9))
                .await
                .is_ok()
        );
        let kept: State = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(kept.logs["audit.bank.example/kihon4"].size, 9);
        let r = witness
            .add_checkpoint(&body(5, &proof, &note9))
            .await
            .unwrap_err();
        assert_eq!((r.status, r.body.as_str()), (409, "9\n"));
        // Unknown log, another key, old beyond size, garbage.
        let stranger = key(dir.path(), "s").with_log_origin(Some("other.example/log"));
        let n = checkpoint_note(&stranger, 9, root(9)).unwrap();
        assert_eq!(refused(&witness, &body(9, &[], &n)).await, 404);
        let impostor = key(dir.path(), "i").with_log_origin(Some("audit.bank.example/kihon4"));
        let n = checkpoint_note(&impostor, 9, root(9)).unwrap();
        assert_eq!(refused(&witness, &body(9, &[], &n)).await, 403);
        assert_eq!(refused(&witness, &body(10, &[], &note9)).await, 400);
        assert_eq!(refused(&witness, b"old 5\nnope").await, 400);
        assert_eq!(refused(&witness, &body(9, &[], "x\n")).await, 400);
        // Nothing refused moved the state.
        let kept: State = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(kept.logs["audit.bank.example/kihon4"].size, 9);

        // A reopened witness goes on from its state file.
        let again = Witness::open(
            Cosigner::new(
                SigningKey::load(&dir.path().join("w.pem")).unwrap(),
                "auditor.example/w1",
            )
            .unwrap(),
            std::slice::from_ref(&vkey),
            &state,
        )
        .unwrap();
        let r = again
            .add_checkpoint(&body(0, &[], &note9))
            .await
            .unwrap_err();
        assert_eq!((r.status, r.body.as_str()), (409, "9\n"));
        // A wrong cosignature by a configured witness makes the note fail.
        let mut bad = cosigned.clone().into_bytes();
        let at = bad.len() - 5;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        assert!(verify_cosignatures(&bad, &vkey, &[w]).is_err());
    }
}

/// A witness the log submits its checkpoints to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessEndpoint {
    pub key: CosignerKey,
    /// The submission prefix: `add-checkpoint` is posted below it.
    pub url: url::Url,
}

impl WitnessEndpoint {
    /// `<name>+<key id>`, as its rows are keyed.
    pub fn id(&self) -> String {
        format!("{}+{:08x}", self.key.name, self.key.key_id)
    }
}

/// One entry of `KIHON4_AUDIT_LOG_WITNESSES`: `<vkey> <submission prefix URL>`.
pub fn parse_witness(entry: &str) -> Result<WitnessEndpoint, String> {
    let mut parts = entry.split_whitespace();
    let (Some(vkey), Some(url), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "`{entry}`: each witness is `<vkey> <URL>`, separated by commas"
        ));
    };
    let key = CosignerKey::parse(vkey).map_err(|e| format!("`{vkey}`: {e}"))?;
    let mut url = url::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| format!("`{url}` is not an http(s) URL without credentials"))?;
    // The prefix is a folder: add-checkpoint goes below it.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(WitnessEndpoint { key, url })
}

/// What a round of submissions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitted {
    /// Witnesses that cosigned the newest checkpoint in this round.
    pub cosigned: Vec<String>,
    /// Witnesses that did not, with why.
    pub failed: Vec<(String, String)>,
}

/// Sends the newest checkpoint to each of `witnesses` that has not
/// cosigned it yet, with a consistency proof from the size it last
/// cosigned, and keeps the cosignatures. A witness that answers `409`
/// (its size is another) is asked again once from the size it gave.
pub async fn submit(
    db: &sea_orm::DatabaseConnection,
    log_vkey: &str,
    witnesses: &[&WitnessEndpoint],
    http: &reqwest::Client,
) -> Result<Submitted, crate::error::CoreError> {
    use crate::entities::{audit_log_checkpoints, audit_log_cosignatures, audit_log_witnesses};
    use sea_orm::sea_query::OnConflict;
    use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};

    let mut done = Submitted::default();
    let Some(newest) = audit_log_checkpoints::Entity::find()
        .order_by_desc(audit_log_checkpoints::Column::TreeSize)
        .one(db)
        .await?
    else {
        return Ok(done);
    };
    let size = newest.tree_size as u64;
    for witness in witnesses {
        let id = witness.id();
        if audit_log_cosignatures::Entity::find_by_id((newest.tree_size, id.clone()))
            .one(db)
            .await?
            .is_some()
        {
            continue;
        }
        let mut old = audit_log_witnesses::Entity::find_by_id(id.clone())
            .one(db)
            .await?
            .map_or(0, |w| w.size as u64);
        let mut answer = None;
        for _ in 0..2 {
            if old > size {
                answer = Some(Err(format!(
                    "the witness has cosigned {old} events, more than this log's {size}: was the database restored?"
                )));
                break;
            }
            let proof = match super::consistency(db, old, Some(size)).await {
                Ok(p) => p.proof,
                Err(e) => {
                    answer = Some(Err(e.to_string()));
                    break;
                }
            };
            let mut body = format!("old {old}\n");
            for line in proof {
                body.push_str(&line);
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&newest.note);
            let url = witness
                .url
                .join("add-checkpoint")
                .map_err(|e| crate::error::CoreError::Corrupt(e.to_string()))?;
            let res = match http.post(url).body(body).send().await {
                Ok(res) => res,
                Err(e) => {
                    answer = Some(Err(format!("cannot be reached: {e}")));
                    break;
                }
            };
            let status = res.status().as_u16();
            let is_size = res
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/x.tlog.size"));
            let text = res.text().await.unwrap_or_default();
            match status {
                200 => {
                    answer = Some(Ok(text));
                    break;
                }
                409 if is_size => match text.trim_end_matches('\n').parse::<u64>() {
                    Ok(theirs) if theirs != old => old = theirs,
                    _ => {
                        answer = Some(Err("answered 409 without a usable size".into()));
                        break;
                    }
                },
                _ => {
                    answer = Some(Err(format!(
                        "answered {status}: {}",
                        text.lines().next().unwrap_or_default()
                    )));
                    break;
                }
            }
        }
        let lines = match answer {
            Some(Ok(lines)) => lines,
            Some(Err(why)) => {
                done.failed.push((id, why));
                continue;
            }
            None => {
                done.failed.push((id, "its size kept changing".into()));
                continue;
            }
        };
        // Keep only its own lines, and only if they verify.
        let own: String = lines
            .lines()
            .filter(|l| l.starts_with(&format!("\u{2014} {} ", witness.key.name)))
            .map(|l| format!("{l}\n"))
            .collect();
        let cosigned = format!("{}{own}", newest.note);
        match verify_cosignatures(
            cosigned.as_bytes(),
            log_vkey,
            std::slice::from_ref(&witness.key),
        ) {
            Ok(n) if n >= 1 => {}
            Ok(_) | Err(_) => {
                done.failed.push((
                    id,
                    "its answer holds no valid cosignature of its key".into(),
                ));
                continue;
            }
        }
        audit_log_cosignatures::Entity::insert(audit_log_cosignatures::ActiveModel {
            tree_size: Set(newest.tree_size),
            witness: Set(id.clone()),
            line: Set(own),
            received_at: Set(chrono::Utc::now()),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(db)
        .await?;
        audit_log_witnesses::Entity::insert(audit_log_witnesses::ActiveModel {
            witness: Set(id.clone()),
            size: Set(newest.tree_size),
        })
        .on_conflict(
            OnConflict::column(audit_log_witnesses::Column::Witness)
                .update_column(audit_log_witnesses::Column::Size)
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
        done.cosigned.push(id);
    }
    Ok(done)
}
