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

use super::note::{read_checkpoint, verify_checkpoint, verify_rotation, vkey_id};

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

/// A log key the check trusts, with the trees it may sign.
struct Trusted {
    vkey: String,
    first: u64,
    last: Option<u64>,
}

/// What marks the line of a key rotation (canonical JSON sorts its keys,
/// so `action` is written exactly so).
const ROTATION_MARK: &[u8] = b"\"action\":\"audit.log_key_rotated\"";

/// Checks the JSON Lines `export` (from the first event, `seq` 1) against
/// each signed note of `notes`: the root of its first `size` lines must be
/// the note's root, and the note must be signed by a log key that could
/// sign a tree of that size. The keys trusted are `vkeys` (one per line)
/// and the successors that rotations in the export bring in, each
/// statement signed by a trusted key and by its successor; a rotation
/// ends the retired key's trees at its `retired-after`.
pub fn verify_export_against(
    export: impl BufRead,
    notes: &[(String, Vec<u8>)],
    vkeys: &str,
    mut progress: impl FnMut(u64),
) -> Result<LogCheck, LogCheckError> {
    let mut trusted = vkeys
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|vkey| {
            vkey_id(vkey)
                .map(|_| Trusted {
                    vkey: vkey.to_owned(),
                    first: 1,
                    last: None,
                })
                .map_err(|e| LogCheckError::Unusable(format!("the log key {vkey}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if trusted.is_empty() {
        return Err(LogCheckError::Unusable("no log key is given".into()));
    }
    let mut wanted: Vec<(String, u64, Hash, &[u8])> = notes
        .iter()
        .map(|(name, bytes)| {
            read_checkpoint(bytes)
                .map(|(size, root)| (name.clone(), size, root, bytes.as_slice()))
                .map_err(|e| LogCheckError::Tampered(format!("the checkpoint {name}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    wanted.sort_by_key(|(_, size, _, _)| *size);
    let mut edge = Edge::default();
    let mut n: u64 = 0;
    let mut read: u64 = 0;
    let mut matched = Vec::new();
    let mut next = 0;
    let mut check = |n: u64, edge: &Edge, next: &mut usize| -> Result<(), LogCheckError> {
        while let Some((name, _, root, _)) = wanted.get(*next).filter(|(_, size, _, _)| *size == n)
        {
            let tree = tree_hash(n, edge)
                .map_err(|e| LogCheckError::Unusable(format!("the tree: {e}")))?;
            if tree != *root {
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
        if line
            .windows(ROTATION_MARK.len())
            .any(|w| w == ROTATION_MARK)
        {
            rotate(&mut trusted, &line, n + 1)?;
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
    if let Some((name, size, _, _)) = wanted.get(next) {
        return Err(LogCheckError::Unusable(format!(
            "the export holds {n} event(s), fewer than the {size} of the checkpoint {name}: export up to it at least"
        )));
    }
    // The signatures, now that every rotation up to the newest is known.
    for (name, size, _, bytes) in &wanted {
        let valid: Vec<&str> = trusted
            .iter()
            .filter(|k| k.first <= *size && k.last.is_none_or(|last| *size <= last))
            .map(|k| k.vkey.as_str())
            .collect();
        if let Err(e) = verify_checkpoint(bytes, &valid.join("\n")) {
            let all: Vec<&str> = trusted.iter().map(|k| k.vkey.as_str()).collect();
            return Err(LogCheckError::Tampered(
                match verify_checkpoint(bytes, &all.join("\n")) {
                    Ok(v) => format!(
                        "the checkpoint {name} of {size} event(s) is signed by the log key {:08x}, which does not sign trees of that size (it was retired before, or brought in after): it was not signed by the log",
                        v.signed_by
                    ),
                    Err(_) => format!("the checkpoint {name}: {e}"),
                },
            ));
        }
    }
    Ok(LogCheck { leaves: n, matched })
}

/// Takes in the key rotation of the export's line `seq`: its statement
/// must be signed by a trusted key and by its successor, and name this
/// event's tree as the successor's first.
fn rotate(trusted: &mut Vec<Trusted>, line: &[u8], seq: u64) -> Result<(), LogCheckError> {
    let refused =
        |why: String| LogCheckError::Tampered(format!("the key rotation of event {seq} {why}"));
    let event: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| refused(format!("is not JSON: {e}")))?;
    let statement = event["data"]["after"]["statement"]
        .as_str()
        .ok_or_else(|| refused("holds no statement".into()))?;
    let rotation = verify_rotation(statement.as_bytes()).map_err(|e| refused(e.to_string()))?;
    if rotation.successor_from != seq {
        return Err(refused(format!(
            "names tree {} as its successor's first, not its own {seq}",
            rotation.successor_from
        )));
    }
    let Some(retired) = trusted
        .iter_mut()
        .find(|k| k.vkey == rotation.retired && k.last.is_none())
    else {
        return Err(refused(
            "retires a key that is not a trusted key of the log".into(),
        ));
    };
    retired.last = Some(rotation.retired_after);
    vkey_id(&rotation.successor).map_err(refused)?;
    match trusted.iter_mut().find(|k| k.vkey == rotation.successor) {
        Some(known) => known.first = known.first.max(seq),
        None => trusted.push(Trusted {
            vkey: rotation.successor,
            first: seq,
            last: None,
        }),
    }
    Ok(())
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

    #[test]
    fn a_rotation_in_the_export_hands_the_log_to_its_successor_and_ends_the_retired_key() {
        use crate::audit_log::note::{Rotation, rotation_statement};
        let dir = std::env::temp_dir().join(format!("kihon4-logr-{}", uuid::Uuid::new_v4()));
        let origin = "audit.bank.example/kihon4";
        let old = SigningKey::create(&dir.join("old.pem"))
            .unwrap()
            .with_log_origin(Some(origin));
        let new = SigningKey::create(&dir.join("new.pem"))
            .unwrap()
            .with_log_origin(Some(origin));
        let stranger = SigningKey::create(&dir.join("s.pem"))
            .unwrap()
            .with_log_origin(Some(origin));
        let rotation = |retired: &SigningKey, successor: &SigningKey, from: u64| {
            let r = Rotation {
                origin: origin.into(),
                retired: verifier_key(retired),
                successor: verifier_key(successor),
                retired_after: 30,
                successor_from: from,
                at: "2026-12-06T12:00:00Z".into(),
            };
            let statement = rotation_statement(&r, retired, successor).unwrap();
            String::from_utf8(crate::audit::canonical_json(&serde_json::json!({
                "action": "audit.log_key_rotated",
                "data": {"after": {"statement": statement}},
                "seq": 31,
            })))
            .unwrap()
        };
        let export_with = |line: String| {
            let mut all = lines(50);
            all[30] = line;
            all
        };
        let cp = |key: &SigningKey, all: &[String], n: u64| {
            (
                format!("cp{n}"),
                checkpoint_note(key, n, root(&all[..n as usize]))
                    .unwrap()
                    .into_bytes(),
            )
        };
        let all = export_with(rotation(&old, &new, 31));
        let text = all.join("\n") + "\n";
        let old_only = verifier_key(&old);
        // The auditor holds the first key only: the successor is learnt
        // from the statement the first key signed.
        let notes = vec![cp(&old, &all, 30), cp(&new, &all, 31), cp(&new, &all, 50)];
        let ok = verify_export_against(text.as_bytes(), &notes, &old_only, |_| {}).unwrap();
        assert_eq!(ok.matched, [30, 31, 50]);
        // The retired key signing a later tree (a thief of it, say): refused.
        let late = vec![cp(&old, &all, 40)];
        let err = verify_export_against(text.as_bytes(), &late, &old_only, |_| {}).unwrap_err();
        assert!(
            matches!(&err, LogCheckError::Tampered(e) if e.contains("does not sign trees of that size")),
            "{err:?}"
        );
        // The successor signing a tree from before it came in: refused, even
        // when the auditor trusts it directly.
        let both = format!("{}\n{}", verifier_key(&old), verifier_key(&new));
        let early = vec![cp(&new, &all, 20)];
        assert!(verify_export_against(text.as_bytes(), &early, &both, |_| {}).is_err());
        // A rotation that the retired key did not sign, or that names
        // another tree as its successor's first: refused.
        for forged in [
            export_with(rotation(&stranger, &new, 31)),
            export_with(rotation(&old, &new, 35)),
        ] {
            let text = forged.join("\n") + "\n";
            let notes = vec![cp(&new, &forged, 50)];
            let err = verify_export_against(text.as_bytes(), &notes, &old_only, |_| {});
            assert!(matches!(err, Err(LogCheckError::Tampered(_))), "{err:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
