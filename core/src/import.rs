//! Bulk import of existing customers from a CSV file, as core banking
//! systems export them: UTF-8 (with or without BOM) or Shift_JIS/CP932.
//!
//! Columns, by header name: `external_ref` and `email` (required), `locale`,
//! and the four items `name`, `address`, `birth_date`, `gender` with
//! optional `name_substitute_flags`, `address_substitute_flags` (all four or
//! none). Each row is checked with the same domain types as the API, and a
//! row holding anything that looks like a My Number, in any column, is
//! refused whole. Valid rows are written a batch per transaction: new
//! customers with their history and `customer.created` events; existing
//! ones (by `external_ref`) get a changed email or locale, or the four items
//! when they had none, with a `customer.updated` event. A row that changes
//! nothing writes nothing, so importing the same file again changes nothing.
//!
//! A rejected row is reported by line number and reason only: the reasons
//! name fields, never values.

use std::collections::HashMap;
use std::io::Read;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::audit::events::{Change, CustomerUpdated, Event, UpdateSource};
use crate::audit::{self, AuditContext, Batch};
use crate::customers::{
    Basic4Source, HistoryEntry, NewCustomer, basic4_json, created_event, first_history, new_row,
    write_basic4,
};
use crate::db;
use crate::domain::{
    Basic4, Email, ExternalRef, FieldErrors, Locale, RawBasic4, contains_my_number,
};
use crate::entities::{basic4_history, customers};
use crate::error::CoreError;

/// The file's character encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    Utf8,
    /// Shift_JIS as Windows writes it (CP932, Windows-31J).
    ShiftJis,
}

impl Encoding {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Self::Utf8),
            "shift_jis" | "shift-jis" | "sjis" | "cp932" | "windows-31j" => Some(Self::ShiftJis),
            _ => None,
        }
    }

    fn encoding(self) -> &'static encoding_rs::Encoding {
        match self {
            Self::Utf8 => encoding_rs::UTF_8,
            Self::ShiftJis => encoding_rs::SHIFT_JIS,
        }
    }
}

/// The columns a file may have.
pub const COLUMNS: [&str; 9] = [
    "external_ref",
    "email",
    "locale",
    "name",
    "name_substitute_flags",
    "address",
    "address_substitute_flags",
    "birth_date",
    "gender",
];

/// Why a file cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the header row {0}")]
    Header(String),
    #[error("the file cannot be read: {0}")]
    Read(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// What an import did, row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

/// A row that was not imported: its line in the file (1-based, the header
/// being line 1) and why, in words that name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    pub reason: String,
}

/// Rows written per transaction.
pub const BATCH: usize = 1000;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Imports every row of `input`. `progress` is called after each batch,
/// `reject` for each row not imported.
pub async fn import<R: Read>(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    input: R,
    encoding: Encoding,
    mut progress: impl FnMut(&Summary),
    mut reject: impl FnMut(Rejection),
) -> Result<Summary, ImportError> {
    let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding.encoding()))
        .bom_sniffing(true)
        .build(input);
    let lines = LineIndex::default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(lines.wrap(decoded));
    let header = reader
        .headers()
        .map_err(|e| ImportError::Read(e.to_string()))?
        .clone();
    let columns = columns(&header)?;
    let mut summary = Summary::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut batch: Vec<NewCustomer> = Vec::with_capacity(BATCH);
    let mut record = csv::StringRecord::new();
    let mut line = 1;
    loop {
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                // A broken record: report it by where the reader was.
                let at = e.position().map_or(line + 1, |p| lines.line_of(p.byte()));
                summary.rows += 1;
                summary.rejected += 1;
                reject(Rejection {
                    line: at,
                    reason: "not a well-formed CSV row".into(),
                });
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(ImportError::Read(e.to_string()));
                }
                continue;
            }
        };
        if !more {
            break;
        }
        line = record
            .position()
            .map_or(line + 1, |p| lines.line_of(p.byte()));
        summary.rows += 1;
        match parse_row(&columns, &record, header.len()) {
            Ok(customer) => {
                let key = customer.external_ref.as_str().to_owned();
                if let Some(first) = seen.get(&key) {
                    summary.rejected += 1;
                    reject(Rejection {
                        line,
                        reason: format!("external_ref: the same as on line {first}"),
                    });
                    continue;
                }
                seen.insert(key, line);
                batch.push(customer);
            }
            Err(reason) => {
                summary.rejected += 1;
                reject(Rejection { line, reason });
            }
        }
        if batch.len() == BATCH {
            write_batch(db, ctx, std::mem::take(&mut batch), &mut summary).await?;
            progress(&summary);
        }
    }
    if !batch.is_empty() {
        write_batch(db, ctx, batch, &mut summary).await?;
    }
    progress(&summary);
    Ok(summary)
}

