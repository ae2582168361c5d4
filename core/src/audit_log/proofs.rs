//! What the log serves: checkpoints, inclusion and consistency proofs, and
//! tiles, all read from the stored hashes of the sealed tree.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};
use serde::Serialize;
use tlog_tiles::{Tile, prove_record, prove_tree};

use super::TILE_HEIGHT;
use super::store::{sealed_size, with_hashes};
use crate::entities::audit_log_checkpoints;
use crate::error::CoreError;

/// Why the log cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The tree is not sealed to the size asked for (yet).
    #[error("the audit log is sealed to {sealed} events")]
    NotSealed { sealed: u64 },
    /// The request contradicts itself (a leaf beyond the tree, sizes out of order).
    #[error("{0}")]
    Invalid(String),
    /// No checkpoint was signed at that size.
    #[error("no checkpoint was signed at {size} events")]
    NoCheckpoint { size: u64 },
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// An inclusion proof (RFC 6962 audit path) of a leaf in a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inclusion {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The hashes of the audit path, base64.
    pub proof: Vec<String>,
}

/// A consistency proof between two sizes of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consistency {
    pub from: u64,
    pub to: u64,
    /// The hashes of the proof, base64.
    pub proof: Vec<String>,
}

fn encoded(hashes: Vec<tlog_tiles::Hash>) -> Vec<String> {
    hashes.into_iter().map(|h| B64.encode(h.0)).collect()
}

fn tree_error(e: tlog_tiles::Error) -> LogError {
    LogError::Core(CoreError::Corrupt(format!(
        "the audit log's stored hashes: {e}"
    )))
}

/// The size asked for, or the sealed size; refused beyond the sealed tree.
async fn size_within<C: ConnectionTrait>(db: &C, asked: Option<u64>) -> Result<u64, LogError> {
    let sealed = sealed_size(db).await?;
    match asked {
        Some(size) if size > sealed => Err(LogError::NotSealed { sealed }),
        Some(size) => Ok(size),
        None => Ok(sealed),
    }
}

/// The proof that leaf `leaf_index` is in the tree of `tree_size` (the
/// sealed tree when `None`).
pub async fn inclusion<C: ConnectionTrait>(
    db: &C,
    leaf_index: u64,
    tree_size: Option<u64>,
) -> Result<Inclusion, LogError> {
    let tree_size = size_within(db, tree_size).await?;
    if leaf_index >= tree_size {
        return Err(if tree_size == sealed_size(db).await? {
            LogError::NotSealed { sealed: tree_size }
        } else {
            LogError::Invalid(format!(
                "the leaf {leaf_index} is not in a tree of {tree_size}"
            ))
        });
    }
    let proof = with_hashes(db, |r| prove_record(tree_size, leaf_index, r))
        .await?
        .map_err(tree_error)?;
    Ok(Inclusion {
        leaf_index,
        tree_size,
        proof: encoded(proof),
    })
}

/// The proof that the tree of `from` is a prefix of the tree of `to` (the
/// sealed tree when `None`).
pub async fn consistency<C: ConnectionTrait>(
    db: &C,
    from: u64,
    to: Option<u64>,
) -> Result<Consistency, LogError> {
    let defaulted = to.is_none();
    let to = size_within(db, to).await?;
    if from > to && defaulted {
        return Err(LogError::NotSealed { sealed: to });
    }
    if from > to {
        return Err(LogError::Invalid(format!(
            "from ({from}) is larger than to ({to})"
        )));
    }
    let proof = if from == 0 || from == to {
        Vec::new()
    } else {
        with_hashes(db, |r| prove_tree(to, from, r))
            .await?
            .map_err(tree_error)?
    };
    Ok(Consistency {
        from,
        to,
        proof: encoded(proof),
    })
}

/// One customer's events with their inclusion proofs in one checkpoint's
/// tree: what an auditor needs to prove that customer's trail and nobody
/// else's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerProofs {
    pub customer_id: uuid::Uuid,
    pub tree_size: u64,
    /// The checkpoint of `tree_size`, as served (with its cosignatures).
    pub checkpoint: String,
    pub events: Vec<ProvenEvent>,
    /// The `cursor` of the next page (a `seq`); `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEvent {
    pub seq: u64,
    /// The leaf: the event's canonical JSON, as a JSON Lines export holds it.
    pub event: String,
    /// Its audit path in the tree of `tree_size`, base64.
    pub proof: Vec<String>,
}

