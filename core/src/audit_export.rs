//! Evidence for auditors (docs/architecture.md#the-audit-trail): signed
//! checkpoints of the chain head, exports of a range of events with a signed
//! manifest, and their offline verification.
//!
//! - The signing key is Ed25519, a PKCS#8 PEM file (`KIHON4_AUDIT_SIGNING_KEY`;
//!   made on first use on the embedded default), its public key written
//!   beside it as `<file>.pub` (SubjectPublicKeyInfo PEM, as OpenSSL writes).
//! - A checkpoint signs the canonical JSON (RFC 8785) of
//!   `{"type": "kihon4-audit-checkpoint", "v": 1, "seq", "head_hash", "at"}`.
//! - A JSON Lines export holds, per line, exactly the bytes that were hashed
//!   (the event's canonical JSON), so personal data appear only as salted
//!   commitments. The manifest names the range, the count, the hash before
//!   the first event, the first and last hashes, the SHA-256 of the file, a
//!   checkpoint, and is itself signed (its canonical JSON without
//!   `signature`).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SubsecRound, Utc};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{GENESIS_HASH, canonical_json, chain_hash};
use crate::entities::{audit_chain, audit_events};
use crate::error::CoreError;

/// The version of the export and manifest formats.
pub const EXPORT_VERSION: u32 = 1;
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410), before
/// the 32-byte seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// Events read per query while exporting.
const PAGE: u64 = 1000;

/// The key that signs checkpoints and manifests.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// The key id: the first 16 hex digits (8 bytes) of the SHA-256 of the
    /// raw 32-byte Ed25519 public key (the last 32 bytes of its
    /// SubjectPublicKeyInfo), lower case.
    pub key_id: String,
}

impl SigningKey {
    /// Loads the PKCS#8 PEM at `path`; with `create` (the embedded default
    /// only), makes one there first when there is none.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, String> {
        if create && !path.exists() {
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
        let key_id = key_id(pair.public_key().as_ref());
        let key = Self { pair, key_id };
        let public = public_key_path(path);
        if !public.exists() {
            std::fs::write(&public, key.public_key_pem()).map_err(|e| e.to_string())?;
        }
        Ok(key)
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_key_pem(&self) -> String {
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(self.pair.public_key().as_ref());
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &spki)
            .expect("a public key encodes")
    }

    fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.pair.sign(message).as_ref())
    }
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

    fn verifies(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(signature) = B64.decode(signature_b64) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, &signature)
            .is_ok()
    }
}

/// The chain head at a moment, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub at: DateTime<Utc>,
    pub key_id: String,
    pub signature: String,
}

impl Checkpoint {
    /// The bytes signed.
    pub fn message(seq: i64, head_hash: &str, at: DateTime<Utc>) -> Vec<u8> {
        canonical_json(&json!({
            "type": "kihon4-audit-checkpoint",
            "v": EXPORT_VERSION,
            "seq": seq,
            "head_hash": head_hash,
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }))
    }

    pub fn verifies(&self, key: &PublicKey) -> bool {
        key.key_id == self.key_id
            && key.verifies(
                &Self::message(self.seq, &self.head_hash, self.at),
                &self.signature,
            )
    }
}