/// Line numbers by byte offset, for any line ending (the CSV reader's own
/// count is off after `\r\n`): the offsets of the newlines read so far,
/// forgetting those before the last record asked about.
#[derive(Clone, Default)]
struct LineIndex(std::sync::Arc<std::sync::Mutex<Newlines>>);

#[derive(Default)]
struct Newlines {
    /// Bytes read so far.
    read: u64,
    /// Offsets of newlines not yet passed.
    ahead: std::collections::VecDeque<u64>,
    /// Newlines passed and forgotten.
    passed: u64,
}

impl LineIndex {
    fn wrap<R: Read>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            index: self.clone(),
        }
    }

    /// The 1-based line of a record that starts at byte `offset`. After a
    /// `\r\n` the reader places the next record at the `\n`, which
    /// therefore counts as passed.
    fn line_of(&self, offset: u64) -> u64 {
        let mut n = self.0.lock().expect("not poisoned");
        while n.ahead.front().is_some_and(|&at| at <= offset) {
            n.ahead.pop_front();
            n.passed += 1;
        }
        n.passed + 1
    }
}

struct Counted<R> {
    inner: R,
    index: LineIndex,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = self.inner.read(buf)?;
        let mut n = self.index.0.lock().expect("not poisoned");
        let start = n.read;
        for (i, b) in buf[..got].iter().enumerate() {
            if *b == b'\n' {
                n.ahead.push_back(start + i as u64);
            }
        }
        n.read += got as u64;
        Ok(got)
    }
}

/// Where each known column stands; unknown or repeated columns refuse the file.
fn columns(header: &csv::StringRecord) -> Result<HashMap<&'static str, usize>, ImportError> {
    let mut at = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        let Some(known) = COLUMNS.iter().find(|c| **c == name) else {
            // Never repeat a My Number or a spoofing character, even as a name.
            let shown =
                if contains_my_number(name) || crate::domain::spoofing_character(name).is_some() {
                    format!("(column {})", i + 1)
                } else {
                    format!("`{}`", name.chars().take(40).collect::<String>())
                };
            return Err(ImportError::Header(format!(
                "names an unknown column {shown} (known: {})",
                COLUMNS.join(", ")
            )));
        };
        if at.insert(*known, i).is_some() {
            return Err(ImportError::Header(format!("names `{known}` twice")));
        }
    }
    for required in ["external_ref", "email"] {
        if !at.contains_key(required) {
            return Err(ImportError::Header(format!("lacks `{required}`")));
        }
    }
    Ok(at)
}

