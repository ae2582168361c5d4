//! The daily change file, for systems that take files: a business day's
//! events as CSV with a manifest, written atomically into a folder, the
//! same bytes whenever the same day is written again.
//!
//! The file of business day `D` holds the events whose JST date falls
//! after the previous business day and on or before `D`: Monday's file
//! holds Saturday's, Sunday's and Monday's. Business days are Monday to
//! Friday except the configured holidays (`KIHON4_BUSINESS_HOLIDAYS`:
//! kihon4 keeps no calendar of its own; an institution's closing days,
//! such as 31 December to 3 January, are its own).
//!
//! docs/integration.md ("The daily file") gives the columns.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Cursor, ValuePolicy, jst};
use crate::audit::events::{ChangesExported, Event};
use crate::audit::{self, AuditContext};
use crate::entities::change_events;
use crate::error::CoreError;

/// The file's encoding (`KIHON4_CHANGES_FILE_ENCODING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEncoding {
    /// UTF-8 with a byte-order mark, which spreadsheets read as UTF-8.
    Utf8Bom,
    /// Windows-31J (CP932); a character it cannot hold is written as `〓`
    /// and the row's `substituted` column says so.
    Cp932,
}

impl FileEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8Bom => "utf-8",
            Self::Cp932 => "cp932",
        }
    }
}

impl std::str::FromStr for FileEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "utf-8" => Ok(Self::Utf8Bom),
            "cp932" => Ok(Self::Cp932),
            _ => Err(format!("must be `utf-8` or `cp932`, not `{s}`")),
        }
    }
}

/// Where and how the daily file is written.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub dir: PathBuf,
    /// When the worker writes it (six-field cron, in the configured zone).
    pub cron: String,
    pub encoding: FileEncoding,
    /// Days besides Saturdays and Sundays that are not business days.
    pub holidays: Vec<NaiveDate>,
    pub values: ValuePolicy,
}

pub fn is_business_day(day: NaiveDate, holidays: &[NaiveDate]) -> bool {
    !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !holidays.contains(&day)
}

/// The JST dates the file of business day `day` covers: from the day after
/// the previous business day through `day`.
pub fn covered(day: NaiveDate, holidays: &[NaiveDate]) -> (NaiveDate, NaiveDate) {
    let mut from = day;
    // A year without a business day is not a calendar anyone keeps.
    for _ in 0..366 {
        let before = from.pred_opt().expect("a date after year 1");
        if is_business_day(before, holidays) {
            break;
        }
        from = before;
    }
    (from, day)
}

/// The next business day on or after `day`: whose file holds `day`'s events.
pub fn file_day_of(day: NaiveDate, holidays: &[NaiveDate]) -> NaiveDate {
    let mut d = day;
    for _ in 0..366 {
        if is_business_day(d, holidays) {
            return d;
        }
        d = d.succ_opt().expect("a date before year 262143");
    }
    d
}

/// The columns, in order.
pub const COLUMNS: [&str; 23] = [
    "cursor",
    "event_id",
    "event_type",
    "occurred_at_utc",
    "occurred_on_jst",
    "customer_id",
    "external_ref",
    "customer_seq",
    "items_changed",
    "reported_on",
    "cert_serial",
    "consent_id",
    "review_id",
    "detail",
    "name_before",
    "name_after",
    "address_before",
    "address_after",
    "birth_date_before",
    "birth_date_after",
    "gender_before",
    "gender_after",
    "substituted",
];

/// The written file and its manifest.
#[derive(Debug, Clone)]
pub struct Written {
    pub csv: PathBuf,
    pub manifest: PathBuf,
    pub events: u64,
    pub sha256: String,
    pub first_cursor: Option<String>,
    pub last_cursor: Option<String>,
}

/// The file's name for business day `day`.
pub fn file_name(day: NaiveDate) -> String {
    format!("kihon4-changes-{day}.csv")
}

/// Events read per query.
const PAGE: u64 = 5000;

