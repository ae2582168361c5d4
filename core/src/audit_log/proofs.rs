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
