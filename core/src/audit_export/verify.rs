//! The offline verifier: a JSON Lines export checked against its manifest,
//! the public key, the companion file and the checkpoints an auditor kept,
//! with no database and no network.

use std::io::BufRead;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Checkpoint, Format, Manifest, PublicKey};
use crate::audit::chain_hash;

/// The companion file, read alongside the export: each line's value and
/// salt against the commitment its event holds at `field`.
pub struct Companion<R> {
    reader: R,
    line: u64,
    next: Option<(i64, String, String, String)>,
    /// The event of the line before, and the fields of that event so far
    /// (a line twice, or lines out of order, are refused).
    seen: Option<(i64, std::collections::HashSet<String>)>,
}

impl<R: BufRead> Companion<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            next: None,
            seen: None,
        }
    }

    fn fail(&self, why: impl Into<String>) -> Failure {
        Failure {
            line: self.line,
            why: format!("personal data file: {}", why.into()),
        }
    }

    /// The next row, read ahead; `None` at the end.
    fn peek(&mut self) -> Result<Option<i64>, Failure> {
        if self.next.is_none() {
            let mut buf = String::new();
            let n = self
                .reader
                .read_line(&mut buf)
                .map_err(|e| self.fail(format!("cannot be read: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let v: Value = serde_json::from_str(buf.trim_end_matches('\n'))
                .map_err(|_| self.fail("not JSON"))?;
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            let (Some(seq), Some(field), Some(value), Some(salt)) = (
                v.get("seq").and_then(Value::as_i64),
                text("field"),
                text("value"),
                text("salt"),
            ) else {
                return Err(self.fail("a line lacks seq, field, value or salt"));
            };
            match &mut self.seen {
                Some((before, _)) if seq < *before => {
                    let before = *before;
                    return Err(self.fail(format!(
                        "out of order: a value of event {seq} after one of event {before} (lines go by seq)"
                    )));
                }
                Some((before, fields)) if seq == *before => {
                    if !fields.insert(field.clone()) {
                        return Err(self.fail(format!(
                            "a duplicate: the value at `{field}` of event {seq} was on an earlier line"
                        )));
                    }
                }
                _ => self.seen = Some((seq, std::iter::once(field.clone()).collect())),
            }
            self.next = Some((seq, field, value, salt));
        }
        Ok(self.next.as_ref().map(|n| n.0))
    }

    /// Checks every row of event `seq` against its data.
    fn check(&mut self, seq: i64, data: &Value) -> Result<u64, Failure> {
        let mut checked = 0;
        loop {
            match self.peek()? {
                Some(s) if s < seq => {
                    return Err(self.fail(format!(
                        "a value for event {s}, which the export does not have here"
                    )));
                }
                Some(s) if s == seq => {}
                _ => return Ok(checked),
            }
            let (_, field, value, salt) = self.next.take().expect("peeked");
            let mut at = data;
            for part in field.split('.') {
                at = at.get(part).unwrap_or(&Value::Null);
            }
            let Some(expected) = at.get("commitment").and_then(Value::as_str) else {
                return Err(self.fail(format!("event {seq} has no commitment at `{field}`")));
            };
            let salt = hex::decode(&salt).map_err(|_| self.fail("a salt is not hex"))?;
            if crate::audit::commitment(&salt, &value) != expected {
                return Err(self.fail(format!(
                    "the value at `{field}` of event {seq} does not match its commitment"
                )));
            }
            checked += 1;
        }
    }

    fn finish(&mut self) -> Result<(), Failure> {
        match self.peek()? {
            None => Ok(()),
            Some(s) => Err(self.fail(format!("a value for event {s}, beyond the export"))),
        }
    }
}

/// Why an export does not verify, and at which line (1-based; 0 for the
/// file as a whole or the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: u64,
    pub why: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.why)
        } else {
            write!(f, "line {}: {}", self.line, self.why)
        }
    }
}

