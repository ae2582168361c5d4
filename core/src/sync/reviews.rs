//! Reviews: cases a person must decide (a death, a certificate revoked
//! without a new one, a certificate the provider does not know). One open
//! review per customer and kind: asking again does not open another.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::events::{Event, ReviewOpened, ReviewResolved};
use crate::audit::{self, AuditContext};
use crate::db;
use crate::domain::FreeText;
use crate::entities::reviews;
use crate::error::CoreError;

/// How a person closed a review.
pub const RESOLUTIONS: [&str; 3] = ["confirmed", "corrected", "dismissed"];

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Opens a review in `txn` unless one of this kind is open for the
/// customer; returns the new one's id. Its audit event joins `events`.
pub async fn open<C: ConnectionTrait>(
    txn: &C,
    events: &mut audit::Batch,
    ctx: &AuditContext,
    customer_id: Uuid,
    kind: &str,
    detail: Value,
) -> Result<Option<Uuid>, CoreError> {
    let existing = reviews::Entity::find()
        .filter(reviews::Column::CustomerId.eq(customer_id))
        .filter(reviews::Column::Kind.eq(kind))
        .filter(reviews::Column::Status.eq("open"))
        .one(txn)
        .await?;
    if existing.is_some() {
        return Ok(None);
    }
    let id = Uuid::now_v7();
    reviews::Entity::insert(reviews::ActiveModel {
        id: Set(id),
        customer_id: Set(customer_id),
        kind: Set(kind.to_owned()),
        detail: Set(Some(detail.clone())),
        status: Set("open".to_owned()),
        created_at: Set(now()),
        resolved_at: Set(None),
        resolved_by: Set(None),
        resolution: Set(None),
        note: Set(None),
    })
    .exec_without_returning(txn)
    .await?;
    let event = Event::ReviewOpened(ReviewOpened {
        review_id: id,
        customer_id,
        kind: kind.to_owned(),
        detail,
    });
    events.push(ctx, event);
    Ok(Some(id))
}

/// A page of reviews, oldest first, optionally of one status.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<reviews::Model>, CoreError> {
    let mut query = reviews::Entity::find().order_by_asc(reviews::Column::Id);
    if let Some(status) = status {
        query = query.filter(reviews::Column::Status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(reviews::Column::Id.gt(after));
    }
    Ok(query.limit(limit).all(db).await?)
}

/// Closes an open review with a resolution and a note, audited.
pub async fn resolve(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
    resolution: &str,
    note: &FreeText,
) -> Result<reviews::Model, CoreError> {
    let txn = db::begin_write(db).await?;
    let row = reviews::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(CoreError::NotFound("review"))?;
    if row.status != "open" {
        return Err(CoreError::ReviewNotOpen);
    }
    let at = now();
    let by = ctx.actor.as_str().to_owned();
    let changed = reviews::Entity::update_many()
        .col_expr(reviews::Column::Status, Expr::value("resolved"))
        .col_expr(reviews::Column::ResolvedAt, Expr::value(at))
        .col_expr(reviews::Column::ResolvedBy, Expr::value(by.as_str()))
        .col_expr(reviews::Column::Resolution, Expr::value(resolution))
        .col_expr(reviews::Column::Note, Expr::value(note.as_str()))
        .filter(reviews::Column::Id.eq(id))
        .filter(reviews::Column::Status.eq("open"))
        .exec(&txn)
        .await?;
    if changed.rows_affected != 1 {
        return Err(CoreError::ReviewNotOpen);
    }
    let event = Event::ReviewResolved(ReviewResolved {
        review_id: id,
        customer_id: row.customer_id,
        resolution: resolution.to_owned(),
        note: note.as_str().to_owned(),
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(reviews::Model {
        status: "resolved".into(),
        resolved_at: Some(at),
        resolved_by: Some(by),
        resolution: Some(resolution.to_owned()),
        note: Some(note.as_str().to_owned()),
        ..row
    })
}