/// Signs the chain head as it is now, and keeps the checkpoint.
pub async fn checkpoint<C: ConnectionTrait>(
    db: &C,
    key: &SigningKey,
) -> Result<Checkpoint, CoreError> {
    use crate::entities::audit_checkpoints;
    let head = audit_chain::Entity::find_by_id(1)
        .one(db)
        .await?
        .ok_or_else(|| CoreError::Corrupt("the audit chain head is missing".into()))?;
    let at = Utc::now().trunc_subsecs(6);
    let checkpoint = Checkpoint {
        seq: head.last_seq,
        signature: key.sign(&Checkpoint::message(head.last_seq, &head.last_hash, at)),
        head_hash: head.last_hash,
        at,
        key_id: key.key_id.clone(),
    };
    audit_checkpoints::Entity::insert(audit_checkpoints::ActiveModel {
        id: sea_orm::ActiveValue::Set(uuid::Uuid::now_v7()),
        seq: sea_orm::ActiveValue::Set(checkpoint.seq),
        head_hash: sea_orm::ActiveValue::Set(checkpoint.head_hash.clone()),
        at: sea_orm::ActiveValue::Set(at),
        key_id: sea_orm::ActiveValue::Set(checkpoint.key_id.clone()),
        signature: sea_orm::ActiveValue::Set(checkpoint.signature.clone()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(checkpoint)
}

/// The newest checkpoint kept, if any.
pub async fn latest_checkpoint<C: ConnectionTrait>(
    db: &C,
) -> Result<Option<Checkpoint>, CoreError> {
    use crate::entities::audit_checkpoints;
    Ok(audit_checkpoints::Entity::find()
        .order_by_desc(audit_checkpoints::Column::At)
        .one(db)
        .await?
        .map(|c| Checkpoint {
            seq: c.seq,
            head_hash: c.head_hash,
            at: c.at,
            key_id: c.key_id,
            signature: c.signature,
        }))
}

/// A checkpoint unless one was kept in the last `every`: the worker's
/// daily one. Returns the one made.
pub async fn checkpoint_if_due(
    db: &DatabaseConnection,
    key: &SigningKey,
    every: chrono::Duration,
) -> Result<Option<Checkpoint>, CoreError> {
    if let Some(last) = latest_checkpoint(db).await?
        && Utc::now() - last.at < every
    {
        return Ok(None);
    }
    Ok(Some(checkpoint(db, key).await?))
}

/// The events of `[from, to)` by time with sequence numbers up to `upto`,
/// as a contiguous range of sequence numbers (`None` when there is none).
pub async fn seq_range<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    upto: i64,
) -> Result<Option<(i64, i64)>, CoreError> {
    let mut first = audit_events::Entity::find()
        .filter(audit_events::Column::Seq.lte(upto))
        .order_by_asc(audit_events::Column::Seq);
    let mut last = audit_events::Entity::find()
        .filter(audit_events::Column::Seq.lte(upto))
        .order_by_desc(audit_events::Column::Seq);
    if let Some(from) = from {
        first = first.filter(audit_events::Column::OccurredAt.gte(from));
        last = last.filter(audit_events::Column::OccurredAt.gte(from));
    }
    if let Some(to) = to {
        first = first.filter(audit_events::Column::OccurredAt.lt(to));
        last = last.filter(audit_events::Column::OccurredAt.lt(to));
    }
    let (Some(first), Some(last)) = (first.one(db).await?, last.one(db).await?) else {
        return Ok(None);
    };
    Ok(Some((first.seq, last.seq)))
}

/// The events with sequence numbers in `[first, last]`, a page at a time.
pub async fn page(
    db: &DatabaseConnection,
    after: i64,
    last: i64,
) -> Result<Vec<audit_events::Model>, CoreError> {
    Ok(audit_events::Entity::find()
        .filter(audit_events::Column::Seq.gt(after))
        .filter(audit_events::Column::Seq.lte(last))
        .order_by_asc(audit_events::Column::Seq)
        .limit(PAGE)
        .all(db)
        .await?)
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "jsonl" => Some(Self::Jsonl),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// The UTF-8 byte-order mark a CSV export starts with (for spreadsheets).
pub const CSV_BOM: &[u8] = b"\xEF\xBB\xBF";
pub const CSV_HEADER: &str = "seq,occurred_at,actor,action,subject_type,subject_id,customer_id,request_id,prev_hash,hash,data\r\n";

/// One event as a line of the export.
pub fn line(format: Format, e: &audit_events::Model) -> Vec<u8> {
    match format {
        Format::Jsonl => {
            let mut out = e.canonical.as_bytes().to_vec();
            out.push(b'\n');
            out
        }
        Format::Csv => {
            let data = serde_json::from_str::<Value>(&e.canonical)
                .ok()
                .and_then(|v| v.get("data").map(|d| d.to_string()))
                .unwrap_or_default();
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new());
            w.write_record([
                e.seq.to_string(),
                e.occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                e.actor.clone(),
                e.action.clone(),
                e.subject_type.clone(),
                e.subject_id.clone().unwrap_or_default(),
                e.customer_id.map(|c| c.to_string()).unwrap_or_default(),
                e.request_id.clone().unwrap_or_default(),
                e.prev_hash.clone(),
                e.hash.clone(),
                data,
            ])
            .expect("writing to memory");
            w.into_inner().expect("writing to memory")
        }
    }
}

/// What an export holds, signed: its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "type")]
    pub kind: String,
    pub v: u32,
    /// The export it describes (`Kihon4-Export-Id`); absent in manifests
    /// made before exports had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_id: Option<uuid::Uuid>,
    pub format: Format,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub count: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// The hash before the first event (the genesis hash for the first).
    pub prev_hash: String,
    pub first_hash: Option<String>,
    pub last_hash: Option<String>,
    /// SHA-256 (hex) of the export file, byte for byte.
    pub file_sha256: String,
    pub checkpoint: Checkpoint,
    pub key_id: String,
    pub signature: String,
}

impl Manifest {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("a manifest serialises");
        v.as_object_mut().expect("an object").remove("signature");
        canonical_json(&v)
    }

    pub fn verifies(&self, key: &PublicKey) -> bool {
        key.key_id == self.key_id && key.verifies(&self.signed_bytes(), &self.signature)
    }
}