/// Writes business day `day`'s file and manifest into `settings.dir`
/// (made owner-only when missing), replacing what was there; `progress`
/// is told the events written so far and the total. Appends
/// `changes.exported`.
pub async fn export(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    settings: &FileSettings,
    day: NaiveDate,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Written, CoreError> {
    let (from, through) = covered(day, &settings.holidays);
    let start = jst()
        .from_local_datetime(&from.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("JST has no gaps")
        .with_timezone(&Utc);
    let end = jst()
        .from_local_datetime(
            &through
                .succ_opt()
                .expect("a next day")
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        )
        .single()
        .expect("JST has no gaps")
        .with_timezone(&Utc);
    let in_range = || {
        change_events::Entity::find()
            .filter(change_events::Column::OccurredAt.gte(start))
            .filter(change_events::Column::OccurredAt.lt(end))
    };
    use sea_orm::PaginatorTrait;
    let total = in_range().count(db).await?;
    crate::files::create_private_dir(&settings.dir)
        .map_err(|e| CoreError::Corrupt(format!("cannot make the change file folder: {e}")))?;
    let name = file_name(day);
    let target = settings.dir.join(&name);
    let temp = settings
        .dir
        .join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let io = |e: std::io::Error| CoreError::Corrupt(format!("cannot write the change file: {e}"));
    let mut out = Hashing::new(open_private(&temp).map_err(io)?);
    let result: Result<(u64, Option<i64>, Option<i64>), CoreError> = async {
        if settings.encoding == FileEncoding::Utf8Bom {
            out.write_all("\u{feff}".as_bytes()).map_err(io)?;
        }
        write_row(
            &mut out,
            settings.encoding,
            COLUMNS.iter().map(|c| c.to_string()).collect(),
        )
        .map_err(io)?;
        let (mut written, mut first, mut last) = (0u64, None, None);
        let mut after = -1i64;
        loop {
            let rows = in_range()
                .filter(change_events::Column::Position.gt(after))
                .order_by_asc(change_events::Column::Position)
                .limit(PAGE)
                .all(db)
                .await?;
            let Some(tail) = rows.last() else { break };
            after = tail.position;
            for row in &rows {
                first.get_or_insert(row.position);
                last = Some(row.position);
                write_row(&mut out, settings.encoding, fields(row, settings.values)).map_err(io)?;
                written += 1;
            }
            progress(written, total.max(written));
        }
        Ok((written, first, last))
    }
    .await;
    let (written, first, last) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    let (file, sha256) = out.finish();
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temp, &target).map_err(io)?;
    let first_cursor = first.map(|p| Cursor(p).to_string());
    let last_cursor = last.map(|p| Cursor(p).to_string());
    let manifest = json!({
        "format": "kihon4-changes/1",
        "business_day": day,
        "covers": {"from": from, "through": through},
        "file": name,
        "encoding": settings.encoding.as_str(),
        "values": match settings.values {
            ValuePolicy::Full => "full",
            ValuePolicy::ItemsOnly => "items",
        },
        "columns": COLUMNS,
        "events": written,
        "first_cursor": first_cursor,
        "last_cursor": last_cursor,
        "sha256": sha256,
    });
    let manifest_path = settings
        .dir
        .join(format!("kihon4-changes-{day}.manifest.json"));
    let manifest_temp = settings.dir.join(format!(
        ".kihon4-changes-{day}.manifest.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let mut bytes = serde_json::to_vec_pretty(&manifest).expect("JSON");
    bytes.push(b'\n');
    crate::files::write_private_file(&manifest_temp, &bytes).map_err(io)?;
    std::fs::rename(&manifest_temp, &manifest_path).map_err(io)?;
    std::fs::File::open(&settings.dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    audit::append(
        db,
        ctx,
        Event::ChangesExported(ChangesExported {
            date: day,
            events: written,
            encoding: settings.encoding.as_str(),
            sha256: sha256.clone(),
        }),
    )
    .await?;
    Ok(Written {
        csv: target,
        manifest: manifest_path,
        events: written,
        sha256,
        first_cursor,
        last_cursor,
    })
}

/// A new file only its owner may read.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// A file written through a buffer, hashed as it goes.
struct Hashing {
    out: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
}

impl Hashing {
    fn new(file: std::fs::File) -> Self {
        Self {
            out: std::io::BufWriter::with_capacity(1 << 16, file),
            hash: Sha256::new(),
        }
    }

    fn finish(self) -> (std::fs::File, String) {
        let file = self.out.into_inner().expect("the buffer was flushed");
        (file, hex::encode(self.hash.finalize()))
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One event's columns; `substituted` is filled in when it is encoded.
fn fields(row: &change_events::Model, values: ValuePolicy) -> Vec<String> {
    let data: Map<String, Value> = serde_json::from_str(&row.data).unwrap_or_default();
    let text = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let get = |k: &str| text(data.get(k));
    let items = data
        .get("items_changed")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let detail = match row.event_type.as_str() {
        "basic4.changed" | "customer.deceased" => get("source"),
        "certificate.revoked" => get("reason"),
        "consent.granted" => get("channel"),
        "consent.withdrawn" => get("by"),
        "review.opened" => get("kind"),
        "review.resolved" => get("resolution"),
        _ => String::new(),
    };
    let side = |side: &str, key: &str| {
        if values == ValuePolicy::Full {
            text(data.get(side).and_then(|s| s.get(key)))
        } else {
            String::new()
        }
    };
    vec![
        Cursor(row.position).to_string(),
        row.id.to_string(),
        row.event_type.clone(),
        row.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        row.occurred_at
            .with_timezone(&jst())
            .date_naive()
            .to_string(),
        row.customer_id.to_string(),
        row.external_ref.clone(),
        row.customer_seq.to_string(),
        items,
        get("reported_on"),
        get("cert_serial"),
        get("consent_id"),
        get("review_id"),
        detail,
        side("before", "name"),
        side("after", "name"),
        side("before", "address"),
        side("after", "address"),
        side("before", "birth_date"),
        side("after", "birth_date"),
        side("before", "gender"),
        side("after", "gender"),
    ]
}

/// A CSV field as RFC 4180 writes it.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Writes one row, CRLF-terminated, in `encoding`. An event row (fewer
/// fields than the columns) gets its `substituted` column: `1` when some
/// character had no CP932 form.
fn write_row(
    out: &mut impl Write,
    encoding: FileEncoding,
    mut fields: Vec<String>,
) -> std::io::Result<()> {
    let event_row = fields.len() < COLUMNS.len();
    let mut substituted = false;
    if encoding == FileEncoding::Cp932 {
        for f in fields.iter_mut() {
            let (text, changed) = cp932_safe(f);
            substituted |= changed;
            *f = text;
        }
    }
    if event_row {
        fields.push(if substituted { "1" } else { "0" }.to_owned());
    }
    let mut line = fields
        .iter()
        .map(|f| quoted(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    match encoding {
        FileEncoding::Utf8Bom => out.write_all(line.as_bytes()),
        FileEncoding::Cp932 => {
            let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(&line);
            out.write_all(&bytes)
        }
    }
}

/// `text` with every character CP932 cannot hold replaced by `〓`, and
/// whether any was.
fn cp932_safe(text: &str) -> (String, bool) {
    if text.is_ascii() {
        return (text.to_owned(), false);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let (_, _, unmappable) = encoding_rs::SHIFT_JIS.encode(c.encode_utf8(&mut buf));
        if unmappable {
            out.push('〓');
            changed = true;
        } else {
            out.push(c);
        }
    }
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_business_days_file_covers_the_days_since_the_last_one() {
        let holidays = [d("2026-12-31"), d("2027-01-01")];
        // Tuesday: itself.
        assert_eq!(
            covered(d("2026-12-01"), &holidays),
            (d("2026-12-01"), d("2026-12-01"))
        );
        // Monday: Saturday, Sunday and Monday.
        assert_eq!(
            covered(d("2026-12-07"), &holidays),
            (d("2026-12-05"), d("2026-12-07"))
        );
        // Monday 4 January 2027: from Thursday 31 December.
        assert_eq!(
            covered(d("2027-01-04"), &holidays),
            (d("2026-12-31"), d("2027-01-04"))
        );
        assert!(!is_business_day(d("2026-12-05"), &holidays));
        assert!(!is_business_day(d("2026-12-31"), &holidays));
        assert_eq!(file_day_of(d("2026-12-05"), &holidays), d("2026-12-07"));
        assert_eq!(file_day_of(d("2026-12-31"), &holidays), d("2027-01-04"));
        assert_eq!(file_day_of(d("2026-12-01"), &holidays), d("2026-12-01"));
    }

    #[test]
    fn cp932_rows_substitute_what_it_cannot_hold_and_say_so() {
        let mut out = Vec::new();
        write_row(
            &mut out,
            FileEncoding::Cp932,
            vec!["髙橋".into(), "𠮷野".into(), "a,\"b\"".into()],
        )
        .unwrap();
        let (text, _, bad) = encoding_rs::SHIFT_JIS.decode(&out);
        assert!(!bad);
        // 髙 is in CP932 (an NEC/IBM extension); 𠮷 is not.
        assert_eq!(text, "髙橋,〓野,\"a,\"\"b\"\"\",1\r\n");
        let mut out = Vec::new();
        write_row(&mut out, FileEncoding::Utf8Bom, vec!["𠮷野".into()]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "𠮷野,0\r\n");
    }
}
