//! Erasure of a customer's personal values from the audit trail.

use chrono::{SubsecRound, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::entities::audit_events;
use crate::error::CoreError;

/// Erases the stored personal values of `customer_id`'s events (at the end
/// of retention, or on a deletion request): each value and its salt are
/// removed, so that neither the value nor a guess at it can be checked
/// against the commitment any more. The events and their hashes do not
/// change, so the chain and every earlier export still verify. The erasure
/// is itself an event (`audit.erased`, with the reason). The values the
/// change feed keeps of the customer's events go in the same transaction.
/// Returns how many audit values were erased.
pub async fn erase_customer(
    db: &DatabaseConnection,
    ctx: &crate::audit::AuditContext,
    customer_id: uuid::Uuid,
    reason: &crate::domain::FreeText,
) -> Result<u64, CoreError> {
    use crate::entities::audit_personal_values as values;
    use sea_orm::sea_query::{Expr, Query};
    // Queued events first: their values are erased with the rest.
    crate::audit::queue::sequence_all(db).await?;
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
    crate::changes::erase_values(&txn, customer_id).await?;
    let event = crate::audit::Event::AuditErased(crate::audit::events::AuditErased {
        customer_id,
        erased_values: erased,
        reason: reason.as_str().to_owned(),
    });
    crate::audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(erased)
}