/// What an export is asked for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub format: Format,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The events are exported (`false`: only the companion file).
    pub events: bool,
    /// The personal values in clear are exported for the range.
    pub personal_data: bool,
}

/// An export started: its range fixed, recorded and audited.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: uuid::Uuid,
    pub format: Format,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// `first_seq..=last_seq`; `None` when no event is in it.
    pub range: Option<(i64, i64)>,
    /// The chain head when it started, signed: every event of the range
    /// is at or before it.
    pub checkpoint: Checkpoint,
    pub events: bool,
    pub personal_data: bool,
}

impl Started {
    /// How many events the range holds (the chain has no gaps).
    pub fn count(&self) -> u64 {
        self.range.map_or(0, |(first, last)| {
            u64::try_from(last - first + 1).unwrap_or(0)
        })
    }

    fn from_row(row: crate::entities::audit_exports::Model) -> Result<Self, CoreError> {
        let corrupt = |what: &str| CoreError::Corrupt(format!("audit export {}: {what}", row.id));
        Ok(Self {
            id: row.id,
            format: Format::parse(&row.format).ok_or_else(|| corrupt("an unknown format"))?,
            from: row.range_from,
            to: row.range_to,
            range: row.first_seq.zip(row.last_seq),
            checkpoint: serde_json::from_str(&row.checkpoint)
                .map_err(|_| corrupt("an unreadable checkpoint"))?,
            events: row.events,
            personal_data: row.personal_data,
        })
    }
}

/// Starts an export: in one transaction, signs a checkpoint of the chain
/// head, fixes the range as the events of `[from, to)` up to that head,
/// records the export and appends its `audit.exported` event (which comes
/// after the head, so never falls inside its own range).
pub async fn start_export(
    db: &DatabaseConnection,
    key: &SigningKey,
    ctx: &crate::audit::AuditContext,
    request: &ExportRequest,
) -> Result<Started, CoreError> {
    use crate::entities::audit_exports;
    use sea_orm::ActiveValue::Set;
    let txn = crate::db::begin_write(db).await?;
    let checkpoint = checkpoint(&txn, key).await?;
    let range = seq_range(&txn, request.from, request.to, checkpoint.seq).await?;
    let started = Started {
        id: uuid::Uuid::now_v7(),
        format: request.format,
        from: request.from,
        to: request.to,
        range,
        checkpoint,
        events: request.events,
        personal_data: request.personal_data,
    };
    audit_exports::Entity::insert(audit_exports::ActiveModel {
        id: Set(started.id),
        created_at: Set(started.checkpoint.at),
        actor: Set(ctx.actor.as_str().to_owned()),
        format: Set(format_name(started.format).to_owned()),
        range_from: Set(started.from),
        range_to: Set(started.to),
        first_seq: Set(range.map(|r| r.0)),
        last_seq: Set(range.map(|r| r.1)),
        events: Set(started.events),
        personal_data: Set(started.personal_data),
        checkpoint: Set(serde_json::to_string(&started.checkpoint).expect("serialises")),
        manifest: Set(None),
    })
    .exec_without_returning(&txn)
    .await?;
    let what = match (started.events, started.personal_data) {
        (true, false) => "export",
        (true, true) => "export_with_personal_data",
        (false, _) => "personal_data",
    };
    let event =
        crate::audit::AuditEvent::new("audit.exported", "audit", Some(started.id.to_string())).set(
            "after",
            json!({
                "what": what,
                "export_id": started.id,
                "format": started.format,
                "from": started.from,
                "to": started.to,
                "first_seq": range.map(|r| r.0),
                "last_seq": range.map(|r| r.1),
                "count": started.count(),
                "include_personal_data": started.personal_data,
            }),
        );
    crate::audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(started)
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
    }
}

/// An export recorded by [`start_export`].
pub async fn started_export(db: &DatabaseConnection, id: uuid::Uuid) -> Result<Started, CoreError> {
    use crate::entities::audit_exports;
    let row = audit_exports::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(CoreError::NotFound("audit export"))?;
    Started::from_row(row)
}