/// Checks a JSON Lines export against its manifest and key, offline: each
/// line's canonical form, its link to the one before, contiguity, the
/// count, the first and last hashes, the file's SHA-256, and the manifest's
/// and checkpoint's signatures. `progress` gets the bytes read so far.
pub fn verify_jsonl(
    export: impl BufRead,
    manifest: &Manifest,
    key: &PublicKey,
    progress: impl FnMut(u64),
) -> Result<u64, Failure> {
    verify_with_personal(export, manifest, key, None::<Companion<&[u8]>>, progress)
        .map(|(events, _)| events)
}

/// [`verify_jsonl`], and with `personal`, every value of the companion file
/// against its commitment. Returns the events and the values checked.
pub fn verify_with_personal<P: BufRead>(
    export: impl BufRead,
    manifest: &Manifest,
    key: &PublicKey,
    personal: Option<Companion<P>>,
    progress: impl FnMut(u64),
) -> Result<(u64, u64), Failure> {
    verify_expecting(
        export,
        manifest,
        key,
        personal,
        &Expectations::default(),
        progress,
    )
}

/// What an auditor holds beyond the export: checkpoints kept from earlier
/// exports, which the export must extend, and the key id they expect.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub checkpoints: Vec<Checkpoint>,
    pub key_id: Option<String>,
}

