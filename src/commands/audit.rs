//! `kihon4 audit`: the signing key, exports, erasure and offline verification.

use std::process::ExitCode;

use kihon4_core::config::{AuditConfig, Config};

use crate::wiring;

/// `kihon4 audit public-key`: the public key on stdout, its id on stderr.
pub fn public_key(config: &AuditConfig) -> anyhow::Result<()> {
    let key = wiring::audit_key(config)?;
    print!("{}", key.public_key_pem());
    eprintln!(
        "kihon4: key id {} (the first 16 hex digits of the SHA-256 of the raw Ed25519 public key)",
        key.key_id
    );
    Ok(())
}

/// `kihon4 audit log-key`: the log's verifier key of this key on stdout,
/// under the origin the log has (which a rotation keeps).
pub async fn log_key(config: AuditConfig) -> anyhow::Result<()> {
    let key = wiring::audit_key(&config)?;
    let db = wiring::open_current(&config).await?;
    let registered = kihon4_core::audit_log::keys::list(&db)
        .await?
        .into_iter()
        .find(|k| k.key_id == key.key_id);
    match registered {
        Some(k) => println!("{}", k.vkey),
        None => println!("{}", kihon4_core::audit_log::verifier_key(&key)),
    }
    Ok(())
}

/// `kihon4 audit log-keys`: the log's keys, one verifier key per line.
pub async fn log_keys(config: AuditConfig) -> anyhow::Result<()> {
    let db = wiring::open_current(&config).await?;
    let keys = kihon4_core::audit_log::keys::list(&db).await?;
    if keys.is_empty() {
        anyhow::bail!("the audit log has no key yet: nothing was sealed");
    }
    for key in keys {
        println!("{}", key.vkey);
        eprintln!(
            "kihon4: key {} signs trees {}–{} (from {}{})",
            key.key_id,
            key.first_size,
            key.last_size.map_or("".into(), |n| n.to_string()),
            key.valid_from.to_rfc3339(),
            key.valid_until
                .map_or(", current".into(), |t| format!(" until {}", t.to_rfc3339()))
        );
    }
    Ok(())
}

/// `kihon4 audit rotate-key`: the log's key replaced by `new_key`.
pub async fn rotate_key(config: AuditConfig, new_key: std::path::PathBuf) -> anyhow::Result<()> {
    let current = wiring::audit_key(&config)?;
    let successor = kihon4_core::audit_export::SigningKey::load(&new_key)
        .map_err(anyhow::Error::msg)?
        .with_log_origin(config.log_origin.as_deref());
    let db = wiring::open_current(&config).await?;
    let rotated =
        kihon4_core::audit_log::keys::rotate(&db, &wiring::cli_context(), &current, &successor)
            .await?;
    kihon4_core::audit_log::seal::seal_all(&db, &successor).await?;
    print!("{}", rotated.statement);
    eprintln!(
        "kihon4: the audit log is signed by key {} from tree {} on (event {}); key {} signed it up to tree {}. Point KIHON4_AUDIT_SIGNING_KEY at {} and restart kihon4: the retired key signs nothing more.",
        successor.key_id,
        rotated.rotation.successor_from,
        rotated.seq,
        current.key_id,
        rotated.rotation.retired_after,
        new_key.display()
    );
    Ok(())
}

/// `kihon4 audit seal`: every committed event sealed; the newest checkpoint on stdout.
pub async fn seal(config: AuditConfig) -> anyhow::Result<()> {
    let key = wiring::audit_key(&config)?;
    let db = wiring::open_current(&config).await?;
    let sealed = kihon4_core::audit_log::seal::seal_all(&db, &key).await?;
    match kihon4_core::audit_log::latest(&db).await? {
        Some(note) => {
            print!("{note}");
            eprintln!(
                "kihon4: the audit log holds {} event(s){}",
                kihon4_core::audit_log::sealed_size(&db).await?,
                if sealed.is_some() {
                    ""
                } else {
                    " (nothing new to seal)"
                }
            );
        }
        None => eprintln!("kihon4: no audit event to seal yet"),
    }
    Ok(())
}