/// A customer's events after `after` (a `seq`), up to `limit`, each with
/// its inclusion proof in the checkpoint of `tree_size` (the newest when
/// `None`; a size no checkpoint was signed at is refused).
pub async fn customer_proofs<C: ConnectionTrait>(
    db: &C,
    customer_id: uuid::Uuid,
    tree_size: Option<u64>,
    after: Option<u64>,
    limit: u64,
) -> Result<CustomerProofs, LogError> {
    use crate::entities::audit_events;
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    let tree_size = size_within(db, tree_size).await?;
    let checkpoint = checkpoint_at(db, tree_size)
        .await?
        .ok_or(LogError::NoCheckpoint { size: tree_size })?;
    let rows: Vec<(i64, String)> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .column(audit_events::Column::Canonical)
        .filter(audit_events::Column::CustomerId.eq(customer_id))
        .filter(audit_events::Column::Seq.lte(tree_size as i64))
        .filter(audit_events::Column::Seq.gt(after.unwrap_or(0).min(i64::MAX as u64) as i64))
        .order_by_asc(audit_events::Column::Seq)
        .limit(limit + 1)
        .into_tuple()
        .all(db)
        .await
        .map_err(CoreError::from)?;
    let more = rows.len() as u64 > limit;
    let rows: Vec<(i64, String)> = rows.into_iter().take(limit as usize).collect();
    let proofs = with_hashes(db, |r| {
        rows.iter()
            .map(|(seq, _)| prove_record(tree_size, *seq as u64 - 1, r))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .map_err(tree_error)?;
    let next_cursor = if more {
        rows.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    Ok(CustomerProofs {
        customer_id,
        tree_size,
        checkpoint,
        events: rows
            .into_iter()
            .zip(proofs)
            .map(|((seq, event), proof)| ProvenEvent {
                seq: seq as u64,
                event,
                proof: encoded(proof),
            })
            .collect(),
        next_cursor,
    })
}

/// Checks a page of [`CustomerProofs`] offline: its checkpoint's signature
/// by `vkey`, and each event's inclusion in that checkpoint's tree, its
/// `seq`, and that it is the customer's. Returns how many events hold.
pub fn verify_customer_proofs(bundle: &CustomerProofs, vkey: &str) -> Result<usize, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        seq: u64,
        customer_id: Option<uuid::Uuid>,
    }
    let checkpoint = super::verify_checkpoint(bundle.checkpoint.as_bytes(), vkey)?;
    if checkpoint.size != bundle.tree_size {
        return Err(format!(
            "the checkpoint is of {} events, not the {} the proofs are for",
            checkpoint.size, bundle.tree_size
        ));
    }
    let mut last = 0;
    for e in &bundle.events {
        if e.seq <= last || e.seq > bundle.tree_size {
            return Err(format!(
                "the event of seq {} is out of order or beyond the tree",
                e.seq
            ));
        }
        last = e.seq;
        let head: Head = serde_json::from_str(&e.event)
            .map_err(|_| format!("the event of seq {} is not an audit event", e.seq))?;
        if head.seq != e.seq || head.customer_id != Some(bundle.customer_id) {
            return Err(format!(
                "the event given as seq {} is not the customer's event of that seq",
                e.seq
            ));
        }
        let proof = e
            .proof
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .map(tlog_tiles::Hash)
                    .ok_or_else(|| format!("the proof of seq {} is not base64 hashes", e.seq))
            })
            .collect::<Result<Vec<_>, _>>()?;
        tlog_tiles::check_record(
            &proof,
            bundle.tree_size,
            checkpoint.root,
            e.seq - 1,
            tlog_tiles::record_hash(e.event.as_bytes()),
        )
        .map_err(|_| {
            format!(
                "the event of seq {} is not in the checkpoint's tree: it was changed",
                e.seq
            )
        })?;
    }
    Ok(bundle.events.len())
}

/// The note with the witnesses' cosignatures kept for it appended.
async fn with_cosignatures<C: ConnectionTrait>(
    db: &C,
    checkpoint: Option<audit_log_checkpoints::Model>,
) -> Result<Option<String>, CoreError> {
    use crate::entities::audit_log_cosignatures;
    use sea_orm::{ColumnTrait, QueryFilter};
    let Some(checkpoint) = checkpoint else {
        return Ok(None);
    };
    let mut note = checkpoint.note;
    for c in audit_log_cosignatures::Entity::find()
        .filter(audit_log_cosignatures::Column::TreeSize.eq(checkpoint.tree_size))
        .order_by_asc(audit_log_cosignatures::Column::Witness)
        .all(db)
        .await?
    {
        note.push_str(&c.line);
    }
    Ok(Some(note))
}