/// [`verify_with_personal`], and the [`Expectations`]: the key id, when
/// given, is that of the public key, the manifest and every checkpoint; and
/// every kept checkpoint verifies with the key and is extended by the
/// export: its seq lies in the export's range and its head is that event's
/// hash, or it is the seq just before the range and its head is the
/// manifest's `prev_hash` (which line 1 links to), or it is the seq of the
/// manifest's own checkpoint with the same head. A kept checkpoint anywhere
/// else cannot be checked with this export and fails it.
pub fn verify_expecting<P: BufRead>(
    export: impl BufRead,
    manifest: &Manifest,
    key: &PublicKey,
    mut personal: Option<Companion<P>>,
    expect: &Expectations,
    mut progress: impl FnMut(u64),
) -> Result<(u64, u64), Failure> {
    let mut values = 0;
    let whole = |why: &str| Failure {
        line: 0,
        why: why.to_owned(),
    };
    if let Some(expected) = &expect.key_id {
        if &key.key_id != expected {
            return Err(whole(&format!(
                "the public key's id is {}, not the expected {expected}",
                key.key_id
            )));
        }
        if &manifest.key_id != expected {
            return Err(whole(&format!(
                "the manifest is signed by key {}, not the expected {expected}",
                manifest.key_id
            )));
        }
        if &manifest.checkpoint.key_id != expected {
            return Err(whole(&format!(
                "the manifest's checkpoint is signed by key {}, not the expected {expected}",
                manifest.checkpoint.key_id
            )));
        }
        if let Some(kept) = expect.checkpoints.iter().find(|c| &c.key_id != expected) {
            return Err(whole(&format!(
                "the kept checkpoint of seq {} is signed by key {}, not the expected {expected}",
                kept.seq, kept.key_id
            )));
        }
    }
    // The kept checkpoints inside the range, checked as the lines go by.
    let mut inside: Vec<&Checkpoint> = Vec::new();
    for kept in &expect.checkpoints {
        if !kept.verifies(key) {
            return Err(whole(&format!(
                "the kept checkpoint of seq {} does not verify with this key",
                kept.seq
            )));
        }
        let in_range = matches!((manifest.first_seq, manifest.last_seq),
            (Some(first), Some(last)) if (first..=last).contains(&kept.seq));
        if in_range {
            inside.push(kept);
        } else if manifest
            .first_seq
            .is_some_and(|first| kept.seq == first - 1)
        {
            if kept.head_hash != manifest.prev_hash {
                return Err(whole(&format!(
                    "the kept checkpoint of seq {} names the head {}, but the export goes on from {}: the chain is not the one that checkpoint signed",
                    kept.seq, kept.head_hash, manifest.prev_hash
                )));
            }
        } else if kept.seq == manifest.checkpoint.seq {
            if kept.head_hash != manifest.checkpoint.head_hash {
                return Err(whole(&format!(
                    "the kept checkpoint of seq {} names the head {}, the export's checkpoint of the same seq {}: the chain is not the one that checkpoint signed",
                    kept.seq, kept.head_hash, manifest.checkpoint.head_hash
                )));
            }
        } else {
            let range = match (manifest.first_seq, manifest.last_seq) {
                (Some(first), Some(last)) => format!("seq {first} to {last}"),
                _ => "no event".to_owned(),
            };
            return Err(whole(&format!(
                "the kept checkpoint of seq {} cannot be checked with this export ({range}, checkpoint at seq {}): export a range that holds seq {} or starts just after it",
                kept.seq, manifest.checkpoint.seq, kept.seq
            )));
        }
    }
    if manifest.format != Format::Jsonl {
        return Err(whole(
            "the manifest is of a CSV export; verify the JSON Lines export",
        ));
    }
    if !manifest.verifies(key) {
        return Err(whole(
            "the manifest's signature does not verify with this key",
        ));
    }
    if !manifest.checkpoint.verifies(key) {
        return Err(whole(
            "the checkpoint's signature does not verify with this key",
        ));
    }
    // The file's SHA-256 on a second thread, fed a megabyte at a time.
    let (chunks, hashing) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let hasher = std::thread::spawn(move || {
        let mut file = Sha256::new();
        for chunk in hashing {
            file.update(&chunk);
        }
        hex::encode(file.finalize())
    });
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut prev = manifest.prev_hash.clone();
    let mut expected_seq = manifest.first_seq;
    let (mut count, mut read) = (0u64, 0u64);
    let mut first_hash = None;
    let mut reader = export;
    let mut buf = Vec::new();
    /// What the chain needs of a line; the rest is skipped unread.
    #[derive(Deserialize)]
    struct Head<'a> {
        seq: Option<i64>,
        #[serde(borrow)]
        prev_hash: Option<&'a str>,
    }
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| whole(&format!("the export cannot be read: {e}")))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        progress(read);
        pending.extend_from_slice(&buf);
        if pending.len() >= 1 << 20 {
            let full = std::mem::replace(&mut pending, Vec::with_capacity(1 << 20));
            chunks
                .send(full)
                .map_err(|_| whole("the file's hash could not be computed"))?;
        }
        count += 1;
        let at = |why: String| Failure { line: count, why };
        let Some(content) = buf.strip_suffix(b"\n") else {
            return Err(at(
                "the line does not end with a newline (the file is cut short)".into(),
            ));
        };
        // Any change to a line's bytes changes its hash, which the next
        // line's prev_hash (or the manifest's last hash) no longer matches.
        let head: Head = serde_json::from_slice(content).map_err(|_| at("not JSON".into()))?;
        let value = match personal {
            Some(_) => {
                Some(serde_json::from_slice::<Value>(content).map_err(|_| at("not JSON".into()))?)
            }
            None => None,
        };
        let seq = head.seq;
        if seq.is_none() || seq != expected_seq {
            return Err(at(format!(
                "sequence number {} where {} was expected (a line is missing, added or moved)",
                seq.map_or("none".into(), |s| s.to_string()),
                expected_seq.map_or("none".into(), |s| s.to_string())
            )));
        }
        if head.prev_hash != Some(prev.as_str()) {
            // The link is in this line; what it links to is the line before.
            return Err(if count == 1 {
                at("it does not link to the hash the manifest names as the one before the first event".into())
            } else {
                Failure {
                    line: count - 1,
                    why: format!(
                        "it does not hash to what line {count} links to (prev_hash): this line, or that link, was changed"
                    ),
                }
            });
        }
        let hash = chain_hash(&prev, content).map_err(at)?;
        if let Some(kept) = inside
            .iter()
            .find(|k| Some(k.seq) == seq && k.head_hash != hash)
        {
            return Err(at(format!(
                "its hash differs from the head the kept checkpoint of seq {} names ({}): the chain is not the one that checkpoint signed",
                kept.seq, kept.head_hash
            )));
        }
        if let (Some(companion), Some(s), Some(value)) = (personal.as_mut(), seq, &value) {
            values += companion.check(s, value.get("data").unwrap_or(&Value::Null))?;
        }
        first_hash.get_or_insert_with(|| hash.clone());
        prev = hash;
        expected_seq = seq.map(|s| s + 1);
    }
    if count != manifest.count {
        return Err(whole(&format!(
            "the export has {count} lines, the manifest says {}",
            manifest.count
        )));
    }
    if count > 0 && first_hash != manifest.first_hash {
        return Err(Failure {
            line: 1,
            why: "its hash differs from the manifest's first hash".into(),
        });
    }
    if count > 0 && Some(&prev) != manifest.last_hash.as_ref() {
        return Err(Failure {
            line: count,
            why: "its hash differs from the manifest's last hash: the line was changed".into(),
        });
    }
    chunks
        .send(pending)
        .map_err(|_| whole("the file's hash could not be computed"))?;
    drop(chunks);
    let file_sha256 = hasher
        .join()
        .map_err(|_| whole("the file's hash could not be computed"))?;
    if file_sha256 != manifest.file_sha256 {
        return Err(whole("the file's SHA-256 differs from the manifest's"));
    }
    if manifest.last_seq == Some(manifest.checkpoint.seq)
        && manifest.last_hash.as_deref() != Some(manifest.checkpoint.head_hash.as_str())
    {
        return Err(whole(
            "the last hash differs from the signed checkpoint's head",
        ));
    }
    if let Some(companion) = personal.as_mut() {
        companion.finish()?;
    }
    Ok((count, values))
}