/// Bad usage of a verify command: said on stderr, exit 2.
fn usage(e: String) -> ExitCode {
    eprintln!("kihon4: {e}");
    ExitCode::from(crate::BAD_USAGE)
}

/// The log keys given, each as itself or as a file holding one per line:
/// one per line.
fn log_key_of(log_keys: &[String]) -> Result<String, String> {
    let mut all = Vec::new();
    for log_key in log_keys {
        if log_key.contains('+') {
            all.push(log_key.trim().to_owned());
        } else {
            let text = std::fs::read_to_string(log_key)
                .map_err(|e| format!("cannot read the log key {log_key}: {e}"))?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    Ok(all.join("\n"))
}

/// Witness keys and a quorum, checked: the quorum is at most their number.
fn witness_policy(
    witnesses: &[String],
    quorum: Option<usize>,
) -> Result<(Vec<kihon4_core::audit_log::witness::CosignerKey>, usize), String> {
    let keys = witnesses
        .iter()
        .map(|v| {
            kihon4_core::audit_log::witness::CosignerKey::parse(v)
                .map_err(|e| format!("--witness {v}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let quorum = quorum.unwrap_or(keys.len());
    if quorum > keys.len() {
        return Err(format!(
            "--quorum {quorum} is more than the {} witness(es) given",
            keys.len()
        ));
    }
    Ok((keys, quorum))
}

/// Whether a checkpoint carries `quorum` valid cosignatures of `keys`; the
/// refusal says what it lacks.
fn meets_quorum(
    note: &[u8],
    vkey: &str,
    keys: &[kihon4_core::audit_log::witness::CosignerKey],
    quorum: usize,
    name: &str,
) -> Result<(), String> {
    if quorum == 0 {
        return Ok(());
    }
    match kihon4_core::audit_log::witness::verify_cosignatures(note, vkey, keys) {
        Ok(n) if n >= quorum => Ok(()),
        Ok(n) => Err(format!(
            "the checkpoint {name} has {n} of the {quorum} witness cosignature(s) required: it may be a view shown to nobody else"
        )),
        Err(e) => Err(format!("the checkpoint {name} does not verify: {e}")),
    }
}

/// `kihon4 audit verify-customer`: exit 0 when every event of every page
/// is in its checkpoint's tree, 1 when one is not, 2 on bad usage.
pub fn verify_customer(
    pages: &[std::path::PathBuf],
    log_key: &[String],
    witnesses: &[String],
    quorum: Option<usize>,
) -> ExitCode {
    use kihon4_core::audit_log::{CustomerProofs, verify_customer_proofs};
    let vkey = match log_key_of(log_key) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let (keys, quorum) = match witness_policy(witnesses, quorum) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let (mut events, mut customer) = (0, None);
    for path in pages {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return usage(format!("cannot read {}: {e}", path.display())),
        };
        let page: CustomerProofs = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                println!(
                    "kihon4: {} is not a page of a customer's proofs ({e}): it was changed",
                    path.display()
                );
                return ExitCode::from(1);
            }
        };
        if customer.is_some_and(|c| c != page.customer_id) {
            println!("kihon4: {} is another customer's", path.display());
            return ExitCode::from(1);
        }
        customer = Some(page.customer_id);
        let name = format!("of {}", path.display());
        if let Err(e) = meets_quorum(page.checkpoint.as_bytes(), &vkey, &keys, quorum, &name) {
            println!("kihon4: {e}");
            return ExitCode::from(1);
        }
        match verify_customer_proofs(&page, &vkey) {
            Ok(n) => events += n,
            Err(e) => {
                println!("kihon4: {} does not verify: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    println!(
        "kihon4: {events} event(s) of customer {} are in the log's tree",
        customer.map_or("-".into(), |c| c.to_string())
    );
    ExitCode::SUCCESS
}

/// `kihon4 audit verify-consistency`: exit 0 when the newer checkpoint
/// extends the kept one, 1 when it does not, 2 on bad usage.
pub fn verify_consistency(
    log_key: &[String],
    old: &std::path::Path,
    new: &std::path::Path,
    proof: &std::path::Path,
) -> ExitCode {
    use kihon4_core::audit_log::verify::{LogCheckError, check_consistency};
    let vkey = match log_key_of(log_key) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (old_note, new_note, proof_bytes) = match (read(old), read(new), read(proof)) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(e),
    };
    match check_consistency(&old_note, &new_note, &proof_bytes, &vkey) {
        Ok((from, to)) => {
            println!("kihon4: the checkpoint of {to} events extends the kept one of {from}");
            ExitCode::SUCCESS
        }
        Err(LogCheckError::Tampered(e)) => {
            println!("kihon4: {e}");
            ExitCode::from(1)
        }
        Err(LogCheckError::Unusable(e)) => usage(e),
    }
}

/// `kihon4 audit verify-log`: exit 0 when the export is the tree of every
/// kept checkpoint, 1 when one is not, 2 when it cannot be checked.
pub fn verify_log(
    export: &std::path::Path,
    log_key: &[String],
    checkpoints: &[std::path::PathBuf],
    witnesses: &[String],
    quorum: Option<usize>,
) -> ExitCode {
    use kihon4_core::audit_log::verify::{LogCheckError, verify_export_against};
    let vkey = match log_key_of(log_key) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let mut notes = Vec::new();
    for path in checkpoints {
        match std::fs::read(path) {
            Ok(bytes) => notes.push((path.display().to_string(), bytes)),
            Err(e) => return usage(format!("cannot read {}: {e}", path.display())),
        }
    }
    let (keys, quorum) = match witness_policy(witnesses, quorum) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    for (name, note) in &notes {
        if let Err(e) = meets_quorum(note, &vkey, &keys, quorum, name) {
            println!("kihon4: {e}");
            return ExitCode::from(1);
        }
    }
    let file = match std::fs::File::open(export) {
        Ok(file) => file,
        Err(e) => return usage(format!("cannot read {}: {e}", export.display())),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = wiring::progress_bar(size, "{bar:40} {bytes}/{total_bytes} ({eta} left)");
    let result = verify_export_against(
        std::io::BufReader::with_capacity(1 << 20, file),
        &notes,
        &vkey,
        |read| bar.set_position(read),
    );
    bar.finish_and_clear();
    match result {
        Ok(check) => {
            println!(
                "kihon4: {} holds {} event(s) and is the tree of the {} kept checkpoint(s) (sizes {})",
                export.display(),
                check.leaves,
                check.matched.len(),
                check
                    .matched
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(LogCheckError::Tampered(e)) => {
            println!("kihon4: {} does not verify: {e}", export.display());
            ExitCode::from(1)
        }
        Err(LogCheckError::Unusable(e)) => usage(e),
    }
}

/// `kihon4 audit init-key`: a new signing key at `out` (default: the
/// configured KIHON4_AUDIT_SIGNING_KEY), owner-only, never replacing one.
pub fn init_key(config: &AuditConfig, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use kihon4_core::audit_export::{SigningKey, public_key_path};
    let path = out.unwrap_or(&config.audit_signing_key);
    let key = SigningKey::create(path).map_err(anyhow::Error::msg)?;
    if kihon4_core::audit_export::in_token(path) {
        println!(
            "kihon4: audit signing key made in the PKCS#11 token (not extractable), key id {}",
            key.key_id
        );
        print!("{}", key.public_key_pem());
        return Ok(());
    }
    println!(
        "kihon4: audit signing key {} made (owner-only), key id {}; its public key is {}",
        path.display(),
        key.key_id,
        public_key_path(path).display()
    );
    if out.is_some_and(|o| o != config.audit_signing_key) {
        println!(
            "kihon4: set KIHON4_AUDIT_SIGNING_KEY={} for kihon4 to use it",
            path.display()
        );
    }
    Ok(())
}

/// `kihon4 audit export`: the file and its signed manifest beside it, both
/// of the one range fixed when the export started (and with
/// `personal_data`, the companion file of that same range).
pub async fn export(
    config: AuditConfig,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    format: kihon4_core::audit_export::Format,
    out: std::path::PathBuf,
    personal_data: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use kihon4_core::audit_export::ExportRequest;
    use std::io::Write;
    let key = wiring::audit_key(&config)?;
    let db = wiring::open_current(&config).await?;
    // The audit log sealed up to now, before the range is fixed: its newest
    // checkpoint is then a prefix of an export from the first event.
    kihon4_core::audit_log::seal::seal_all(&db, &key).await?;
    let log_checkpoint = kihon4_core::audit_log::latest(&db).await?;
    let file = std::fs::File::create(&out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let bar = wiring::progress_bar(
        0,
        "{bar:40} {pos}/{len} events ({elapsed_precise}, about {eta} left)",
    );
    // The export is audited when it starts: who, which range, whether
    // personal data; that event comes after the range.
    let manifest = kihon4_core::audit_export::export(
        &db,
        &key,
        &wiring::cli_context(),
        &ExportRequest {
            format,
            from,
            to,
            events: true,
            personal_data: personal_data.is_some(),
        },
        &mut writer,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await?;
    writer.flush()?;
    bar.finish_and_clear();
    let manifest_path = {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".manifest.json");
        out.with_file_name(name)
    };
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    let mut values = None;
    if let Some(path) = &personal_data {
        // Personal data: readable by its owner only.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
        }
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        values =
            Some(kihon4_core::audit_export::export_personal(&db, &manifest, &mut writer).await?);
        writer.flush()?;
    }
    println!(
        "kihon4: {} event(s), seq {} to {}, written to {}, manifest {} (export {})",
        manifest.count,
        manifest.first_seq.map_or("-".into(), |s| s.to_string()),
        manifest.last_seq.map_or("-".into(), |s| s.to_string()),
        out.display(),
        manifest_path.display(),
        manifest.export_id.map_or("-".into(), |id| id.to_string()),
    );
    // An export from the first event gets the log's checkpoint beside it,
    // for `kihon4 audit verify-log`.
    if let Some(note) = log_checkpoint
        && manifest.first_seq == Some(1)
    {
        let size: i64 = note
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(i64::MAX);
        if manifest.last_seq.is_some_and(|last| size <= last) {
            let path = {
                let mut name = out.file_name().unwrap_or_default().to_os_string();
                name.push(".checkpoint");
                out.with_file_name(name)
            };
            std::fs::write(&path, note)?;
            println!(
                "kihon4: the audit log's checkpoint of its first {size} event(s) is in {} (kihon4 audit verify-log)",
                path.display()
            );
        }
    }
    if let (Some(path), Some(values)) = (&personal_data, values) {
        println!(
            "kihon4: {values} personal value(s) in clear written to {}: keep it as personal data",
            path.display()
        );
    }
    Ok(())
}

/// `kihon4 audit erase`.
pub async fn erase(
    config: Config,
    customer: uuid::Uuid,
    reason: kihon4_core::domain::FreeText,
) -> anyhow::Result<()> {
    let db = wiring::open_current(&config.audit()).await?;
    kihon4_core::customers::get(&db, customer)
        .await
        .map_err(|e| anyhow::anyhow!("customer {customer}: {e}"))?;
    let erased =
        kihon4_core::audit_export::erase_customer(&db, &wiring::cli_context(), customer, &reason)
            .await?;
    println!(
        "kihon4: {erased} personal value(s) of customer {customer} erased from the audit trail"
    );
    Ok(())
}

/// `kihon4 audit verify`: exit 0 when everything holds, 1 when something
/// does not (the first line that does not verify is named; a manifest or
/// kept checkpoint that is not exactly kihon4's form counts as tampered),
/// 2 when a file cannot be read or is not a kihon4 manifest at all.
pub fn verify(
    export: &std::path::Path,
    manifest: &std::path::Path,
    key: &std::path::Path,
    personal_data: Option<&std::path::Path>,
    checkpoints: &[std::path::PathBuf],
    expect_key_id: Option<&str>,
) -> ExitCode {
    use kihon4_core::audit_export::{
        Companion, Expectations, Manifest, PublicKey, parse_checkpoint, verify_expecting,
    };
    enum Refused {
        /// Bad usage: exit 2.
        Usage(String),
        /// Tampering: exit 1.
        Tampered(String),
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Refused::Usage(format!("cannot read {}: {e}", path.display())))
    };
    let json = |path: &std::path::Path| -> Result<serde_json::Value, Refused> {
        serde_json::from_slice(&read(path)?)
            .map_err(|e| Refused::Usage(format!("{} is not JSON: {e}", path.display())))
    };
    let is_manifest = |v: &serde_json::Value| {
        v.get("type").and_then(|t| t.as_str()) == Some("kihon4-audit-export")
    };
    let loaded = (|| {
        let key = PublicKey::parse(&read(key)?)
            .map_err(|e| Refused::Usage(format!("{}: {e}", key.display())))?;
        let value = json(manifest)?;
        if !is_manifest(&value) {
            return Err(Refused::Usage(format!(
                "{} is not a kihon4 manifest (no \"type\": \"kihon4-audit-export\")",
                manifest.display()
            )));
        }
        // A manifest of kihon4's type in any other form was changed.
        let parsed: Manifest = serde_json::from_value(value).map_err(|e| {
            Refused::Tampered(format!(
                "the manifest {} is not in kihon4's form ({e}): it was changed",
                manifest.display()
            ))
        })?;
        let mut kept = Vec::new();
        for path in checkpoints {
            let mut value = json(path)?;
            if is_manifest(&value) {
                value = value.get("checkpoint").cloned().unwrap_or_default();
            }
            let bytes = serde_json::to_vec(&value).expect("a value serialises");
            kept.push(parse_checkpoint(&bytes).map_err(|e| {
                Refused::Tampered(format!(
                    "the kept checkpoint {} is not in kihon4's form ({e}): it was changed",
                    path.display()
                ))
            })?);
        }
        let file = std::fs::File::open(export)
            .map_err(|e| Refused::Usage(format!("cannot read {}: {e}", export.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let companion = personal_data
            .map(|p| {
                std::fs::File::open(p)
                    .map(|f| Companion::new(std::io::BufReader::new(f)))
                    .map_err(|e| Refused::Usage(format!("cannot read {}: {e}", p.display())))
            })
            .transpose()?;
        Ok((key, parsed, kept, file, size, companion))
    })();
    let (key, manifest, kept, file, size, companion) = match loaded {
        Ok(loaded) => loaded,
        Err(Refused::Usage(e)) => {
            eprintln!("kihon4: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
        Err(Refused::Tampered(e)) => {
            println!("kihon4: {} does not verify: {e}", export.display());
            return ExitCode::from(1);
        }
    };
    let kept_count = kept.len();
    let expect = Expectations {
        checkpoints: kept,
        key_id: expect_key_id.map(str::to_owned),
    };
    let bar = wiring::progress_bar(size, "{bar:40} {bytes}/{total_bytes} ({eta} left)");
    let result = verify_expecting(
        std::io::BufReader::with_capacity(1 << 20, file),
        &manifest,
        &key,
        companion,
        &expect,
        |read| bar.set_position(read),
    );
    bar.finish_and_clear();
    match result {
        Ok((count, values)) => {
            println!(
                "kihon4: {} verifies: {count} event(s), seq {} to {}, signed by key {}",
                export.display(),
                manifest.first_seq.map_or("-".into(), |s| s.to_string()),
                manifest.last_seq.map_or("-".into(), |s| s.to_string()),
                key.key_id
            );
            if personal_data.is_some() {
                println!("kihon4: {values} personal value(s) match their commitments");
            }
            if kept_count > 0 {
                println!("kihon4: it extends the {kept_count} kept checkpoint(s)");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("kihon4: {} does not verify: {failure}", export.display());
            ExitCode::from(1)
        }
    }
}