/// Writes the events of a started export to `out`, a page at a time, and
/// returns its manifest, signed. `progress` gets the events written so far
/// and the number to write.
async fn write_events(
    db: &DatabaseConnection,
    key: &SigningKey,
    started: &Started,
    out: &mut impl std::io::Write,
    mut progress: impl FnMut(u64, u64),
) -> Result<Manifest, CoreError> {
    let format = started.format;
    let mut file = Sha256::new();
    let mut write = |bytes: &[u8]| -> Result<(), CoreError> {
        file.update(bytes);
        out.write_all(bytes)
            .map_err(|e| CoreError::Corrupt(format!("the export cannot be written: {e}")))
    };
    if format == Format::Csv {
        write(CSV_BOM)?;
        write(CSV_HEADER.as_bytes())?;
    }
    let (mut count, mut first, mut last) = (0u64, None, None);
    let mut prev_hash = GENESIS_HASH.to_owned();
    if let Some((first_seq, last_seq)) = started.range {
        let total = started.count();
        let mut after = first_seq - 1;
        loop {
            let rows = page(db, after, last_seq).await?;
            let Some(tail) = rows.last() else { break };
            after = tail.seq;
            for e in &rows {
                if first.is_none() {
                    prev_hash = e.prev_hash.clone();
                    first = Some((e.seq, e.hash.clone()));
                }
                write(&line(format, e))?;
                last = Some((e.seq, e.hash.clone()));
                count += 1;
            }
            progress(count, total);
        }
    }
    if count != started.count() {
        return Err(CoreError::Corrupt(format!(
            "audit export {}: {count} event(s) where its range holds {}",
            started.id,
            started.count()
        )));
    }
    let mut m = Manifest {
        kind: "kihon4-audit-export".into(),
        v: EXPORT_VERSION,
        export_id: Some(started.id),
        format,
        from: started.from,
        to: started.to,
        count,
        first_seq: first.as_ref().map(|f| f.0),
        last_seq: last.as_ref().map(|l| l.0),
        prev_hash,
        first_hash: first.map(|f| f.1),
        last_hash: last.map(|l| l.1),
        file_sha256: hex::encode(file.finalize()),
        key_id: key.key_id.clone(),
        checkpoint: started.checkpoint.clone(),
        signature: String::new(),
    };
    m.signature = key.sign(&m.signed_bytes());
    Ok(m)
}

/// Keeps the manifest of an export (the first one kept stays: a manifest
/// is made the same way each time) and returns the one kept.
async fn keep_manifest(db: &DatabaseConnection, manifest: Manifest) -> Result<Manifest, CoreError> {
    use crate::entities::audit_exports;
    use sea_orm::sea_query::Expr;
    let id = manifest.export_id.expect("a manifest of a started export");
    audit_exports::Entity::update_many()
        .col_expr(
            audit_exports::Column::Manifest,
            Expr::value(serde_json::to_string(&manifest).expect("serialises")),
        )
        .filter(audit_exports::Column::Id.eq(id))
        .filter(audit_exports::Column::Manifest.is_null())
        .exec(db)
        .await?;
    stored_manifest(db, id).await?.ok_or_else(|| {
        CoreError::Corrupt(format!("the manifest of audit export {id} was not kept"))
    })
}

async fn stored_manifest(
    db: &DatabaseConnection,
    id: uuid::Uuid,
) -> Result<Option<Manifest>, CoreError> {
    use crate::entities::audit_exports;
    let Some(row) = audit_exports::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    row.manifest
        .map(|m| {
            serde_json::from_str(&m).map_err(|_| {
                CoreError::Corrupt(format!(
                    "the kept manifest of audit export {id} is unreadable"
                ))
            })
        })
        .transpose()
}

/// Exports the events of `[from, to)`, as they stood when it started, to
/// `out`, and returns its signed manifest (also kept, by the export's id).
/// Constant memory: a page of events at a time.
pub async fn export(
    db: &DatabaseConnection,
    key: &SigningKey,
    ctx: &crate::audit::AuditContext,
    request: &ExportRequest,
    out: &mut impl std::io::Write,
    progress: impl FnMut(u64, u64),
) -> Result<Manifest, CoreError> {
    let started = start_export(db, key, ctx, request).await?;
    let manifest = write_events(db, key, &started, out, progress).await?;
    keep_manifest(db, manifest).await
}