#[cfg(test)]
mod tests {
    use chrono::{SubsecRound, Utc};
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::audit::{GENESIS_HASH, canonical_json, commitment};
    use crate::audit_export::{EXPORT_VERSION, SigningKey};

    /// A chain of `n` events held in memory, as an export hands it out: one
    /// canonical line each, with a personal value committed at `after.name`.
    struct Chain {
        lines: Vec<Vec<u8>>,
        hashes: Vec<String>,
        /// The companion file's lines, `(seq, field, value, salt)` each.
        personal: Vec<Vec<u8>>,
    }

    fn chain(n: i64) -> Chain {
        let (mut lines, mut hashes, mut personal) = (Vec::new(), Vec::new(), Vec::new());
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=n {
            let (value, salt) = (format!("Name {seq}"), [seq as u8; 16]);
            let event = json!({
                "v": 1,
                "seq": seq,
                "prev_hash": prev,
                "at": "2026-01-01T00:00:00.000000Z",
                "actor": "cli",
                "action": "customer.created",
                "subject": {"type": "customer", "id": null},
                "customer_id": null,
                "request_id": null,
                "data": {"after": {"name": {"commitment": commitment(&salt, &value)}}},
            });
            let canonical = canonical_json(&event);
            let hash = chain_hash(&prev, &canonical).unwrap();
            let mut line = canonical;
            line.push(b'\n');
            lines.push(line);
            let mut companion = canonical_json(&json!({
                "seq": seq, "field": "after.name", "value": value, "salt": hex::encode(salt),
            }));
            companion.push(b'\n');
            personal.push(companion);
            prev = hash.clone();
            hashes.push(hash);
        }
        Chain {
            lines,
            hashes,
            personal,
        }
    }

    /// A signing key in a folder of its own (kept as long as the key is used).
    fn signing_key() -> (SigningKey, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::create(&dir.path().join("key.pem")).unwrap();
        (key, dir)
    }

