//! The tree's stored hashes: read in one query per operation.
//!
//! `tlog_tiles`' functions read hashes through a synchronous
//! [`HashReader`], and each asks for all it needs in one call. So an
//! operation runs twice: first with a reader that only notes the indexes
//! asked for, then, once those are loaded in one query, with the hashes.

use std::cell::RefCell;
use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tlog_tiles::{Hash, HashReader};

use crate::entities::{audit_log_checkpoints, audit_log_hashes};
use crate::error::CoreError;

/// The size of the tree in the newest checkpoint: how many events are
/// sealed.
pub async fn sealed_size<C: ConnectionTrait>(db: &C) -> Result<u64, CoreError> {
    let newest = audit_log_checkpoints::Entity::find()
        .select_only()
        .column(audit_log_checkpoints::Column::TreeSize)
        .order_by_desc(audit_log_checkpoints::Column::TreeSize)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(newest.map_or(0, |n| n as u64))
}

/// Either notes the indexes asked for, or answers from hashes loaded.
pub(crate) enum Reader<'a> {
    Noting(RefCell<Vec<u64>>),
    Loaded(&'a HashMap<u64, Hash>),
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        match self {
            Reader::Noting(asked) => {
                asked.borrow_mut().extend_from_slice(indexes);
                Ok(vec![Hash([0; 32]); indexes.len()])
            }
            Reader::Loaded(hashes) => indexes
                .iter()
                .map(|i| {
                    hashes
                        .get(i)
                        .copied()
                        .ok_or(tlog_tiles::Error::IndexesNotInTree)
                })
                .collect(),
        }
    }
}

/// Loads the stored hashes at `indexes` into `into` (those not there yet).
pub(crate) async fn load<C: ConnectionTrait>(
    db: &C,
    indexes: impl IntoIterator<Item = u64>,
    into: &mut HashMap<u64, Hash>,
) -> Result<(), CoreError> {
    let mut wanted: Vec<i64> = indexes
        .into_iter()
        .filter(|i| !into.contains_key(i))
        .map(|i| i as i64)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    for chunk in wanted.chunks(1000) {
        let rows = audit_log_hashes::Entity::find()
            .filter(audit_log_hashes::Column::Idx.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        for row in rows {
            let hash: [u8; 32] = row.hash.as_slice().try_into().map_err(|_| {
                CoreError::Corrupt(format!(
                    "the audit log's stored hash {} is not 32 bytes",
                    row.idx
                ))
            })?;
            into.insert(row.idx as u64, Hash(hash));
        }
    }
    Ok(())
}

/// Runs `op` over the stored hashes: once to learn which it reads, then
/// with them loaded. A hash that is not stored (beyond the sealed tree) is
/// `IndexesNotInTree`.
pub(crate) async fn with_hashes<C, T>(
    db: &C,
    op: impl Fn(&Reader<'_>) -> Result<T, tlog_tiles::Error>,
) -> Result<Result<T, tlog_tiles::Error>, CoreError>
where
    C: ConnectionTrait,
{
    let mut hashes = HashMap::new();
    with_hashes_in(db, &mut hashes, op).await
}

/// As [`with_hashes`], with hashes known already (`known`, which the
/// loaded ones join): only those missing are read.
pub(crate) async fn with_hashes_in<C, T>(
    db: &C,
    known: &mut HashMap<u64, Hash>,
    op: impl Fn(&Reader<'_>) -> Result<T, tlog_tiles::Error>,
) -> Result<Result<T, tlog_tiles::Error>, CoreError>
where
    C: ConnectionTrait,
{
    let noting = Reader::Noting(RefCell::new(Vec::new()));
    if let Err(e) = op(&noting) {
        return Ok(Err(e));
    }
    let Reader::Noting(asked) = noting else {
        unreachable!()
    };
    load(db, asked.into_inner(), known).await?;
    Ok(op(&Reader::Loaded(known)))
}
