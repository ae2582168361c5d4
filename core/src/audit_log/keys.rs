//! The log's keys and their lifecycle (docs/audit.md, "Rotating the log
//! key"). The first key to seal is registered with the trees it may sign
//! starting at the first; a rotation ends the current key's trees at the
//! size it last signed and starts its successor's at the tree that first
//! holds the rotation's own event, which carries a statement both keys
//! signed. The sealer signs only with the current key, and only under the
//! log's origin, which never changes.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, Statement,
};

use super::note::{Rotation, key_id_as, rotation_statement, verifier_key_as};
use super::store::sealed_size;
use crate::audit::{AuditContext, events::AuditLogKeyRotated, events::Event};
use crate::audit_export::SigningKey;
use crate::entities::{audit_log_checkpoints, audit_log_keys};
use crate::error::CoreError;

/// A key of the log, as listed.
pub type LogKey = audit_log_keys::Model;

/// Every key the log has had, oldest first.
pub async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<LogKey>, CoreError> {
    Ok(audit_log_keys::Entity::find()
        .order_by_asc(audit_log_keys::Column::FirstSize)
        .order_by_asc(audit_log_keys::Column::ValidFrom)
        .all(db)
        .await?)
}

/// The key that signs now, if one was registered.
pub async fn current<C: ConnectionTrait>(db: &C) -> Result<Option<LogKey>, CoreError> {
    Ok(audit_log_keys::Entity::find()
        .filter(audit_log_keys::Column::ValidUntil.is_null())
        .one(db)
        .await?)
}

/// The origin under which `key` signs, and the smallest tree it may sign;
/// registers `key` as the log's first key when it has none. Call it inside
/// the sealer's transaction, after its lock. Refuses a key that is not the
/// current one (retired, or never brought in by a rotation) and an origin
/// configured other than the log's.
pub async fn signing_as<C: ConnectionTrait>(
    txn: &C,
    key: &SigningKey,
) -> Result<(String, u64), CoreError> {
    let Some(current) = current(txn).await? else {
        // An upgraded database keeps the origin its checkpoints have.
        let signed = audit_log_checkpoints::Entity::find()
            .order_by_desc(audit_log_checkpoints::Column::TreeSize)
            .one(txn)
            .await?
            .and_then(|c| c.note.lines().next().map(str::to_owned));
        let origin = match (key.configured_log_origin(), signed) {
            (Some(configured), Some(signed)) if configured != signed => {
                return Err(origin_changed(configured, &signed));
            }
            (_, Some(signed)) => signed,
            (_, None) => key.log_origin().to_owned(),
        };
        let first = sealed_size(txn).await? + 1;
        register(txn, key, &origin, first, None).await?;
        return Ok((origin, first));
    };
    if current.key_id != key.key_id {
        let known = audit_log_keys::Entity::find_by_id(key.key_id.clone())
            .one(txn)
            .await?;
        return Err(CoreError::SigningKey(match known {
            Some(retired) => format!(
                "this process's audit signing key {} was retired at {}: the log is signed by {} now; point KIHON4_AUDIT_SIGNING_KEY at that key",
                key.key_id,
                retired
                    .valid_until
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                current.key_id
            ),
            None => format!(
                "this process's audit signing key {} is not the log's: it is signed by {}, and a new key comes in only by `kihon4 audit rotate-key`",
                key.key_id, current.key_id
            ),
        }));
    }
    if let Some(configured) = key.configured_log_origin()
        && configured != current.origin
    {
        return Err(origin_changed(configured, &current.origin));
    }
    Ok((current.origin, current.first_size as u64))
}

fn origin_changed(configured: &str, origin: &str) -> CoreError {
    CoreError::SigningKey(format!(
        "KIHON4_AUDIT_LOG_ORIGIN is `{configured}`, but the log's checkpoints name `{origin}`: a log's origin never changes"
    ))
}