    fn public(key: &SigningKey) -> PublicKey {
        PublicKey::parse(key.public_key_pem().as_bytes()).unwrap()
    }

    /// The signed manifest of the whole chain, with a checkpoint of its head.
    fn manifest(chain: &Chain, key: &SigningKey) -> Manifest {
        let last_seq = chain.lines.len() as i64;
        let head = chain.hashes.last().unwrap().clone();
        let at = Utc::now().trunc_subsecs(6);
        let checkpoint = Checkpoint {
            seq: last_seq,
            signature: key.sign(&Checkpoint::message(last_seq, &head, at)).unwrap(),
            head_hash: head.clone(),
            at,
            key_id: key.key_id.clone(),
        };
        let mut m = Manifest {
            kind: "kihon4-audit-export".into(),
            v: EXPORT_VERSION,
            export_id: Some(uuid::Uuid::now_v7()),
            format: Format::Jsonl,
            from: None,
            to: None,
            count: chain.lines.len() as u64,
            first_seq: Some(1),
            last_seq: Some(last_seq),
            prev_hash: GENESIS_HASH.to_owned(),
            first_hash: chain.hashes.first().cloned(),
            last_hash: Some(head),
            file_sha256: hex::encode(Sha256::digest(chain.lines.concat())),
            checkpoint,
            key_id: String::new(),
            signature: String::new(),
        };
        m.sign(key).unwrap();
        m
    }

    fn verify(lines: &[Vec<u8>], manifest: &Manifest, key: &PublicKey) -> Result<u64, Failure> {
        verify_jsonl(&lines.concat()[..], manifest, key, |_| {})
    }

    fn verify_personal(
        chain: &Chain,
        manifest: &Manifest,
        key: &PublicKey,
        personal: &[Vec<u8>],
    ) -> Result<(u64, u64), Failure> {
        let personal = personal.concat();
        verify_with_personal(
            &chain.lines.concat()[..],
            manifest,
            key,
            Some(Companion::new(&personal[..])),
            |_| {},
        )
    }

    /// The actor `cli` made `clj`: one byte.
    fn change_a_byte(line: &mut [u8]) {
        let at = line.windows(3).position(|w| w == b"cli").unwrap();
        line[at + 2] = b'j';
    }

    fn failure(line: u64, why: &str) -> Failure {
        Failure {
            line,
            why: why.to_owned(),
        }
    }

    #[test]
    fn a_good_export_verifies_with_its_companion() {
        let (key, _dir) = signing_key();
        let chain = chain(3);
        let m = manifest(&chain, &key);
        assert_eq!(verify(&chain.lines, &m, &public(&key)), Ok(3));
        assert_eq!(
            verify_personal(&chain, &m, &public(&key), &chain.personal),
            Ok((3, 3))
        );
    }

    #[test]
    fn a_changed_byte_names_its_line() {
        let (key, _dir) = signing_key();
        let chain = chain(3);
        let m = manifest(&chain, &key);
        let mut lines = chain.lines.clone();
        change_a_byte(&mut lines[1]);
        assert_eq!(
            verify(&lines, &m, &public(&key)),
            Err(failure(
                2,
                "it does not hash to what line 3 links to (prev_hash): this line, or that link, was changed"
            ))
        );
        // The last line has no line after it: the manifest's last hash names it.
        let mut lines = chain.lines.clone();
        change_a_byte(&mut lines[2]);
        assert_eq!(
            verify(&lines, &m, &public(&key)),
            Err(failure(
                3,
                "its hash differs from the manifest's last hash: the line was changed"
            ))
        );
    }

    #[test]
    fn a_dropped_line_is_a_gap_in_the_sequence() {
        let (key, _dir) = signing_key();
        let chain = chain(3);
        let m = manifest(&chain, &key);
        let lines = [chain.lines[0].clone(), chain.lines[2].clone()];
        assert_eq!(
            verify(&lines, &m, &public(&key)),
            Err(failure(
                2,
                "sequence number 3 where 2 was expected (a line is missing, added or moved)"
            ))
        );
    }

