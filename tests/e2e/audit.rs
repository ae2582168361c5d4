//! `kihon4 audit export` and `kihon4 audit verify`, as an auditor uses
//! them: an export verifies offline against its manifest and the public
//! key; a flipped byte, a removed line, two swapped lines, a truncated
//! file, a manifest of another range and another key are each caught,
//! naming the line where there is one; no personal value is in clear.

use kihon4_test_support::{Backend, fresh_database};
use std::path::Path;
use std::process::Output;

use crate::process::{SECRET, kihon4};

fn run(d: &Path, envs: &[(&str, String)], args: &[&str]) -> Output {
    kihon4(d, envs).args(args).output().unwrap()
}

fn verify(d: &Path, export: &Path, manifest: &Path, key: &Path) -> (i32, String) {
    let out = kihon4(d, &[])
        .args(["audit", "verify"])
        .arg(export)
        .arg(manifest)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_and_every_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Sqlite, d).await;
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        (
            "KIHON4_AUDIT_SIGNING_KEY",
            d.join("data/audit-signing-key.pem")
                .to_str()
                .unwrap()
                .to_owned(),
        ),
    ];
    assert!(run(d, &envs, &["migrate"]).status.success());
    // Events with personal values: customers imported.
    let mut csv = String::from("external_ref,email,name,address,birth_date,gender\n");
    for i in 0..12 {
        csv.push_str(&format!(
            "AUD-{i},secret{i}@example.jp,秘密太郎,東京都秘密区{i}-1,1980-02-17,1\n"
        ));
    }
    std::fs::write(d.join("c.csv"), csv).unwrap();
    assert!(
        run(
            d,
            &envs,
            &["customers", "import", d.join("c.csv").to_str().unwrap()]
        )
        .status
        .success()
    );

    // The key pair is made on first use in the data folder; its public half for the auditor.
    let out = run(d, &envs, &["audit", "public-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = d.join("auditor.pub");
    std::fs::write(&key, &out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));

    let export = d.join("export.jsonl");
    let out = run(
        d,
        &envs,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = d.join("export.jsonl.manifest.json");
    let (code, said) = verify(d, &export, &manifest, &key);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("12 event(s)"), "{said}");

    // Personal data only as commitments.
    let text = std::fs::read_to_string(&export).unwrap();
    for clear in ["secret0@example.jp", "秘密太郎", "秘密区"] {
        assert!(!text.contains(clear), "{clear} in clear");
    }
    assert!(text.contains("\"commitment\""));

    let lines: Vec<&str> = text.lines().collect();
    let tampered = |name: &str, content: String| {
        let path = d.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let joined = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    // A flipped byte in line 5.
    let mut flipped = lines.clone();
    let changed = lines[4].replacen("customer.created", "customer.createc", 1);
    flipped[4] = &changed;
    let (code, said) = verify(
        d,
        &tampered("flipped.jsonl", joined(&flipped)),
        &manifest,
        &key,
    );
    assert_eq!(code, 1);
    assert!(said.contains("line 5"), "{said}");
    // A line removed.
    let mut removed = lines.clone();
    removed.remove(2);
    let (code, said) = verify(
        d,
        &tampered("removed.jsonl", joined(&removed)),
        &manifest,
        &key,
    );
    assert_eq!(code, 1);
    assert!(said.contains("line 3"), "{said}");
    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(6, 7);
    let (code, said) = verify(
        d,
        &tampered("swapped.jsonl", joined(&swapped)),
        &manifest,
        &key,
    );
    assert_eq!(code, 1);
    assert!(said.contains("line 7"), "{said}");
    // Cut short in the middle of the last line, and at a line's end.
    let cut = &text[..text.len() - 10];
    let (code, said) = verify(d, &tampered("cut.jsonl", cut.to_owned()), &manifest, &key);
    assert_eq!(code, 1);
    assert!(said.contains("line 12"), "{said}");
    let (code, said) = verify(
        d,
        &tampered("short.jsonl", joined(&lines[..11])),
        &manifest,
        &key,
    );
    assert_eq!(code, 1);
    assert!(said.contains("11 lines"), "{said}");
    // The manifest of another range.
    let later = d.join("later.jsonl");
    let from = chrono::Utc::now().to_rfc3339();
    assert!(
        run(
            d,
            &envs,
            &[
                "audit",
                "export",
                "--from",
                &from,
                "--out",
                later.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    let (code, said) = verify(d, &export, &d.join("later.jsonl.manifest.json"), &key);
    assert_eq!(code, 1, "{said}");
    // A manifest edited by hand: its signature no longer holds.
    let edited = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"count\": 12", "\"count\": 11");
    let (code, said) = verify(d, &export, &tampered("edited.json", edited), &key);
    assert_eq!(code, 1);
    assert!(said.contains("signature"), "{said}");
    // Another key.
    let other_envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        (
            "KIHON4_AUDIT_SIGNING_KEY",
            d.join("other/audit-signing-key.pem")
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        (
            "KIHON4_DATA_DIR",
            d.join("other").to_str().unwrap().to_owned(),
        ),
    ];
    std::fs::create_dir_all(d.join("other")).unwrap();
    let out = run(d, &other_envs, &["audit", "public-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_key = tampered("other.pub", String::from_utf8(out.stdout).unwrap());
    let (code, said) = verify(d, &export, &manifest, &other_key);
    assert_eq!(code, 1);
    assert!(said.contains("signature"), "{said}");
    // Bad usage.
    let (code, _) = verify(d, &d.join("missing.jsonl"), &manifest, &key);
    assert_eq!(code, 2);

    // With the personal values in clear, each checked against its commitment.
    let pii_export = d.join("pii.jsonl");
    let companion = d.join("pii-values.jsonl");
    let out = run(
        d,
        &envs,
        &[
            "audit",
            "export",
            "--out",
            pii_export.to_str().unwrap(),
            "--personal-data",
            companion.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify_pii = |companion: &Path| {
        let out = kihon4(d, &[])
            .args(["audit", "verify"])
            .arg(&pii_export)
            .arg(d.join("pii.jsonl.manifest.json"))
            .arg("--key")
            .arg(&key)
            .arg("--personal-data")
            .arg(companion)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) = verify_pii(&companion);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("84 personal value(s) match"), "{said}");
    let changed = std::fs::read_to_string(&companion).unwrap().replacen(
        "secret3@example.jp",
        "secret4@example.jp",
        1,
    );
    let (code, said) = verify_pii(&tampered("pii-changed.jsonl", changed));
    assert_eq!(code, 1);
    assert!(said.contains("does not match its commitment"), "{said}");

    // CSV for spreadsheets: a BOM, a header, one row per event.
    let csv_out = d.join("export.csv");
    assert!(
        run(
            d,
            &envs,
            &[
                "audit",
                "export",
                "--format",
                "csv",
                "--out",
                csv_out.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    let bytes = std::fs::read(&csv_out).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBFseq,occurred_at,occurred_at_jst,actor,action"));
    // Each export is itself audited.
    let db = kihon4_core::db::connect(&url, 1).await.unwrap();
    let exported = kihon4_core::audit::list_events(
        &db,
        &kihon4_core::audit::EventFilter {
            action: Some("audit.exported".into()),
            ..Default::default()
        },
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(exported.len(), 4);
    assert_eq!(
        exported
            .iter()
            .filter(|e| e.canonical.contains("\"include_personal_data\":true"))
            .count(),
        1
    );

    // Erasure: one customer's values and salts go; the chain and the
    // earlier export still verify.
    let customer: String = {
        use sea_orm::{ConnectionTrait, Statement};
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM customers WHERE external_ref = 'AUD-0'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<uuid::Uuid>("", "id")
        .unwrap()
        .to_string()
    };
    let out = run(
        d,
        &envs,
        &[
            "audit",
            "erase",
            "--customer",
            &customer,
            "--reason",
            "保存期間の満了",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("7 personal value(s)"), "{said}");
    let out = run(
        d,
        &envs,
        &[
            "audit",
            "erase",
            "--customer",
            &customer,
            "--reason",
            "again",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 personal value(s)"));
    kihon4_core::audit::verify_chain(&db)
        .await
        .unwrap()
        .expect("the chain still verifies");
    let (code, said) = verify(d, &export, &manifest, &key);
    assert_eq!(code, 0, "{said}");
    let out = run(
        d,
        &envs,
        &["audit", "erase", "--customer", "not-an-id", "--reason", "x"],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `cmd`, which must end by itself within 30 s (a process that does
/// not refuse would run on: it is killed and the test fails).
fn refused(mut cmd: std::process::Command) -> (i32, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("it did not refuse to start");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_is_made_only_by_init_key_outside_the_embedded_default() {
    use crate::process::{free_port, kihon4_without_key};
    use std::os::unix::fs::PermissionsExt;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let url = fresh_database(backend, d).await;
        let key = d.join("keys/audit.pem");
        let no_jwt = vec![
            ("KIHON4_DATABASE_URL", url.clone()),
            ("KIHON4_AUDIT_SIGNING_KEY", key.to_str().unwrap().to_owned()),
        ];
        let mut envs = no_jwt.clone();
        envs.push(("KIHON4_JWT_SECRET", SECRET.to_owned()));
        envs.push(("KIHON4_LISTEN", format!("127.0.0.1:{}", free_port())));
        assert!(
            kihon4_without_key(d, &envs)
                .arg("migrate")
                .output()
                .unwrap()
                .status
                .success()
        );
        // Without a key, nothing that signs starts, and none is made.
        for args in [
            vec!["serve"],
            vec!["api"],
            vec!["worker"],
            vec!["audit", "export", "--out", "x.jsonl"],
            vec!["audit", "public-key"],
        ] {
            let mut cmd = kihon4_without_key(d, &envs);
            cmd.args(&args);
            let (code, said) = refused(cmd);
            assert_eq!(code, 1, "{args:?}: {said}");
            assert!(
                said.contains("KIHON4_AUDIT_SIGNING_KEY"),
                "{args:?}: {said}"
            );
            assert!(said.contains("kihon4 audit init-key"), "{args:?}: {said}");
            assert!(!key.exists(), "{args:?} made a key");
        }
        assert!(!d.join("x.jsonl").exists());
        // init-key makes it, owner-only, with no token settings at all.
        let out = kihon4_without_key(d, &no_jwt)
            .args(["audit", "init-key"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&d.join("keys")), 0o700);
        assert!(d.join("keys/audit.pem.pub").exists());
        let made = std::fs::read(&key).unwrap();
        // Never over an existing one.
        let out = kihon4_without_key(d, &no_jwt)
            .args(["audit", "init-key"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("never replaced"));
        assert_eq!(std::fs::read(&key).unwrap(), made);
        // Elsewhere with --out.
        let out = kihon4_without_key(d, &no_jwt)
            .args(["audit", "init-key", "--out"])
            .arg(d.join("spare/k.pem"))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(mode(&d.join("spare/k.pem")), 0o600);
        // public-key and export need no JWT secret; the key id is printed.
        let out = kihon4_without_key(d, &no_jwt)
            .args(["audit", "public-key"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = kihon4_core::audit_export::PublicKey::parse(&out.stdout).unwrap();
        assert!(said.contains(&public.key_id), "{said}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("key id {}", public.key_id))
        );
        let out = kihon4_without_key(d, &no_jwt)
            .args(["audit", "export", "--out", "e.jsonl"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(d.join("e.jsonl.manifest.json").exists());
        // The API starts with it.
        crate::process::Running::start(d, "api", &envs).await;
    }
    // The embedded default still makes its own on first use.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = kihon4_without_key(d, &[])
        .args(["audit", "public-key"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("data/audit-signing-key.pem").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_kept_checkpoints_the_key_id_and_the_files_form() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Sqlite, d).await;
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
    ];
    assert!(run(d, &envs, &["migrate"]).status.success());
    let import = |name: &str, from: usize| {
        let mut csv = String::from("external_ref,email,name,address,birth_date,gender\n");
        for i in from..from + 3 {
            csv.push_str(&format!(
                "CP-{i},cp{i}@example.jp,検査太郎,東京都検査区{i}-1,1980-02-17,1\n"
            ));
        }
        std::fs::write(d.join(name), csv).unwrap();
        let out = run(
            d,
            &envs,
            &["customers", "import", d.join(name).to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let export = |name: &str, extra: &[&str]| {
        let mut args = vec!["audit", "export", "--out", name];
        args.extend_from_slice(extra);
        let out = run(d, &envs, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.join(format!("{name}.manifest.json"))).unwrap(),
        )
        .unwrap();
        manifest
    };
    let out = run(d, &envs, &["audit", "public-key"]);
    let key = d.join("auditor.pub");
    std::fs::write(&key, &out.stdout).unwrap();
    let key_id = kihon4_core::audit_export::PublicKey::parse(&out.stdout)
        .unwrap()
        .key_id;
    let check = |export: &str, extra: &[String]| {
        let out = kihon4(d, &[])
            .args([
                "audit",
                "verify",
                export,
                &format!("{export}.manifest.json"),
                "--key",
            ])
            .arg(&key)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let write = |name: &str, v: &serde_json::Value| {
        std::fs::write(d.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
        d.join(name).to_str().unwrap().to_owned()
    };
    import("a.csv", 0);
    let before_first = chrono::Utc::now().to_rfc3339();
    let first = export("first.jsonl", &["--personal-data", "first-values.jsonl"]);
    let kept = write("kept.json", &first["checkpoint"]);
    import("b.csv", 10);
    // A whole export later: it extends the checkpoint kept from the first
    // (inside its range), given alone or as the first's manifest.
    export("all.jsonl", &[]);
    let (code, said) = check("all.jsonl", &["--checkpoint".into(), kept.clone()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("extends the 1 kept checkpoint"), "{said}");
    let (code, said) = check(
        "all.jsonl",
        &[
            "--checkpoint".into(),
            d.join("first.jsonl.manifest.json").to_str().unwrap().into(),
        ],
    );
    assert_eq!(code, 0, "{said}");
    // An export that starts just after the kept checkpoint: linked by prev_hash.
    let next = export("next.jsonl", &["--from", &before_first]);
    assert_eq!(
        next["first_seq"].as_i64().unwrap() - 1,
        first["checkpoint"]["seq"].as_i64().unwrap()
    );
    let (code, said) = check("next.jsonl", &["--checkpoint".into(), kept.clone()]);
    assert_eq!(code, 0, "{said}");
    // One that starts later cannot show it: refused, saying why.
    let later_from = chrono::Utc::now().to_rfc3339();
    import("c.csv", 20);
    export("later.jsonl", &["--from", &later_from]);
    let (code, said) = check("later.jsonl", &["--checkpoint".into(), kept.clone()]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("cannot be checked with this export"),
        "{said}"
    );
    // A checkpoint of another chain with the same key: not extended.
    let other_dir = d.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other_url = fresh_database(Backend::Sqlite, &other_dir).await;
    let signing = d.join("data/audit-signing-key.pem");
    let other_envs = vec![
        ("KIHON4_DATABASE_URL", other_url),
        (
            "KIHON4_AUDIT_SIGNING_KEY",
            signing.to_str().unwrap().to_owned(),
        ),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
    ];
    let out = run(d, &other_envs, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..3 {
        assert!(
            run(d, &other_envs, &["audit", "export", "--out", "o.jsonl"])
                .status
                .success()
        );
    }
    let foreign: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("o.jsonl.manifest.json")).unwrap()).unwrap();
    let foreign = write("foreign.json", &foreign["checkpoint"]);
    let (code, said) = check("all.jsonl", &["--checkpoint".into(), foreign]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("not the one that checkpoint signed"),
        "{said}"
    );
    // A kept checkpoint changed by hand: its signature fails; with a field
    // added it is not kihon4's form.
    let mut forged = first["checkpoint"].clone();
    forged["head_hash"] = serde_json::json!("0".repeat(64));
    let (code, said) = check(
        "all.jsonl",
        &["--checkpoint".into(), write("forged.json", &forged)],
    );
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("does not verify with this key"), "{said}");
    let mut extended = first["checkpoint"].clone();
    extended["note"] = serde_json::json!("x");
    let (code, said) = check(
        "all.jsonl",
        &["--checkpoint".into(), write("ext.json", &extended)],
    );
    assert_eq!(code, 1, "{said}");

    // The key id: the right one holds, another does not.
    let (code, said) = check("all.jsonl", &["--expect-key-id".into(), key_id.clone()]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = check(
        "all.jsonl",
        &["--expect-key-id".into(), "0123456789abcdef".into()],
    );
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("not the expected 0123456789abcdef"), "{said}");

    // A manifest with a field added is tampering (1), not bad usage; a
    // file that is no manifest at all is bad usage (2).
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("all.jsonl.manifest.json")).unwrap()).unwrap();
    manifest["comment"] = serde_json::json!("fine");
    std::fs::copy(d.join("all.jsonl"), d.join("odd.jsonl")).unwrap();
    write("odd.jsonl.manifest.json", &manifest);
    let (code, said) = check("odd.jsonl", &[]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("unknown field `comment`"), "{said}");
    write("odd.jsonl.manifest.json", &first["checkpoint"]);
    let (code, said) = check("odd.jsonl", &[]);
    assert_eq!(code, 2, "{said}");

    // The companion file: a line twice, or lines out of order, are refused by line.
    let values = std::fs::read_to_string(d.join("first-values.jsonl")).unwrap();
    let lines: Vec<&str> = values.lines().collect();
    assert!(lines.len() > 4);
    let companion = |name: &str, ls: &[&str]| {
        std::fs::write(
            d.join(name),
            ls.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        vec![
            "--personal-data".to_owned(),
            d.join(name).to_str().unwrap().to_owned(),
        ]
    };
    let (code, said) = check("first.jsonl", &companion("same.jsonl", &lines));
    assert_eq!(code, 0, "{said}");
    let mut twice = lines.clone();
    twice.insert(2, lines[1]);
    let (code, said) = check("first.jsonl", &companion("twice.jsonl", &twice));
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("line 3") && said.contains("duplicate"),
        "{said}"
    );
    let seq = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_i64();
    let at = (1..lines.len())
        .find(|&i| seq(lines[i]) != seq(lines[i - 1]))
        .unwrap();
    let mut swapped = lines.clone();
    swapped.swap(at - 1, at);
    let (code, said) = check("first.jsonl", &companion("swapped.jsonl", &swapped));
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!("line {}", at + 1)) && said.contains("out of order"),
        "{said}"
    );
}
