//! `kihon4 audit export` and `kihon4 audit verify`, as an auditor uses
//! them: an export verifies offline against its manifest and the public
//! key; a flipped byte, a removed line, two swapped lines, a truncated
//! file, a manifest of another range and another key are each caught,
//! naming the line where there is one; no personal value is in clear.

use std::path::Path;
use std::process::Output;

use crate::database::{Backend, fresh_database};
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
    assert!(bytes.starts_with(b"\xEF\xBB\xBFseq,occurred_at,actor,action"));
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
