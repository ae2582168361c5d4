//! Sealing: the events committed since the last checkpoint become leaves,
//! and the new tree head is signed — one round, one transaction.
//!
//! One sealer acts at a time: on PostgreSQL a round holds a transaction
//! advisory lock (taken without waiting: a round that finds it held
//! leaves the work to the holder); on SQLite the round's write transaction
//! is the lock. Leaves follow `seq`, which the chain gives in commit order,
//! and a round adds only the events that directly follow the sealed size:
//! nothing is ever sealed out of order or twice (the stored hashes' keys
//! would refuse it), and a round that dies commits nothing. A round signs
//! only with the log's current key, under the log's origin
//! ([`super::keys::signing_as`]).

use std::collections::HashMap;

use chrono::{SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use tlog_tiles::{Hash, stored_hash_index, stored_hashes_for_record_hash, tree_hash};

use super::note::{checkpoint_note_as, key_id_as};
use super::store::{Reader, load, sealed_size, with_hashes_in};
use crate::audit_export::SigningKey;
use crate::entities::{audit_events, audit_log_checkpoints, audit_log_hashes};
use crate::error::CoreError;

/// The advisory lock of the sealer on PostgreSQL (`pg_try_advisory_xact_lock`).
pub(crate) const SEALER_LOCK: i64 = 0x6b69_686f_6e34_6c67; // "kihon4lg"

/// What a round sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The size of the tree now signed.
    pub tree_size: u64,
    /// How many events this round added.
    pub added: u64,
    /// The checkpoint signed.
    pub note: String,
}

/// One sealing round: adds up to `max_leaves` events after the sealed size
/// and signs the new head. `None` when there was nothing to seal, or
/// another sealer holds the lock.
pub async fn seal(
    db: &DatabaseConnection,
    key: &SigningKey,
    max_leaves: u64,
) -> Result<Option<Sealed>, CoreError> {
    // Queued events first: they take their places in the chain.
    crate::audit::queue::sequence_all(db).await?;
    // Read first: an idle log takes no write lock (on SQLite, the database's).
    let newest: Option<i64> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .order_by_desc(audit_events::Column::Seq)
        .into_tuple()
        .one(db)
        .await?;
    let Some(newest) = newest.filter(|seq| *seq > 0) else {
        return Ok(None);
    };
    if newest as u64 <= sealed_size(db).await? {
        return Ok(None);
    }
    let txn = crate::db::begin_write(db).await?;
    if !crate::db::try_xact_lock(&txn, SEALER_LOCK).await? {
        return Ok(None);
    }
    let (origin, first_size) = super::keys::signing_as(&txn, key).await?;
    let size = sealed_size(&txn).await?;
    // A key's first tree holds the event of the rotation that brought it in.
    let max_leaves = max_leaves.max(first_size.saturating_sub(size));
    let events: Vec<(i64, String)> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .column(audit_events::Column::Canonical)
        .filter(audit_events::Column::Seq.gt(size as i64))
        .order_by_asc(audit_events::Column::Seq)
        .limit(max_leaves)
        .into_tuple()
        .all(&txn)
        .await?;
    if events.is_empty() || size + (events.len() as u64) < first_size {
        return Ok(None);
    }
    let leaf_hashes = events
        .iter()
        .enumerate()
        .map(|(i, (seq, canonical))| {
            if *seq != (size + i as u64 + 1) as i64 {
                return Err(CoreError::Corrupt(format!(
                    "the audit log is sealed to {size} but the next event is seq {seq}: events are missing"
                )));
            }
            Ok(tlog_tiles::record_hash(canonical.as_bytes()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let new_size = size + leaf_hashes.len() as u64;

    // The hashes of earlier subtrees these leaves complete, in one query.
    let first_new = stored_hash_index(0, size);
    let mut known: HashMap<u64, Hash> = HashMap::new();
    load(
        &txn,
        (size..new_size).flat_map(|n| {
            (0..(n + 1).trailing_zeros() as u8)
                .map(move |i| stored_hash_index(i, (n >> i) - 1))
                .filter(move |&idx| idx < first_new)
        }),
        &mut known,
    )
    .await?;
    let mut rows = Vec::with_capacity(leaf_hashes.len() * 2);
    for (i, leaf) in leaf_hashes.into_iter().enumerate() {
        let n = size + i as u64;
        let hashes = stored_hashes_for_record_hash(n, leaf, &Reader::Loaded(&known))
            .map_err(|e| CoreError::Corrupt(format!("the audit log's tree: {e}")))?;
        let start = stored_hash_index(0, n);
        for (j, h) in hashes.into_iter().enumerate() {
            known.insert(start + j as u64, h);
            rows.push(audit_log_hashes::ActiveModel {
                idx: Set((start + j as u64) as i64),
                hash: Set(h.0.to_vec()),
            });
        }
    }
    // The root: from the hashes just made, and the few older ones it needs.
    let root = with_hashes_in(&txn, &mut known, |r| tree_hash(new_size, r))
        .await?
        .map_err(|e| CoreError::Corrupt(format!("the audit log's root: {e}")))?;

    for chunk in rows.chunks(2000) {
        audit_log_hashes::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    let note = checkpoint_note_as(key, &origin, new_size, root).map_err(CoreError::Corrupt)?;
    audit_log_checkpoints::Entity::insert(audit_log_checkpoints::ActiveModel {
        tree_size: Set(new_size as i64),
        root_hash: Set(root.0.to_vec()),
        note: Set(note.clone()),
        key_id: Set(format!("{:08x}", key_id_as(&origin, key))),
        signed_at: Set(Utc::now().trunc_subsecs(6)),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(Some(Sealed {
        tree_size: new_size,
        added: new_size - size,
        note,
    }))
}

/// Seals until every event committed so far is in a signed checkpoint.
pub async fn seal_all(
    db: &DatabaseConnection,
    key: &SigningKey,
) -> Result<Option<Sealed>, CoreError> {
    let mut last = None;
    while let Some(sealed) = seal(db, key, super::SEAL_BATCH).await? {
        let more = sealed.added == super::SEAL_BATCH;
        last = Some(sealed);
        if !more {
            break;
        }
    }
    Ok(last)
}