/// The signed manifest of the export `id`: kept when first asked for,
/// made from the export's fixed range (the events of a range never change,
/// so it names exactly the bytes the export sent).
pub async fn manifest_of(
    db: &DatabaseConnection,
    key: &SigningKey,
    id: uuid::Uuid,
) -> Result<Manifest, CoreError> {
    if let Some(kept) = stored_manifest(db, id).await? {
        return Ok(kept);
    }
    let started = started_export(db, id).await?;
    if !started.events {
        return Err(CoreError::Conflict(
            "the export is a companion file of personal values, which has no manifest",
        ));
    }
    let manifest = write_events(db, key, &started, &mut std::io::sink(), |_, _| {}).await?;
    keep_manifest(db, manifest).await
}

/// The stored personal values of the events with sequence numbers in
/// `(after_seq, last]` (erased ones left out), a page at a time, in the
/// order of the companion file: by `seq`, then `field`.
pub async fn personal_page(
    db: &DatabaseConnection,
    after: (i64, String),
    last: i64,
) -> Result<Vec<crate::entities::audit_personal_values::Model>, CoreError> {
    use crate::entities::audit_personal_values as values;
    use sea_orm::Condition;
    Ok(values::Entity::find()
        .filter(
            Condition::any().add(values::Column::Seq.gt(after.0)).add(
                Condition::all()
                    .add(values::Column::Seq.eq(after.0))
                    .add(values::Column::Field.gt(after.1)),
            ),
        )
        .filter(values::Column::Seq.lte(last))
        .filter(values::Column::Value.is_not_null())
        .order_by_asc(values::Column::Seq)
        .order_by_asc(values::Column::Field)
        .limit(PAGE)
        .all(db)
        .await?)
}

/// One line of the companion file: `{"field", "salt", "seq", "value"}`.
pub fn personal_line(row: &crate::entities::audit_personal_values::Model) -> Vec<u8> {
    let mut out = canonical_json(&json!({
        "seq": row.seq, "field": row.field, "value": row.value, "salt": row.salt,
    }));
    out.push(b'\n');
    out
}

/// Writes the companion file of personal values for the events of a
/// manifest (`first_seq..=last_seq`). Returns how many lines.
pub async fn export_personal(
    db: &DatabaseConnection,
    manifest: &Manifest,
    out: &mut impl std::io::Write,
) -> Result<u64, CoreError> {
    let (Some(first), Some(last)) = (manifest.first_seq, manifest.last_seq) else {
        return Ok(0);
    };
    // Every field of the first event: fields are never empty.
    let mut after = (first, String::new());
    let mut count = 0;
    loop {
        let rows = personal_page(db, after.clone(), last).await?;
        let Some(tail) = rows.last() else { break };
        after = (tail.seq, tail.field.clone());
        for row in &rows {
            out.write_all(&personal_line(row))
                .map_err(|e| CoreError::Corrupt(format!("the companion cannot be written: {e}")))?;
            count += 1;
        }
    }
    Ok(count)
}

/// The companion file, read alongside the export: each line's value and
/// salt against the commitment its event holds at `field`.
pub struct Companion<R> {
    reader: R,
    line: u64,
    next: Option<(i64, String, String, String)>,
    /// The event of the line before, and the fields of that event so far
    /// (a line twice, or lines out of order, are refused).
    seen: Option<(i64, std::collections::HashSet<String>)>,
}

