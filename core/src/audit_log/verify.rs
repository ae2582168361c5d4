//! Offline checks of an export against the audit log's checkpoints: the
//! tree of the export's lines is rebuilt (keeping only its right edge, so
//! memory stays logarithmic), and its root at each kept checkpoint's size
//! must be that checkpoint's. A history rewritten and signed again, even
//! with the real key, cannot match a checkpoint an auditor kept from
//! before.

use std::io::BufRead;

use tlog_tiles::{
    Hash, HashReader, split_stored_hash_index, stored_hashes_for_record_hash, tree_hash,
};

use super::note::{Verified, verify_checkpoint};

/// The tree's right edge: the newest complete node at each level, which
/// is all that appending a leaf or taking the root reads.
#[derive(Default)]
struct Edge(Vec<Option<(u64, Hash)>>);

impl HashReader for Edge {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                let (level, n) = split_stored_hash_index(i);
                match self.0.get(usize::from(level)).copied().flatten() {
                    Some((at, hash)) if at == n => Ok(hash),
                    _ => Err(tlog_tiles::Error::IndexesNotInTree),
                }
            })
            .collect()
    }
}

/// The one field of a line the check reads.
#[derive(serde::Deserialize)]
struct Seq {
    seq: u64,
}

/// What checking an export against checkpoints found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheck {
    /// Leaves (lines) read.
    pub leaves: u64,
    /// The checkpoints matched, by size.
    pub matched: Vec<u64>,
}

/// Why it does not verify (`Tampered`) or cannot be checked (`Unusable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogCheckError {
    Unusable(String),
    Tampered(String),
}

