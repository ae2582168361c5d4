//! Signed checkpoints of the chain head: the canonical JSON (RFC 8785) of
//! `{"type": "kihon4-audit-checkpoint", "v": 1, "seq", "head_hash", "at"}`,
//! signed with the [`SigningKey`].

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{EXPORT_VERSION, PublicKey, SigningKey};
use crate::audit::canonical_json;
use crate::entities::audit_chain;
use crate::error::CoreError;

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
        signature: key
            .sign(&Checkpoint::message(head.last_seq, &head.last_hash, at))
            .map_err(CoreError::SigningKey)?,
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