impl<R: BufRead> Companion<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            next: None,
            seen: None,
        }
    }

    fn fail(&self, why: impl Into<String>) -> Failure {
        Failure {
            line: self.line,
            why: format!("personal data file: {}", why.into()),
        }
    }

    /// The next row, read ahead; `None` at the end.
    fn peek(&mut self) -> Result<Option<i64>, Failure> {
        if self.next.is_none() {
            let mut buf = String::new();
            let n = self
                .reader
                .read_line(&mut buf)
                .map_err(|e| self.fail(format!("cannot be read: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let v: Value = serde_json::from_str(buf.trim_end_matches('\n'))
                .map_err(|_| self.fail("not JSON"))?;
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            let (Some(seq), Some(field), Some(value), Some(salt)) = (
                v.get("seq").and_then(Value::as_i64),
                text("field"),
                text("value"),
                text("salt"),
            ) else {
                return Err(self.fail("a line lacks seq, field, value or salt"));
            };
            match &mut self.seen {
                Some((before, _)) if seq < *before => {
                    let before = *before;
                    return Err(self.fail(format!(
                        "out of order: a value of event {seq} after one of event {before} (lines go by seq)"
                    )));
                }
                Some((before, fields)) if seq == *before => {
                    if !fields.insert(field.clone()) {
                        return Err(self.fail(format!(
                            "a duplicate: the value at `{field}` of event {seq} was on an earlier line"
                        )));
                    }
                }
                _ => self.seen = Some((seq, std::iter::once(field.clone()).collect())),
            }
            self.next = Some((seq, field, value, salt));
        }
        Ok(self.next.as_ref().map(|n| n.0))
    }

    /// Checks every row of event `seq` against its data.
    fn check(&mut self, seq: i64, data: &Value) -> Result<u64, Failure> {
        let mut checked = 0;
        loop {
            match self.peek()? {
                Some(s) if s < seq => {
                    return Err(self.fail(format!(
                        "a value for event {s}, which the export does not have here"
                    )));
                }
                Some(s) if s == seq => {}
                _ => return Ok(checked),
            }
            let (_, field, value, salt) = self.next.take().expect("peeked");
            let mut at = data;
            for part in field.split('.') {
                at = at.get(part).unwrap_or(&Value::Null);
            }
            let Some(expected) = at.get("commitment").and_then(Value::as_str) else {
                return Err(self.fail(format!("event {seq} has no commitment at `{field}`")));
            };
            let salt = hex::decode(&salt).map_err(|_| self.fail("a salt is not hex"))?;
            if crate::audit::commitment(&salt, &value) != expected {
                return Err(self.fail(format!(
                    "the value at `{field}` of event {seq} does not match its commitment"
                )));
            }
            checked += 1;
        }
    }

    fn finish(&mut self) -> Result<(), Failure> {
        match self.peek()? {
            None => Ok(()),
            Some(s) => Err(self.fail(format!("a value for event {s}, beyond the export"))),
        }
    }
}

/// Why an export does not verify, and at which line (1-based; 0 for the
/// file as a whole or the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: u64,
    pub why: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.why)
        } else {
            write!(f, "line {}: {}", self.line, self.why)
        }
    }
}

/// Checks a JSON Lines export against its manifest and key, offline: each
/// line's canonical form, its link to the one before, contiguity, the
/// count, the first and last hashes, the file's SHA-256, and the manifest's
/// and checkpoint's signatures. `progress` gets the bytes read so far.
pub fn verify_jsonl(
    export: impl BufRead,
    manifest: &Manifest,
    key: &PublicKey,
    progress: impl FnMut(u64),
) -> Result<u64, Failure> {
    verify_with_personal(export, manifest, key, None::<Companion<&[u8]>>, progress)
        .map(|(events, _)| events)
}

/// [`verify_jsonl`], and with `personal`, every value of the companion file
/// against its commitment. Returns the events and the values checked.
pub fn verify_with_personal<P: BufRead>(
    export: impl BufRead,
    manifest: &Manifest,
    key: &PublicKey,
    personal: Option<Companion<P>>,
    progress: impl FnMut(u64),
) -> Result<(u64, u64), Failure> {
    verify_expecting(
        export,
        manifest,
        key,
        personal,
        &Expectations::default(),
        progress,
    )
}

/// What an auditor holds beyond the export: checkpoints kept from earlier
/// exports, which the export must extend, and the key id they expect.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub checkpoints: Vec<Checkpoint>,
    pub key_id: Option<String>,
}

/// Reads a checkpoint an auditor kept (`GET /v1/audit/checkpoints/latest`,
/// or the `checkpoint` of a manifest): exactly its five fields.
pub fn parse_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        seq: i64,
        head_hash: String,
        at: DateTime<Utc>,
        key_id: String,
        signature: String,
    }
    let c: Strict = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Checkpoint {
        seq: c.seq,
        head_hash: c.head_hash,
        at: c.at,
        key_id: c.key_id,
        signature: c.signature,
    })
}