async fn register<C: ConnectionTrait>(
    txn: &C,
    key: &SigningKey,
    origin: &str,
    first_size: u64,
    rotation: Option<(i64, &str)>,
) -> Result<(), CoreError> {
    audit_log_keys::Entity::insert(audit_log_keys::ActiveModel {
        key_id: Set(key.key_id.clone()),
        note_key_id: Set(format!("{:08x}", key_id_as(origin, key))),
        origin: Set(origin.to_owned()),
        vkey: Set(verifier_key_as(origin, key)),
        public_key_pem: Set(key.public_key_pem()),
        valid_from: Set(Utc::now().trunc_subsecs(6)),
        valid_until: Set(None),
        first_size: Set(first_size as i64),
        last_size: Set(None),
        rotation_seq: Set(rotation.map(|(seq, _)| seq)),
        statement: Set(rotation.map(|(_, s)| s.to_owned())),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// A rotation carried out.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub rotation: Rotation,
    /// The statement both keys signed, as the event holds it.
    pub statement: String,
    /// The rotation's event.
    pub seq: i64,
}

/// Replaces the log's current key `retired` by `successor`: seals what is
/// committed with `retired`, then, in one transaction holding the sealer's
/// lock, records the rotation as an event (`audit.log_key_rotated`, with a
/// statement both keys signed), retires `retired` after the size it last
/// signed and brings `successor` in from the tree that first holds that
/// event. The caller then seals with `successor`.
pub async fn rotate(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    retired: &SigningKey,
    successor: &SigningKey,
) -> Result<Rotated, CoreError> {
    if retired.key_id == successor.key_id {
        return Err(CoreError::SigningKey(
            "the new key is the current key: a rotation needs another key".into(),
        ));
    }
    super::seal::seal_all(db, retired).await?;
    let txn = crate::db::begin_write(db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [super::seal::SEALER_LOCK.into()],
        ))
        .await?;
    }
    let (origin, _) = signing_as(&txn, retired).await?;
    if audit_log_keys::Entity::find_by_id(successor.key_id.clone())
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(CoreError::SigningKey(format!(
            "the new key {} signed this log before: a retired key never comes back",
            successor.key_id
        )));
    }
    let retired_after = sealed_size(&txn).await?;
    let at: DateTime<Utc> = Utc::now().trunc_subsecs(0);
    // The event is the next one: the chain stays locked until commit.
    let next_seq = crate::audit::head_seq(&txn).await? + 1;
    let rotation = Rotation {
        origin: origin.clone(),
        retired: verifier_key_as(&origin, retired),
        successor: verifier_key_as(&origin, successor),
        retired_after,
        successor_from: next_seq as u64,
        at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let statement =
        rotation_statement(&rotation, retired, successor).map_err(CoreError::SigningKey)?;
    let seq = crate::audit::append(
        &txn,
        ctx,
        Event::AuditLogKeyRotated(AuditLogKeyRotated {
            retired_key_id: retired.key_id.clone(),
            successor_key_id: successor.key_id.clone(),
            retired_after,
            statement: statement.clone(),
        }),
    )
    .await?
    .ok_or_else(|| {
        CoreError::Corrupt("the rotation's event was queued, though it holds the chain".into())
    })?;
    if seq != next_seq {
        return Err(CoreError::Corrupt(format!(
            "the rotation's event is seq {seq}, not the {next_seq} its statement names"
        )));
    }
    audit_log_keys::Entity::update_many()
        .col_expr(
            audit_log_keys::Column::ValidUntil,
            sea_orm::sea_query::Expr::value(Utc::now().trunc_subsecs(6)),
        )
        .col_expr(
            audit_log_keys::Column::LastSize,
            sea_orm::sea_query::Expr::value(retired_after as i64),
        )
        .filter(audit_log_keys::Column::KeyId.eq(retired.key_id.clone()))
        .exec(&txn)
        .await?;
    register(
        &txn,
        successor,
        &origin,
        seq as u64,
        Some((seq, statement.as_str())),
    )
    .await?;
    txn.commit().await?;
    Ok(Rotated {
        rotation,
        statement,
        seq,
    })
}