    #[test]
    fn a_reordered_line_is_out_of_sequence() {
        let (key, _dir) = signing_key();
        let chain = chain(3);
        let m = manifest(&chain, &key);
        let lines = [
            chain.lines[0].clone(),
            chain.lines[2].clone(),
            chain.lines[1].clone(),
        ];
        assert_eq!(
            verify(&lines, &m, &public(&key)),
            Err(failure(
                2,
                "sequence number 3 where 2 was expected (a line is missing, added or moved)"
            ))
        );
    }

    #[test]
    fn another_key_does_not_verify_the_manifest() {
        let (key, _dir) = signing_key();
        let (other, _other_dir) = signing_key();
        let chain = chain(2);
        let m = manifest(&chain, &key);
        assert_eq!(
            verify(&chain.lines, &m, &public(&other)),
            Err(failure(
                0,
                "the manifest's signature does not verify with this key"
            ))
        );
        // Expecting the other key's id says so before any signature is tried.
        let expect = Expectations {
            key_id: Some(other.key_id.clone()),
            ..Default::default()
        };
        let refused = verify_expecting(
            &chain.lines.concat()[..],
            &m,
            &public(&key),
            None::<Companion<&[u8]>>,
            &expect,
            |_| {},
        )
        .unwrap_err();
        assert_eq!(
            refused.why,
            format!(
                "the public key's id is {}, not the expected {}",
                key.key_id, other.key_id
            )
        );
    }

    #[test]
    fn a_manifest_with_an_unknown_field_is_not_a_manifest() {
        let (key, _dir) = signing_key();
        let m = manifest(&chain(1), &key);
        let mut value = serde_json::to_value(&m).unwrap();
        value["note"] = json!("added");
        let refused = serde_json::from_value::<Manifest>(value).unwrap_err();
        assert!(
            refused.to_string().starts_with("unknown field `note`"),
            "{refused}"
        );
        // A known field changed is read, but its signature no longer holds.
        let mut changed = m.clone();
        changed.count += 1;
        assert!(!changed.verifies(&public(&key)));
    }

    #[test]
    fn a_companion_line_twice_is_a_duplicate() {
        let (key, _dir) = signing_key();
        let chain = chain(3);
        let m = manifest(&chain, &key);
        let personal = [
            chain.personal[0].clone(),
            chain.personal[1].clone(),
            chain.personal[1].clone(),
            chain.personal[2].clone(),
        ];
        assert_eq!(
            verify_personal(&chain, &m, &public(&key), &personal),
            Err(failure(
                3,
                "personal data file: a duplicate: the value at `after.name` of event 2 was on an earlier line"
            ))
        );
    }

    #[test]
    fn companion_lines_out_of_order_are_refused() {
        let (key, _dir) = signing_key();
        let chain = chain(3);
        let m = manifest(&chain, &key);
        let personal = [
            chain.personal[1].clone(),
            chain.personal[0].clone(),
            chain.personal[2].clone(),
        ];
        assert_eq!(
            verify_personal(&chain, &m, &public(&key), &personal),
            Err(failure(
                2,
                "personal data file: out of order: a value of event 1 after one of event 2 (lines go by seq)"
            ))
        );
    }

    #[test]
    fn a_companion_value_that_was_changed_does_not_match_its_commitment() {
        let (key, _dir) = signing_key();
        let chain = chain(2);
        let m = manifest(&chain, &key);
        let mut personal = chain.personal.clone();
        let at = personal[1].iter().position(|&b| b == b'N').unwrap();
        personal[1][at] = b'M';
        assert_eq!(
            verify_personal(&chain, &m, &public(&key), &personal),
            Err(failure(
                2,
                "personal data file: the value at `after.name` of event 2 does not match its commitment"
            ))
        );
    }
}