/// [`verify_with_personal`], and the [`Expectations`]: the key id, when
/// given, is that of the public key, the manifest and every checkpoint; and
/// every kept checkpoint verifies with the key and is extended by the
/// export: its seq lies in the export's range and its head is that event's
/// hash, or it is the seq just before the range and its head is the
/// manifest's `prev_hash` (which line 1 links to), or it is the seq of the
/// manifest's own checkpoint with the same head. A kept checkpoint anywhere
/// else cannot be checked with this export and fails it.
pub fn verify_expecting<P: BufRead>(
    export: impl BufRead,
    manifest: &Manifest,
    key: &PublicKey,
    mut personal: Option<Companion<P>>,
    expect: &Expectations,
    mut progress: impl FnMut(u64),
) -> Result<(u64, u64), Failure> {
    let mut values = 0;
    let whole = |why: &str| Failure {
        line: 0,
        why: why.to_owned(),
    };
    if let Some(expected) = &expect.key_id {
        if &key.key_id != expected {
            return Err(whole(&format!(
                "the public key's id is {}, not the expected {expected}",
                key.key_id
            )));
        }
        if &manifest.key_id != expected {
            return Err(whole(&format!(
                "the manifest is signed by key {}, not the expected {expected}",
                manifest.key_id
            )));
        }
        if &manifest.checkpoint.key_id != expected {
            return Err(whole(&format!(
                "the manifest's checkpoint is signed by key {}, not the expected {expected}",
                manifest.checkpoint.key_id
            )));
        }
        if let Some(kept) = expect.checkpoints.iter().find(|c| &c.key_id != expected) {
            return Err(whole(&format!(
                "the kept checkpoint of seq {} is signed by key {}, not the expected {expected}",
                kept.seq, kept.key_id
            )));
        }
    }
    // The kept checkpoints inside the range, checked as the lines go by.
    let mut inside: Vec<&Checkpoint> = Vec::new();
    for kept in &expect.checkpoints {
        if !kept.verifies(key) {
            return Err(whole(&format!(
                "the kept checkpoint of seq {} does not verify with this key",
                kept.seq
            )));
        }
        let in_range = matches!((manifest.first_seq, manifest.last_seq),
            (Some(first), Some(last)) if (first..=last).contains(&kept.seq));
        if in_range {
            inside.push(kept);
        } else if manifest
            .first_seq
            .is_some_and(|first| kept.seq == first - 1)
        {
            if kept.head_hash != manifest.prev_hash {
                return Err(whole(&format!(
                    "the kept checkpoint of seq {} names the head {}, but the export goes on from {}: the chain is not the one that checkpoint signed",
                    kept.seq, kept.head_hash, manifest.prev_hash
                )));
            }
        } else if kept.seq == manifest.checkpoint.seq {
            if kept.head_hash != manifest.checkpoint.head_hash {
                return Err(whole(&format!(
                    "the kept checkpoint of seq {} names the head {}, the export's checkpoint of the same seq {}: the chain is not the one that checkpoint signed",
                    kept.seq, kept.head_hash, manifest.checkpoint.head_hash
                )));
            }
        } else {
            let range = match (manifest.first_seq, manifest.last_seq) {
                (Some(first), Some(last)) => format!("seq {first} to {last}"),
                _ => "no event".to_owned(),
            };
            return Err(whole(&format!(
                "the kept checkpoint of seq {} cannot be checked with this export ({range}, checkpoint at seq {}): export a range that holds seq {} or starts just after it",
                kept.seq, manifest.checkpoint.seq, kept.seq
            )));
        }
    }
    if manifest.format != Format::Jsonl {
        return Err(whole(
            "the manifest is of a CSV export; verify the JSON Lines export",
        ));
    }
    if !manifest.verifies(key) {
        return Err(whole(
            "the manifest's signature does not verify with this key",
        ));
    }
    if !manifest.checkpoint.verifies(key) {
        return Err(whole(
            "the checkpoint's signature does not verify with this key",
        ));
    }
    // The file's SHA-256 on a second thread, fed a megabyte at a time.
    let (chunks, hashing) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let hasher = std::thread::spawn(move || {
        let mut file = Sha256::new();
        for chunk in hashing {
            file.update(&chunk);
        }
        hex::encode(file.finalize())
    });
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut prev = manifest.prev_hash.clone();
    let mut expected_seq = manifest.first_seq;
    let (mut count, mut read) = (0u64, 0u64);
    let mut first_hash = None;
    let mut reader = export;
    let mut buf = Vec::new();
    /// What the chain needs of a line; the rest is skipped unread.
    #[derive(Deserialize)]
    struct Head<'a> {
        seq: Option<i64>,
        #[serde(borrow)]
        prev_hash: Option<&'a str>,
    }
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| whole(&format!("the export cannot be read: {e}")))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        progress(read);
        pending.extend_from_slice(&buf);
        if pending.len() >= 1 << 20 {
            let full = std::mem::replace(&mut pending, Vec::with_capacity(1 << 20));
            chunks
                .send(full)
                .map_err(|_| whole("the file's hash could not be computed"))?;
        }
        count += 1;
        let at = |why: String| Failure { line: count, why };
        let Some(content) = buf.strip_suffix(b"\n") else {
            return Err(at(
                "the line does not end with a newline (the file is cut short)".into(),
            ));
        };
        // Any change to a line's bytes changes its hash, which the next
        // line's prev_hash (or the manifest's last hash) no longer matches.
        let head: Head = serde_json::from_slice(content).map_err(|_| at("not JSON".into()))?;
        let value = match personal {
            Some(_) => {
                Some(serde_json::from_slice::<Value>(content).map_err(|_| at("not JSON".into()))?)
            }
            None => None,
        };
        let seq = head.seq;
        if seq.is_none() || seq != expected_seq {
            return Err(at(format!(
                "sequence number {} where {} was expected (a line is missing, added or moved)",
                seq.map_or("none".into(), |s| s.to_string()),
                expected_seq.map_or("none".into(), |s| s.to_string())
            )));
        }
        if head.prev_hash != Some(prev.as_str()) {
            // The link is in this line; what it links to is the line before.
            return Err(if count == 1 {
                at("it does not link to the hash the manifest names as the one before the first event".into())
            } else {
                Failure {
                    line: count - 1,
                    why: format!(
                        "it does not hash to what line {count} links to (prev_hash): this line, or that link, was changed"
                    ),
                }
            });
        }
        let hash = chain_hash(&prev, content).map_err(at)?;
        if let Some(kept) = inside
            .iter()
            .find(|k| Some(k.seq) == seq && k.head_hash != hash)
        {
            return Err(at(format!(
                "its hash differs from the head the kept checkpoint of seq {} names ({}): the chain is not the one that checkpoint signed",
                kept.seq, kept.head_hash
            )));
        }
        if let (Some(companion), Some(s), Some(value)) = (personal.as_mut(), seq, &value) {
            values += companion.check(s, value.get("data").unwrap_or(&Value::Null))?;
        }
        first_hash.get_or_insert_with(|| hash.clone());
        prev = hash;
        expected_seq = seq.map(|s| s + 1);
    }
    if count != manifest.count {
        return Err(whole(&format!(
            "the export has {count} lines, the manifest says {}",
            manifest.count
        )));
    }
    if count > 0 && first_hash != manifest.first_hash {
        return Err(Failure {
            line: 1,
            why: "its hash differs from the manifest's first hash".into(),
        });
    }
    if count > 0 && Some(&prev) != manifest.last_hash.as_ref() {
        return Err(Failure {
            line: count,
            why: "its hash differs from the manifest's last hash: the line was changed".into(),
        });
    }
    chunks
        .send(pending)
        .map_err(|_| whole("the file's hash could not be computed"))?;
    drop(chunks);
    let file_sha256 = hasher
        .join()
        .map_err(|_| whole("the file's hash could not be computed"))?;
    if file_sha256 != manifest.file_sha256 {
        return Err(whole("the file's SHA-256 differs from the manifest's"));
    }
    if manifest.last_seq == Some(manifest.checkpoint.seq)
        && manifest.last_hash.as_deref() != Some(manifest.checkpoint.head_hash.as_str())
    {
        return Err(whole(
            "the last hash differs from the signed checkpoint's head",
        ));
    }
    if let Some(companion) = personal.as_mut() {
        companion.finish()?;
    }
    Ok((count, values))
}