/// Checks the signed `notes` with `vkey`, then the JSON Lines `export`
/// (from the first event, `seq` 1) against each: the root of its first
/// `size` lines must be the note's root.
pub fn verify_export_against(
    export: impl BufRead,
    notes: &[(String, Vec<u8>)],
    vkey: &str,
    mut progress: impl FnMut(u64),
) -> Result<LogCheck, LogCheckError> {
    let mut wanted: Vec<(String, Verified)> = notes
        .iter()
        .map(|(name, bytes)| {
            verify_checkpoint(bytes, vkey)
                .map(|v| (name.clone(), v))
                .map_err(|e| LogCheckError::Tampered(format!("the checkpoint {name}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    wanted.sort_by_key(|(_, v)| v.size);
    let mut edge = Edge::default();
    let mut n: u64 = 0;
    let mut read: u64 = 0;
    let mut matched = Vec::new();
    let mut next = 0;
    let mut check = |n: u64, edge: &Edge, next: &mut usize| -> Result<(), LogCheckError> {
        while let Some((name, v)) = wanted.get(*next).filter(|(_, v)| v.size == n) {
            let root = tree_hash(n, edge)
                .map_err(|e| LogCheckError::Unusable(format!("the tree: {e}")))?;
            if root != v.root {
                return Err(LogCheckError::Tampered(format!(
                    "the first {n} event(s) of the export are not the tree of the checkpoint {name}: the history was changed"
                )));
            }
            matched.push(n);
            *next += 1;
        }
        Ok(())
    };
    check(0, &edge, &mut next)?;
    for line in export.split(b'\n') {
        let line = line.map_err(|e| LogCheckError::Unusable(e.to_string()))?;
        read += line.len() as u64 + 1;
        if line.is_empty() {
            continue;
        }
        // Only `seq` is read: the rest is skipped, not built.
        let seq = serde_json::from_slice::<Seq>(&line).ok().map(|e| e.seq);
        if seq != Some(n + 1) {
            return Err(LogCheckError::Tampered(format!(
                "line {} is not the event of seq {}: the export must hold every event from seq 1, in order",
                n + 1,
                n + 1
            )));
        }
        let hashes = stored_hashes_for_record_hash(n, tlog_tiles::record_hash(&line), &edge)
            .map_err(|e| LogCheckError::Unusable(format!("the tree: {e}")))?;
        for (level, hash) in hashes.into_iter().enumerate() {
            if edge.0.len() <= level {
                edge.0.resize(level + 1, None);
            }
            edge.0[level] = Some((n >> level, hash));
        }
        n += 1;
        check(n, &edge, &mut next)?;
        if n.is_multiple_of(4096) {
            progress(read);
        }
    }
    progress(read);
    if let Some((name, v)) = wanted.get(next) {
        return Err(LogCheckError::Unusable(format!(
            "the export holds {n} event(s), fewer than the {} of the checkpoint {name}: export up to it at least",
            v.size
        )));
    }
    Ok(LogCheck { leaves: n, matched })
}

/// Checks that the checkpoint `new` extends the checkpoint `old` by a
/// consistency proof as `/v1/audit/proofs/consistency` serves it. Both
/// notes must be signed by `vkey`. Gives the two sizes.
pub fn check_consistency(
    old: &[u8],
    new: &[u8],
    proof: &[u8],
    vkey: &str,
) -> Result<(u64, u64), LogCheckError> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Proof {
        from: u64,
        to: u64,
        proof: Vec<String>,
    }
    let old = verify_checkpoint(old, vkey)
        .map_err(|e| LogCheckError::Tampered(format!("the kept checkpoint: {e}")))?;
    let new = verify_checkpoint(new, vkey)
        .map_err(|e| LogCheckError::Tampered(format!("the newer checkpoint: {e}")))?;
    let p: Proof = serde_json::from_slice(proof).map_err(|_| {
        LogCheckError::Unusable("the proof is not a consistency proof as served".into())
    })?;
    if (p.from, p.to) != (old.size, new.size) {
        return Err(LogCheckError::Unusable(format!(
            "the proof is from {} to {}, the checkpoints are of {} and {}",
            p.from, p.to, old.size, new.size
        )));
    }
    let hashes = p
        .proof
        .iter()
        .map(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Hash)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            LogCheckError::Unusable("the proof holds hashes that are not base64".into())
        })?;
    let consistent = if old.size == 0 {
        hashes.is_empty()
    } else if old.size == new.size {
        old.root == new.root
    } else if old.size > new.size {
        false
    } else {
        tlog_tiles::check_tree(&hashes, new.size, new.root, old.size, old.root).is_ok()
    };
    if consistent {
        Ok((old.size, new.size))
    } else {
        Err(LogCheckError::Tampered(format!(
            "the checkpoint of {} events does not extend the kept one of {}: the history was changed",
            new.size, old.size
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_export::SigningKey;
    use crate::audit_log::note::{checkpoint_note, verifier_key};

    fn lines(n: u64) -> Vec<String> {
        (1..=n)
            .map(|seq| format!("{{\"data\":{{}},\"seq\":{seq}}}"))
            .collect()
    }

    /// The root of the first `n` lines, as the sealer computes it.
    fn root(lines: &[String]) -> Hash {
        let mut all = std::collections::HashMap::new();
        struct Map<'a>(&'a std::collections::HashMap<u64, Hash>);
        impl HashReader for Map<'_> {
            fn read_hashes(&self, i: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
                Ok(i.iter().map(|i| self.0[i]).collect())
            }
        }
        for (n, line) in lines.iter().enumerate() {
            let n = n as u64;
            let hs = tlog_tiles::stored_hashes(n, line.as_bytes(), &Map(&all)).unwrap();
            let start = tlog_tiles::stored_hash_index(0, n);
            for (j, h) in hs.into_iter().enumerate() {
                all.insert(start + j as u64, h);
            }
        }
        tree_hash(lines.len() as u64, &Map(&all)).unwrap()
    }

    #[test]
    fn an_export_matches_the_checkpoints_of_its_prefixes_and_a_rewrite_does_not() {
        let dir = std::env::temp_dir().join(format!("kihon4-logv-{}", uuid::Uuid::new_v4()));
        let key = SigningKey::create(&dir.join("k.pem")).unwrap();
        let vkey = verifier_key(&key);
        let all = lines(300);
        let notes: Vec<(String, Vec<u8>)> = [1u64, 22, 256, 257, 300]
            .iter()
            .map(|&n| {
                let note = checkpoint_note(&key, n, root(&all[..n as usize])).unwrap();
                (format!("cp{n}"), note.into_bytes())
            })
            .collect();
        let export = all.join("\n") + "\n";
        let ok = verify_export_against(export.as_bytes(), &notes, &vkey, |_| {}).unwrap();
        assert_eq!(ok.leaves, 300);
        assert_eq!(ok.matched, [1, 22, 256, 257, 300]);

        // Event 22 rewritten: the checkpoints kept from before catch it.
        let mut changed = all.clone();
        changed[21] = "{\"data\":{\"x\":1},\"seq\":22}".into();
        let rewritten = changed.join("\n") + "\n";
        let err = verify_export_against(rewritten.as_bytes(), &notes[1..2], &vkey, |_| {});
        assert!(matches!(err, Err(LogCheckError::Tampered(_))), "{err:?}");
        // ... but not the kept checkpoint of a size before the change.
        assert!(verify_export_against(rewritten.as_bytes(), &notes[..1], &vkey, |_| {}).is_ok());

        // Events 21–27 dropped, the rest renumbered.
        let mut dropped: Vec<String> = all[..20].to_vec();
        dropped.extend((21..=293).map(|seq| format!("{{\"data\":{{}},\"seq\":{seq}}}")));
        dropped[20] = "{\"data\":{\"moved\":true},\"seq\":21}".into();
        let dropped = dropped.join("\n") + "\n";
        assert!(matches!(
            verify_export_against(dropped.as_bytes(), &notes[1..], &vkey, |_| {}),
            Err(LogCheckError::Tampered(_))
        ));

        // A gap, a short export, another key.
        let gap = format!("{}\n{}\n", all[0], all[2]);
        assert!(matches!(
            verify_export_against(gap.as_bytes(), &notes[..1], &vkey, |_| {}),
            Err(LogCheckError::Tampered(_))
        ));
        let short = all[..10].join("\n") + "\n";
        assert!(matches!(
            verify_export_against(short.as_bytes(), &notes[1..2], &vkey, |_| {}),
            Err(LogCheckError::Unusable(_))
        ));
        let other = SigningKey::create(&dir.join("o.pem")).unwrap();
        assert!(matches!(
            verify_export_against(export.as_bytes(), &notes, &verifier_key(&other), |_| {}),
            Err(LogCheckError::Tampered(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