/// The newest checkpoint's signed note, with the witnesses' cosignatures
/// it has.
pub async fn latest<C: ConnectionTrait>(db: &C) -> Result<Option<String>, CoreError> {
    let newest = audit_log_checkpoints::Entity::find()
        .order_by_desc(audit_log_checkpoints::Column::TreeSize)
        .one(db)
        .await?;
    with_cosignatures(db, newest).await
}

/// The signed note of the checkpoint of exactly `size`, when one was
/// signed, with the witnesses' cosignatures it has.
pub async fn checkpoint_at<C: ConnectionTrait>(
    db: &C,
    size: u64,
) -> Result<Option<String>, CoreError> {
    let Ok(size) = i64::try_from(size) else {
        return Ok(None);
    };
    let found = audit_log_checkpoints::Entity::find_by_id(size)
        .one(db)
        .await?;
    with_cosignatures(db, found).await
}

/// A tile as C2SP tlog-tiles names it, after `tile/`: `<L>/<N>` or
/// `<L>/<N>.p/<W>`, with `N` in three-digit groups, all but the last
/// prefixed `x` (`x001/x234/067`).
pub fn parse_tile_path(path: &str) -> Option<Tile> {
    let (level, rest) = path.split_once('/')?;
    let level = match level.parse::<u8>() {
        Ok(l) if l <= 63 && l.to_string() == level => l,
        _ => return None,
    };
    let (index, width) = match rest.split_once(".p/") {
        Some((index, width)) => {
            if width.starts_with('0') || width.len() > 3 {
                return None;
            }
            let w: u32 = width.parse().ok()?;
            if !(1..256).contains(&w) {
                return None;
            }
            (index, w)
        }
        None => (rest, 256),
    };
    let groups: Vec<&str> = index.split('/').collect();
    let mut n: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            *group
        } else {
            group.strip_prefix('x')?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n = n
            .checked_mul(1000)?
            .checked_add(digits.parse::<u64>().ok()?)?;
    }
    // The shortest spelling only: no leading `x000/` group.
    if groups.len() > 1 && groups[0] == "x000" {
        return None;
    }
    Some(Tile::new(TILE_HEIGHT, level, n, width, false))
}

/// The bytes of a tile of the sealed tree (its hashes, 32 bytes each), or
/// `None` when the sealed tree does not hold that tile at that width.
pub async fn tile<C: ConnectionTrait>(db: &C, tile: Tile) -> Result<Option<Vec<u8>>, CoreError> {
    let sealed = sealed_size(db).await?;
    // The hashes at the tile's level (level * 8 of the tree) that the
    // sealed tree holds.
    let shift = u32::from(tile.level()) * u32::from(TILE_HEIGHT);
    let available = if shift >= 64 { 0 } else { sealed >> shift };
    let start = tile.level_index().saturating_mul(1 << TILE_HEIGHT);
    let end = start.saturating_add(u64::from(tile.width()));
    if end > available {
        return Ok(None);
    }
    match with_hashes(db, |r| tile.read_data(r)).await? {
        Ok(data) => Ok(Some(data)),
        Err(e) => Err(CoreError::Corrupt(format!("the audit log's tile: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tile_path;

    #[test]
    fn tile_paths_are_read_as_c2sp_writes_them() {
        let t = parse_tile_path("0/000").unwrap();
        assert_eq!((t.level(), t.level_index(), t.width()), (0, 0, 256));
        let t = parse_tile_path("1/x001/x234/067.p/7").unwrap();
        assert_eq!((t.level(), t.level_index(), t.width()), (1, 1_234_067, 7));
        for bad in [
            "0/0",
            "0/0000",
            "0/x000/001",
            "0/001.p/0",
            "0/001.p/256",
            "0/001.p/07",
            "a/001",
            "0/x01/001",
            "0/001/",
            "",
            "0",
            "0/001.p/",
            "00/001",
            "64/000",
        ] {
            assert!(parse_tile_path(bad).is_none(), "{bad}");
        }
    }
}