/// One row as a new customer, or why not.
fn parse_row(
    columns: &HashMap<&'static str, usize>,
    record: &csv::StringRecord,
    width: usize,
) -> Result<NewCustomer, String> {
    if record.len() != width {
        return Err(format!(
            "has {} columns where the header has {width}",
            record.len()
        ));
    }
    if record.iter().any(contains_my_number) {
        return Err("holds what looks like a My Number (個人番号); the row is refused".into());
    }
    if record.iter().any(|f| f.contains('\u{fffd}')) {
        return Err("holds bytes that are not valid in the file's encoding".into());
    }
    if let Some((i, c)) = record
        .iter()
        .enumerate()
        .find_map(|(i, f)| crate::domain::spoofing_character(f).map(|c| (i, c)))
    {
        let column = columns
            .iter()
            .find(|(_, at)| **at == i)
            .map(|(name, _)| (*name).to_owned())
            .unwrap_or_else(|| format!("column {}", i + 1));
        return Err(format!(
            "{column}: must not contain control, bidirectional or format characters (U+{:04X})",
            c as u32
        ));
    }
    let field = |name: &str| {
        columns
            .get(name)
            .and_then(|i| record.get(*i))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut errors = FieldErrors::new();
    let external_ref = errors.check("external_ref", field("external_ref"), ExternalRef::parse);
    let email = errors.check("email", field("email"), Email::parse);
    let locale = errors
        .check_optional("locale", field("locale"), Locale::parse)
        .unwrap_or_default();
    let four = ["name", "address", "birth_date", "gender"];
    let basic4 = if four.iter().all(|k| field(k).is_none()) {
        None
    } else {
        match Basic4::parse(RawBasic4 {
            name: field("name"),
            name_substitute_flags: field("name_substitute_flags"),
            address: field("address"),
            address_substitute_flags: field("address_substitute_flags"),
            birth_date: field("birth_date"),
            gender: field("gender"),
        }) {
            Ok(b) => Some(b),
            Err(e) => {
                errors.extend_prefixed("", e);
                None
            }
        }
    };
    if let Err(e) = errors.into_result() {
        let fields: Vec<String> =
            e.0.iter()
                .map(|f| format!("{}: {}", f.field.trim_start_matches('.'), f.error))
                .collect();
        return Err(fields.join("; "));
    }
    Ok(NewCustomer {
        external_ref: external_ref.expect("checked"),
        email: email.expect("checked"),
        locale,
        basic4,
    })
}

/// Writes one batch in one transaction; a customer created meanwhile by
/// someone else (a unique violation) makes the batch start again.
async fn write_batch(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    rows: Vec<NewCustomer>,
    summary: &mut Summary,
) -> Result<(), ImportError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match try_batch(db, ctx, &rows).await {
            Ok((created, updated, unchanged)) => {
                summary.created += created;
                summary.updated += updated;
                summary.unchanged += unchanged;
                return Ok(());
            }
            Err(CoreError::Db(e)) if tries < 3 && db::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn try_batch(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    rows: &[NewCustomer],
) -> Result<(u64, u64, u64), CoreError> {
    let at = now();
    let txn = db::begin_write(db).await?;
    let existing: HashMap<String, customers::Model> = customers::Entity::find()
        .filter(customers::Column::ExternalRef.is_in(rows.iter().map(|r| r.external_ref.as_str())))
        .all(&txn)
        .await?
        .into_iter()
        .map(|c| (c.external_ref.clone(), c))
        .collect();
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    let mut new_rows = Vec::new();
    let mut history = Vec::new();
    let mut events = Batch::default();
    for new in rows {
        match existing.get(new.external_ref.as_str()) {
            None => {
                let id = Uuid::now_v7();
                new_rows.push(new_row(id, new, at));
                if let Some(b) = &new.basic4 {
                    history.push(first_history(id, 1, b, Basic4Source::Import, at));
                }
                events.push(ctx, created_event(id, new, true));
                created += 1;
            }
            Some(current) => match changed(current, new) {
                None => unchanged += 1,
                Some(update) => {
                    let version = current.version + 1;
                    let mut row = customers::Entity::update_many()
                        .col_expr(customers::Column::Email, Expr::value(update.email))
                        .col_expr(customers::Column::Locale, Expr::value(update.locale))
                        .col_expr(customers::Column::Version, Expr::value(version))
                        .col_expr(customers::Column::UpdatedAt, Expr::value(at))
                        .filter(customers::Column::Id.eq(current.id))
                        .filter(customers::Column::Version.eq(current.version));
                    if let Some(b) = update.basic4 {
                        let entry = HistoryEntry {
                            customer_id: current.id,
                            version,
                            source: Basic4Source::Import,
                            before: None,
                            after: basic4_json(b),
                            reported_on: None,
                            at,
                        };
                        let (filled, entry) = write_basic4(row, b, entry);
                        row = filled;
                        history.push(entry);
                    }
                    let done = row.exec(&txn).await?;
                    if done.rows_affected != 1 {
                        return Err(CoreError::Conflict("a customer changed during the import"));
                    }
                    events.push(ctx, Event::CustomerUpdated(update.event));
                    updated += 1;
                }
            },
        }
    }
    for chunk in new_rows.chunks(BATCH / 2) {
        customers::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    for chunk in history.chunks(BATCH / 2) {
        basic4_history::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    audit::append_batch(&txn, events).await?;
    txn.commit().await?;
    Ok((created, updated, unchanged))
}

/// What an import row changes for an existing customer.
struct Update<'a> {
    email: &'a str,
    locale: &'a str,
    /// The four items, for a customer who had none.
    basic4: Option<&'a Basic4>,
    event: CustomerUpdated,
}

/// What the row changes for an existing customer: a new email or locale,
/// or the four items when the customer has none (the four items a
/// customer has come from J-LIS or the consent and are not overwritten).
fn changed<'a>(current: &customers::Model, new: &'a NewCustomer) -> Option<Update<'a>> {
    let email_changes = new.email.as_str() != current.email;
    let locale_changes = new.locale.as_str() != current.locale;
    let fills_basic4 = current.name.is_none() && new.basic4.is_some();
    if !email_changes && !locale_changes && !fills_basic4 {
        return None;
    }
    let version = current.version + 1;
    let mut event = CustomerUpdated::new(current.id, Change::new(current.version, version));
    if email_changes {
        event.email = Some(Change::new(
            current.email.clone(),
            new.email.as_str().to_owned(),
        ));
    }
    if locale_changes {
        event.locale = Some(Change::new(
            current.locale.clone(),
            new.locale.as_str().to_owned(),
        ));
    }
    let basic4 = new.basic4.as_ref().filter(|_| fills_basic4);
    if let Some(b) = basic4 {
        event.basic4 = Some(Change::new(None, Some(b.clone())));
    }
    event.source = Some(UpdateSource::Import);
    Some(Update {
        email: new.email.as_str(),
        locale: new.locale.as_str(),
        basic4,
        event,
    })
}
