//! Exports: the range fixed when one starts, its events a page at a time as
//! JSON Lines (exactly the bytes that were hashed) or CSV, the companion
//! file of personal values, the signed manifest, and the one
//! `audit.exported` event recorded for every handout.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Checkpoint, EXPORT_VERSION, PublicKey, SigningKey, checkpoint};
use crate::audit::{GENESIS_HASH, canonical_json};
use crate::entities::audit_events;
use crate::error::CoreError;

/// Events read per query while exporting.
const PAGE: u64 = 1000;

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
pub const CSV_HEADER: &str = "seq,occurred_at,occurred_at_jst,actor,action,subject_type,subject_id,customer_id,request_id,prev_hash,hash,data\r\n";

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
                // The same moment in Japan Standard Time, for readers in Japan.
                e.occurred_at
                    .with_timezone(&chrono_tz::Asia::Tokyo)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
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
    /// Signs it with `key`: its canonical JSON without `signature`.
    pub(super) fn sign(&mut self, key: &SigningKey) -> Result<(), CoreError> {
        self.key_id = key.key_id.clone();
        self.signature = key
            .sign(&self.signed_bytes())
            .map_err(CoreError::SigningKey)?;
        Ok(())
    }

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
/// after the head, so never falls inside its own range). The route and the
/// CLI both start their exports here.
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
    record_handout(&txn, ctx, &started, Handout::of_start(&started)).await?;
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
    m.sign(key)?;
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

/// What an auditor is handed of an export; each handout is recorded as
/// one `audit.exported` event, whose `what` it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handout {
    /// The events (`GET /v1/audit/export`, `kihon4 audit export`).
    Export,
    /// The events and their companion file (`kihon4 audit export --personal-data`).
    ExportWithPersonalData,
    /// The companion file of personal values in clear.
    PersonalData,
    /// The signed manifest of an export.
    Manifest,
}

impl Handout {
    /// What a started export hands out at once.
    fn of_start(started: &Started) -> Self {
        match (started.events, started.personal_data) {
            (true, false) => Self::Export,
            (true, true) => Self::ExportWithPersonalData,
            (false, _) => Self::PersonalData,
        }
    }

    /// The event's `what`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::ExportWithPersonalData => "export_with_personal_data",
            Self::PersonalData => "personal_data",
            Self::Manifest => "manifest",
        }
    }

    /// Whether it holds personal values in clear.
    pub fn includes_personal_data(self) -> bool {
        matches!(self, Self::ExportWithPersonalData | Self::PersonalData)
    }
}

/// Appends the `audit.exported` event of a handout of `started`: the one
/// place that event is built, so it has one schema whoever hands out what.
pub async fn record_handout<C: ConnectionTrait>(
    db: &C,
    ctx: &crate::audit::AuditContext,
    started: &Started,
    handout: Handout,
) -> Result<(), CoreError> {
    let range = started.range;
    let event = crate::audit::Event::AuditExported(crate::audit::events::AuditExported {
        export_id: started.id,
        what: handout,
        format: started.format,
        from: started.from,
        to: started.to,
        first_seq: range.map(|r| r.0),
        last_seq: range.map(|r| r.1),
        count: started.count(),
        include_personal_data: handout.includes_personal_data(),
    });
    crate::audit::append(db, ctx, event).await?;
    Ok(())
}

/// [`record_handout`] in a transaction of its own.
async fn record_handout_alone(
    db: &DatabaseConnection,
    ctx: &crate::audit::AuditContext,
    started: &Started,
    handout: Handout,
) -> Result<(), CoreError> {
    let txn = crate::db::begin_write(db).await?;
    record_handout(&txn, ctx, started, handout).await?;
    txn.commit().await?;
    Ok(())
}

/// Why a caller is not handed personal data in clear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Personal data in clear needs one of the roles {} (KIHON4_AUDIT_PII_ROLES).", .allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))]
pub struct NeedsPiiRole {
    /// The roles that may see it.
    pub allowed: Vec<crate::auth::Role>,
}

/// Whether a caller holding `roles` may be handed personal values in clear:
/// one of `allowed` (`KIHON4_AUDIT_PII_ROLES`).
pub fn may_see_personal_data(
    roles: &[crate::auth::Role],
    allowed: &[crate::auth::Role],
) -> Result<(), NeedsPiiRole> {
    if roles.iter().any(|r| allowed.contains(r)) {
        Ok(())
    } else {
        Err(NeedsPiiRole {
            allowed: allowed.to_vec(),
        })
    }
}

/// Why a manifest is not handed out.
#[derive(Debug, thiserror::Error)]
pub enum ManifestRefused {
    /// The export is a companion file only, which has no manifest.
    #[error("the export is a companion file of personal values, which has no manifest")]
    CompanionOnly,
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Hands out the signed manifest of the export `id` ([`manifest_of`]) and
/// records it.
pub async fn hand_out_manifest(
    db: &DatabaseConnection,
    key: &SigningKey,
    ctx: &crate::audit::AuditContext,
    id: uuid::Uuid,
) -> Result<(Started, Manifest), ManifestRefused> {
    let started = started_export(db, id).await?;
    if !started.events {
        return Err(ManifestRefused::CompanionOnly);
    }
    let manifest = manifest_of(db, key, id).await?;
    record_handout_alone(db, ctx, &started, Handout::Manifest).await?;
    Ok((started, manifest))
}

/// Hands out the companion file of the export `id` (the caller streams it
/// with [`personal_page`]) and records it. Whether the caller may see it is
/// [`may_see_personal_data`], asked first.
pub async fn hand_out_personal_data(
    db: &DatabaseConnection,
    ctx: &crate::audit::AuditContext,
    id: uuid::Uuid,
) -> Result<Started, CoreError> {
    let started = started_export(db, id).await?;
    record_handout_alone(db, ctx, &started, Handout::PersonalData).await?;
    Ok(started)
}