/// Erases the stored personal values of `customer_id`'s events (at the end
/// of retention, or on a deletion request): each value and its salt are
/// removed, so that neither the value nor a guess at it can be checked
/// against the commitment any more. The events and their hashes do not
/// change, so the chain and every earlier export still verify. The erasure
/// is itself an event (`audit.erased`, with the reason). Returns how many
/// values were erased.
pub async fn erase_customer(
    db: &DatabaseConnection,
    ctx: &crate::audit::AuditContext,
    customer_id: uuid::Uuid,
    reason: &crate::domain::FreeText,
) -> Result<u64, CoreError> {
    use crate::entities::audit_personal_values as values;
    use sea_orm::sea_query::{Expr, Query};
    let at = Utc::now().trunc_subsecs(6);
    let txn = crate::db::begin_write(db).await?;
    let of_customer = Query::select()
        .column(audit_events::Column::Seq)
        .from(audit_events::Entity)
        .and_where(audit_events::Column::CustomerId.eq(customer_id))
        .to_owned();
    let erased = values::Entity::update_many()
        .col_expr(values::Column::Value, Expr::value(Option::<String>::None))
        .col_expr(values::Column::Salt, Expr::value(""))
        .col_expr(values::Column::ErasedAt, Expr::value(at))
        .filter(values::Column::Seq.in_subquery(of_customer))
        .filter(values::Column::ErasedAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected;
    let event =
        crate::audit::AuditEvent::new("audit.erased", "customer", Some(customer_id.to_string()))
            .with_customer(customer_id)
            .set(
                "after",
                json!({"erased_values": erased, "reason": reason.as_str()}),
            );
    crate::audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(erased)
}
