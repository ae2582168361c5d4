pub mod audit;
pub mod audit_log;
pub mod changes;
pub mod consent;
pub mod customers;
pub mod mynaportal;
pub mod outbox;
pub mod pages;
pub mod reports;
pub mod service;
pub mod sync;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Page sizes: default and most.
pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 500;

/// A page of a list, oldest first.
#[derive(Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters every list accepts.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// The `next_cursor` of the page before.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// The cursor for the page after `items`: none when the page was not full.
pub fn next_cursor<T>(items: &[T], limit: u64, cursor: impl Fn(&T) -> String) -> Option<String> {
    if items.len() as u64 == limit {
        items.last().map(cursor)
    } else {
        None
    }
}

/// A cursor that names the last id of the previous page.
pub fn uuid_cursor(raw: Option<&str>) -> Result<Option<uuid::Uuid>, crate::problem::ApiError> {
    raw.map(|c| uuid::Uuid::parse_str(c).map_err(|_| not_a_cursor()))
        .transpose()
}

/// A cursor that names the last sequence number of the previous page (1 or more).
pub fn seq_cursor(raw: Option<&str>) -> Result<Option<i64>, crate::problem::ApiError> {
    raw.map(|c| {
        c.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| c.parse::<i64>().ok())
            .flatten()
            .filter(|&seq| seq >= 1)
            .ok_or_else(not_a_cursor)
    })
    .transpose()
}

fn not_a_cursor() -> crate::problem::ApiError {
    crate::problem::ApiError::field(
        crate::problem::ProblemKind::InvalidQuery,
        "cursor",
        "is not a cursor from this list",
    )
}

pub fn page_limit(limit: Option<u64>) -> Result<u64, crate::problem::ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(crate::problem::ApiError::field(
            crate::problem::ProblemKind::InvalidQuery,
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        )),
    }
}
